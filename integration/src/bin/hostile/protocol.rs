// The protocol cases: one wrong message, field or descriptor per case, sent once on a
// fresh connection, which is then held until fastpathd closes it.
//! Malformed vhost-user messages and rings.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use netlib::mem::Region;
use netlib::ring::{Desc, DriverRing};
use netlib::spec::{
    NET_HDR_LEN, NUM_BUFFERS_AT, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_INDIRECT_DESC, VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
};
use netlib::vhost_user::message::{encode, FLAG_VERSION};
use netlib::vhost_user::{MemRegion, Request, VringAddr, VringState};
use netlib::vnet_hdr::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4};

use crate::frontend::{Hostile, HOLD, QSIZE};

/// Every protocol case, with what it does wrong.
pub const CASES: &[(&str, &str)] = &[
    ("short-payload", "SET_VRING_NUM with a 4-byte payload"),
    ("truncated", "a header promising 40 bytes, 10 sent, then the socket closed"),
    ("missing-fds", "SET_MEM_TABLE of one region with no fd"),
    ("extra-fds", "GET_FEATURES carrying an fd"),
    ("overlap", "SET_MEM_TABLE with two overlapping regions"),
    ("wrap", "a region whose address range wraps past 2^64"),
    ("too-many-slots", "SET_MEM_TABLE declaring 9 regions"),
    ("add-too-many", "ADD_MEM_REG 40 times (the switch offers 32 slots)"),
    ("ring-outside", "ring addresses outside every region"),
    ("num-3", "vring size 3 (not a power of two)"),
    ("num-0", "vring size 0"),
    ("num-65536", "vring size 65536"),
    ("vring-past-pairs", "vring 16: past the 8 queue pairs a port takes (vrings 0 to 15)"),
    ("avail-jump", "avail index 1000 entries ahead"),
    ("loop", "a descriptor chain that loops"),
    ("next-past-end", "a chain whose next index is past the table"),
    ("len-overflow", "descriptors whose lengths sum past 4 GiB"),
    ("straddle", "a descriptor straddling two regions"),
    ("outside", "a descriptor outside every region"),
    ("used-scribble", "scribbling on the used ring while the switch writes it"),
    ("indirect-nested", "an indirect table whose entry is indirect too"),
    ("indirect-outside", "an indirect table outside every region"),
    ("indirect-huge", "an indirect table of 4 GiB"),
    ("mrg-num-buffers", "mergeable buffers: frames sent with num_buffers 65535, 1-byte receive buffers"),
    (
        "gso-lies",
        "offloads negotiated, then virtio-net headers that lie: a checksum past the frame, GSO without \
         NEEDS_CSUM, a GSO size of 0, UDP fragmentation",
    ),
    ("packed-id", "a packed ring whose buffer id is past the ring"),
    ("packed-wrap-lie", "a packed chain whose head is available and whose next descriptor is not"),
    ("packed-outside", "a packed descriptor outside every region"),
    ("packed-indirect-nested", "a packed ring whose indirect table's entry is indirect too"),
];

/// Where the gso-lies case's frames sit in the data region, one every 2 KiB.
const LIES_AT: usize = FRAME_AT + 4096;

/// The gso-lies case's transmit buffers: virtio-net headers that lie about a 60-byte
/// frame, each of which the switch must refuse (counting it in the port's `rx_errors`).
fn lying_headers() -> Vec<Vec<u8>> {
    use netlib::vnet_hdr::{GSO_TCPV4, GSO_UDP, HDR_F_NEEDS_CSUM};
    // flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
    let lies: [(u8, u8, u16, u16, u16, u16); 4] = [
        (HDR_F_NEEDS_CSUM, 0, 0, 0, 1000, 16),
        (0, GSO_TCPV4, 54, 1448, 0, 0),
        (HDR_F_NEEDS_CSUM, GSO_TCPV4, 54, 0, 34, 16),
        (HDR_F_NEEDS_CSUM, GSO_UDP, 42, 1000, 34, 6),
    ];
    lies.iter()
        .map(|&(flags, kind, hdr_len, size, start, offset)| {
            let mut b = vec![flags, kind];
            for v in [hdr_len, size, start, offset] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend(crate::attacks::frame([0xff; 6], [2, 0, 0, 0, 0, 0x79]));
            b
        })
        .collect()
}

/// Where the nested indirect table sits in the data region: its one entry points to itself
/// and is indirect.
const TABLE_AT: usize = 1 << 16;

/// Where the packed-indirect-nested case's table sits: one packed entry, indirect, pointing
/// to itself.
const PACKED_TABLE_AT: usize = TABLE_AT + 2048;

/// Where the mrg-num-buffers case's frame sits in the data region: a virtio-net header
/// whose num_buffers says 65535, then a broadcast frame.
const FRAME_AT: usize = TABLE_AT + 4096;

/// One 16-byte descriptor as it sits in memory (an indirect table's entry).
fn desc_bytes(d: Desc) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&d.addr.to_le_bytes());
    b[8..12].copy_from_slice(&d.len.to_le_bytes());
    b[12..14].copy_from_slice(&d.flags.to_le_bytes());
    b[14..].copy_from_slice(&d.next.to_le_bytes());
    b
}

fn vring_num(h: &mut Hostile, num: u32) -> Result<()> {
    vring_num_at(h, 1, num)
}

fn vring_num_at(h: &mut Hostile, index: u32, num: u32) -> Result<()> {
    h.start()?;
    h.send(Request::SetVringNum, &encode::state(VringState { index, num }), &[])
}

/// Runs protocol case `case` against the switch's socket `path`.
pub fn run(case: &str, path: &Path) -> Result<()> {
    if case == "truncated" {
        // A header promising 40 bytes, 10 sent, then the socket closed.
        use std::io::Write;
        let hdr = netlib::vhost_user::Header { request: Request::SetVringAddr as u32, flags: FLAG_VERSION, size: 40 };
        let mut s = UnixStream::connect(path)?;
        s.write_all(&hdr.encode())?;
        s.write_all(&[0u8; 10])?;
        return Ok(());
    }
    let mut h = Hostile::connect(path, Duration::from_secs(10))?;
    let mut data = Region::create(None, 1 << 20)?;
    let mut rx = DriverRing::new(QSIZE, None)?;
    let mut tx = DriverRing::new(QSIZE, None)?;
    let base = data.map().addr();
    let table = base + TABLE_AT as u64;
    let nested = Desc { addr: table, len: 16, flags: VRING_DESC_F_INDIRECT, next: 0 };
    data.map_mut().slice_mut(TABLE_AT, 16)?.copy_from_slice(&desc_bytes(nested));
    // The same in a packed table's format (addr, len, id, flags): its entry is indirect.
    let packed_table = base + PACKED_TABLE_AT as u64;
    let mut entry = [0u8; 16];
    entry[..8].copy_from_slice(&packed_table.to_le_bytes());
    entry[8..12].copy_from_slice(&16u32.to_le_bytes());
    entry[14..].copy_from_slice(&VRING_DESC_F_INDIRECT.to_le_bytes());
    data.map_mut().slice_mut(PACKED_TABLE_AT, 16)?.copy_from_slice(&entry);
    let mut lying = vec![0u8; NET_HDR_LEN as usize];
    lying[NUM_BUFFERS_AT..].copy_from_slice(&u16::MAX.to_le_bytes());
    lying.extend(crate::attacks::frame([0xff; 6], [2, 0, 0, 0, 0, 0x78]));
    data.map_mut().slice_mut(FRAME_AT, lying.len())?.copy_from_slice(&lying);
    let lies = lying_headers();
    for (k, b) in lies.iter().enumerate() {
        data.map_mut().slice_mut(LIES_AT + k * 2048, b.len())?.copy_from_slice(b);
    }
    let data = data;
    // `extra`: features acked besides VERSION_1.
    let ring_case = |h: &mut Hostile, extra: u64, descs: &[(u16, Desc)], heads: &[u16], avail: u16| -> Result<()> {
        h.start_with(extra)?;
        h.rings(&rx, &tx, &data)?;
        for (i, d) in descs {
            tx.set_desc(*i, *d);
        }
        for (k, head) in heads.iter().enumerate() {
            tx.set_avail(k as u16, *head);
        }
        tx.publish_avail(avail);
        Ok(())
    };
    let d = |addr, len, flags, next| Desc { addr, len, flags, next };
    // A packed ring in the transmit ring's descriptor table: (addr, len, id, flags) per
    // slot from 0, the flags of slot 0 (the head) stored last, as a driver does.
    // `extra`: features acked besides VERSION_1 and RING_PACKED.
    let packed_case =
        |h: &mut Hostile, tx: &mut DriverRing, descs: &[(u64, u32, u16, u16)], extra: u64| -> Result<()> {
            h.start_packed(extra)?;
            h.rings(&rx, tx, &data)?;
            for (i, &(addr, len, id, flags)) in descs.iter().enumerate().rev() {
                let s = tx.region_mut().map_mut().slice_mut(16 * i, 16)?;
                s[..8].copy_from_slice(&addr.to_le_bytes());
                s[8..12].copy_from_slice(&len.to_le_bytes());
                s[12..14].copy_from_slice(&id.to_le_bytes());
                s[14..16].copy_from_slice(&flags.to_le_bytes());
            }
            Ok(())
        };
    let avail = VRING_PACKED_DESC_F_AVAIL;
    match case {
        "short-payload" => {
            h.start()?;
            h.send(Request::SetVringNum, &[0u8; 4], &[])?;
        }
        "missing-fds" => {
            h.start()?;
            h.send(Request::SetMemTable, &encode::mem_table(&[Hostile::region(&data)]), &[])?;
        }
        "extra-fds" => {
            h.send(Request::GetFeatures, &[], &[data.fd()])?;
        }
        "overlap" => {
            h.start()?;
            let r = Hostile::region(&data);
            let r2 = MemRegion { guest_phys_addr: r.guest_phys_addr + 4096, ..r };
            h.send(Request::SetMemTable, &encode::mem_table(&[r, r2]), &[data.fd(), data.fd()])?;
        }
        "wrap" => {
            h.start()?;
            let r = MemRegion { guest_phys_addr: u64::MAX - 4095, ..Hostile::region(&data) };
            h.send(Request::SetMemTable, &encode::mem_table(&[r]), &[data.fd()])?;
        }
        "too-many-slots" => {
            h.start()?;
            let mut p = encode::mem_table(&[Hostile::region(&data)]);
            p[0] = 9;
            p.resize(8 + 9 * 32, 0);
            let fds: Vec<_> = (0..8).map(|_| data.fd()).collect();
            h.send(Request::SetMemTable, &p, &fds)?;
        }
        "add-too-many" => {
            h.start()?;
            let regions: Vec<Region> = (0..40).map(|_| Region::create(None, 4096)).collect::<Result<_, _>>()?;
            for r in &regions {
                h.send(Request::AddMemReg, &encode::one_region(&Hostile::region(r)), &[r.fd()])?;
            }
        }
        "ring-outside" => {
            h.start()?;
            h.send(Request::SetMemTable, &encode::mem_table(&[Hostile::region(&data)]), &[data.fd()])?;
            h.send(Request::SetVringNum, &encode::state(VringState { index: 0, num: 256 }), &[])?;
            let a = VringAddr { index: 0, flags: 0, desc: 0x1000, used: 0x3000, avail: 0x2000, log: 0 };
            h.send(Request::SetVringAddr, &encode::addr(a), &[])?;
            h.send(Request::SetVringKick, &encode::u64(0x100), &[])?;
        }
        "num-3" => vring_num(&mut h, 3)?,
        "num-0" => vring_num(&mut h, 0)?,
        "num-65536" => vring_num(&mut h, 65536)?,
        "vring-past-pairs" => vring_num_at(&mut h, 16, 256)?,
        "avail-jump" => ring_case(&mut h, 0, &[], &[], 1000)?,
        "loop" => ring_case(
            &mut h,
            0,
            &[(0, d(base, 64, VRING_DESC_F_NEXT, 1)), (1, d(base + 64, 64, VRING_DESC_F_NEXT, 0))],
            &[0],
            1,
        )?,
        "next-past-end" => ring_case(&mut h, 0, &[(0, d(base, 64, VRING_DESC_F_NEXT, 300))], &[0], 1)?,
        "len-overflow" => {
            let descs: Vec<(u16, Desc)> = (0..3u16).map(|i| (i, d(base, u32::MAX, VRING_DESC_F_NEXT, i + 1))).collect();
            ring_case(&mut h, 0, &descs, &[0], 1)?;
        }
        "straddle" => {
            let end = base + data.map().len() as u64;
            ring_case(&mut h, 0, &[(0, d(end - 32, 64, 0, 0))], &[0], 1)?;
        }
        "outside" => ring_case(&mut h, 0, &[(0, d(0x10, 64, 0, 0))], &[0], 1)?,
        "indirect-nested" => {
            ring_case(&mut h, VIRTIO_RING_F_INDIRECT_DESC, &[(0, d(table, 16, VRING_DESC_F_INDIRECT, 0))], &[0], 1)?;
        }
        "indirect-outside" => {
            ring_case(&mut h, VIRTIO_RING_F_INDIRECT_DESC, &[(0, d(0x10, 64, VRING_DESC_F_INDIRECT, 0))], &[0], 1)?;
        }
        "indirect-huge" => {
            let huge = d(table, 0xffff_fff0, VRING_DESC_F_INDIRECT, 0);
            ring_case(&mut h, VIRTIO_RING_F_INDIRECT_DESC, &[(0, huge)], &[0], 1)?;
        }
        "mrg-num-buffers" => {
            // num_buffers is the device's to write on receive; a driver's on transmit means
            // nothing and must change nothing. Our receive ring offers only 1-byte buffers.
            let frame = d(base + FRAME_AT as u64, lying.len() as u32, 0, 0);
            ring_case(&mut h, VIRTIO_NET_F_MRG_RXBUF, &[(0, frame)], &[], 0)?;
            for i in 0..QSIZE {
                rx.set_desc(i, d(base + 4096 + u64::from(i), 1, VRING_DESC_F_WRITE, 0));
                rx.set_avail(i, i);
            }
            rx.publish_avail(QSIZE);
            let t = Instant::now();
            let mut idx: u16 = 0;
            while t.elapsed() < Duration::from_secs(1) {
                if idx.wrapping_sub(tx.used_idx()) < QSIZE {
                    tx.set_avail(idx, 0);
                    idx = idx.wrapping_add(1);
                    tx.publish_avail(idx);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            // Nothing here is a fault: the switch keeps the connection, we close it.
            return Ok(());
        }
        "gso-lies" => {
            // Each header is refused and its frame dropped (counted): no fault, the
            // connection stays, and we close it once the switch has taken them all.
            let descs: Vec<(u16, Desc)> = lies
                .iter()
                .enumerate()
                .map(|(k, b)| (k as u16, d(base + (LIES_AT + k * 2048) as u64, b.len() as u32, 0, 0)))
                .collect();
            let heads: Vec<u16> = (0..lies.len() as u16).collect();
            let n = lies.len() as u16;
            ring_case(&mut h, VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4, &descs, &heads, n)?;
            let t = Instant::now();
            while tx.used_idx() != n && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(5));
            }
            anyhow::ensure!(tx.used_idx() == n, "the switch took {} of our {n} frames", tx.used_idx());
            return Ok(());
        }
        "packed-id" => packed_case(&mut h, &mut tx, &[(base, 64, 300, avail)], 0)?,
        "packed-wrap-lie" => packed_case(
            &mut h,
            &mut tx,
            &[(base, 64, 0, avail | VRING_DESC_F_NEXT), (base + 64, 64, 0, VRING_PACKED_DESC_F_USED)],
            0,
        )?,
        "packed-outside" => packed_case(&mut h, &mut tx, &[(0x10, 64, 0, avail)], 0)?,
        "packed-indirect-nested" => {
            let d = [(packed_table, 16, 0, avail | VRING_DESC_F_INDIRECT)];
            packed_case(&mut h, &mut tx, &d, VIRTIO_RING_F_INDIRECT_DESC)?;
        }
        "used-scribble" => {
            // A valid ring with a stream of valid 64-byte packets, while we scribble on
            // the used ring the switch writes. The switch never trusts what it wrote.
            h.start()?;
            h.rings(&rx, &tx, &data)?;
            // The switch answers in order: once it has answered this, it has set up both rings.
            h.get(Request::GetFeatures)?;
            let t = Instant::now();
            let mut idx: u16 = 0;
            let used_off = (rx.layout().used - rx.layout().desc) as usize;
            let mut junk: u8 = 1;
            while t.elapsed() < Duration::from_secs(2) {
                // Scribble over the receive ring's used area, which only the switch should write.
                junk = junk.wrapping_mul(31).wrapping_add(7);
                rx.region_mut().map_mut().slice_mut(used_off, 64)?.fill(junk);
                // Flow control as a real driver does: never more than a ring in flight.
                if idx.wrapping_sub(tx.used_idx()) > QSIZE - 32 {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                for k in 0..32u16 {
                    let id = idx.wrapping_add(k) % QSIZE;
                    tx.set_desc(id, d(base + u64::from(id) * 2048, 76, 0, 0));
                    tx.set_avail(idx.wrapping_add(k), id);
                }
                idx = idx.wrapping_add(32);
                tx.publish_avail(idx);
                rx.publish_avail(idx);
                std::thread::sleep(Duration::from_micros(200));
            }
            // Nothing here is a fault the switch acts on: it keeps the connection, we close it.
            return Ok(());
        }
        other => anyhow::bail!("unknown protocol case '{other}'"),
    }
    h.hold_until_closed(HOLD);
    Ok(())
}
