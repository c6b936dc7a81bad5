// fastpathd's AF_XDP port against DPDK's: a veth pair, fastpathd's afxdp port on one end
// and testpmd's net_af_xdp on the other, testpmd forwarding (io) to a net_vhost port.
// pktgen → fastpathd vhost → afxdp → veth → testpmd af_xdp → testpmd vhost → sink, then
// the reverse, each frame checked by `sink --check` and counted by testpmd.
//! Interop: fastpathd afxdp ↔ DPDK net_af_xdp, both ways.

use std::time::Instant;

use integration::{
    check_testpmd_forwarded, fastpathctl_list, fastpathd_port, finish_transfer, pktgen_args, require, serial,
    show_ports, sink_args, spawn_fastpathd, stamp, wait_for_socket, wait_ports_up, Proc, TestDir, Testpmd, Verdict,
    Veth, FRAMES, SETUP_TIMEOUT, VU_LINK_UP,
};
use nix::sys::signal::Signal;

/// One direction: a sink on `to` (link up first), then pktgen on `from`, checked.
fn transfer(v: &mut Verdict, peers: &integration::Peers, dir: &TestDir, what: &str, from: &str, to: &str) {
    let mut sink = Proc::spawn(&format!("sink-{what}"), dir, &peers.bin("sink"), &sink_args(to, FRAMES), &[]);
    if !sink.wait_for_stderr(VU_LINK_UP, SETUP_TIMEOUT) {
        v.fail(format!("sink ({what}): expected its link up on {to} within {SETUP_TIMEOUT:?}"));
        sink.kill();
        return;
    }
    let mut pktgen = Proc::spawn(&format!("pktgen-{what}"), dir, &peers.bin("pktgen"), &pktgen_args(from, FRAMES), &[]);
    finish_transfer(v, &mut pktgen, &mut sink, FRAMES);
    v.note(format!("{what}: {FRAMES} frames sent and checked"));
}

#[test]
fn fastpathd_afxdp_and_testpmd_af_xdp_exchange_frames_both_ways() {
    const TEST: &str = "fastpathd_afxdp_and_testpmd_af_xdp_exchange_frames_both_ways";
    let Some(peers) = require(TEST, &["fastpathd", "fastpathctl", "pktgen", "sink"], true) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("afxdp");
    let ctl = dir.join("ctl.sock");
    let app = dir.join("app.sock");
    let dpdk = dir.join("dpdk.sock");
    let mut v = Verdict::new(TEST);
    let id = std::process::id() % 100_000;
    let veth = match Veth::new(&format!("fpx{id}a"), &format!("fpx{id}b")) {
        Ok(x) => x,
        Err(e) => v.abort(e, &mut []),
    };
    let ports = [
        fastpathd_port("br0", "up", "afxdp", std::path::Path::new(&veth.a)),
        fastpathd_port("br0", "app", "vhost", &app),
    ];
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0"], &ports);
    if !wait_for_socket(&app, SETUP_TIMEOUT) {
        v.abort(format!("fastpathd: expected {} within {SETUP_TIMEOUT:?}", app.display()), &mut [&mut fpd]);
    }
    let mut tp = Testpmd::start(
        &peers,
        &dir,
        &[
            format!("net_af_xdp0,iface={},start_queue=0,queue_count=1", veth.b),
            format!("net_vhost1,iface={},queues=1", dpdk.display()),
        ],
        false,
    );
    if !(tp.forwarding() && wait_for_socket(&dpdk, SETUP_TIMEOUT)) {
        v.abort(
            format!(
                "testpmd: expected net_af_xdp on {} and net_vhost {} forwarding within {SETUP_TIMEOUT:?}",
                veth.b,
                dpdk.display()
            ),
            &mut [tp.proc(), &mut fpd],
        );
    }
    if let Err(e) = wait_ports_up(&peers, &ctl, &["up"], SETUP_TIMEOUT) {
        v.abort(e, &mut [tp.proc(), &mut fpd]);
    }
    let (ours, theirs) = (format!("vu:{}", app.display()), format!("vu:{}", dpdk.display()));
    transfer(&mut v, &peers, &dir, "fastpathd afxdp → testpmd af_xdp", &ours, &theirs);
    transfer(&mut v, &peers, &dir, "testpmd af_xdp → fastpathd afxdp", &theirs, &ours);
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => v.note(show_ports(&list)),
        Err(e) => v.fail(e),
    }
    let stats = tp.stop();
    // Port 0 (af_xdp) received the first transfer and sent the second; port 1 the reverse.
    check_testpmd_forwarded(&mut v, &stats, 0, 1, FRAMES);
    check_testpmd_forwarded(&mut v, &stats, 1, 0, FRAMES);
    let st = fpd.stop(Signal::SIGTERM, std::time::Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    v.note(format!("{} {TEST}: {:.1} s", stamp(), t0.elapsed().as_secs_f64()));
    v.finish(&mut [&mut fpd, tp.proc()]);
}
