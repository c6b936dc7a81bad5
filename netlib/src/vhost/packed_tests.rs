// The packed ring on the device side: chains walked by the wrap-counter rules over
// many wraps, used descriptors written in order, and hostile descriptors refused.
//! Tests of the device-side packed virtqueue.

use std::sync::Arc;

use super::*;
use crate::mem::{GuestMemory, Region};
use crate::ring::{packed_desc_bytes, PackedDeviceRing};
use crate::spec::{
    NUM_BUFFERS_AT, PACKED_BASE_WRAP, RING_EVENT_FLAGS_DISABLE, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
};

/// A packed ring and a data region as a frontend would share them, the device's queue
/// on them, and the driver's own cursors.
pub(super) struct PRig {
    ring: Region,
    pub(super) data: Region,
    pub(super) mem: Arc<GuestMemory>,
    pub(super) q: PackedQueue,
    size: u16,
    /// The driver's next slot to make available, and its wrap counter.
    avail: (u16, bool),
    /// The driver's next slot to look for a used descriptor at, and its wrap counter.
    used: (u16, bool),
}

pub(super) fn prig(size: u16) -> PRig {
    let ring = Region::create(None, packed_desc_bytes(size) + 64).unwrap();
    let data = Region::create(None, 1 << 20).unwrap();
    let mem = GuestMemory::identity(&[&ring, &data]);
    let base = ring.map().addr();
    let end = base + packed_desc_bytes(size);
    let dr = PackedDeviceRing::new(&mem, u32::from(size), base, end, end + 4).unwrap();
    let q = PackedQueue::new(dr, PACKED_BASE_WRAP, 9216).unwrap();
    PRig { ring, data, mem, q, size, avail: (0, true), used: (0, true) }
}

impl PRig {
    pub(super) fn buf(&self, off: u64) -> u64 {
        self.data.map().addr() + off
    }

    /// Writes slot `i` as given (the flags last).
    fn put(&mut self, i: u16, addr: u64, len: u32, id: u16, flags: u16) {
        let s = self.ring.map_mut().slice_mut(16 * usize::from(i), 16).unwrap();
        s[..8].copy_from_slice(&addr.to_le_bytes());
        s[8..12].copy_from_slice(&len.to_le_bytes());
        s[12..14].copy_from_slice(&id.to_le_bytes());
        s[14..16].copy_from_slice(&flags.to_le_bytes());
    }

    /// Rewrites slot `i`'s id.
    fn set_id(&mut self, i: u16, id: u16) {
        let s = self.ring.map_mut().slice_mut(16 * usize::from(i) + 12, 2).unwrap();
        s.copy_from_slice(&id.to_le_bytes());
    }

    /// Rewrites slot `i`'s flags.
    fn set_flags(&mut self, i: u16, flags: u16) {
        let s = self.ring.map_mut().slice_mut(16 * usize::from(i) + 14, 2).unwrap();
        s.copy_from_slice(&flags.to_le_bytes());
    }

    fn slot(&self, i: u16) -> (u64, u32, u16, u16) {
        let s = self.ring.map().slice(16 * usize::from(i), 16).unwrap();
        let u16_at = |o: usize| u16::from_le_bytes([s[o], s[o + 1]]);
        (
            u64::from_le_bytes(s[..8].try_into().unwrap()),
            u32::from_le_bytes(s[8..12].try_into().unwrap()),
            u16_at(12),
            u16_at(14),
        )
    }

    /// Makes a chain of `bufs` (address, length) available as buffer `id`, `extra`
    /// flags on each descriptor, by the rules: every descriptor's AVAIL/USED bits from
    /// the driver's wrap counter, the head's flags written last.
    pub(super) fn offer(&mut self, bufs: &[(u64, u32)], id: u16, extra: u16) {
        let head = self.avail;
        let mut writes = Vec::new();
        for (k, &(addr, len)) in bufs.iter().enumerate() {
            let (pos, wrap) = self.avail;
            let mut flags = extra | if wrap { VRING_PACKED_DESC_F_AVAIL } else { VRING_PACKED_DESC_F_USED };
            if k + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            writes.push((pos, addr, len, flags));
            self.avail = if pos + 1 == self.size { (0, !wrap) } else { (pos + 1, wrap) };
        }
        for &(pos, addr, len, flags) in writes.iter().rev() {
            self.put(pos, addr, len, id, flags);
        }
        assert_eq!(writes[0].0, head.0);
    }

    /// The next used descriptor, if the device wrote it: (id, len); `descs` is how
    /// many slots its chain took.
    pub(super) fn reap(&mut self, descs: u16) -> Option<(u16, u32)> {
        let (pos, wrap) = self.used;
        let (_, len, id, flags) = self.slot(pos);
        let used = flags & VRING_PACKED_DESC_F_USED != 0;
        let avail = flags & VRING_PACKED_DESC_F_AVAIL != 0;
        if used != wrap || avail != wrap {
            return None;
        }
        let p = pos + descs;
        self.used = if p >= self.size { (p - self.size, !wrap) } else { (p, wrap) };
        Some((id, len))
    }

    fn pop(&mut self, writable: bool) -> Result<Chain, ChainFault> {
        let mut c = Chain::empty(0);
        self.q.pop_into(&self.mem, writable, &mut c)?;
        Ok(c)
    }
}

#[test]
fn chains_wrap_around_a_ring_of_256_many_times() {
    let mut r = prig(256);
    let mut next_id = 0u16;
    let mut expect = std::collections::VecDeque::new();
    let mut done = 0u32;
    // Chains of 1, 2 and 3 descriptors: their ends fall everywhere, across the wrap too.
    for round in 0..400u32 {
        let burst = 1 + round % 7;
        for k in 0..burst {
            let n = 1 + (round + k) % 3;
            let bufs: Vec<(u64, u32)> = (0..n).map(|s| (r.buf(u64::from(s) * 256), 12 + 10 * s)).collect();
            let id = next_id % 256;
            next_id = next_id.wrapping_add(1);
            r.offer(&bufs, id, 0);
            expect.push_back((id, n as u16, (0..n).map(|s| 12 + 10 * s).sum::<u32>()));
        }
        assert_eq!(r.q.available().unwrap(), burst as u16);
        let mut chains = Vec::new();
        for _ in 0..burst {
            chains.push(r.pop(false).unwrap());
        }
        assert_eq!(r.q.available().unwrap(), 0);
        for c in &chains {
            r.q.put_used(c, c.total);
        }
        // Nothing is the driver's until published.
        assert_eq!(r.reap(chains[0].descs), None);
        r.q.publish();
        for c in &chains {
            let (id, n, total) = expect.pop_front().unwrap();
            assert_eq!((c.head, c.descs, c.total), (id, n, total));
            assert_eq!(r.reap(n), Some((id, total)));
            done += u32::from(n);
        }
        assert_eq!(r.reap(1), None);
    }
    assert!(done > 2 * 256 * 2, "{done} descriptors is not more than two wraps");
    assert_eq!(r.q.avail_base(), u32::from(r.avail.0) | if r.avail.1 { PACKED_BASE_WRAP } else { 0 });
    assert_eq!(r.q.used_base(), r.q.avail_base());
}

/// In order, on a ring the device only reads: one used descriptor per published batch,
/// at the batch's first slot with its last chain's id; the slots it skips keep the
/// driver's flags. Batches of chains of 1 to 3 descriptors, across many wraps.
#[test]
fn in_order_a_transmit_batch_is_used_with_one_descriptor() {
    let mut r = prig(16);
    r.q = PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP, 9216).unwrap().with_batched_used(true);
    let mut next_id = 0u16;
    for round in 0..200u32 {
        let burst = 1 + round % 4;
        let (mut last, mut slots) = (0u16, 0u16);
        for k in 0..burst {
            let n = 1 + (round + k) % 3;
            let bufs: Vec<(u64, u32)> = (0..n).map(|s| (r.buf(u64::from(s) * 256), 64)).collect();
            last = next_id;
            next_id = (next_id + 1) % 16;
            r.offer(&bufs, last, 0);
            slots += n as u16;
        }
        let chains: Vec<Chain> = (0..burst).map(|_| r.pop(false).unwrap()).collect();
        let first = r.used;
        for c in &chains {
            r.q.put_used(c, c.total);
        }
        assert_eq!(r.reap(slots), None, "round {round}: nothing is the driver's until published");
        r.q.publish();
        assert_eq!(r.reap(slots), Some((last, 0)), "round {round}: one descriptor, the batch's last id");
        // Every other slot of the batch still holds what the driver wrote there.
        for k in 1..slots {
            let pos = (first.0 + k) % 16;
            let wrap = first.1 ^ (first.0 + k >= 16);
            let f = r.slot(pos).3;
            let driver = if wrap { VRING_PACKED_DESC_F_AVAIL } else { VRING_PACKED_DESC_F_USED };
            assert_eq!(f & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED), driver, "round {round}: slot {pos}");
        }
    }
    assert_eq!(r.q.used_base(), r.q.avail_base());
}

#[test]
fn a_chain_is_used_where_it_started_with_its_last_descriptors_id() {
    let mut r = prig(8);
    let bufs = [(r.buf(0), 12), (r.buf(100), 0), (r.buf(200), 64)];
    r.offer(&bufs, 5, 0);
    // The driver writes the id in every descriptor; only the last one counts.
    r.set_id(0, 7);
    let c = r.pop(false).unwrap();
    assert_eq!((c.head, c.descs, c.nsegs, c.total), (5, 3, 2, 76));
    r.q.put_used(&c, 0);
    r.q.publish();
    assert_eq!(r.reap(3), Some((5, 0)));
    assert_eq!(r.q.avail_base(), PACKED_BASE_WRAP | 3);
}

#[test]
fn chains_given_back_are_walked_again_across_the_wrap() {
    let mut r = prig(4);
    r.q = PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP | 3, 9216).unwrap();
    r.avail = (3, true);
    r.used = (3, true);
    r.offer(&[(r.buf(0), 100), (r.buf(4096), 100)], 1, VRING_DESC_F_WRITE);
    r.offer(&[(r.buf(8192), 100)], 2, VRING_DESC_F_WRITE);
    let a = r.pop(true).unwrap();
    let b = r.pop(true).unwrap();
    assert_eq!(r.q.avail_base(), 2);
    r.q.give_back(&[a, b]);
    assert_eq!(r.q.avail_base(), PACKED_BASE_WRAP | 3);
    assert_eq!(r.pop(true).unwrap().head, 1);
    assert_eq!(r.pop(true).unwrap().head, 2);
}

impl PRig {
    /// Another device view of the rig's ring (to start a queue at another base).
    fn q_ring(&self) -> PackedDeviceRing {
        let base = self.ring.map().addr();
        let end = base + packed_desc_bytes(self.size);
        PackedDeviceRing::new(&self.mem, u32::from(self.size), base, end, end + 4).unwrap()
    }
}

#[test]
fn a_frame_spans_packed_receive_chains_with_num_buffers() {
    let mut r = prig(8);
    for h in 0..4u16 {
        r.offer(&[(r.buf(u64::from(h) * 4096), 1024)], h, VRING_DESC_F_WRITE);
    }
    let frame: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    let frames = [vec![1u8; 60], frame.clone()];
    let mut c = PortCounters::default();
    let mut filler = Filler::default();
    let (taken, res) = filler.fill_queue(&r.mem, &mut r.q, true, 2, |i| Frame::Local(&frames[i]), &mut c);
    res.unwrap();
    assert_eq!((taken, c.tx_packets, c.tx_dropped), (2, 2, 0));
    let used: Vec<_> = (0..4).map(|_| r.reap(1).unwrap()).collect();
    assert_eq!(used, [(0, 72), (1, 1024), (2, 1024), (3, 2512 - 2048)]);
    let d = r.data.map();
    assert_eq!(d.slice(4096 + NUM_BUFFERS_AT, 2).unwrap(), &[3, 0]);
    let mut whole = d.slice(4096 + 12, 1012).unwrap().to_vec();
    whole.extend_from_slice(d.slice(8192, 1024).unwrap());
    whole.extend_from_slice(d.slice(12288, 2512 - 2048).unwrap());
    assert_eq!(whole, frame);
}

#[test]
fn hostile_descriptors_are_refused() {
    // A buffer id past the ring.
    let mut r = prig(8);
    r.offer(&[(r.buf(0), 64)], 8, 0);
    assert_eq!(r.pop(false).unwrap_err(), ChainFault::IdOutOfRange { id: 8, size: 8 });
    // A length past the end of memory, and an address in none.
    let mut r = prig(8);
    let end = r.buf(r.data.map().len() as u64);
    r.offer(&[(end - 16, 64)], 0, 0);
    assert!(matches!(r.pop(false).unwrap_err(), ChainFault::BadAddress { index: 0, len: 64, .. }));
    let mut r = prig(8);
    r.offer(&[(0x1000, 64)], 0, 0);
    assert!(matches!(r.pop(false).unwrap_err(), ChainFault::BadAddress { addr: 0x1000, .. }));
    // A receive buffer on the transmit ring.
    let mut r = prig(8);
    r.offer(&[(r.buf(0), 64)], 0, VRING_DESC_F_WRITE);
    assert!(matches!(r.pop(false).unwrap_err(), ChainFault::WrongDirection { index: 0, .. }));
    // A frame over the port's limit.
    let mut r = prig(8);
    r.offer(&[(r.buf(0), 9217)], 0, 0);
    assert!(matches!(r.pop(false).unwrap_err(), ChainFault::FrameTooLong { len: 9217, .. }));
}

#[test]
fn wrap_bits_that_lie_are_refused() {
    // The head is available, the descriptor its NEXT names is not: a lie.
    let mut r = prig(8);
    r.offer(&[(r.buf(0), 12), (r.buf(64), 64)], 0, 0);
    r.set_flags(1, r.slot(1).3 ^ (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED));
    assert_eq!(r.q.available().unwrap_err(), ChainFault::NotAvailable { index: 1 });
    assert_eq!(r.pop(false).unwrap_err(), ChainFault::NotAvailable { index: 1 });
    // Both bits set to the driver's counter (a used descriptor's look) is not available.
    let mut r = prig(8);
    r.put(0, r.buf(0), 64, 0, VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED);
    assert_eq!(r.q.available().unwrap(), 0);
    // Nor is a descriptor made available for the next lap.
    r.put(0, r.buf(0), 64, 0, VRING_PACKED_DESC_F_USED);
    assert_eq!(r.q.available().unwrap(), 0);
    // A chain that never ends wraps onto itself: refused after the ring's worth.
    let mut r = prig(8);
    let bufs: Vec<(u64, u32)> = (0..8).map(|k| (r.buf(k * 64), 64)).collect();
    r.offer(&bufs, 0, 0);
    r.set_flags(7, r.slot(7).3 | VRING_DESC_F_NEXT);
    assert_eq!(r.q.available().unwrap(), 0);
    assert_eq!(r.pop(false).unwrap_err(), ChainFault::ChainTooLong { head: 0, size: 8 });
}

#[test]
fn a_base_past_the_ring_is_refused_and_the_wrap_bit_kept() {
    let r = prig(8);
    assert!(PackedQueue::new(r.q_ring(), 8, 9216).is_none());
    assert!(PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP | 8, 9216).is_none());
    // 16 bits: used resumes where avail does.
    assert_eq!(PackedQueue::new(r.q_ring(), 5, 9216).unwrap().base(), 5 | 5 << 16);
    let q = PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP | 5, 9216).unwrap();
    assert_eq!((q.avail_base(), q.used_base()), (PACKED_BASE_WRAP | 5, PACKED_BASE_WRAP | 5));
    // 32 bits (QEMU): used in the upper half, its own wrap counter in bit 31.
    let q = PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP | 5 | (3 << 16), 9216).unwrap();
    assert_eq!((q.avail_base(), q.used_base()), (PACKED_BASE_WRAP | 5, 3));
    assert_eq!(q.base(), PACKED_BASE_WRAP | 5 | (3 << 16));
    assert!(PackedQueue::new(r.q_ring(), 5 | ((PACKED_BASE_WRAP | 8) << 16), 9216).is_none(), "used past the ring");
}

#[test]
fn the_port_can_withhold_the_packed_ring() {
    let dev = VhostDevice::new(DeviceLimits::default());
    assert_ne!(dev.offered() & crate::spec::VIRTIO_F_RING_PACKED, 0);
    let dev = VhostDevice::new(DeviceLimits { packed: false, ..DeviceLimits::default() });
    assert_eq!(dev.offered() & crate::spec::VIRTIO_F_RING_PACKED, 0);
    let r = prig(8);
    r.q_ring().set_device_event_flags(RING_EVENT_FLAGS_DISABLE);
    let end = r.ring.map().slice(packed_desc_bytes(8) as usize + 4, 4).unwrap();
    assert_eq!(end, &[0, 0, 1, 0]);
}

/// A new queue on `r`'s ring from the stale base QEMU sends after the backend died
/// (where the ring started), recovered from the ring's flags: its base after.
fn recovered(r: &PRig) -> u32 {
    let mut q = PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP, 9216).unwrap();
    q.resume_where_the_ring_says();
    q.base()
}

#[test]
fn a_restarted_backend_finds_the_driver_in_the_ring_not_in_a_stale_base() {
    let base = |(pos, wrap): (u16, bool)| u32::from(pos) | if wrap { PACKED_BASE_WRAP } else { 0 };
    let both = |c: (u16, bool)| base(c) | base(c) << 16;
    // A fresh ring: nothing moves.
    let mut r = prig(8);
    assert_eq!(recovered(&r), both((0, true)));
    assert_eq!(PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP, 9216).unwrap().resume_where_the_ring_says(), None);
    // Round and round: the driver offers, the old backend uses, then dies with some
    // chains available (some of them taken and never used: they are taken again).
    for round in 0..20u16 {
        let n = 1 + round % 3;
        for k in 0..n {
            let len: u32 = if k == 0 { 2 } else { 1 };
            let bufs: Vec<(u64, u32)> = (0..len).map(|s| (r.buf(u64::from(s) * 256), 64)).collect();
            r.offer(&bufs, (round * 3 + k) % 8, 0);
        }
        let chains: Vec<Chain> = (0..n).map(|_| r.pop(false).unwrap()).collect();
        for c in &chains {
            r.q.put_used(c, 0);
        }
        r.q.publish();
        for c in &chains {
            assert!(r.reap(c.descs).is_some());
        }
        // Idle: the driver's next slot, from where the used descriptors' lap changes.
        assert_eq!(recovered(&r), both(r.avail), "idle after round {round}");
    }
    // Two chains available, the first taken by the backend that died.
    let oldest = r.avail;
    r.offer(&[(r.buf(0), 64)], 1, 0);
    r.offer(&[(r.buf(256), 64), (r.buf(512), 64)], 2, 0);
    let _taken = r.pop(false).unwrap();
    assert_eq!(recovered(&r), both(oldest), "resumes at the oldest available chain");
    // A whole ring available, starting mid-ring.
    let mut r = prig(4);
    r.q = PackedQueue::new(r.q_ring(), PACKED_BASE_WRAP | 2, 9216).unwrap();
    (r.avail, r.used) = ((2, true), (2, true));
    for id in 0..4 {
        r.offer(&[(r.buf(0), 64)], id, VRING_DESC_F_WRITE);
    }
    assert_eq!(recovered(&r), both((2, true)));
}
