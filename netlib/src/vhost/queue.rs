// The device side of one virtqueue: walks the frontend's descriptor chains
// with every index, length and address bounded, and returns them used.
//! Device-side virtqueue processing with validated descriptor chains.

use crate::mem::{GuestMemory, GuestSpan};
use crate::ring::DeviceRing;
use crate::spec::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Most segments one chain may have (a packet in more pieces is refused).
pub const MAX_SEGS: usize = 16;

/// What was wrong with a frontend's ring: the port is reset on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    /// The avail index moved more than a ring's worth ahead.
    #[error("avail index {avail} is {ahead} entries ahead of {last} (ring of {size})")]
    AvailJump {
        /// Avail idx read.
        avail: u16,
        /// Our last avail.
        last: u16,
        /// Distance.
        ahead: u16,
        /// Ring size.
        size: u16,
    },
    /// A head or next index past the descriptor table.
    #[error("descriptor index {index} is past the table of {size}")]
    IndexOutOfRange {
        /// The index.
        index: u16,
        /// Ring size.
        size: u16,
    },
    /// A chain that loops or is longer than the ring.
    #[error("descriptor chain from head {head} is longer than the ring ({size}): a loop")]
    ChainTooLong {
        /// Head.
        head: u16,
        /// Ring size.
        size: u16,
    },
    /// A chain with more segments than we take.
    #[error("descriptor chain from head {head} has more than {MAX_SEGS} segments")]
    TooManySegments {
        /// Head.
        head: u16,
    },
    /// A descriptor whose address range is outside every region (or straddles two).
    #[error("descriptor {index} addr {addr:#x} len {len} is outside the frontend's memory")]
    BadAddress {
        /// Descriptor index.
        index: u16,
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// Device-writable descriptor where a readable one belongs, or vice versa.
    #[error("descriptor {index} has flags {flags:#x}: wrong direction for this queue")]
    WrongDirection {
        /// Index.
        index: u16,
        /// Flags.
        flags: u16,
    },
    /// Indirect descriptors were not negotiated.
    #[error("descriptor {index} is indirect, which was not negotiated")]
    Indirect {
        /// Index.
        index: u16,
    },
    /// Total length of a chain overflows.
    #[error("descriptor chain from head {head} totals more than 4 GiB")]
    LengthOverflow {
        /// Head.
        head: u16,
    },
}

/// A walked chain: its head and the spans of its segments.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    /// Head descriptor index (returned in the used ring).
    pub head: u16,
    /// Segments.
    pub segs: [GuestSpan; MAX_SEGS],
    /// Number of segments.
    pub nsegs: u8,
    /// Total bytes.
    pub total: u32,
}

impl Chain {
    /// A chain with no segments.
    pub fn empty(head: u16) -> Self {
        Self { head, segs: [GuestSpan::default(); MAX_SEGS], nsegs: 0, total: 0 }
    }

    /// The segments.
    #[inline]
    pub fn segs(&self) -> &[GuestSpan] {
        &self.segs[..self.nsegs as usize]
    }
}

/// One device-side queue: the ring plus our avail/used cursors.
#[derive(Debug)]
pub struct DeviceQueue {
    /// The ring (its pointers resolved once).
    pub ring: DeviceRing,
    /// Next avail entry to take.
    pub last_avail: u16,
    /// Next used entry to write.
    pub last_used: u16,
}

impl DeviceQueue {
    /// A queue starting at `base`.
    pub fn new(ring: DeviceRing, base: u16) -> Self {
        Self { ring, last_avail: base, last_used: base }
    }

    /// How many chains are available (bounded by the ring size).
    #[inline]
    pub fn available(&self) -> Result<u16, ChainFault> {
        let avail = self.ring.avail_idx();
        let ahead = avail.wrapping_sub(self.last_avail);
        let size = self.ring.size();
        if ahead > size {
            return Err(ChainFault::AvailJump { avail, last: self.last_avail, ahead, size });
        }
        Ok(ahead)
    }

    /// Starts loading the descriptors of the next `n` available chains (a hint; call it
    /// with what [`Self::available`] said before popping a burst).
    #[inline]
    pub fn prefetch(&self, n: u16) {
        self.ring.prefetch_heads(self.last_avail, n);
    }

    /// Takes the next available chain and walks it. `writable` says which
    /// direction the descriptors must have (true: the device writes).
    #[inline]
    pub fn pop(&mut self, mem: &GuestMemory, writable: bool) -> Result<Chain, ChainFault> {
        let mut chain = Chain::empty(0);
        self.pop_into(mem, writable, &mut chain)?;
        Ok(chain)
    }

    /// As [`Self::pop`], walking the chain into `chain` in place: a chain is a few
    /// hundred bytes, too many to move around by value once per packet.
    #[inline]
    pub fn pop_into(&mut self, mem: &GuestMemory, writable: bool, chain: &mut Chain) -> Result<(), ChainFault> {
        let size = self.ring.size();
        let head = self.ring.avail_entry(self.last_avail);
        self.last_avail = self.last_avail.wrapping_add(1);
        chain.head = head;
        chain.nsegs = 0;
        chain.total = 0;
        let mut idx = head;
        let mut total: u64 = 0;
        for _ in 0..size {
            let d = self.ring.desc(idx).ok_or(ChainFault::IndexOutOfRange { index: idx, size })?;
            if d.flags & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainFault::Indirect { index: idx });
            }
            if (d.flags & VRING_DESC_F_WRITE != 0) != writable {
                return Err(ChainFault::WrongDirection { index: idx, flags: d.flags });
            }
            if d.len > 0 {
                let span = mem.translate(d.addr, d.len).ok_or(ChainFault::BadAddress {
                    index: idx,
                    addr: d.addr,
                    len: d.len,
                })?;
                if chain.nsegs as usize == MAX_SEGS {
                    return Err(ChainFault::TooManySegments { head });
                }
                chain.segs[chain.nsegs as usize] = span;
                chain.nsegs += 1;
                total += d.len as u64;
                if total > u32::MAX as u64 {
                    return Err(ChainFault::LengthOverflow { head });
                }
            }
            if d.flags & VRING_DESC_F_NEXT == 0 {
                chain.total = total as u32;
                return Ok(());
            }
            if d.next >= size {
                return Err(ChainFault::IndexOutOfRange { index: d.next, size });
            }
            idx = d.next;
        }
        Err(ChainFault::ChainTooLong { head, size })
    }

    /// Writes a used entry (not yet published).
    #[inline]
    pub fn push_used(&mut self, head: u16, len: u32) {
        self.ring.set_used(self.last_used, head, len);
        self.last_used = self.last_used.wrapping_add(1);
    }

    /// Publishes the used entries written so far.
    #[inline]
    pub fn publish(&self) {
        self.ring.publish_used(self.last_used);
    }
}

/// Copies bytes out of a chain, skipping `skip` leading bytes (the net header),
/// into `dst`. Returns the bytes copied (the chain's length after `skip`,
/// at most `dst.len()`), and whether all of it fit.
#[inline]
pub fn read_chain(mem: &GuestMemory, c: &Chain, mut skip: u32, dst: &mut [u8]) -> (usize, bool) {
    let want = (c.total.saturating_sub(skip) as usize).min(dst.len());
    let mut done = 0usize;
    for &s in c.segs() {
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        let n = ((s.len() - skip) as usize).min(dst.len() - done);
        if !mem.read(s, skip, &mut dst[done..done + n]) {
            return (done, false);
        }
        done += n;
        skip = 0;
        if done == dst.len() {
            break;
        }
    }
    (done, done >= want)
}

/// Writes `hdr` then `data` into a chain. Returns bytes written, or `None` if
/// the chain is too small.
#[inline]
pub fn write_chain(mem: &GuestMemory, c: &Chain, hdr: &[u8], data: &[u8]) -> Option<u32> {
    let total = hdr.len() + data.len();
    if (c.total as usize) < total {
        return None;
    }
    let first = c.segs().first()?;
    if first.len() as usize >= total {
        // The common case: one buffer holds header and data.
        mem.write_unless_equal(*first, 0, hdr).then_some(())?;
        mem.write(*first, hdr.len() as u32, data).then_some(())?;
        return Some(total as u32);
    }
    let mut seg = 0usize;
    let mut off = 0u32;
    for part in [hdr, data] {
        let mut p = part;
        while !p.is_empty() {
            let s = *c.segs().get(seg)?;
            let n = ((s.len() - off) as usize).min(p.len());
            mem.write(s, off, &p[..n]).then_some(())?;
            p = &p[n..];
            off += n as u32;
            if off == s.len() {
                seg += 1;
                off = 0;
            }
        }
    }
    Some(total as u32)
}

/// Copies a packet from a chain of `src_mem` (skipping its `skip`-byte header)
/// into a chain of `dst_mem` after writing `hdr`: the switch's single copy.
/// Returns bytes written into `dst`, or `None` if `dst` is too small.
#[inline]
pub fn copy_chain(
    dst_mem: &GuestMemory,
    dst: &Chain,
    hdr: &[u8],
    src_mem: &GuestMemory,
    src: &Chain,
    skip: u32,
) -> Option<u32> {
    let data_len = src.total.checked_sub(skip)?;
    let total = hdr.len() as u32 + data_len;
    if dst.total < total {
        return None;
    }
    let d0 = *dst.segs().first()?;
    let s0 = *src.segs().first()?;
    if dst.nsegs == 1 && s0.len() >= src.total {
        // Common case: both sides one buffer.
        dst_mem.write_unless_equal(d0, 0, hdr).then_some(())?;
        dst_mem.copy_from(d0, hdr.len() as u32, src_mem, s0, skip, data_len).then_some(())?;
        return Some(total);
    }
    // General case: header first, then segment by segment.
    if !hdr.is_empty() {
        write_chain(dst_mem, &Chain { total: hdr.len() as u32, ..*dst }, hdr, &[])?;
    }
    let (mut di, mut doff) = (0usize, 0u32);
    let mut hdr_left = hdr.len() as u32;
    while hdr_left > 0 {
        let s = *dst.segs().get(di)?;
        let n = (s.len() - doff).min(hdr_left);
        hdr_left -= n;
        doff += n;
        if doff == s.len() {
            di += 1;
            doff = 0;
        }
    }
    let mut skip_left = skip;
    for &s in src.segs() {
        let mut soff = 0u32;
        if skip_left >= s.len() {
            skip_left -= s.len();
            continue;
        }
        soff += skip_left;
        skip_left = 0;
        while soff < s.len() {
            let d = *dst.segs().get(di)?;
            let n = (s.len() - soff).min(d.len() - doff);
            dst_mem.copy_from(d, doff, src_mem, s, soff, n).then_some(())?;
            soff += n;
            doff += n;
            if doff == d.len() {
                di += 1;
                doff = 0;
            }
        }
    }
    Some(total)
}
