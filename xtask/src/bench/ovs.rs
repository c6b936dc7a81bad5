// A private OVS-DPDK for one benchmark run: its own ovsdb and vswitchd under the sandbox
// directory (no system service), a netdev bridge with dpdkvhostuser ports; torn down with it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::procs::{self, Spawn};
use crate::scratch::Sandbox;

/// The OVS-DPDK daemon shipped by `openvswitch-switch-dpdk`.
const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
/// The schema for a new database.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// OVS is slow to start: how long to wait for its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private OVS; its processes and files belong to the sandbox.
pub struct Ovs {
    dir: PathBuf,
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd-dpdk (PMD thread on `pmd_cpu`), creates bridge
    /// `br0` (datapath netdev, the default NORMAL flow: a MAC-learning switch) with one
    /// `dpdkvhostuser` port per name in `ports` (OVS listens), and waits for their sockets.
    pub fn start(sb: &mut Sandbox, pmd_cpu: u8, ports: &[&str]) -> Result<Self> {
        let dir = sb.path("ovs");
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ovs = Self { dir };
        let db = ovs.dir.join("conf.db");
        let db_sock = ovs.dir.join("db.sock");
        procs::run(
            ovs.cmd("ovsdb-tool", "ovsdb-tool").args(["create".as_ref(), db.as_os_str(), SCHEMA.as_ref()]),
            Duration::from_secs(20),
        )?;
        sb.spawn(ovs.cmd("ovsdb-server", "ovsdb-server").args([
            db.display().to_string(),
            format!("--remote=punix:{}", db_sock.display()),
            format!("--unixctl={}", ovs.dir.join("ovsdb.ctl").display()),
            format!("--log-file={}", ovs.dir.join("ovsdb.log").display()),
        ]))?;
        sb.wait_for_path(&db_sock, START_TIMEOUT)?;
        let prefix = sb.dpdk_prefix();
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            &format!("other_config:dpdk-extra=--no-pci --file-prefix={prefix}"),
            "other_config:dpdk-socket-mem=512",
            &format!("other_config:pmd-cpu-mask={:#x}", 1u32 << pmd_cpu),
        ])?;
        sb.spawn(ovs.cmd("ovs-vswitchd", VSWITCHD).args([
            format!("unix:{}", db_sock.display()),
            format!("--pidfile={}", ovs.dir.join("vswitchd.pid").display()),
            format!("--log-file={}", ovs.dir.join("vswitchd.log").display()),
        ]))?;
        let mut args = vec!["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"];
        for &p in ports {
            args.extend(["--", "add-port", "br0", p]);
            args.extend(["--", "set", "Interface", p, "type=dpdkvhostuser"]);
        }
        ovs.vsctl(&args)?;
        for p in ports {
            sb.wait_for_path(&ovs.socket(p), START_TIMEOUT).context("waiting for OVS's vhost-user socket")?;
        }
        Ok(ovs)
    }

    /// Adds kernel interface `ifname` to `br0` as an `afxdp` port (OVS's AF_XDP netdev,
    /// one receive queue, polled by the PMD thread).
    pub fn add_afxdp(&self, ifname: &str) -> Result<()> {
        self.vsctl(&["add-port", "br0", ifname, "--", "set", "Interface", ifname, "type=afxdp", "options:n_rxq=1"])
    }

    /// The vhost-user socket of port `name` (OVS puts them in its run directory).
    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An OVS command whose run, log and database directories are ours.
    fn cmd(&self, name: &str, program: &str) -> Spawn {
        Spawn::new(name, program).env("OVS_RUNDIR", &self.dir).env("OVS_LOGDIR", &self.dir).env("OVS_DBDIR", &self.dir)
    }

    fn vsctl(&self, args: &[&str]) -> Result<()> {
        let db = format!("--db=unix:{}", self.dir.join("db.sock").display());
        let timeout = format!("--timeout={}", START_TIMEOUT.as_secs());
        procs::run(
            self.cmd("ovs-vsctl", "ovs-vsctl").args([db.as_str(), timeout.as_str()]).args(args),
            START_TIMEOUT + Duration::from_secs(5),
        )?;
        Ok(())
    }
}
