// Two netlib apps through fastpathd on one bridge: pktgen → br0 → sink, first
// with the switch listening (`vhost:`; apps `vu:`), then with the switch
// connecting (`vhost-client:`) to apps that listen (`vu-server:`).
//! Interop: netlib virtio-user ↔ fastpathd ↔ netlib virtio-user.

use std::time::{Duration, Instant};

use integration::{
    check_switch_counters, fastpathctl_list, fastpathd_port, finish_transfer, pktgen_args, require, serial, show_ports,
    sink_args, spawn_fastpathd, stamp, wait_for_socket, wait_ports_up, Peers, Proc, TestDir, Verdict, FRAMES,
    SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

/// One run. `switch_listens`: fastpathd `vhost:` and apps `vu:`; else fastpathd
/// `vhost-client:` and apps `vu-server:`.
fn run(test: &str, peers: &Peers, switch_listens: bool) {
    let t0 = Instant::now();
    let dir = TestDir::new(if switch_listens { "fp" } else { "fpc" });
    let ctl = dir.join("ctl.sock");
    let (p, s) = (dir.join("p.sock"), dir.join("s.sock"));
    let mut v = Verdict::new(test);
    let app = if switch_listens { "vu" } else { "vu-server" };
    let kind = if switch_listens { "vhost" } else { "vhost-client" };
    let ports = [fastpathd_port("br0", "p", kind, &p), fastpathd_port("br0", "s", kind, &s)];
    // Only the pollers that spin get a CPU of their own: fastpathd on CPU 0;
    // pktgen and sink sleep when idle.
    let (mut fpd, mut sink) = if switch_listens {
        let mut fpd = spawn_fastpathd("fastpathd", peers, &dir, &ctl, &["br0"], &ports);
        for sock in [&ctl, &p, &s] {
            if !wait_for_socket(sock, SETUP_TIMEOUT) {
                v.abort(
                    format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                    &mut [&mut fpd],
                );
            }
        }
        let sink =
            Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("{app}:{}", s.display()), FRAMES), &[]);
        (fpd, sink)
    } else {
        // The sink listens first; the switch connects to it, and retries pktgen's
        // socket (every 100 ms) until pktgen listens.
        let mut sink =
            Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("{app}:{}", s.display()), FRAMES), &[]);
        if !wait_for_socket(&s, SETUP_TIMEOUT) {
            v.abort(
                format!("sink: expected it to listen on {} within {SETUP_TIMEOUT:?}", s.display()),
                &mut [&mut sink],
            );
        }
        let mut fpd = spawn_fastpathd("fastpathd", peers, &dir, &ctl, &["br0"], &ports);
        if !wait_for_socket(&ctl, SETUP_TIMEOUT) {
            v.abort(
                format!(
                    "fastpathd: expected it to create its control socket {} within {SETUP_TIMEOUT:?}",
                    ctl.display()
                ),
                &mut [&mut fpd, &mut sink],
            );
        }
        (fpd, sink)
    };
    // The sink's port up before pktgen sends: a frame flooded to a port that is
    // not ready yet would be dropped.
    if let Err(e) = wait_ports_up(peers, &ctl, &["s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink]);
    }
    let mut pktgen =
        Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &pktgen_args(&format!("{app}:{}", p.display()), FRAMES), &[]);
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    match fastpathctl_list(peers, &ctl) {
        Ok(list) => {
            v.note(show_ports(&list));
            check_switch_counters(&mut v, &list, &[("p", "rx_packets", FRAMES), ("s", "tx_packets", FRAMES)]);
        }
        Err(e) => v.fail(e),
    }
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {test}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, &mut fpd]);
}

#[test]
fn two_netlib_through_fastpathd() {
    const TEST: &str = "two_netlib_through_fastpathd";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    run(&format!("{TEST} (switch listens: fastpathd vhost:, apps vu:)"), &peers, true);
    run(&format!("{TEST} (switch connects: fastpathd vhost-client:, apps vu-server:)"), &peers, false);
}
