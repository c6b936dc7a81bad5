// Packet capture for `fastpathctl capture`: the file formats the captured frames are
// written in (the shared ring the worker copies frames into comes with the capture request).
//! Packet capture.
//!
//! [`pcapng`]: pcapng (one IDB per port and direction, ns timestamps, EPB direction flags,
//! an ISB carrying the drops) and classic pcap writers.

pub mod pcapng;
