// Mergeable receive buffers on the device side: a frame written across several
// receive chains, all or nothing, and never truncated without them; the MTU offered.
//! Tests of VIRTIO_NET_F_MRG_RXBUF in the filler.

use super::tests::{d, rig, Rig, SIZE};
use super::*;
use crate::spec::{NUM_BUFFERS_AT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Bytes between two receive buffers of a rig.
const STRIDE: u64 = 4096;

/// Posts receive chains `heads`, each of `segs` descriptors of `len` bytes (chain `h` at
/// `h * STRIDE` in the data region), after the `done` entries posted before.
fn post_rx(r: &Rig, heads: std::ops::Range<u16>, segs: u16, len: u32, done: u16) {
    for h in heads.clone() {
        let base = u64::from(h) * STRIDE;
        // Chain h uses descriptors h*segs.. (the ring has SIZE, so segs > 1 means fewer chains).
        for k in 0..segs {
            let i = h * segs + k;
            let next = if k + 1 < segs { VRING_DESC_F_NEXT } else { 0 };
            r.drv.set_desc(i, d(r.buf(base + u64::from(k) * u64::from(len)), len, VRING_DESC_F_WRITE | next, i + 1));
        }
        r.drv.set_avail(done + h - heads.start, h * segs);
    }
    r.drv.publish_avail(done + heads.len() as u16);
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn fill(r: &mut Rig, merge: bool, frames: &[Vec<u8>], c: &mut PortCounters) -> usize {
    let mut filler = Filler::default();
    let (taken, res) = filler.fill_queue(&r.mem, &mut r.q, merge, frames.len(), |i| Frame::Local(&frames[i]), c);
    res.unwrap();
    taken
}

/// The bytes chain `h` (one segment of 1024 at `h * STRIDE`) got, per its used length.
fn got(r: &Rig, h: u16, len: u32) -> &[u8] {
    r.data.map().slice((u64::from(h) * STRIDE) as usize, len as usize).unwrap()
}

#[test]
fn a_frame_longer_than_a_chain_spans_several_with_num_buffers() {
    let mut r = rig();
    post_rx(&r, 0..4, 1, 1024, 0);
    let frames = [frame(60, 1), frame(2500, 2), frame(60, 3)];
    let mut c = PortCounters::default();
    // The last frame finds no chain left: the first two took all four.
    assert_eq!(fill(&mut r, true, &frames, &mut c), 2);
    assert_eq!((c.tx_packets, c.tx_bytes, c.tx_dropped), (2, 2560, 0));
    assert_eq!(r.drv.used_idx(), 4);
    let used: Vec<(u32, u32)> = (0..4).map(|i| r.drv.used_elem(i)).collect();
    assert_eq!(used, [(0, 72), (1, 1024), (2, 1024), (3, 2512 - 2048)]);
    assert_eq!(&got(&r, 0, 12)[NUM_BUFFERS_AT..], &[1, 0]);
    assert_eq!(&got(&r, 1, 12)[NUM_BUFFERS_AT..], &[3, 0]);
    let mut whole = got(&r, 1, 1024)[12..].to_vec();
    whole.extend_from_slice(got(&r, 2, 1024));
    whole.extend_from_slice(got(&r, 3, 2512 - 2048));
    assert_eq!(whole, frames[1]);
}

#[test]
fn a_merged_frame_takes_nothing_unless_the_ring_holds_all_of_it() {
    let mut r = rig();
    post_rx(&r, 0..2, 1, 1024, 0);
    let frames = [frame(2500, 4)];
    let mut c = PortCounters::default();
    assert_eq!(fill(&mut r, true, &frames, &mut c), 0, "two chains can't hold 2512 bytes");
    assert_eq!((r.drv.used_idx(), r.q.available().unwrap(), c.tx_packets), (0, 2, 0));
    // One more chain, and the frame goes whole into the three.
    post_rx(&r, 2..3, 1, 1024, 2);
    assert_eq!(fill(&mut r, true, &frames, &mut c), 1);
    assert_eq!((r.drv.used_idx(), r.q.available().unwrap(), c.tx_packets), (3, 0, 1));
    assert_eq!(r.drv.used_elem(2), (2, 2512 - 2048));
}

#[test]
fn without_merging_a_frame_longer_than_its_chain_is_dropped_not_truncated() {
    let mut r = rig();
    post_rx(&r, 0..3, 1, 1024, 0);
    let frames = [frame(2500, 5), frame(100, 6)];
    let mut c = PortCounters::default();
    assert_eq!(fill(&mut r, false, &frames, &mut c), 2);
    assert_eq!((c.tx_packets, c.tx_dropped, c.drop_too_big), (1, 1, 1));
    // The jumbo frame's chain comes back empty; the next frame has the next chain.
    assert_eq!((r.drv.used_elem(0), r.drv.used_elem(1)), ((0, 0), (1, 112)));
}

#[test]
fn a_frame_over_more_segments_than_a_chain_takes_is_dropped_and_takes_nothing() {
    let mut r = rig();
    // Four chains of two 128-byte segments: 1024 bytes in 8 segments, then
    // descriptors run out; a frame of 1000 bytes needs 4 chains (8 segments): fits.
    post_rx(&r, 0..4, 2, 128, 0);
    let mut c = PortCounters::default();
    assert_eq!(fill(&mut r, true, &[frame(1000, 7)], &mut c), 1);
    assert_eq!((c.tx_packets, r.drv.used_idx()), (1, 4));
    // A chain of all eight descriptors (64 bytes each), posted four times (a frontend
    // may): a 1100-byte frame needs three of them, 24 segments, more than a chain
    // holds: dropped at once, nothing taken; the next frame has the first chain.
    let mut r = rig();
    for i in 0..SIZE {
        let next = if i + 1 < SIZE { VRING_DESC_F_NEXT } else { 0 };
        r.drv.set_desc(i, d(r.buf(u64::from(i) * 64), 64, VRING_DESC_F_WRITE | next, i + 1));
    }
    r.post(&[0, 0, 0, 0]);
    let mut c = PortCounters::default();
    assert_eq!(fill(&mut r, true, &[frame(1100, 8), frame(40, 9)], &mut c), 2);
    assert_eq!((c.tx_packets, c.tx_dropped, c.drop_too_big), (1, 1, 1));
    assert_eq!((r.drv.used_idx(), r.drv.used_elem(0), r.q.available().unwrap()), (1, (0, 52), 3));
}

#[test]
fn mtu_and_mergeable_buffers_are_offered_and_a_set_mtu_over_the_ports_is_refused() {
    use super::tests::raw_msg as msg;
    use crate::spec::{VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU};
    use crate::vhost_user::message::encode;
    use crate::vhost_user::Request;
    let mut dev = VhostDevice::new(DeviceLimits { mtu: Some(1500), ..DeviceLimits::default() });
    let Ok(Reply::Payload(f)) = dev.handle(msg(Request::GetFeatures, Vec::new())) else { panic!("features") };
    let f = u64::from_le_bytes(f.try_into().unwrap());
    assert_eq!(f & (VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_MTU), VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_MTU);
    assert!(dev.handle(msg(Request::NetSetMtu, encode::u64(1500))).is_ok());
    let e = dev.handle(msg(Request::NetSetMtu, encode::u64(9000))).unwrap_err();
    assert_eq!(e.to_string(), "the frontend set MTU 9000, over this port's MTU of 1500");
    // A port without an MTU takes what a 9216-byte frame carries.
    let mut dev = VhostDevice::new(DeviceLimits::default());
    assert!(dev.handle(msg(Request::NetSetMtu, encode::u64(9000))).is_ok());
    assert!(dev.handle(msg(Request::NetSetMtu, encode::u64(9199))).is_err());
}
