// Faults around a running switch: a frontend killed mid-traffic (nothing leaks),
// the switch restarted under traffic (apps reconnect, resume time printed), and a
// consumer that stops reading (drops on its port alone; counters add up).
//! Crash and stall tests for fastpathd.

use std::path::Path;
use std::time::{Duration, Instant};

use integration::{
    fastpathctl_list, fastpathd_port, link_up, port_stat, require, serial, spawn_fastpathd, wait_ctl_idle,
    wait_for_socket, wait_ports_up, wait_until, Peers, Proc, TestDir, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const BINS: &[&str] = &["fastpathd", "fastpathctl", "pktgen", "sink"];

fn list(peers: &Peers, ctl: &Path) -> Vec<Value> {
    fastpathctl_list(peers, ctl).unwrap_or_else(|e| panic!("{e}"))
}

fn stat(ports: &[Value], name: &str, key: &str) -> u64 {
    port_stat(ports, name, key).unwrap_or(0)
}

fn macs(ports: &[Value], name: &str) -> usize {
    ports.iter().find(|p| p["name"] == name).and_then(|p| p["macs"].as_array()).map_or(0, Vec::len)
}

/// Open fds and mappings of a process.
fn resources(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_or(0, |s| s.lines().count());
    (fds, maps)
}

const APP: [&str; 6] = ["--queue-size", "1024", "--idle-sleep-us", "20", "--json", "--link-timeout"];

fn app(name: &str, dir: &TestDir, bins: &Path, args: &[&str]) -> Proc {
    let mut a: Vec<&str> = args.to_vec();
    // A caller that names its own queue size keeps it; the rest of APP still applies.
    let skip = if args.contains(&"--queue-size") { 2 } else { 0 };
    a.extend_from_slice(&APP[skip..]);
    a.push("30");
    Proc::spawn(name, dir, &bins.join(if name.starts_with("sink") { "sink" } else { "pktgen" }), &a, &[])
}

#[test]
fn frontend_killed_mid_traffic_leaks_nothing() {
    let Some(peers) = require("frontend_killed_mid_traffic_leaks_nothing", BINS, false) else { return };
    let _s = serial();
    let bins = peers.bin("");
    let dir = TestDir::new("kill");
    let (ctl, a, b) = (dir.join("ctl.sock"), dir.join("a.sock"), dir.join("b.sock"));
    let ports = [fastpathd_port("br0", "a", "vhost", &a), fastpathd_port("br0", "b", "vhost", &b)];
    let mut sw = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &[], &ports);
    assert!(wait_for_socket(&ctl, Duration::from_secs(10)) && wait_for_socket(&b, Duration::from_secs(10)));
    // fastpathd has started its threads once it answers (the worker makes the list), and its
    // fds are its own once it has closed that control connection.
    let ready = wait_until(SETUP_TIMEOUT, || fastpathctl_list(&peers, &ctl).is_ok());
    assert!(ready && wait_ctl_idle(&ctl, SETUP_TIMEOUT), "fastpathd did not answer and close its control connection");
    let before = resources(sw.pid());
    let mut sink = app("sink", &dir, &bins, &["--port", &format!("vu:{}", a.display()), "--check"]);
    let mut gen = app("pktgen", &dir, &bins, &["--port", &format!("vu:{}", b.display()), "--rate", "100000"]);
    let flowing = wait_until(Duration::from_secs(20), || stat(&list(&peers, &ctl), "a", "tx_packets") > 10_000);
    assert!(flowing, "no traffic through the switch: {:?}", list(&peers, &ctl));
    let during = resources(sw.pid());
    assert!(macs(&list(&peers, &ctl), "b") == 1, "pktgen's MAC not learned on b: {:?}", list(&peers, &ctl));
    gen.kill();
    let gone = wait_until(Duration::from_secs(5), || {
        let l = list(&peers, &ctl);
        link_up(&l, "b") == Some(false) && macs(&l, "b") == 0
    });
    assert!(gone, "port b still up or its MAC still learned after pktgen was killed: {:?}", list(&peers, &ctl));
    sink.kill();
    let back = wait_until(Duration::from_secs(5), || resources(sw.pid()) == before);
    let after = resources(sw.pid());
    eprintln!(
        "fastpathd fds/mappings: before {} / {}, with two frontends {} / {}, after both were killed {} / {}",
        before.0, before.1, during.0, during.1, after.0, after.1
    );
    assert!(back, "fastpathd kept resources after its frontends died: before {before:?}, after {after:?}");
    assert!(during.1 > before.1, "the frontends' memory was never mapped? {during:?} vs {before:?}");
    assert!(sw.try_status().is_none(), "fastpathd exited");
}

#[test]
fn switch_restart_under_traffic_resumes() {
    let Some(peers) = require("switch_restart_under_traffic_resumes", BINS, false) else { return };
    let _s = serial();
    let bins = peers.bin("");
    let dir = TestDir::new("restart");
    let (ctl, a, b) = (dir.join("ctl.sock"), dir.join("a.sock"), dir.join("b.sock"));
    // The apps listen; the switch connects to them (and reconnects when restarted).
    let mut sink =
        app("sink", &dir, &bins, &["--port", &format!("vu-server:{}", a.display()), "--check", "--idle-exit", "5"]);
    let mut gen = app("pktgen", &dir, &bins, &["--port", &format!("vu-server:{}", b.display()), "--rate", "50000"]);
    assert!(wait_for_socket(&a, Duration::from_secs(10)) && wait_for_socket(&b, Duration::from_secs(10)));
    let ports = [fastpathd_port("br0", "a", "vhost-client", &a), fastpathd_port("br0", "b", "vhost-client", &b)];
    let mut sw = spawn_fastpathd("fastpathd-1", &peers, &dir, &ctl, &[], &ports);
    assert!(wait_for_socket(&ctl, Duration::from_secs(10)));
    let flowing = wait_until(Duration::from_secs(20), || stat(&list(&peers, &ctl), "a", "tx_packets") > 20_000);
    assert!(flowing, "no traffic before the restart: {:?}", list(&peers, &ctl));
    sw.kill();
    // A killed switch leaves its control socket file behind: wait for the new one.
    let _ = std::fs::remove_file(&ctl);
    let t0 = Instant::now();
    let mut sw2 = spawn_fastpathd("fastpathd-2", &peers, &dir, &ctl, &[], &ports);
    assert!(wait_for_socket(&ctl, Duration::from_secs(10)));
    let resumed = wait_until(Duration::from_secs(20), || stat(&list(&peers, &ctl), "a", "tx_packets") > 1000);
    let resume_ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert!(resumed, "traffic did not resume within 20 s of the restart: {:?}", list(&peers, &ctl));
    eprintln!("fastpathd restarted under traffic: traffic resumed {resume_ms:.0} ms after the new switch started");
    // As much traffic through the new switch as through the old one before pktgen stops.
    let steady = wait_until(Duration::from_secs(20), || stat(&list(&peers, &ctl), "a", "tx_packets") > 20_000);
    assert!(steady, "the new switch did not deliver 20000 frames within 20 s: {:?}", list(&peers, &ctl));
    gen.stop(Signal::SIGINT, Duration::from_secs(5));
    let ended = sink.wait_timeout(Duration::from_secs(30));
    let v = sink.last_json().unwrap_or_default();
    eprintln!("sink across the restart: {v}");
    assert!(ended.is_some(), "sink did not finish");
    assert_eq!(v["bad"].as_u64(), Some(0), "damaged frames across the restart: {v}");
    assert!(v["received"].as_u64().unwrap_or(0) > 20_000, "sink got too little: {v}");
    assert!(sw2.try_status().is_none(), "the second fastpathd exited");
}

#[test]
fn stalled_consumer_drops_on_its_own_port_only() {
    let Some(peers) = require("stalled_consumer_drops_on_its_own_port_only", BINS, false) else { return };
    let _s = serial();
    let bins = peers.bin("");
    let dir = TestDir::new("stall");
    let ctl = dir.join("ctl.sock");
    let s = |n: &str| dir.join(&format!("{n}.sock"));
    let ports: Vec<String> = [("br0", "g1"), ("br0", "s1"), ("br1", "g2"), ("br1", "s2")]
        .iter()
        .map(|&(br, n)| fastpathd_port(br, n, "vhost", &s(n)))
        .collect();
    let _sw = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0", "br1"], &ports);
    assert!(wait_for_socket(&ctl, Duration::from_secs(10)) && wait_for_socket(&s("s2"), Duration::from_secs(10)));
    let mut s1 = app("sink1", &dir, &bins, &["--port", &format!("vu:{}", s("s1").display())]);
    let mut s2 = app(
        "sink2",
        &dir,
        &bins,
        &["--port", &format!("vu:{}", s("s2").display()), "--check", "--idle-exit", "5", "--queue-size", "4096"],
    );
    // The generators start once the sinks' ports are up: the bridges flood to who is there.
    wait_ports_up(&peers, &ctl, &["s1", "s2"], SETUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let mut g1 = app("pktgen1", &dir, &bins, &["--port", &format!("vu:{}", s("g1").display()), "--rate", "50000"]);
    let n2: u64 = 150_000;
    let mut g2 = app(
        "pktgen2",
        &dir,
        &bins,
        &["--port", &format!("vu:{}", s("g2").display()), "--rate", "50000", "--count", &n2.to_string()],
    );
    assert!(wait_until(Duration::from_secs(20), || stat(&list(&peers, &ctl), "s1", "tx_packets") > 10_000));
    // sink1 stops reading: its ring fills, the switch must drop for it alone.
    s1.signal(Signal::SIGSTOP);
    let dropping = wait_until(Duration::from_secs(10), || stat(&list(&peers, &ctl), "s1", "drop_ring_full") > 20_000);
    let l = list(&peers, &ctl);
    s1.signal(Signal::SIGCONT);
    assert!(dropping, "no drops counted on the stalled port: {l:?}");
    let g2_done = g2.wait_timeout(Duration::from_secs(30));
    assert!(g2_done.is_some(), "pktgen2 did not finish: the stall slowed the other bridge");
    let s2_done = s2.wait_timeout(Duration::from_secs(30));
    assert!(s2_done.is_some(), "sink2 did not finish");
    let v = s2.last_json().unwrap_or_default();
    eprintln!("beside a stalled consumer: {v}");
    // sink2's ring holds 80 ms of its traffic, so a scheduling hiccup of sink2 itself (the
    // machine has two cores) is not taken for the switch holding the other bridge back.
    let l2 = list(&peers, &ctl);
    assert_eq!(
        v["received"].as_u64(),
        Some(n2),
        "the other pair lost packets while s1 was stalled: {v}; the switch's ports: {l2:?}"
    );
    assert_eq!(v["lost"].as_u64(), Some(0), "{v}");
    g1.stop(Signal::SIGINT, Duration::from_secs(5));
    // Once fastpathd has seen pktgen1 go (link down on g1), it takes nothing more from g1: the
    // counters are final.
    let g1_down = wait_until(Duration::from_secs(5), || link_up(&list(&peers, &ctl), "g1") == Some(false));
    assert!(g1_down, "port g1 still up 5 s after pktgen1 exited: {:?}", list(&peers, &ctl));
    // Counters add up: what the switch took from g1 went to s1 or was dropped with a reason.
    let l = list(&peers, &ctl);
    let taken = stat(&l, "g1", "rx_packets");
    let delivered = stat(&l, "s1", "tx_packets");
    let dropped = stat(&l, "s1", "drop_ring_full") + stat(&l, "s1", "drop_too_big");
    eprintln!("g1 sent {taken} = s1 received {delivered} + dropped {dropped} (ring full)");
    assert_eq!(taken, delivered + dropped, "counters don't add up: {l:?}");
    assert_eq!(stat(&l, "g2", "rx_packets"), stat(&l, "s2", "tx_packets"), "{l:?}");
    assert_eq!(stat(&l, "s2", "drop_ring_full"), 0, "{l:?}");
}
