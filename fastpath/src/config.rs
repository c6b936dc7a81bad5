// fastpathd's configuration: a TOML file and/or command-line flags naming the
// worker core, the control socket, the state directory, bridges, and ports to create at start.
//! Switch configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Whether the switch listens on a port's socket or connects to it, and one port's
/// description (control protocol types: a config file's ports are `add-port` requests).
pub use fastpath_host::proto::{ByteSize, PortConfig, PortKind, PortMode, PortSecurity};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Control socket path.
    #[serde(default = "default_ctl")]
    pub ctl_socket: PathBuf,
    /// Where the state file (`fastpathd-state.json`: every port held, restored at start)
    /// lives. Default: the control socket's directory (`/run/fastpath` with the default
    /// socket), so that switches on different control sockets keep apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// The hook's ledger, which ports are reconciled with at start. Default:
    /// `ledger.json` in the state directory (where the hook keeps it with its defaults);
    /// no such file: no reconciliation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_ledger: Option<PathBuf>,
    /// CPU the polling worker is pinned to (none: not pinned).
    #[serde(default)]
    pub core: Option<usize>,
    /// Run one polling worker on each of these CPUs (instead of one on `core`): ports are
    /// spread over the workers, each port run by its own worker (a vhost-user port's queue
    /// pairs past the first polled by the others, see the port's `spread`), and the
    /// bridges' MAC tables shared. A frame for a port of another worker crosses to it
    /// through a link (one copy more).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<usize>,
    /// Bridge names.
    #[serde(default = "default_bridges")]
    pub bridges: Vec<String>,
    /// Sleep on the ports' kicks when idle instead of polling.
    #[serde(default)]
    pub interrupt: bool,
    /// Give the core away when idle (a 20 us nap), for a worker sharing its core with
    /// other pollers (apps, an afxdp uplink's NAPI thread); ignored in interrupt mode.
    #[serde(default)]
    pub share_core: bool,
    /// Serve Prometheus metrics on `http://ADDR:PORT/metrics` (none: no metrics server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<std::net::SocketAddr>,
    /// MAC entries age out after this many seconds.
    #[serde(default = "default_age")]
    pub mac_age_secs: u32,
    /// Entries each bridge's MAC table holds (rounded up to a power of two; 16 bytes each).
    /// A bridge with more MACs than fit floods the frames of the ones that do not.
    #[serde(default = "default_mac_table_size")]
    pub mac_table_size: u32,
    /// What ports' frames are checked for when a port does not say (`off`, `mac`,
    /// `mac+ip`); the hook asks for `mac` on the ports it makes.
    #[serde(default)]
    pub port_security: PortSecurity,
    /// Most memory a port's frontend may register when the port does not say.
    #[serde(default = "default_max_port_memory")]
    pub max_port_memory: ByteSize,
    /// Refuse frontend memory that could shrink under the switch's mapping (memfds
    /// not sealed with `F_SEAL_SHRINK`, hugetlbfs files). Off: such memory is taken,
    /// and a shrink resets only that port.
    #[serde(default)]
    pub require_sealed_memory: bool,
    /// Largest frame a port's frontend may send, in bytes (a longer one is a fault of
    /// that port).
    #[serde(default = "default_max_frame")]
    pub max_frame: u32,
    /// Offer vhost-user frontends the checksum and TSO offloads (a port's `offloads`
    /// says otherwise for it). Frames that ask for them reach a port without them
    /// checksummed or segmented in software.
    #[serde(default = "default_offloads")]
    pub offloads: bool,
    /// Ports to create at start.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

/// What a port gets where its own description is silent: the switch-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortDefaults {
    /// Port security.
    pub port_security: PortSecurity,
    /// The device limits of a vhost-user port.
    pub limits: netlib::vhost::DeviceLimits,
}

impl Default for PortDefaults {
    fn default() -> Self {
        Config::default().port_defaults()
    }
}

fn default_max_port_memory() -> ByteSize {
    ByteSize(netlib::vhost::DEFAULT_MAX_MEMORY)
}
fn default_offloads() -> bool {
    true
}
fn default_max_frame() -> u32 {
    netlib::vhost::queue::DEFAULT_MAX_FRAME
}

fn default_ctl() -> PathBuf {
    "/run/fastpath/fastpathd.sock".into()
}
fn default_bridges() -> Vec<String> {
    vec!["br0".into()]
}
fn default_age() -> u32 {
    300
}
fn default_mac_table_size() -> u32 {
    crate::switch::DEFAULT_MAC_TABLE_SIZE as u32
}

/// The range `mac_table_size` may take.
pub const MAC_TABLE_SIZES: std::ops::RangeInclusive<u32> = 1_024..=4_194_304;

impl Default for Config {
    fn default() -> Self {
        Self {
            ctl_socket: default_ctl(),
            state_dir: None,
            hook_ledger: None,
            core: None,
            cores: Vec::new(),
            interrupt: false,
            share_core: false,
            metrics: None,
            bridges: default_bridges(),
            mac_age_secs: default_age(),
            mac_table_size: default_mac_table_size(),
            port_security: PortSecurity::default(),
            max_port_memory: default_max_port_memory(),
            require_sealed_memory: false,
            max_frame: default_max_frame(),
            offloads: default_offloads(),
            ports: Vec::new(),
        }
    }
}

/// A bad configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Can't read the file.
    #[error("config {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Can't parse it.
    #[error("config {path}: {source}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: toml::de::Error,
    },
    /// A --port flag that doesn't parse.
    #[error(
        "--port '{0}' is not BRIDGE:NAME:vhost:PATH, BRIDGE:NAME:vhost-client:PATH, BRIDGE:NAME:tap:IFNAME, BRIDGE:NAME:afxdp:IFNAME[:QUEUE], BRIDGE:NAME:vf:PCI or BRIDGE:NAME:vxlan:UPLINK,vni=N,local=IP,remote=IP[+IP...]"
    )]
    PortFlag(String),
    /// A vxlan --port flag that doesn't parse.
    #[error("--port '{0}': {1} (a vxlan port is BRIDGE:NAME:vxlan:afxdp:IFNAME[:QUEUE],vni=N,local=IP,remote=IP[+IP...][,next_hop_mac=MAC], or tap:IFNAME as the uplink)")]
    VxlanFlag(String, String),
    /// A --port flag's `,mtu=N` that is not an MTU the switch takes.
    #[error("--port '{0}': {1}")]
    MtuFlag(String, String),
    /// Inconsistent contents.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.into(), source: e })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), source: e })
    }

    /// The state directory: `state_dir`, else the control socket's directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            self.ctl_socket.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
        })
    }

    /// The hook's ledger: `hook_ledger`, else `ledger.json` in the state directory.
    pub fn hook_ledger(&self) -> PathBuf {
        self.hook_ledger.clone().unwrap_or_else(|| self.state_dir().join(fastpath_host::ledger::LEDGER_FILE))
    }

    /// The settings ports take where they are silent.
    pub fn port_defaults(&self) -> PortDefaults {
        PortDefaults {
            port_security: self.port_security,
            limits: netlib::vhost::DeviceLimits {
                max_memory: self.max_port_memory.0,
                require_sealed: self.require_sealed_memory,
                max_frame: self.max_frame,
                mtu: None,
                offloads: self.offloads,
                packed: true,
                queue_pairs: netlib::vhost::device::MAX_QUEUE_PAIRS,
            },
        }
    }

    /// Checks names and references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(64..=65535).contains(&self.max_frame) {
            return Err(ConfigError::Invalid(format!("max_frame {} is not in 64..=65535", self.max_frame)));
        }
        if !MAC_TABLE_SIZES.contains(&self.mac_table_size) {
            return Err(ConfigError::Invalid(format!(
                "mac_table_size {} is not in {}..={}",
                self.mac_table_size,
                MAC_TABLE_SIZES.start(),
                MAC_TABLE_SIZES.end()
            )));
        }
        let mut cpus = std::collections::HashSet::new();
        for &c in &self.cores {
            if !cpus.insert(c) || c >= MAX_CPU {
                return Err(ConfigError::Invalid(format!(
                    "cores: CPU {c} is repeated or not below {MAX_CPU} (cores: {:?})",
                    self.cores
                )));
            }
        }
        if self.core.is_some() && !self.cores.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "core {} and cores {:?}: give one worker's CPU (core) or each worker's (cores), not both",
                self.core.unwrap_or_default(),
                self.cores
            )));
        }
        if self.cores.len() > MAX_WORKERS {
            return Err(ConfigError::Invalid(format!("cores: {} workers, at most {MAX_WORKERS}", self.cores.len())));
        }
        let mut seen = std::collections::HashSet::new();
        for b in &self.bridges {
            if b.is_empty() || !seen.insert(b) {
                return Err(ConfigError::Invalid(format!("bridge name '{b}' is empty or repeated")));
            }
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.ports {
            if !self.bridges.contains(&p.bridge) {
                return Err(ConfigError::Invalid(format!(
                    "port '{}': bridge '{}' does not exist (bridges: {})",
                    p.name,
                    p.bridge,
                    self.bridges.join(", ")
                )));
            }
            if !names.insert(&p.name) {
                return Err(ConfigError::Invalid(format!("port name '{}' is repeated", p.name)));
            }
            let workers = self.worker_cores().len();
            if let Some(w) = p.worker.filter(|&w| usize::from(w) >= workers) {
                return Err(ConfigError::Invalid(format!(
                    "port '{}': worker {w}, but fastpathd runs {workers} worker(s) (cores: {:?})",
                    p.name, self.cores
                )));
            }
            check_port(p).map_err(|e| ConfigError::Invalid(format!("port '{}': {e}", p.name)))?;
            crate::security::guard_for(p, self.port_security)
                .map_err(|e| ConfigError::Invalid(format!("port '{}': {e}", p.name)))?;
        }
        Ok(())
    }
}

/// CPUs a worker may be pinned to are below this.
pub const MAX_CPU: usize = 1024;
/// Most workers a switch runs.
pub const MAX_WORKERS: usize = 16;

impl Config {
    /// The CPU of each worker: `cores`, or one worker on `core` (or not pinned).
    pub fn worker_cores(&self) -> Vec<Option<usize>> {
        if self.cores.is_empty() {
            vec![self.core]
        } else {
            self.cores.iter().copied().map(Some).collect()
        }
    }
}

// A port's `queues` and the device's pairs agree on the most.
const _: () = assert!(*fastpath_host::proto::QUEUE_PAIRS.end() == netlib::vhost::device::MAX_QUEUE_PAIRS);

/// Checks that a port has what its kind needs, and nothing of another kind's, and
/// its VLANs.
pub fn check_port(p: &PortConfig) -> Result<(), String> {
    p.check_vlans()?;
    p.check_mtu()?;
    p.check_queues()?;
    if p.kind != PortKind::Vf && p.pci.is_some() {
        return Err(format!("a {} port has no pci", p.kind.label()));
    }
    if p.kind != PortKind::Vxlan {
        let set = [
            ("vni", p.vni.is_some()),
            ("local", p.local.is_some()),
            ("remotes", !p.remotes.is_empty()),
            ("next_hop_mac", p.next_hop_mac.is_some()),
            ("uplink", p.uplink.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, is)| *is) {
            return Err(format!("a {} port has no {field} (a vxlan port's setting)", p.kind.label()));
        }
    }
    match p.kind {
        PortKind::Vhost if p.socket.as_os_str().is_empty() => Err("a vhost port needs a socket".into()),
        PortKind::Vhost if p.ifname.is_some() => Err("a vhost port has a socket, not an ifname".into()),
        PortKind::Tap | PortKind::Afxdp | PortKind::Vxlan => match p.ifname.as_deref() {
            None => Err(format!("a {} port needs an ifname", p.kind.label())),
            Some(n) if n.is_empty() || n.len() > crate::port::tap::MAX_IFNAME || n.contains(['/', ' ']) => {
                Err(format!(
                    "ifname '{n}' is not an interface name (1 to {} bytes, no '/' or space)",
                    crate::port::tap::MAX_IFNAME
                ))
            }
            Some(_) if !p.socket.as_os_str().is_empty() => {
                Err(format!("a {} port has an ifname, not a socket", p.kind.label()))
            }
            Some(_) if p.kind == PortKind::Tap && p.queue.is_some() => Err("a tap port has no queue".into()),
            Some(_) if p.kind == PortKind::Vxlan => check_vxlan(p),
            Some(_) => Ok(()),
        },
        PortKind::Vf => match p.pci.as_deref() {
            None => Err("a vf port needs a pci address (pci = \"0000:01:10.0\")".into()),
            Some(a) => match netlib::pci::PciAddress::parse_full(a) {
                Err(e) => Err(format!("pci: {e}")),
                Ok(_) if !p.socket.as_os_str().is_empty() || p.ifname.is_some() || p.queue.is_some() => {
                    Err("a vf port has a pci address, not a socket, an ifname or a queue".into())
                }
                Ok(_) => Ok(()),
            },
        },
        PortKind::Vhost => Ok(()),
    }
}

/// Checks a vxlan port's own settings.
fn check_vxlan(p: &PortConfig) -> Result<(), String> {
    use crate::port::vxlan::{MAX_REMOTES, MAX_VNI};
    let vni = p.vni.ok_or("a vxlan port needs a vni (0 to 16777215)")?;
    if vni > MAX_VNI {
        return Err(format!("vni {vni} is not in 0..={MAX_VNI}"));
    }
    let local = p.local.ok_or("a vxlan port needs local (the local VTEP's IPv4 address)")?;
    if local.is_unspecified() || local.is_multicast() || local.is_broadcast() {
        return Err(format!("local {local} is not a unicast address"));
    }
    match p.uplink {
        Some(PortKind::Tap) if p.queue.is_some() => return Err("a vxlan port over a tap uplink has no queue".into()),
        None | Some(PortKind::Afxdp | PortKind::Tap) => {}
        Some(k) => return Err(format!("uplink '{}' is not afxdp or tap", k.label())),
    }
    if p.remotes.len() > MAX_REMOTES {
        return Err(format!("remotes: {} VTEPs, at most {MAX_REMOTES}", p.remotes.len()));
    }
    for (i, r) in p.remotes.iter().enumerate() {
        if r.is_unspecified() || r.is_multicast() || r.is_broadcast() || *r == local {
            return Err(format!("remote {r} is not a remote VTEP's unicast address"));
        }
        if p.remotes[..i].contains(r) {
            return Err(format!("remote {r} is repeated"));
        }
    }
    if let Some(m) = &p.next_hop_mac {
        crate::security::parse_mac(m).map_err(|e| format!("next_hop_{e}"))?;
    }
    Ok(())
}

/// A vxlan port with nothing but its uplink, `afxdp:IFNAME[:QUEUE]` or `tap:IFNAME`.
pub fn vxlan_over(name: &str, bridge: &str, uplink: &str) -> Result<PortConfig, String> {
    let (kind, ifname, queue) = match uplink.split(':').collect::<Vec<_>>()[..] {
        ["afxdp", i] => (PortKind::Afxdp, i, Some(0)),
        ["afxdp", i, q] => (PortKind::Afxdp, i, Some(q.parse().map_err(|_| format!("queue '{q}' is not a number"))?)),
        ["tap", i] => (PortKind::Tap, i, None),
        _ => return Err(format!("uplink '{uplink}' is not afxdp:IFNAME[:QUEUE] or tap:IFNAME")),
    };
    Ok(PortConfig { kind: PortKind::Vxlan, uplink: Some(kind), queue, ..PortConfig::tap(name, bridge, ifname) })
}

/// Parses a vxlan port's `--port` tail: `afxdp:IFNAME[:QUEUE]` or `tap:IFNAME`, then
/// `,vni=N,local=IP[,remote=IP[+IP...]][,next_hop_mac=MAC]`.
fn parse_vxlan_flag(name: &str, bridge: &str, tail: &str) -> Result<PortConfig, String> {
    let mut parts = tail.split(',');
    let mut p = vxlan_over(name, bridge, parts.next().unwrap_or_default())?;
    for kv in parts {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("'{kv}' is not KEY=VALUE"))?;
        let ip = |v: &str| v.parse::<std::net::Ipv4Addr>().map_err(|_| format!("{k} '{v}' is not an IPv4 address"));
        match k {
            "vni" => p.vni = Some(v.parse().map_err(|_| format!("vni '{v}' is not a number"))?),
            "local" => p.local = Some(ip(v)?),
            "remote" | "remotes" => p.remotes = v.split('+').map(ip).collect::<Result<_, _>>()?,
            "next_hop_mac" => p.next_hop_mac = Some(v.into()),
            _ => return Err(format!("'{k}' is not vni, local, remote or next_hop_mac")),
        }
    }
    check_port(&p)?;
    Ok(p)
}

/// Parses `BRIDGE:NAME:KIND:WHERE[,mtu=N]`: `vhost:PATH`, `vhost-client:PATH`, `tap:IFNAME`,
/// `afxdp:IFNAME[:QUEUE]`, `vf:PCI` or `vxlan:UPLINK,...`; a trailing `,mtu=N` sets the
/// port's MTU (68 to 9198).
pub fn parse_port_flag(s: &str) -> Result<PortConfig, ConfigError> {
    let Some((spec, mtu)) = s.rsplit_once(",mtu=") else {
        return parse_port_place(s);
    };
    let mtu = mtu.parse::<u16>().map_err(|_| ConfigError::MtuFlag(s.into(), format!("mtu '{mtu}' is not a number")))?;
    let p = PortConfig { mtu: Some(mtu), ..parse_port_place(spec)? };
    p.check_mtu().map_err(|why| ConfigError::MtuFlag(s.into(), why))?;
    Ok(p)
}

/// Parses `BRIDGE:NAME:KIND:WHERE`, a --port flag without its options.
fn parse_port_place(s: &str) -> Result<PortConfig, ConfigError> {
    let mut it = s.splitn(4, ':');
    let (Some(bridge), Some(name), Some(kind), Some(path)) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(ConfigError::PortFlag(s.into()));
    };
    if bridge.is_empty() || name.is_empty() || path.is_empty() {
        return Err(ConfigError::PortFlag(s.into()));
    }
    let mode = match kind {
        "vhost" | "server" => PortMode::Server,
        "vhost-client" | "client" => PortMode::Client,
        "tap" => return Ok(PortConfig::tap(name, bridge, path)),
        "vxlan" => return parse_vxlan_flag(name, bridge, path).map_err(|why| ConfigError::VxlanFlag(s.into(), why)),
        "afxdp" => {
            let (ifname, queue) = match path.split_once(':') {
                Some((i, q)) => (i, q.parse::<u32>().map_err(|_| ConfigError::PortFlag(s.into()))?),
                None => (path, 0),
            };
            return Ok(PortConfig::afxdp(name, bridge, ifname, queue));
        }
        "vf" => return Ok(PortConfig::vf(name, bridge, path)),
        _ => return Err(ConfigError::PortFlag(s.into())),
    };
    Ok(PortConfig { mode, ..PortConfig::new(name, bridge, path) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_and_flags() {
        let c: Config = toml::from_str(
            r#"
            ctl_socket = "/tmp/c.sock"
            core = 0
            bridges = ["br0", "br1"]
            [[ports]]
            name = "a"
            bridge = "br1"
            socket = "/tmp/a.sock"
            mode = "client"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ports[0].mode, PortMode::Client);
        assert_eq!((c.state_dir(), c.hook_ledger()), ("/tmp".into(), "/tmp/ledger.json".into()));
        let d = Config::default();
        assert_eq!((d.state_dir(), d.hook_ledger()), ("/run/fastpath".into(), "/run/fastpath/ledger.json".into()));
        let own: Config = toml::from_str("state_dir = \"/var/lib/fp\"\nhook_ledger = \"/run/h/l.json\"").unwrap();
        assert_eq!((own.state_dir(), own.hook_ledger()), ("/var/lib/fp".into(), "/run/h/l.json".into()));
        let p = parse_port_flag("br0:x:vhost:/tmp/x.sock").unwrap();
        assert_eq!(p.socket, PathBuf::from("/tmp/x.sock"));
        assert!(parse_port_flag("br0:x:tup:/tmp").is_err());
        let t = parse_port_flag("br0:host:tap:fp-host").unwrap();
        assert_eq!((t.kind, t.ifname.as_deref()), (PortKind::Tap, Some("fp-host")));
        check_port(&t).unwrap();
        assert!(check_port(&PortConfig { ifname: Some("a/b".into()), ..t.clone() }).unwrap_err().contains("'a/b'"));
        assert!(check_port(&PortConfig { ifname: None, ..t }).unwrap_err().contains("needs an ifname"));
        let xdp = parse_port_flag("br0:up:afxdp:eth1:3").unwrap();
        assert_eq!((xdp.kind, xdp.ifname.as_deref(), xdp.queue), (PortKind::Afxdp, Some("eth1"), Some(3)));
        assert_eq!(parse_port_flag("br0:up:afxdp:eth1").unwrap().queue, Some(0));
        assert!(parse_port_flag("br0:up:afxdp:eth1:x").is_err());
        assert_eq!(parse_port_flag("br0:x:vhost:/tmp/x.sock,mtu=9000").unwrap().mtu, Some(9000));
        assert_eq!(parse_port_flag("br0:x:vhost:/tmp/x.sock,mtu=9000").unwrap().socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(parse_port_flag("br0:t:tap:fp0,mtu=1500").unwrap().mtu, Some(1500));
        let big = parse_port_flag("br0:x:vhost:/tmp/x.sock,mtu=9999").unwrap_err().to_string();
        assert!(big.contains("mtu 9999 is out of range (68 to 9198)"), "{big}");
        let nan = parse_port_flag("br0:x:vhost:/tmp/x.sock,mtu=big").unwrap_err().to_string();
        assert!(nan.contains("mtu 'big' is not a number"), "{nan}");
        let mut bad = c.clone();
        bad.ports[0].bridge = "nope".into();
        assert!(bad.validate().unwrap_err().to_string().contains("'nope' does not exist"));
        assert!(toml::from_str::<Config>("colour = 1").is_err());
    }

    #[test]
    fn vxlan_ports_from_flags_and_files_with_errors_naming_field_and_value() {
        let p = parse_port_flag("br0:vx:vxlan:afxdp:veth0:1,vni=42,local=10.0.0.1,remote=10.0.0.2+10.0.0.3").unwrap();
        assert_eq!(
            (p.kind, p.uplink, p.ifname.as_deref(), p.queue),
            (PortKind::Vxlan, Some(PortKind::Afxdp), Some("veth0"), Some(1))
        );
        assert_eq!((p.vni, p.local), (Some(42), Some("10.0.0.1".parse().unwrap())));
        assert_eq!(p.remotes.len(), 2);
        assert_eq!(p.place(), "vxlan:42@afxdp:veth0:1");
        let t = parse_port_flag("br0:vx:vxlan:tap:fp0,vni=7,local=10.0.0.1,next_hop_mac=02:00:00:00:00:01").unwrap();
        assert_eq!(
            (t.uplink, t.queue, t.next_hop_mac.as_deref()),
            (Some(PortKind::Tap), None, Some("02:00:00:00:00:01"))
        );
        let err = |s: &str| parse_port_flag(s).unwrap_err().to_string();
        assert!(
            err("br0:vx:vxlan:afxdp:v0,vni=16777216,local=10.0.0.1").contains("vni 16777216 is not in 0..=16777215")
        );
        assert!(err("br0:vx:vxlan:afxdp:v0,vni=1,local=10.0.0.x").contains("local '10.0.0.x' is not an IPv4 address"));
        assert!(err("br0:vx:vxlan:afxdp:v0,vni=1").contains("needs local"));
        assert!(err("br0:vx:vxlan:afxdp:v0,local=10.0.0.1").contains("needs a vni"));
        assert!(err("br0:vx:vxlan:vhost:/x,vni=1,local=10.0.0.1").contains("uplink 'vhost:/x'"));
        assert!(err("br0:vx:vxlan:afxdp:v0,vni=1,local=10.0.0.1,colour=red").contains("'colour'"));
        assert!(err("br0:vx:vxlan:afxdp:v0,vni=1,local=10.0.0.1,next_hop_mac=zz").contains("next_hop_mac 'zz'"));
        assert!(err("br0:vx:vxlan:afxdp:v0,vni=1,local=10.0.0.1,remote=10.0.0.1").contains("remote 10.0.0.1"));
        assert!(err("br0:vx:vxlan:afxdp:v0,vni=1,local=10.0.0.1,remote=10.0.0.2+10.0.0.2").contains("repeated"));
        let c: Config = toml::from_str(
            r#"
            [[ports]]
            name = "vx"
            bridge = "br0"
            kind = "vxlan"
            ifname = "veth0"
            vni = 42
            local = "10.0.0.1"
            remotes = ["10.0.0.2"]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ports[0].uplink, None, "afxdp by default");
        let mut bad = c.clone();
        bad.ports[0].uplink = Some(PortKind::Vhost);
        assert!(bad.validate().unwrap_err().to_string().contains("uplink 'vhost' is not afxdp or tap"));
        let mut stray = PortConfig::tap("t", "br0", "tap0");
        stray.vni = Some(3);
        assert!(check_port(&stray).unwrap_err().contains("a tap port has no vni"));
        let json = serde_json::to_string(&c.ports[0]).unwrap();
        assert_eq!(serde_json::from_str::<PortConfig>(&json).unwrap(), c.ports[0], "the state file keeps it");
    }

    #[test]
    fn vf_ports_from_flags_and_toml_name_a_bad_pci_address() {
        let v = parse_port_flag("br0:up:vf:0000:01:10.0").unwrap();
        assert_eq!(
            (v.kind, v.pci.as_deref(), v.place()),
            (PortKind::Vf, Some("0000:01:10.0"), "vf:0000:01:10.0".into())
        );
        check_port(&v).unwrap();
        let c: Config = toml::from_str(
            r#"
            [[ports]]
            name = "up"
            bridge = "br0"
            kind = "vf"
            pci = "0000:01:10.2"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ports[0], PortConfig::vf("up", "br0", "0000:01:10.2"));
        let e = check_port(&PortConfig::vf("up", "br0", "01:10.0")).unwrap_err();
        assert!(e.starts_with("pci: '01:10.0' is not a PCI address"), "{e}");
        let e = check_port(&PortConfig { pci: None, ..v.clone() }).unwrap_err();
        assert!(e.contains("needs a pci address"), "{e}");
        let e = check_port(&PortConfig { ifname: Some("eth0".into()), ..v.clone() }).unwrap_err();
        assert!(e.contains("not a socket, an ifname or a queue"), "{e}");
        let e = check_port(&PortConfig { pci: Some("0000:01:10.0".into()), ..PortConfig::tap("t", "br0", "t0") })
            .unwrap_err();
        assert_eq!(e, "a tap port has no pci");
        let mut bad = c.clone();
        bad.ports[0].pci = Some("0000:01:10".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("port 'up': pci: '0000:01:10' is not a PCI address"), "{e}");
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains(r#""kind":"vf""#) && json.contains(r#""pci":"0000:01:10.0""#), "{json}");
        assert_eq!(serde_json::from_str::<PortConfig>(&json).unwrap(), v);
    }

    #[test]
    fn port_security_and_limits_from_the_file_and_per_port() {
        let c: Config = toml::from_str(
            r#"
            port_security = "mac"
            max_port_memory = "256Mi"
            require_sealed_memory = true
            [[ports]]
            name = "a"
            bridge = "br0"
            socket = "/tmp/a.sock"
            mac = "02:00:00:00:00:0a"
            [[ports]]
            name = "up"
            bridge = "br0"
            socket = "/tmp/up.sock"
            port_security = "off"
            max_memory = "4Gi"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let d = c.port_defaults();
        assert_eq!(
            (d.port_security, d.limits.max_memory, d.limits.require_sealed),
            (PortSecurity::Mac, 256 << 20, true)
        );
        assert_eq!(c.ports[1].max_memory, Some(ByteSize(4 << 30)));
        let mut bad = c.clone();
        bad.ports[0].mac = None;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("port 'a'") && e.contains("needs the port's mac"), "{e}");
        bad.ports[0].mac = Some("02:00".into());
        assert!(bad.validate().unwrap_err().to_string().contains("'02:00'"));
        let typo = "[[ports]]\nname = \"a\"\nbridge = \"br0\"\nsocket = \"/x\"\nmacc = \"02:00:00:00:00:0a\"";
        assert!(toml::from_str::<Config>(typo).unwrap_err().to_string().contains("macc"));
        let frame = Config { max_frame: 10, ..Config::default() };
        assert!(frame.validate().unwrap_err().to_string().contains("max_frame 10"));
    }

    #[test]
    fn workers_cpus_from_the_file_and_a_port_on_one_of_them() {
        let c: Config = toml::from_str(
            "cores = [0, 1]\n[[ports]]\nname = \"a\"\nbridge = \"br0\"\nsocket = \"/tmp/a.sock\"\nworker = 1\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!((c.worker_cores(), c.ports[0].worker), (vec![Some(0), Some(1)], Some(1)));
        assert_eq!(Config { core: Some(3), ..Config::default() }.worker_cores(), [Some(3)]);
        let e = Config { cores: vec![0], ..c.clone() }.validate().unwrap_err().to_string();
        assert_eq!(e, "config: port 'a': worker 1, but fastpathd runs 1 worker(s) (cores: [0])");
        let e = Config { cores: vec![1, 1], ..c.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("cores: CPU 1 is repeated"), "{e}");
        let e = Config { core: Some(2), ..c }.validate().unwrap_err().to_string();
        assert!(e.contains("core 2 and cores [0, 1]"), "{e}");
    }

    #[test]
    fn the_mac_table_size_from_the_file() {
        assert_eq!(Config::default().mac_table_size, 65_536);
        let c: Config = toml::from_str("mac_table_size = 262144").unwrap();
        assert_eq!(c.mac_table_size, 262_144);
        c.validate().unwrap();
        for bad in [0, 1_000, 8_388_608] {
            let e = Config { mac_table_size: bad, ..Config::default() }.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("mac_table_size {bad} is not in 1024..=4194304")), "{e}");
        }
    }

    #[test]
    fn the_metrics_address_from_the_file() {
        assert_eq!(Config::default().metrics, None);
        let c: Config = toml::from_str("metrics = \"127.0.0.1:9469\"").unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9469".parse().unwrap()));
        let e = toml::from_str::<Config>("metrics = \"localhost\"").unwrap_err().to_string();
        assert!(e.contains("metrics") && e.contains("localhost"), "{e}");
    }

    #[test]
    fn access_vlans_and_trunks_from_the_file() {
        let c: Config = toml::from_str(
            r#"
            [[ports]]
            name = "a"
            bridge = "br0"
            socket = "/tmp/a.sock"
            vlan = 100
            [[ports]]
            name = "up"
            bridge = "br0"
            kind = "afxdp"
            ifname = "eth1"
            trunk = [100, 200]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!((c.ports[0].vlan, c.ports[1].trunk.as_deref()), (Some(100), Some(&[100, 200][..])));
        let mut bad = c.clone();
        bad.ports[0].vlan = Some(4095);
        let e = bad.validate().unwrap_err().to_string();
        assert_eq!(e, "config: port 'a': vlan 4095 is not a VLAN id (1 to 4094)");
        bad.ports[0].vlan = Some(100);
        bad.ports[0].trunk = Some(vec![100]);
        assert!(bad.validate().unwrap_err().to_string().contains("not both"));
        let e = toml::from_str::<Config>("[[ports]]\nname = \"a\"\nbridge = \"br0\"\nsocket = \"/x\"\nvlan = 70000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vlan = 70000"), "{e}");
    }
}
