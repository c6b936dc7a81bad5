// Tests of the virtio-user port against our own vhost-user backend: the wrong pool, and
// running out of fds at reconnect.
//! virtio-user tests.

use super::reconnect::RETRY_EVERY;
use super::*;
use crate::pool::{burst_vec, PoolOptions};
use crate::vhost::{VhostBackend, VhostMode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn tmp_sock(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fp-test-vu-{tag}-{}.sock", std::process::id()))
}

fn small_pool() -> PktPool {
    PktPool::new(&PoolOptions { nbufs: 512, hugedir: None }).unwrap()
}

/// Our vhost-user backend in a thread, connecting to `path` (a server-mode frontend).
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// Starts it and waits until it has connected (the connection then waits in the
    /// frontend's listener until the frontend accepts).
    fn connect(path: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (connected_tx, connected_rx) = std::sync::mpsc::channel();
        let (path, stop2) = (path.to_path_buf(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut be = VhostBackend::open(&path, VhostMode::Connect).unwrap();
            let mut told = false;
            while !stop2.load(Ordering::Relaxed) {
                be.poll();
                if !told && be.connected() {
                    told = connected_tx.send(()).is_ok();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        connected_rx.recv_timeout(Duration::from_secs(5)).expect("backend connected");
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
    std::thread::sleep(RETRY_EVERY + Duration::from_millis(10));
    fe.poll_control(&mut pool);
    assert_eq!(fe.link(), LinkState::Down, "the backend could not take our memory's fds");
    drop(hog);
    let up = wait_up(&mut fe, &mut pool, 10);
    drop(backend);
    assert!(up, "up once fds are back");
}
