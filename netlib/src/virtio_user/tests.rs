// Tests of the virtio-user port against our own vhost-user backend: the wrong pool, running
// out of fds at reconnect, and a client across its backend's restart.
//! virtio-user tests.

use super::backoff::RETRY_MAX;
use super::*;
use crate::pool::{burst_vec, PoolOptions};
use crate::vhost::{VhostBackend, VhostMode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn tmp_sock(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fp-test-vu-{tag}-{}.sock", std::process::id()))
}

fn small_pool() -> PktPool {
    PktPool::new(&PoolOptions { nbufs: 512, hugedir: None, ..Default::default() }).unwrap()
}

/// A thread polling one of our vhost-user backends, stopped and joined on drop.
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// Runs `body` in a thread until the `Backend` is dropped (`body` polls until the flag
    /// it is given is set).
    fn spawn(body: impl FnOnce(&AtomicBool) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || body(&stop2));
        Self { stop, thread: Some(thread) }
    }

    /// A backend connecting to `path` (a server-mode frontend); returns once it has
    /// connected (the connection then waits in the frontend's listener until it accepts).
    fn connect(path: &Path) -> Self {
        let (connected_tx, connected_rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        let be = Self::spawn(move |stop| {
            let mut be = VhostBackend::open(&path, VhostMode::Connect).unwrap();
            let mut told = false;
            while !stop.load(Ordering::Relaxed) {
                be.poll();
                if !told && be.connected() {
                    told = connected_tx.send(()).is_ok();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        connected_rx.recv_timeout(Duration::from_secs(5)).expect("backend connected");
        be
    }

    /// A backend listening on `path` (as fastpathd's ports do), counting in `got` the
    /// frames it receives.
    fn listen(path: &Path, got: Arc<std::sync::atomic::AtomicU64>) -> Self {
        let mut be = VhostBackend::open(path, VhostMode::Listen).unwrap();
        Self::spawn(move |stop| {
            let mut pool = small_pool();
            let mut pkts = burst_vec();
            while !stop.load(Ordering::Relaxed) {
                be.poll_control(&mut pool);
                let n = be.rx_burst(&mut pool, &mut pkts);
                got.fetch_add(n as u64, Ordering::Relaxed);
                pool.free_all(&mut pkts);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
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

/// Polls `fe` until it is up or `secs` pass.
fn wait_up(fe: &mut VirtioUser, pool: &mut PktPool, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while fe.link() != LinkState::Up && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        fe.poll_control(pool);
    }
    fe.link() == LinkState::Up
}

/// A call with a pool other than the port's own is refused, counted, and touches
/// neither pool: not even the control path, which would post the wrong pool's buffers.
#[test]
fn another_pool_is_refused_and_counted() {
    let path = tmp_sock("wrongpool");
    let (mut own, mut other) = (small_pool(), small_pool());
    let opts = VirtioUserOptions { server: true, ..Default::default() };
    let mut fe = VirtioUser::open(&path, &mut own, opts).unwrap();
    let _be = Backend::connect(&path);
    let full = other.available();
    fe.poll_control(&mut other);
    assert_eq!(fe.link(), LinkState::Down, "no handshake on the wrong pool");
    assert_eq!(other.available(), full);
    assert!(wait_up(&mut fe, &mut own, 5), "up on its own pool");
    let mut pkts = burst_vec();
    other.alloc_bulk(&mut pkts, 4);
    assert_eq!(fe.tx_burst(&mut other, &mut pkts), 0);
    assert_eq!(pkts.len(), 4, "the packets stay with the caller");
    other.free_all(&mut pkts);
    assert_eq!(fe.rx_burst(&mut other, &mut pkts), 0);
    assert!(!fe.flush_tx(&mut other, Duration::ZERO));
    assert!(!fe.wait_rx(&mut other, Duration::ZERO));
    assert_eq!(other.available(), full);
    assert_eq!(fe.counters().wrong_pool, 5);
    assert_eq!(fe.link(), LinkState::Up, "a wrong call does not take the port down");
    own.alloc_bulk(&mut pkts, 4);
    assert_eq!(fe.tx_burst(&mut own, &mut pkts), 4, "its own pool still works");
}

/// Set in the child process that runs the body of the test below.
const FD_CHILD: &str = "NETLIB_TEST_OUT_OF_FDS_CHILD";

/// A server-mode frontend that finds no free fd when a backend comes (at accept, or
/// during the handshake) stays down without panicking, and comes up once fds are back.
/// The body runs in a child process (under `prlimit`), since it takes every fd the
/// process may have.
#[test]
fn reconnect_survives_running_out_of_fds() {
    if std::env::var_os(FD_CHILD).is_some() {
        out_of_fds_body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=512:512")
        .arg(exe)
        .args(["--exact", "virtio_user::tests::reconnect_survives_running_out_of_fds", "--nocapture"])
        .env(FD_CHILD, "1")
        .output()
        .expect("running prlimit (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child: {}\n{text}", out.status);
    assert!(text.contains("1 passed"), "the child ran the test: {text}");
}

fn out_of_fds_body() {
    let path = tmp_sock("nofds");
    let mut pool = small_pool();
    let opts = VirtioUserOptions { server: true, reply_timeout: Duration::from_secs(2), ..Default::default() };
    let mut fe = VirtioUser::open(&path, &mut pool, opts).unwrap();
    let backend = Backend::connect(&path);
    // The backend's connection waits in our listener's backlog; now take every fd.
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    assert!(!hog.is_empty());
    fe.poll_control(&mut pool);
    assert_eq!(fe.link(), LinkState::Down, "accept found no fd");
    // One fd: enough to accept, not for the fds the handshake shares.
    hog.pop();
    std::thread::sleep(RETRY_MAX + Duration::from_millis(10));
    fe.poll_control(&mut pool);
    assert_eq!(fe.link(), LinkState::Down, "the backend could not take our memory's fds");
    drop(hog);
    let up = wait_up(&mut fe, &mut pool, 10);
    drop(backend);
    assert!(up, "up once fds are back");
}

/// Sends one burst of `n` frames on `fe` (each a fresh buffer); returns how many it took.
fn send(fe: &mut VirtioUser, pool: &mut PktPool, n: usize) -> usize {
    let mut pkts = burst_vec();
    pool.alloc_bulk(&mut pkts, n);
    for p in &mut pkts {
        pool.set_len(p, 60).fill(0xab);
    }
    let took = fe.tx_burst(pool, &mut pkts);
    pool.free_all(&mut pkts);
    took
}

/// The mode the hook's containers use (a client of fastpathd): when the backend goes away
/// the port goes down without an error to its owner, keeps its pool and counters, and is up
/// again soon after a new backend listens on the same path (the back-off starts short);
/// frames then flow again.
#[test]
fn client_comes_back_when_its_backend_is_restarted() {
    use std::sync::atomic::AtomicU64;
    let path = tmp_sock("restart");
    let _ = std::fs::remove_file(&path);
    let got = Arc::new(AtomicU64::new(0));
    let be = Backend::listen(&path, Arc::clone(&got));
    let mut pool = small_pool();
    let full = pool.available();
    let mut fe = VirtioUser::open(&path, &mut pool, VirtioUserOptions::default()).unwrap();
    assert_eq!(fe.link(), LinkState::Up);
    let sent_before = send(&mut fe, &mut pool, 16);
    assert_eq!(sent_before, 16);
    let t = Instant::now();
    while got.load(Ordering::Relaxed) < 16 && t.elapsed() < Duration::from_secs(5) {
        fe.poll_control(&mut pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(got.load(Ordering::Relaxed), 16, "frames cross before the restart");
    // The backend dies (its socket file stays behind, as a killed switch's does).
    drop(be);
    let t = Instant::now();
    while fe.link() == LinkState::Up && t.elapsed() < Duration::from_secs(5) {
        fe.poll_control(&mut pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(fe.link(), LinkState::Down, "the port noticed its backend went away");
    // Down: nothing is taken, nothing is an error, and every buffer is back in the pool.
    assert_eq!(send(&mut fe, &mut pool, 8), 0);
    let mut rx = burst_vec();
    assert_eq!(fe.rx_burst(&mut pool, &mut rx), 0);
    // Tries fail for a while (no backend), growing the back-off to its cap.
    let t = Instant::now();
    while t.elapsed() < RETRY_MAX * 3 {
        fe.poll_control(&mut pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pool.available(), full, "every buffer is back in the pool while down");
    let _be = Backend::listen(&path, Arc::clone(&got));
    let back = Instant::now();
    while fe.link() != LinkState::Up && back.elapsed() < Duration::from_secs(5) {
        fe.poll_control(&mut pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = back.elapsed();
    assert_eq!(fe.link(), LinkState::Up, "up again once a backend listens");
    assert!(took <= RETRY_MAX + Duration::from_millis(100), "up {took:?} after the backend came back");
    assert_eq!(send(&mut fe, &mut pool, 16), 16);
    let t = Instant::now();
    while got.load(Ordering::Relaxed) < 32 && t.elapsed() < Duration::from_secs(5) {
        fe.poll_control(&mut pool);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(got.load(Ordering::Relaxed), 32, "frames cross after the restart");
    let c = fe.counters();
    assert_eq!((c.resets, c.tx_packets), (1, 32), "counters kept across the restart: {c:?}");
}
