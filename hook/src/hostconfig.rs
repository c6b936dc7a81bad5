// The host's policy, /etc/fastpath/hook.toml: the core pool, the hugepage sizes allowed, the
// switch control socket, per-container maxima. Sane defaults when the file is absent.
//! Host configuration.

use crate::cores;
use crate::hugetlb::{format_size, parse_size};
use crate::{Error, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the configuration lives unless `--config` or `FASTPATH_HOOK_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/fastpath/hook.toml";
/// Environment variable naming the configuration file.
pub const ENV_VAR: &str = "FASTPATH_HOOK_CONFIG";

/// What to do when RLIMIT_MEMLOCK cannot be raised to cover the hugepages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MemlockPolicy {
    /// Say so on stderr and in the container's config.json, and go on (hugetlbfs mappings
    /// don't need it; VFIO does, so a VF request is refused either way).
    #[default]
    Warn,
    /// Refuse the container.
    Require,
}

/// Which devices the hook binds to vfio-pci itself for `fastpath.io/vf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VfBind {
    /// Any SR-IOV VF (a device with `physfn`); never a PF or another device.
    #[default]
    Vfs,
    /// Only VFs listed in `vf_pools`.
    Pools,
    /// None: every VF must be on vfio-pci already (an administrator bound it).
    None,
}

/// Where a container's exclusive cores come from (`cores_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CoresFrom {
    /// Always from the pool (`cores`); the runtime's `linux.resources.cpu.cpus` is ignored.
    Pool,
    /// From the runtime's `linux.resources.cpu.cpus` (the kubelet's static CPU manager);
    /// a container that asks for cores without them is refused.
    Runtime,
    /// The runtime's when config.json has them, else the pool's.
    #[default]
    Auto,
}

/// The file as written; every field optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    cores: Option<String>,
    hugepage_sizes: Option<Vec<String>>,
    default_hugepage_size: Option<String>,
    switch_socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    max_cores: Option<usize>,
    max_hugepages: Option<String>,
    max_ports: Option<usize>,
    max_vfs: Option<usize>,
    memlock: Option<MemlockPolicy>,
    lib_dir: Option<PathBuf>,
    vf_pools: Option<BTreeMap<String, Vec<String>>>,
    vf_bind: Option<VfBind>,
    vf_memlock: Option<String>,
    switch_timeout_ms: Option<u64>,
    port_security: Option<fastpath_host::proto::PortSecurity>,
    cores_from: Option<CoresFrom>,
    bridges: Option<Vec<String>>,
}

/// The host configuration, checked and with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Where it was read from (`None`: defaults, no file).
    pub path: Option<PathBuf>,
    /// The CPUs containers get exclusive cores from.
    pub cores: BTreeSet<usize>,
    /// Hugepage sizes (bytes) a container may ask for.
    pub hugepage_sizes: Vec<u64>,
    /// The size used when `fastpath.io/hugepage-size` is absent.
    pub default_hugepage_size: u64,
    /// fastpathd's control socket.
    pub switch_socket: PathBuf,
    /// Where the ledger and the per-container socket directories live.
    pub state_dir: PathBuf,
    /// Most cores one container may have.
    pub max_cores: usize,
    /// Most hugepage bytes one container may have.
    pub max_hugepages: u64,
    /// Most switch ports one container may have.
    pub max_ports: usize,
    /// Most VFs one container may have.
    pub max_vfs: usize,
    /// RLIMIT_MEMLOCK policy.
    pub memlock: MemlockPolicy,
    /// Host directory with `libfastpath_net.so` and its header, for `fastpath.io/inject`.
    pub lib_dir: PathBuf,
    /// Named pools of VF PCI addresses, for `fastpath.io/vf: POOL`.
    pub vf_pools: BTreeMap<String, Vec<String>>,
    /// Which VFs the hook binds to vfio-pci itself (`vf_bind`, default `vfs`).
    pub vf_bind: VfBind,
    /// RLIMIT_MEMLOCK a VF container gets on top of its hugepages, for DMA-mapped memory
    /// outside them (rings, a pool in plain memory): `vf_memlock`, default 64Mi.
    pub vf_memlock: u64,
    /// How long to wait for fastpathd to answer, in milliseconds.
    pub switch_timeout_ms: u64,
    /// What the switch checks the frames of the ports the hook makes for
    /// (`port_security`: `off`, `mac` or `mac+ip`; default `mac`: a container's port sends
    /// only with the MAC the hook gave it, which the apps read from config.json).
    pub port_security: fastpath_host::proto::PortSecurity,
    /// Where exclusive cores come from (`cores_from`: `pool`, `runtime` or `auto`, the default).
    pub cores_from: CoresFrom,
    /// The switch bridges `fastpath-hook cdi generate` makes `fastpath.io/port` devices for
    /// (`bridges`, default none).
    pub bridges: Vec<String>,
}

/// The default core pool: the online CPUs but CPU 0 (left for the host), or CPU 0 alone
/// on a one-CPU machine.
pub fn default_pool(online: &str) -> BTreeSet<usize> {
    let all = cores::parse_list(online).unwrap_or_default();
    if all.len() > 1 {
        all.into_iter().filter(|&c| c != 0).collect()
    } else {
        all
    }
}

impl HostConfig {
    /// Parses a configuration text; `online` is the host's online CPU list for the default pool.
    pub fn parse(text: &str, path: Option<&Path>, online: &str) -> Result<Self> {
        let shown = path.map_or_else(|| PathBuf::from("(defaults)"), Path::to_path_buf);
        let bad = |msg: String| Error::HostConfig { path: shown.clone(), msg };
        let f: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let cores = match &f.cores {
            Some(s) => cores::parse_list(s).map_err(|e| bad(format!("cores = {e}")))?,
            None => default_pool(online),
        };
        let size = |what: &str, s: &str| {
            parse_size(s)
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("{what} = '{s}' is not a size (try 2Mi or 1Gi)")))
        };
        let sizes = f.hugepage_sizes.clone().unwrap_or_else(|| vec!["2Mi".into(), "1Gi".into()]);
        let hugepage_sizes = sizes.iter().map(|s| size("hugepage_sizes", s)).collect::<Result<Vec<u64>>>()?;
        let default_hugepage_size = size("default_hugepage_size", f.default_hugepage_size.as_deref().unwrap_or("2Mi"))?;
        if !hugepage_sizes.contains(&default_hugepage_size) {
            return Err(bad(format!(
                "default_hugepage_size = '{}' is not in hugepage_sizes",
                format_size(default_hugepage_size)
            )));
        }
        let state_dir = f.state_dir.clone().unwrap_or_else(|| "/run/fastpath".into());
        Ok(Self {
            path: path.map(Path::to_path_buf),
            cores,
            hugepage_sizes,
            default_hugepage_size,
            switch_socket: f.switch_socket.clone().unwrap_or_else(|| state_dir.join("fastpathd.sock")),
            state_dir,
            max_cores: f.max_cores.unwrap_or(4),
            max_hugepages: size("max_hugepages", f.max_hugepages.as_deref().unwrap_or("4Gi"))?,
            max_ports: f.max_ports.unwrap_or(4),
            max_vfs: f.max_vfs.unwrap_or(2),
            memlock: f.memlock.unwrap_or_default(),
            lib_dir: f.lib_dir.clone().unwrap_or_else(|| "/usr/local/lib/fastpath".into()),
            vf_pools: f.vf_pools.clone().unwrap_or_default(),
            vf_bind: f.vf_bind.unwrap_or_default(),
            vf_memlock: match f.vf_memlock.as_deref() {
                Some(s) => parse_size(s).ok_or_else(|| bad(format!("vf_memlock = '{s}' is not a size (try 64Mi)")))?,
                None => 64 << 20,
            },
            switch_timeout_ms: f.switch_timeout_ms.unwrap_or(3000),
            port_security: f.port_security.unwrap_or(fastpath_host::proto::PortSecurity::Mac),
            cores_from: f.cores_from.unwrap_or_default(),
            bridges: f.bridges.clone().unwrap_or_default(),
        })
    }

    /// Loads `explicit`, else `$FASTPATH_HOOK_CONFIG`, else [`DEFAULT_PATH`]; only the
    /// default path may be absent (then the defaults apply).
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into());
        let env = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()).map(PathBuf::from);
        let (path, must_exist) = match (explicit, env) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (p, true),
            (None, None) => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, Some(&path), &online),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Self::parse("", None, &online),
            Err(e) => Err(Error::HostConfig { path, msg: e.to_string() }),
        }
    }

    /// The ledger file.
    pub fn ledger_path(&self) -> PathBuf {
        self.state_dir.join("ledger.json")
    }

    /// The host directory holding one container's vhost-user sockets.
    pub fn sock_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("sock").join(id)
    }

    /// How the configuration names itself in messages.
    pub fn shown(&self) -> String {
        self.path.as_ref().map_or_else(|| format!("{DEFAULT_PATH} (absent: defaults)"), |p| p.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        let c = HostConfig::parse("", None, "0-7").unwrap();
        assert_eq!(c.cores, (1..=7).collect());
        assert_eq!(c.hugepage_sizes, vec![2 << 20, 1 << 30]);
        assert_eq!(c.default_hugepage_size, 2 << 20);
        assert_eq!(c.switch_socket, PathBuf::from("/run/fastpath/fastpathd.sock"));
        assert_eq!(c.memlock, MemlockPolicy::Warn);
        assert_eq!((c.vf_bind, c.vf_memlock), (VfBind::Vfs, 64 << 20));
        assert_eq!(c.port_security, fastpath_host::proto::PortSecurity::Mac);
        assert_eq!(c.cores_from, CoresFrom::Auto);
        assert!(c.bridges.is_empty());
        assert_eq!(HostConfig::parse("bridges = [\"br0\"]", None, "0-1").unwrap().bridges, ["br0"]);
        assert_eq!(HostConfig::parse("cores_from = \"runtime\"", None, "0-1").unwrap().cores_from, CoresFrom::Runtime);
        let e = HostConfig::parse("cores_from = \"kubelet\"", None, "0-1").unwrap_err().to_string();
        assert!(e.contains("kubelet") && e.contains("cores_from"), "{e}");
        let m = HostConfig::parse("port_security = \"off\"", None, "0-1").unwrap();
        assert_eq!(m.port_security, fastpath_host::proto::PortSecurity::Off);
        assert!(HostConfig::parse("port_security = \"mad\"", None, "0-1").unwrap_err().to_string().contains("mad"));
        assert_eq!(HostConfig::parse("", None, "0").unwrap().cores, [0].into());
    }

    #[test]
    fn file_values_and_errors() {
        let c = HostConfig::parse(
            "cores = \"2-3\"\nhugepage_sizes = [\"2Mi\"]\nstate_dir = \"/tmp/x\"\nmax_cores = 1\nmemlock = \"require\"\nvf_bind = \"pools\"\nvf_memlock = \"0\"\n[vf_pools]\nfast = [\"0000:81:10.0\"]\n",
            Some(Path::new("/etc/h.toml")),
            "0-7",
        )
        .unwrap();
        assert_eq!(c.cores, [2, 3].into());
        assert_eq!(c.switch_socket, PathBuf::from("/tmp/x/fastpathd.sock"));
        assert_eq!(c.sock_dir("c1"), PathBuf::from("/tmp/x/sock/c1"));
        assert_eq!(c.memlock, MemlockPolicy::Require);
        assert_eq!(c.vf_pools["fast"], vec!["0000:81:10.0".to_string()]);
        assert_eq!((c.vf_bind, c.vf_memlock), (VfBind::Pools, 0));
        let e = HostConfig::parse("cores = \"x\"", Some(Path::new("/h")), "0-1").unwrap_err().to_string();
        assert!(e.contains("/h") && e.contains("cores"), "{e}");
        let e = HostConfig::parse("bogus = 1", None, "0-1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = HostConfig::parse("hugepage_sizes = [\"1Gi\"]", None, "0-1").unwrap_err().to_string();
        assert!(e.contains("default_hugepage_size"), "{e}");
    }
}
