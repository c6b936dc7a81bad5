// A netlib app that takes transmit offloads sends 64 KB TCP GSO frames through fastpathd
// to an app that took none: the switch cuts every frame into MSS-sized segments, each
// checksummed, and every segment reaches the receiver. And an app asking for GSO on a
// port whose offloads are off is told so.
//! netlib's transmit offloads (TSO) through fastpathd.
#![allow(clippy::many_single_char_names)]

use std::time::Duration;

use integration::{
    fastpathctl_list, fastpathd_port, port_stat, require, serial, spawn_fastpathd, wait_for_socket, wait_ports_up,
    Proc, TestDir, SETUP_TIMEOUT,
};

const TEST: &str = "tso_gso_frames_are_segmented_for_a_receiver_without_offloads";
const BINS: &[&str] = &["fastpathd", "fastpathctl", "pktgen", "sink"];
/// GSO frames pktgen sends, and their size and MSS: 45 segments each.
const FRAMES: u64 = 2000;
const SIZE: &str = "65000";
const MSS: &str = "1448";
const SEGMENTS_PER_FRAME: u64 = 45;

#[test]
fn tso_gso_frames_are_segmented_for_a_receiver_without_offloads() {
    let Some(peers) = require(TEST, BINS, false) else { return };
    let _serial = serial();
    let dir = TestDir::new("tso");
    let (ctl, a, b, c) = (dir.join("ctl.sock"), dir.join("a.sock"), dir.join("b.sock"), dir.join("c.sock"));
    let ports = [fastpathd_port("br0", "a", "vhost", &a), fastpathd_port("br0", "b", "vhost", &b)];
    let mut sw = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0", "br1"], &ports);
    assert!(wait_for_socket(&ctl, SETUP_TIMEOUT), "no control socket:\n{}", sw.describe(20, 0));
    let ctl_s = ctl.display().to_string();
    let c_s = c.display().to_string();
    let add = ["add-port", "--ctl", &ctl_s, "--name", "c", "--bridge", "br1", "--socket", &c_s, "--offloads", "off"];
    let out = std::process::Command::new(peers.bin("fastpathctl")).args(add).output().expect("fastpathctl runs");
    assert!(out.status.success(), "add-port c: {}", String::from_utf8_lossy(&out.stderr));
    for s in [&a, &b, &c] {
        assert!(wait_for_socket(s, SETUP_TIMEOUT), "{} never appeared:\n{}", s.display(), sw.describe(20, 0));
    }
    let common = ["--idle-sleep-us", "20", "--json", "--quiet"];
    let vu_b = format!("vu:{}", b.display());
    let mut sink = Proc::spawn(
        "sink",
        &dir,
        &peers.bin("sink"),
        &[&["--port", &vu_b, "--idle-exit", "3", "--queue-size", "4096"], &common[..]].concat(),
        &[],
    );
    wait_ports_up(&peers, &ctl, &["b"], SETUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", sink.describe(20, 0)));
    let vu_a = format!("vu:{}", a.display());
    let count = FRAMES.to_string();
    // 1,000 frames a second: 45,000 segments, which the sink's 4096 receive entries hold for
    // 90 ms (a sink the machine leaves unscheduled that long loses nothing). pktgen's ring
    // of 256 GSO frames is 16 MB of buffers.
    let gen_args = [
        &[
            "--port",
            &vu_a,
            "--gso-mss",
            MSS,
            "--size",
            SIZE,
            "--count",
            &count,
            "--rate",
            "1000",
            "--queue-size",
            "256",
        ],
        &common[..],
    ]
    .concat();
    let mut gen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_args, &[]);
    assert!(gen.wait_timeout(Duration::from_mins(1)).is_some_and(|s| s.success()), "pktgen:\n{}", gen.describe(20, 10));
    assert!(sink.wait_timeout(Duration::from_mins(1)).is_some(), "sink did not finish:\n{}", sink.describe(20, 5));
    let g = gen.last_json().unwrap_or_default();
    let v = sink.last_json().unwrap_or_default();
    let list = fastpathctl_list(&peers, &ctl).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("pktgen: {g}\nsink: {v}");
    assert_eq!(g["sent"].as_u64(), Some(FRAMES), "pktgen: {g}");
    assert_eq!(g["segments"].as_u64(), Some(FRAMES * SEGMENTS_PER_FRAME), "pktgen: {g}");
    // The switch read each as one frame of 65,000 bytes and cut it in 45.
    assert_eq!(port_stat(&list, "a", "rx_packets"), Some(FRAMES), "{list:?}");
    assert_eq!(port_stat(&list, "a", "rx_errors"), Some(0), "{list:?}");
    let segments = FRAMES * SEGMENTS_PER_FRAME;
    assert_eq!(v["received"].as_u64(), Some(segments), "every segment reached the sink: {v}\n{list:?}");
    // 44 segments of 1448 payload bytes and one of the rest, each with its 54 bytes of headers.
    let bytes = FRAMES * (65_000 - 54 + SEGMENTS_PER_FRAME * 54);
    assert_eq!(v["counters"]["rx_bytes"].as_u64(), Some(bytes), "{v}");

    // A port with offloads off: pktgen is told, naming the flag and what to do.
    let vu_c = format!("vu:{}", c.display());
    let out = std::process::Command::new(peers.bin("pktgen"))
        .args(["--port", &vu_c, "--gso-mss", MSS, "--size", SIZE, "--count", "1", "--link-timeout", "5"])
        .output()
        .expect("pktgen runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pktgen sent GSO frames on a port without offloads: {err}");
    assert!(err.contains("--gso-mss") && err.contains("offloads"), "{err}");
    assert!(sw.try_status().is_none(), "fastpathd died:\n{}", sw.describe(20, 0));
}
