// The switch's side of a scrape: its ports, bridges and load copied into a metrics snapshot
// (no MAC strings: a table's size is counted, its entries are not listed).
//! Metrics snapshots of the switch.

use netlib::LinkState;

use crate::metrics::{BridgeSample, PortSample, Snapshot};

use super::Switch;

impl Switch {
    /// What a scrape shows: every port's counters, every bridge's MAC table, the load.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            ports: self
                .ports
                .iter()
                .flatten()
                .filter(|p| !p.remote)
                .map(|p| {
                    PortSample::of(&p.cfg, p.port.counters(), p.port.link() == LinkState::Up, p.port.kind_counters())
                })
                .collect(),
            bridges: self
                .bridges
                .iter()
                .map(|b| BridgeSample {
                    bridge: b.name.clone(),
                    ports: b.members.len(),
                    mac_entries: b.macs.len(self.now),
                    mac_learned: b.macs.learned(),
                })
                .collect(),
            loads: vec![self.load.clone()],
        }
    }
}
