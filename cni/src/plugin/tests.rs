// Unit tests of ADD, DEL, CHECK, GC and STATUS against the hook's fake system and fake switch,
// with a real ledger in a temporary directory: the result, DEL twice, DEL after a failed ADD,
// CHECK without ADD, refusals that name the field.

use super::*;
use crate::error::{SWITCH, TRY_AGAIN};
use crate::netconf;
use fastpath_hook::switch::fake::FakeSwitch;
use fastpath_hook::sys::fake::FakeSys;

struct World {
    dir: PathBuf,
    cfg: HostConfig,
    sys: FakeSys,
    sw: FakeSwitch,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl World {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fastpath-cni-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg =
            HostConfig::parse(&format!("cores = \"2-3\"\nstate_dir = \"{}\"\n", dir.display()), None, "0-3").unwrap();
        let sys = FakeSys::default();
        sys.file("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "200").dir("/run/netns");
        Self { dir, cfg, sys, sw: FakeSwitch::with(&["br0"]) }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.cfg, &self.sys, &self.sw)
    }

    fn entries(&self) -> Vec<String> {
        self.ctx().ledger.read().unwrap().containers.into_keys().collect()
    }

    fn files(&self) -> Vec<PathBuf> {
        self.sys.st.borrow().files.keys().filter(|p| !p.starts_with("/sys")).cloned().collect()
    }
}

const CONF: &str =
    r#"{"cniVersion":"1.0.0","name":"fastpath-net","type":"fastpath-cni","bridge":"br0","vlan":100,"mtu":1500}"#;

fn env(id: &str, ifname: &str) -> CniEnv {
    CniEnv {
        container_id: id.into(),
        ifname: ifname.into(),
        netns: format!("/run/netns/{id}").into(),
        args: crate::env::parse_args("K8S_POD_NAME=web;K8S_POD_NAMESPACE=prod").unwrap(),
        path: vec![],
    }
}

#[test]
fn add_gives_a_port_a_result_a_device_info_file_and_a_ledger_entry() {
    let w = World::new("add");
    let conf = netconf::parse(CONF).unwrap();
    let r = add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    let mac = switch::port_mac("c1", "net1");
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][0]["mac"], mac.as_str());
    assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/c1");
    assert_eq!(r["interfaces"][0]["socketPath"], "/run/fastpath/cni/c1/net1.sock");
    assert_eq!(r["ips"], serde_json::json!([]));
    let ports = w.sw.ports.borrow();
    let p = &ports["fp-c1-net1"];
    assert_eq!((p.bridge.as_str(), p.vlan, p.mac.as_deref()), ("br0", Some(100), Some(mac.as_str())));
    assert_eq!(p.socket, PathBuf::from("/run/fastpath/cni/c1/net1.sock"));
    assert_eq!(p.container.as_deref(), Some("c1/net1"));
    assert_eq!(p.mtu, Some(1500), "the network's mtu is the port's");
    let info: Value =
        serde_json::from_str(&w.sys.get("/run/k8s.cni.cncf.io/devinfo/cni/fastpath-net-c1-net1-device.json").unwrap())
            .unwrap();
    assert_eq!(info, result::device_info(Path::new("/run/fastpath/cni/c1/net1.sock")));
    let app: nc::Config = serde_json::from_str(&w.sys.get("/run/fastpath/cni/c1/net1.json").unwrap()).unwrap();
    assert_eq!(app.ports[0].mac.as_deref(), Some(mac.as_str()));
    let ledger = w.ctx().ledger.read().unwrap();
    let entry = &ledger.containers["c1/net1"];
    assert_eq!((entry.owner, entry.status), (Owner::Cni, Status::Ready));
    let c = entry.cni.as_ref().unwrap();
    assert_eq!((c.pod_namespace.as_deref(), c.pod_name.as_deref()), (Some("prod"), Some("web")));
    assert_eq!(c.netns, PathBuf::from("/run/netns/c1"));
}

#[test]
fn the_pods_cores_and_hugepages_are_reserved_from_hook_toml() {
    let w = World::new("cores");
    let text =
        r#"{"cniVersion":"1.0.0","name":"n","type":"fastpath-cni","args":{"cni":{"cores":2,"hugepages":"256M"}}}"#;
    let conf = netconf::parse(text).unwrap();
    add(&w.ctx(), &conf, &env("c1", "net1"), text).unwrap();
    let l = w.ctx().ledger.read().unwrap();
    let e = &l.containers["c1/net1"];
    assert_eq!(e.cores, [2, 3]);
    assert_eq!(e.hugepages, Some(HugeAlloc { bytes: 256 << 20, page_size: 2 << 20 }));
    // The pool is spent: the next pod's refusal names the field and who holds the cores.
    let e = add(&w.ctx(), &conf, &env("c2", "net1"), text).unwrap_err();
    assert_eq!(e.code, REFUSED);
    assert!(e.msg.contains("cores: 2 cannot be met") && e.msg.contains("CNI attachment c1/net1 (pod prod/web)"), "{e}");
    assert_eq!(w.entries(), ["c1/net1"], "a refused ADD leaves nothing");
    let big = r#"{"cniVersion":"1.0.0","name":"n","type":"fastpath-cni","hugepages":"1000Gi"}"#;
    let e = add(&w.ctx(), &netconf::parse(big).unwrap(), &env("c3", "net1"), big).unwrap_err();
    assert!(e.msg.starts_with("hugepages: '1000Gi' is more than max_hugepages"), "{e}");
}

#[test]
fn del_twice_and_del_without_add_succeed_and_leave_nothing() {
    let w = World::new("del");
    let conf = netconf::parse(CONF).unwrap();
    let before = w.files();
    del(&w.ctx(), &conf, &env("never", "net1"), CONF).unwrap();
    add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    add(&w.ctx(), &conf, &env("c1", "net2"), CONF).unwrap();
    del(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    // The pod's other attachment keeps its socket directory.
    assert!(w.sys.exists(Path::new("/run/fastpath/cni/c1")));
    assert_eq!(w.entries(), ["c1/net2"]);
    del(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    del(&w.ctx(), &conf, &env("c1", "net2"), CONF).unwrap();
    assert!(w.sw.ports.borrow().is_empty());
    assert!(w.entries().is_empty());
    assert_eq!(w.files(), before);
    assert!(!w.sys.exists(Path::new("/run/fastpath/cni/c1")));
    // fastpathd down: DEL still releases the ledger entry and the files.
    add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    let down = FakeSwitch { down: true, ..FakeSwitch::with(&["br0"]) };
    del(&Ctx::new(&w.cfg, &w.sys, &down), &conf, &env("c1", "net1"), CONF).unwrap();
    assert!(w.entries().is_empty());
    assert_eq!(w.files(), before);
}

#[test]
fn a_failed_add_leaves_nothing_and_del_after_it_succeeds() {
    let w = World::new("failadd");
    let before = w.files();
    let bad_bridge = CONF.replace(r#""bridge":"br0""#, r#""bridge":"nope""#);
    let conf = netconf::parse(&bad_bridge).unwrap();
    let e = add(&w.ctx(), &conf, &env("c1", "net1"), &bad_bridge).unwrap_err();
    assert_eq!(e.code, INVALID_CONFIG);
    assert!(e.msg.starts_with("bridge: 'nope' does not exist on fastpathd") && e.msg.contains("bridges: br0"), "{e}");
    del(&w.ctx(), &conf, &env("c1", "net1"), &bad_bridge).unwrap();
    // The switch refuses the port: everything reserved is undone.
    let full = FakeSwitch { fail_add_on: Some("br0".into()), ..FakeSwitch::with(&["br0"]) };
    let conf = netconf::parse(CONF).unwrap();
    let e = add(&Ctx::new(&w.cfg, &w.sys, &full), &conf, &env("c1", "net1"), CONF).unwrap_err();
    assert_eq!(e.code, SWITCH);
    assert!(e.msg.contains("adding port fp-c1-net1") && e.msg.contains("the switch is full"), "{e}");
    assert!(w.entries().is_empty());
    assert_eq!(w.files(), before);
    // Writing the device-info file fails: the port goes again.
    w.sys.st.borrow_mut().fail = Some("create /run/k8s.cni.cncf.io".into());
    let e = add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap_err();
    assert!(e.msg.contains("fastpath-net-c1-net1-device.json"), "{e}");
    assert!(w.sw.ports.borrow().is_empty() && w.entries().is_empty());
    w.sys.st.borrow_mut().fail = None;
    del(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    // fastpathd not answering: try again later.
    let down = FakeSwitch { down: true, ..FakeSwitch::with(&["br0"]) };
    assert_eq!(add(&Ctx::new(&w.cfg, &w.sys, &down), &conf, &env("c1", "net1"), CONF).unwrap_err().code, TRY_AGAIN);
}

#[test]
fn add_twice_is_refused_without_touching_the_first() {
    let w = World::new("twice");
    let conf = netconf::parse(CONF).unwrap();
    add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    let e = add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap_err();
    assert!(e.msg.contains("CNI attachment c1/net1") && e.msg.contains("DEL it first"), "{e}");
    assert!(w.sw.ports.borrow().contains_key("fp-c1-net1"));
    assert_eq!(w.entries(), ["c1/net1"]);
}

#[test]
fn check_needs_the_attachment_its_port_and_its_link() {
    let w = World::new("check");
    let conf = netconf::parse(CONF).unwrap();
    let e = check(&w.ctx(), &conf, &env("c1", "net1")).unwrap_err();
    assert_eq!(e.code, UNKNOWN_CONTAINER, "CHECK without ADD: {e}");
    assert!(e.msg.contains("c1/net1: no such attachment"), "{e}");
    add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    // The fake switch makes no socket file: the real one does.
    w.sys.file("/run/fastpath/cni/c1/net1.sock", "");
    check(&w.ctx(), &conf, &env("c1", "net1")).unwrap();
    // With the result ADD gave as prevResult (as runtimes pass it); a changed MAC fails.
    let r = add_result_of(&w, &conf);
    let with_prev = |r: &Value| {
        let text = CONF.replace(r#""mtu":1500"#, &format!(r#""mtu":1500,"prevResult":{r}"#));
        netconf::parse(&text).unwrap()
    };
    check(&w.ctx(), &with_prev(&r), &env("c1", "net1")).unwrap();
    let mut changed = r.clone();
    changed["interfaces"][0]["mac"] = "02:00:00:00:00:99".into();
    let e = check(&w.ctx(), &with_prev(&changed), &env("c1", "net1")).unwrap_err();
    assert!(e.msg.contains("prevResult: interface net1 has MAC \"02:00:00:00:00:99\""), "{e}");
    let unplugged = FakeSwitch { links_down: true, ..FakeSwitch::with(&["br0"]) };
    unplugged.ports.borrow_mut().clone_from(&w.sw.ports.borrow());
    let e = check(&Ctx::new(&w.cfg, &w.sys, &unplugged), &conf, &env("c1", "net1")).unwrap_err();
    assert_eq!(e.code, CHECK_FAILED);
    assert!(e.msg.contains("link down"), "{e}");
    w.sw.ports.borrow_mut().clear();
    let e = check(&w.ctx(), &conf, &env("c1", "net1")).unwrap_err();
    assert!(e.msg.contains("port fp-c1-net1 is gone from fastpathd"), "{e}");
}

#[test]
fn gc_releases_this_networks_attachments_the_runtime_no_longer_has() {
    let w = World::new("gc");
    let conf = netconf::parse(CONF).unwrap();
    for id in ["c1", "c2"] {
        add(&w.ctx(), &conf, &env(id, "net1"), CONF).unwrap();
    }
    let other = CONF.replace("fastpath-net", "other-net");
    add(&w.ctx(), &netconf::parse(&other).unwrap(), &env("c3", "net1"), &other).unwrap();
    let text =
        CONF.replace(r#""mtu":1500"#, r#""mtu":1500,"cni.dev/attachments":[{"containerID":"c1","ifname":"net1"}]"#);
    let released = gc(&w.ctx(), &netconf::parse(&text).unwrap()).unwrap();
    assert_eq!(released, ["c2/net1"]);
    assert_eq!(w.entries(), ["c1/net1", "c3/net1"]);
    status(&w.ctx(), &conf).unwrap();
    let down = FakeSwitch { down: true, ..FakeSwitch::default() };
    assert_eq!(status(&Ctx::new(&w.cfg, &w.sys, &down), &conf).unwrap_err().code, NOT_AVAILABLE);
}

#[test]
fn the_hooks_gc_keeps_attachments_whose_netns_exists() {
    let w = World::new("hookgc");
    let conf = netconf::parse(CONF).unwrap();
    w.sys.file("/run/netns/c1", "");
    add(&w.ctx(), &conf, &env("c1", "net1"), CONF).unwrap();
    add(&w.ctx(), &conf, &env("c2", "net1"), CONF).unwrap();
    let hook = fastpath_hook::stages::Ctx::new(&w.cfg, &w.sys, &w.sw);
    let r = fastpath_hook::stages::gc(&hook).unwrap();
    assert_eq!(r.released, ["c2/net1"], "c2's netns is gone");
    assert_eq!(w.entries(), ["c1/net1"]);
    assert!(w.sw.ports.borrow().contains_key("fp-c1-net1") && !w.sw.ports.borrow().contains_key("fp-c2-net1"));
    assert!(w.sys.exists(Path::new("/run/fastpath/cni/c1/net1.json")));
    assert!(!w.sys.exists(Path::new("/run/fastpath/cni/c2")), "the gone pod's socket directory goes too");
}

/// The result ADD gave for c1/net1 (rebuilt from the ledger entry it made).
fn add_result_of(w: &World, conf: &NetConf) -> Value {
    let l = w.ctx().ledger.read().unwrap();
    let e = &l.containers["c1/net1"];
    let i = Interface {
        name: "net1",
        mac: &e.ports[0].mac,
        sandbox: Path::new("/run/netns/c1"),
        socket: &e.ports[0].socket,
        mtu: conf.settings.mtu,
    };
    result::add_result(&conf.cni_version, &i, None, None)
}
