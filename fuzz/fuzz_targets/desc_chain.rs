// Fuzz target: the backend's descriptor-chain walker and copies, over a real
// ring and a real mapped data region whose contents the fuzzer writes.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use netlib::mem::{GuestMemory, Region};
use netlib::ring::{Desc, DeviceRing, DriverRing};
use netlib::vhost::{copy_chain, read_chain, write_chain, DeviceQueue, RX_NET_HDR};

const SIZE: u16 = 16;

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    u64::from_le_bytes(a)
}

fuzz_target!(|data: &[u8]| {
    let drv = DriverRing::new(SIZE, None).expect("ring");
    let region = Region::create(None, 1 << 16).expect("data");
    let base = region.map().addr();
    let len = region.map().len() as u64;
    let mut gm = GuestMemory::default();
    gm.add_region(
        drv.region().fd(),
        drv.region().map().addr(),
        drv.region().map().addr(),
        drv.region().map().len() as u64,
        0,
    )
    .expect("ring region");
    gm.add_region(region.fd(), base, base, len, 0).expect("data region");
    let mem = Arc::new(gm);
    // Descriptors: 16 bytes of fuzz each; addresses are offsets near the data
    // region (so some land inside, some straddle, some are far outside).
    let mut chunks = data.chunks(16);
    for i in 0..SIZE {
        let Some(c) = chunks.next() else { break };
        let raw = le64(&c[..c.len().min(8)]);
        let addr = match raw % 4 {
            0 => base + (raw >> 2) % (len + 4096),
            1 => base.wrapping_sub(raw >> 40),
            2 => raw,
            _ => base + len - ((raw >> 2) % 64),
        };
        let rest = c.get(8..).unwrap_or(&[]);
        let dlen = le64(rest) as u32 % 4096;
        let flags = (le64(rest.get(4..).unwrap_or(&[])) & 0x7) as u16;
        let next = (le64(rest.get(6..).unwrap_or(&[])) % (u64::from(SIZE) + 3)) as u16;
        drv.set_desc(i, Desc { addr, len: dlen, flags, next });
    }
    let avail: Vec<u16> = chunks.flatten().map(|&b| u16::from(b) % (SIZE + 4)).take(SIZE as usize).collect();
    for (i, h) in avail.iter().enumerate() {
        drv.set_avail(i as u16, *h);
    }
    let jump = data.first().copied().unwrap_or(0) as u16;
    drv.publish_avail(avail.len() as u16 + if jump > 250 { jump } else { 0 });
    let l = drv.layout();
    let ring = DeviceRing::new(&mem, u32::from(SIZE), l.desc, l.avail, l.used).expect("ring setup");
    let mut q = DeviceQueue::new(ring, 0);
    let Ok(n) = q.available() else { return };
    let mut buf = [0u8; 2048];
    let mut prev = None;
    for _ in 0..n {
        for writable in [false, true] {
            if let Ok(c) = q.pop(&mem, writable) {
                let _ = read_chain(&mem, &c, 12, &mut buf);
                let _ = write_chain(&mem, &c, &RX_NET_HDR, &buf[..64]);
                if let Some(p) = prev {
                    let _ = copy_chain(&mem, &c, &RX_NET_HDR, &mem, &p, 12);
                }
                prev = Some(c);
                q.push_used(c.head, c.total);
            }
        }
    }
    q.publish();
});
