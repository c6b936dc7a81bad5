// Fuzz target: the backend's packed-ring walker (VIRTIO_F_RING_PACKED; indirect tables
// included) and the filler over it, on a real ring and a real mapped data region whose
// contents the fuzzer writes: flags, wrap bits, buffer ids, lengths and addresses all lie.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use netlib::mem::{GuestMemory, Region};
use netlib::port::PortCounters;
use netlib::ring::{packed_desc_bytes, PackedDeviceRing, PACKED_EVENT_BYTES};
use netlib::spec::PACKED_BASE_WRAP;
use netlib::vhost::{read_chain, write_chain, Chain, Filler, Frame, PackedQueue, RingQueue, RX_NET_HDR};

const SIZE: u16 = 16;
/// Frame lengths the filler is given (one of them per fuzz byte).
const FRAME_LENS: [usize; 4] = [60, 1514, 4000, 9014];

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    u64::from_le_bytes(a)
}

/// A packed descriptor's 16 bytes from up to 16 bytes of fuzz; addresses are offsets near the
/// data region at `base` of `len` bytes (some inside, some straddling, some far outside), and
/// the flags keep NEXT, WRITE, INDIRECT and the AVAIL/USED bits.
fn fuzz_desc(c: &[u8], base: u64, len: u64) -> [u8; 16] {
    let raw = le64(&c[..c.len().min(8)]);
    let addr = match raw % 4 {
        0 => base + (raw >> 2) % (len + 4096),
        1 => base.wrapping_sub(raw >> 40),
        2 => raw,
        _ => base + len - ((raw >> 2) % 64),
    };
    let rest = c.get(8..).unwrap_or(&[]);
    let dlen = le64(rest) as u32 % 4096;
    let id = (le64(rest.get(4..).unwrap_or(&[])) % (u64::from(SIZE) + 3)) as u16;
    // NEXT, WRITE, INDIRECT (bits 0-2), AVAIL (7) and USED (15).
    let flags = (le64(rest.get(6..).unwrap_or(&[])) as u16) & 0x8087;
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&dlen.to_le_bytes());
    b[12..14].copy_from_slice(&id.to_le_bytes());
    b[14..].copy_from_slice(&flags.to_le_bytes());
    b
}

fuzz_target!(|data: &[u8]| {
    // The ring (descriptors and both event areas) in one region, the buffers in another.
    let ring_bytes = packed_desc_bytes(SIZE) + 2 * PACKED_EVENT_BYTES;
    let mut ring_region = Region::create(None, 4096).expect("ring");
    let mut region = Region::create(None, 1 << 16).expect("data");
    let (rbase, base) = (ring_region.map().addr(), region.map().addr());
    let len = region.map().len() as u64;
    let mut chunks = data.chunks(16);
    for i in 0..usize::from(SIZE) {
        let Some(c) = chunks.next() else { break };
        ring_region.map_mut().slice_mut(16 * i, 16).expect("inside").copy_from_slice(&fuzz_desc(c, base, len));
    }
    // What is left becomes packed descriptors at the start of the data region, where indirect
    // tables can point.
    for (k, c) in chunks.take(64).enumerate() {
        region.map_mut().slice_mut(16 * k, 16).expect("inside").copy_from_slice(&fuzz_desc(c, base, len));
    }
    let mut gm = GuestMemory::default();
    gm.add_region(ring_region.fd(), rbase, rbase, ring_region.map().len() as u64, 0).expect("ring region");
    gm.add_region(region.fd(), base, base, len, 0).expect("data region");
    let mem = Arc::new(gm);
    let knobs = data.first().copied().unwrap_or(0);
    let (indirect, merge) = (knobs & 1 != 0, knobs & 2 != 0);
    // The resume point: a position (maybe past the ring) and a wrap counter.
    let base_value = u32::from(data.get(1).copied().unwrap_or(0) % 20) | if knobs & 4 != 0 { PACKED_BASE_WRAP } else { 0 };
    let desc = rbase;
    let (drv_ev, dev_ev) = (rbase + packed_desc_bytes(SIZE), rbase + packed_desc_bytes(SIZE) + PACKED_EVENT_BYTES);
    assert!(ring_bytes <= 4096);
    let ring = || PackedDeviceRing::new(&mem, u32::from(SIZE), desc, drv_ev, dev_ev).expect("ring setup");
    let Some(q) = PackedQueue::new(ring(), base_value, 9018 + 12) else { return };
    let mut q = q.with_indirect(indirect);
    let mut buf = [0u8; 2048];
    let mut chain = Chain::empty(0);
    for _ in 0..2 * SIZE {
        let Ok(n) = q.available() else { break };
        if n == 0 {
            break;
        }
        let writable = knobs & 8 != 0;
        if q.pop_into(&mem, writable, &mut chain).is_err() {
            break;
        }
        assert!(chain.head < SIZE, "a buffer id past the ring was taken");
        if writable {
            let _ = write_chain(&mem, &chain, &RX_NET_HDR, &buf[..64]);
        } else {
            let _ = read_chain(&mem, &chain, 12, &mut buf);
        }
        q.put_used(&chain, chain.total);
    }
    q.publish();
    // The same ring as receive buffers, merged (or not): frames of the fuzz's lengths.
    let frames: Vec<Vec<u8>> =
        data.iter().skip(2).take(8).map(|&b| vec![b; FRAME_LENS[usize::from(b) % FRAME_LENS.len()]]).collect();
    let Some(rx) = PackedQueue::new(ring(), base_value, 9018 + 12) else { return };
    let mut rx = rx.with_indirect(indirect);
    let mut counters = PortCounters::default();
    let (taken, _) =
        Filler::default().fill_queue(&mem, &mut rx, merge, frames.len(), |i| Frame::Local(&frames[i]), &mut counters);
    assert!(taken <= frames.len());
});
