// What the switch says about its ports (`list`): the counters netlib's ports keep, plus the
// link state, the last fault and the MACs learned there; and who listens on a port's socket.
//! Port information in the control protocol.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use netlib::PortCounters;
use serde::{Deserialize, Serialize};

/// Whether the switch listens on a port's socket or connects to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// The switch listens (the container connects).
    Server,
    /// The switch connects to a container that listens (survives switch restarts).
    Client,
}

/// What a port's frames are checked for (port security).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PortSecurity {
    /// Nothing: the port may carry many MACs (uplinks, VMs with bridges inside).
    #[default]
    #[serde(rename = "off")]
    Off,
    /// The source MAC must be the port's.
    #[serde(rename = "mac")]
    Mac,
    /// The source MAC must be the port's, and ARP and IPv4 must carry its IPv4
    /// address as the sender (DHCP's 0.0.0.0 aside).
    #[serde(rename = "mac+ip")]
    MacIp,
}

impl PortSecurity {
    /// The name used in config files and requests.
    pub fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Mac => "mac",
            Self::MacIp => "mac+ip",
        }
    }
}

impl std::str::FromStr for PortSecurity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "mac" => Ok(Self::Mac),
            "mac+ip" => Ok(Self::MacIp),
            _ => Err(format!("port_security '{s}' is not one of off, mac, mac+ip")),
        }
    }
}

/// A size in bytes, written as a number or as a string with a binary suffix
/// (`"64Mi"`, `"16Gi"`, `"512Ki"`, `"4096"`); always serialized as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(into = "u64")]
pub struct ByteSize(pub u64);

impl From<ByteSize> for u64 {
    fn from(b: ByteSize) -> Self {
        b.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (num, mult) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40)]
            .iter()
            .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n, *m)))
            .unwrap_or((t, 1));
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .map(ByteSize)
            .ok_or_else(|| format!("'{s}' is not a size (bytes, or a number with Ki, Mi, Gi or Ti)"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What kind of port: where its frames come from and go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A vhost-user socket (`socket`, `mode`): a container's or a VM's virtio rings.
    #[default]
    Vhost,
    /// A kernel TAP interface (`ifname`): the host's own stack.
    Tap,
    /// One queue (`queue`, default 0) of a kernel interface (`ifname`) through an
    /// AF_XDP socket: a NIC, a veth, any interface with a driver.
    Afxdp,
    /// A VXLAN overlay (RFC 7348, UDP 4789) over an uplink (`uplink`: afxdp or tap, on
    /// `ifname`): the bridge's frames to and from remote VTEPs (`vni`, `local`, `remotes`).
    Vxlan,
    /// An SR-IOV virtual function (`pci`, bound to vfio-pci) driven by netlib's igbvf
    /// poll-mode driver: an uplink to the NIC's wire.
    Vf,
}

impl PortKind {
    /// The name used in config files, flags and requests.
    pub fn label(self) -> &'static str {
        match self {
            Self::Vhost => "vhost",
            Self::Tap => "tap",
            Self::Afxdp => "afxdp",
            Self::Vxlan => "vxlan",
            Self::Vf => "vf",
        }
    }
}

/// One port: what a config file's `[[ports]]` entry, an `add-port` request and
/// fastpathd's state file all say about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Port name (unique in the switch).
    pub name: String,
    /// Bridge it belongs to.
    pub bridge: String,
    /// Its kind (default: vhost).
    #[serde(default, skip_serializing_if = "is_vhost")]
    pub kind: PortKind,
    /// vhost-user socket path (vhost ports).
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub socket: PathBuf,
    /// Kernel interface name (tap and afxdp ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The interface's queue (afxdp ports; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// The PCI address of the virtual function (vf ports: `0000:01:10.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
    /// Who listens (default: the switch).
    #[serde(default = "server")]
    pub mode: PortMode,
    /// Give the socket file to this uid (so a non-root container can connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// ... and this gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The container the port belongs to (its id): ports are reconciled with the
    /// hook's ledger by it after restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The container's name (from its runtime's annotations), a label of its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The Kubernetes pod the container belongs to (`io.kubernetes.pod.name`), a label of
    /// its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// ... and the pod's namespace (`io.kubernetes.pod.namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// The port's MAC (`aa:bb:cc:dd:ee:ff`), as its owner was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The port's IPv4 address, as its owner was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// What its frames are checked for (default: the switch's `port_security`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<PortSecurity>,
    /// Most memory its frontend may register (default: the switch's `max_port_memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<ByteSize>,
    /// The VXLAN network identifier, 0 to 16777215 (vxlan ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The local VTEP's IPv4 address: the outer source, the address decapsulated
    /// packets must be sent to (vxlan ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Ipv4Addr>,
    /// The remote VTEPs: broadcast, unknown unicast and multicast go to each (vxlan ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<Ipv4Addr>,
    /// The outer next hop's MAC (`aa:bb:cc:dd:ee:ff`) for every remote VTEP; without it
    /// the port asks each remote VTEP's MAC with ARP on the uplink (vxlan ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mac: Option<String>,
    /// The kind of the uplink a vxlan port sends through (`afxdp`, the default, or `tap`),
    /// on `ifname` (and `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<PortKind>,
    /// An access port: the VLAN (1..=4094) its frames belong to; they come and go untagged.
    /// Neither this nor `trunk`: untagged, on no VLAN (VLAN 0), as every port of a bridge
    /// without VLANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// A trunk port (an uplink): the VLANs (1..=4094) whose frames it carries, tagged (802.1Q).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Vec<u16>>,
    /// The port's MTU (68 to 9198): frames longer than it with an Ethernet header and a
    /// VLAN tag are dropped on their way to it (counted as too big), and a vhost-user
    /// frontend is offered it (VIRTIO_NET_F_MTU). Default: frames up to 9216 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Whether a vhost-user frontend is offered the checksum and TSO offloads
    /// (VIRTIO_NET_F_CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6). Default: fastpathd's
    /// `offloads` setting (on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offloads: Option<bool>,
    /// Whether a vhost-user frontend is offered the packed ring layout
    /// (VIRTIO_F_RING_PACKED); it takes it or not. Default: offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packed: Option<bool>,
    /// Queue pairs a vhost-user frontend may use (1 to 8; VIRTIO_NET_F_MQ is offered when
    /// more than one). Default: 8, so a frontend gets as many as it asks for, up to 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<u16>,
    /// The worker that polls the port, on a switch of several (`fastpathd --cores`): 0 for
    /// the first CPU listed. Ports that talk to each other on one worker save a copy per
    /// frame. Default: the worker with the fewest ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u16>,
    /// Whether a vhost-user frontend's queue pairs are spread over the workers: pair `q`'s
    /// transmit ring polled by worker `(w + q) % workers` (`w` the port's worker, which
    /// keeps pair 0, the control path, and what goes to the port). Only with several
    /// workers that poll (not in interrupt mode). Default: spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<bool>,
}

/// The queue pairs a vhost-user port may be given.
pub const QUEUE_PAIRS: std::ops::RangeInclusive<u16> = 1..=8;

/// The MTUs a port may have: IPv4's least, up to what a 9216-byte frame carries.
pub const MTUS: std::ops::RangeInclusive<u16> = 68..=9198;

/// The VLAN ids a port may name (802.1Q reserves 0 and 4095).
pub const VLAN_IDS: std::ops::RangeInclusive<u16> = 1..=4094;

/// Whether `id` is a VLAN id a port may name; the error names `field` and the value.
pub fn check_vlan_id(field: &str, id: u16) -> Result<u16, String> {
    if VLAN_IDS.contains(&id) {
        Ok(id)
    } else {
        Err(format!("{field} {id} is not a VLAN id (1 to 4094)"))
    }
}

fn server() -> PortMode {
    PortMode::Server
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_vhost(k: &PortKind) -> bool {
    *k == PortKind::Vhost
}

fn path_is_empty(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty()
}

impl PortConfig {
    /// A TAP port on the interface `ifname`.
    pub fn tap(name: impl Into<String>, bridge: impl Into<String>, ifname: impl Into<String>) -> Self {
        Self { kind: PortKind::Tap, socket: PathBuf::new(), ifname: Some(ifname.into()), ..Self::new(name, bridge, "") }
    }

    /// An AF_XDP port on queue `queue` of interface `ifname`.
    pub fn afxdp(name: impl Into<String>, bridge: impl Into<String>, ifname: impl Into<String>, queue: u32) -> Self {
        Self { kind: PortKind::Afxdp, queue: Some(queue), ..Self::tap(name, bridge, ifname) }
    }

    /// A VF port on the virtual function at `pci` (`0000:01:10.0`; checked where it is opened).
    pub fn vf(name: impl Into<String>, bridge: impl Into<String>, pci: impl Into<String>) -> Self {
        Self { kind: PortKind::Vf, socket: PathBuf::new(), pci: Some(pci.into()), ..Self::new(name, bridge, "") }
    }

    /// Where the port is, for messages and listings: its socket, its interface, or its
    /// PCI address.
    pub fn place(&self) -> String {
        let ifname = self.ifname.as_deref().unwrap_or("?");
        let on_interface = |kind| match kind {
            PortKind::Tap => format!("tap:{ifname}"),
            _ => format!("afxdp:{ifname}:{}", self.queue.unwrap_or(0)),
        };
        match self.kind {
            PortKind::Vhost => self.socket.display().to_string(),
            PortKind::Tap | PortKind::Afxdp => on_interface(self.kind),
            PortKind::Vf => format!("vf:{}", self.pci.as_deref().unwrap_or("?")),
            PortKind::Vxlan => format!(
                "vxlan:{}@{}",
                self.vni.map_or_else(|| "?".into(), |v| v.to_string()),
                on_interface(self.uplink.unwrap_or(PortKind::Afxdp))
            ),
        }
    }

    /// A VXLAN port for `vni` from the VTEP `local` to `remotes`, over an AF_XDP uplink
    /// on queue `queue` of `ifname`.
    pub fn vxlan(
        name: impl Into<String>,
        bridge: impl Into<String>,
        vni: u32,
        local: Ipv4Addr,
        remotes: Vec<Ipv4Addr>,
        ifname: impl Into<String>,
        queue: u32,
    ) -> Self {
        Self {
            kind: PortKind::Vxlan,
            vni: Some(vni),
            local: Some(local),
            remotes,
            uplink: Some(PortKind::Afxdp),
            ..Self::afxdp(name, bridge, ifname, queue)
        }
    }

    /// A server-mode vhost-user port with nothing else said.
    pub fn new(name: impl Into<String>, bridge: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            bridge: bridge.into(),
            kind: PortKind::Vhost,
            socket: socket.into(),
            ifname: None,
            queue: None,
            pci: None,
            mode: PortMode::Server,
            uid: None,
            gid: None,
            container: None,
            container_name: None,
            pod_name: None,
            pod_namespace: None,
            mac: None,
            ip: None,
            port_security: None,
            max_memory: None,
            vni: None,
            local: None,
            remotes: Vec::new(),
            next_hop_mac: None,
            uplink: None,
            vlan: None,
            trunk: None,
            mtu: None,
            offloads: None,
            packed: None,
            spread: None,
            queues: None,
            worker: None,
        }
    }

    /// Checks the port's MTU; the error names the field and the value.
    pub fn check_mtu(&self) -> Result<(), String> {
        match self.mtu {
            Some(m) if !MTUS.contains(&m) => {
                Err(format!("mtu {m} is out of range ({} to {})", MTUS.start(), MTUS.end()))
            }
            _ => Ok(()),
        }
    }

    /// Checks the port's queue pairs; the error names the field and the value.
    pub fn check_queues(&self) -> Result<(), String> {
        match self.queues {
            Some(q) if !QUEUE_PAIRS.contains(&q) => Err(format!(
                "queues {q} is out of range ({} to {} queue pairs)",
                QUEUE_PAIRS.start(),
                QUEUE_PAIRS.end()
            )),
            Some(_) if self.kind != PortKind::Vhost => {
                Err(format!("a {} port has no queues (a vhost port's setting)", self.kind.label()))
            }
            _ => Ok(()),
        }
    }

    /// Whether it carries any of the labels protocol 4 added (the container's name, its pod).
    pub fn has_labels(&self) -> bool {
        self.container_name.is_some() || self.pod_name.is_some() || self.pod_namespace.is_some()
    }

    /// The port without the labels protocol 4 added, for a switch that speaks an older one.
    #[must_use]
    pub fn without_labels(self) -> Self {
        Self { container_name: None, pod_name: None, pod_namespace: None, ..self }
    }

    /// Checks the port's VLANs: an access VLAN or a trunk, not both; ids in 1..=4094; a
    /// trunk carries at least one, each once. The error names the field and the value.
    pub fn check_vlans(&self) -> Result<(), String> {
        if let Some(v) = self.vlan {
            check_vlan_id("vlan", v)?;
        }
        let Some(t) = &self.trunk else { return Ok(()) };
        if let Some(v) = self.vlan {
            return Err(format!("vlan {v} and trunk {t:?}: a port is an access port (vlan) or a trunk, not both"));
        }
        if t.is_empty() {
            return Err("trunk []: a trunk carries at least one VLAN".into());
        }
        for (i, &id) in t.iter().enumerate() {
            check_vlan_id("trunk", id).map_err(|e| format!("{e} (in trunk {t:?})"))?;
            if t[..i].contains(&id) {
                return Err(format!("trunk {t:?}: VLAN {id} is repeated"));
            }
        }
        Ok(())
    }
}

/// A snapshot of a port's counters and link.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortStats {
    /// The counters (rx: from the port's peer into the switch; tx: to the peer).
    #[serde(flatten)]
    pub counters: PortCounters,
    /// Whether the rings are live.
    #[serde(default)]
    pub link_up: bool,
}

/// Port information for `list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortInfo {
    /// Name.
    pub name: String,
    /// Bridge.
    pub bridge: String,
    /// Socket path.
    pub socket: String,
    /// Server or client.
    pub mode: PortMode,
    /// Counters.
    pub stats: PortStats,
    /// The last fault, if any.
    pub last_fault: Option<String>,
    /// MAC addresses the bridge has learned on this port (`MAC vlan N` on a VLAN).
    #[serde(default)]
    pub macs: Vec<String>,
    /// What the port's kind counts beyond the common counters, by name (a vxlan port's
    /// drops per reason, its ARP and encapsulation counts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kind_counters: Vec<(String, u64)>,
    /// Its access VLAN, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The VLANs it carries tagged, if it is a trunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Vec<u16>>,
    /// The worker that polls it, on a switch of several workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u16>,
    /// The queue pairs whose transmit rings another worker polls, as (pair, worker): a
    /// vhost-user port's pairs spread over the workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pair_workers: Vec<(u16, u16)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_numbers_or_with_binary_suffixes() {
        assert_eq!("64Mi".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert!("12Q".parse::<ByteSize>().unwrap_err().contains("'12Q'"));
        assert!("99999999999Ti".parse::<ByteSize>().is_err(), "overflow");
        assert_eq!(serde_json::from_str::<ByteSize>("\"1Gi\"").unwrap(), ByteSize(1 << 30));
        assert_eq!(serde_json::from_str::<ByteSize>("7").unwrap(), ByteSize(7));
        assert_eq!(serde_json::to_string(&ByteSize(5)).unwrap(), "5");
    }

    #[test]
    fn vlans_are_checked_naming_the_field_and_value() {
        let p = PortConfig::new("a", "br0", "/x");
        p.check_vlans().unwrap();
        PortConfig { vlan: Some(4094), ..p.clone() }.check_vlans().unwrap();
        PortConfig { trunk: Some(vec![1, 100, 200]), ..p.clone() }.check_vlans().unwrap();
        let err = |q: PortConfig| q.check_vlans().unwrap_err();
        assert_eq!(err(PortConfig { vlan: Some(0), ..p.clone() }), "vlan 0 is not a VLAN id (1 to 4094)");
        assert_eq!(err(PortConfig { vlan: Some(4095), ..p.clone() }), "vlan 4095 is not a VLAN id (1 to 4094)");
        let e = err(PortConfig { trunk: Some(vec![100, 5000]), ..p.clone() });
        assert_eq!(e, "trunk 5000 is not a VLAN id (1 to 4094) (in trunk [100, 5000])");
        assert!(err(PortConfig { trunk: Some(vec![7, 7]), ..p.clone() }).contains("VLAN 7 is repeated"));
        assert!(err(PortConfig { trunk: Some(vec![]), ..p.clone() }).contains("at least one"));
        let both = err(PortConfig { vlan: Some(1), trunk: Some(vec![2]), ..p.clone() });
        assert!(both.contains("vlan 1 and trunk [2]") && both.contains("not both"), "{both}");
        let json = r#"{"name":"a","bridge":"br0","socket":"/x","trunk":[100,200]}"#;
        let t: PortConfig = serde_json::from_str(json).unwrap();
        assert_eq!(t.trunk, Some(vec![100, 200]));
        assert!(serde_json::to_string(&t).unwrap().ends_with(r#""trunk":[100,200]}"#));
        assert!(!serde_json::to_string(&p).unwrap().contains("vlan"), "no attribute, nothing written");
    }

    #[test]
    fn port_security_names() {
        assert_eq!("mac+ip".parse::<PortSecurity>().unwrap(), PortSecurity::MacIp);
        assert!("macip".parse::<PortSecurity>().unwrap_err().contains("'macip'"));
        assert_eq!(serde_json::to_string(&PortSecurity::MacIp).unwrap(), "\"mac+ip\"");
        assert_eq!(serde_json::from_str::<PortSecurity>("\"off\"").unwrap(), PortSecurity::Off);
    }
}
