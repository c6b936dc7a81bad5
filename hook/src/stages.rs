// The hook's stages: createRuntime (validate, reserve, apply; undo on failure), createContainer
// (mounts), poststop (release what the ledger says) and gc (release what dead containers held).
//! Stages.

use crate::annotations::{self, Request, CORES, HUGEPAGES, INJECT, VF, VHOST_USER};
use crate::cgroup::{self, CgroupDir};
use crate::cores;
use crate::devices;
use crate::hostconfig::{HostConfig, MemlockPolicy};
use crate::hugetlb::{self, format_size};
use crate::kubelet::{self, CoreSource};
use crate::ledger::{Entry, HugeAlloc, Ledger, LedgerData, PortAlloc, Status};
use crate::mounts;
use crate::numa::Topology;
use crate::pci::Pci;
use crate::switch::{self, SwitchCtl};
use crate::sys::Sys;
use crate::{error::io, Error, Result};
use fastpath_host::ledger::HeldPort;
pub use fastpath_host::ledger::PORT_MEMORY_SLACK;
use netlib::config as nc;
use oci_spec::runtime::{LinuxDeviceCgroup, PosixRlimitType, Spec, State};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What every stage works with.
pub struct Ctx<'a> {
    /// Host policy.
    pub cfg: &'a HostConfig,
    /// System calls.
    pub sys: &'a dyn Sys,
    /// The switch.
    pub switch: &'a dyn SwitchCtl,
    /// The ledger.
    pub ledger: Ledger,
    /// PCI devices (the host's /sys), for VFs.
    pub pci: Pci,
    /// The sysfs root for NUMA topology and online CPUs (`/sys`; a fake tree in tests).
    pub sysfs: PathBuf,
}

impl<'a> Ctx<'a> {
    /// A context over the ledger in `cfg.state_dir`.
    pub fn new(cfg: &'a HostConfig, sys: &'a dyn Sys, switch: &'a dyn SwitchCtl) -> Self {
        Self { cfg, sys, switch, ledger: Ledger::new(&cfg.state_dir), pci: Pci::new(), sysfs: "/sys".into() }
    }
}

/// Reads the OCI state (stdin of a hook).
pub fn parse_state(text: &str) -> Result<State> {
    serde_json::from_str(text).map_err(|e| Error::Oci(format!("the OCI state on stdin is not valid: {e}")))
}

/// Loads the bundle's `config.json`.
pub fn load_spec(state: &State) -> Result<Spec> {
    let p = state.bundle().join("config.json");
    Spec::load(&p).map_err(|e| Error::Oci(format!("{}: {e}", p.display())))
}

/// The annotations: what the process environment says through `FASTPATH_IO_*` variables (a
/// CDI device's), overridden by config.json's, overridden by the state's (the same in practice).
pub fn annotations_of(state: &State, spec: &Spec) -> BTreeMap<String, String> {
    let env = spec.process().as_ref().and_then(|p| p.env().clone()).unwrap_or_default();
    let mut a = annotations::from_env(&env);
    a.extend(spec.annotations().clone().unwrap_or_default());
    a.extend(state.annotations().clone().unwrap_or_default());
    a
}

/// The container's uid and gid (`process.user`).
pub fn user_of(spec: &Spec) -> (u32, u32) {
    spec.process().as_ref().map_or((0, 0), |p| (p.user().uid(), p.user().gid()))
}

/// The rootfs on the host (`root.path`, relative to the bundle).
pub fn rootfs_of(state: &State, spec: &Spec) -> PathBuf {
    let r = spec.root().as_ref().map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
    if r.is_absolute() {
        r
    } else {
        state.bundle().join(r)
    }
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Oci(format!("container id '{id}': the hook needs 1-64 of [A-Za-z0-9_.-] (it names files)")))
    }
}

/// Whether what `e` stands for still exists: a container's process, or a CNI attachment's
/// network namespace ([`Entry::alive`]).
pub fn alive(sys: &dyn Sys, e: &Entry) -> bool {
    e.alive(|pid| sys.start_time(pid), |p| sys.exists(p))
}

/// Who holds what `e` records, for refusals: [`Entry::who`], marked when it is gone.
pub fn holder(sys: &dyn Sys, e: &Entry) -> String {
    if alive(sys, e) {
        e.who()
    } else {
        format!("{} (gone: run fastpath-hook gc)", e.who())
    }
}

/// How RLIMIT_MEMLOCK will be handled, decided before anything is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MemlockPlan {
    /// Nothing to do (enough already, or nothing wanted).
    Keep(u64, u64),
    /// prlimit to (soft, hard).
    Raise(u64, u64),
    /// Cannot cover it: keep (soft, hard) and say why.
    Short(u64, u64, String),
}

fn plan_memlock(ctx: &Ctx, req: &Request, spec: &Spec, pid: i32) -> Result<(u64, MemlockPlan)> {
    let huge = req.hugepages.map_or(0, |h| h.bytes);
    let vf = if req.vfs.is_empty() { 0 } else { ctx.cfg.vf_memlock };
    let wanted = huge + vf;
    let what = match (huge, vf) {
        (_, 0) => format!("fastpath.io/hugepages ({})", format_size(huge)),
        (0, v) => format!("fastpath.io/vf (vf_memlock {} for DMA)", format_size(v)),
        (h, v) => format!("fastpath.io/hugepages ({}) plus vf_memlock ({}) for VF DMA", format_size(h), format_size(v)),
    };
    let from_spec = spec
        .process()
        .as_ref()
        .and_then(|p| p.rlimits().as_ref())
        .and_then(|r| r.iter().find(|l| l.typ() == PosixRlimitType::RlimitMemlock))
        .map(|l| (l.soft(), l.hard()));
    let (soft, hard) = match from_spec {
        Some(sh) => sh,
        None => ctx.sys.memlock(pid).map_err(io(format!("reading RLIMIT_MEMLOCK of pid {pid}")))?,
    };
    let plan = if wanted == 0 || soft >= wanted {
        MemlockPlan::Keep(soft, hard)
    } else if from_spec.is_some() {
        MemlockPlan::Short(
            soft,
            hard,
            format!(
                "RLIMIT_MEMLOCK is {} by process.rlimits in config.json, below the {} {what} needs; the runtime sets it after this hook, so raise it there",
                format_size(soft),
                format_size(wanted)
            ),
        )
    } else if hard >= wanted {
        MemlockPlan::Raise(wanted, hard)
    } else if ctx.sys.can_raise_rlimits() {
        MemlockPlan::Raise(wanted, wanted)
    } else {
        MemlockPlan::Short(
            soft,
            hard,
            format!(
                "RLIMIT_MEMLOCK stays at {} (hard {}): covering {what} = {} needs a higher hard limit, and this hook lacks CAP_SYS_RESOURCE to raise it (give the container --ulimit memlock=... / process.rlimits)",
                format_size(soft),
                format_size(hard),
                format_size(wanted)
            ),
        )
    };
    if let MemlockPlan::Short(_, _, why) = &plan {
        if !req.vfs.is_empty() {
            let v = req.vfs.join(",");
            return Err(Error::annotation(VF, &v, format!("needs memory pinned for DMA: {why}")));
        }
        if ctx.cfg.memlock == MemlockPolicy::Require {
            return Err(Error::Refused(format!("{why} (memlock = \"require\" in {})", ctx.cfg.shown())));
        }
    }
    Ok((wanted, plan))
}

/// Everything checked before the ledger is touched.
struct Preflight {
    cpuset: Option<CgroupDir>,
    hugetlb: Option<CgroupDir>,
    devices: Option<CgroupDir>,
    /// The runtime set up the VFs' device nodes and their cgroup rules itself (CDI): its
    /// rules, which the hook checks cover each VF instead of writing its own.
    devices_by_runtime: Option<Vec<LinuxDeviceCgroup>>,
    memlock: (u64, MemlockPlan),
}

impl Preflight {
    /// The cgroup directories the hook will write limits into.
    fn cgroup_paths(&self) -> Vec<PathBuf> {
        [&self.cpuset, &self.hugetlb, &self.devices].iter().filter_map(|d| d.as_ref().map(|d| d.path.clone())).collect()
    }
}

fn preflight(
    ctx: &Ctx,
    req: &Request,
    source: &CoreSource,
    ann: &BTreeMap<String, String>,
    spec: &Spec,
    id: &str,
    pid: i32,
) -> Result<Preflight> {
    let val = |k: &str| ann.get(k).cloned().unwrap_or_default();
    if let Some(h) = req.hugepages {
        let v = val(HUGEPAGES);
        let free = hugetlb::free_pages(ctx.sys, h.page_size).ok_or_else(|| {
            Error::annotation(
                HUGEPAGES,
                &v,
                format!(
                    "this host has no {} hugepage pool ({})",
                    format_size(h.page_size),
                    hugetlb::sysfs_dir(h.page_size).display()
                ),
            )
        })?;
        let need = h.bytes / h.page_size;
        if free < need {
            return Err(Error::annotation(
                HUGEPAGES,
                &v,
                format!("needs {need} free {} hugepages; the host has {free} free", format_size(h.page_size)),
            ));
        }
    }
    if !req.bridges.is_empty() {
        let v = val(VHOST_USER);
        let have = ctx.switch.bridges().map_err(|e| Error::annotation(VHOST_USER, &v, e.to_string()))?;
        if let Some(b) = req.bridges.iter().find(|b| !have.contains(b)) {
            return Err(Error::annotation(
                VHOST_USER,
                &v,
                format!(
                    "bridge '{b}' does not exist on fastpathd at {} (bridges: {})",
                    ctx.switch.socket().display(),
                    if have.is_empty() { "none".into() } else { have.join(", ") }
                ),
            ));
        }
        for b in &req.bridges {
            let sock = ctx.cfg.sock_dir(id).join(format!("{b}.sock"));
            if sock.as_os_str().len() > 107 {
                return Err(Error::Refused(format!(
                    "socket path {} is longer than a unix socket allows (108 bytes): shorten state_dir in {}",
                    sock.display(),
                    ctx.cfg.shown()
                )));
            }
        }
    }
    if req.inject && !ctx.sys.exists(&ctx.cfg.lib_dir) {
        return Err(Error::annotation(
            INJECT,
            &val(INJECT),
            format!(
                "{} does not exist (install libfastpath_net there, or set lib_dir in {})",
                ctx.cfg.lib_dir.display(),
                ctx.cfg.shown()
            ),
        ));
    }
    let need_cg = |ctrl: &str, key: &str| -> Result<CgroupDir> {
        cgroup::locate(ctx.sys, pid, ctrl)?.ok_or_else(|| {
            Error::annotation(key, &val(key), format!("this host has no {ctrl} cgroup controller to enforce it"))
        })
    };
    // The runtime's cores are in the cpuset cgroup already: the hook writes only the pool's.
    let cpuset = if matches!(source, CoreSource::Pool(n) if *n > 0) { Some(need_cg("cpuset", CORES)?) } else { None };
    let hugetlb = if req.hugepages.is_some() { Some(need_cg("hugetlb", HUGEPAGES)?) } else { None };
    // A VF that came through CDI has its nodes and device rules from the runtime already
    // (on cgroup v2 the only way): they are checked once the VFs are known.
    let devices_by_runtime =
        (!req.vfs.is_empty() && devices::runtime_has_vfio_nodes(spec)).then(|| devices::runtime_rules(spec));
    let devices = if req.vfs.is_empty() || devices_by_runtime.is_some() {
        None
    } else {
        let d = need_cg("devices", VF)?;
        if d.v2 {
            return Err(Error::annotation(
                VF,
                &val(VF),
                "on cgroup v2 the hook cannot add device rules: put them in linux.resources.devices (the docker shim does)",
            ));
        }
        Some(d)
    };
    // A VF named by address is checked now (read only), so that a wrong one is reported
    // before the rest; pools are resolved under the ledger lock.
    for a in req.vfs.iter().filter(|a| annotations::is_pci_address(a)) {
        devices::probe(&ctx.pci, ctx.cfg, a, &val(VF), false)?;
    }
    let memlock = plan_memlock(ctx, req, spec, pid)?;
    Ok(Preflight { cpuset, hugetlb, devices, devices_by_runtime, memlock })
}

/// createRuntime (or prestart): checks everything, reserves cores, VFs and port names in the
/// ledger, then adds the switch ports and writes the cgroup limits and RLIMIT_MEMLOCK. On any
/// failure, what was done is undone and the entry removed. `Ok(None)`: not a fastpath container.
pub fn create_runtime(ctx: &Ctx, state: &State, spec: &Spec) -> Result<Option<Entry>> {
    let ann = annotations_of(state, spec);
    let Some(mut req) = annotations::parse(&ann, ctx.cfg)? else {
        return Ok(None);
    };
    let value = |k: &str| ann.get(k).map_or("", String::as_str);
    req.hugepages = kubelet::hugepages(ctx.cfg, spec, req.hugepages, value(HUGEPAGES))?;
    let online = ctx.sys.read(&ctx.sysfs.join("devices/system/cpu/online")).unwrap_or_default();
    let source = kubelet::core_source(ctx.cfg, spec, req.cores, value(CORES), &online)?;
    let mut entry = draft_entry(ctx, state, spec, &req)?;
    entry.labels = crate::labels::of(&ann);
    let pre = preflight(ctx, &req, &source, &ann, spec, &entry.id, entry.pid)?;
    entry.cgroups = pre.cgroup_paths();
    let entry = reserve(ctx, &req, &source, &ann, entry)?;
    if let Some(note) = &entry.numa_note {
        tracing::warn!("container {}: {note}", entry.id);
        eprintln!("fastpath-hook: warning: container {}: {note}", entry.id);
    }
    apply_or_undo(ctx, &entry, &pre).map(Some)
}

/// The ledger entry for the container `state` names, as far as it follows from the
/// request alone (no cores, VFs or cgroups yet). Checks the id, and that its process runs.
fn draft_entry(ctx: &Ctx, state: &State, spec: &Spec, req: &Request) -> Result<Entry> {
    let id = state.id().clone();
    check_id(&id)?;
    let pid = state.pid().filter(|p| *p > 0).ok_or_else(|| {
        Error::Oci(format!("container {id}: the state has no pid: run this hook at createRuntime or prestart"))
    })?;
    let start_time =
        ctx.sys.start_time(pid).ok_or_else(|| Error::Oci(format!("container {id}: pid {pid} is not running")))?;
    let (uid, gid) = user_of(spec);
    let ports = req
        .bridges
        .iter()
        .map(|b| PortAlloc {
            name: switch::port_name(&id, b),
            bridge: b.clone(),
            socket: ctx.cfg.sock_dir(&id).join(format!("{b}.sock")),
            mac: switch::port_mac(&id, b),
            port_security: Some(ctx.cfg.port_security),
            vlan: req.vlan,
            mtu: req.mtu,
        })
        .collect();
    Ok(Entry {
        status: Status::Creating,
        pid,
        start_time,
        bundle: state.bundle().clone(),
        uid,
        gid,
        cores: vec![],
        cores_from_runtime: false,
        numa_node: None,
        numa_note: None,
        hugepages: req.hugepages.map(|h| HugeAlloc { bytes: h.bytes, page_size: h.page_size }),
        sock_dir: (!req.bridges.is_empty()).then(|| ctx.cfg.sock_dir(&id)),
        ports,
        vfs: vec![],
        inject: req.inject,
        cgroups: vec![],
        config: None,
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        labels: crate::ledger::ContainerLabels::default(),
        id,
        owner: fastpath_host::ledger::Owner::Hook,
        cni: None,
    })
}

/// Under the ledger lock: refuses an id that already holds resources, picks free VFs and
/// cores for `e` (the cores on one NUMA node with the VFs and hugepages where it can, or the
/// runtime's), records where they ended up, and records it as creating.
fn reserve(
    ctx: &Ctx,
    req: &Request,
    source: &CoreSource,
    ann: &BTreeMap<String, String>,
    mut e: Entry,
) -> Result<Entry> {
    ctx.ledger.update(|l| {
        if let Some(old) = l.containers.get(&e.id) {
            return Err(Error::Refused(format!(
                "container id {} already holds resources in the ledger {}: {}",
                e.id,
                ctx.ledger.path().display(),
                holder(ctx.sys, old)
            )));
        }
        e.vfs = devices::pick(&ctx.pci, ctx.cfg, &req.vfs, ann.get(VF).map_or("", String::as_str), &held_vfs(ctx, l))?;
        let topo = Topology::read(ctx.sys, &ctx.sysfs);
        let vf_nodes: Vec<(String, Option<u32>)> =
            e.vfs.iter().map(|v| (v.pci.clone(), topo.device_node(ctx.sys, &v.pci))).collect();
        let huge = e.hugepages.map(|h| (h.page_size, h.bytes / h.page_size));
        match source {
            CoreSource::Pool(n) => {
                let want = vf_nodes.iter().find_map(|(_, n)| *n);
                e.cores = pick_cores(ctx, l, *n, ann.get(CORES).map_or("", String::as_str), &topo, want, huge)?;
            }
            CoreSource::Runtime(cores) => {
                let held = held_cores(ctx, l);
                for (c, h) in cores.iter().filter_map(|c| held.get(c).map(|h| (c, h))) {
                    tracing::warn!("container {}: the runtime gave it core {c}, which {h} holds too", e.id);
                    eprintln!("fastpath-hook: warning: container {}: the runtime gave it core {c}, which {h} holds too (keep the kubelet's reserved/exclusive CPUs out of the hook's cores pool)", e.id);
                }
                e.cores.clone_from(cores);
                e.cores_from_runtime = true;
            }
        }
        let placed = topo.assess(ctx.sys, &e.cores, &vf_nodes, huge);
        (e.numa_node, e.numa_note) = (placed.node, placed.note);
        l.containers.insert(e.id.clone(), e.clone());
        Ok(e)
    })
}

/// The cores the containers in `l` hold (the pool's and the runtime's), with who holds each.
fn held_cores(ctx: &Ctx, l: &LedgerData) -> BTreeMap<usize, String> {
    l.containers
        .values()
        .flat_map(|e| e.cores.iter().map(move |c| (*c, e)))
        .map(|(c, e)| (c, holder(ctx.sys, e)))
        .collect()
}

/// `n` cores of the pool that no container in `l` holds (`value`: the annotation, for the
/// error): on one NUMA node of `topo` where it can (node `want` first, one whose free
/// hugepages cover `huge` (page size, pages) before one whose don't), else the lowest.
fn pick_cores(
    ctx: &Ctx,
    l: &LedgerData,
    n: usize,
    value: &str,
    topo: &Topology,
    want: Option<u32>,
    huge: Option<(u64, u64)>,
) -> Result<Vec<usize>> {
    if n == 0 {
        return Ok(vec![]);
    }
    let held = held_cores(ctx, l);
    let lowest = cores::pick(&ctx.cfg.cores, &held, n)
        .map_err(|e| Error::annotation(CORES, value, format!("cannot be met: {e}")))?;
    let free: Vec<usize> = ctx.cfg.cores.iter().copied().filter(|c| !held.contains_key(c)).collect();
    let fits =
        |node: u32| huge.is_none_or(|(ps, pages)| topo.free_hugepages(ctx.sys, node, ps).is_none_or(|f| f >= pages));
    Ok(topo.pick_on_one_node(&free, n, want, fits).unwrap_or(lowest))
}

/// The VFs the containers in `l` hold, by PCI address, with who holds each.
fn held_vfs(ctx: &Ctx, l: &LedgerData) -> BTreeMap<String, String> {
    l.containers
        .values()
        .flat_map(|e| e.vfs.iter().map(move |v| (v.pci.clone(), e)))
        .map(|(p, e)| (p, holder(ctx.sys, e)))
        .collect()
}

/// Applies what `entry` reserved and records the container as ready. On failure, undoes
/// what was applied and drops the entry from the ledger.
fn apply_or_undo(ctx: &Ctx, entry: &Entry, pre: &Preflight) -> Result<Entry> {
    let finish = || -> Result<Entry> {
        let mut e = entry.clone();
        let memlock = apply(ctx, &mut e, pre)?;
        e.config = Some(container_config(&e, memlock));
        e.status = Status::Ready;
        ctx.ledger.update(|l| {
            l.containers.insert(e.id.clone(), e.clone());
            Ok(())
        })?;
        Ok(e)
    };
    finish().or_else(|err| {
        for w in release_effects(ctx, entry, false) {
            tracing::warn!("undoing container {}: {w}", entry.id);
        }
        forget(ctx, entry)?;
        Err(err)
    })
}

/// The side effects of createRuntime, in order; the caller undoes them on error. Fills in
/// the VFs' device numbers once they are on vfio-pci.
fn apply(ctx: &Ctx, e: &mut Entry, pre: &Preflight) -> Result<Option<nc::Memlock>> {
    if let Some(dir) = &e.sock_dir {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        ctx.sys.mkdir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        ctx.sys.mkdir_owned(dir, 0o700, e.uid, e.gid).map_err(io(format!("creating {}", dir.display())))?;
    }
    for p in &e.ports {
        ctx.switch
            .add_port(&switch_port(ctx, e, p))
            .map_err(|err| Error::annotation(VHOST_USER, &p.bridge, format!("adding port {}: {err}", p.name)))?;
    }
    if let Some(d) = &pre.cpuset {
        cgroup::set_cpus(ctx.sys, d, &cores::format_list(&e.cores))?;
    }
    if let (Some(d), Some(h)) = (&pre.hugetlb, e.hugepages) {
        cgroup::set_hugetlb(ctx.sys, d, h.page_size, h.bytes)?;
    }
    devices::bind(&ctx.pci, &mut e.vfs)?;
    if let Some(d) = &pre.devices {
        for (_, major, minor) in devices::nodes(&e.vfs) {
            cgroup::allow_char_device(ctx.sys, d, major, minor)?;
        }
    }
    if let Some(rules) = &pre.devices_by_runtime {
        for (node, major, minor) in devices::nodes(&e.vfs) {
            if !devices::runtime_allows(rules, major, minor) {
                return Err(Error::annotation(
                    VF,
                    &e.vfs.iter().map(|v| v.pci.as_str()).collect::<Vec<_>>().join(","),
                    format!(
                        "{} (c {major}:{minor}) is not allowed by the runtime's device rules \
                         (linux.resources.devices), which it set up itself: ask for this VF \
                         through CDI (--device fastpath.io/vf=PCI)",
                        node.display()
                    ),
                ));
            }
        }
    }
    let (wanted, plan) = &pre.memlock;
    let memlock = match plan {
        MemlockPlan::Keep(s, h) => {
            (*wanted > 0).then_some(nc::Memlock { wanted: *wanted, soft: *s, hard: *h, note: None })
        }
        MemlockPlan::Raise(s, h) => {
            ctx.sys.set_memlock(e.pid, *s, *h).map_err(io(format!(
                "raising RLIMIT_MEMLOCK of pid {} to {} (hard {})",
                e.pid,
                format_size(*s),
                format_size(*h)
            )))?;
            Some(nc::Memlock { wanted: *wanted, soft: *s, hard: *h, note: None })
        }
        MemlockPlan::Short(s, h, why) => {
            tracing::warn!("container {}: {why}", e.id);
            eprintln!("fastpath-hook: warning: container {}: {why}", e.id);
            Some(nc::Memlock { wanted: *wanted, soft: *s, hard: *h, note: Some(why.clone()) })
        }
    };
    Ok(memlock)
}

/// What the hook asks of the switch for the container's port `p`: the ledger's account of it
/// ([`Entry::port_config`]), with hook.toml's `port_security` where the ledger is from before
/// the hook recorded it.
pub(crate) fn switch_port(ctx: &Ctx, e: &Entry, p: &PortAlloc) -> fastpath_host::proto::PortConfig {
    with_hook_defaults(ctx, e.port_config(p))
}

/// `c` with hook.toml's `port_security` where it says none.
fn with_hook_defaults(ctx: &Ctx, mut c: fastpath_host::proto::PortConfig) -> fastpath_host::proto::PortConfig {
    c.port_security = c.port_security.or(Some(ctx.cfg.port_security));
    c
}

/// The config.json the container gets.
fn container_config(e: &Entry, memlock: Option<nc::Memlock>) -> nc::Config {
    nc::Config {
        version: nc::VERSION,
        container_id: e.id.clone(),
        cores: e.cores.clone(),
        hugepages: e.hugepages.map(|h| nc::Hugepages {
            dir: mounts::HUGEPAGES_DIR.into(),
            page_size: h.page_size,
            bytes: h.bytes,
        }),
        ports: e
            .ports
            .iter()
            .map(|p| nc::PortInfo {
                name: p.name.clone(),
                bridge: p.bridge.clone(),
                socket: Path::new(mounts::SOCK_DIR).join(format!("{}.sock", p.bridge)),
                mode: "client".into(),
                mac: (!p.mac.is_empty()).then(|| p.mac.clone()),
            })
            .collect(),
        vfs: e
            .vfs
            .iter()
            .map(|v| nc::VfInfo {
                pci: v.pci.clone(),
                iommu_group: v.group,
                devices: vec!["/dev/vfio/vfio".into(), format!("/dev/vfio/{}", v.group).into()],
            })
            .collect(),
        lib_dir: e.inject.then(|| mounts::LIB_DIR.into()),
        memlock,
        uid: e.uid,
        gid: e.gid,
    }
}

/// Undoes the side effects an entry records (ports, VFs the hook bound to vfio-pci go back
/// to their drivers, socket directory; with `cgroups`, the emptied cgroup directories).
/// Idempotent; returns what could not be undone.
pub fn release_effects(ctx: &Ctx, e: &Entry, cgroups: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    for p in &e.ports {
        if let Err(err) = ctx.switch.del_port(&p.name) {
            warnings.push(format!("deleting port {}: {err}", p.name));
        }
    }
    warnings.extend(devices::release(&ctx.pci, &e.vfs));
    if let Some(d) = &e.sock_dir {
        if let Err(err) = ctx.sys.remove_all(d) {
            warnings.push(format!("removing {}: {err}", d.display()));
        }
    }
    if cgroups {
        for d in e.cgroups.iter().filter(|d| ctx.sys.exists(d)) {
            if !cgroup::is_empty(ctx.sys, d) {
                warnings.push(format!("{} still has processes; left alone", d.display()));
            } else if let Err(err) = ctx.sys.rmdir(d) {
                warnings.push(format!("removing {}: {err}", d.display()));
            }
        }
    }
    warnings
}

/// Removes an entry from the ledger if it is still the same one (same pid and start).
fn forget(ctx: &Ctx, e: &Entry) -> Result<()> {
    ctx.ledger.update(|l| {
        if l.containers.get(&e.id).is_some_and(|x| x.pid == e.pid && x.start_time == e.start_time) {
            l.containers.remove(&e.id);
        }
        Ok(())
    })
}

/// createContainer: in the container's mount namespace, before pivot_root, makes the mounts
/// the ledger entry calls for. On failure releases the entry (the container will not start).
/// `Ok(false)`: not a fastpath container.
pub fn create_container(ctx: &Ctx, state: &State, spec: &Spec) -> Result<bool> {
    let ann = annotations_of(state, spec);
    let ours = ann.keys().any(|k| k.starts_with(annotations::PREFIX));
    let id = state.id().clone();
    let entry = ctx.ledger.read()?.containers.get(&id).cloned();
    let Some(entry) = entry else {
        if ours {
            return Err(Error::Oci(format!(
                "container {id}: no ledger entry in {}: the createRuntime stage did not run (install the hook for createRuntime too)",
                ctx.ledger.path().display()
            )));
        }
        return Ok(false);
    };
    if entry.status != Status::Ready {
        return Err(Error::Oci(format!("container {id}: ledger entry is still {:?}", entry.status)));
    }
    let rootfs = rootfs_of(state, spec);
    if let Err(err) = mounts::apply(ctx.sys, &rootfs, &entry, &ctx.cfg.lib_dir) {
        for w in release_effects(ctx, &entry, false) {
            tracing::warn!("undoing container {id}: {w}");
        }
        forget(ctx, &entry)?;
        return Err(err);
    }
    Ok(true)
}

/// poststop: releases what the ledger says container `id` holds. Returns the entry released.
pub fn poststop(ctx: &Ctx, id: &str) -> Result<Option<(Entry, Vec<String>)>> {
    let entry = ctx.ledger.read()?.containers.get(id).cloned();
    let Some(e) = entry else { return Ok(None) };
    let warnings = release_effects(ctx, &e, false);
    forget(ctx, &e)?;
    Ok(Some((e, warnings)))
}

/// What one `gc` pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Containers whose holdings were released.
    pub released: Vec<String>,
    /// Switch ports named by the hook that no entry held, deleted.
    pub orphan_ports: Vec<String>,
    /// Ports of live containers the switch had lost (a restart without its state), added back.
    pub restored_ports: Vec<String>,
    /// Socket directories no entry held, removed.
    pub orphan_dirs: Vec<PathBuf>,
    /// What could not be undone.
    pub warnings: Vec<String>,
}

/// gc: under the ledger lock (so no createRuntime reserves meanwhile), releases every entry
/// whose container process is gone, then reconciles the switch with what is left
/// ([`fastpath_host::ledger::plan`], the rule fastpathd follows at start too): the hook's
/// ports that no entry holds go, and the ports of ready containers that the switch lacks come
/// back. Last, the socket directories no entry holds go.
pub fn gc(ctx: &Ctx) -> Result<GcReport> {
    ctx.ledger.update(|l: &mut LedgerData| {
        let mut r = GcReport::default();
        let dead: Vec<Entry> = l.containers.values().filter(|e| !alive(ctx.sys, e)).cloned().collect();
        for e in dead {
            r.warnings.extend(release_effects(ctx, &e, true).into_iter().map(|w| format!("container {}: {w}", e.id)));
            r.released.push(e.id.clone());
            l.containers.remove(&e.id);
        }
        match ctx.switch.ports() {
            Ok(names) => {
                let held: Vec<HeldPort> = names.iter().map(|name| HeldPort { name, container: None }).collect();
                // Every entry left is alive: the dead were released above.
                let plan = fastpath_host::ledger::plan(l, &held, |_| true);
                for p in plan.remove {
                    match ctx.switch.del_port(&p) {
                        Ok(_) => r.orphan_ports.push(p),
                        Err(e) => r.warnings.push(format!("deleting orphan port {p}: {e}")),
                    }
                }
                for c in plan.add {
                    let who = c.container.clone().unwrap_or_default();
                    match ctx.switch.add_port(&with_hook_defaults(ctx, c.clone())) {
                        Ok(()) => r.restored_ports.push(c.name),
                        Err(e) => r.warnings.push(format!("container {who}: adding back port {}: {e}", c.name)),
                    }
                }
            }
            Err(e) => r.warnings.push(format!("switch ports not checked: {e}")),
        }
        let sock_root = ctx.cfg.state_dir.join("sock");
        let held_dirs: BTreeSet<&Path> = l.containers.values().filter_map(|e| e.sock_dir.as_deref()).collect();
        for name in ctx.sys.list_dir(&sock_root).unwrap_or_default() {
            let d = sock_root.join(name);
            if !held_dirs.contains(d.as_path()) {
                match ctx.sys.remove_all(&d) {
                    Ok(()) => r.orphan_dirs.push(d),
                    Err(e) => r.warnings.push(format!("removing {}: {e}", d.display())),
                }
            }
        }
        Ok(r)
    })
}

#[cfg(test)]
mod tests;
