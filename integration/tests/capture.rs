// `fastpathctl capture` against a running fastpathd: pktgen's then flowgen's IPv4/UDP frames →
// br0 → sink, captured on the sink's port (pcapng and pcap), decoded by tshark and counted
// against what the sinks got; and
// a capture whose fastpathctl is killed -9, after which fastpathd's fds and mappings are back;
// and a capture of a port whose two queue pairs two fastpathd workers poll.
//! Packet capture through fastpathd, read by tshark.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::{
    fastpathctl_list, fastpathd_args, fastpathd_port, finish_transfer, finish_transfer_with, kind_stat, pktgen_args,
    pktgen_args_at, port_stat, require, serial, sink_args, spawn_fastpathd, stamp, wait_ctl_idle, wait_for_socket,
    wait_ports_up, wait_until, Order, Peers, Proc, TestDir, Verdict, FRAMES, RATE, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

/// How long a capture takes to start and to report.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames the second, counted capture keeps.
const COUNTED: u64 = 100;
/// IPv4/UDP frames flowgen sends after pktgen's.
const UDP_FRAMES: u64 = 1000;

/// flowgen sending [`UDP_FRAMES`] IPv4/UDP frames to port 53 on the vhost-user socket `p`.
fn flowgen_args(p: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["--port".into(), format!("vu:{}", p.display()), "--flows".into(), "4".into()];
    a.extend(["--count".into(), UDP_FRAMES.to_string(), "--rate".into(), "50000".into()]);
    a.extend(integration::app_flags());
    a
}

/// fastpathd with ports p and s on br0, and the sink on s, up; `abort`s `v` on failure.
fn switch(v: Verdict, peers: &Peers, dir: &TestDir) -> (Verdict, Proc, Proc) {
    let ctl = dir.join("ctl.sock");
    let (p, s) = (dir.join("p.sock"), dir.join("s.sock"));
    let ports = [fastpathd_port("br0", "p", "vhost", &p), fastpathd_port("br0", "s", "vhost", &s)];
    let mut fpd = spawn_fastpathd("fastpathd", peers, dir, &ctl, &["br0"], &ports);
    for sock in [&ctl, &p, &s] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut fpd],
            );
        }
    }
    let mut sink =
        Proc::spawn("sink", dir, &peers.bin("sink"), &sink_args(&format!("vu:{}", s.display()), FRAMES), &[]);
    if let Err(e) = wait_ports_up(peers, &ctl, &["s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink]);
    }
    (v, fpd, sink)
}

/// `fastpathctl capture` of port s with `args`, started (it said so on stderr) or failed.
fn capture(v: &mut Verdict, peers: &Peers, dir: &TestDir, name: &str, args: &[&str]) -> Proc {
    capture_of(v, peers, dir, "s", name, args)
}

/// `fastpathctl capture` of `port` with `args`, started (it said so on stderr) or failed.
fn capture_of(v: &mut Verdict, peers: &Peers, dir: &TestDir, port: &str, name: &str, args: &[&str]) -> Proc {
    let ctl = dir.join("ctl.sock").display().to_string();
    let mut a = vec!["--ctl", &ctl, "capture", port];
    a.extend_from_slice(args);
    let mut p = Proc::spawn(name, dir, &peers.bin("fastpathctl"), &a, &[]);
    let started = format!("capturing port {port}");
    v.check(p.wait_for_stderr(&started, CAPTURE_TIMEOUT), || {
        format!("{name}: expected '{started}' on stderr within {CAPTURE_TIMEOUT:?}; {}", p.describe(5, 0))
    });
    p
}

/// The numbers in fastpathctl's last line "capture of port s: N frames, M dropped ...".
fn summary(p: &Proc) -> Option<(u64, u64)> {
    summary_of(p, "s")
}

/// The numbers in fastpathctl's last line "capture of port PORT: N frames, M dropped ...".
fn summary_of(p: &Proc, port: &str) -> Option<(u64, u64)> {
    let err = p.stderr();
    let head = format!("capture of port {port}:");
    let line = err.lines().rev().find(|l| l.starts_with(&head))?;
    let mut nums = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    Some((nums.next()?, nums.next()?))
}

/// tshark's `frame.len eth.src ip.proto udp.dstport frame.packet_flags_direction` of each frame in `file`.
fn tshark(file: &Path) -> Result<Vec<Vec<String>>, String> {
    let out = Command::new("tshark")
        .args(["-r", &file.display().to_string(), "-T", "fields"])
        .args(["-e", "frame.len", "-e", "eth.src", "-e", "ip.proto", "-e", "udp.dstport"])
        .args(["-e", "frame.packet_flags_direction"])
        .output()
        .map_err(|e| format!("tshark: {e}"))?;
    if !out.status.success() {
        return Err(format!("tshark -r {}: {} {}", file.display(), out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(String::from).collect()).collect())
}

/// Checks the frames tshark decoded from `file`: `want` in all, 60-64 bytes each with an
/// Ethernet source, `udp` of them IPv4/UDP to port 53 (flowgen's); `outbound`: pcapng's
/// direction flag says "sent" on each.
fn check_decoded(v: &mut Verdict, file: &Path, want: u64, udp: u64, outbound: bool) {
    let rows = match tshark(file) {
        Ok(r) => r,
        Err(e) => return v.fail(e),
    };
    let n = rows.len() as u64;
    v.check(n == want, || format!("tshark: expected {want} frames in {}, got {n}", file.display()));
    let is_udp = |r: &Vec<String>| r.len() >= 4 && r[2] == "17" && r[3] == "53";
    let got_udp = rows.iter().filter(|r| is_udp(r)).count() as u64;
    v.check(got_udp == udp, || {
        format!("tshark: expected {udp} IPv4/UDP frames to port 53 in {}, got {got_udp}", file.display())
    });
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.len() < 5
                || !r[0].parse::<u32>().is_ok_and(|l| (60..=64).contains(&l))
                || r[1].len() != 17
                || (outbound && r[4] != "0x00000002")
        })
        .take(3)
        .collect();
    v.check(bad.is_empty(), || {
        let dir = if outbound { ", flagged outbound" } else { "" };
        format!("tshark: expected 60-64-byte Ethernet frames{dir}; got e.g. {bad:?}")
    });
    v.note(format!("tshark {}: {n} frames, {got_udp} IPv4/UDP, first {:?}", file.display(), rows.first()));
}

#[test]
fn capture_decodes_with_tshark_and_counts_match_the_sink() {
    const TEST: &str = "capture_decodes_with_tshark_and_counts_match_the_sink";
    let Some(peers) = require(TEST, &["pktgen", "flowgen", "sink", "fastpathd", "fastpathctl"], false) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("capture");
    let (mut v, mut fpd, mut sink) = switch(Verdict::new(TEST), &peers, &dir);
    let (all, counted) = (dir.join("all.pcapng"), dir.join("first.pcap"));
    let mut cap = capture(&mut v, &peers, &dir, "capture", &["--direction", "tx", "-w", &all.display().to_string()]);
    let count = COUNTED.to_string();
    let mut cap_n = capture(
        &mut v,
        &peers,
        &dir,
        "capture-pcap",
        &["--pcap", "--count", &count, "-w", &counted.display().to_string()],
    );
    let p = dir.join("p.sock");
    let mut pktgen =
        Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &pktgen_args(&format!("vu:{}", p.display()), FRAMES), &[]);
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    // Then IPv4/UDP frames from flowgen, to a second sink on s (it counts them as foreign).
    let sink_port = format!("vu:{}", dir.join("s.sock").display());
    let mut udp_sink = Proc::spawn("udp-sink", &dir, &peers.bin("sink"), &sink_args(&sink_port, UDP_FRAMES), &[]);
    if let Err(e) = wait_ports_up(&peers, &dir.join("ctl.sock"), &["s"], SETUP_TIMEOUT) {
        v.fail(e);
    }
    let mut flowgen = Proc::spawn("flowgen", &dir, &peers.bin("flowgen"), &flowgen_args(&p), &[]);
    let st = flowgen.wait_timeout(CAPTURE_TIMEOUT);
    v.check(st.is_some_and(|s| s.success()), || {
        format!("flowgen: expected it to send {UDP_FRAMES} frames and exit 0; {}", flowgen.describe(5, 2))
    });
    let foreign = |sink: &mut Proc| {
        wait_until(Duration::from_secs(5), || {
            sink.last_json().and_then(|j| integration::field(&j, "foreign")) == Some(UDP_FRAMES)
        });
        sink.stop(Signal::SIGINT, Duration::from_secs(3));
        sink.last_json().and_then(|j| integration::field(&j, "foreign")).unwrap_or(0)
    };
    let udp = foreign(&mut udp_sink);
    v.check(udp == UDP_FRAMES, || format!("udp-sink: expected flowgen's {UDP_FRAMES} frames as foreign, got {udp}"));
    // What the switch handed port s: a tx capture copies each frame given to the port.
    let handed = match fastpathctl_list(&peers, &dir.join("ctl.sock")) {
        Ok(l) => port_stat(&l, "s", "tx_packets").unwrap_or(0) + port_stat(&l, "s", "tx_dropped").unwrap_or(0),
        Err(e) => {
            v.fail(e);
            0
        }
    };
    // The counted capture ended by itself; the other one ends on Ctrl-C.
    let st = cap_n.wait_timeout(CAPTURE_TIMEOUT);
    v.check(st.is_some_and(|s| s.success()), || {
        format!("capture-pcap: expected it to exit 0 after {COUNTED} frames; {}", cap_n.describe(5, 0))
    });
    let st = cap.stop(Signal::SIGINT, CAPTURE_TIMEOUT);
    v.check(st.success(), || format!("capture: expected exit 0 on SIGINT, got {st}; {}", cap.describe(5, 0)));
    match summary(&cap) {
        Some((captured, dropped)) => {
            v.check(captured + dropped == handed, || {
                format!(
                    "capture: expected captured {captured} + dropped {dropped} = the {handed} frames port s was sent"
                )
            });
            v.check(dropped > 0 || captured == FRAMES + udp, || {
                format!("capture: expected the sinks' {FRAMES} + {udp} frames, got {captured}")
            });
            v.note(format!("capture: {captured} frames, {dropped} dropped; port s was sent {handed}"));
            check_decoded(&mut v, &all, captured, if dropped == 0 { UDP_FRAMES } else { 0 }, true);
        }
        None => v.fail(format!("capture: expected a summary line on stderr; {}", cap.describe(5, 0))),
    }
    v.check(summary(&cap_n).is_some_and(|(c, _)| c == COUNTED), || {
        format!("capture-pcap: expected {COUNTED} frames; {}", cap_n.describe(3, 0))
    });
    check_decoded(&mut v, &counted, COUNTED, 0, false);
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {TEST}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut flowgen, &mut pktgen, &mut sink, &mut udp_sink, &mut fpd, &mut cap, &mut cap_n]);
}

/// pktgen's flows (source MACs) in the two-worker capture: enough that both queue pairs
/// carry some.
const PAIR_FLOWS: u64 = 64;

/// A capture of what a port of two queue pairs sends, on a fastpathd of two workers where the
/// second worker polls the port's pair 1: fastpathctl gets a ring from each worker and writes
/// every frame the port sent, from both pairs, into one file tshark reads.
#[test]
fn a_capture_of_a_port_polled_by_two_workers_has_both_pairs_frames() {
    const TEST: &str = "a_capture_of_a_port_polled_by_two_workers_has_both_pairs_frames";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("capq");
    let mut v = Verdict::new(TEST);
    let ctl = dir.join("ctl.sock");
    let (g, s) = (dir.join("g.sock"), dir.join("s.sock"));
    let ports = [fastpathd_port("br0", "g", "vhost", &g), fastpathd_port("br0", "s", "vhost", &s)];
    let mut args = fastpathd_args(&ctl, &["br0"], &ports);
    integration::on_two_workers(&mut args, "--share-core");
    let mut fpd = Proc::spawn("fastpathd", &dir, &peers.bin("fastpathd"), &args, &[]);
    for sock in [&ctl, &g, &s] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(format!("fastpathd: expected {} within {SETUP_TIMEOUT:?}", sock.display()), &mut [&mut fpd]);
        }
    }
    let pairs = ["--queues", "2"].map(String::from);
    let mut sink_a = sink_args(&format!("vu:{}", s.display()), FRAMES);
    sink_a.extend(pairs.clone());
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_a, &[]);
    if let Err(e) = wait_ports_up(&peers, &ctl, &["s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink]);
    }
    let file = dir.join("g.pcapng");
    let mut cap =
        capture_of(&mut v, &peers, &dir, "g", "capture", &["--direction", "rx", "-w", &file.display().to_string()]);
    v.check(cap.stderr().contains("on 2 workers"), || {
        format!("capture: expected 'on 2 workers' in its first line (g's pair 1 is worker 1's); {}", cap.describe(3, 0))
    });
    // Two workers beside four app threads: a fifth of the usual rate.
    let mut gen_a = pktgen_args_at(&format!("vu:{}", g.display()), FRAMES, RATE / 5);
    gen_a.extend(pairs);
    gen_a.extend(["--src-mac", "02:00:0b:00:00:00", "--src-macs", &PAIR_FLOWS.to_string()].map(String::from));
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    finish_transfer_with(&mut v, &mut pktgen, &mut sink, FRAMES, Order::PerFlow);
    let list = fastpathctl_list(&peers, &ctl).unwrap_or_default();
    let per_pair: Vec<Option<u64>> = (0..2).map(|q| kind_stat(&list, "g", &format!("rxq{q}_packets"))).collect();
    v.check(per_pair.iter().all(|n| n.is_some_and(|n| n > 0)), || {
        format!("fastpathd port g: expected frames on both queue pairs (rxq0/1_packets), got {per_pair:?}")
    });
    let received = port_stat(&list, "g", "rx_packets").unwrap_or(0);
    let st = cap.stop(Signal::SIGINT, CAPTURE_TIMEOUT);
    v.check(st.success(), || format!("capture: expected exit 0 on SIGINT, got {st}; {}", cap.describe(5, 0)));
    match summary_of(&cap, "g") {
        Some((captured, dropped)) => {
            v.check(received == FRAMES && captured + dropped == received, || {
                format!(
                    "capture: expected captured {captured} + dropped {dropped} = the {received} frames fastpathd \
                     received from g (pktgen sent {FRAMES})"
                )
            });
            v.note(format!("capture of g: {captured} frames, {dropped} dropped; per pair {per_pair:?}"));
            check_decoded(&mut v, &file, captured, 0, false);
        }
        None => v.fail(format!("capture: expected a summary line on stderr; {}", cap.describe(5, 0))),
    }
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {TEST}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, &mut fpd, &mut cap]);
}

/// fastpathd's open fds and its mappings of capture rings.
fn fds_and_rings(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    (fds, maps.lines().filter(|l| l.contains("fastpath-capture")).count())
}

#[test]
fn a_killed_capture_leaves_fastpathd_as_it_was() {
    const TEST: &str = "a_killed_capture_leaves_fastpathd_as_it_was";
    let Some(peers) = require(TEST, &["sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    let dir = TestDir::new("capture-kill");
    let (mut v, mut fpd, mut sink) = switch(Verdict::new(TEST), &peers, &dir);
    let ctl = dir.join("ctl.sock");
    wait_ctl_idle(&ctl, SETUP_TIMEOUT);
    let baseline = fds_and_rings(fpd.pid());
    let out = dir.join("killed.pcapng").display().to_string();
    let mut cap = capture(&mut v, &peers, &dir, "capture", &["-w", &out]);
    let during = fds_and_rings(fpd.pid());
    v.check(during.1 == 1, || format!("fastpathd: expected one capture ring mapped while capturing, got {during:?}"));
    cap.kill();
    let back = wait_until(CAPTURE_TIMEOUT, || fds_and_rings(fpd.pid()) == baseline);
    v.check(back, || {
        format!(
            "fastpathd: expected its fds and mappings back to {baseline:?} (fds, rings) after kill -9 of fastpathctl, got {:?}",
            fds_and_rings(fpd.pid())
        )
    });
    v.note(format!(
        "fastpathd (fds, rings): {baseline:?} before, {during:?} capturing, {:?} after kill -9",
        fds_and_rings(fpd.pid())
    ));
    // And the port still forwards: a new capture starts.
    let mut again = capture(&mut v, &peers, &dir, "capture-again", &["--count", "0", "-w", &out]);
    again.wait_timeout(CAPTURE_TIMEOUT);
    sink.stop(Signal::SIGINT, Duration::from_secs(3));
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    v.finish(&mut [&mut sink, &mut fpd, &mut cap, &mut again]);
}
