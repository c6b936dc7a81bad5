// Multiqueue on the device side: what a port offers (VIRTIO_NET_F_MQ, PROTOCOL_F_MQ,
// GET_QUEUE_NUM), vring indices past the port's pairs refused, and bursts taken from and
// given to the ring of the pair they belong to, the pairs taking turns.
//! Multiqueue tests.

use std::os::fd::{AsFd, OwnedFd};

use super::tests::{d, raw_msg as msg};
use super::*;
use crate::mem::Region;
use crate::ring::DriverRing;
use crate::spec::{PROTOCOL_F_MQ, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ, VRING_DESC_F_WRITE};
use crate::vhost_user::conn::RawMsg;
use crate::vhost_user::{MemRegion, VringAddr, VringState};

fn reply_u64(dev: &mut VhostDevice, req: Request) -> u64 {
    let Ok(Reply::Payload(p)) = dev.handle(msg(req, Vec::new())) else { panic!("{req:?}: no payload") };
    u64::from_le_bytes(p.try_into().unwrap())
}

#[test]
fn queue_pairs_are_offered_and_counted_and_vrings_past_them_refused() {
    let mut dev = VhostDevice::new(DeviceLimits::default());
    assert_ne!(reply_u64(&mut dev, Request::GetProtocolFeatures) & PROTOCOL_F_MQ, 0);
    assert_ne!(reply_u64(&mut dev, Request::GetFeatures) & VIRTIO_NET_F_MQ, 0);
    assert_eq!(reply_u64(&mut dev, Request::GetQueueNum), 8);
    let num = |index| msg(Request::SetVringNum, encode::state(VringState { index, num: 256 }));
    assert!(dev.handle(num(15)).is_ok());
    let e = dev.handle(num(16)).unwrap_err().to_string();
    assert_eq!(e, "vring index 16: this port takes 8 queue pair(s), vrings 0..16");

    // A port held to one pair does not offer MQ, and refuses vring 2.
    let mut one = VhostDevice::new(DeviceLimits { queue_pairs: 1, ..DeviceLimits::default() });
    assert_eq!(reply_u64(&mut one, Request::GetFeatures) & VIRTIO_NET_F_MQ, 0);
    assert_eq!(reply_u64(&mut one, Request::GetQueueNum), 1);
    let e = one.handle(num(2)).unwrap_err().to_string();
    assert_eq!(e, "vring index 2: this port takes 1 queue pair(s), vrings 0..2");
    // Two pairs: vrings 0 to 3.
    let mut two = VhostDevice::new(DeviceLimits { queue_pairs: 2, ..DeviceLimits::default() });
    assert_eq!(reply_u64(&mut two, Request::GetQueueNum), 2);
    assert!(two.handle(num(3)).is_ok() && two.handle(num(4)).is_err());
}

/// A frontend with `pairs` queue pairs set up over messages, each vring in a ring of
/// its own, and a data region; the rings poll (no kick fds).
pub(super) struct MqRig {
    pub(super) dev: VhostDevice,
    pub(super) rings: Vec<DriverRing>,
    data: Region,
}

const SIZE: u16 = 8;

pub(super) fn region_of(r: &Region) -> (MemRegion, OwnedFd) {
    let m = r.map();
    let addr = m.addr();
    let mr = MemRegion { guest_phys_addr: addr, memory_size: m.len() as u64, userspace_addr: addr, mmap_offset: 0 };
    (mr, r.fd().as_fd().try_clone_to_owned().unwrap())
}

fn mq_rig(pairs: u32) -> MqRig {
    mq_rig_on(VhostDevice::new(DeviceLimits::default()), pairs)
}

/// [`mq_rig`] on `dev` (a device with lanes, say).
pub(super) fn mq_rig_on(mut dev: VhostDevice, pairs: u32) -> MqRig {
    let rings: Vec<DriverRing> = (0..2 * pairs).map(|_| DriverRing::new(SIZE, None).unwrap()).collect();
    let data = Region::create(None, 1 << 16).unwrap();
    dev.handle(msg(Request::SetFeatures, encode::u64(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MQ))).unwrap();
    let (regions, fds): (Vec<_>, Vec<_>) = rings.iter().map(DriverRing::region).chain([&data]).map(region_of).unzip();
    let mut table = msg(Request::SetMemTable, encode::mem_table(&regions));
    table.fds = fds;
    dev.handle(table).unwrap();
    for (i, r) in rings.iter().enumerate() {
        let index = i as u32;
        let l = r.layout();
        let state = |num| encode::state(VringState { index, num });
        let addr = VringAddr { index, flags: 0, desc: l.desc, used: l.used, avail: l.avail, log: 0 };
        for m in [
            msg(Request::SetVringNum, state(u32::from(SIZE))),
            msg(Request::SetVringBase, state(0)),
            msg(Request::SetVringAddr, encode::addr(addr)),
            // No fd: the ring polls, and starts now.
            RawMsg { fds: Vec::new(), ..msg(Request::SetVringKick, encode::u64(1 << 8 | u64::from(index))) },
        ] {
            dev.handle(m).unwrap();
        }
    }
    MqRig { dev, rings, data }
}

impl MqRig {
    pub(super) fn buf(&self, k: u64) -> u64 {
        self.data.map().addr() + 2048 * k
    }

    /// Posts one buffer on vring `ring` (writable for a receive ring), holding `tag` in
    /// its first byte after the virtio-net header for a transmit ring.
    pub(super) fn post(&mut self, ring: usize, slot: u16, buf: u64, tag: u8) {
        let write = ring.is_multiple_of(2);
        if !write {
            let off = (buf - self.data.map().addr()) as usize + NET_HDR_LEN as usize;
            self.data.map_mut().slice_mut(off, 60).unwrap().fill(tag);
        }
        let r = &self.rings[ring];
        r.set_desc(
            slot,
            d(buf, if write { 2048 } else { NET_HDR_LEN + 60 }, if write { VRING_DESC_F_WRITE } else { 0 }, 0),
        );
        r.set_avail(slot, slot);
        r.publish_avail(slot + 1);
    }
}

#[test]
fn bursts_come_from_each_pairs_ring_in_turn_and_go_to_the_pair_asked() {
    let mut r = mq_rig(2);
    assert_eq!(r.dev.pairs(), 2);
    assert_eq!(r.dev.rx_pairs(), &[0, 1]);
    assert!(r.dev.all_started());
    // Frames on both transmit rings: the pairs take turns, each burst from one ring.
    let bufs = [r.buf(0), r.buf(1), r.buf(2), r.buf(8), r.buf(9)];
    r.post(1, 0, bufs[0], 0xa0);
    r.post(3, 0, bufs[1], 0xa1);
    r.post(3, 1, bufs[2], 0xa2);
    let mut burst = Burst::default();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let n = burst.pop(&mut r.dev, BURST).unwrap();
        let mut first = [0u8; 1];
        let frames = burst.frames(r.dev.mem());
        let tags: Vec<u8> = (0..n)
            .map(|i| {
                frames.get(i).read_head(&mut first);
                first[0]
            })
            .collect();
        seen.push((burst.pair(), tags));
        burst.release(&mut r.dev);
    }
    assert_eq!(seen, vec![(0, vec![0xa0]), (1, vec![0xa1, 0xa2]), (1, vec![])]);
    assert_eq!(r.rings[1].used_idx(), 1);
    assert_eq!(r.rings[3].used_idx(), 2);

    // A frame filled for pair 1 lands in vring 2, not vring 0.
    r.post(0, 0, bufs[3], 0);
    r.post(2, 0, bufs[4], 0);
    let frame = [0x5au8; 60];
    let mut c = PortCounters::default();
    let (taken, res) = Filler::default().fill_pair(&mut r.dev, 1, 1, |_| Frame::Local(&frame), &mut c);
    assert!(res.is_ok());
    assert_eq!((taken, r.rings[2].used_idx(), r.rings[0].used_idx()), (1, 1, 0));
    // A pair that does not exist takes nothing.
    let (taken, res) = Filler::default().fill_pair(&mut r.dev, 7, 1, |_| Frame::Local(&frame), &mut c);
    assert!(res.is_ok() && taken == 0);
}

#[test]
fn a_pair_disabled_leaves_the_data_path_and_the_handshake_done() {
    let mut r = mq_rig(2);
    let enable = |index, num| msg(Request::SetVringEnable, encode::state(VringState { index, num }));
    r.dev.handle(enable(2, 0)).unwrap();
    r.dev.handle(enable(3, 0)).unwrap();
    assert_eq!((r.dev.pairs(), r.dev.rx_pairs()), (1, &[0u8][..]));
    assert!(r.dev.all_started(), "a disabled pair is not waited for");
    // A pair set up and enabled whose ring waits for its first kick: the handshake is
    // over (the first pair is live), but not every ring has started.
    let kick = nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_NONBLOCK).unwrap();
    let mut m = msg(Request::SetVringKick, encode::u64(3));
    m.fds = vec![std::os::fd::OwnedFd::from(kick)];
    r.dev.handle(m).unwrap();
    r.dev.handle(enable(3, 1)).unwrap();
    assert!(r.dev.first_pair_started() && !r.dev.all_started());
    r.dev.handle(enable(2, 1)).unwrap();
    assert_eq!((r.dev.pairs(), r.dev.rx_pairs()), (2, &[0u8, 1][..]));
}
