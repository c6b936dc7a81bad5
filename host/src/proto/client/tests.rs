// The control client against small switches on real unix sockets: this version, one from
// before versions, a newer one, one that refuses, one that never answers, one that babbles.
use super::*;
use crate::proto::fake::FakeSocket;
use crate::proto::{PortConfig, Served};

fn switch(name: &str, answer: impl Fn(&str) -> Option<String> + Send + 'static) -> FakeSocket {
    FakeSocket::answering(name, answer)
}

/// This switch: what fastpathd's control loop does with a line, before the worker.
fn this_switch(served: Served) -> impl Fn(&str) -> Option<String> {
    move |line| {
        Some(match served.decode(line) {
            Ok((_, Request::Bridges)) => {
                Response { bridges: Some(vec!["br0".into()]), version: Some(served.newest), ..Response::ok() }.to_line()
            }
            Ok((_, Request::DelPort { name })) => {
                Response::error(ErrorCode::NoSuchPort, format!("port '{name}' does not exist")).to_line()
            }
            Ok(_) => Response::ok().to_line(),
            Err(refusal) => refusal.to_line(),
        })
    }
}

/// A switch from before versions: it parsed the whole line as a request, with unknown
/// fields refused, and answered without `version` or `code`.
fn unversioned_switch(line: &str) -> String {
    let r = match serde_json::from_str::<Request>(line) {
        Ok(_) => Response { ok: true, ..Response::default() },
        Err(e) => Response { ok: false, error: Some(format!("bad request: {e}")), ..Response::default() },
    };
    r.to_line()
}

fn client(path: &Path) -> Client {
    Client::new(path, Duration::from_millis(300))
}

fn add_port() -> Request {
    Request::AddPort(PortConfig { uid: Some(1000), ..PortConfig::new("a", "br0", "/tmp/a.sock") })
}

#[test]
fn calls_this_switch_and_reads_its_codes() {
    let p = switch("this", this_switch(Served::THIS));
    let r = client(p.path()).call(&Request::Bridges).unwrap();
    assert_eq!((r.ok, r.version, r.bridges), (true, Some(VERSION), Some(vec!["br0".to_string()])));
    client(p.path()).call(&add_port()).unwrap();
    let e = client(p.path()).call(&Request::DelPort { name: "x".into() }).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoSuchPort));
    assert_eq!(e.to_string(), "port 'x' does not exist");
}

#[test]
fn a_switch_from_before_versions_is_named_as_protocol_1() {
    let p = switch("v1", |line| Some(unversioned_switch(line)));
    // It refuses our `version` field as unknown ...
    let raw = unversioned_switch(&encode_request(&add_port(), VERSION).unwrap());
    assert!(raw.contains("bad request: unknown field `version`"), "{raw}");
    // ... which the client reads as what it is.
    for req in [add_port(), Request::DelPort { name: "a".into() }, Request::List, Request::Bridges, Request::Status] {
        let e = client(p.path()).call(&req).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::VersionMismatch), "{req:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "fastpathd speaks control protocol 1 (from before versions), this client {}: upgrade fastpathd",
                req.min_version()
            )
        );
    }
}

#[test]
fn a_newer_client_is_told_to_upgrade_fastpathd() {
    let p = switch("newer-client", this_switch(Served::THIS));
    let e = client(p.path()).with_version(VERSION + 1).call(&Request::List).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::VersionMismatch));
    assert_eq!(
        e.to_string(),
        format!("fastpathd speaks control protocol {VERSION}, this client {}: upgrade fastpathd", VERSION + 1)
    );
}

#[test]
fn a_newer_switch_tells_this_client_to_upgrade() {
    let p = switch("newer-switch", this_switch(Served { oldest: VERSION + 1, newest: VERSION + 1 }));
    // (A request of the newest protocol: `mirrors`.)
    let e = client(p.path()).call(&Request::Mirrors).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::VersionMismatch));
    assert_eq!(
        e.to_string(),
        format!(
            "fastpathd speaks control protocol {}, this client {}: upgrade this client",
            VERSION + 1,
            Request::Mirrors.min_version()
        )
    );
    // One that still serves this version answers.
    let p2 = switch("newer-switch-compatible", this_switch(Served { oldest: 1, newest: VERSION + 1 }));
    assert_eq!(client(p2.path()).call(&Request::Bridges).unwrap().version, Some(VERSION + 1));
}

#[test]
fn transport_failures_say_what_happened() {
    let nowhere = std::env::temp_dir().join(format!("fastpath-proto-nowhere-{}.sock", std::process::id()));
    let e = client(&nowhere).call(&Request::List).unwrap_err().to_string();
    assert!(e.starts_with("not answering (") && e.ends_with("): is fastpathd running?"), "{e}");
    let p = switch("silent", |_| None);
    let e = client(p.path()).call(&Request::List).unwrap_err().to_string();
    assert!(e.starts_with("no answer within 300ms: "), "{e}");
    let p2 = switch("babble", |_| Some("garbage\n".into()));
    let e = client(p2.path()).call(&Request::List).unwrap_err().to_string();
    assert!(e.starts_with("bad answer 'garbage': "), "{e}");
    let p3 = switch("mute", |_| Some(String::new()));
    let e = client(p3.path()).call(&Request::List).unwrap_err().to_string();
    assert_eq!(e, "closed the connection without answering");
}

#[test]
fn old_requests_still_drive_a_switch_of_protocol_2_and_new_ones_say_it_is_too_old() {
    let v2 = Served { oldest: 1, newest: 2 };
    let p = switch("v2", move |line| {
        Some(match v2.decode(line) {
            Ok(_) => Response { version: Some(2), ..Response::ok() }.to_line(),
            Err(refusal) => refusal.to_line(),
        })
    });
    assert_eq!(client(p.path()).call(&add_port()).unwrap().version, Some(2));
    let e = client(p.path()).call(&Request::Handover).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::VersionMismatch));
    assert_eq!(e.to_string(), "fastpathd speaks control protocol 2, this client 3: upgrade fastpathd");
}

#[test]
fn a_port_with_labels_needs_protocol_4_and_goes_to_a_switch_of_3_without_them() {
    let p = switch("v3", this_switch(Served { oldest: 1, newest: 3 }));
    let Request::AddPort(port) = add_port() else { unreachable!() };
    let labelled = PortConfig { container_name: Some("web".into()), pod_namespace: Some("ns".into()), ..port };
    let e = client(p.path()).call(&Request::AddPort(labelled.clone())).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::VersionMismatch));
    assert_eq!(e.to_string(), "fastpathd speaks control protocol 3, this client 4: upgrade fastpathd");
    client(p.path()).call(&Request::AddPort(labelled.clone().without_labels())).unwrap();
    // This switch takes them, and a port without them is the request an older client sent.
    let this = switch("v4", this_switch(Served::THIS));
    client(this.path()).call(&Request::AddPort(labelled)).unwrap();
    let line = encode_request(&add_port(), 2).unwrap();
    assert!(!line.contains("pod") && !line.contains("container_name"), "{line}");
}
