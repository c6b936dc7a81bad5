// Tests of virtio-user with several queue pairs against our own vhost-user backend, which
// echoes each frame on the pair it came from: a thread per pair, frames in order on each;
// the port going down (backend gone, a pair's fault) and every pair resetting before it
// comes back; a dropped handle; and what is refused.
//! Tests of a port with several queue pairs.

use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use super::*;
use crate::pool::{burst_vec, PoolOptions};
use crate::vhost::{Burst, DeviceLimits, Filler, Frame, VhostBackend, VhostMode};

fn tmp_sock(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fp-test-pairs-{tag}-{}.sock", std::process::id()))
}

fn pool() -> PktPool {
    PktPool::new(&PoolOptions { nbufs: 1024, hugedir: None, ..Default::default() }).unwrap()
}

/// A backend thread that echoes every frame back on the queue pair it came from, until
/// dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(path: &Path, mode: VhostMode, pairs: u16) -> Self {
        let mut be = VhostBackend::open(path, mode).unwrap();
        be.set_limits(DeviceLimits { queue_pairs: pairs, ..DeviceLimits::default() });
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut burst, mut filler) = (Burst::default(), Filler::default());
            let mut counters = PortCounters::default();
            while !flag.load(Ordering::Relaxed) {
                be.poll();
                let Some(dev) = be.device_mut() else {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                };
                if !matches!(burst.pop(dev, 32), Ok(n) if n > 0) {
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                let pair = burst.pair();
                let frames = burst.frames(dev.mem());
                let copies: Vec<Vec<u8>> = (0..frames.len())
                    .map(|i| {
                        let f = frames.get(i);
                        let mut v = vec![0u8; f.len() as usize];
                        assert!(f.read_all(&mut v));
                        v
                    })
                    .collect();
                burst.release(dev);
                let (mut off, t) = (0, Instant::now());
                while off < copies.len() && t.elapsed() < Duration::from_secs(2) {
                    let rest = &copies[off..];
                    let (taken, res) =
                        filler.fill_pair(dev, pair, rest.len(), |i| Frame::Local(&rest[i]), &mut counters);
                    off += taken;
                    if res.is_err() {
                        break;
                    }
                    if taken == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Frame `seq` of pair `pair`: 64 bytes, the pair and the sequence number after the MACs.
fn frame(pool: &mut PktPool, pair: usize, seq: u32) -> Packet {
    let mut p = pool.alloc().expect("a free buffer");
    let b = pool.set_len(&mut p, 64);
    b.fill(0);
    b[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    b[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, pair as u8]);
    b[12] = pair as u8;
    b[13..17].copy_from_slice(&seq.to_le_bytes());
    p
}

/// What a pair's thread saw: echoes in order, each its own.
#[derive(Debug, Default, PartialEq, Eq)]
struct Echoed {
    sent: u32,
    back: u32,
    out_of_order: u32,
    foreign: u32,
}

/// Sends `n` frames on `h` and takes their echoes, until all are back or `secs` pass.
fn run_pair(h: &mut VirtioUserPair, pool: &mut PktPool, n: u32, secs: u64) -> Echoed {
    let mut e = Echoed::default();
    let (mut tx, mut rx) = (burst_vec(), burst_vec());
    let deadline = Instant::now() + Duration::from_secs(secs);
    while e.back < n && Instant::now() < deadline {
        while e.sent < n && tx.len() < 32 && pool.available() > 64 {
            tx.push(frame(pool, h.pair(), e.sent));
            e.sent += 1;
        }
        let before = tx.len();
        let took = h.tx_burst(pool, &mut tx);
        // What the ring did not take is sent again (same sequence numbers) next time.
        if took < before {
            e.sent -= (before - took) as u32;
            pool.free_all(&mut tx);
        }
        h.rx_burst(pool, &mut rx);
        for p in &rx {
            let b = pool.data(p);
            let seq = u32::from_le_bytes([b[13], b[14], b[15], b[16]]);
            if usize::from(b[12]) != h.pair() {
                e.foreign += 1;
            } else if seq != e.back {
                e.out_of_order += 1;
            } else {
                e.back += 1;
            }
        }
        pool.free_all(&mut rx);
        if took == 0 {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    e
}

/// Polls `h` until it is up or `secs` pass.
fn wait_up(h: &mut VirtioUserPair, pool: &mut PktPool, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while h.link() != LinkState::Up && Instant::now() < deadline {
        h.poll_control(pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    h.link() == LinkState::Up
}

/// Runs each handle (with its pool) on a thread of its own: `n` frames echoed.
fn on_threads(handles: Vec<(VirtioUserPair, PktPool)>, n: u32) -> Vec<(VirtioUserPair, PktPool, Echoed)> {
    let threads: Vec<_> = handles
        .into_iter()
        .map(|(mut h, mut pool)| {
            std::thread::spawn(move || {
                assert!(wait_up(&mut h, &mut pool, 10), "pair {} up", h.pair());
                let e = run_pair(&mut h, &mut pool, n, 20);
                (h, pool, e)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn open(path: &Path, pairs: usize, opts: VirtioUserOptions) -> Vec<(VirtioUserPair, PktPool)> {
    let mut pools: Vec<PktPool> = (0..pairs).map(|_| pool()).collect();
    let handles = VirtioUser::open_pairs(path, &mut pools, opts).unwrap();
    handles.into_iter().zip(pools).collect()
}

fn all_back(e: &Echoed, n: u32) -> bool {
    *e == Echoed { sent: n, back: n, out_of_order: 0, foreign: 0 }
}

/// Two pairs, a thread each, at once: every frame comes back on its own pair, in order.
#[test]
fn each_pair_moves_its_own_frames_on_its_own_thread() {
    const N: u32 = 20_000;
    let path = tmp_sock("two");
    let _be = Echo::start(&path, VhostMode::Listen, 2);
    let handles = open(&path, 2, VirtioUserOptions::default());
    assert_eq!(handles.len(), 2);
    assert!(handles.iter().all(|(h, _)| h.link() == LinkState::Up && h.pairs() == 2));
    for (h, pool, e) in on_threads(handles, N) {
        assert!(all_back(&e, N), "pair {}: {e:?}", h.pair());
        let c = h.counters();
        assert_eq!((c.tx_packets, c.rx_packets, c.resets), (u64::from(N), u64::from(N), 0), "pair {}", h.pair());
        assert!(pool.available() > 0);
    }
}

/// A server-mode port with four pairs on packed rings: the backend connects, and every
/// pair works.
#[test]
fn four_pairs_on_packed_rings_in_server_mode() {
    let path = tmp_sock("four");
    let opts = VirtioUserOptions { server: true, packed: true, ..Default::default() };
    let handles = open(&path, 4, opts);
    let _be = Echo::start(&path, VhostMode::Connect, 8);
    for (h, _, e) in on_threads(handles, 3_000) {
        assert!(h.packed());
        assert!(all_back(&e, 3_000), "pair {}: {e:?}", h.pair());
    }
}

/// The backend goes away: every pair goes down and gives back every buffer it had in
/// flight; a new backend brings the port up once each pair has reset, and frames flow.
#[test]
fn every_pair_resets_when_the_backend_goes_and_comes_back() {
    let path = tmp_sock("restart");
    let be = Echo::start(&path, VhostMode::Listen, 2);
    let mut handles = open(&path, 2, VirtioUserOptions::default());
    let full: Vec<usize> = handles.iter().map(|(_, p)| p.capacity() as usize).collect();
    for (h, pool) in &mut handles {
        assert!(all_back(&run_pair(h, pool, 500, 10), 500));
    }
    drop(be);
    let t = Instant::now();
    while handles.iter().any(|(h, _)| h.link() == LinkState::Up) && t.elapsed() < Duration::from_secs(5) {
        for (h, pool) in &mut handles {
            h.poll_control(pool);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for ((h, pool), full) in handles.iter_mut().zip(&full) {
        assert_eq!(h.link(), LinkState::Down, "pair {} down", h.pair());
        assert_eq!(pool.available(), *full, "pair {}: every buffer back in its pool", h.pair());
        assert_eq!(h.counters().resets, 1);
    }
    let _be = Echo::start(&path, VhostMode::Listen, 2);
    let out = on_threads(handles, 2_000);
    for (h, _, e) in &out {
        assert!(all_back(e, 2_000), "pair {} after the restart: {e:?}", h.pair());
    }
    assert_eq!(out[0].0.port_resets(), 1);
}

/// A fault on one pair (a broken ring) takes the whole port down: the other pair resets
/// too, and the port does not come back before it has (its rings are the backend's again
/// only then).
#[test]
fn a_fault_on_one_pair_resets_the_other_before_the_port_is_back() {
    let path = tmp_sock("fault");
    let _be = Echo::start(&path, VhostMode::Listen, 2);
    let mut handles = open(&path, 2, VirtioUserOptions::default());
    for (h, pool) in &mut handles {
        assert!(all_back(&run_pair(h, pool, 300, 10), 300));
    }
    let [(h0, p0), (h1, p1)] = &mut handles[..] else { unreachable!() };
    h1.fail(p1, "test: a used id out of range");
    assert_eq!(h1.link(), LinkState::Down);
    assert_eq!(h1.counters().resets, 1);
    // Pair 1 keeps calling, pair 0 does not: the port stays down (pair 0's rings still
    // hold its buffers).
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(300) {
        h1.poll_control(p1);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h1.link(), LinkState::Down, "not up before pair 0 has reset");
    assert!(wait_up(h0, p0, 5), "up once pair 0 has reset too");
    assert_eq!(h0.counters().resets, 1, "pair 0 reset on its next call");
    assert!(wait_up(h1, p1, 5));
    for (h, pool) in &mut handles {
        assert!(all_back(&run_pair(h, pool, 300, 10), 300), "pair {} after the fault", h.pair());
    }
}

/// A handshake that fails (a backend of one pair) moves the generation on, so every pair
/// resets its rings before the next try (the backend may have started on them); a backend
/// of two pairs then brings the port up, and frames flow.
#[test]
fn a_failed_handshake_resets_every_pair_before_the_next_try() {
    let path = tmp_sock("failed");
    let opts = VirtioUserOptions { server: true, reply_timeout: Duration::from_secs(2), ..Default::default() };
    let mut handles = open(&path, 2, opts);
    let one = Echo::start(&path, VhostMode::Connect, 1);
    let gen = |handles: &[(VirtioUserPair, PktPool)]| handles[0].0.shared.state.load(Ordering::Acquire) >> 1;
    let t = Instant::now();
    while gen(&handles) == 0 && t.elapsed() < Duration::from_secs(5) {
        for (h, pool) in &mut handles {
            h.poll_control(pool);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(gen(&handles) > 0, "the handshake with a backend of one pair failed, and the generation moved on");
    assert!(handles.iter().all(|(h, _)| h.link() == LinkState::Down));
    drop(one);
    let _two = Echo::start(&path, VhostMode::Connect, 2);
    for (h, _, e) in on_threads(handles, 1_000) {
        assert!(all_back(&e, 1_000), "pair {}: {e:?}", h.pair());
        assert_eq!(h.counters().resets, 0, "pair {}: never up before, nothing to count", h.pair());
    }
}

/// A handle dropped leaves its pair disabled: the port comes back after a restart without
/// waiting for it, and the other pair works.
#[test]
fn a_dropped_pair_does_not_hold_the_port_down() {
    let path = tmp_sock("dropped");
    let be = Echo::start(&path, VhostMode::Listen, 2);
    let mut handles = open(&path, 2, VirtioUserOptions::default());
    drop(handles.pop());
    let (h, pool) = &mut handles[0];
    assert!(all_back(&run_pair(h, pool, 300, 10), 300));
    drop(be);
    let t = Instant::now();
    while h.link() == LinkState::Up && t.elapsed() < Duration::from_secs(5) {
        h.poll_control(pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    let _be = Echo::start(&path, VhostMode::Listen, 2);
    assert!(wait_up(h, pool, 5), "up without the dropped pair");
    assert!(all_back(&run_pair(h, pool, 300, 10), 300));
}

/// What is refused, with the reason: no pairs, too many, and a backend that takes fewer.
#[test]
fn pair_counts_out_of_range_and_a_backend_with_fewer_are_refused() {
    let path = tmp_sock("refused");
    let e = VirtioUser::open_pairs(&path, &mut [], VirtioUserOptions::default()).unwrap_err().to_string();
    assert_eq!(e, "virtio-user options: 0 queue pairs: a port takes 1 to 16");
    let mut many: Vec<PktPool> = (0..17)
        .map(|_| PktPool::new(&PoolOptions { nbufs: 64, hugedir: None, ..Default::default() }).unwrap())
        .collect();
    let e = VirtioUser::open_pairs(&path, &mut many, VirtioUserOptions::default()).unwrap_err().to_string();
    assert_eq!(e, "virtio-user options: 17 queue pairs: a port takes 1 to 16");
    let _be = Echo::start(&path, VhostMode::Listen, 1);
    let mut pools = vec![pool(), pool()];
    let full = pools[0].available();
    let opts = VirtioUserOptions { connect_timeout: Duration::from_secs(2), ..Default::default() };
    let e = VirtioUser::open_pairs(&path, &mut pools, opts).unwrap_err().to_string();
    assert!(e.contains("it takes 1 queue pair(s), this port has 2"), "{e}");
    drop(pools.remove(1));
    assert_eq!(pools[0].available(), full, "no buffer lost to the failed open");
}
