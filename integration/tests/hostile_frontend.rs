// Every hostile case against a running fastpathd, with real traffic between two
// other ports beside it: the switch must survive, reset only the hostile port, log
// one line naming it, and the neighbours must lose nothing.
//! Hostile vhost-user frontends against fastpathd.
#![allow(clippy::many_single_char_names)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration::{
    fastpathctl_list, fastpathd_port, port_entry, port_stat, require, run_with_timeout, serial, spawn_fastpathd,
    wait_for_socket, wait_ports_up, wait_until, Peers, Proc, TestDir, SETUP_TIMEOUT,
};
use serde_json::Value;

const CASES: &[(&str, &str)] = &[
    ("short-payload", "payload of 4 bytes"),
    ("truncated", ""),
    ("missing-fds", "0 fds attached"),
    ("extra-fds", "1 fds attached"),
    ("overlap", "overlaps"),
    ("wrap", "bad region size"),
    ("too-many-slots", "9 regions"),
    ("add-too-many", "more than 32 memory regions"),
    ("ring-outside", "outside every memory region"),
    ("num-3", "size 3"),
    ("num-0", "size 0"),
    ("num-65536", "size 65536"),
    ("vring-past-pairs", "vring index 16: this port takes 8 queue pair(s)"),
    ("avail-jump", "entries ahead"),
    ("loop", "descriptor chain from head 0"),
    ("next-past-end", "past the table"),
    ("len-overflow", "outside the frontend's memory"),
    ("straddle", "outside the frontend's memory"),
    ("outside", "outside the frontend's memory"),
    ("used-scribble", ""),
    ("indirect-nested", "is indirect too (nested)"),
    ("indirect-outside", "indirect table at 0x10 of 64 bytes that is outside the frontend's memory"),
    ("indirect-huge", "of 4294967280 bytes that has more entries than the ring"),
    ("mrg-num-buffers", ""),
    ("gso-lies", ""),
    ("packed-id", "buffer id 300 is past the ring"),
    ("packed-wrap-lie", "wrap bits lie"),
    ("packed-outside", "outside the frontend's memory"),
    ("packed-indirect-nested", "is indirect too (nested)"),
];

const TEST: &str = "hostile_frontends_reset_only_their_port";
const BINS: &[&str] = &["fastpathd", "fastpathctl", "pktgen", "sink"];
/// How long one hostile frontend may run (each ends within about 3 s).
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long fastpathd may take, once a hostile frontend has gone, to count the reset of its
/// port and to have logged its fault.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

fn ctl_list(peers: &Peers, ctl: &Path) -> Vec<Value> {
    fastpathctl_list(peers, ctl).unwrap_or_else(|e| panic!("{e}"))
}

fn port<'a>(list: &'a [Value], name: &str) -> &'a Value {
    port_entry(list, name).unwrap_or_else(|| panic!("no port {name}"))
}

/// fastpathd's warning lines (a fault it found) on its stderr so far.
fn warnings(sw: &Proc) -> Vec<String> {
    sw.stderr().lines().filter(|l| l.contains("WARN")).map(String::from).collect()
}

#[test]
fn hostile_frontends_reset_only_their_port() {
    let Some(peers) = require(TEST, BINS, false) else { return };
    let _serial = serial();
    let dir = TestDir::new("hostile");
    let (ctl, a, b, h) = (dir.join("ctl.sock"), dir.join("a.sock"), dir.join("b.sock"), dir.join("h.sock"));
    let ports = [
        fastpathd_port("br0", "a", "vhost", &a),
        fastpathd_port("br0", "b", "vhost", &b),
        fastpathd_port("br1", "h", "vhost", &h),
    ];
    let mut sw = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0", "br1"], &ports);
    for s in [&ctl, &a, &b, &h] {
        assert!(wait_for_socket(s, SETUP_TIMEOUT), "{} never appeared:\n{}", s.display(), sw.describe(20, 0));
    }
    // Traffic beside the hostile port, for the whole test (stopped at the end).
    // 4096 receive entries: 100 ms of the generator's frames, so a sink the machine leaves
    // unscheduled for a while (2 cores, a busy-polling switch, the hostile frontends) still
    // has room for everything the switch forwards meanwhile.
    let common = ["--queue-size", "4096", "--idle-sleep-us", "20", "--json", "--quiet"];
    let (vu_a, vu_b) = (format!("vu:{}", a.display()), format!("vu:{}", b.display()));
    let sink_args = [&["--port", &vu_a, "--check", "--idle-exit", "5"], &common[..]].concat();
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args, &[]);
    // pktgen starts once the sink's port is up: the bridge floods to who is there.
    wait_ports_up(&peers, &ctl, &["a"], SETUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", sink.describe(20, 0)));
    let gen_args = [&["--port", &vu_b, "--rate", "40000"], &common[..]].concat();
    let mut gen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_args, &[]);
    let hostile = Path::new(env!("CARGO_BIN_EXE_hostile"));
    let mut resets = 0u64;
    for (case, expect) in CASES {
        let before = warnings(&sw).len();
        let listed = ctl_list(&peers, &ctl);
        let rx_before = port_stat(&listed, "h", "rx_packets").unwrap_or(0);
        let errors_before = port_stat(&listed, "h", "rx_errors").unwrap_or(0);
        let out = run_with_timeout(Command::new(hostile).arg(case).arg(&h), HOSTILE_TIMEOUT)
            .unwrap_or_else(|e| panic!("hostile {case}: {e}"));
        assert!(out.status.success(), "hostile {case}: {}", String::from_utf8_lossy(&out.stderr));
        resets += 1;
        // The frontend has gone: fastpathd resets port h (and has logged the fault, if any).
        let lines = usize::from(!expect.is_empty());
        let settled = wait_until(RESET_TIMEOUT, || {
            sw.try_status().is_some()
                || (fastpathctl_list(&peers, &ctl).is_ok_and(|l| port_stat(&l, "h", "resets") == Some(resets))
                    && warnings(&sw).len() >= before + lines)
        });
        assert!(sw.try_status().is_none(), "fastpathd died on case {case}:\n{}", sw.describe(20, 0));
        let list = ctl_list(&peers, &ctl);
        let hp = port(&list, "h");
        assert!(settled, "case {case}: fastpathd did not reset port h ({resets} resets) and log {lines} fault line(s) within {RESET_TIMEOUT:?}: {hp}\n{}", sw.describe(20, 0));
        assert_eq!(hp["stats"]["resets"].as_u64(), Some(resets), "case {case}: port h resets, list: {hp}");
        let new: Vec<String> = warnings(&sw).split_off(before);
        if expect.is_empty() {
            assert!(new.is_empty(), "case {case}: expected no fault line, got {new:?}");
        } else {
            assert_eq!(new.len(), 1, "case {case}: expected one log line, got {new:?}");
            assert!(
                new[0].contains("port h") && new[0].contains(expect),
                "case {case}: log line {:?} should name port h and '{expect}'",
                new[0]
            );
        }
        if *case == "mrg-num-buffers" {
            // The lying num_buffers changed nothing: the switch took its frames as any.
            let rx = hp["stats"]["rx_packets"].as_u64().unwrap_or(0);
            assert!(rx > rx_before, "case {case}: port h took no frame ({rx_before} before, {rx} after): {hp}");
        }
        if *case == "gso-lies" {
            // Each lying header was refused and counted; nothing else happened.
            let errors = hp["stats"]["rx_errors"].as_u64().unwrap_or(0) - errors_before;
            assert_eq!(errors, 4, "case {case}: expected the 4 lying headers in port h's rx_errors: {hp}");
        }
        for other in ["a", "b"] {
            assert_eq!(port(&list, other)["stats"]["resets"].as_u64(), Some(0), "case {case}: port {other} was reset");
        }
    }
    gen.kill();
    // The sink exits after 5 s without a frame.
    let ended = sink.wait_timeout(Duration::from_mins(1));
    let v = sink.last_json().unwrap_or_default();
    let list = ctl_list(&peers, &ctl);
    eprintln!("neighbours' traffic during {} hostile cases: {v}", CASES.len());
    eprintln!("port a: {}", port(&list, "a")["stats"]);
    assert!(ended.is_some(), "sink did not finish within 1 min of pktgen's end:\n{}", sink.describe(20, 5));
    let received = v["received"].as_u64().unwrap_or(0);
    let (pa, pb) = (port(&list, "a"), port(&list, "b"));
    let sent = pb["stats"]["rx_packets"].as_u64().unwrap_or(0);
    assert!(sent > 0, "pktgen sent nothing");
    assert_eq!(v["bad"].as_u64(), Some(0), "damaged frames: {v}");
    assert_eq!(v["reordered"].as_u64(), Some(0), "reordered frames: {v}");
    assert_eq!(
        received, sent,
        "the neighbours lost packets: switch took {sent} from pktgen, sink got {received}: {v}\n\
         port a (the sink's; drop_ring_full: the sink left its ring full): {pa}\nport b (pktgen's): {pb}"
    );
}
