// The capture file formats `fastpathctl capture` writes: pcapng (Section Header, one
// Interface Description Block per port+direction, Enhanced Packet Blocks, an ISB) and classic pcap.
//! pcapng and classic pcap writers, nanosecond timestamps, little-endian.

use std::io::{self, Write};

/// Link type of every interface: Ethernet (`LINKTYPE_ETHERNET`).
const LINKTYPE_ETHERNET: u16 = 1;
/// pcapng block types.
const BT_SHB: u32 = 0x0A0D_0D0A;
const BT_IDB: u32 = 0x0000_0001;
const BT_EPB: u32 = 0x0000_0006;
const BT_ISB: u32 = 0x0000_0005;
/// The byte-order magic of a Section Header Block.
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Option codes.
const OPT_ENDOFOPT: u16 = 0;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_IFDROP: u16 = 5;
/// Classic pcap's magic for nanosecond timestamps.
const PCAP_MAGIC_NS: u32 = 0xA1B2_3C4D;

/// The direction of a captured frame, as the switch saw it on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by the switch from the port.
    Inbound,
    /// Sent by the switch to the port.
    Outbound,
}

impl Direction {
    /// The `epb_flags` direction bits (bits 0-1: 1 inbound, 2 outbound).
    fn epb_bits(self) -> u32 {
        match self {
            Self::Inbound => 1,
            Self::Outbound => 2,
        }
    }
}

/// Pads `len` up to a multiple of 4.
fn pad4(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends one option (code, length, value, padding) to `out`.
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    // Option values here are interface names, a byte, a u32 or a u64: far below 64 KiB.
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(pad4(out.len()), 0);
}

/// Writes one block: type, total length, `body`, total length again.
fn block(w: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = u32::try_from(12 + body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("pcapng block of {} bytes", body.len())))?;
    w.write_all(&kind.to_le_bytes())?;
    w.write_all(&total.to_le_bytes())?;
    w.write_all(body)?;
    w.write_all(&total.to_le_bytes())
}

/// A pcapng writer: call [`Pcapng::interface`] for each interface, then
/// [`Pcapng::packet`] for each frame.
pub struct Pcapng<W: Write> {
    out: W,
    interfaces: u32,
}

impl<W: Write> Pcapng<W> {
    /// Starts a section (writes the Section Header Block).
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes()); // major version
        body.extend_from_slice(&0u16.to_le_bytes()); // minor version
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length: unspecified
        block(&mut out, BT_SHB, &body)?;
        Ok(Self { out, interfaces: 0 })
    }

    /// Describes an Ethernet interface named `name` with nanosecond timestamps
    /// (`if_tsresol` = 9) capturing up to `snaplen` bytes; returns its interface id.
    pub fn interface(&mut self, name: &str, snaplen: u32) -> io::Result<u32> {
        let mut body = Vec::with_capacity(32 + name.len());
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes()); // reserved
        body.extend_from_slice(&snaplen.to_le_bytes());
        option(&mut body, IF_NAME, name.as_bytes());
        option(&mut body, IF_TSRESOL, &[9]);
        option(&mut body, OPT_ENDOFOPT, &[]);
        block(&mut self.out, BT_IDB, &body)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Writes one Enhanced Packet Block: `data` (already cut to the snaplen) of a frame
    /// that was `orig_len` bytes long, seen at `ts_ns` (ns since the epoch) in `dir`.
    pub fn packet(&mut self, iface: u32, ts_ns: u64, dir: Direction, data: &[u8], orig_len: u32) -> io::Result<()> {
        let caplen = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {} bytes", data.len())))?;
        let mut body = Vec::with_capacity(40 + data.len());
        body.extend_from_slice(&iface.to_le_bytes());
        body.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        body.extend_from_slice(&caplen.to_le_bytes());
        body.extend_from_slice(&orig_len.to_le_bytes());
        body.extend_from_slice(data);
        body.resize(pad4(body.len()), 0);
        option(&mut body, EPB_FLAGS, &dir.epb_bits().to_le_bytes());
        option(&mut body, OPT_ENDOFOPT, &[]);
        block(&mut self.out, BT_EPB, &body)
    }

    /// Writes an Interface Statistics Block for `iface` at `ts_ns` with `isb_ifdrop` = `dropped`.
    pub fn statistics(&mut self, iface: u32, ts_ns: u64, dropped: u64) -> io::Result<()> {
        let mut body = Vec::with_capacity(32);
        body.extend_from_slice(&iface.to_le_bytes());
        body.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        option(&mut body, ISB_IFDROP, &dropped.to_le_bytes());
        option(&mut body, OPT_ENDOFOPT, &[]);
        block(&mut self.out, BT_ISB, &body)
    }

    /// Flushes what was written so far (a reader on a pipe sees it at once).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A classic pcap writer (nanosecond magic, Ethernet); it has no direction or drop fields.
pub struct Pcap<W: Write> {
    out: W,
}

impl<W: Write> Pcap<W> {
    /// Writes the global header for Ethernet frames cut to `snaplen`.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        out.write_all(&PCAP_MAGIC_NS.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?; // thiszone
        out.write_all(&0u32.to_le_bytes())?; // sigfigs
        out.write_all(&snaplen.to_le_bytes())?;
        out.write_all(&u32::from(LINKTYPE_ETHERNET).to_le_bytes())?;
        Ok(Self { out })
    }

    /// Writes one record: `data` of a frame `orig_len` bytes long seen at `ts_ns`.
    pub fn packet(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let caplen = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {} bytes", data.len())))?;
        // Seconds since the epoch fit u32 until 2106.
        self.out.write_all(&((ts_ns / 1_000_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&((ts_ns % 1_000_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&caplen.to_le_bytes())?;
        self.out.write_all(&orig_len.to_le_bytes())?;
        self.out.write_all(data)
    }

    /// Flushes what was written so far (a reader on a pipe sees it at once).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_header_bytes() {
        let out = Pcapng::new(Vec::new()).unwrap().finish().unwrap();
        assert_eq!(
            out,
            [
                0x0A, 0x0D, 0x0D, 0x0A, 28, 0, 0, 0, // type, length
                0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0, // magic, version 1.0
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // section length
                28, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn interface_block_bytes() {
        let mut w = Pcapng::new(Vec::new()).unwrap();
        assert_eq!(w.interface("p0-rx", 128).unwrap(), 0);
        assert_eq!(w.interface("p0-tx", 128).unwrap(), 1);
        let out = w.finish().unwrap();
        let idb = &out[28..28 + 44];
        assert_eq!(
            idb,
            [
                1, 0, 0, 0, 44, 0, 0, 0, // type, length
                1, 0, 0, 0, 128, 0, 0, 0, // Ethernet, reserved, snaplen
                2, 0, 5, 0, b'p', b'0', b'-', b'r', b'x', 0, 0, 0, // if_name, padded
                9, 0, 1, 0, 9, 0, 0, 0, // if_tsresol = 9
                0, 0, 0, 0, // opt_endofopt
                44, 0, 0, 0,
            ]
        );
        assert_eq!(out.len(), 28 + 44 + 44);
    }

    #[test]
    fn enhanced_packet_block_bytes() {
        let mut w = Pcapng::new(Vec::new()).unwrap();
        w.interface("p", 64).unwrap();
        let ts = 0x0000_0001_0000_0002u64;
        w.packet(0, ts, Direction::Outbound, &[0xAA, 0xBB, 0xCC, 0xDD, 0xEE], 60).unwrap();
        let out = w.finish().unwrap();
        let epb = &out[28 + 40..];
        assert_eq!(
            epb,
            [
                6, 0, 0, 0, 52, 0, 0, 0, // type, length
                0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, // interface, ts high, ts low
                5, 0, 0, 0, 60, 0, 0, 0, // captured, original length
                0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0, 0, 0, // data, padded
                2, 0, 4, 0, 2, 0, 0, 0, // epb_flags: outbound
                0, 0, 0, 0, // opt_endofopt
                52, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn statistics_block_carries_the_drops() {
        let mut w = Pcapng::new(Vec::new()).unwrap();
        w.statistics(0, 5, 7).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(
            &out[28..],
            [
                5, 0, 0, 0, 40, 0, 0, 0, // type, length
                0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, // interface, ts high, ts low
                5, 0, 8, 0, 7, 0, 0, 0, 0, 0, 0, 0, // isb_ifdrop = 7
                0, 0, 0, 0, // opt_endofopt
                40, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn classic_pcap_bytes() {
        let mut w = Pcap::new(Vec::new(), 96).unwrap();
        w.packet(3_000_000_007, &[1, 2, 3], 64).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(
            out,
            [
                0x4D, 0x3C, 0xB2, 0xA1, 2, 0, 4, 0, // magic (ns), version 2.4
                0, 0, 0, 0, 0, 0, 0, 0, // thiszone, sigfigs
                96, 0, 0, 0, 1, 0, 0, 0, // snaplen, Ethernet
                3, 0, 0, 0, 7, 0, 0, 0, // 3 s, 7 ns
                3, 0, 0, 0, 64, 0, 0, 0, // captured, original
                1, 2, 3,
            ]
        );
    }
}
