// Packet capture for `fastpathctl capture`: the shared ring the worker copies captured
// frames into, and the file formats fastpathctl writes them out in.
//! Packet capture.
//!
//! [`ring`]: a single-producer single-consumer ring of fixed-size slots in a memfd shared
//! by fastpathd (the producer, never waiting: a full ring drops and counts) and fastpathctl
//! (the consumer, trusting nothing it reads). [`pcapng`]: pcapng (one IDB per port and
//! direction, ns timestamps, EPB direction flags, an ISB carrying the drops) and classic
//! pcap writers.

pub mod pcapng;
pub mod ring;
