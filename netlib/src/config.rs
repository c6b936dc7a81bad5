// What the fastpath hook gave this container, as it wrote it to /run/fastpath/config.json:
// one call (`Config::discover`) gives an app its ports, cores and memory.
//! Container configuration discovery.
//!
//! The OCI hook (`fastpath-hook`) writes this file inside each container it
//! wires; the same types serialize it there and parse it here, so the two
//! sides cannot drift apart.

use crate::mac::{parse_source_mac, BadMac, Mac};
use crate::PortSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the hook puts the file inside the container.
pub const DEFAULT_PATH: &str = "/run/fastpath/config.json";
/// Environment variable naming another path (tests, apps run outside a container).
pub const ENV_VAR: &str = "FASTPATH_CONFIG";
/// The schema version this library writes and understands.
pub const VERSION: u32 = 1;

/// Everything the hook gave one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Schema version ([`VERSION`]).
    pub version: u32,
    /// The container's id, as the runtime named it.
    pub container_id: String,
    /// The exclusive host CPUs the container's cpuset holds.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// The container's own hugetlbfs, when it asked for hugepages.
    #[serde(default)]
    pub hugepages: Option<Hugepages>,
    /// Switch ports, one per requested bridge.
    #[serde(default)]
    pub ports: Vec<PortInfo>,
    /// SR-IOV virtual functions bound to vfio-pci and handed over.
    #[serde(default)]
    pub vfs: Vec<VfInfo>,
    /// Where `libfastpath_net.so` and its header are mounted, when injected.
    #[serde(default)]
    pub lib_dir: Option<PathBuf>,
    /// What became of RLIMIT_MEMLOCK (the hook may not be allowed to raise it).
    #[serde(default)]
    pub memlock: Option<Memlock>,
    /// The uid the container runs as (who owns the mounts and sockets).
    pub uid: u32,
    /// The gid the container runs as.
    pub gid: u32,
}

/// The container's hugetlbfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hugepages {
    /// Mount point inside the container (`/dev/hugepages`).
    pub dir: PathBuf,
    /// Bytes per hugepage (2097152 for 2 MiB pages).
    pub page_size: u64,
    /// Bytes the mount (and the hugetlb cgroup) allows in all.
    pub bytes: u64,
}

/// One switch port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// The port's name on the switch.
    pub name: String,
    /// The switch bridge it belongs to.
    pub bridge: String,
    /// The vhost-user socket inside the container.
    pub socket: PathBuf,
    /// `"client"`: the switch listens, the app connects (`vu:` spec).
    pub mode: String,
    /// The MAC the port was given (`aa:bb:cc:dd:ee:ff`): the app sends with it as its
    /// source address; the switch may drop frames that claim another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl PortInfo {
    /// The port spec an app opens with [`crate::open_port`].
    pub fn spec(&self) -> PortSpec {
        if self.mode == "server" {
            PortSpec::VirtioUserServer(self.socket.clone())
        } else {
            PortSpec::VirtioUser(self.socket.clone())
        }
    }

    /// The port's MAC as bytes (`Ok(None)`: the hook gave it none); an unreadable or
    /// multicast one is an error naming the port.
    pub fn mac_bytes(&self) -> Result<Option<Mac>, ConfigError> {
        self.mac
            .as_deref()
            .map(parse_source_mac)
            .transpose()
            .map_err(|source| ConfigError::Mac { port: self.name.clone(), source })
    }
}

/// One virtual function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfInfo {
    /// PCI address, e.g. `0000:81:10.0`.
    pub pci: String,
    /// Its IOMMU group (`/dev/vfio/<group>`).
    pub iommu_group: u32,
    /// The device nodes inside the container.
    pub devices: Vec<PathBuf>,
}

impl VfInfo {
    /// The port spec an app opens with [`crate::open_port`] (`vf:<pci>`).
    pub fn spec(&self) -> PortSpec {
        PortSpec::Vf(self.pci.clone())
    }
}

/// RLIMIT_MEMLOCK as the hook left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memlock {
    /// Bytes the hook wanted (covers the hugepages).
    pub wanted: u64,
    /// Soft limit in force (`u64::MAX`: unlimited).
    pub soft: u64,
    /// Hard limit in force.
    pub hard: u64,
    /// Why it is below `wanted`, when it is.
    #[serde(default)]
    pub note: Option<String>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No file: the container was not started through the fastpath hook.
    #[error("{path}: no fastpath configuration (is the container annotated with fastpath.io/* and the hook installed?{hint})")]
    NotFound {
        /// The path tried.
        path: PathBuf,
        /// Extra words when the path came from the environment.
        hint: &'static str,
    },
    /// The file exists but could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path read.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a configuration this library understands.
    #[error("{path}: not a fastpath configuration: {source}")]
    Parse {
        /// The path read.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
    /// A port's `mac` is not a unicast MAC address.
    #[error("port {port}: mac: {source}")]
    Mac {
        /// The port's name.
        port: String,
        /// What is wrong with it.
        source: BadMac,
    },
    /// Written by a newer hook.
    #[error("{path}: configuration version {found}, this library reads version {VERSION}")]
    Version {
        /// The path read.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
}

impl Config {
    /// Reads the configuration from `$FASTPATH_CONFIG`, or else [`DEFAULT_PATH`].
    pub fn discover() -> Result<Self, ConfigError> {
        match std::env::var_os(ENV_VAR) {
            Some(p) if !p.is_empty() => Self::load_inner(Path::new(&p), " (path from FASTPATH_CONFIG)"),
            _ => Self::load_inner(Path::new(DEFAULT_PATH), ""),
        }
    }

    /// Reads the configuration from `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_inner(path, "")
    }

    fn load_inner(path: &Path, hint: &'static str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound { path: path.into(), hint }
            } else {
                ConfigError::Read { path: path.into(), source: e }
            }
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Json(source) => ConfigError::Parse { path: path.into(), source },
            ParseError::Version(found) => ConfigError::Version { path: path.into(), found },
        })
    }

    fn parse(text: &str) -> Result<Self, ParseError> {
        // Look at the version first so a newer file says so rather than failing on a field.
        #[derive(Deserialize)]
        struct V {
            version: u32,
        }
        let v: V = serde_json::from_str(text).map_err(ParseError::Json)?;
        if v.version != VERSION {
            return Err(ParseError::Version(v.version));
        }
        serde_json::from_str(text).map_err(ParseError::Json)
    }

    /// The port on `bridge`, if the container has one.
    pub fn port(&self, bridge: &str) -> Option<&PortInfo> {
        self.ports.iter().find(|p| p.bridge == bridge)
    }

    /// The port `spec` opens, if it is one of the container's (the same socket, the same mode).
    pub fn port_for(&self, spec: &PortSpec) -> Option<&PortInfo> {
        // A hook's port opened on packed rings is still that port.
        let spec = match spec {
            PortSpec::VirtioUserPacked(p) => &PortSpec::VirtioUser(p.clone()),
            s => s,
        };
        self.ports.iter().find(|p| p.spec() == *spec)
    }

    /// The hugetlbfs directory for packet memory, if the container has one.
    pub fn hugedir(&self) -> Option<&Path> {
        self.hugepages.as_ref().map(|h| h.dir.as_path())
    }
}

/// The MAC the hook gave the port `spec` opens, from the discovered configuration
/// ([`Config::discover`]): `Ok(None)` when there is no configuration or the port is not
/// one of its ports (an app run by hand), or the port has no MAC.
pub fn discover_mac(spec: &PortSpec) -> Result<Option<Mac>, ConfigError> {
    // The hook's ports are virtio-user frontends: another kind of spec needs no file.
    if !matches!(spec, PortSpec::VirtioUser(_) | PortSpec::VirtioUserServer(_) | PortSpec::VirtioUserPacked(_)) {
        return Ok(None);
    }
    match Config::discover() {
        Ok(cfg) => cfg.port_for(spec).map_or(Ok(None), PortInfo::mac_bytes),
        Err(ConfigError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

enum ParseError {
    Json(serde_json::Error),
    Version(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            version: VERSION,
            container_id: "c1".into(),
            cores: vec![3],
            hugepages: Some(Hugepages { dir: "/dev/hugepages".into(), page_size: 2 << 20, bytes: 64 << 20 }),
            ports: vec![PortInfo {
                name: "c1-br0".into(),
                bridge: "br0".into(),
                socket: "/run/fastpath/sock/br0.sock".into(),
                mode: "client".into(),
                mac: Some("02:00:00:00:00:0a".into()),
            }],
            vfs: vec![],
            lib_dir: None,
            memlock: Some(Memlock { wanted: 64 << 20, soft: 8 << 20, hard: 8 << 20, note: Some("hard limit".into()) }),
            uid: 1000,
            gid: 1000,
        }
    }

    #[test]
    fn round_trip_and_lookup() {
        let c = sample();
        let text = serde_json::to_string(&c).unwrap();
        let back = Config::parse(&text).ok().unwrap();
        assert_eq!(back, c);
        assert_eq!(back.port("br0").unwrap().spec(), PortSpec::VirtioUser("/run/fastpath/sock/br0.sock".into()));
        assert!(back.port("br1").is_none());
        assert_eq!(back.hugedir(), Some(Path::new("/dev/hugepages")));
    }

    #[test]
    fn a_port_is_found_by_its_spec_and_gives_its_mac() {
        let mut c = sample();
        let vu = PortSpec::VirtioUser("/run/fastpath/sock/br0.sock".into());
        let p = c.port_for(&vu).unwrap();
        assert_eq!(p.mac_bytes().unwrap(), Some([2, 0, 0, 0, 0, 0x0a]));
        // Another socket, or the same one in another mode, is not the container's port.
        assert!(c.port_for(&PortSpec::VirtioUser("/tmp/x.sock".into())).is_none());
        assert!(c.port_for(&PortSpec::VirtioUserServer("/run/fastpath/sock/br0.sock".into())).is_none());
        c.ports[0].mac = None;
        assert_eq!(c.ports[0].mac_bytes().unwrap(), None);
        c.ports[0].mac = Some("03:00:00:00:00:01".into());
        let e = c.ports[0].mac_bytes().unwrap_err().to_string();
        assert!(e.contains("c1-br0") && e.contains("multicast"), "{e}");
    }

    #[test]
    fn discover_mac_reads_the_containers_config_and_is_none_without_one() {
        // The only test here that sets FASTPATH_CONFIG (tests run in parallel).
        let dir = std::env::temp_dir().join(format!("netlib-mac-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.json");
        std::fs::write(&p, serde_json::to_string(&sample()).unwrap()).unwrap();
        let vu = PortSpec::VirtioUser("/run/fastpath/sock/br0.sock".into());
        std::env::set_var(ENV_VAR, &p);
        assert_eq!(discover_mac(&vu).unwrap(), Some([2, 0, 0, 0, 0, 0x0a]));
        assert_eq!(discover_mac(&PortSpec::VirtioUser("/elsewhere.sock".into())).unwrap(), None);
        std::env::set_var(ENV_VAR, dir.join("missing.json"));
        assert_eq!(discover_mac(&vu).unwrap(), None);
        std::fs::write(&p, "not json").unwrap();
        std::env::set_var(ENV_VAR, &p);
        assert!(matches!(discover_mac(&vu), Err(ConfigError::Parse { .. })));
        // A port the hook cannot have made does not read the file.
        assert_eq!(discover_mac(&PortSpec::Vhost("/run/fastpath/sock/br0.sock".into())).unwrap(), None);
        std::env::remove_var(ENV_VAR);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn discover_reads_env_path_and_names_missing_file() {
        let dir = std::env::temp_dir().join(format!("netlib-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.json");
        std::fs::write(&p, serde_json::to_string(&sample()).unwrap()).unwrap();
        assert_eq!(Config::load(&p).unwrap(), sample());
        let missing = dir.join("nope.json");
        let e = Config::load(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.json") && e.contains("no fastpath configuration"), "{e}");
        std::fs::write(&p, r#"{"version":9}"#).unwrap();
        assert!(matches!(Config::load(&p), Err(ConfigError::Version { found: 9, .. })));
        std::fs::write(&p, "not json").unwrap();
        assert!(matches!(Config::load(&p), Err(ConfigError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
