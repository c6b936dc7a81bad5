// ADD, DEL, CHECK, GC and STATUS against fastpathd and the hook's ledger: a vhost-user port per
// attachment, its socket in a per-pod directory, a device-info file and an app config beside it.
//! The CNI commands.

use crate::env::{CniEnv, Command};
use crate::error::{
    CniError, Result, CHECK_FAILED, INVALID_CONFIG, NOT_AVAILABLE, REFUSED, TRY_AGAIN, UNKNOWN_CONTAINER,
};
use crate::ipam;
use crate::netconf::NetConf;
use crate::result::{self, Interface};
use fastpath_hook::hostconfig::HostConfig;
use fastpath_hook::hugetlb::{self, format_size};
use fastpath_hook::ledger::{Entry, HugeAlloc, Ledger, PortAlloc, Status};
use fastpath_hook::stages;
use fastpath_hook::switch::{self, SwitchCtl, PORT_PREFIX};
use fastpath_hook::sys::Sys;
use fastpath_host::ledger::{CniAttachment, ContainerLabels, Owner};
use netlib::config as nc;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What every command works with.
pub struct Ctx<'a> {
    /// The hook's host configuration (core pool, switch socket, state directory).
    pub cfg: &'a HostConfig,
    /// File system and process calls.
    pub sys: &'a dyn Sys,
    /// fastpathd.
    pub switch: &'a dyn SwitchCtl,
    /// The hook's ledger.
    pub ledger: Ledger,
}

impl<'a> Ctx<'a> {
    /// A context over the ledger in `cfg.state_dir`.
    pub fn new(cfg: &'a HostConfig, sys: &'a dyn Sys, switch: &'a dyn SwitchCtl) -> Self {
        Self { cfg, sys, switch, ledger: Ledger::new(&cfg.state_dir) }
    }
}

/// Where one attachment's things are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The ledger key and the port's `container`: `CONTAINERID/IFNAME`.
    pub key: String,
    /// The port's name on fastpathd: `fp-CONTAINERID-IFNAME`.
    pub port: String,
    /// The pod's socket directory: `socketDir/CONTAINERID`.
    pub pod_dir: PathBuf,
    /// The vhost-user socket: `socketDir/CONTAINERID/IFNAME.sock`.
    pub socket: PathBuf,
    /// The app config (netlib's config.json format): `socketDir/CONTAINERID/IFNAME.json`.
    pub app_config: PathBuf,
    /// The device-info file.
    pub device_info: PathBuf,
}

impl Names {
    /// The names for the attachment `env` describes on the network `conf`.
    pub fn of(conf: &NetConf, env: &CniEnv) -> Self {
        let (id, ifname) = (&env.container_id, &env.ifname);
        let pod_dir = conf.socket_dir.join(id);
        Self {
            key: format!("{id}/{ifname}"),
            port: format!("{PORT_PREFIX}{id}-{ifname}"),
            socket: pod_dir.join(format!("{ifname}.sock")),
            app_config: pod_dir.join(format!("{ifname}.json")),
            device_info: conf
                .device_info_file
                .clone()
                .unwrap_or_else(|| conf.device_info_dir.join(format!("{}-{id}-{ifname}-device.json", conf.name))),
            pod_dir,
        }
    }
}

/// ADD: checks the request against hook.toml and fastpathd, reserves it in the ledger, adds
/// the port, writes the device-info file and the app config, delegates to the IPAM plugin if
/// the config names one, and returns the result. On failure, undoes what it did.
pub fn add(ctx: &Ctx, conf: &NetConf, env: &CniEnv, raw: &str) -> Result<Value> {
    let n = Names::of(conf, env);
    let s = &conf.settings;
    if n.socket.as_os_str().len() > 107 {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!(
                "socketDir: '{}' makes the socket path {} longer than a unix socket allows (108 bytes)",
                conf.socket_dir.display(),
                n.socket.display()
            ),
        ));
    }
    if s.cores > ctx.cfg.max_cores {
        return Err(CniError::new(
            REFUSED,
            format!("cores: {} is more than max_cores = {} in {}", s.cores, ctx.cfg.max_cores, ctx.cfg.shown()),
        ));
    }
    let hugepages = huge_alloc(ctx, s.hugepages)?;
    let bridges = ctx.switch.bridges().map_err(|e| CniError::new(TRY_AGAIN, e.to_string()))?;
    if !bridges.contains(&conf.bridge) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!(
                "bridge: '{}' does not exist on fastpathd at {} (bridges: {})",
                conf.bridge,
                ctx.switch.socket().display(),
                if bridges.is_empty() { "none".into() } else { bridges.join(", ") }
            ),
        ));
    }
    let mac = switch::port_mac(&env.container_id, &env.ifname);
    let entry = reserve(ctx, conf, env, &n, &mac, hugepages)?;
    let done = apply(ctx, conf, env, &n, &entry, raw);
    match done {
        Ok(ipam) => Ok(result::add_result(
            &conf.cni_version,
            &Interface { name: &env.ifname, mac: &mac, sandbox: &env.netns, socket: &n.socket, mtu: s.mtu },
            ipam.as_ref(),
            conf.prev_result.as_ref(),
        )),
        Err(e) => {
            for w in release(ctx, &n, false) {
                eprintln!("fastpath-cni: undoing ADD of {}: {w}", n.key);
            }
            if let Some(i) = &conf.ipam {
                let _ = ipam_call(i, Command::Del, env, raw);
            }
            forget(ctx, &n.key)?;
            Err(e)
        }
    }
}

/// The hugepages of a request, checked against hook.toml and the host's free pages.
fn huge_alloc(ctx: &Ctx, bytes: u64) -> Result<Option<HugeAlloc>> {
    if bytes == 0 {
        return Ok(None);
    }
    let page = ctx.cfg.default_hugepage_size;
    let shown = format_size(bytes);
    if !bytes.is_multiple_of(page) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!(
                "hugepages: '{shown}' is not a whole number of {} pages (default_hugepage_size)",
                format_size(page)
            ),
        ));
    }
    if bytes > ctx.cfg.max_hugepages {
        return Err(CniError::new(
            REFUSED,
            format!(
                "hugepages: '{shown}' is more than max_hugepages = {} in {}",
                format_size(ctx.cfg.max_hugepages),
                ctx.cfg.shown()
            ),
        ));
    }
    let free = hugetlb::free_pages(ctx.sys, page).unwrap_or(0);
    if free < bytes / page {
        return Err(CniError::new(
            REFUSED,
            format!(
                "hugepages: '{shown}' needs {} free {} hugepages; the host has {free}",
                bytes / page,
                format_size(page)
            ),
        ));
    }
    Ok(Some(HugeAlloc { bytes, page_size: page }))
}

/// Under the ledger lock: refuses an attachment that exists, picks free cores, and records
/// the attachment as creating.
fn reserve(
    ctx: &Ctx,
    conf: &NetConf,
    env: &CniEnv,
    n: &Names,
    mac: &str,
    hugepages: Option<HugeAlloc>,
) -> Result<Entry> {
    let s = &conf.settings;
    Ok(ctx.ledger.update(|l| {
        if let Some(old) = l.containers.get(&n.key) {
            return Err(fastpath_hook::Error::Refused(format!(
                "{} is already in the ledger {}: DEL it first",
                old.who(),
                ctx.ledger.path().display()
            )));
        }
        let cores = if s.cores == 0 {
            vec![]
        } else {
            let held: BTreeMap<usize, String> = l
                .containers
                .values()
                .flat_map(|e| e.cores.iter().map(move |c| (*c, stages::holder(ctx.sys, e))))
                .collect();
            fastpath_hook::cores::pick(&ctx.cfg.cores, &held, s.cores)
                .map_err(|e| fastpath_hook::Error::Refused(format!("cores: {} cannot be met: {e}", s.cores)))?
        };
        let (uid, gid) = (s.uid.unwrap_or(0), s.gid.or(s.uid).unwrap_or(0));
        let e = Entry {
            status: Status::Creating,
            gid,
            cores,
            hugepages,
            // What the hook's gc removes once the pod's netns is gone (with every attachment of
            // the pod, which share it); DEL removes only its own files.
            sock_dir: Some(n.pod_dir.clone()),
            ports: vec![PortAlloc {
                name: n.port.clone(),
                bridge: conf.bridge.clone(),
                socket: n.socket.clone(),
                mac: mac.to_string(),
                port_security: Some(s.port_security.unwrap_or(ctx.cfg.port_security)),
                vlan: s.vlan,
                // In 68..=9198, checked when the config was read.
                mtu: s.mtu.and_then(|m| u16::try_from(m).ok()),
            }],
            created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            owner: Owner::Cni,
            cni: Some(CniAttachment {
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                netns: env.netns.clone(),
                network: conf.name.clone(),
                pod_namespace: env.pod_namespace(),
                pod_name: env.pod_name(),
                device_info: Some(n.device_info.clone()),
            }),
            // The pod's labels on the port's metrics, as the hook gives a container's.
            labels: ContainerLabels { name: None, pod_name: env.pod_name(), pod_namespace: env.pod_namespace() },
            ..Entry::new(&n.key, 0, 0, uid)
        };
        l.containers.insert(n.key.clone(), e.clone());
        Ok(e)
    })?)
}

/// The side effects of ADD, in order; the caller undoes them on error. Returns the IPAM
/// plugin's result, if one was delegated to.
fn apply(ctx: &Ctx, conf: &NetConf, env: &CniEnv, n: &Names, e: &Entry, raw: &str) -> Result<Option<Value>> {
    let io =
        |what: String| move |err: std::io::Error| CniError::new(crate::error::IO_FAILURE, format!("{what}: {err}"));
    ctx.sys.mkdir_all(&conf.socket_dir).map_err(io(format!("socketDir: creating {}", conf.socket_dir.display())))?;
    ctx.sys.mkdir_owned(&n.pod_dir, 0o755, e.uid, e.gid).map_err(io(format!("creating {}", n.pod_dir.display())))?;
    let port = &e.ports[0];
    ctx.switch.add_port(&e.port_config(port)).map_err(|err| {
        CniError::new(crate::error::SWITCH, format!("bridge '{}': adding port {}: {err}", conf.bridge, port.name))
    })?;
    let cfg = app_config(e, port);
    let text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
    ctx.sys
        .create_file(&n.app_config, text.as_bytes(), 0o644)
        .map_err(io(format!("writing {}", n.app_config.display())))?;
    if let Some(dir) = n.device_info.parent() {
        ctx.sys.mkdir_all(dir).map_err(io(format!("deviceInfoDir: creating {}", dir.display())))?;
    }
    let info = result::device_info(&n.socket).to_string();
    ctx.sys
        .create_file(&n.device_info, info.as_bytes(), 0o644)
        .map_err(io(format!("writing {}", n.device_info.display())))?;
    let ipam = match &conf.ipam {
        Some(i) => ipam_call(i, Command::Add, env, raw)?,
        None => None,
    };
    let mut ready = e.clone();
    ready.status = Status::Ready;
    ready.config = Some(cfg);
    ctx.ledger.update(|l| {
        l.containers.insert(n.key.clone(), ready);
        Ok(())
    })?;
    Ok(ipam)
}

fn ipam_call(i: &serde_json::Map<String, Value>, cmd: Command, env: &CniEnv, raw: &str) -> Result<Option<Value>> {
    let ty = i.get("type").and_then(Value::as_str).unwrap_or_default();
    ipam::delegate(ty, cmd, env, raw)
}

/// What an app in the pod reads to find its port (netlib's config.json format: point
/// `FASTPATH_CONFIG` at it): the socket at its host path (the pod mounts `socketDir` at the
/// same path), the MAC, the reserved cores.
fn app_config(e: &Entry, p: &PortAlloc) -> nc::Config {
    nc::Config {
        version: nc::VERSION,
        container_id: e.id.clone(),
        cores: e.cores.clone(),
        hugepages: None,
        ports: vec![nc::PortInfo {
            name: p.name.clone(),
            bridge: p.bridge.clone(),
            socket: p.socket.clone(),
            mode: "client".into(),
            mac: Some(p.mac.clone()),
        }],
        vfs: vec![],
        lib_dir: None,
        memlock: None,
        uid: e.uid,
        gid: e.gid,
    }
}

/// Undoes what an attachment's ADD did on fastpathd and on disk (the port, the socket, the
/// app config, the device-info file, the pod's directory once empty). Idempotent; returns
/// what could not be undone. With `quiet_switch`, a fastpathd that does not answer is no
/// warning (its restart reconciles its ports with the ledger).
pub fn release(ctx: &Ctx, n: &Names, quiet_switch: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(err) = ctx.switch.del_port(&n.port) {
        if !quiet_switch {
            warnings.push(format!("deleting port {}: {err}", n.port));
        }
    }
    for f in [&n.socket, &n.app_config, &n.device_info] {
        if let Err(err) = ctx.sys.remove_all(f) {
            warnings.push(format!("removing {}: {err}", f.display()));
        }
    }
    if ctx.sys.list_dir(&n.pod_dir).is_ok_and(|d| d.is_empty()) {
        if let Err(err) = ctx.sys.rmdir(&n.pod_dir) {
            warnings.push(format!("removing {}: {err}", n.pod_dir.display()));
        }
    }
    warnings
}

fn forget(ctx: &Ctx, key: &str) -> Result<()> {
    Ok(ctx.ledger.update(|l| {
        l.containers.remove(key);
        Ok(())
    })?)
}

/// The names of an attachment as its ADD recorded them (`e`), else as `conf` gives them.
fn recorded(conf: &NetConf, env: &CniEnv, e: Option<&Entry>) -> Names {
    let mut n = Names::of(conf, env);
    if let Some(e) = e {
        if let Some(p) = e.ports.first() {
            n.port.clone_from(&p.name);
            n.socket.clone_from(&p.socket);
            n.pod_dir = p.socket.parent().map_or(n.pod_dir, Path::to_path_buf);
            n.app_config = n.pod_dir.join(format!("{}.json", env.ifname));
        }
        if let Some(d) = e.cni.as_ref().and_then(|c| c.device_info.clone()) {
            n.device_info = d;
        }
    }
    n
}

/// DEL: releases what the ledger says the attachment holds, and what its names would be
/// if the ledger lost it; then forgets it. Succeeds when there is nothing (DEL twice, DEL
/// after a failed ADD, DEL without ADD); what could not be undone is said on stderr.
pub fn del(ctx: &Ctx, conf: &NetConf, env: &CniEnv, raw: &str) -> Result<()> {
    let key = Names::of(conf, env).key;
    let entry = ctx.ledger.read()?.containers.get(&key).cloned();
    let n = recorded(conf, env, entry.as_ref());
    for w in release(ctx, &n, true) {
        eprintln!("fastpath-cni: DEL {key}: {w}");
    }
    if let Some(i) = &conf.ipam {
        ipam_call(i, Command::Del, env, raw)?;
    }
    forget(ctx, &key)
}

/// CHECK: the attachment is in the ledger, its port is on fastpathd on the configured bridge
/// with its link up (the pod's app drives it), its socket and device-info file exist.
pub fn check(ctx: &Ctx, conf: &NetConf, env: &CniEnv) -> Result<()> {
    let key = Names::of(conf, env).key;
    let entry = ctx.ledger.read()?.containers.get(&key).cloned().ok_or_else(|| {
        CniError::new(
            UNKNOWN_CONTAINER,
            format!("{key}: no such attachment in the ledger {} (no ADD, or DEL since)", ctx.ledger.path().display()),
        )
    })?;
    if entry.status != Status::Ready {
        return Err(CniError::new(
            CHECK_FAILED,
            format!("{key}: its ADD did not finish (ledger status {:?})", entry.status),
        ));
    }
    let n = recorded(conf, env, Some(&entry));
    let bad = |msg: String| CniError::new(CHECK_FAILED, format!("{key}: {msg}"));
    // The result ADD gave, as the runtime kept it: our interface with the MAC we gave.
    let ours = conf
        .prev_result
        .as_ref()
        .and_then(|r| r.get("interfaces"))
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|i| i["name"] == env.ifname.as_str() && i.get("socketPath").is_some()));
    let mac = entry.ports.first().map(|p| p.mac.as_str()).unwrap_or_default();
    if let Some(i) = ours.filter(|i| i["mac"] != mac) {
        return Err(bad(format!("prevResult: interface {} has MAC {}, the port has {mac}", env.ifname, i["mac"])));
    }
    match ctx.switch.port_link(&n.port).map_err(|e| CniError::new(TRY_AGAIN, e.to_string()))? {
        None => {
            return Err(bad(format!("port {} is gone from fastpathd at {}", n.port, ctx.switch.socket().display())))
        }
        Some((b, _)) if b != conf.bridge => {
            return Err(bad(format!("port {} is on bridge '{b}', not on bridge '{}'", n.port, conf.bridge)))
        }
        Some((_, false)) => {
            return Err(bad(format!(
                "port {}: link down (no app in the pod has connected to {})",
                n.port,
                n.socket.display()
            )))
        }
        Some((_, true)) => {}
    }
    for f in [&n.socket, &n.device_info] {
        if !ctx.sys.exists(f) {
            return Err(bad(format!("{} is missing", f.display())));
        }
    }
    Ok(())
}

/// GC (1.1): releases every attachment of this network that is not among `cni.dev/attachments`.
pub fn gc(ctx: &Ctx, conf: &NetConf) -> Result<Vec<String>> {
    let keep = conf.valid_attachments.clone().unwrap_or_default();
    let gone: Vec<Entry> = ctx
        .ledger
        .read()?
        .containers
        .into_values()
        .filter(|e| {
            e.cni.as_ref().is_some_and(|c| {
                e.owner == Owner::Cni
                    && c.network == conf.name
                    && !keep.iter().any(|(id, i)| *id == c.container_id && *i == c.ifname)
            })
        })
        .collect();
    let mut released = Vec::new();
    for e in gone {
        let Some(c) = e.cni.clone() else { continue };
        let env = CniEnv { container_id: c.container_id, ifname: c.ifname, netns: c.netns, ..CniEnv::default() };
        let n = recorded(conf, &env, Some(&e));
        for w in release(ctx, &n, true) {
            eprintln!("fastpath-cni: GC {}: {w}", e.id);
        }
        forget(ctx, &e.id)?;
        released.push(e.id);
    }
    Ok(released)
}

/// STATUS (1.1): fastpathd answers and has the bridge.
pub fn status(ctx: &Ctx, conf: &NetConf) -> Result<()> {
    let bridges = ctx.switch.bridges().map_err(|e| CniError::new(NOT_AVAILABLE, e.to_string()))?;
    if bridges.contains(&conf.bridge) {
        Ok(())
    } else {
        Err(CniError::new(
            NOT_AVAILABLE,
            format!("bridge: '{}' does not exist on fastpathd at {}", conf.bridge, ctx.switch.socket().display()),
        ))
    }
}

#[cfg(test)]
mod tests;
