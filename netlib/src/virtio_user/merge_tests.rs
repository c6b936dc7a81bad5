// The driver side of mergeable receive buffers: a frame a device spread over several
// buffers is put back together, and a count the device lied about is bounded.
//! Tests of receive with VIRTIO_NET_F_MRG_RXBUF.

use std::sync::Arc;

use super::queue::DriverQueue;
use crate::mem::GuestMemory;
use crate::pool::{burst_vec, PktPool, PoolOptions};
use crate::port::PortCounters;
use crate::ring::{DeviceRing, PackedDeviceRing};
use crate::spec::{NET_HDR_LEN, NUM_BUFFERS_AT};
use crate::vhost::{write_chain, Chain, DeviceQueue, PackedQueue, RingQueue, VirtQueue};

const SIZE: u16 = 16;
const ROOM: u16 = 4096;

/// A driver's receive queue, its buffers posted, and the device's view of it, on a
/// split or a packed ring.
struct Rig {
    pool: PktPool,
    drv: DriverQueue,
    mem: Arc<GuestMemory>,
    dev: VirtQueue,
}

fn rig(packed: bool) -> Rig {
    let mut pool = PktPool::new(&PoolOptions { nbufs: 64, hugedir: None, data_room: ROOM }).unwrap();
    let mut drv = DriverQueue::new(SIZE).unwrap();
    drv.set_layout(packed).unwrap();
    drv.refill_rx(&mut pool);
    let mem = GuestMemory::identity(&[pool.region(), drv.region()]);
    let l = drv.addrs();
    let dev = if packed {
        let ring = PackedDeviceRing::new(&mem, u32::from(SIZE), l.desc, l.avail, l.used).unwrap();
        VirtQueue::Packed(PackedQueue::new(ring, drv.base(), 1 << 16).unwrap())
    } else {
        VirtQueue::Split(DeviceQueue::new(DeviceRing::new(&mem, u32::from(SIZE), l.desc, l.avail, l.used).unwrap(), 0))
    };
    Rig { pool, drv, mem, dev }
}

/// The device writes `parts` into as many of `q`'s buffers, the first after a header
/// whose num_buffers is `count`, and publishes them.
fn write_parts(q: &mut impl RingQueue, mem: &GuestMemory, count: u16, parts: &[&[u8]]) {
    assert!(usize::from(q.available().unwrap()) >= parts.len());
    for (i, part) in parts.iter().enumerate() {
        let mut ch = Chain::empty(0);
        q.pop_into(mem, true, &mut ch).unwrap();
        let mut hdr = [0u8; NET_HDR_LEN as usize];
        hdr[NUM_BUFFERS_AT..].copy_from_slice(&count.to_le_bytes());
        let hdr: &[u8] = if i == 0 { &hdr } else { &[] };
        let len = write_chain(mem, &ch, hdr, part).unwrap();
        q.put_used(&ch, len);
    }
    q.publish();
}

impl Rig {
    /// The device writes `parts` into as many buffers (see [`write_parts`]).
    fn device_writes(&mut self, count: u16, parts: &[&[u8]]) {
        match &mut self.dev {
            VirtQueue::Split(q) => write_parts(q, &self.mem, count, parts),
            VirtQueue::Packed(q) => write_parts(q, &self.mem, count, parts),
        }
    }

    /// Receives, returns the frames' bytes, refills; checks that no buffer went missing.
    fn receive(&mut self, c: &mut PortCounters) -> Vec<Vec<u8>> {
        let mut pkts = burst_vec();
        let (_, fault) = self.drv.receive(&mut self.pool, &mut pkts, c, true);
        assert_eq!(fault, None);
        let out = pkts.iter().map(|p| self.pool.data(p).to_vec()).collect();
        self.pool.free_all(&mut pkts);
        self.drv.refill_rx(&mut self.pool);
        assert_eq!(self.pool.available(), 64 - usize::from(SIZE), "every buffer back in the pool or the ring");
        out
    }
}

#[test]
fn a_frame_over_three_buffers_is_put_back_together() {
    for packed in [false, true] {
        a_frame_over_three_buffers(packed);
    }
}

fn a_frame_over_three_buffers(packed: bool) {
    let mut r = rig(packed);
    let (a, b, cc) = (vec![1u8; 1500], vec![2u8; 1500], vec![3u8; 600]);
    r.device_writes(1, &[&[9u8; 60]]);
    r.device_writes(3, &[&a, &b, &cc]);
    let mut c = PortCounters::default();
    let got = r.receive(&mut c);
    assert_eq!(got, [vec![9u8; 60], [a, b, cc].concat()]);
    assert_eq!((c.rx_packets, c.rx_bytes, c.rx_errors), (2, 3660, 0));
}

#[test]
fn lying_or_zero_counts_and_frames_past_the_room_are_dropped_with_their_buffers() {
    for packed in [false, true] {
        lying_counts(packed);
    }
}

fn lying_counts(packed: bool) {
    let mut r = rig(packed);
    let mut c = PortCounters::default();
    // num_buffers 0, then a count past what the device used: the first buffer is dropped.
    r.device_writes(0, &[&[1u8; 100]]);
    assert_eq!(r.receive(&mut c), Vec::<Vec<u8>>::new());
    r.device_writes(9, &[&[1u8; 100], &[2u8; 100]]);
    // The second buffer then reads as a frame of its own, whose "header" is its data.
    let got = r.receive(&mut c);
    assert!(got.is_empty() || got == [vec![2u8; 100 - NET_HDR_LEN as usize]], "{got:?}");
    assert_eq!(c.rx_errors + c.rx_packets, 3);
    // Three full buffers: 4096 + 4108 + 4108 bytes, past the first buffer's room.
    let big = [vec![4u8; 4096], vec![5u8; 4108], vec![6u8; 4108]];
    let before = c.rx_errors;
    r.device_writes(3, &[&big[0], &big[1], &big[2]]);
    assert_eq!(r.receive(&mut c), Vec::<Vec<u8>>::new());
    assert_eq!(c.rx_errors, before + 1);
    // And the queue goes on.
    r.device_writes(1, &[&[7u8; 64]]);
    assert_eq!(r.receive(&mut c), [vec![7u8; 64]]);
}

/// A packed ring's backend that marks used a buffer id we never made available, or a
/// length past the buffer, is bounded: the first is a fault (the port goes down), the
/// second a dropped frame.
#[test]
fn a_packed_backend_lying_about_ids_and_lengths_is_bounded() {
    use crate::spec::{VRING_PACKED_DESC_F_AVAIL as A, VRING_PACKED_DESC_F_USED as U};
    let mut r = rig(true);
    let VirtQueue::Packed(q) = &r.dev else { panic!("packed rig") };
    // Slot 0: a length past the buffer's room; slot 1: an id out of every range.
    q.ring.set_used(0, 0, u32::from(ROOM) + NET_HDR_LEN + 1);
    q.ring.set_used(1, 999, 60);
    q.ring.set_flags(1, A | U);
    q.ring.set_flags(0, A | U);
    let mut c = PortCounters::default();
    let mut pkts = burst_vec();
    let (got, fault) = r.drv.receive(&mut r.pool, &mut pkts, &mut c, true);
    assert_eq!((got, c.rx_errors), (0, 1));
    assert_eq!(fault.as_deref(), Some("rx used id 999 is not in flight"));
}
