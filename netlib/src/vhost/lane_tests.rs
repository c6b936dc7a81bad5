// Transmit rings lent to lanes: a lent ring is popped by its lane only; the device's
// control path takes it back (waiting for the lane's burst) for GET_VRING_BASE, a memory
// table change and the device going away, and lends it again; a fault the lane finds
// is handed to the device.
//! Lane tests.

use std::sync::Arc;
use std::time::Duration;

use super::mq_tests::{mq_rig_on, region_of, MqRig};
use super::tests::raw_msg as msg;
use super::*;
use crate::mem::Region;
use crate::spec::NET_HDR_LEN;
use crate::vhost_user::VringState;

/// Two pairs, pair 1's transmit ring (vring 3) lent.
fn lent_rig() -> (MqRig, Lane) {
    let lane = Lane::new(1).unwrap();
    let dev = VhostDevice::new(DeviceLimits::default()).with_lanes(&[None, Some(lane.clone())]);
    (mq_rig_on(dev, 2), lane)
}

/// The tags (first byte after the header) of the lane's burst, released after.
fn pop_tags(rx: &mut LaneRx) -> Vec<u8> {
    let n = rx.pop();
    let frames = rx.frames();
    assert_eq!(frames.len(), n);
    let tags = (0..n)
        .map(|i| {
            let mut first = [0u8; 1];
            frames.get(i).read_head(&mut first);
            first[0]
        })
        .collect();
    rx.release();
    tags
}

fn vring_base(dev: &mut VhostDevice, index: u32) -> u32 {
    let Ok(Reply::Payload(p)) = dev.handle(msg(Request::GetVringBase, encode::state(VringState { index, num: 0 })))
    else {
        panic!("GET_VRING_BASE: no payload")
    };
    u32::from_le_bytes(p[4..8].try_into().unwrap())
}

fn rx_lane_received(rx: &LaneRx) -> u64 {
    rx.lane().received()
}

#[test]
fn lanes_are_only_for_pairs_past_the_first() {
    assert!(Lane::new(0).is_none());
    assert!(Lane::new(usize::from(device::MAX_QUEUE_PAIRS)).is_none());
    assert_eq!(Lane::new(7).map(|l| l.pair()), Some(7));
}

#[test]
fn a_lent_transmit_ring_is_popped_by_its_lane_only() {
    let (mut r, lane) = lent_rig();
    assert!(lane.live());
    assert_eq!((r.dev.pairs(), r.dev.rx_pairs()), (2, &[0u8, 1][..]));
    assert!(r.dev.all_started());
    let bufs = [r.buf(0), r.buf(1), r.buf(2)];
    r.post(1, 0, bufs[0], 0xa0);
    r.post(3, 0, bufs[1], 0xb0);
    r.post(3, 1, bufs[2], 0xb1);
    // The device's own bursts: pair 0's frame only, however often it looks.
    let mut burst = Burst::default();
    let mut own = Vec::new();
    for _ in 0..3 {
        own.push(burst.pop(&mut r.dev, BURST).unwrap());
        burst.release(&mut r.dev);
    }
    assert_eq!(own, [1, 0, 0]);
    // The lane's: pair 1's two, returned used.
    let mut rx = LaneRx::new(lane);
    assert_eq!(rx.pair(), 1);
    assert_eq!(pop_tags(&mut rx), [0xb0, 0xb1]);
    assert_eq!((r.rings[3].used_idx(), r.rings[1].used_idx()), (2, 1));
    assert_eq!(rx_lane_received(&rx), 2);
    assert!(pop_tags(&mut rx).is_empty());
}

#[test]
fn get_vring_base_waits_for_the_lanes_burst_and_counts_it() {
    let (mut r, lane) = lent_rig();
    let (b0, b1) = (r.buf(0), r.buf(1));
    r.post(3, 0, b0, 0xb0);
    r.post(3, 1, b1, 0xb1);
    let mut rx = LaneRx::new(lane.clone());
    assert_eq!(rx.pop(), 2);
    // The frontend stops the ring while the lane holds a burst: the control path waits.
    let MqRig { mut dev, rings, .. } = r;
    let control = std::thread::spawn(move || (vring_base(&mut dev, 3), dev));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!control.is_finished(), "GET_VRING_BASE waits for the lane's burst");
    rx.release();
    let (base, mut dev) = control.join().unwrap();
    assert_eq!((base, rings[3].used_idx()), (2, 2));
    assert!(!lane.live());
    assert_eq!(rx.pop(), 0);
    // Started again (the frontend kicks it, no fd: polling): lent again, from its base.
    dev.handle(msg(Request::SetVringBase, encode::state(VringState { index: 3, num: 2 }))).unwrap();
    let kick = msg(Request::SetVringKick, encode::u64(1 << 8 | 3));
    dev.handle(kick).unwrap();
    assert!(lane.live());
}

#[test]
fn a_memory_table_change_takes_lent_rings_back_and_lends_them_again() {
    let (mut r, lane) = lent_rig();
    let mut rx = LaneRx::new(lane.clone());
    let b = r.buf(0);
    r.post(3, 0, b, 0xb0);
    assert_eq!(pop_tags(&mut rx), [0xb0]);
    // A region added (memory hot-plug): the table changes under both rings of each pair.
    let extra = Region::create(None, 1 << 16).unwrap();
    let (reg, fd) = region_of(&extra);
    let mut add = msg(Request::AddMemReg, encode::one_region(&reg));
    add.fds = vec![fd];
    r.dev.handle(add).unwrap();
    assert!(lane.live(), "lent again after the change");
    let b = r.buf(1);
    r.post(3, 1, b, 0xb1);
    assert_eq!(pop_tags(&mut rx), [0xb1], "where it left off");
    assert_eq!(r.rings[3].used_idx(), 2);
}

#[test]
fn a_fault_the_lane_finds_is_the_devices_and_the_ring_leaves_the_lane() {
    let (r, lane) = lent_rig();
    // A head past the table of 8.
    r.rings[3].set_avail(0, 200);
    r.rings[3].publish_avail(1);
    let mut rx = LaneRx::new(lane.clone());
    assert_eq!(rx.pop(), 0);
    assert!(!lane.live());
    let fault = lane.take_fault().expect("the fault, for the device");
    assert!(fault.to_string().contains("200"), "{fault}");
    assert!(lane.take_fault().is_none(), "once");
    assert_eq!(rx.pop(), 0);
}

#[test]
fn the_device_going_away_takes_its_ring_from_the_lane() {
    let (r, lane) = lent_rig();
    let rx = LaneRx::new(lane.clone());
    assert!(lane.live());
    drop(r);
    assert!(!lane.live());
    drop(rx);
}

#[test]
fn a_lent_packed_ring_is_popped_and_used_in_order() {
    let mut r = super::packed_tests::prig(8);
    for k in 0..3u16 {
        let off = 2048 * u64::from(k);
        let at = usize::try_from(off).unwrap() + NET_HDR_LEN as usize;
        r.data.map_mut().slice_mut(at, 60).unwrap().fill(0xc0 + k as u8);
        let buf = r.buf(off);
        r.offer(&[(buf, NET_HDR_LEN + 60)], k, 0);
    }
    let lane = Lane::new(2).unwrap();
    let mem = Arc::clone(&r.mem);
    let q = std::mem::replace(&mut r.q, super::packed_tests::prig(8).q);
    lane.put(VirtQueue::Packed(q), &mem, None, 0);
    let mut rx = LaneRx::new(lane.clone());
    assert_eq!(pop_tags(&mut rx), [0xc0, 0xc1, 0xc2]);
    // In order: one used descriptor per chain (not batched: the queue was not told to).
    assert_eq!([r.reap(1), r.reap(1), r.reap(1)], [Some((0, 0)), Some((1, 0)), Some((2, 0))]);
    assert!(matches!(lane.take(), Some(VirtQueue::Packed(_))));
    assert!(!lane.live());
}
