// The Port trait every driver implements, its counters, and the textual port
// specs (`vu:PATH`, `vhost:PATH`, ...) that the examples and the switch accept.
//! The `Port` seam between drivers and applications.

use std::path::PathBuf;

use crate::pool::{Packet, PktPool};

/// Link state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected or not ready yet.
    Down,
    /// Rings are set up: packets move.
    Up,
}

/// Per-port counters, from the point of view of the port's owner: `rx` is what
/// the port took from its peer, `tx` what it handed to its peer. `tx_dropped`
/// counts every packet the owner asked to send that was not taken; the `drop_*`
/// fields say why, where the port knows. The C ABI hands out the first seven
/// fields as `struct fp_counters` (netlib-ffi's own `#[repr(C)]` copy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive faults (malformed buffers from the peer).
    pub rx_errors: u64,
    /// Packets refused on transmit (ring full, link down, too big).
    pub tx_dropped: u64,
    /// Times the port was reset after a fault or a peer disconnect.
    pub resets: u64,
    /// Of `tx_dropped`: the peer's receive ring had no buffer.
    pub drop_ring_full: u64,
    /// Of `tx_dropped`: the peer's buffer was too small for the frame.
    pub drop_too_big: u64,
    /// Received packets with nowhere to go (a switch's destination is the port itself).
    pub drop_filtered: u64,
}

/// A packet port: bursts in, bursts out.
///
/// `rx_burst` appends up to `pkts`' spare capacity packets from `pool`;
/// `tx_burst` takes packets from the front of `pkts` and returns how many it
/// took (those now belong to the port); the rest stay in `pkts` for the caller to
/// retry or free. Neither allocates, locks, or (in polling mode) makes a syscall,
/// except for the periodic control check a port does every few hundred calls.
pub trait Port: Send {
    /// Receives into `pkts` from buffers of `pool`; returns how many were added.
    fn rx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize;
    /// Sends from the front of `pkts`; returns how many were taken.
    fn tx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize;
    /// Link state.
    fn link(&self) -> LinkState;
    /// Counters.
    fn counters(&self) -> PortCounters;
    /// Drives the control path (connection, handshake, peer messages) now.
    fn poll_control(&mut self, pool: &mut PktPool);
    /// A name for logs.
    fn name(&self) -> &str;
    /// Waits (up to `timeout`) until the peer has taken every packet this port
    /// handed to it, so that closing the port loses nothing; returns whether it did.
    fn flush_tx(&mut self, pool: &mut PktPool, timeout: std::time::Duration) -> bool {
        let _ = (pool, timeout);
        true
    }
    /// Interrupt mode: sleeps until the peer signals that packets arrived, or
    /// `timeout` passes; returns whether it was woken. Call it only after
    /// `rx_burst` found nothing for a while. Ports without notifications just
    /// nap briefly.
    fn wait_rx(&mut self, pool: &mut PktPool, timeout: std::time::Duration) -> bool {
        let _ = pool;
        std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
        false
    }
}

/// A textual port specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// `vu:PATH`: virtio-user frontend connecting to a listening backend.
    VirtioUser(PathBuf),
    /// `vu-server:PATH`: virtio-user frontend that listens for a backend.
    VirtioUserServer(PathBuf),
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
    "port '{0}' is not a port spec (try vu:/path/sock, vu-server:PATH, vhost:PATH, vhost-client:PATH or vf:0000:01:10.0)"
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
            "vhost" => PortSpec::Vhost(p),
            "vhost-client" => PortSpec::VhostClient(p),
            _ => return Err(BadPortSpec(s.into())),
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let PortSpec::Vf(pci) = self {
            return write!(f, "vf:{pci}");
        }
        let (k, p) = match self {
            PortSpec::VirtioUser(p) => ("vu", p),
            PortSpec::VirtioUserServer(p) => ("vu-server", p),
            PortSpec::Vhost(p) => ("vhost", p),
            PortSpec::VhostClient(p) => ("vhost-client", p),
            PortSpec::Vf(_) => unreachable!("written above"),
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
