// A snapshot as Prometheus metrics: per port (labelled with its bridge, kind, container and
// pod) its traffic, drops by reason, resets and link; per bridge its MAC table; the worker's load.
//! Rendering a snapshot.

use netlib::pool::BURST;
use netlib::PortCounters;

use super::expo::{Exposition, Family, Type};
use super::snapshot::{PortSample, Snapshot};

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family { name, kind: Type::Counter, help }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family { name, kind: Type::Gauge, help }
}

/// Frames the switch took from a port.
pub static PORT_RX_PACKETS: Family =
    counter("fastpath_port_rx_packets_total", "Frames the switch took from the port's peer and forwarded or dropped.");
/// Their bytes.
pub static PORT_RX_BYTES: Family =
    counter("fastpath_port_rx_bytes_total", "Bytes of the frames counted in rx_packets.");
/// Frames sent to a port's peer.
pub static PORT_TX_PACKETS: Family =
    counter("fastpath_port_tx_packets_total", "Frames the switch sent to the port's peer.");
/// Their bytes.
pub static PORT_TX_BYTES: Family =
    counter("fastpath_port_tx_bytes_total", "Bytes of the frames counted in tx_packets.");
/// Receive faults.
pub static PORT_RX_ERRORS: Family =
    counter("fastpath_port_rx_errors_total", "Receive faults: malformed buffers or runt frames from the port's peer.");
/// Frames not sent.
pub static PORT_TX_DROPPED: Family = counter(
    "fastpath_port_tx_dropped_total",
    "Frames for the port's peer that were not sent (the reasons are in fastpath_port_drops_total).",
);
/// Drops by reason.
pub static PORT_DROPS: Family = counter(
    "fastpath_port_drops_total",
    "Frames dropped, by reason: ring_full, too_big, no_peer (sending); filtered, spoofed, vlan (receiving); wrong_pool.",
);
/// Resets.
pub static PORT_RESETS: Family =
    counter("fastpath_port_resets_total", "Times the port was reset after a fault or its peer going away.");
/// Link state.
pub static PORT_LINK_UP: Family = gauge("fastpath_port_link_up", "1 when frames can move on the port, else 0.");
/// A kind's own counters.
pub static PORT_KIND_EVENTS: Family = counter(
    "fastpath_port_kind_events_total",
    "What a port's kind counts beyond the common counters (a vxlan port's drops by reason, ARP and encapsulation).",
);
/// Ports of a bridge.
pub static BRIDGE_PORTS: Family = gauge("fastpath_bridge_ports", "Ports on the bridge.");
/// MAC table size.
pub static BRIDGE_MAC_ENTRIES: Family =
    gauge("fastpath_bridge_mac_entries", "Fresh entries in the bridge's MAC table.");
/// Learning events.
pub static BRIDGE_MAC_LEARNED: Family = counter(
    "fastpath_bridge_mac_learning_events_total",
    "MACs the bridge learned afresh (new, or back after ageing out) or saw move to another port.",
);
/// Busy passes.
pub static WORKER_BUSY: Family =
    counter("fastpath_worker_busy_polls_total", "The worker's passes over every port that moved at least one frame.");
/// Idle passes.
pub static WORKER_IDLE: Family =
    counter("fastpath_worker_idle_polls_total", "The worker's passes over every port that found no frame.");
/// Burst sizes.
pub static WORKER_BURST: Family = Family {
    name: "fastpath_worker_burst_frames",
    kind: Type::Histogram,
    help: "Frames in each burst the worker took from a port.",
};

/// Every family rendered.
pub static FAMILIES: [&Family; 16] = [
    &PORT_RX_PACKETS,
    &PORT_RX_BYTES,
    &PORT_TX_PACKETS,
    &PORT_TX_BYTES,
    &PORT_RX_ERRORS,
    &PORT_TX_DROPPED,
    &PORT_DROPS,
    &PORT_RESETS,
    &PORT_LINK_UP,
    &PORT_KIND_EVENTS,
    &BRIDGE_PORTS,
    &BRIDGE_MAC_ENTRIES,
    &BRIDGE_MAC_LEARNED,
    &WORKER_BUSY,
    &WORKER_IDLE,
    &WORKER_BURST,
];

/// The drop reasons of [`PortCounters`], as `reason` label values.
fn drops(c: &PortCounters) -> [(&'static str, u64); 7] {
    [
        ("ring_full", c.drop_ring_full),
        ("too_big", c.drop_too_big),
        ("no_peer", c.drop_no_peer),
        ("filtered", c.drop_filtered),
        ("spoofed", c.drop_spoofed),
        ("vlan", c.drop_vlan),
        ("wrong_pool", c.wrong_pool),
    ]
}

/// A port's labels: port, bridge, kind, and its container's id, name and pod where known.
fn port_labels(p: &PortSample) -> Vec<(&'static str, &str)> {
    let mut l = vec![("port", p.port.as_str()), ("bridge", p.bridge.as_str()), ("kind", p.kind)];
    for (k, v) in [
        ("container_id", &p.container_id),
        ("container_name", &p.container_name),
        ("pod_name", &p.pod_name),
        ("pod_namespace", &p.pod_namespace),
    ] {
        if let Some(v) = v {
            l.push((k, v.as_str()));
        }
    }
    l
}

/// The burst histogram's upper bounds: powers of two below [`BURST`], then `BURST`.
fn burst_bounds() -> impl Iterator<Item = usize> {
    (0..).map(|i| 1usize << i).take_while(|&b| b < BURST).chain([BURST])
}

/// The snapshot in the text exposition format.
pub fn render(s: &Snapshot) -> String {
    let mut e = Exposition::new();
    for p in &s.ports {
        let l = port_labels(p);
        let c = &p.counters;
        for (f, v) in [
            (&PORT_RX_PACKETS, c.rx_packets),
            (&PORT_RX_BYTES, c.rx_bytes),
            (&PORT_TX_PACKETS, c.tx_packets),
            (&PORT_TX_BYTES, c.tx_bytes),
            (&PORT_RX_ERRORS, c.rx_errors),
            (&PORT_TX_DROPPED, c.tx_dropped),
            (&PORT_RESETS, c.resets),
            (&PORT_LINK_UP, u64::from(p.link_up)),
        ] {
            e.sample(f, &l, v);
        }
        for (reason, v) in drops(c) {
            e.sample(&PORT_DROPS, &[l.as_slice(), &[("reason", reason)]].concat(), v);
        }
        for &(name, v) in &p.kind_counters {
            e.sample(&PORT_KIND_EVENTS, &[l.as_slice(), &[("counter", name)]].concat(), v);
        }
    }
    for b in &s.bridges {
        let l = [("bridge", b.bridge.as_str())];
        e.sample(&BRIDGE_PORTS, &l, b.ports as u64);
        e.sample(&BRIDGE_MAC_ENTRIES, &l, b.mac_entries as u64);
        e.sample(&BRIDGE_MAC_LEARNED, &l, b.mac_learned);
    }
    for (i, load) in s.loads.iter().enumerate() {
        let worker = i.to_string();
        let w = [("worker", worker.as_str())];
        e.sample(&WORKER_BUSY, &w, load.busy_polls);
        e.sample(&WORKER_IDLE, &w, load.idle_polls);
        let b = &load.bursts;
        let upto = |bound: usize| b[..=bound.min(BURST)].iter().sum::<u64>();
        let buckets: Vec<(u64, u64)> = burst_bounds().map(|le| (le as u64, upto(le))).collect();
        let sum = b.iter().enumerate().map(|(n, k)| n as u64 * k).sum();
        e.histogram(&WORKER_BURST, &w, &buckets, sum, upto(BURST));
    }
    e.finish()
}

#[cfg(test)]
mod tests;
