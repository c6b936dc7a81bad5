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
/// Most data bytes a buffer holds, unless its pool is made with more.
pub const DATA_ROOM: u16 = (BUF_SIZE - HEADROOM as u32) as u16;
/// Most data bytes a pool's buffers may be made to hold: a 64 KiB GSO frame (a sender
/// with TSO, see [`PktPool::set_net_hdr`]) fits, and a buffer with its headroom is 64 KiB.
pub const MAX_DATA_ROOM: u16 = (65536 - HEADROOM as u32) as u16;
/// Bytes of an Ethernet header with one VLAN tag: a frame is at most this over the MTU.
pub const ETH_VLAN_HDR_LEN: u16 = 18;

/// The data room of buffers that hold a frame of an `mtu`-byte MTU (with its Ethernet
/// header and a VLAN tag): at least [`DATA_ROOM`], rounded up to 64 bytes.
pub fn data_room_for_mtu(mtu: u16) -> u16 {
    let frame = u32::from(mtu) + u32::from(ETH_VLAN_HDR_LEN);
    frame.next_multiple_of(64).clamp(u32::from(DATA_ROOM), u32::from(MAX_DATA_ROOM)) as u16
}

/// Options for a pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Number of packet buffers.
    pub nbufs: u32,
    /// hugetlbfs directory to allocate in (falls back to memfd).
    pub hugedir: Option<std::path::PathBuf>,
    /// Data bytes of one buffer ([`DATA_ROOM`] unless frames are bigger: see
    /// [`data_room_for_mtu`]); at most [`MAX_DATA_ROOM`].
    pub data_room: u16,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { nbufs: 8192, hugedir: Some("/dev/hugepages".into()), data_room: DATA_ROOM }
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
    /// Bytes of one buffer, headroom included.
    buf_size: u32,
    free: Vec<u32>,
}

impl PktPool {
    /// Creates a pool of `opts.nbufs` buffers.
    pub fn new(opts: &PoolOptions) -> Result<Self, PoolError> {
        if opts.nbufs == 0 || opts.nbufs > (1 << 22) {
            return Err(PoolError::Options(format!("nbufs {} must be in 1..=4194304", opts.nbufs)));
        }
        if opts.data_room < 64 || opts.data_room > MAX_DATA_ROOM {
            return Err(PoolError::Options(format!("data_room {} must be in 64..={MAX_DATA_ROOM}", opts.data_room)));
        }
        let buf_size = u32::from(HEADROOM) + u32::from(opts.data_room);
        let len = opts.nbufs as u64 * buf_size as u64;
        let region = Region::create(opts.hugedir.as_deref().map(Path::new), len)?;
        tracing::info!(
            "pool: {} buffers of {} bytes in {} ({} bytes)",
            opts.nbufs,
            buf_size,
            region.backing(),
            region.map().len()
        );
        let free = (0..opts.nbufs).rev().collect();
        Ok(Self { region, nbufs: opts.nbufs, buf_size, free })
    }

    /// The region to share with backends.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Number of buffers.
    pub fn capacity(&self) -> u32 {
        self.nbufs
    }

    /// Data bytes one buffer holds.
    #[inline]
    pub fn data_room(&self) -> u16 {
        (self.buf_size - u32::from(HEADROOM)) as u16
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    #[inline]
    fn buf_off(&self, idx: u32) -> usize {
        (idx as u64 * self.buf_size as u64) as usize
    }

    /// Our virtual address of the packet's first data byte (VA is the IOVA we
    /// give backends and devices).
    #[inline]
    pub fn data_addr(&self, p: &Packet) -> u64 {
        self.region.map().addr() + self.buf_off(p.idx) as u64 + p.off as u64
    }

    /// Address of a buffer's first byte.
    #[inline]
    pub fn buf_addr(&self, idx: u32) -> u64 {
        self.region.map().addr() + self.buf_off(idx) as u64
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
        let off = self.buf_off(p.idx) + p.off as usize;
        self.region.map().slice(off, p.len as usize).expect("packet inside pool")
    }

    /// The packet's data, writable.
    #[inline]
    pub fn data_mut(&mut self, p: &Packet) -> &mut [u8] {
        let off = self.buf_off(p.idx) + p.off as usize;
        self.region.map_mut().slice_mut(off, p.len as usize).expect("packet inside pool")
    }

    /// Sets the data length (clamped to the room after the data offset) and
    /// returns the data, writable.
    #[inline]
    pub fn set_len<'a>(&'a mut self, p: &mut Packet, len: usize) -> &'a mut [u8] {
        let room = self.tailroom(p);
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
        let off = self.buf_off(p.idx) + (p.off - n) as usize;
        let hdr = self.region.map_mut().slice_mut(off, zeroed as usize).expect("inside pool");
        if hdr.iter().any(|&b| b != 0) {
            hdr.fill(0);
        }
        self.region.map().addr() + off as u64
    }

    /// Writes the virtio-net header `hdr` (num_buffers 0) in the 12 bytes just before the
    /// packet's data: what a port that took transmit offloads sends with the frame (see
    /// `VirtioUserOptions::tx_offloads`). A frame that asks for nothing takes
    /// `VnetHdr::default()`.
    pub fn set_net_hdr(&mut self, p: &Packet, hdr: &crate::vnet_hdr::VnetHdr) {
        let n = crate::spec::NET_HDR_LEN as u16;
        let off = self.buf_off(p.idx) + usize::from(p.off.saturating_sub(n));
        let out = self.region.map_mut().slice_mut(off, usize::from(n)).expect("inside pool");
        out[..crate::vnet_hdr::HDR_FIELDS_LEN].copy_from_slice(&hdr.to_bytes());
        out[crate::vnet_hdr::HDR_FIELDS_LEN..].fill(0);
    }

    /// The address of the `n` bytes just before the packet's data, left as they are (a
    /// header the caller wrote); `n` must fit in the headroom.
    #[inline]
    pub(crate) fn header_addr(&self, p: &Packet, n: u16) -> u64 {
        debug_assert!(n <= p.off);
        self.region.map().addr() + (self.buf_off(p.idx) + usize::from(p.off - n)) as u64
    }

    /// Room for data after the data offset.
    #[inline]
    pub fn tailroom(&self, p: &Packet) -> usize {
        self.buf_size as usize - p.off as usize
    }

    /// The `n` bytes just before the packet's data (a header the device wrote); `n`
    /// must fit in the headroom.
    #[inline]
    pub(crate) fn header(&self, p: &Packet, n: u16) -> &[u8] {
        debug_assert!(n <= p.off);
        let off = self.buf_off(p.idx) + (p.off - n) as usize;
        self.region.map().slice(off, n as usize).expect("inside pool")
    }

    /// Appends `src`'s data to `dst`'s (a frame the device spread over several
    /// buffers); false, and nothing changed, if it does not fit in `dst`'s buffer.
    pub(crate) fn append(&mut self, dst: &mut Packet, src: &Packet) -> bool {
        let (len, end) = (usize::from(dst.len), usize::from(dst.len) + usize::from(src.len));
        if end > self.tailroom(dst) {
            return false;
        }
        let from = self.buf_off(src.idx) + src.off as usize;
        let to = self.buf_off(dst.idx) + dst.off as usize + len;
        let all = self.region.map_mut().slice_mut(0, self.nbufs as usize * self.buf_size as usize).expect("whole pool");
        all.copy_within(from..from + usize::from(src.len), to);
        dst.len = end as u16;
        true
    }

    /// Sets where a packet's data starts and its length (drivers, after the device
    /// filled the buffer). The caller has bounded both against the buffer.
    #[inline]
    pub(crate) fn reshape(p: &mut Packet, off: u16, len: u16) {
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
        PktPool::new(&PoolOptions { nbufs: 16, hugedir: None, data_room: DATA_ROOM }).unwrap()
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
        assert_eq!(off, p.buf_off(a.idx) + HEADROOM as usize - 12);
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

    #[test]
    fn a_pool_for_jumbo_frames_and_appending_buffers() {
        assert_eq!((data_room_for_mtu(1500), data_room_for_mtu(9000)), (DATA_ROOM, 9024));
        let mut p = PktPool::new(&PoolOptions { nbufs: 4, hugedir: None, data_room: 9024 }).unwrap();
        assert_eq!((p.data_room(), p.region().map().len() >= 4 * (9024 + 128)), (9024, true));
        let mut a = p.alloc().unwrap();
        assert_eq!(p.set_len(&mut a, 9018).len(), 9018);
        p.data_mut(&a).fill(1);
        let mut b = p.alloc().unwrap();
        p.set_len(&mut b, 6).copy_from_slice(&[2; 6]);
        assert!(p.append(&mut a, &b), "9024 bytes fit");
        assert_eq!((a.len(), &p.data(&a)[9016..]), (9024, &[1, 1, 2, 2, 2, 2, 2, 2][..]));
        assert!(!p.append(&mut a, &b), "a byte more does not");
        assert_eq!(a.len(), 9024);
        for bad in [0, 63, MAX_DATA_ROOM + 1] {
            let e = PktPool::new(&PoolOptions { nbufs: 4, hugedir: None, data_room: bad }).unwrap_err();
            assert!(e.to_string().contains("data_room"), "{e}");
        }
    }
}
