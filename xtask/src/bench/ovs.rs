// A private OVS-DPDK for one benchmark run: its own ovsdb and vswitchd under the sandbox
// directory (no system service), a netdev bridge with vhost-user ports; torn down with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::procs::{self, Spawn};
use crate::scratch::{ProcId, Sandbox};

/// The OVS-DPDK daemon shipped by `openvswitch-switch-dpdk`.
const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
/// The schema for a new database.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// OVS is slow to start: how long to wait for its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private OVS; its processes and files belong to the sandbox.
pub struct Ovs {
    dir: PathBuf,
    vswitchd: ProcId,
}

/// One vhost-user port of OVS's bridge.
enum VhostPort<'a> {
    /// `dpdkvhostuser`: OVS listens on `<run dir>/NAME`.
    Server(&'a str),
    /// `dpdkvhostuserclient`: OVS connects to a frontend listening on the path, and
    /// reconnects when either side comes back.
    Client(&'a str, &'a Path),
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd-dpdk (PMD thread on `pmd_cpu`), creates bridge
    /// `br0` (datapath netdev, the default NORMAL flow: a MAC-learning switch) with one
    /// `dpdkvhostuser` port per name in `ports` (OVS listens), and waits for their sockets.
    pub fn start(sb: &mut Sandbox, pmd_cpu: u8, ports: &[&str]) -> Result<Self> {
        let ports: Vec<VhostPort> = ports.iter().map(|&p| VhostPort::Server(p)).collect();
        Self::start_with(sb, 1 << pmd_cpu, &ports)
    }

    /// As [`Ovs::start`], with a PMD thread on each CPU of `pmd_mask`, each sleeping up to
    /// `max_sleep_us` when it finds no packets (`pmd-maxsleep`: for PMDs sharing their CPUs
    /// with other pollers; 0: they spin).
    pub fn start_pmds(sb: &mut Sandbox, pmd_mask: u32, max_sleep_us: u32, ports: &[&str]) -> Result<Self> {
        let ports: Vec<VhostPort> = ports.iter().map(|&p| VhostPort::Server(p)).collect();
        let ovs = Self::start_with(sb, pmd_mask, &ports)?;
        if max_sleep_us > 0 {
            ovs.vsctl(&["set", "Open_vSwitch", ".", &format!("other_config:pmd-maxsleep={max_sleep_us}")])?;
        }
        Ok(ovs)
    }

    /// As [`Ovs::start`], with one `dpdkvhostuserclient` port per (name, socket) in `ports`:
    /// OVS connects to frontends listening there (virtio-user in server mode), OVS's
    /// documented way for its ports to survive a restart of ovs-vswitchd.
    pub fn start_clients(sb: &mut Sandbox, pmd_cpu: u8, ports: &[(&str, &Path)]) -> Result<Self> {
        let ports: Vec<VhostPort> = ports.iter().map(|&(n, p)| VhostPort::Client(n, p)).collect();
        Self::start_with(sb, 1 << pmd_cpu, &ports)
    }

    fn start_with(sb: &mut Sandbox, pmd_mask: u32, ports: &[VhostPort]) -> Result<Self> {
        let dir = sb.path("ovs");
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let db = dir.join("conf.db");
        let db_sock = dir.join("db.sock");
        procs::run(
            cmd(&dir, "ovsdb-tool", "ovsdb-tool").args(["create".as_ref(), db.as_os_str(), SCHEMA.as_ref()]),
            Duration::from_secs(20),
        )?;
        sb.spawn(cmd(&dir, "ovsdb-server", "ovsdb-server").args([
            db.display().to_string(),
            format!("--remote=punix:{}", db_sock.display()),
            format!("--unixctl={}", dir.join("ovsdb.ctl").display()),
            format!("--log-file={}", dir.join("ovsdb.log").display()),
        ]))?;
        sb.wait_for_path(&db_sock, START_TIMEOUT)?;
        let prefix = sb.dpdk_prefix();
        vsctl(&dir, &["--no-wait", "init"])?;
        vsctl(
            &dir,
            &[
                "--no-wait",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:dpdk-init=true",
                &format!("other_config:dpdk-extra=--no-pci --file-prefix={prefix}"),
                "other_config:dpdk-socket-mem=512",
                &format!("other_config:pmd-cpu-mask={pmd_mask:#x}"),
            ],
        )?;
        let vswitchd = sb.spawn(vswitchd(&dir))?;
        let ovs = Self { dir, vswitchd };
        let mut args: Vec<String> =
            ["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"].map(String::from).into();
        for p in ports {
            let (name, settings) = match p {
                VhostPort::Server(n) => (*n, vec!["type=dpdkvhostuser".to_string()]),
                VhostPort::Client(n, path) => (
                    *n,
                    vec![
                        "type=dpdkvhostuserclient".to_string(),
                        format!("options:vhost-server-path={}", path.display()),
                    ],
                ),
            };
            args.extend(["--", "add-port", "br0", name, "--", "set", "Interface", name].map(String::from));
            args.extend(settings);
        }
        ovs.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        for p in ports {
            if let VhostPort::Server(name) = p {
                sb.wait_for_path(&ovs.socket(name), START_TIMEOUT).context("waiting for OVS's vhost-user socket")?;
            }
        }
        Ok(ovs)
    }

    /// Kills ovs-vswitchd with SIGKILL, as `kill -9` would (ovsdb-server keeps running).
    pub fn kill_vswitchd(&self, sb: &mut Sandbox) {
        sb.kill(self.vswitchd);
    }

    /// Starts ovs-vswitchd again with the same command line; it takes its bridge and ports
    /// from ovsdb.
    pub fn restart_vswitchd(&mut self, sb: &mut Sandbox) -> Result<()> {
        self.vswitchd = sb.spawn(vswitchd(&self.dir))?;
        Ok(())
    }

    /// Adds kernel interface `ifname` to `br0` as an `afxdp` port (OVS's AF_XDP netdev,
    /// one receive queue, polled by the PMD thread).
    pub fn add_afxdp(&self, ifname: &str) -> Result<()> {
        self.vsctl(&["add-port", "br0", ifname, "--", "set", "Interface", ifname, "type=afxdp", "options:n_rxq=1"])
    }

    /// Sets how many entries `br0`'s MAC learning table holds (OVS's default is 8,192).
    pub fn set_mac_table_size(&self, entries: u32) -> Result<()> {
        self.vsctl(&["set", "bridge", "br0", &format!("other_config:mac-table-size={entries}")])
    }

    /// The vhost-user socket of port `name` (OVS puts them in its run directory).
    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn vsctl(&self, args: &[&str]) -> Result<()> {
        vsctl(&self.dir, args)
    }
}

/// An OVS command whose run, log and database directories are `dir`.
fn cmd(dir: &Path, name: &str, program: &str) -> Spawn {
    Spawn::new(name, program).env("OVS_RUNDIR", dir).env("OVS_LOGDIR", dir).env("OVS_DBDIR", dir)
}

/// ovs-vswitchd-dpdk on the database in `dir`.
fn vswitchd(dir: &Path) -> Spawn {
    cmd(dir, "ovs-vswitchd", VSWITCHD).args([
        format!("unix:{}", dir.join("db.sock").display()),
        format!("--pidfile={}", dir.join("vswitchd.pid").display()),
        format!("--log-file={}", dir.join("vswitchd.log").display()),
    ])
}

/// ovs-vsctl on the database in `dir`.
fn vsctl(dir: &Path, args: &[&str]) -> Result<()> {
    let db = format!("--db=unix:{}", dir.join("db.sock").display());
    let timeout = format!("--timeout={}", START_TIMEOUT.as_secs());
    procs::run(
        cmd(dir, "ovs-vsctl", "ovs-vsctl").args([db.as_str(), timeout.as_str()]).args(args),
        START_TIMEOUT + Duration::from_secs(5),
    )?;
    Ok(())
}
