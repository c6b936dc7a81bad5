// Indirect descriptor tables on the device side: a good table walks as a chain, and every
// lie a frontend can tell in one (length, place, nesting, next, loops) faults the chain.
//! Tests of VIRTIO_RING_F_INDIRECT_DESC in the queue.

use super::tests::{d, rig, Rig, SIZE};
use super::*;
use crate::ring::{Desc, DeviceRing};
use crate::spec::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Where a rig's indirect table sits in its data region.
const TABLE_AT: u64 = 8192;

/// A rig whose queue takes indirect tables (as after negotiating INDIRECT_DESC).
fn indirect_rig() -> Rig {
    let mut r = rig();
    let l = r.drv.layout();
    let ring = DeviceRing::new(&r.mem, u32::from(SIZE), l.desc, l.avail, l.used).unwrap();
    r.q = DeviceQueue::new(ring, 0).with_indirect(true);
    r
}

/// Writes `entries` as the table at [`TABLE_AT`] and returns its address.
fn write_table(r: &Rig, entries: &[Desc]) -> u64 {
    let addr = r.buf(TABLE_AT);
    for (i, e) in entries.iter().enumerate() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&e.addr.to_le_bytes());
        b[8..12].copy_from_slice(&e.len.to_le_bytes());
        b[12..14].copy_from_slice(&e.flags.to_le_bytes());
        b[14..].copy_from_slice(&e.next.to_le_bytes());
        let span = r.mem.translate(addr + 16 * i as u64, 16).unwrap();
        assert!(r.mem.write(span, 0, &b));
    }
    addr
}

/// Posts ring descriptor 0 as an indirect one (`flags` added) over `len` bytes at `addr`
/// and pops it.
fn pop_indirect(r: &mut Rig, addr: u64, len: u32, flags: u16, writable: bool) -> Result<Chain, ChainFault> {
    r.drv.set_desc(0, d(addr, len, VRING_DESC_F_INDIRECT | flags, 0));
    r.post(&[0]);
    r.q.available()?;
    r.q.pop(&r.mem, writable)
}

#[test]
fn a_good_table_walks_as_a_chain() {
    let mut r = indirect_rig();
    let t = write_table(&r, &[d(r.buf(0), 12, VRING_DESC_F_NEXT, 2), d(0, 0, 0, 0), d(r.buf(100), 100, 0, 0)]);
    let c = pop_indirect(&mut r, t, 48, 0, false).unwrap();
    assert_eq!((c.head, c.nsegs, c.total), (0, 2, 112));
    assert_eq!(c.segs()[1].len(), 100);
}

#[test]
fn a_receive_table_of_writable_entries_walks_and_a_readable_one_faults() {
    let mut r = indirect_rig();
    let t = write_table(
        &r,
        &[d(r.buf(0), 2048, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1), d(r.buf(2048), 2048, VRING_DESC_F_WRITE, 0)],
    );
    assert_eq!(pop_indirect(&mut r, t, 32, 0, true).unwrap().total, 4096);
    let mut r = indirect_rig();
    let t = write_table(&r, &[d(r.buf(0), 64, 0, 0)]);
    assert!(matches!(pop_indirect(&mut r, t, 16, 0, true), Err(ChainFault::WrongDirection { index: 0, .. })));
}

#[test]
fn a_table_of_a_bad_length_or_place_faults_before_it_is_read() {
    let cases: [(u64, u32, u16, &str); 5] = [
        (TABLE_AT, 0, 0, "is not a whole number of 16-byte entries"),
        (TABLE_AT, 20, 0, "is not a whole number of 16-byte entries"),
        (TABLE_AT, 16 * (u32::from(SIZE) + 1), 0, "has more entries than the ring"),
        (TABLE_AT, 0xffff_fff0, 0, "has more entries than the ring"),
        (TABLE_AT, 16, VRING_DESC_F_NEXT, "has NEXT set too"),
    ];
    for (at, len, flags, why) in cases {
        let mut r = indirect_rig();
        let addr = r.buf(at);
        let got = pop_indirect(&mut r, addr, len, flags, false);
        assert!(
            matches!(got, Err(ChainFault::BadIndirectTable { index: 0, why: w, .. }) if w == why),
            "len {len} flags {flags}: {got:?}"
        );
    }
    // Outside every region, and running off the end of the data region.
    let r = indirect_rig();
    let end = r.buf(r.data.map().len() as u64 - 16);
    for addr in [0xdead_0000, end] {
        let mut r = indirect_rig();
        let got = pop_indirect(&mut r, addr, 32, 0, false);
        assert!(
            matches!(got, Err(ChainFault::BadIndirectTable { why: "is outside the frontend's memory", .. })),
            "{addr:#x}: {got:?}"
        );
    }
}

#[test]
fn nested_tables_next_out_of_the_table_loops_and_bad_entries_fault() {
    let mut r = indirect_rig();
    let t = write_table(&r, &[d(r.buf(0), 12, VRING_DESC_F_NEXT, 1), d(r.buf(TABLE_AT), 16, VRING_DESC_F_INDIRECT, 0)]);
    assert!(matches!(pop_indirect(&mut r, t, 32, 0, false), Err(ChainFault::NestedIndirect { index: 0, entry: 1 })));

    let mut r = indirect_rig();
    let t = write_table(&r, &[d(r.buf(0), 12, VRING_DESC_F_NEXT, 5), d(r.buf(0), 12, 0, 0)]);
    assert!(matches!(pop_indirect(&mut r, t, 32, 0, false), Err(ChainFault::IndexOutOfRange { index: 5, size: 2 })));

    let mut r = indirect_rig();
    let t = write_table(&r, &[d(r.buf(0), 1, VRING_DESC_F_NEXT, 1), d(r.buf(0), 1, VRING_DESC_F_NEXT, 0)]);
    assert!(matches!(pop_indirect(&mut r, t, 32, 0, false), Err(ChainFault::ChainTooLong { head: 0, size: 2 })));

    let mut r = indirect_rig();
    let t = write_table(&r, &[d(0xdead_0000, 64, 0, 0)]);
    assert!(matches!(pop_indirect(&mut r, t, 16, 0, false), Err(ChainFault::BadAddress { index: 0, .. })));

    let mut r = indirect_rig();
    let t = write_table(&r, &[d(r.buf(0), 60_000, 0, 0)]);
    assert!(matches!(pop_indirect(&mut r, t, 16, 0, false), Err(ChainFault::FrameTooLong { .. })));
}

#[test]
fn without_the_feature_an_indirect_descriptor_faults() {
    let mut r = rig();
    let t = write_table(&r, &[d(r.buf(0), 64, 0, 0)]);
    assert!(matches!(pop_indirect(&mut r, t, 16, 0, false), Err(ChainFault::Indirect { index: 0 })));
}
