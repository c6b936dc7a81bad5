// The packet buffer pool: fixed-size buffers carved from one shared region,
// with a free stack of indices. No allocation after new().
//! Packet buffers and their handles.

use std::path::Path;

use crate::mem::{MemError, Region};

/// Bytes before the packet data in every buffer (room for the virtio-net header
/// and for encapsulation).
pub const HEADROOM: u16 = 128;
/// Bytes of one buffer, headroom included.
pub const BUF_SIZE: u32 = 2048 + HEADROOM as u32;
/// Most data bytes a buffer holds.
pub const DATA_ROOM: u16 = (BUF_SIZE - HEADROOM as u32) as u16;

/// Options for a pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Number of packet buffers.
    pub nbufs: u32,
    /// hugetlbfs directory to allocate in (falls back to memfd).
    pub hugedir: Option<std::path::PathBuf>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { nbufs: 8192, hugedir: Some("/dev/hugepages".into()) }
    }
}

/// A packet: a buffer of the pool it came from, with the data's offset and length.
/// Not `Clone`: a handle is owned by exactly one of the app, a ring, or the pool.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet {
    idx: u32,
    off: u16,
    len: u16,
}

impl Packet {
    /// Data length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether the packet holds no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Buffer index inside its pool.
    #[inline]
    pub fn index(&self) -> u32 {
        self.idx
    }
}

/// Errors from the pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Memory could not be had.
    #[error("packet pool memory: {0}")]
    Mem(#[from] MemError),
    /// Bad options.
    #[error("packet pool: {0}")]
    Options(String),
}

/// A pool of packet buffers in one shared region (one region, whatever its size:
/// backends that take 8 regions at most are never a problem).
#[derive(Debug)]
pub struct PktPool {
    region: Region,
    nbufs: u32,
    free: Vec<u32>,
}

impl PktPool {
    /// Creates a pool of `opts.nbufs` buffers.
    pub fn new(opts: &PoolOptions) -> Result<Self, PoolError> {
        if opts.nbufs == 0 || opts.nbufs > (1 << 22) {
            return Err(PoolError::Options(format!("nbufs {} must be in 1..=4194304", opts.nbufs)));
        }
        let len = opts.nbufs as u64 * BUF_SIZE as u64;
        let region = Region::create(opts.hugedir.as_deref().map(Path::new), len)?;
        tracing::info!(
            "pool: {} buffers of {} bytes in {} ({} bytes)",
            opts.nbufs,
            BUF_SIZE,
            region.backing(),
            region.map().len()
        );
        let free = (0..opts.nbufs).rev().collect();
        Ok(Self { region, nbufs: opts.nbufs, free })
    }

    /// The region to share with backends.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Number of buffers.
    pub fn capacity(&self) -> u32 {
        self.nbufs
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    #[inline]
    fn buf_off(idx: u32) -> usize {
        (idx as u64 * BUF_SIZE as u64) as usize
    }

    /// Our virtual address of the packet's first data byte (VA is the IOVA we
    /// give backends and devices).
    #[inline]
    pub fn data_addr(&self, p: &Packet) -> u64 {
        self.region.map().addr() + Self::buf_off(p.idx) as u64 + p.off as u64
    }

    /// Address of a buffer's first byte.
    #[inline]
    pub fn buf_addr(&self, idx: u32) -> u64 {
        self.region.map().addr() + Self::buf_off(idx) as u64
    }

    /// Takes a free buffer; the packet is empty with the default headroom.
    #[inline]
    pub fn alloc(&mut self) -> Option<Packet> {
        self.free.pop().map(|idx| Packet { idx, off: HEADROOM, len: 0 })
    }

    /// Appends up to `n` fresh packets to `out` (which must have room: never grows it
    /// past its capacity). Returns how many were added.
    #[inline]
    pub fn alloc_bulk(&mut self, out: &mut Vec<Packet>, n: usize) -> usize {
        let n = n.min(self.free.len()).min(out.capacity() - out.len());
        for _ in 0..n {
            let idx = self.free.pop().expect("counted");
            out.push(Packet { idx, off: HEADROOM, len: 0 });
        }
        n
    }

    /// Returns a packet's buffer to the pool.
    #[inline]
    pub fn free(&mut self, p: Packet) {
        debug_assert!(p.idx < self.nbufs);
        self.free.push(p.idx);
    }

    /// Returns every packet in `pkts` to the pool.
    #[inline]
    pub fn free_all(&mut self, pkts: &mut Vec<Packet>) {
        for p in pkts.drain(..) {
            self.free.push(p.idx);
        }
    }

    /// The packet's data.
    #[inline]
    pub fn data(&self, p: &Packet) -> &[u8] {
        let off = Self::buf_off(p.idx) + p.off as usize;
        self.region.map().slice(off, p.len as usize).expect("packet inside pool")
    }

    /// The packet's data, writable.
    #[inline]
    pub fn data_mut(&mut self, p: &Packet) -> &mut [u8] {
        let off = Self::buf_off(p.idx) + p.off as usize;
        self.region.map_mut().slice_mut(off, p.len as usize).expect("packet inside pool")
    }

    /// Sets the data length (clamped to the room after the data offset) and
    /// returns the data, writable.
    #[inline]
    pub fn set_len<'a>(&'a mut self, p: &mut Packet, len: usize) -> &'a mut [u8] {
        let room = (BUF_SIZE as usize) - p.off as usize;
        p.len = len.min(room) as u16;
        self.data_mut(p)
    }

    /// Makes the first `zeroed` of the `n` bytes just before the packet's data (a header
    /// the device reads) zero, and returns the address of the first of the `n`. `n` must
    /// fit in the headroom. Bytes that are already zero are not written: a buffer that
    /// came in from the device usually has a clean header already, and not storing to
    /// it keeps that cache line shared with the device's core instead of pulling it over.
    #[inline]
    pub(crate) fn clear_header(&mut self, p: &Packet, n: u16, zeroed: u16) -> u64 {
        debug_assert!(n <= p.off && zeroed <= n);
        let off = Self::buf_off(p.idx) + (p.off - n) as usize;
        let hdr = self.region.map_mut().slice_mut(off, zeroed as usize).expect("inside pool");
        if hdr.iter().any(|&b| b != 0) {
            hdr.fill(0);
        }
        self.region.map().addr() + off as u64
    }

    /// Room for data after the data offset.
    #[inline]
    pub fn tailroom(p: &Packet) -> usize {
        BUF_SIZE as usize - p.off as usize
    }

    /// Sets where a packet's data starts and its length (drivers, after the device
    /// filled the buffer). The caller has bounded both against the buffer.
    #[inline]
    pub(crate) fn reshape(p: &mut Packet, off: u16, len: u16) {
        debug_assert!(off as u32 + len as u32 <= BUF_SIZE);
        p.off = off;
        p.len = len;
    }
}

/// Fixed-capacity packet bursts.
pub const BURST: usize = 32;

/// An empty burst vector with room for [`BURST`] packets.
pub fn burst_vec() -> Vec<Packet> {
    Vec::with_capacity(BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> PktPool {
        PktPool::new(&PoolOptions { nbufs: 16, hugedir: None }).unwrap()
    }

    #[test]
    fn alloc_free_and_data() {
        let mut p = small();
        let mut a = p.alloc().unwrap();
        p.set_len(&mut a, 60).copy_from_slice(&[7u8; 60]);
        assert_eq!(p.data(&a), &[7u8; 60][..]);
        assert_eq!(p.available(), 15);
        p.free(a);
        assert_eq!(p.available(), 16);
        let mut v = burst_vec();
        assert_eq!(p.alloc_bulk(&mut v, 100), 16);
        assert_eq!(v.capacity(), BURST, "never grows");
        p.free_all(&mut v);
        assert_eq!(p.available(), 16);
    }

    #[test]
    fn clear_header_zeroes_only_the_asked_bytes() {
        let mut p = small();
        let a = p.alloc().unwrap();
        let base = p.region().map().addr();
        let off = (p.clear_header(&a, 12, 10) - base) as usize;
        assert_eq!(off, PktPool::buf_off(a.idx) + HEADROOM as usize - 12);
        // a dirty header (flags, gso, num_buffers = 1): the first 10 bytes are cleared
        p.region.map_mut().slice_mut(off, 12).unwrap().copy_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1, 0]);
        p.clear_header(&a, 12, 10);
        assert_eq!(p.region().map().slice(off, 12).unwrap(), &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        p.clear_header(&a, 12, 12);
        assert_eq!(p.region().map().slice(off, 12).unwrap(), &[0u8; 12]);
    }

    #[test]
    fn set_len_clamps() {
        let mut p = small();
        let mut a = p.alloc().unwrap();
        assert_eq!(p.set_len(&mut a, 100_000).len(), DATA_ROOM as usize);
    }
}
