// Unit tests of the stages against the fake system and the fake switch, with a real ledger in
// a temporary directory: the contract, refusals before allocation, rollback at every step, gc.

use super::*;
use crate::pci::fake::FakeTree;
use crate::switch::fake::FakeSwitch;
use crate::sys::fake::FakeSys;

const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset
32 25 0:28 / /sys/fs/cgroup/hugetlb rw,nosuid - cgroup cgroup rw,hugetlb
33 25 0:29 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
";

struct World {
    dir: PathBuf,
    cfg: HostConfig,
    sys: FakeSys,
    sw: FakeSwitch,
    /// PF 0000:81:00.0 with VFs 0000:81:10.0 (group 42) and 0000:81:10.2 (group 43) on igbvf.
    pci: FakeTree,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pci.dir);
    }
}

fn world(name: &str, pool: &str) -> World {
    let dir = std::env::temp_dir().join(format!("fastpath-stages-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = HostConfig::parse(
        &format!("cores = \"{pool}\"\nstate_dir = \"{}\"\nlib_dir = \"/opt/fp\"\n", dir.display()),
        None,
        "0-3",
    )
    .unwrap();
    let sys = FakeSys::default();
    sys.file("/proc/self/mountinfo", MOUNTINFO)
        .file("/sys/fs/cgroup/unified/cgroup.controllers", "")
        .file("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "100")
        .dir("/b/rootfs/dev");
    for pid in [100, 101] {
        add_container(&sys, pid);
    }
    let pci = FakeTree::new(&format!("stages-{name}"), true);
    pci.pf("0000:81:00.0", 7, &["0000:81:10.0", "0000:81:10.2"], 42);
    pci.pci().set_numvfs("0000:81:00.0", 2).unwrap();
    World { dir, cfg, sys, sw: FakeSwitch::with(&["br0", "br1"]), pci }
}

fn add_container(sys: &FakeSys, pid: i32) {
    let c = format!("c{pid}");
    sys.file(&format!("/proc/{pid}/cgroup"), &format!("10:hugetlb:/{c}\n3:cpuset:/{c}\n4:devices:/{c}\n0::/{c}\n"))
        .file(&format!("/sys/fs/cgroup/cpuset/{c}/cpuset.cpus"), "0-3")
        .file(&format!("/sys/fs/cgroup/cpuset/{c}/cgroup.procs"), "")
        .file(&format!("/sys/fs/cgroup/hugetlb/{c}/hugetlb.2MB.limit_in_bytes"), "max")
        .file(&format!("/sys/fs/cgroup/hugetlb/{c}/cgroup.procs"), "")
        .file(&format!("/sys/fs/cgroup/devices/{c}/devices.allow"), "")
        .file(&format!("/sys/fs/cgroup/devices/{c}/cgroup.procs"), "");
    let mut st = sys.st.borrow_mut();
    st.procs.insert(pid, 1000 + pid as u64);
    st.memlock.insert(pid, (8 << 20, 8 << 20));
}

fn state(id: &str, pid: Option<i32>, ann: &[(&str, &str)]) -> State {
    let mut v = serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "bundle": "/b"});
    if let Some(p) = pid {
        v["pid"] = p.into();
    }
    v["annotations"] = ann.iter().map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v))).collect();
    parse_state(&v.to_string()).unwrap()
}

fn spec() -> Spec {
    serde_json::from_str(
        r#"{"ociVersion":"1.0.2","process":{"user":{"uid":1000,"gid":1000},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#,
    )
    .unwrap()
}

const CONTRACT: [(&str, &str); 3] =
    [("fastpath.io/cores", "1"), ("fastpath.io/hugepages", "64Mi"), ("fastpath.io/vhost-user", "br0")];

impl World {
    fn ctx(&self) -> Ctx<'_> {
        let mut c = Ctx::new(&self.cfg, &self.sys, &self.sw);
        c.pci = self.pci.pci();
        c
    }
    fn entries(&self) -> usize {
        self.ctx().ledger.read().unwrap().containers.len()
    }
    fn assert_clean(&self) {
        assert_eq!(self.entries(), 0, "ledger not empty");
        assert!(self.sw.ports.borrow().is_empty(), "ports left: {:?}", self.sw.ports.borrow());
        let sock = self.cfg.state_dir.join("sock");
        assert!(self.sys.list_dir(&sock).unwrap_or_default().is_empty(), "socket dirs left");
    }
    fn mutations(&self) -> Vec<String> {
        self.sys.st.borrow().log.clone()
    }
}

#[test]
fn contract_end_to_end_then_poststop_releases_everything() {
    let w = world("contract", "2-3");
    let ctx = w.ctx();
    let e = create_runtime(&ctx, &state("c100", Some(100), &CONTRACT), &spec()).unwrap().unwrap();
    assert_eq!(e.cores, vec![2]);
    assert_eq!(e.status, Status::Ready);
    assert_eq!(w.sys.get("/sys/fs/cgroup/cpuset/c100/cpuset.cpus").unwrap(), "2");
    assert_eq!(w.sys.get("/sys/fs/cgroup/hugetlb/c100/hugetlb.2MB.limit_in_bytes").unwrap(), "67108864");
    let ports = w.sw.ports.borrow().clone();
    let p = &ports["fp-c100-br0"];
    assert_eq!((p.bridge.as_str(), p.uid, p.gid), ("br0", Some(1000), Some(1000)));
    assert_eq!(p.socket, w.cfg.sock_dir("c100").join("br0.sock"));
    // The port says whose it is, and the MAC the container was told (below, config.json).
    assert_eq!(p.container.as_deref(), Some("c100"));
    assert_eq!(p.mac.as_deref(), Some(crate::switch::port_mac("c100", "br0").as_str()));
    assert_eq!(p.max_memory, Some(fastpath_host::proto::ByteSize((64 << 20) + PORT_MEMORY_SLACK)));
    assert_eq!(w.sys.st.borrow().dirs[&w.cfg.sock_dir("c100")], (0o700, 1000, 1000));
    // No CAP_SYS_RESOURCE and a hard limit of 8Mi: said, not silently dropped.
    let cfg = e.config.clone().unwrap();
    assert_eq!(cfg.ports[0].mac, p.mac, "the container is told its port's MAC");
    let m = cfg.memlock.clone().unwrap();
    assert_eq!((m.wanted, m.soft, m.hard), (64 << 20, 8 << 20, 8 << 20));
    assert!(m.note.unwrap().contains("CAP_SYS_RESOURCE"));

    assert!(create_container(&ctx, &state("c100", Some(1), &CONTRACT), &spec()).unwrap());
    let st = w.sys.st.borrow();
    let huge = st.mounts.iter().find(|m| m.fstype.as_deref() == Some("hugetlbfs")).unwrap();
    assert_eq!(huge.target, PathBuf::from("/b/rootfs/dev/hugepages"));
    assert_eq!(huge.data.as_deref(), Some("pagesize=2M,size=67108864,uid=1000,gid=1000,mode=0700"));
    assert!(st
        .mounts
        .iter()
        .any(|m| m.source == w.cfg.sock_dir("c100") && m.target == Path::new("/b/rootfs/run/fastpath/sock")));
    let written: nc::Config = serde_json::from_str(&st.files[Path::new("/b/rootfs/run/fastpath/config.json")]).unwrap();
    assert_eq!(written, cfg);
    assert_eq!(written.ports[0].socket, PathBuf::from("/run/fastpath/sock/br0.sock"));
    drop(st);

    let (gone, warnings) = poststop(&ctx, "c100").unwrap().unwrap();
    assert_eq!(gone.id, "c100");
    assert!(warnings.is_empty(), "{warnings:?}");
    w.assert_clean();
    assert!(poststop(&ctx, "c100").unwrap().is_none());
}

#[test]
fn memlock_raised_when_allowed() {
    let w = world("memlock", "2-3");
    w.sys.st.borrow_mut().cap_sys_resource = true;
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap().unwrap();
    assert_eq!(w.sys.st.borrow().memlock[&100], (64 << 20, 64 << 20));
    assert_eq!(e.config.unwrap().memlock.unwrap().note, None);
}

#[test]
fn memlock_require_policy_refuses_before_allocating() {
    let mut w = world("require", "2-3");
    w.cfg.memlock = MemlockPolicy::Require;
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap_err().to_string();
    assert!(e.contains("CAP_SYS_RESOURCE") && e.contains("require"), "{e}");
    assert!(w.mutations().is_empty());
    w.assert_clean();
}

#[test]
fn not_a_fastpath_container() {
    let w = world("none", "2-3");
    assert!(create_runtime(&w.ctx(), &state("x", Some(100), &[("a", "b")]), &spec()).unwrap().is_none());
    assert!(!create_container(&w.ctx(), &state("x", Some(1), &[]), &spec()).unwrap());
    assert!(w.mutations().is_empty());
}

#[test]
fn bad_input_is_refused_before_anything_is_allocated() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("fastpath.io/colour", "blue")], "annotation fastpath.io/colour: 'blue' is not a fastpath annotation"),
        (
            vec![("fastpath.io/hugepages", "64Mx")],
            "annotation fastpath.io/hugepages: '64Mx' is not a size (try 64Mi or 1Gi)",
        ),
        (
            vec![("fastpath.io/cores", "3")],
            "annotation fastpath.io/cores: '3' is more cores than the pool has: pool 2-3",
        ),
        (
            vec![("fastpath.io/vhost-user", "br9")],
            "annotation fastpath.io/vhost-user: 'br9' bridge 'br9' does not exist on fastpathd",
        ),
        (
            vec![("fastpath.io/hugepages", "1Gi")],
            "annotation fastpath.io/hugepages: '1Gi' needs 512 free 2Mi hugepages; the host has 100 free",
        ),
        (vec![("fastpath.io/inject", "true")], "annotation fastpath.io/inject: 'true' /opt/fp does not exist"),
        (
            vec![("fastpath.io/vf", "0000:81:11.0")],
            "annotation fastpath.io/vf: '0000:81:11.0' 0000:81:11.0: no such PCI device",
        ),
    ];
    for (ann, want) in cases {
        let w = world("bad", "2-3");
        let e = create_runtime(&w.ctx(), &state("c100", Some(100), &ann), &spec()).unwrap_err().to_string();
        assert!(e.starts_with(want), "got: {e}\nwant: {want}");
        assert!(w.mutations().is_empty(), "{ann:?}: {:?}", w.mutations());
        w.assert_clean();
    }
    let mut w = world("down", "2-3");
    w.sw.down = true;
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap_err().to_string();
    assert!(e.starts_with("annotation fastpath.io/vhost-user: 'br0' fastpathd at /fake: not answering"), "{e}");
    assert!(w.mutations().is_empty());
    w.sw.down = false;
    w.assert_clean();
}

#[test]
fn pool_of_one_core_second_container_is_told_the_holder() {
    let w = world("pool", "2");
    create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap().unwrap();
    let e = create_runtime(&w.ctx(), &state("c101", Some(101), &CONTRACT), &spec()).unwrap_err().to_string();
    assert!(
        e.starts_with("annotation fastpath.io/cores: '1' cannot be met: the core pool 2 has 0 free of 1, 1 wanted (core 2 held by container c100 (pid 100))"),
        "{e}"
    );
    assert_eq!(w.entries(), 1);
    assert_eq!(w.sw.ports.borrow().len(), 1);
    // The same id twice is refused too.
    let e = create_runtime(&w.ctx(), &state("c100", Some(101), &CONTRACT), &spec()).unwrap_err().to_string();
    assert!(e.contains("already holds resources"), "{e}");
}

#[test]
fn failure_at_each_step_undoes_everything() {
    for fail in ["mkdir-owned", "write /sys/fs/cgroup/cpuset", "write /sys/fs/cgroup/hugetlb", "memlock"] {
        let w = world("rollback", "2-3");
        w.sys.st.borrow_mut().cap_sys_resource = true;
        w.sys.st.borrow_mut().fail = Some(fail.into());
        let r = create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec());
        assert!(r.is_err(), "{fail}: succeeded");
        w.assert_clean();
    }
    // The switch refuses the second of two ports: the first is deleted again.
    let mut w = world("rollback-port", "2-3");
    w.sw.fail_add_on = Some("br1".into());
    let ann = [("fastpath.io/vhost-user", "br0,br1")];
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &ann), &spec()).unwrap_err().to_string();
    assert!(e.contains("adding port fp-c100-br1") && e.contains("full"), "{e}");
    w.assert_clean();
    // A mount that fails in createContainer releases what createRuntime reserved.
    w.sw.fail_add_on = None;
    create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap().unwrap();
    w.sys.st.borrow_mut().fail = Some("mount /b/rootfs/run/fastpath/sock".into());
    assert!(create_container(&w.ctx(), &state("c100", Some(1), &CONTRACT), &spec()).is_err());
    w.assert_clean();
}

#[test]
fn create_container_without_create_runtime_says_so() {
    let w = world("nocr", "2-3");
    let e = create_container(&w.ctx(), &state("c100", Some(1), &CONTRACT), &spec()).unwrap_err().to_string();
    assert!(e.contains("createRuntime stage did not run"), "{e}");
}

#[test]
fn gc_releases_the_dead_and_orphans_and_keeps_the_living() {
    let w = world("gc", "2-3");
    create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap().unwrap();
    create_runtime(&w.ctx(), &state("c101", Some(101), &CONTRACT), &spec()).unwrap().unwrap();
    // c100's runtime crashed: its process is gone, its cgroup empty; no poststop ran.
    w.sys.st.borrow_mut().procs.remove(&100);
    w.sw.add_port(&fastpath_host::proto::PortConfig::new("fp-lost-br0", "br0", "/x")).unwrap();
    w.sw.add_port(&fastpath_host::proto::PortConfig::new("someone-else", "br0", "/y")).unwrap();
    w.sys.mkdir_owned(&w.cfg.sock_dir("lost"), 0o700, 0, 0).unwrap();
    let r = gc(&w.ctx()).unwrap();
    assert_eq!(r.released, vec!["c100"]);
    assert_eq!(r.orphan_ports, vec!["fp-lost-br0"]);
    assert_eq!(r.orphan_dirs, vec![w.cfg.sock_dir("lost")]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(!w.sys.exists(Path::new("/sys/fs/cgroup/cpuset/c100")));
    assert!(w.sys.exists(Path::new("/sys/fs/cgroup/cpuset/c101")));
    let names: Vec<String> = w.sw.ports.borrow().keys().cloned().collect();
    assert_eq!(names, vec!["fp-c101-br0", "someone-else"]);
    assert_eq!(w.entries(), 1);
    // A recycled pid with another start time is not the same container.
    w.sys.st.borrow_mut().procs.insert(101, 1);
    assert_eq!(gc(&w.ctx()).unwrap().released, vec!["c101"]);
    w.sw.ports.borrow_mut().remove("someone-else");
    w.assert_clean();
}

#[test]
fn gc_gives_a_live_container_back_the_port_the_switch_lost() {
    let w = world("gc-readd", "2-3");
    create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap().unwrap();
    let asked = w.sw.ports.borrow()["fp-c100-br0"].clone();
    // The switch restarted without its state: the port is gone, the container lives.
    w.sw.ports.borrow_mut().clear();
    let r = gc(&w.ctx()).unwrap();
    assert_eq!((r.released.len(), r.orphan_ports.len()), (0, 0), "{r:?}");
    assert_eq!(r.restored_ports, vec!["fp-c100-br0"]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(w.sw.ports.borrow()["fp-c100-br0"], asked, "added back as createRuntime asked for it");
    // Nothing more to do the second time.
    assert_eq!(gc(&w.ctx()).unwrap(), GcReport::default());
    // A switch that refuses is a warning, not a failure of gc.
    w.sw.ports.borrow_mut().clear();
    let mut sw = FakeSwitch::with(&["br0"]);
    sw.fail_add_on = Some("br0".into());
    let ctx = Ctx { switch: &sw, ..w.ctx() };
    let r = gc(&ctx).unwrap();
    assert!(r.restored_ports.is_empty() && r.warnings.len() == 1, "{r:?}");
    assert!(r.warnings[0].starts_with("container c100: adding back port fp-c100-br0: "), "{:?}", r.warnings);
}

#[test]
fn the_vlan_annotation_puts_the_containers_ports_on_that_vlan_and_the_ledger_keeps_it() {
    let w = world("vlan", "2-3");
    let ann = [("fastpath.io/vhost-user", "br0,br1"), ("fastpath.io/vlan", "100")];
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &ann), &spec()).unwrap().unwrap();
    assert!(e.ports.iter().all(|p| p.vlan == Some(100)), "{:?}", e.ports);
    let asked = w.sw.ports.borrow().clone();
    assert_eq!((asked["fp-c100-br0"].vlan, asked["fp-c100-br1"].vlan), (Some(100), Some(100)));
    assert_eq!(w.ctx().ledger.read().unwrap().containers["c100"].ports, e.ports, "recorded");
    // A switch that lost the ports gets them back on the VLAN.
    w.sw.ports.borrow_mut().clear();
    gc(&w.ctx()).unwrap();
    assert_eq!(*w.sw.ports.borrow(), asked);
    // A bad VLAN is refused, naming the annotation and its value, before anything is held.
    let bad = [("fastpath.io/vhost-user", "br0"), ("fastpath.io/vlan", "5000")];
    let err = create_runtime(&w.ctx(), &state("c101", Some(101), &bad), &spec()).unwrap_err().to_string();
    assert!(err.starts_with("annotation fastpath.io/vlan: '5000' is not a VLAN id"), "{err}");
    assert_eq!(w.entries(), 1);
}

#[test]
fn the_mtu_annotation_gives_the_containers_ports_that_mtu_and_the_ledger_keeps_it() {
    let w = world("mtu", "2-3");
    let ann = [("fastpath.io/vhost-user", "br0"), ("fastpath.io/mtu", "9000")];
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &ann), &spec()).unwrap().unwrap();
    assert_eq!(e.ports[0].mtu, Some(9000));
    assert_eq!(w.sw.ports.borrow()["fp-c100-br0"].mtu, Some(9000));
    assert_eq!(w.ctx().ledger.read().unwrap().containers["c100"].ports, e.ports, "recorded");
    let bad = [("fastpath.io/vhost-user", "br0"), ("fastpath.io/mtu", "65000")];
    let err = create_runtime(&w.ctx(), &state("c101", Some(101), &bad), &spec()).unwrap_err().to_string();
    assert!(err.starts_with("annotation fastpath.io/mtu: '65000' is not an MTU"), "{err}");
    assert_eq!(w.entries(), 1);
}

const VF_REQ: [(&str, &str); 2] = [("fastpath.io/cores", "1"), ("fastpath.io/vf", "0000:81:10.2")];

fn driver(w: &World, pci: &str) -> Option<String> {
    w.pci.pci().driver(pci)
}

#[test]
fn vf_is_bound_noded_ruled_memlocked_then_given_back() {
    let w = world("vf", "2-3");
    w.sys.st.borrow_mut().cap_sys_resource = true;
    let ctx = w.ctx();
    let e = create_runtime(&ctx, &state("c100", Some(100), &VF_REQ), &spec()).unwrap().unwrap();
    assert_eq!(driver(&w, "0000:81:10.2").as_deref(), Some("vfio-pci"));
    assert_eq!(w.pci.read("0000:81:10.2", "driver_override"), "vfio-pci");
    // The ledger says what to give back, and to whom.
    let l = ctx.ledger.read().unwrap();
    let v = &l.containers["c100"].vfs[0];
    assert_eq!((v.pci.as_str(), v.group, v.dev), ("0000:81:10.2", 43, (243, 43)));
    assert!(v.hook_bound);
    assert_eq!(v.previous_driver.as_deref(), Some("igbvf"));
    // Device-cgroup rules for /dev/vfio/vfio and the group.
    let log = w.mutations();
    for rule in ["c 10:196 rwm", "c 243:43 rwm"] {
        assert!(log.contains(&format!("write /sys/fs/cgroup/devices/c100/devices.allow {rule}")), "{log:?}");
    }
    // RLIMIT_MEMLOCK covers vf_memlock (no hugepages asked).
    assert_eq!(w.sys.st.borrow().memlock[&100], (64 << 20, 64 << 20));
    let cfg = e.config.clone().unwrap();
    assert_eq!(cfg.memlock.unwrap().wanted, 64 << 20);
    assert_eq!(cfg.vfs[0].iommu_group, 43);
    // The nodes in the container, owned by its uid.
    assert!(create_container(&ctx, &state("c100", Some(1), &VF_REQ), &spec()).unwrap());
    {
        let st = w.sys.st.borrow();
        assert_eq!(st.nodes[Path::new("/b/rootfs/dev/vfio/vfio")], (10, 196, 0o600, 1000, 1000));
        assert_eq!(st.nodes[Path::new("/b/rootfs/dev/vfio/43")], (243, 43, 0o600, 1000, 1000));
    }
    // A second container asking for the same VF is told who holds it.
    let e = create_runtime(&ctx, &state("c101", Some(101), &VF_REQ), &spec()).unwrap_err().to_string();
    assert!(e.contains("VF 0000:81:10.2 is held by container c100 (pid 100)"), "{e}");
    let (_, warnings) = poststop(&ctx, "c100").unwrap().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(driver(&w, "0000:81:10.2").as_deref(), Some("igbvf"));
    assert_eq!(w.pci.read("0000:81:10.2", "driver_override"), "(null)");
    w.assert_clean();
}

#[test]
fn vf_already_on_vfio_is_used_and_left_there() {
    let w = world("vf-pre", "2-3");
    w.sys.st.borrow_mut().cap_sys_resource = true;
    w.pci.pci().bind_vfio("0000:81:10.2").unwrap();
    let ctx = w.ctx();
    let e = create_runtime(&ctx, &state("c100", Some(100), &VF_REQ), &spec()).unwrap().unwrap();
    assert!(!e.vfs[0].hook_bound);
    poststop(&ctx, "c100").unwrap().unwrap();
    assert_eq!(driver(&w, "0000:81:10.2").as_deref(), Some("vfio-pci"));
}

#[test]
fn vf_pool_picks_a_free_vf_and_gc_gives_back_after_a_crash() {
    let mut w = world("vf-pool", "2-3");
    w.cfg.vf_pools.insert("fast".into(), vec!["0000:81:10.0".into(), "0000:81:10.2".into()]);
    w.sys.st.borrow_mut().cap_sys_resource = true;
    add_container(&w.sys, 102);
    let ann = [("fastpath.io/vf", "fast")];
    let first = create_runtime(&w.ctx(), &state("c100", Some(100), &ann), &spec()).unwrap().unwrap();
    let second = create_runtime(&w.ctx(), &state("c101", Some(101), &ann), &spec()).unwrap().unwrap();
    assert_eq!((first.vfs[0].pci.as_str(), second.vfs[0].pci.as_str()), ("0000:81:10.0", "0000:81:10.2"));
    let e = create_runtime(&w.ctx(), &state("c102", Some(102), &ann), &spec()).unwrap_err().to_string();
    assert!(
        e.contains("VF pool 'fast' (0000:81:10.0, 0000:81:10.2) has no free VF: 0000:81:10.0 held by container c100"),
        "{e}"
    );
    // c100's runtime crashed: gc gives its VF back to igbvf.
    w.sys.st.borrow_mut().procs.remove(&100);
    let r = gc(&w.ctx()).unwrap();
    assert_eq!(r.released, vec!["c100"]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(driver(&w, "0000:81:10.0").as_deref(), Some("igbvf"));
    assert_eq!(driver(&w, "0000:81:10.2").as_deref(), Some("vfio-pci"));
    // Now c102 gets the freed one.
    let third = create_runtime(&w.ctx(), &state("c102", Some(102), &ann), &spec()).unwrap().unwrap();
    assert_eq!(third.vfs[0].pci, "0000:81:10.0");
}

#[test]
fn vf_failure_after_binding_gives_it_back() {
    let w = world("vf-undo", "2-3");
    w.sys.st.borrow_mut().cap_sys_resource = true;
    w.sys.st.borrow_mut().fail = Some("write /sys/fs/cgroup/devices".into());
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &VF_REQ), &spec()).unwrap_err().to_string();
    assert!(e.contains("devices.allow"), "{e}");
    assert_eq!(driver(&w, "0000:81:10.2").as_deref(), Some("igbvf"));
    assert_eq!(w.pci.read("0000:81:10.2", "driver_override"), "(null)");
    w.assert_clean();
}

#[test]
fn vf_without_memlock_headroom_is_refused_before_binding() {
    let w = world("vf-memlock", "2-3");
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &VF_REQ), &spec()).unwrap_err().to_string();
    assert!(e.contains("needs memory pinned for DMA") && e.contains("vf_memlock"), "{e}");
    assert_eq!(driver(&w, "0000:81:10.2").as_deref(), Some("igbvf"));
    w.assert_clean();
}

/// A spec whose `linux.resources` carry the kubelet's managers' settings.
fn spec_with_resources(resources: serde_json::Value) -> Spec {
    let mut v: serde_json::Value = serde_json::to_value(spec()).unwrap();
    v["linux"] = serde_json::json!({ "resources": resources });
    serde_json::from_value(v).unwrap()
}

#[test]
fn runtime_cores_and_hugepage_limit_are_the_containers() {
    let w = world("kubelet", "2-3");
    w.sys.file("/sys/devices/system/cpu/online", "0-3\n");
    let ctx = w.ctx();
    let s = spec_with_resources(serde_json::json!({
        "cpu": {"cpus": "1-2"},
        "hugepageLimits": [{"pageSize": "1GB", "limit": 0}, {"pageSize": "2MB", "limit": 64 << 20}]
    }));
    let ann = [("fastpath.io/vhost-user", "br0")];
    let e = create_runtime(&ctx, &state("c100", Some(100), &ann), &s).unwrap().unwrap();
    assert_eq!((e.cores.clone(), e.cores_from_runtime), (vec![1, 2], true));
    assert_eq!(e.hugepages, Some(HugeAlloc { bytes: 64 << 20, page_size: 2 << 20 }));
    assert_eq!(e.config.as_ref().unwrap().cores, vec![1, 2]);
    assert_eq!(e.config.as_ref().unwrap().hugepages.as_ref().unwrap().bytes, 64 << 20);
    // The runtime's cpuset stays as the runtime wrote it; the hugetlb limit is the runtime's.
    assert!(!w.mutations().iter().any(|m| m.contains("cpuset")), "{:?}", w.mutations());
    assert_eq!(w.sys.get("/sys/fs/cgroup/hugetlb/c100/hugetlb.2MB.limit_in_bytes").unwrap(), "67108864");
    assert!(!e.cgroups.iter().any(|c| c.starts_with("/sys/fs/cgroup/cpuset")), "{:?}", e.cgroups);
    let ledger = std::fs::read_to_string(w.cfg.ledger_path()).unwrap();
    assert!(ledger.contains("\"cores_from_runtime\": true"), "{ledger}");
    // A pool container does not get a core the runtime gave: 3, not 2.
    let e2 = create_runtime(&ctx, &state("c101", Some(101), &[("fastpath.io/cores", "1")]), &spec()).unwrap().unwrap();
    assert_eq!((e2.cores, e2.cores_from_runtime), (vec![3], false));
    // Asking for more than the runtime's limit, or more cores than it gave, is refused.
    let big = [("fastpath.io/hugepages", "128Mi")];
    let err = create_runtime(&ctx, &state("c102", Some(100), &big), &s).unwrap_err().to_string();
    assert!(
        err.contains("'128Mi' is more than the runtime's hugetlb limit for 2Mi pages") && err.contains("64Mi"),
        "{err}"
    );
    let one = spec_with_resources(serde_json::json!({"cpu": {"cpus": "1"}}));
    let err =
        create_runtime(&ctx, &state("c102", Some(100), &[("fastpath.io/cores", "2")]), &one).unwrap_err().to_string();
    assert!(err.contains("asks for more cores than the runtime gave the container"), "{err}");
    poststop(&ctx, "c100").unwrap().unwrap();
    poststop(&ctx, "c101").unwrap().unwrap();
    w.assert_clean();
}

#[test]
fn cores_from_pool_ignores_the_runtime_and_runtime_requires_it() {
    let mut w = world("cores-from", "2-3");
    w.sys.file("/sys/devices/system/cpu/online", "0-3\n");
    let s = spec_with_resources(serde_json::json!({"cpu": {"cpus": "1"}}));
    w.cfg.cores_from = crate::hostconfig::CoresFrom::Pool;
    let e = create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &s).unwrap().unwrap();
    assert_eq!((e.cores, e.cores_from_runtime), (vec![2], false));
    assert_eq!(w.sys.get("/sys/fs/cgroup/cpuset/c100/cpuset.cpus").unwrap(), "2");
    poststop(&w.ctx(), "c100").unwrap().unwrap();
    w.cfg.cores_from = crate::hostconfig::CoresFrom::Runtime;
    let before = w.mutations().len();
    let err = create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &spec()).unwrap_err().to_string();
    assert!(err.contains("cores_from = \"runtime\"") && err.contains("linux.resources.cpu.cpus"), "{err}");
    assert_eq!(w.mutations().len(), before, "refused before anything was done");
    let offline = spec_with_resources(serde_json::json!({"cpu": {"cpus": "1,7"}}));
    let err = create_runtime(&w.ctx(), &state("c100", Some(100), &CONTRACT), &offline).unwrap_err().to_string();
    assert!(err.contains("not online here: 7"), "{err}");
    w.assert_clean();
}

#[test]
fn numa_one_node_for_cores_and_hugepages_else_said_in_the_ledger() {
    let w = world("numa", "1-3");
    // Node 0: CPUs 0-1 and no free 2Mi hugepages; node 1: CPUs 2-3 and 100 free.
    for (n, cpus, free) in [(0, "0-1", "0"), (1, "2-3", "100")] {
        let d = format!("/sys/devices/system/node/node{n}");
        w.sys.file(&format!("{d}/cpulist"), cpus).file(&format!("{d}/hugepages/hugepages-2048kB/free_hugepages"), free);
    }
    let ctx = w.ctx();
    let e = create_runtime(&ctx, &state("c100", Some(100), &CONTRACT), &spec()).unwrap().unwrap();
    assert_eq!((e.cores.clone(), e.numa_node, e.numa_note.clone()), (vec![2], Some(1), None));
    let two = [("fastpath.io/cores", "2")];
    let e = create_runtime(&ctx, &state("c101", Some(101), &two), &spec()).unwrap().unwrap();
    assert_eq!((e.cores.clone(), e.numa_node), (vec![1, 3], None));
    assert_eq!(e.numa_note.as_deref(), Some("not on one NUMA node: cores 1,3 on node 0 and 1"));
    let ledger = ctx.ledger.read().unwrap();
    assert_eq!(ledger.containers["c101"].numa_note, e.numa_note);
    poststop(&ctx, "c100").unwrap().unwrap();
    poststop(&ctx, "c101").unwrap().unwrap();
    w.assert_clean();
}

#[test]
fn a_cdi_devices_environment_stands_for_the_annotations() {
    let w = world("cdi-env", "2-3");
    let mut v: serde_json::Value = serde_json::to_value(spec()).unwrap();
    v["process"]["env"] = serde_json::json!(["PATH=/bin", "FASTPATH_IO_VHOST_USER=br0", "FASTPATH_IO_HUGEPAGES=32Mi"]);
    let s: Spec = serde_json::from_value(v).unwrap();
    let ctx = w.ctx();
    let e = create_runtime(&ctx, &state("c100", Some(100), &[]), &s).unwrap().unwrap();
    assert_eq!(e.ports[0].bridge, "br0");
    assert_eq!(e.hugepages, Some(HugeAlloc { bytes: 32 << 20, page_size: 2 << 20 }));
    // An annotation wins over the environment.
    poststop(&ctx, "c100").unwrap().unwrap();
    let e = create_runtime(&ctx, &state("c100", Some(100), &[("fastpath.io/hugepages", "64Mi")]), &s).unwrap().unwrap();
    assert_eq!(e.hugepages.unwrap().bytes, 64 << 20);
    poststop(&ctx, "c100").unwrap().unwrap();
    w.assert_clean();
}
