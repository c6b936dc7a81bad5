// The control server with a real switch worker behind it, called through the one client:
// replies carry codes and the version, and clients of every version get a clear answer.
use super::*;
use crate::config::PortConfig;
use crate::switch::Switch;
use fastpath_host::proto::{Client, ClientError, VERSION};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// fastpathd's control loop on a fresh socket, with a worker (`None`: the worker is gone).
fn server(name: &str, worker: bool) -> Server {
    let path = std::env::temp_dir().join(format!("fastpath-ctl-{name}-{}.sock", std::process::id()));
    let listener = bind(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    if worker {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || crate::worker::run(Switch::new(&["br0".into()], 300), &rx, &stop, false));
    }
    std::thread::spawn(move || serve(&listener, &tx, &PortDefaults::default()));
    Server { path, stop }
}

fn call(s: &Server, req: &Request) -> Result<Response, ClientError> {
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
