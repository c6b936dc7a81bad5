// What the switch says about its ports (`list`): the counters netlib's ports keep, plus the
// link state, the last fault and the MACs learned there; and who listens on a port's socket.
//! Port information in the control protocol.

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
    /// MAC addresses the bridge has learned on this port.
    #[serde(default)]
    pub macs: Vec<String>,
}
