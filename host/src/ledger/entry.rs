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
    /// The MTU it was given (`fastpath.io/mtu`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
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

/// Who wrote a ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// `fastpath-hook`, for a container (keyed by its id; alive while its process runs).
    #[default]
    Hook,
    /// `fastpath-cni`, for one network attachment (keyed by `CONTAINERID/IFNAME`; alive
    /// while its network namespace exists).
    Cni,
}

impl Owner {
    /// Whether this is the hook (the default, left out of the file).
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
    pub fn is_hook(&self) -> bool {
        *self == Self::Hook
    }
}

/// What a CNI attachment was called with (entries owned by [`Owner::Cni`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CniAttachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` (empty when the runtime gave none).
    pub netns: PathBuf,
    /// The network's name (`name` in the network config).
    pub network: String,
    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME` from `CNI_ARGS`, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The device-info file written for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_info: Option<PathBuf>,
}

/// Who a container is, beyond its id, as its runtime's annotations say: labels of its
/// ports' metrics (absent in ledgers from before they were recorded).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerLabels {
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its Kubernetes pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Its Kubernetes pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
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
    /// Who wrote it (absent: the hook).
    #[serde(default, skip_serializing_if = "Owner::is_hook")]
    pub owner: Owner,
    /// For [`Owner::Cni`]: the attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniAttachment>,
    /// Its name and pod.
    #[serde(flatten)]
    pub labels: ContainerLabels,
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
            owner: Owner::Hook,
            cni: None,
            labels: ContainerLabels::default(),
        }
    }

    /// Whether what the entry stands for still exists: for the hook's, its process (`start_time`
    /// of its pid is the recorded one); for a CNI attachment, its network namespace (`exists`;
    /// one without a namespace lives until its DEL).
    pub fn alive(&self, start_time: impl Fn(i32) -> Option<u64>, exists: impl Fn(&std::path::Path) -> bool) -> bool {
        match (self.owner, &self.cni) {
            (Owner::Cni, Some(c)) if !c.netns.as_os_str().is_empty() => exists(&c.netns),
            (Owner::Cni, _) => true,
            (Owner::Hook, _) => start_time(self.pid) == Some(self.start_time),
        }
    }

    /// A short description for messages: `container ID (pid N)`, or for a CNI attachment
    /// `CNI attachment CONTAINERID/IFNAME (pod NS/NAME)`.
    pub fn who(&self) -> String {
        match (self.owner, &self.cni) {
            (Owner::Cni, Some(c)) => match (&c.pod_namespace, &c.pod_name) {
                (Some(ns), Some(n)) => format!("CNI attachment {} (pod {ns}/{n})", self.id),
                _ => format!("CNI attachment {}", self.id),
            },
            _ => format!("container {} (pid {})", self.id, self.pid),
        }
    }

    /// What the switch is asked for the container's port `p`: a server-mode port whose
    /// socket the container's user owns, that knows whose it is and its MAC, whose frames
    /// are checked as recorded, on its access VLAN and with its MTU if it has them, and whose frontend may
    /// register the container's hugepages and a little more ([`PORT_MEMORY_SLACK`]; else
    /// the switch's default), labelled with the container's name and pod.
    pub fn port_config(&self, p: &PortAlloc) -> PortConfig {
        PortConfig {
            uid: Some(self.uid),
            gid: Some(self.gid),
            container: Some(self.id.clone()),
            container_name: self.labels.name.clone(),
            pod_name: self.labels.pod_name.clone(),
            pod_namespace: self.labels.pod_namespace.clone(),
            mac: (!p.mac.is_empty()).then(|| p.mac.clone()),
            port_security: p.port_security,
            vlan: p.vlan,
            mtu: p.mtu,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn hook_entries_live_by_their_process_and_cni_ones_by_their_netns() {
        let hook = Entry::new("c", 42, 7, 1000);
        assert!(hook.alive(|p| (p == 42).then_some(7), |_| false));
        assert!(!hook.alive(|_| Some(8), |_| true));
        let mut cni = Entry {
            owner: Owner::Cni,
            cni: Some(CniAttachment {
                container_id: "c".into(),
                ifname: "net1".into(),
                netns: "/run/netns/x".into(),
                network: "fastpath-net".into(),
                pod_namespace: Some("ns".into()),
                pod_name: Some("p".into()),
                device_info: None,
            }),
            ..Entry::new("c/net1", 0, 0, 0)
        };
        assert!(cni.alive(|_| None, |p| p == Path::new("/run/netns/x")));
        assert!(!cni.alive(|_| None, |_| false));
        assert_eq!(cni.who(), "CNI attachment c/net1 (pod ns/p)");
        let text = serde_json::to_string(&cni).unwrap();
        assert!(text.contains(r#""owner":"cni""#), "{text}");
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), cni);
        cni.cni.as_mut().unwrap().netns = PathBuf::new();
        assert!(cni.alive(|_| None, |_| false), "no netns: lives until its DEL");
        // The hook's entries are written as before (no owner field).
        assert!(!serde_json::to_string(&hook).unwrap().contains("owner"));
    }

    #[test]
    fn labels_are_kept_flat_in_the_ledger_and_go_to_the_switch_with_the_port() {
        let mut e = Entry::new("c1", 1, 1, 1000);
        e.ports.push(PortAlloc {
            name: "fp-c1-br0".into(),
            bridge: "br0".into(),
            socket: "/s".into(),
            mac: String::new(),
            port_security: None,
            vlan: None,
            mtu: None,
        });
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("pod_name"), "no labels, nothing written: {json}");
        let old: Entry = serde_json::from_str(&json).unwrap();
        assert_eq!(old.labels, ContainerLabels::default(), "a ledger from before labels reads");
        e.labels = ContainerLabels { name: Some("web".into()), pod_name: Some("web-0".into()), pod_namespace: None };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""name":"web","pod_name":"web-0""#), "{json}");
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), e);
        let p = e.port_config(&e.ports[0]);
        assert_eq!(
            (p.container_name.as_deref(), p.pod_name.as_deref(), p.pod_namespace),
            (Some("web"), Some("web-0"), None)
        );
    }
}
