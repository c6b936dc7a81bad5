// netlib's virtio-user frontend against DPDK's vhost-user backend (net_vhost):
// pktgen → testpmd port 0 → io fwd → testpmd port 1 → sink, once with testpmd
// listening (ours connect, `vu:`) and once with ours listening (`vu-server:`,
// testpmd `client=1`), and once on packed rings (`vu-packed:`); and with two queue pairs
// on both sides (ours a thread per pair, testpmd `queues=2`). Covers netlib tx → DPDK and
// DPDK → netlib rx.
//! Interop: netlib virtio-user ↔ DPDK net_vhost.

use std::time::Instant;

use integration::{
    check_pairs, check_testpmd_forwarded, finish_transfer, finish_transfer_with, pktgen_args, require, serial,
    sink_args, stamp, wait_for_socket, Order, Proc, TestDir, Testpmd, Verdict, FRAMES, SETUP_TIMEOUT, VU_LINK_UP,
};

/// testpmd listens on two vhost-user sockets; pktgen (vu:A) and sink (vu:B) connect.
#[test]
fn netlib_to_testpmd_vhost() {
    to_testpmd_vhost("netlib_to_testpmd_vhost", "vu");
}

/// The same with netlib's frontend on packed rings (`vu-packed:`), which testpmd's
/// net_vhost offers: both of ours say so when they come up.
#[test]
fn netlib_packed_to_testpmd_vhost() {
    to_testpmd_vhost("netlib_packed_to_testpmd_vhost", "vu-packed");
}

/// pktgen (`KIND:A`) → testpmd net_vhost → sink (`KIND:B`).
fn to_testpmd_vhost(test: &'static str, kind: &str) {
    let packed = kind == "vu-packed";
    let Some(peers) = require(test, &["pktgen", "sink"], true) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vh");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let mut v = Verdict::new(test);

    let mut tp = Testpmd::start(
        &peers,
        &dir,
        &[format!("net_vhost0,iface={},queues=1", a.display()), format!("net_vhost1,iface={},queues=1", b.display())],
        false,
    );
    if !(tp.forwarding() && wait_for_socket(&a, SETUP_TIMEOUT) && wait_for_socket(&b, SETUP_TIMEOUT)) {
        v.abort(
            format!(
                "testpmd: expected it to create vhost-user sockets {} and {} and start forwarding within {SETUP_TIMEOUT:?}",
                a.display(),
                b.display()
            ),
            &mut [tp.proc()],
        );
    }
    // The sink first, and its link up, so testpmd never forwards to a port that is not ready.
    let mut sink =
        Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("{kind}:{}", b.display()), FRAMES), &[]);
    if !sink.wait_for_stderr(VU_LINK_UP, SETUP_TIMEOUT) {
        v.abort(
            format!(
                "sink: expected its link up on {kind}:{} within {SETUP_TIMEOUT:?} (log line containing {VU_LINK_UP:?})",
                b.display()
            ),
            &mut [&mut sink, tp.proc()],
        );
    }
    let gen_a = pktgen_args(&format!("{kind}:{}", a.display()), FRAMES);
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    let stats = tp.stop();
    check_testpmd_forwarded(&mut v, &stats, 0, 1, FRAMES);
    let layout = if packed { "per packed ring" } else { "per split ring" };
    for p in [&pktgen, &sink] {
        let up: Vec<String> = p.stderr().lines().filter(|l| l.contains("up (features")).map(String::from).collect();
        v.check(up.iter().any(|l| l.contains(layout)), || {
            format!("{}: expected its port up with {layout:?}, got {up:?}", p.name())
        });
        // DPDK's vhost takes VIRTIO_F_IN_ORDER: on packed rings it may then mark a batch
        // of sent buffers used with one descriptor, which our frontend must follow.
        let in_order = up.iter().filter_map(|l| negotiated(l)).any(|f| f & (1 << 35) != 0);
        v.check(in_order, || format!("{}: expected VIRTIO_F_IN_ORDER (bit 35) negotiated, got {up:?}", p.name()));
    }
    eprintln!("[{}] {test}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, tp.proc()]);
}

/// Source MACs (flows) pktgen sends from in the queue-pair run.
const FLOWS: u64 = 64;

/// Two queue pairs on each of ours (`--queues 2`: a handle, a pool and a thread per pair)
/// against testpmd's net_vhost with `queues=2` (`--rxq=2 --txq=2`): pktgen sends each of
/// 64 flows from the pair its hash picks, testpmd forwards queue q of port 0 to queue q of
/// port 1, and the sink takes each flow on the pair it hashes to. Every frame arrives,
/// each flow in order, none on another pair than its hash's, and both pairs carry frames
/// both ways.
#[test]
fn netlib_pairs_to_testpmd_vhost() {
    const TEST: &str = "netlib_pairs_to_testpmd_vhost";
    let Some(peers) = require(TEST, &["pktgen", "sink"], true) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vhq");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let mut v = Verdict::new(TEST);
    let vdev = |n: u8, s: &std::path::Path| format!("net_vhost{n},iface={},queues=2", s.display());
    let tp_args = ["--rxq=2", "--txq=2"].map(String::from);
    let mut tp = Testpmd::start_with(&peers, &dir, &[vdev(0, &a), vdev(1, &b)], false, &tp_args);
    if !(tp.forwarding() && wait_for_socket(&a, SETUP_TIMEOUT) && wait_for_socket(&b, SETUP_TIMEOUT)) {
        v.abort(
            format!(
                "testpmd: expected it to create {} and {} and forward within {SETUP_TIMEOUT:?}",
                a.display(),
                b.display()
            ),
            &mut [tp.proc()],
        );
    }
    let mut sink_a = sink_args(&format!("vu:{}", b.display()), FRAMES);
    sink_a.extend(["--queues", "2"].map(String::from));
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_a, &[]);
    if !sink.wait_for_stderr(VU_LINK_UP, SETUP_TIMEOUT) {
        v.abort(format!("sink: expected its link up within {SETUP_TIMEOUT:?}"), &mut [&mut sink, tp.proc()]);
    }
    let mut gen_a = pktgen_args(&format!("vu:{}", a.display()), FRAMES);
    gen_a.extend(
        ["--queues", "2", "--src-mac", "02:00:0b:00:00:00", "--src-macs", &FLOWS.to_string()].map(String::from),
    );
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    let sj = finish_transfer_with(&mut v, &mut pktgen, &mut sink, FRAMES, Order::PerFlow);
    check_pairs(&mut v, pktgen.last_json().as_ref(), sj.as_ref(), FLOWS, Some(FRAMES));
    let stats = tp.stop();
    check_testpmd_forwarded(&mut v, &stats, 0, 1, FRAMES);
    for p in [&pktgen, &sink] {
        v.check(p.stderr().contains("2 queue pairs of"), || {
            format!("{}: expected its port up with 2 queue pairs", p.name())
        });
    }
    eprintln!("[{}] {TEST}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, tp.proc()]);
}

/// The features in a virtio-user port's "up (features 0x...," log line.
fn negotiated(line: &str) -> Option<u64> {
    let hex = line.split("features 0x").nth(1)?.split(|c: char| !c.is_ascii_hexdigit()).next()?;
    u64::from_str_radix(hex, 16).ok()
}

/// Reversed roles: sink (vu-server:B) and pktgen (vu-server:A) listen; testpmd
/// connects (`client=1`).
#[test]
fn testpmd_vhost_client_to_netlib_vu_server() {
    const TEST: &str = "testpmd_vhost_client_to_netlib_vu_server";
    let Some(peers) = require(TEST, &["pktgen", "sink"], true) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vhc");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let mut v = Verdict::new(TEST);

    let mut sink =
        Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("vu-server:{}", b.display()), FRAMES), &[]);
    if !wait_for_socket(&b, SETUP_TIMEOUT) {
        v.abort(format!("sink: expected it to listen on {} within {SETUP_TIMEOUT:?}", b.display()), &mut [&mut sink]);
    }
    // testpmd connects to the sink now; pktgen's socket does not exist yet, so
    // testpmd's vhost client retries it (DPDK reconnects client sockets every
    // second). pktgen only starts once the sink's link is up: otherwise testpmd
    // could forward pktgen's first frames to a port that is not ready and drop them.
    let mut tp = Testpmd::start(
        &peers,
        &dir,
        &[
            format!("net_vhost0,iface={},queues=1,client=1", a.display()),
            format!("net_vhost1,iface={},queues=1,client=1", b.display()),
        ],
        false,
    );
    if !tp.forwarding() {
        v.abort(
            format!("testpmd: expected it to start forwarding within {SETUP_TIMEOUT:?}"),
            &mut [&mut sink, tp.proc()],
        );
    }
    if !sink.wait_for_stderr(VU_LINK_UP, SETUP_TIMEOUT) {
        v.abort(
            format!(
                "sink: expected testpmd to connect to vu-server:{} and the link up within {SETUP_TIMEOUT:?}",
                b.display()
            ),
            &mut [&mut sink, tp.proc()],
        );
    }
    let mut pktgen = Proc::spawn(
        "pktgen",
        &dir,
        &peers.bin("pktgen"),
        &pktgen_args(&format!("vu-server:{}", a.display()), FRAMES),
        &[],
    );
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    let stats = tp.stop();
    check_testpmd_forwarded(&mut v, &stats, 0, 1, FRAMES);
    eprintln!("[{}] {TEST}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, tp.proc()]);
}
