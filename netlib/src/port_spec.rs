// The textual port specs (`vu:PATH`, `vhost:PATH`, `vf:PCI`, ...) that the examples and
// the switch accept, their parser, and `open_port`, which builds the driver a spec names.
//! Port specs and the one place that opens every kind of port.

use std::path::PathBuf;

use crate::pool::PktPool;
use crate::port::Port;

/// A textual port specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// `vu:PATH`: virtio-user frontend connecting to a listening backend.
    VirtioUser(PathBuf),
    /// `vu-server:PATH`: virtio-user frontend that listens for a backend.
    VirtioUserServer(PathBuf),
    /// `vu-packed:PATH`: virtio-user frontend connecting to a listening backend, on
    /// packed rings when the backend offers them (split ones otherwise).
    VirtioUserPacked(PathBuf),
    /// `vhost:PATH`: vhost-user backend (device side) that listens.
    Vhost(PathBuf),
    /// `vhost-client:PATH`: vhost-user backend that connects.
    VhostClient(PathBuf),
    /// `vf:DDDD:BB:DD.F`: an SR-IOV virtual function (82576/igbvf) bound to
    /// vfio-pci, driven by [`crate::igbvf`].
    Vf(String),
}

/// A port spec that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "port '{0}' is not a port spec (try vu:/path/sock, vu-server:PATH, vu-packed:PATH, vhost:PATH, vhost-client:PATH or vf:0000:01:10.0)"
)]
pub struct BadPortSpec(pub String);

impl std::str::FromStr for PortSpec {
    type Err = BadPortSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, path) = s.split_once(':').ok_or_else(|| BadPortSpec(s.into()))?;
        if path.is_empty() {
            return Err(BadPortSpec(s.into()));
        }
        if kind == "vf" {
            if crate::pci::PciAddress::parse_full(path).is_err() {
                return Err(BadPortSpec(s.into()));
            }
            return Ok(PortSpec::Vf(path.into()));
        }
        let p = PathBuf::from(path);
        Ok(match kind {
            "vu" | "virtio-user" => PortSpec::VirtioUser(p),
            "vu-server" | "virtio-user-server" => PortSpec::VirtioUserServer(p),
            "vu-packed" => PortSpec::VirtioUserPacked(p),
            "vhost" => PortSpec::Vhost(p),
            "vhost-client" => PortSpec::VhostClient(p),
            _ => return Err(BadPortSpec(s.into())),
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (k, p) = match self {
            PortSpec::Vf(pci) => return write!(f, "vf:{pci}"),
            PortSpec::VirtioUser(p) => ("vu", p),
            PortSpec::VirtioUserServer(p) => ("vu-server", p),
            PortSpec::VirtioUserPacked(p) => ("vu-packed", p),
            PortSpec::Vhost(p) => ("vhost", p),
            PortSpec::VhostClient(p) => ("vhost-client", p),
        };
        write!(f, "{k}:{}", p.display())
    }
}

/// Errors opening a port.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// virtio-user failed.
    #[error(transparent)]
    VirtioUser(#[from] crate::virtio_user::VirtioUserError),
    /// vhost-user backend failed.
    #[error(transparent)]
    Vhost(#[from] crate::vhost::VhostError),
    /// The VF driver failed.
    #[error(transparent)]
    Vf(#[from] crate::igbvf::IgbVfError),
}

/// Opens the port `spec` names, with rings of `queue_size` entries, sharing `pool`.
/// A VF port takes the MAC its PF gives (or one derived from its PCI address);
/// open [`crate::igbvf::IgbVf`] directly for other options.
pub fn open_port(spec: &PortSpec, pool: &mut PktPool, queue_size: u16) -> Result<Box<dyn Port>, OpenError> {
    use crate::vhost::{VhostBackend, VhostMode};
    use crate::virtio_user::{VirtioUser, VirtioUserOptions};
    let vu_opts = |server| VirtioUserOptions { queue_size, server, ..VirtioUserOptions::default() };
    Ok(match spec {
        PortSpec::VirtioUser(p) => Box::new(VirtioUser::open(p, pool, vu_opts(false))?),
        PortSpec::VirtioUserServer(p) => Box::new(VirtioUser::open(p, pool, vu_opts(true))?),
        PortSpec::VirtioUserPacked(p) => {
            Box::new(VirtioUser::open(p, pool, VirtioUserOptions { packed: true, ..vu_opts(false) })?)
        }
        PortSpec::Vhost(p) => Box::new(VhostBackend::open(p, VhostMode::Listen)?),
        PortSpec::VhostClient(p) => Box::new(VhostBackend::open(p, VhostMode::Connect)?),
        PortSpec::Vf(pci) => {
            let hugedir = pool.region().backing().hugetlbfs_dir().map(std::path::Path::to_path_buf);
            let opts = crate::igbvf::IgbVfOptions { queue_size, hugedir, ..Default::default() };
            Box::new(crate::igbvf::IgbVf::open(pci, pool, opts)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("vu:/a".parse::<PortSpec>().unwrap(), PortSpec::VirtioUser("/a".into()));
        assert_eq!("vu-packed:/a".parse::<PortSpec>().unwrap(), PortSpec::VirtioUserPacked("/a".into()));
        assert_eq!(PortSpec::VirtioUserPacked("/a".into()).to_string(), "vu-packed:/a");
        assert_eq!("vhost-client:/b".parse::<PortSpec>().unwrap(), PortSpec::VhostClient("/b".into()));
        let e = "tap:/x".parse::<PortSpec>().unwrap_err().to_string();
        assert!(e.contains("tap:/x"), "{e}");
        assert!("vu:".parse::<PortSpec>().is_err());
        assert!("nocolon".parse::<PortSpec>().is_err());
    }

    #[test]
    fn parses_vf_specs() {
        let s: PortSpec = "vf:0000:01:10.0".parse().unwrap();
        assert_eq!(s, PortSpec::Vf("0000:01:10.0".into()));
        assert_eq!(s.to_string(), "vf:0000:01:10.0");
        for bad in ["vf:01:10.0", "vf:0000:01:10", "vf:", "vf:/dev/vfio/5"] {
            let e = bad.parse::<PortSpec>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("vf:0000:01:10.0"), "{e}");
        }
    }
}
