// A C program on libfastpath_net across its switch's restart: its link goes down and comes
// back by itself, with no error from any call, its pool, held packets and counters kept.
//! The link as a C program sees it.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{build_shared, c_test, manifest};
use netlib::pool::{burst_vec, PoolOptions};
use netlib::vhost::{VhostBackend, VhostMode};
use netlib::{PktPool, Port};

/// Frames the program sends before and after the restart.
const FRAMES: u64 = 200;

/// A listening vhost-user backend (what fastpathd's ports are) polled in a thread, counting
/// the frames it receives; stopped, like a killed switch, when dropped.
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn listen(path: &Path, got: &Arc<AtomicU64>) -> Self {
        let mut be = VhostBackend::open(path, VhostMode::Listen).expect("backend");
        let (stop, got) = (Arc::new(AtomicBool::new(false)), Arc::clone(got));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut pool =
                PktPool::new(&PoolOptions { nbufs: 512, hugedir: None, ..Default::default() }).expect("pool");
            let mut pkts = burst_vec();
            while !flag.load(Ordering::Relaxed) {
                be.poll_control(&mut pool);
                got.fetch_add(be.rx_burst(&mut pool, &mut pkts) as u64, Ordering::Relaxed);
                pool.free_all(&mut pkts);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The program's next line of output (panics at its end).
fn line(out: &mut Lines<BufReader<ChildStdout>>) -> String {
    out.next().expect("link_check ended early").expect("reading link_check's output")
}

fn wait_for(got: &AtomicU64, n: u64) -> bool {
    let t = Instant::now();
    while got.load(Ordering::Relaxed) < n && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    got.load(Ordering::Relaxed) >= n
}

#[test]
fn a_c_program_rides_out_its_switchs_restart() {
    const TEST: &str = "a_c_program_rides_out_its_switchs_restart";
    let Some((lib, tmp)) = c_test(TEST, "link") else { return };
    let bin = tmp.join("link_check");
    build_shared(&manifest().join("tests").join("c").join("link_check.c"), &bin, &lib);
    let sock = tmp.join("sw.sock");
    let got = Arc::new(AtomicU64::new(0));
    let be = Backend::listen(&sock, &got);
    let mut child = Command::new(&bin)
        .arg(format!("vu:{}", sock.display()))
        .arg(FRAMES.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running link_check");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(line(&mut out), format!("sent {FRAMES}"));
    assert!(wait_for(&got, FRAMES), "the backend got {} of {FRAMES} frames", got.load(Ordering::Relaxed));
    // The switch dies; its socket file stays, as a killed fastpathd's does.
    drop(be);
    assert_eq!(line(&mut out), "down");
    std::thread::sleep(Duration::from_millis(300));
    let _be = Backend::listen(&sock, &got);
    let up = line(&mut out);
    let ms: f64 = up.strip_prefix("up ").and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("{up}"));
    assert_eq!(line(&mut out), format!("sent {FRAMES}"));
    let result = line(&mut out);
    let arrived = wait_for(&got, 2 * FRAMES);
    drop(child.stdin.take());
    let status = child.wait().expect("link_check");
    assert!(arrived, "the backend got {} of {} frames; link_check: {result}", got.load(Ordering::Relaxed), 2 * FRAMES);
    eprintln!("link_check: down for {ms:.1} ms (300 ms of it without a backend): {result}");
    assert!(status.success(), "link_check: {status}");
    // Down for the 300 ms without a backend and at most the back-off's cap (128 ms) more.
    assert!((300.0..300.0 + 128.0 + 200.0).contains(&ms), "down for {ms} ms");
    for want in [
        "\"held\":1,\"held_after\":1",
        "\"tx_while_down\":0,\"errors\":0",
        &format!("\"resets\":1,\"tx_packets\":{}", 2 * FRAMES),
    ] {
        assert!(result.contains(want), "expected {want} in {result}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
