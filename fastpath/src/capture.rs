// Packet capture for `fastpathctl capture`: the shared ring the worker copies captured
// frames into, the two ends of a capture, and the file formats fastpathctl writes.
//! Packet capture.
//!
//! [`tap`]: a capture as the switch's worker holds it; [`session`]: the control connection's
//! two ends (the ring's memfd handed over with SCM_RIGHTS; fastpathctl's drain into a file).
//! [`ring`]: a single-producer single-consumer ring of fixed-size slots in a memfd shared
//! by fastpathd (the producer, never waiting: a full ring drops and counts) and fastpathctl
//! (the consumer, trusting nothing it reads). [`pcapng`]: pcapng (one IDB for the port, ns
//! timestamps, EPB direction flags, an ISB carrying the drops) and classic pcap writers.

pub mod pcapng;
pub mod ring;
pub mod session;
pub mod tap;
