// The rendering against what Prometheus's text format asks: valid names, counters ending in
// _total, one family per name with HELP and TYPE once, every port counter there, labels escaped.
use super::*;
use crate::metrics::expo::valid_name;
use crate::metrics::snapshot::BridgeSample;
use crate::switch::load::Load;

fn port(name: &str) -> PortSample {
    PortSample {
        port: name.into(),
        bridge: "br0".into(),
        kind: "vhost",
        container_id: None,
        container_name: None,
        pod_name: None,
        pod_namespace: None,
        counters: PortCounters::default(),
        link_up: true,
        kind_counters: Vec::new(),
    }
}

fn snapshot() -> Snapshot {
    let mut a = port("a");
    a.counters.rx_packets = 10;
    let mut vx = port("vx");
    vx.kind = "vxlan";
    vx.link_up = false;
    vx.kind_counters = vec![("rx_not_udp", 3), ("arp_requests", 4)];
    let mut load = Load { busy_polls: 5, idle_polls: 95, ..Load::default() };
    load.bursts[1] = 2;
    load.bursts[3] = 1;
    load.bursts[BURST] = 4;
    Snapshot {
        ports: vec![a, vx],
        bridges: vec![BridgeSample { bridge: "br0".into(), ports: 2, mac_entries: 1, mac_learned: 6 }],
        loads: vec![load],
    }
}

/// The family a sample line belongs to (a histogram's `_bucket`, `_sum` and `_count` lines
/// are its family's).
fn family_of(line: &str) -> &'static str {
    let name = line.split(['{', ' ']).next().unwrap_or_default();
    FAMILIES
        .iter()
        .find(|f| {
            name == f.name
                || (f.kind == Type::Histogram
                    && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(f.name)))
        })
        .map_or_else(|| panic!("sample of no family: {line}"), |f| f.name)
}

#[test]
fn names_are_valid_unique_and_counters_end_in_total() {
    for (i, f) in FAMILIES.iter().enumerate() {
        assert!(valid_name(f.name), "{}", f.name);
        assert_eq!(f.kind == Type::Counter, f.name.ends_with("_total"), "{}", f.name);
        assert!(!FAMILIES[..i].iter().any(|g| g.name == f.name), "{} twice", f.name);
        assert!(!f.help.is_empty());
    }
}

#[test]
fn each_family_once_with_help_and_type_then_all_its_samples() {
    let t = render(&snapshot());
    let mut done: Vec<&str> = Vec::new();
    let mut current = "";
    for line in t.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(!done.contains(&name), "HELP of {name} twice");
            done.push(name);
            current = name;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let f = FAMILIES.iter().find(|f| f.name == name).unwrap();
            assert_eq!((name, kind), (current, f.kind.label()));
            continue;
        }
        assert_eq!(family_of(line), current, "{line} outside its family");
    }
    assert_eq!(done.len(), FAMILIES.len(), "every family rendered: {done:?}");
    assert_eq!(t.matches("# TYPE ").count(), FAMILIES.len());
}

#[test]
fn every_port_counter_is_exported() {
    // Each field of PortCounters (as its serde names them) gets a value of its own.
    let fields = serde_json::to_value(PortCounters::default()).unwrap();
    let fields: Vec<String> = fields.as_object().unwrap().keys().cloned().collect();
    let values: serde_json::Map<String, serde_json::Value> =
        fields.iter().enumerate().map(|(i, k)| (k.clone(), (1001 + i as u64).into())).collect();
    let mut p = port("a");
    p.counters = serde_json::from_value(values.into()).unwrap();
    let t = render(&Snapshot { ports: vec![p], ..Snapshot::default() });
    for (i, k) in fields.iter().enumerate() {
        let v = format!(" {}", 1001 + i);
        assert!(t.lines().any(|l| l.starts_with("fastpath_port_") && l.ends_with(&v)), "{k} missing:\n{t}");
    }
    assert!(t.contains("fastpath_port_drops_total{port=\"a\",bridge=\"br0\",kind=\"vhost\",reason=\"ring_full\"} "));
}

#[test]
fn ports_bridges_and_the_worker() {
    let t = render(&snapshot());
    assert!(t.contains("fastpath_port_rx_packets_total{port=\"a\",bridge=\"br0\",kind=\"vhost\"} 10\n"), "{t}");
    assert!(t.contains("fastpath_port_link_up{port=\"vx\",bridge=\"br0\",kind=\"vxlan\"} 0\n"));
    assert!(t.contains(
        "fastpath_port_kind_events_total{port=\"vx\",bridge=\"br0\",kind=\"vxlan\",counter=\"rx_not_udp\"} 3\n"
    ));
    assert!(t.contains("fastpath_bridge_mac_entries{bridge=\"br0\"} 1\n"));
    assert!(t.contains("fastpath_bridge_mac_learning_events_total{bridge=\"br0\"} 6\n"));
    assert!(t.contains("fastpath_worker_busy_polls_total{worker=\"0\"} 5\n"));
    assert!(t.contains("fastpath_worker_idle_polls_total{worker=\"0\"} 95\n"));
    let hist: Vec<&str> = t.lines().filter(|l| l.starts_with("fastpath_worker_burst_frames_")).collect();
    assert_eq!(
        hist,
        [
            "fastpath_worker_burst_frames_bucket{worker=\"0\",le=\"1\"} 2",
            "fastpath_worker_burst_frames_bucket{worker=\"0\",le=\"2\"} 2",
            "fastpath_worker_burst_frames_bucket{worker=\"0\",le=\"4\"} 3",
            "fastpath_worker_burst_frames_bucket{worker=\"0\",le=\"8\"} 3",
            "fastpath_worker_burst_frames_bucket{worker=\"0\",le=\"16\"} 3",
            "fastpath_worker_burst_frames_bucket{worker=\"0\",le=\"32\"} 7",
            "fastpath_worker_burst_frames_bucket{worker=\"0\",le=\"+Inf\"} 7",
            "fastpath_worker_burst_frames_sum{worker=\"0\"} 133",
            "fastpath_worker_burst_frames_count{worker=\"0\"} 7",
        ]
    );
}

#[test]
fn container_and_pod_labels_when_known_escaped() {
    let mut p = port("fp-c1-br0");
    p.container_id = Some("c1".into());
    p.pod_name = Some("web-\"0\"".into());
    p.pod_namespace = Some("a\\b".into());
    let t = render(&Snapshot { ports: vec![p], ..Snapshot::default() });
    let want = "fastpath_port_tx_packets_total{port=\"fp-c1-br0\",bridge=\"br0\",kind=\"vhost\",container_id=\"c1\",\
                pod_name=\"web-\\\"0\\\"\",pod_namespace=\"a\\\\b\"} 0\n";
    assert!(t.contains(want), "{t}");
    assert!(!t.contains("container_name"), "no name known, no label");
}
