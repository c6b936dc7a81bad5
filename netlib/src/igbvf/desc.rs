// Advanced receive and transmit descriptors (82576 datasheet 7.1.5 / 7.2.2) and
// the DMA-mapped memory they live in. The volatile ring access is this file's `unsafe`.
//! Descriptor formats and descriptor ring memory.
//!
//! A descriptor is 16 bytes, two little-endian 64-bit words. The encoders and
//! decoders are plain functions on those words; [`DescRing`] reads and writes
//! them in ring memory (a [`Region`] that the driver maps for the device) with
//! volatile accesses, since the NIC writes back into the same words.
#![allow(unsafe_code)]

use std::sync::atomic::{fence, Ordering};

use crate::mem::{MemError, Region};

/// Bytes per descriptor.
pub const DESC_LEN: usize = 16;
/// Ring base and length alignment the NIC requires.
pub const RING_ALIGN: usize = 128;

/// Rx write-back status: descriptor done.
pub const RX_STAT_DD: u32 = 1 << 0;
/// Rx write-back status: end of packet.
pub const RX_STAT_EOP: u32 = 1 << 1;
/// Rx write-back errors that mean a bad frame (CRC, symbol, sequence, carrier
/// extension, Rx data error), bits 24-31 of the status/error word.
pub const RX_ERR_FRAME: u32 = 0x0100_0000 | 0x0200_0000 | 0x0400_0000 | 0x1000_0000 | 0x8000_0000;

/// Tx command: end of packet.
pub const TX_CMD_EOP: u32 = 0x0100_0000;
/// Tx command: insert FCS.
pub const TX_CMD_IFCS: u32 = 0x0200_0000;
/// Tx command: report status (write back DD).
pub const TX_CMD_RS: u32 = 0x0800_0000;
/// Tx command: extended (advanced) descriptor.
pub const TX_CMD_DEXT: u32 = 0x2000_0000;
/// Tx descriptor type: advanced data.
pub const TX_DTYP_DATA: u32 = 0x0030_0000;
/// Tx `olinfo_status`: payload length shift.
pub const TX_PAYLEN_SHIFT: u32 = 14;
/// Tx write-back status: descriptor done.
pub const TX_STAT_DD: u32 = 1 << 0;

/// An advanced receive descriptor in read format: buffer address, no header buffer.
/// The zero second word also clears a previous write-back's DD.
#[inline]
pub fn rx_read(pkt_addr: u64) -> [u64; 2] {
    [pkt_addr, 0]
}

/// A receive write-back, decoded from the second word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxWb {
    /// Status and errors (`staterr`).
    pub staterr: u32,
    /// Bytes written to the buffer.
    pub len: u16,
}

impl RxWb {
    /// Decodes the write-back's second word.
    #[inline]
    pub fn from_hi(hi: u64) -> Self {
        Self { staterr: hi as u32, len: (hi >> 32) as u16 }
    }
    /// Whether the NIC is done with the descriptor.
    #[inline]
    pub fn done(self) -> bool {
        self.staterr & RX_STAT_DD != 0
    }
    /// Whether this is a whole good frame in one buffer.
    #[inline]
    pub fn good(self) -> bool {
        self.staterr & RX_STAT_EOP != 0 && self.staterr & RX_ERR_FRAME == 0 && self.len > 0
    }
}

/// An advanced transmit data descriptor for a whole frame of `len` bytes at
/// `addr`: end of packet, FCS inserted by the NIC, status reported.
#[inline]
pub fn tx_data(addr: u64, len: u16) -> [u64; 2] {
    tx_segment(addr, len, len, true)
}

/// One data descriptor of a frame of `paylen` bytes: this segment's `seg_len`
/// bytes at `addr`; `last` marks the end of the frame. Every segment asks for a
/// status write-back, so each descriptor can be reclaimed on its own DD.
#[inline]
pub fn tx_segment(addr: u64, seg_len: u16, paylen: u16, last: bool) -> [u64; 2] {
    let mut cmd = u32::from(seg_len) | TX_DTYP_DATA | TX_CMD_DEXT | TX_CMD_IFCS | TX_CMD_RS;
    if last {
        cmd |= TX_CMD_EOP;
    }
    let olinfo = u32::from(paylen) << TX_PAYLEN_SHIFT;
    [addr, u64::from(cmd) | (u64::from(olinfo) << 32)]
}

/// Bytes of a `len`-byte buffer at `addr` before the next multiple of `page`
/// (a power of two), or `len` when it does not cross one.
#[inline]
pub fn tx_first_segment(addr: u64, len: u16, page: u64) -> u16 {
    let to_boundary = page - (addr & (page - 1));
    if u64::from(len) > to_boundary {
        to_boundary as u16
    } else {
        len
    }
}

/// Whether a transmit descriptor's second word shows the write-back DD.
#[inline]
pub fn tx_done(hi: u64) -> bool {
    (hi >> 32) as u32 & TX_STAT_DD != 0
}

/// One ring's descriptors inside ring memory.
#[derive(Debug, Clone, Copy)]
struct Span {
    off: usize,
    n: u16,
}

/// DMA-able memory holding the receive and the transmit descriptor ring.
#[derive(Debug)]
pub struct DescRing {
    region: Region,
    rx: Span,
    tx: Span,
}

fn ring_bytes(n: u16) -> usize {
    (usize::from(n) * DESC_LEN).next_multiple_of(RING_ALIGN)
}

/// Which ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The receive ring.
    Rx,
    /// The transmit ring.
    Tx,
}

impl DescRing {
    /// Allocates zeroed memory for an `rx_n`-entry and a `tx_n`-entry ring (in
    /// `hugedir` when it is a usable hugetlbfs, else a memfd).
    pub fn new(hugedir: Option<&std::path::Path>, rx_n: u16, tx_n: u16) -> Result<Self, MemError> {
        let rx = Span { off: 0, n: rx_n };
        let tx = Span { off: ring_bytes(rx_n), n: tx_n };
        let region = Region::create(hugedir, (tx.off + ring_bytes(tx_n)) as u64)?;
        let mut me = Self { region, rx, tx };
        me.zero();
        Ok(me)
    }

    /// The memory to map for the device.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Zeroes both rings.
    pub fn zero(&mut self) {
        let len = self.region.map().len();
        self.region.map_mut().slice_mut(0, len).expect("whole region").fill(0);
    }

    fn span(&self, w: Which) -> Span {
        match w {
            Which::Rx => self.rx,
            Which::Tx => self.tx,
        }
    }

    /// IOVA (== VA) of a ring's first descriptor.
    pub fn base(&self, w: Which) -> u64 {
        self.region.map().addr() + self.span(w).off as u64
    }

    /// A ring's length in bytes as the NIC's `RDLEN`/`TDLEN` wants it.
    pub fn len_bytes(&self, w: Which) -> u32 {
        (usize::from(self.span(w).n) * DESC_LEN) as u32
    }

    #[inline]
    fn word_ptr(&self, w: Which, i: u16, word: usize) -> *mut u64 {
        let s = self.span(w);
        assert!(i < s.n && word < 2, "descriptor {i} of {}", s.n);
        let off = s.off + usize::from(i) * DESC_LEN + word * 8;
        self.region.map().ptr_at(off, 8).expect("inside ring memory").cast()
    }

    /// Writes descriptor `i`: the first word, then the second (which the NIC
    /// reads as a unit with the first once the tail passes it).
    #[inline]
    pub fn write(&self, w: Which, i: u16, d: [u64; 2]) {
        let (p0, p1) = (self.word_ptr(w, i, 0), self.word_ptr(w, i, 1));
        // SAFETY: both pointers are 8-byte aligned words inside our live ring mapping
        // (bounds checked in word_ptr); the NIC only reads a descriptor the tail gave it.
        unsafe {
            std::ptr::write_volatile(p0, d[0].to_le());
            std::ptr::write_volatile(p1, d[1].to_le());
        }
    }

    /// Reads descriptor `i`'s second word (where both write-backs keep DD).
    #[inline]
    pub fn read_hi(&self, w: Which, i: u16) -> u64 {
        let p = self.word_ptr(w, i, 1);
        // SAFETY: an aligned word inside our live ring mapping; the NIC may write it
        // concurrently, which one volatile 64-bit load tolerates.
        let v = u64::from_le(unsafe { std::ptr::read_volatile(p) });
        // Nothing the caller reads about the packet may be read before DD.
        fence(Ordering::Acquire);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_descriptors() {
        assert_eq!(rx_read(0x7f00_0000_0080), [0x7f00_0000_0080, 0]);
        // DD|EOP, length 60.
        let wb = RxWb::from_hi(0x0000_003c_0000_0003);
        assert!(wb.done() && wb.good());
        assert_eq!(wb.len, 60);
        assert!(!RxWb::from_hi(0).done());
        // CRC error.
        assert!(!RxWb::from_hi(0x0000_003c_0100_0003).good());
        // Not EOP: the frame did not fit one buffer.
        assert!(!RxWb::from_hi(0x0000_0800_0000_0001).good());
        // IP/L4 checksum error bits (0x40000000, 0x20000000) are not frame errors.
        assert!(RxWb::from_hi(0x0000_003c_6000_0003).good());
    }

    #[test]
    fn tx_descriptors() {
        let d = tx_data(0x1234_5680, 60);
        assert_eq!(d[0], 0x1234_5680);
        let cmd = d[1] as u32;
        assert_eq!(cmd & 0xffff, 60);
        assert_eq!(cmd & 0xfff0_0000, 0x2b30_0000, "DEXT|RS|IFCS|EOP|DTYP_DATA");
        assert_eq!((d[1] >> 32) as u32 >> TX_PAYLEN_SHIFT, 60);
        assert!(!tx_done(d[1]), "a fresh descriptor is not done");
        assert!(tx_done(1 << 32));
    }

    #[test]
    fn tx_split_at_page_boundaries() {
        assert_eq!(tx_first_segment(0x1000_0080, 1518, 4096), 1518);
        assert_eq!(tx_first_segment(0x1000_0a00, 1518, 4096), 1518, "ends exactly at the boundary");
        assert_eq!(tx_first_segment(0x1000_0c00, 1518, 4096), 1024);
        assert_eq!(tx_first_segment(0x1000_0c00, 1518, 2 << 20), 1518);
        let first = tx_segment(0x1000_0c00, 1024, 1518, false);
        let last = tx_segment(0x1000_1000, 494, 1518, true);
        assert_eq!(first[1] as u32 & (TX_CMD_EOP | 0xffff), 1024, "no EOP on the first");
        assert_eq!(last[1] as u32 & (TX_CMD_EOP | 0xffff), TX_CMD_EOP + 494);
        for d in [first, last] {
            assert_eq!((d[1] >> 32) as u32 >> TX_PAYLEN_SHIFT, 1518, "PAYLEN is the frame's");
            assert_ne!(d[1] as u32 & TX_CMD_RS, 0);
        }
    }

    #[test]
    fn ring_memory_layout_and_access() {
        let r = DescRing::new(None, 8, 24).unwrap();
        assert_eq!(r.base(Which::Rx) % RING_ALIGN as u64, 0);
        assert_eq!(r.base(Which::Tx) - r.base(Which::Rx), 128);
        assert_eq!(r.len_bytes(Which::Tx), 384);
        r.write(Which::Tx, 23, [1, 2 << 32 | 5]);
        assert_eq!(r.read_hi(Which::Tx, 23), 2 << 32 | 5);
        assert_eq!(r.read_hi(Which::Rx, 7), 0);
    }

    #[test]
    #[should_panic(expected = "descriptor 8 of 8")]
    fn ring_access_is_bounded() {
        let r = DescRing::new(None, 8, 8).unwrap();
        r.read_hi(Which::Rx, 8);
    }
}
