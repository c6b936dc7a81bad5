// What the worker publishes for a scrape: each port's labels and counters, each bridge's MAC
// table, and the worker's load, copied out of the switch between batches of passes.
//! Metrics snapshots.

use netlib::PortCounters;

use crate::config::PortConfig;
use crate::switch::load::Load;

/// One port: who it is (the labels of its metrics) and what it counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSample {
    /// The port's name.
    pub port: String,
    /// Its bridge.
    pub bridge: String,
    /// Its kind (`vhost`, `tap`, `afxdp`, `vxlan`, `vf`).
    pub kind: &'static str,
    /// The id of the container it belongs to.
    pub container_id: Option<String>,
    /// That container's name.
    pub container_name: Option<String>,
    /// Its Kubernetes pod's name.
    pub pod_name: Option<String>,
    /// Its Kubernetes pod's namespace.
    pub pod_namespace: Option<String>,
    /// The counters every port keeps.
    pub counters: PortCounters,
    /// Whether frames can move.
    pub link_up: bool,
    /// What its kind counts beyond [`PortCounters`], by name.
    pub kind_counters: Vec<(&'static str, u64)>,
}

impl PortSample {
    /// The sample of the port `cfg` describes, with what it counted.
    pub fn of(
        cfg: &PortConfig,
        counters: PortCounters,
        link_up: bool,
        kind_counters: Vec<(&'static str, u64)>,
    ) -> Self {
        Self {
            port: cfg.name.clone(),
            bridge: cfg.bridge.clone(),
            kind: cfg.kind.label(),
            container_id: cfg.container.clone(),
            container_name: cfg.container_name.clone(),
            pod_name: cfg.pod_name.clone(),
            pod_namespace: cfg.pod_namespace.clone(),
            counters,
            link_up,
            kind_counters,
        }
    }
}

/// One bridge's MAC table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSample {
    /// The bridge's name.
    pub bridge: String,
    /// Its ports.
    pub ports: usize,
    /// Fresh entries in its MAC table.
    pub mac_entries: usize,
    /// Learning events: MACs learned afresh or moved to another port.
    pub mac_learned: u64,
}

/// Everything a scrape shows, as the worker saw it at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The ports.
    pub ports: Vec<PortSample>,
    /// The bridges.
    pub bridges: Vec<BridgeSample>,
    /// Each worker's load (worker 0 first).
    pub loads: Vec<Load>,
}
