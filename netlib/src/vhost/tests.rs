// Bad input for the backend: descriptors and chains a buggy or hostile frontend
// could write, and malformed protocol messages. Each must fault the port, not crash.
// And the 802.1Q tag pushed or popped during the copy, between chains and buffers.
//! Backend robustness tests, and tag edits.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::mem::{GuestMemory, Region};
use crate::pool::PoolOptions;
use crate::ring::{Desc, DeviceRing, DriverRing};
use crate::spec::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use crate::vhost_user::message::{encode, Header, FLAG_VERSION};
use crate::vhost_user::{MemRegion, Request};
use crate::virtio_user::{VirtioUser, VirtioUserOptions};

/// A driver ring and a data region, both mapped into a GuestMemory as a backend would.
pub(super) struct Rig {
    pub(super) drv: DriverRing,
    pub(super) data: Region,
    pub(super) q: DeviceQueue,
    pub(super) mem: Arc<GuestMemory>,
}

/// Entries of a rig's ring.
pub(super) const SIZE: u16 = 8;

/// A rig with nothing posted.
pub(super) fn rig() -> Rig {
    let drv = DriverRing::new(SIZE, None).unwrap();
    let data = Region::create(None, 1 << 16).unwrap();
    let mem = GuestMemory::identity(&[drv.region(), &data]);
    let l = drv.layout();
    let ring = DeviceRing::new(&mem, u32::from(SIZE), l.desc, l.avail, l.used).unwrap();
    Rig { drv, data, q: DeviceQueue::new(ring, 0), mem }
}

impl Rig {
    pub(super) fn buf(&self, off: u64) -> u64 {
        self.data.map().addr() + off
    }
    pub(super) fn post(&self, heads: &[u16]) {
        for (i, &h) in heads.iter().enumerate() {
            self.drv.set_avail(i as u16, h);
        }
        self.drv.publish_avail(heads.len() as u16);
    }
    fn pop(&mut self, writable: bool) -> Result<Chain, ChainFault> {
        self.q.available()?;
        self.q.pop(&self.mem, writable)
    }
}

/// A message as the backend's connection hands one over, without fds.
pub(super) fn raw_msg(req: Request, payload: Vec<u8>) -> crate::vhost_user::conn::RawMsg {
    let header = Header { request: req as u32, flags: FLAG_VERSION, size: payload.len() as u32 };
    crate::vhost_user::conn::RawMsg { header, payload, fds: Vec::new() }
}

pub(super) fn d(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
    Desc { addr, len, flags, next }
}

#[test]
fn good_chain_walks() {
    let mut r = rig();
    r.drv.set_desc(0, d(r.buf(0), 12, VRING_DESC_F_NEXT, 1));
    r.drv.set_desc(1, d(r.buf(100), 64, 0, 0));
    r.post(&[0]);
    let c = r.pop(false).unwrap();
    assert_eq!((c.head, c.nsegs, c.total), (0, 2, 76));
}

#[test]
fn descriptor_outside_every_region() {
    let mut r = rig();
    r.drv.set_desc(0, d(0x1000, 64, 0, 0));
    r.post(&[0]);
    assert!(matches!(r.pop(false), Err(ChainFault::BadAddress { addr: 0x1000, .. })));
}

#[test]
fn length_past_the_region_and_wrapping_address() {
    let mut r = rig();
    let len = r.data.map().len() as u64;
    r.drv.set_desc(0, d(r.buf(len - 10), 64, 0, 0));
    r.drv.set_desc(1, d(u64::MAX - 8, 64, 0, 0));
    r.drv.set_desc(2, d(r.buf(0), u32::MAX, 0, 0));
    r.post(&[0, 1, 2]);
    for _ in 0..3 {
        assert!(matches!(r.pop(false), Err(ChainFault::BadAddress { .. })));
    }
}

#[test]
fn chain_that_loops() {
    let mut r = rig();
    r.drv.set_desc(0, d(r.buf(0), 64, VRING_DESC_F_NEXT, 1));
    r.drv.set_desc(1, d(r.buf(64), 64, VRING_DESC_F_NEXT, 0));
    r.post(&[0]);
    assert!(matches!(r.pop(false), Err(ChainFault::ChainTooLong { head: 0, size: SIZE })));
    // A self-loop too.
    let mut r = rig();
    r.drv.set_desc(3, d(r.buf(0), 64, VRING_DESC_F_NEXT, 3));
    r.post(&[3]);
    assert!(matches!(r.pop(false), Err(ChainFault::ChainTooLong { .. })));
}

#[test]
fn chain_running_off_the_table() {
    let mut r = rig();
    for i in 0..SIZE {
        r.drv.set_desc(i, d(r.buf(u64::from(i) * 64), 64, VRING_DESC_F_NEXT, i + 1));
    }
    r.post(&[0]);
    assert!(matches!(r.pop(false), Err(ChainFault::IndexOutOfRange { index: 8, .. })));
}

#[test]
fn head_and_next_past_the_table() {
    let mut r = rig();
    r.post(&[100]);
    assert!(matches!(r.pop(false), Err(ChainFault::IndexOutOfRange { index: 100, .. })));
    let mut r = rig();
    r.drv.set_desc(0, d(r.buf(0), 64, VRING_DESC_F_NEXT, 9));
    r.post(&[0]);
    assert!(matches!(r.pop(false), Err(ChainFault::IndexOutOfRange { index: 9, .. })));
}

#[test]
fn avail_index_jumping_ahead() {
    let r = rig();
    r.drv.publish_avail(SIZE + 1);
    assert!(matches!(r.q.available(), Err(ChainFault::AvailJump { ahead: 9, .. })));
}

#[test]
fn wrong_direction_and_indirect() {
    let mut r = rig();
    r.drv.set_desc(0, d(r.buf(0), 64, VRING_DESC_F_WRITE, 0));
    r.drv.set_desc(1, d(r.buf(0), 64, 0, 0));
    r.drv.set_desc(2, d(r.buf(0), 64, VRING_DESC_F_INDIRECT, 0));
    r.post(&[0, 1, 2]);
    assert!(matches!(r.pop(false), Err(ChainFault::WrongDirection { index: 0, .. })));
    assert!(matches!(r.pop(true), Err(ChainFault::WrongDirection { index: 1, .. })));
    assert!(matches!(r.pop(false), Err(ChainFault::Indirect { index: 2 })));
}

#[test]
fn address_straddling_two_regions() {
    // Two regions adjacent in the frontend's address space: a descriptor across
    // the boundary is refused even though both halves are mapped.
    let a = Region::create(None, 4096 * 4).unwrap();
    let b = Region::create(None, 4096 * 4).unwrap();
    let mut gm = GuestMemory::default();
    let la = a.map().len() as u64;
    gm.add_region(a.fd(), 0x10_0000, 0x10_0000, la, 0).unwrap();
    gm.add_region(b.fd(), 0x10_0000 + la, 0x10_0000 + la, b.map().len() as u64, 0).unwrap();
    assert!(gm.translate(0x10_0000 + la - 8, 16).is_none());
    assert!(gm.translate(0x10_0000 + la - 8, 8).is_some());
    assert!(gm.translate(0x10_0000 + la, 8).is_some());
}

#[test]
fn a_long_chain_of_empty_descriptors_is_refused_after_a_bounded_walk() {
    // A ring larger than the walk limit, every descriptor empty and chained on.
    let size = 256u16;
    let drv = DriverRing::new(size, None).unwrap();
    let data = Region::create(None, 4096).unwrap();
    let mem = GuestMemory::identity(&[drv.region(), &data]);
    let l = drv.layout();
    let ring = DeviceRing::new(&mem, u32::from(size), l.desc, l.avail, l.used).unwrap();
    let mut q = DeviceQueue::new(ring, 0);
    for i in 0..size {
        drv.set_desc(i, d(data.map().addr(), 0, VRING_DESC_F_NEXT, (i + 1) % size));
    }
    drv.set_avail(0, 0);
    drv.publish_avail(1);
    assert!(matches!(q.pop(&mem, false), Err(ChainFault::TooManyDescriptors { head: 0 })));
}

#[test]
fn a_frame_longer_than_the_port_allows_is_refused() {
    let mut r = rig();
    // Two descriptors naming the same 4 KiB twice over: 8 KiB is fine, the limit is 9216 + 12.
    for i in 0..4u16 {
        r.drv.set_desc(i, d(r.buf(0), 4096, VRING_DESC_F_NEXT, i + 1));
    }
    r.drv.set_desc(4, d(r.buf(0), 4096, 0, 0));
    r.drv.set_desc(5, d(r.buf(0), 4096, VRING_DESC_F_NEXT, 6));
    r.drv.set_desc(6, d(r.buf(0), 4096, 0, 0));
    r.post(&[5, 0]);
    assert_eq!(r.pop(false).unwrap().total, 8192);
    assert!(matches!(r.pop(false), Err(ChainFault::FrameTooLong { head: 0, max: 9228, .. })));
}

#[test]
fn short_receive_buffer_is_refused_by_write_chain() {
    let mut r = rig();
    r.drv.set_desc(0, d(r.buf(0), 20, VRING_DESC_F_WRITE, 0));
    r.post(&[0]);
    let c = r.pop(true).unwrap();
    assert_eq!(write_chain(&r.mem, &c, &RX_NET_HDR, &[0u8; 64]), None);
    assert_eq!(write_chain(&r.mem, &c, &RX_NET_HDR, &[7u8; 8]), Some(20));
}

/// A frame from MAC 02:..:02 to 02:..:01, `len` bytes, tagged with VLAN `vid` unless 0.
fn vlan_frame(vid: u16, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]].concat();
    if vid != 0 {
        f.extend_from_slice(&TPID_8021Q);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..).map(|i: u32| i as u8).take(len - f.len()));
    f
}

#[test]
fn tags_are_pushed_and_popped_on_frames_of_our_own() {
    let (untagged, tagged) = (vlan_frame(0, 100), vlan_frame(100, 104));
    let bufs: Vec<FrameBuf> = [&untagged, &tagged]
        .iter()
        .map(|f| {
            let mut b = FrameBuf::with_capacity(256);
            assert!(b.fill_from(f));
            b
        })
        .collect();
    let burst = Frames::Local(&bufs);
    assert!(matches!(burst.edited(TagEdit::Keep), Frames::Local(_)), "no edit: the frames as they are");
    let pushed = burst.edited(TagEdit::Push(100));
    let popped = burst.edited(TagEdit::Pop);
    assert_eq!((pushed.len(), pushed.get(0).len(), popped.get(1).len()), (2, 104, 100));
    let mut out = vec![0u8; 104];
    assert!(pushed.get(0).read_all(&mut out));
    assert_eq!(out, tagged);
    let mut out = vec![0u8; 100];
    assert!(popped.get(1).read_all(&mut out));
    assert_eq!(out, untagged);
    assert!(!popped.get(1).read_all(&mut [0u8; 104]), "the length is the edited one");
    // The head reads through the edit too: the MACs, then the tag, then the frame's own bytes.
    let mut head = [0u8; 20];
    assert_eq!(pushed.get(0).read_head(&mut head), 20);
    assert_eq!(head[..], tagged[..20]);
    assert_eq!(popped.get(1).read_head(&mut head), 20);
    assert_eq!(head[..], untagged[..20]);
    // A frame too short to hold a tag has none to pop.
    let mut short = FrameBuf::with_capacity(64);
    assert!(short.fill_from(&untagged[..14]));
    let shorts = [short];
    let short = Frames::Local(&shorts);
    assert!(!short.edited(TagEdit::Pop).get(0).read_all(&mut [0u8; 10]));
}

#[test]
fn tags_are_pushed_and_popped_in_the_copy_between_chains() {
    let mut r = rig();
    let (untagged, tagged) = (vlan_frame(0, 300), vlan_frame(200, 304));
    // A frontend's frame after its net header, split inside the MACs and again further on;
    // receive buffers of one segment and of two (the second starting inside the MACs).
    let src = |r: &mut Rig, f: &[u8]| {
        r.data.map_mut().slice_mut(100, 5).unwrap().copy_from_slice(&f[..5]);
        r.data.map_mut().slice_mut(200, f.len() - 5).unwrap().copy_from_slice(&f[5..]);
        r.drv.set_desc(0, d(r.buf(0), 12, VRING_DESC_F_NEXT, 1));
        r.drv.set_desc(1, d(r.buf(100), 5, VRING_DESC_F_NEXT, 2));
        r.drv.set_desc(2, d(r.buf(200), f.len() as u32 - 5, 0, 0));
    };
    r.drv.set_desc(3, d(r.buf(1000), 400, VRING_DESC_F_WRITE, 0));
    r.drv.set_desc(4, d(r.buf(2000), 20, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 5));
    r.drv.set_desc(5, d(r.buf(3000), 400, VRING_DESC_F_WRITE, 0));
    for (round, (from, edit, want)) in
        [(&untagged, TagEdit::Push(200), &tagged), (&tagged, TagEdit::Pop, &untagged)].into_iter().enumerate()
    {
        src(&mut r, from);
        for (k, head) in [0, 3, 4].into_iter().enumerate() {
            r.drv.set_avail((3 * round + k) as u16, head);
        }
        r.drv.publish_avail(3 * round as u16 + 3);
        let (s, one, two) = (r.pop(false).unwrap(), r.pop(true).unwrap(), r.pop(true).unwrap());
        let chains = [s];
        let frames = Frames::Guest { mem: &r.mem, chains: &chains, skip: NET_HDR_LEN };
        let f = frames.edited(edit).get(0);
        assert_eq!(f.len() as usize, want.len());
        let n = want.len() + RX_NET_HDR.len();
        assert_eq!(f.write_to(&r.mem, &one, &RX_NET_HDR), Some(n as u32), "{edit:?}, one segment");
        assert_eq!(r.data.map().slice(1000 + 12, want.len()).unwrap(), &want[..]);
        assert_eq!(f.write_to(&r.mem, &two, &RX_NET_HDR), Some(n as u32), "{edit:?}, two segments");
        let mut got = r.data.map().slice(2000 + 12, 8).unwrap().to_vec();
        got.extend_from_slice(r.data.map().slice(3000, want.len() - 8).unwrap());
        assert_eq!(&got, want, "{edit:?}, two segments");
        let mut all = vec![0u8; want.len()];
        assert!(f.read_all(&mut all));
        assert_eq!(&all, want);
    }
}

fn tmp_sock(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fp-test-{tag}-{}.sock", std::process::id()))
}

/// Drives `be` until `cond` holds or a second passes.
fn drive(be: &mut VhostBackend, cond: impl Fn(&VhostBackend) -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        be.poll();
        if cond(be) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn send_raw(s: &mut UnixStream, req: u32, payload: &[u8]) {
    let h = Header { request: req, flags: FLAG_VERSION, size: payload.len() as u32 };
    s.write_all(&h.encode()).unwrap();
    s.write_all(payload).unwrap();
}

#[test]
fn malformed_messages_reset_the_port_and_it_keeps_serving() {
    type Case = (&'static str, Box<dyn Fn(&mut UnixStream)>);
    let path = tmp_sock("malformed");
    let mut be = VhostBackend::open(&path, VhostMode::Listen).unwrap();
    let f = std::fs::File::open("/dev/null").unwrap();
    let cases: Vec<Case> = vec![
        ("unknown request", Box::new(|s| send_raw(s, 999, &[]))),
        ("truncated vring addr", Box::new(|s| send_raw(s, Request::SetVringAddr as u32, &[0; 20]))),
        (
            "mem table without fds",
            Box::new(|s| {
                send_raw(
                    s,
                    Request::SetMemTable as u32,
                    &encode::mem_table(&[MemRegion {
                        guest_phys_addr: 0,
                        memory_size: 4096,
                        userspace_addr: 0,
                        mmap_offset: 0,
                    }]),
                );
            }),
        ),
        (
            "oversized payload",
            Box::new(|s| s.write_all(&Header { request: 1, flags: 1, size: 1 << 20 }.encode()).unwrap()),
        ),
        (
            "vring index 16",
            Box::new(|s| {
                send_raw(
                    s,
                    Request::SetVringNum as u32,
                    &encode::state(crate::vhost_user::VringState { index: 16, num: 256 }),
                );
            }),
        ),
        (
            "ring size 0",
            Box::new(|s| {
                send_raw(
                    s,
                    Request::SetVringNum as u32,
                    &encode::state(crate::vhost_user::VringState { index: 0, num: 0 }),
                );
            }),
        ),
        (
            "ring size 65536",
            Box::new(|s| {
                send_raw(
                    s,
                    Request::SetVringNum as u32,
                    &encode::state(crate::vhost_user::VringState { index: 0, num: 65536 }),
                );
            }),
        ),
        (
            "ring size 3",
            Box::new(|s| {
                send_raw(
                    s,
                    Request::SetVringNum as u32,
                    &encode::state(crate::vhost_user::VringState { index: 1, num: 3 }),
                );
            }),
        ),
        ("truncated then closed", Box::new(|s| s.write_all(&[1, 0, 0]).unwrap())),
    ];
    let mut resets = 0;
    for (what, send) in &cases {
        let mut s = UnixStream::connect(&path).unwrap();
        assert!(drive(&mut be, VhostBackend::connected), "{what}: not accepted");
        send(&mut s);
        if *what == "truncated then closed" {
            drop(s);
        } else {
            // Keep the stream open: the backend must close it itself.
            std::mem::forget(s.try_clone().unwrap());
        }
        assert!(drive(&mut be, |b| !b.connected()), "{what}: port not reset");
        resets += 1;
        assert_eq!(be.counters().resets, resets, "{what}");
    }
    // An extra fd on a message that carries none.
    let s = UnixStream::connect(&path).unwrap();
    assert!(drive(&mut be, VhostBackend::connected));
    let c = crate::vhost_user::Conn::new(s).unwrap();
    c.send(Request::GetFeatures as u32, FLAG_VERSION, &[], &[f.as_fd()]).unwrap();
    assert!(drive(&mut be, |b| !b.connected()));
    assert!(be.last_fault().unwrap().contains("fds"), "{:?}", be.last_fault());
    // After all that, a real frontend still comes up.
    let mut pool = crate::PktPool::new(&PoolOptions { nbufs: 512, hugedir: None, ..Default::default() }).unwrap();
    let p2 = path.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let mut pool = crate::PktPool::new(&PoolOptions { nbufs: 512, hugedir: None, ..Default::default() }).unwrap();
        let port = VirtioUser::open(&p2, &mut pool, VirtioUserOptions::default());
        // Stay connected until the backend has seen the rings start.
        let _ = rx.recv_timeout(Duration::from_secs(5));
        port.map(|_| ())
    });
    let up = drive(&mut be, |b| b.link() == LinkState::Up);
    let _ = tx.send(());
    assert!(up, "a good frontend after the bad ones");
    t.join().unwrap().unwrap();
    let _ = be.rx_burst(&mut pool, &mut crate::pool::burst_vec());
}

#[test]
fn a_fault_in_memory_the_frontend_shrank_is_reported_as_the_shrink() {
    let path = tmp_sock("shrunk");
    let mut be = VhostBackend::open(&path, VhostMode::Listen).unwrap();
    let fd = nix::sys::memfd::memfd_create(c"shrinks", nix::sys::memfd::MemFdCreateFlag::empty()).unwrap();
    let r = Region::from_fd(fd, 1 << 16).unwrap();
    let m = MemRegion { guest_phys_addr: 0x10000, memory_size: 1 << 16, userspace_addr: 0x10000, mmap_offset: 0 };
    let payload = encode::mem_table(&[m]);
    let header = Header { request: Request::SetMemTable as u32, flags: FLAG_VERSION, size: payload.len() as u32 };
    let fds = vec![r.fd().try_clone_to_owned().unwrap()];
    be.dev.handle(crate::vhost_user::conn::RawMsg { header, payload, fds }).unwrap();
    // A plain fault first: reported as itself.
    let jump = ChainFault::AvailJump { avail: 0, last: 9, ahead: 65527, size: 256 };
    be.fault(&jump.clone().into());
    assert!(be.last_fault().unwrap().contains("entries ahead"), "{:?}", be.last_fault());
    be.dev
        .handle(crate::vhost_user::conn::RawMsg {
            header,
            payload: encode::mem_table(&[m]),
            fds: vec![r.fd().try_clone_to_owned().unwrap()],
        })
        .unwrap();
    // The frontend shrinks the file; our next read of it faults (SIGBUS, recovered: zeros).
    nix::unistd::ftruncate(r.fd(), 0).unwrap();
    let span = be.dev.mem().translate(0x10000 + 4096, 8).unwrap();
    let mut out = [1u8; 8];
    assert!(be.dev.mem().read(span, 0, &mut out));
    assert_eq!(out, [0; 8]);
    // What the zeros then look like to the ring is not the fault: the shrink is.
    be.fault(&jump.into());
    assert_eq!(be.last_fault(), Some(PortFault::MemoryTruncated.to_string().as_str()));
    assert_eq!(be.counters().resets, 2);
}

#[test]
fn mem_table_region_past_end_of_file_is_refused() {
    let path = tmp_sock("memtable");
    let mut be = VhostBackend::open(&path, VhostMode::Listen).unwrap();
    let s = UnixStream::connect(&path).unwrap();
    assert!(drive(&mut be, VhostBackend::connected));
    let r = Region::create(None, 4096).unwrap();
    let c = crate::vhost_user::Conn::new(s).unwrap();
    let bad = MemRegion { guest_phys_addr: 0x1000, memory_size: 1 << 30, userspace_addr: 0x1000, mmap_offset: 0 };
    c.send(Request::SetMemTable as u32, FLAG_VERSION, &encode::mem_table(&[bad]), &[r.fd()]).unwrap();
    assert!(drive(&mut be, |b| !b.connected()));
    assert!(be.last_fault().unwrap().contains("memory region"), "{:?}", be.last_fault());
}

/// Tops `burst` up to 32 frames of `len` bytes filled with `fill`, each numbered (its first
/// four bytes) from `*seq` on, `total` at most in all.
fn top_up(pool: &mut crate::PktPool, burst: &mut Vec<crate::Packet>, seq: &mut u32, total: u32, len: usize, fill: u8) {
    let before = burst.len();
    pool.alloc_bulk(burst, (32 - before).min((total - *seq) as usize));
    for p in &mut burst[before..] {
        let d = pool.set_len(p, len);
        d.fill(fill);
        d[..4].copy_from_slice(&seq.to_le_bytes());
        *seq += 1;
    }
}

/// Our frontend and our backend negotiate IN_ORDER; the frontend then reclaims its
/// transmit ring from the used index alone. Every frame arrives intact and in order,
/// and every transmit buffer comes back to the frontend's pool.
#[test]
fn in_order_frontend_reclaims_every_buffer() {
    const FRAMES: u32 = 3000;
    let path = tmp_sock("inorder");
    let mut be = VhostBackend::open(&path, VhostMode::Listen).unwrap();
    let p2 = path.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || -> Result<(), String> {
        let mut pool = crate::PktPool::new(&PoolOptions { nbufs: 1024, hugedir: None, ..Default::default() }).unwrap();
        let mut port = VirtioUser::open(&p2, &mut pool, VirtioUserOptions::default()).map_err(|e| e.to_string())?;
        if !port.in_order() {
            return Err("IN_ORDER not negotiated".into());
        }
        let full = pool.available();
        let mut burst = crate::pool::burst_vec();
        let mut seq = 0u32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while (seq < FRAMES || !burst.is_empty()) && Instant::now() < deadline {
            top_up(&mut pool, &mut burst, &mut seq, FRAMES, 64, 0);
            port.tx_burst(&mut pool, &mut burst);
        }
        if !port.flush_tx(&mut pool, Duration::from_secs(5)) {
            return Err("transmit ring not drained".into());
        }
        pool.free_all(&mut burst);
        let back = pool.available();
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
        if back != full {
            return Err(format!("pool has {back} of {full} buffers after the run"));
        }
        Ok(())
    });
    let mut pool = crate::PktPool::new(&PoolOptions { nbufs: 1024, hugedir: None, ..Default::default() }).unwrap();
    let mut burst = crate::pool::burst_vec();
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(15);
    while next < FRAMES && Instant::now() < deadline {
        be.rx_burst(&mut pool, &mut burst);
        for p in &burst {
            let d = pool.data(p);
            assert_eq!(d.len(), 64);
            assert_eq!(u32::from_le_bytes(d[..4].try_into().unwrap()), next, "frames in order");
            next += 1;
        }
        pool.free_all(&mut burst);
    }
    let _ = done_tx.send(());
    assert_eq!(next, FRAMES, "every frame arrived");
    t.join().unwrap().unwrap();
}

/// Our frontend on packed rings against our backend: 3,000 frames each way around rings
/// of 256 (both wrap counters flip many times), every frame intact and in order, and
/// every buffer back in each side's pool.
#[test]
fn packed_frontend_and_backend_move_frames_both_ways() {
    const FRAMES: u32 = 3000;
    let path = tmp_sock("packedfe");
    let mut be = VhostBackend::open(&path, VhostMode::Listen).unwrap();
    let p2 = path.clone();
    let t = std::thread::spawn(move || -> Result<u32, String> {
        let mut pool = crate::PktPool::new(&PoolOptions { nbufs: 1024, hugedir: None, ..Default::default() }).unwrap();
        let opts = VirtioUserOptions { packed: true, ..VirtioUserOptions::default() };
        let mut port = VirtioUser::open(&p2, &mut pool, opts).map_err(|e| e.to_string())?;
        if !port.packed() || !port.in_order() {
            return Err(format!(
                "packed {} in_order {}: expected packed rings in order (one used descriptor a transmit batch)",
                port.packed(),
                port.in_order()
            ));
        }
        let mut burst = crate::pool::burst_vec();
        let (mut seq, mut back) = (0u32, 0u32);
        let deadline = Instant::now() + Duration::from_secs(20);
        while (seq < FRAMES || back < FRAMES) && Instant::now() < deadline {
            top_up(&mut pool, &mut burst, &mut seq, FRAMES, 64, 0);
            port.tx_burst(&mut pool, &mut burst);
            let mut rx = crate::pool::burst_vec();
            port.rx_burst(&mut pool, &mut rx);
            for p in &rx {
                let d = pool.data(p);
                if d.len() != 100 || u32::from_le_bytes(d[..4].try_into().unwrap()) != back {
                    return Err(format!("frame {back} back: {} bytes, {:?}", d.len(), &d[..4.min(d.len())]));
                }
                back += 1;
            }
            pool.free_all(&mut rx);
        }
        if !port.flush_tx(&mut pool, Duration::from_secs(5)) {
            return Err("transmit ring not drained".into());
        }
        pool.free_all(&mut burst);
        Ok(back)
    });
    let mut pool = crate::PktPool::new(&PoolOptions { nbufs: 1024, hugedir: None, ..Default::default() }).unwrap();
    let mut burst = crate::pool::burst_vec();
    let mut out = crate::pool::burst_vec();
    let (mut next, mut sent) = (0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (next < FRAMES || sent < FRAMES || !out.is_empty()) && Instant::now() < deadline {
        be.rx_burst(&mut pool, &mut burst);
        for p in &burst {
            let d = pool.data(p);
            assert_eq!(d.len(), 64);
            assert_eq!(u32::from_le_bytes(d[..4].try_into().unwrap()), next, "frames in order");
            next += 1;
        }
        pool.free_all(&mut burst);
        top_up(&mut pool, &mut out, &mut sent, FRAMES, 100, 7);
        be.tx_burst(&mut pool, &mut out);
    }
    // The frontend takes what is still in its receive ring.
    let back = t.join().unwrap().unwrap();
    pool.free_all(&mut out);
    assert_eq!((next, back), (FRAMES, FRAMES), "every frame went both ways");
}
