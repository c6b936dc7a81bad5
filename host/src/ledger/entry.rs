// What the hook's ledger says each container holds, as one set of serde types: written by the
// hook, read by fastpathd; and the switch port a ledger entry stands for.
//! Ledger entries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::proto::{ByteSize, PortConfig, PortSecurity};

/// Prefix of the port names the hook gives (so reconciliation can tell its own ports).
pub const PORT_PREFIX: &str = "fp-";

/// Memory a container's frontend may register on its port beyond its hugepage grant:
/// its rings and any region that fell back to a memfd.
pub const PORT_MEMORY_SLACK: u64 = 64 << 20;

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Reserved; createRuntime is still applying it (or died doing so).
    Creating,
    /// Everything applied.
    Ready,
}

/// Hugepages held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugeAlloc {
    /// Bytes.
    pub bytes: u64,
    /// Page size.
    pub page_size: u64,
}

/// A switch port held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAlloc {
    /// Name on the switch.
    pub name: String,
    /// Bridge.
    pub bridge: String,
    /// Host path of its socket.
    pub socket: PathBuf,
    /// The MAC the container was given for it (empty in ledgers from before MACs).
    #[serde(default)]
    pub mac: String,
    /// What the switch checks its frames for, as the hook asked (absent in ledgers from
    /// before it was recorded: the hook's current setting, or the switch's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<PortSecurity>,
    /// The access VLAN it was given (`fastpath.io/vlan`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// A VF held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfAlloc {
    /// PCI address.
    pub pci: String,
    /// IOMMU group.
    pub group: u32,
    /// (major, minor) of `/dev/vfio/<group>` (known once the VF is on vfio-pci).
    pub dev: (u64, u64),
    /// Whether the hook bound it to vfio-pci (and gives it back at release).
    #[serde(default)]
    pub hook_bound: bool,
    /// The driver it had before the hook bound it (`None`: none); bound again at release.
    #[serde(default)]
    pub previous_driver: Option<String>,
}

/// What one container holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Container id.
    pub id: String,
    /// Life stage.
    pub status: Status,
    /// The container's init pid on the host.
    pub pid: i32,
    /// Its start time (with the pid, identifies the process across pid reuse).
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The container's uid.
    pub uid: u32,
    /// The container's gid.
    pub gid: u32,
    /// Exclusive cores.
    pub cores: Vec<usize>,
    /// Whether `cores` are the runtime's (`linux.resources.cpu.cpus`, set by the kubelet's
    /// static CPU manager) rather than taken from the hook's pool: the hook neither
    /// allocated them nor writes them to the cpuset cgroup, and gives nothing back for them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cores_from_runtime: bool,
    /// The NUMA node the container's cores, hugepages and VFs are on, when they are on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// Why they could not all be put on one NUMA node (absent: they are, or the host has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_note: Option<String>,
    /// Hugepages.
    pub hugepages: Option<HugeAlloc>,
    /// Host directory of its sockets.
    pub sock_dir: Option<PathBuf>,
    /// Switch ports.
    pub ports: Vec<PortAlloc>,
    /// VFs.
    pub vfs: Vec<VfAlloc>,
    /// Whether libfastpath_net is mounted.
    pub inject: bool,
    /// Cgroup directories the hook wrote limits into.
    pub cgroups: Vec<PathBuf>,
    /// What createContainer writes to /run/fastpath/config.json.
    pub config: Option<netlib::config::Config>,
    /// When it was reserved (seconds since the epoch).
    pub created_unix: u64,
}

impl Entry {
    /// An entry for container `id`, ready, whose init process is `pid` (started at
    /// `start_time`), running as `uid`:`uid`, holding nothing yet.
    pub fn new(id: &str, pid: i32, start_time: u64, uid: u32) -> Self {
        Self {
            id: id.into(),
            status: Status::Ready,
            pid,
            start_time,
            bundle: PathBuf::new(),
            uid,
            gid: uid,
            cores: vec![],
            cores_from_runtime: false,
            numa_node: None,
            numa_note: None,
            hugepages: None,
            sock_dir: None,
            ports: vec![],
            vfs: vec![],
            inject: false,
            cgroups: vec![],
            config: None,
            created_unix: 0,
        }
    }

    /// A short description for messages: `container ID (pid N)`.
    pub fn who(&self) -> String {
        format!("container {} (pid {})", self.id, self.pid)
    }

    /// What the switch is asked for the container's port `p`: a server-mode port whose
    /// socket the container's user owns, that knows whose it is and its MAC, whose frames
    /// are checked as recorded, on its access VLAN if it has one, and whose frontend may
    /// register the container's hugepages and a little more ([`PORT_MEMORY_SLACK`]; else
    /// the switch's default).
    pub fn port_config(&self, p: &PortAlloc) -> PortConfig {
        PortConfig {
            uid: Some(self.uid),
            gid: Some(self.gid),
            container: Some(self.id.clone()),
            mac: (!p.mac.is_empty()).then(|| p.mac.clone()),
            port_security: p.port_security,
            vlan: p.vlan,
            max_memory: self.hugepages.map(|h| ByteSize(h.bytes + PORT_MEMORY_SLACK)),
            ..PortConfig::new(p.name.clone(), p.bridge.clone(), p.socket.clone())
        }
    }
}

/// The whole ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LedgerData {
    /// Schema version (1).
    #[serde(default)]
    pub version: u32,
    /// Entries by container id.
    #[serde(default)]
    pub containers: BTreeMap<String, Entry>,
}

impl LedgerData {
    /// An empty ledger of this schema.
    pub fn empty() -> Self {
        Self { version: 1, containers: BTreeMap::new() }
    }

    /// Reads a ledger's text (empty text: an empty ledger).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        if text.trim().is_empty() {
            return Ok(Self::empty());
        }
        serde_json::from_str(text)
    }
}
