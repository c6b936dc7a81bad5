// The driver side of a packed transmit ring in order: a device that marks a batch used
// with one descriptor has every buffer of it freed, and one that names an id not in
// flight is a fault, bounded by what is in flight.
//! Tests of transmit reclaim on packed rings with VIRTIO_F_IN_ORDER.

use std::sync::Arc;

use super::queue::DriverQueue;
use crate::mem::GuestMemory;
use crate::pool::{burst_vec, PktPool, PoolOptions};
use crate::ring::PackedDeviceRing;
use crate::spec::{VRING_PACKED_DESC_F_AVAIL as A, VRING_PACKED_DESC_F_USED as U};
use crate::vhost::{Chain, PackedQueue, RingQueue};

const SIZE: u16 = 16;

/// A driver's packed transmit queue and the device's view of it, batching used
/// descriptors as in order allows.
struct Rig {
    pool: PktPool,
    drv: DriverQueue,
    mem: Arc<GuestMemory>,
    dev: PackedQueue,
}

fn rig() -> Rig {
    let pool = PktPool::new(&PoolOptions { nbufs: 64, hugedir: None, ..Default::default() }).unwrap();
    let mut drv = DriverQueue::new(SIZE).unwrap();
    drv.set_layout(true).unwrap();
    let mem = GuestMemory::identity(&[pool.region(), drv.region()]);
    let l = drv.addrs();
    let ring = PackedDeviceRing::new(&mem, u32::from(SIZE), l.desc, l.avail, l.used).unwrap();
    let dev = PackedQueue::new(ring, drv.base(), 1 << 16).unwrap().with_batched_used(true);
    Rig { pool, drv, mem, dev }
}

impl Rig {
    /// The driver sends `n` frames; returns how many the ring took.
    fn send(&mut self, n: usize) -> usize {
        let mut pkts = burst_vec();
        self.pool.alloc_bulk(&mut pkts, n);
        for p in &mut pkts {
            self.pool.set_len(p, 64);
        }
        let (sent, _) = self.drv.transmit(&mut self.pool, &mut pkts, false);
        self.pool.free_all(&mut pkts);
        sent
    }

    /// The device takes `n` chains and marks them used as one batch.
    fn consume(&mut self, n: usize) {
        let mut chains = Vec::new();
        for _ in 0..n {
            let mut c = Chain::empty(0);
            self.dev.pop_into(&self.mem, false, &mut c).unwrap();
            chains.push(c);
        }
        for c in &chains {
            self.dev.put_used(c, 0);
        }
        self.dev.publish();
    }
}

#[test]
fn a_batch_used_with_one_descriptor_frees_every_buffer_of_it() {
    let mut r = rig();
    let all = r.pool.available();
    let mut sent = 0usize;
    // Batches of 1 to 7 around a ring of 16, many laps: some reclaimed together.
    for round in 0..300usize {
        let n = 1 + round % 7;
        if r.drv.free_count() < n {
            r.drv.reclaim_tx(&mut r.pool, true).unwrap();
        }
        assert_eq!(r.send(n), n, "round {round}: the ring had room");
        sent += n;
        r.consume(n);
        if round % 3 == 0 {
            r.drv.reclaim_tx(&mut r.pool, true).unwrap();
            assert_eq!(r.drv.free_count(), usize::from(SIZE), "round {round}: every buffer back");
            assert_eq!(r.pool.available(), all, "round {round}: every packet back in the pool");
        }
    }
    r.drv.reclaim_tx(&mut r.pool, true).unwrap();
    assert_eq!((r.drv.free_count(), r.pool.available()), (usize::from(SIZE), all));
    assert!(sent > 4 * usize::from(SIZE), "{sent} frames is not four laps");
}

#[test]
fn an_in_order_device_naming_an_id_not_in_flight_is_a_fault() {
    let mut r = rig();
    assert_eq!(r.send(3), 3);
    // The device marks slot 0 used with an id past every one in flight (ids 0 to 2).
    r.dev.ring.set_used(0, 9, 0);
    r.dev.ring.set_flags(0, A | U);
    let err = r.drv.reclaim_tx(&mut r.pool, true).unwrap_err();
    assert!(err.contains("tx used id 9 is not in flight"), "{err}");
    // Nothing was freed on the device's lie.
    assert_eq!(r.drv.free_count(), usize::from(SIZE) - 3);
}

/// Frames sent with their sender's headers (transmit offloads) come back with the header
/// zeroed: a buffer's next sender asks for nothing unless it sets one.
#[test]
fn a_sent_frames_header_is_zeroed_when_it_comes_back() {
    use crate::vnet_hdr::{Gso, GsoKind, PartialCsum, VnetHdr};
    let mut r = rig();
    let hdr = VnetHdr {
        csum: Some(PartialCsum { start: 34, offset: 16 }),
        data_valid: false,
        gso: Some(Gso { kind: GsoKind::Tcp4, size: 100, hdr_len: 54, ecn: false }),
    };
    let mut pkts = burst_vec();
    r.pool.alloc_bulk(&mut pkts, 4);
    for p in &mut pkts {
        r.pool.set_len(p, 1000);
        r.pool.set_net_hdr(p, &hdr);
        assert_ne!(r.pool.header(p, 12), &[0u8; 12][..]);
    }
    let (sent, _) = r.drv.transmit(&mut r.pool, &mut pkts, true);
    assert_eq!(sent, 4);
    r.consume(4);
    r.drv.reclaim_tx(&mut r.pool, true).unwrap();
    let mut all = Vec::with_capacity(64);
    r.pool.alloc_bulk(&mut all, 64);
    assert_eq!(all.len(), 64, "every buffer back");
    let mut pkts = all;
    for p in &pkts {
        assert_eq!(r.pool.header(p, 10), &[0u8; 10][..], "buffer {} still asks for an offload", p.index());
    }
    r.pool.free_all(&mut pkts);
}
