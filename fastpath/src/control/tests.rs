// The control server with a real switch worker behind it, called through the one client:
// replies carry codes and the version, clients of every version get a clear answer, ports are
// saved as they change, and a handover stops the worker and the server.
use super::*;
use crate::config::PortConfig;
use crate::state::{Origin, StateFile};
use crate::switch::Switch;
use fastpath_host::proto::{Client, ClientError, VERSION};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

struct TestServer {
    path: PathBuf,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    handed_over: Arc<AtomicBool>,
    served: std::thread::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// fastpathd's control loop on a fresh socket, its state in a fresh directory, with a worker
/// (`false`: the worker is gone).
fn server(name: &str, worker: bool) -> TestServer {
    let path = std::env::temp_dir().join(format!("fastpath-ctl-{name}-{}.sock", std::process::id()));
    let dir = std::env::temp_dir().join(format!("fastpath-ctl-{name}-{}.d", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = bind(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let first_frame = Arc::new(FirstFrame::since(std::time::Instant::now()));
    let (tx, rx) = channel();
    if worker {
        let (stop, first) = (Arc::clone(&stop), Arc::clone(&first_frame));
        std::thread::spawn(move || {
            crate::worker::run(Switch::new(&["br0".into()], 300), &rx, &stop, crate::worker::Idle::Spin, &first);
        });
    }
    let handed_over = Arc::new(AtomicBool::new(false));
    let server = Server {
        worker: tx,
        defaults: PortDefaults::default(),
        ports: Durable::new(StateFile::in_dir(&dir), vec![]),
        first_frame,
        took_over_from: None,
        core: None,
        cores: Vec::new(),
        handed_over: Arc::clone(&handed_over),
    };
    let served = std::thread::spawn(move || serve(listener, server));
    TestServer { path, dir, stop, handed_over, served }
}

fn call(s: &TestServer, req: &Request) -> Result<Response, ClientError> {
    Client::new(&s.path, Duration::from_secs(5)).call(req)
}

#[test]
fn refusals_carry_their_code() {
    let s = server("codes", true);
    let r = call(&s, &Request::Bridges).unwrap();
    assert_eq!((r.version, r.bridges), (Some(VERSION), Some(vec!["br0".to_string()])));
    let e = call(&s, &Request::DelPort { name: "nope".into() }).unwrap_err();
    assert_eq!((e.code(), e.to_string()), (Some(ErrorCode::NoSuchPort), "port 'nope' does not exist".into()));
    let add = Request::AddPort(PortConfig::new("a", "br9", s.path.with_extension("a")));
    let e = call(&s, &add).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoSuchBridge));
    assert_eq!(e.to_string(), "bridge 'br9' does not exist (bridges: br0)");
    assert_eq!(call(&s, &Request::List).unwrap().ports.map(|p| p.len()), Some(0));
}

#[test]
fn clients_of_other_versions_get_a_clear_answer() {
    let s = server("versions", true);
    let newer = Client::new(&s.path, Duration::from_secs(5)).with_version(VERSION + 1);
    let e = newer.call(&Request::List).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::VersionMismatch));
    assert_eq!(
        e.to_string(),
        format!("fastpathd speaks control protocol {VERSION}, this client {}: upgrade fastpathd", VERSION + 1)
    );
    // A client from before versions (raw JSON, as the tests and `cargo xtask demo` write).
    let mut conn = UnixStream::connect(&s.path).unwrap();
    conn.write_all(b"{\"cmd\":\"bridges\"}\n{\"cmd\":\"del-port\",\"name\":\"x\"}\n{\"cmd\":\"explode\"}\n").unwrap();
    let lines: Vec<serde_json::Value> =
        BufReader::new(conn).lines().take(3).map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert_eq!(lines[0], serde_json::json!({"ok": true, "version": VERSION, "bridges": ["br0"]}));
    assert_eq!(
        lines[1],
        serde_json::json!({"ok": false, "version": VERSION, "code": "no_such_port", "error": "port 'x' does not exist"})
    );
    assert_eq!(lines[2]["code"], "bad_request");
    assert!(lines[2]["error"].as_str().unwrap().starts_with("bad request: unknown variant `explode`"), "{}", lines[2]);
}

#[test]
fn a_missing_worker_is_an_internal_error() {
    let s = server("gone", false);
    let e = call(&s, &Request::List).unwrap_err();
    assert_eq!((e.code(), e.to_string()), (Some(ErrorCode::Internal), "the switch worker is not running".into()));
}

#[test]
fn ports_are_saved_before_the_answer_and_an_unsavable_port_is_not_kept() {
    let s = server("durable", true);
    let add = |name: &str| Request::AddPort(PortConfig::new(name, "br0", s.dir.join(format!("{name}.sock"))));
    call(&s, &add("a")).unwrap();
    call(&s, &add("b")).unwrap();
    let file = StateFile::in_dir(&s.dir);
    let saved = |f: &StateFile| {
        f.load().unwrap().unwrap().ports.into_iter().map(|p| (p.port.name, p.origin)).collect::<Vec<_>>()
    };
    assert_eq!(saved(&file), [("a".to_string(), Origin::Runtime), ("b".to_string(), Origin::Runtime)]);
    call(&s, &Request::DelPort { name: "a".into() }).unwrap();
    assert_eq!(saved(&file), [("b".to_string(), Origin::Runtime)]);
    let st = call(&s, &Request::Status).unwrap().status.unwrap();
    assert_eq!((st.pid, st.ports, st.state_file), (std::process::id(), 1, Some(file.path().to_path_buf())));
    // The state file can no longer be written (its name is a directory now): refused, not held.
    std::fs::remove_file(file.path()).unwrap();
    std::fs::create_dir(file.path()).unwrap();
    let e = call(&s, &add("c")).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Internal));
    assert!(e.to_string().starts_with(&format!("port 'c' not added: state file {}: ", file.path().display())), "{e}");
    let ports = call(&s, &Request::List).unwrap().ports.unwrap();
    assert_eq!(ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["b"]);
    assert!(!s.dir.join("c.sock").exists(), "the refused port's socket is gone");
}

#[test]
fn a_handover_stops_the_worker_answers_with_the_status_and_ends_the_server() {
    let s = server("handover", true);
    call(&s, &Request::AddPort(PortConfig::new("a", "br0", s.dir.join("a.sock")))).unwrap();
    assert!(s.dir.join("a.sock").exists());
    let st = take_over(&s.path, Duration::from_secs(5)).unwrap();
    assert_eq!((st.pid, st.ports), (std::process::id(), 1));
    assert!(s.handed_over.load(std::sync::atomic::Ordering::Relaxed));
    // The worker dropped the switch: the port's socket is gone; the state still has it.
    assert!(!s.dir.join("a.sock").exists());
    assert_eq!(StateFile::in_dir(&s.dir).load().unwrap().unwrap().ports.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !s.served.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(s.served.is_finished(), "the server kept serving after the handover");
    assert!(call(&s, &Request::List).is_err(), "the old listener still answers");
}

/// A control socket whose switch is dying (still listening for a moment after `kill -9`) is
/// taken over once it goes; one whose switch lives is refused after the grace.
#[test]
fn bind_waits_for_a_dying_switch_and_refuses_a_live_one() {
    let path = std::env::temp_dir().join(format!("fastpath-ctl-dying-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let dying = UnixListener::bind(&path).unwrap();
    let gone = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(60));
        drop(dying);
    });
    let l = bind_unless_live(&path, Duration::from_secs(5)).expect("the dying switch's socket is taken over");
    gone.join().unwrap();
    let t = std::time::Instant::now();
    let e = bind_unless_live(&path, Duration::from_millis(100)).unwrap_err();
    assert!(e.to_string().contains("is in use: is another fastpathd running?"), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(100), "refused only after the grace");
    drop(l);
    let _ = std::fs::remove_file(&path);
}

/// How many of this process's fds are capture rings.
fn capture_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("fastpath-capture"))
        .count()
}

/// [`capture_fds`] once it is `want`, or after 5 s.
fn capture_fds_settle(want: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while capture_fds() != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    capture_fds()
}

#[test]
fn a_capture_hands_its_ring_over_and_ends_when_the_client_goes() {
    use crate::capture::session::Session;
    use fastpath_host::proto::{CaptureSpec, Direction};
    let s = server("capture", true);
    call(&s, &Request::AddPort(PortConfig::new("a", "br0", s.dir.join("a.sock")))).unwrap();
    let spec = |port: &str, slots| CaptureSpec { port: port.into(), direction: Direction::Both, snaplen: 128, slots };
    let e = Session::start(&s.path, &spec("nope", 8), Duration::from_secs(5)).err().unwrap();
    assert_eq!(e.to_string(), "port 'nope' does not exist");
    let e = Session::start(&s.path, &spec("a", 0), Duration::from_secs(5)).err().unwrap();
    assert!(e.to_string().contains("capture ring slots 0"), "{e}");
    let before = capture_fds();
    let session = Session::start(&s.path, &spec("a", 8), Duration::from_secs(5)).unwrap();
    // The switch's ring and ours (once the server closed the copy it sent); the control
    // socket still answers meanwhile.
    assert_eq!(capture_fds_settle(before + 2), before + 2);
    assert_eq!(call(&s, &Request::List).unwrap().ports.map(|p| p.len()), Some(1));
    drop(session);
    assert_eq!(capture_fds_settle(before), before, "the switch freed the ring when the client went");
}
