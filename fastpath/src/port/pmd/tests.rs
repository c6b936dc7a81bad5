// Tests of the poll-mode driver port over a real netlib driver that needs no device:
// netlib's vhost-user backend, with netlib's virtio-user frontend on the other end.
//! PMD port tests.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use netlib::pool::burst_vec;
use netlib::vhost::{FrameBuf, VhostBackend, VhostMode};
use netlib::virtio_user::{VirtioUser, VirtioUserOptions};

use super::*;

const N: u32 = 100;

fn frame(seq: u32) -> Vec<u8> {
    let len = 60 + (seq as usize * 13) % 1400;
    let mut f: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq) as u8).collect();
    f[..4].copy_from_slice(&seq.to_le_bytes());
    f
}

fn small_pool(nbufs: u32) -> PktPool {
    PktPool::new(&PoolOptions { nbufs, hugedir: None, ..Default::default() }).unwrap()
}

/// A virtio-user frontend in a thread: sends `N` frames once `go` says so, then takes
/// frames until `N` came back or 10 s pass; returns them.
fn frontend(path: std::path::PathBuf, go: mpsc::Receiver<()>) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut pool = small_pool(1024);
        let mut fe = VirtioUser::open(&path, &mut pool, VirtioUserOptions::default()).unwrap();
        go.recv_timeout(Duration::from_secs(10)).unwrap();
        let mut burst = burst_vec();
        for seq in 0..N {
            let mut p = pool.alloc().unwrap();
            let f = frame(seq);
            pool.set_len(&mut p, f.len()).copy_from_slice(&f);
            burst.push(p);
            while !burst.is_empty() {
                fe.tx_burst(&mut pool, &mut burst);
            }
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < N as usize && Instant::now() < deadline {
            fe.rx_burst(&mut pool, &mut burst);
            got.extend(burst.iter().map(|p| pool.data(p).to_vec()));
            pool.free_all(&mut burst);
        }
        got
    })
}

/// Frames a driver received reach the switch intact and in order, as spans of the pool;
/// frames the switch sends are copied into the pool and out through the driver; a frame
/// too big for a pool buffer is dropped and counted; every buffer comes back.
#[test]
fn frames_cross_a_driver_both_ways_and_the_pool_gets_every_buffer_back() {
    let path = std::env::temp_dir().join(format!("fp-test-pmd-{}.sock", std::process::id()));
    let be = VhostBackend::open(&path, VhostMode::Listen).unwrap();
    let pool = small_pool(256);
    let full = pool.available();
    let mut port = PmdPort::new(be, pool);
    assert_eq!(port.link(), LinkState::Down);
    let (go_tx, go_rx) = mpsc::channel();
    let fe = frontend(path.clone(), go_rx);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !port.poll() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(port.link(), LinkState::Up, "the frontend's rings came up");
    go_tx.send(()).unwrap();
    let mut seen = 0;
    let mut echo: Vec<FrameBuf> = Vec::new();
    while seen < N && Instant::now() < deadline {
        port.poll();
        let n = port.recv();
        let frames = port.frames();
        assert_eq!(frames.len(), n);
        for i in 0..n {
            let f = frames.get(i);
            let mut b = vec![0; f.len() as usize];
            assert!(f.read_all(&mut b));
            assert_eq!(b, frame(seen), "frame {seen} intact and in order");
            let mut fb = FrameBuf::with_capacity(2048);
            assert!(fb.fill_from(&b));
            echo.push(fb);
            seen += 1;
        }
        port.release();
    }
    assert_eq!(seen, N, "every frame the frontend sent");
    for chunk in echo.chunks(BURST) {
        let picks: Vec<u8> = (0..chunk.len() as u8).collect();
        port.send(&Frames::Local(chunk), &picks);
    }
    let mut big = FrameBuf::with_capacity(4096);
    assert!(big.fill_from(&[0xab; 3000]));
    port.send(&Frames::Local(std::slice::from_ref(&big)), &[0]);
    let got = fe.join().unwrap();
    assert_eq!(got.len(), N as usize, "every frame came back");
    for (seq, g) in got.iter().enumerate() {
        assert_eq!(*g, frame(seq as u32), "frame {seq} back intact and in order");
    }
    let c = port.counters();
    let bytes: u64 = (0..N).map(|s| frame(s).len() as u64).sum();
    assert_eq!((c.tx_packets, c.tx_bytes), (u64::from(N), bytes));
    assert_eq!((c.tx_dropped, c.drop_too_big, c.drop_ring_full), (1, 1, 0));
    port.release();
    assert_eq!(port.pool.available(), full, "every buffer back in the pool");
    let _ = std::fs::remove_file(&path);
}

/// A VF that is not there: the error names the device and says what fastpathd needs.
#[test]
fn a_missing_vf_is_an_error_naming_it() {
    let e = vf("0000:ff:1f.7").unwrap_err().to_string();
    assert!(e.contains("0000:ff:1f.7") && e.contains("fastpathctl vf bind 0000:ff:1f.7"), "{e}");
}
