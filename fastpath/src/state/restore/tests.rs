// The start plan against saved ports and a ledger (which ports a starting switch opens, and
// what it says about the rest), and opening them for real on sockets in a temp directory.
use super::*;
use crate::state::FORMAT;
use crate::switch::Switch;
use fastpath_host::ledger::{PortAlloc, Status};

fn runtime(name: &str, container: Option<&str>) -> SavedPort {
    let mut p = PortConfig::new(name, "br0", format!("/run/fastpath/sock/{name}.sock"));
    p.container = container.map(str::to_string);
    SavedPort { origin: Origin::Runtime, port: p }
}

fn saved(ports: Vec<SavedPort>) -> SavedPorts {
    SavedPorts { version: FORMAT, ports, mirrors: Vec::new() }
}

fn names(p: &StartPlan) -> Vec<(&str, Origin)> {
    p.ports.iter().map(|s| (s.port.name.as_str(), s.origin)).collect()
}

fn entry(id: &str, pid: i32, status: Status) -> Entry {
    Entry {
        status,
        ports: vec![PortAlloc {
            name: format!("fp-{id}-br0"),
            bridge: "br0".into(),
            socket: format!("/run/fastpath/sock/fp-{id}-br0.sock").into(),
            mac: String::new(),
            port_security: None,
            vlan: None,
            mtu: None,
        }],
        ..Entry::new(id, pid, 1, 1000)
    }
}

#[test]
fn config_ports_always_then_saved_runtime_ports_that_do_not_clash() {
    let config = [PortConfig::new("up", "br0", "/run/up.sock"), PortConfig::new("b", "br0", "/run/b.sock")];
    let mut stale_config = runtime("old-config-port", None);
    stale_config.origin = Origin::Config;
    let mut clash = runtime("other", None);
    clash.port.socket = "/run/b.sock".into();
    let s = saved(vec![runtime("a", None), stale_config, runtime("b", None), clash]);
    let p = plan(&config, Some(&s), None, |_| true);
    assert_eq!(names(&p), [("up", Origin::Config), ("b", Origin::Config), ("a", Origin::Runtime)]);
    assert_eq!(
        p.notes,
        [
            "saved port b (/run/fastpath/sock/b.sock) not restored: config port b has its name or socket now",
            "saved port other (/run/b.sock) not restored: config port b has its name or socket now",
        ]
    );
    // No state: the config's ports.
    assert_eq!(names(&plan(&config, None, None, |_| true)), [("up", Origin::Config), ("b", Origin::Config)]);
}

#[test]
fn the_ledger_drops_gone_containers_ports_and_adds_missing_ones() {
    let mut l = LedgerData::empty();
    for (id, pid, status) in [("live", 1, Status::Ready), ("dead", 2, Status::Ready), ("missing", 3, Status::Ready)] {
        l.containers.insert(id.into(), entry(id, pid, status));
    }
    let mut config_with_container = PortConfig::new("cfg", "br0", "/run/cfg.sock");
    config_with_container.container = Some("nobody".into());
    let s = saved(vec![
        runtime("fp-live-br0", Some("live")),
        runtime("fp-dead-br0", Some("dead")),
        runtime("fp-unknown-br0", Some("unknown")),
        runtime("byhand", None),
    ]);
    let path = Path::new("/run/fastpath/ledger.json");
    let p = plan(&[config_with_container], Some(&s), Some((path, &l)), |e| e.pid != 2);
    assert_eq!(
        names(&p),
        [
            ("cfg", Origin::Config),
            ("fp-live-br0", Origin::Runtime),
            ("byhand", Origin::Runtime),
            ("fp-missing-br0", Origin::Runtime)
        ]
    );
    assert_eq!(
        p.notes,
        [
            "saved port fp-dead-br0 not restored: no live container holds it in /run/fastpath/ledger.json (container dead)",
            "saved port fp-unknown-br0 not restored: no live container holds it in /run/fastpath/ledger.json (container unknown)",
            "port fp-missing-br0 added back: container missing holds it in /run/fastpath/ledger.json and it was not saved",
        ]
    );
    let added = &p.ports[3].port;
    assert_eq!((added.uid, added.container.as_deref()), (Some(1000), Some("missing")));
}

#[test]
fn opens_what_it_can_and_fails_only_on_a_config_port() {
    let d = std::env::temp_dir().join(format!("fastpath-restore-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let mut gone = runtime("gone", Some("c"));
    gone.port.socket = d.join("no-such-dir/gone.sock");
    let mut here = runtime("here", None);
    here.port.socket = d.join("here.sock");
    let config = SavedPort { origin: Origin::Config, port: PortConfig::new("cfg", "br0", d.join("cfg.sock")) };
    let defaults = PortDefaults::default();
    let mut sw = Switch::new(&["br0".into()], 300);
    let p = StartPlan { ports: vec![config.clone(), gone.clone(), here.clone()], notes: vec![] };
    let held = open(p, &mut sw, &defaults).unwrap();
    assert_eq!(held, [config.clone(), here]);
    assert_eq!(sw.list().len(), 2);
    let mut bad = config;
    bad.port.socket = d.join("no-such-dir/cfg.sock");
    bad.port.name = "cfg2".into();
    let e = open(StartPlan { ports: vec![bad], notes: vec![] }, &mut sw, &defaults).unwrap_err();
    assert!(e.to_string().starts_with("port 'cfg2': "), "{e}");
    drop(sw);
    std::fs::remove_dir_all(&d).unwrap();
}
