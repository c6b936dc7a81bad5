// DPDK's virtio-user frontend against fastpathd's vhost-user ports:
// pktgen (vu) → fastpathd br0 → testpmd virtio_user0 → io fwd → virtio_user1 →
// fastpathd br1 → sink (vu). The two bridges keep the paths apart, so every
// frame crosses testpmd exactly once.
//! Interop: DPDK virtio_user ↔ fastpathd.

use std::time::{Duration, Instant};

use integration::{
    check_switch_counters, check_testpmd_forwarded, fastpathctl_list, fastpathd_port, finish_transfer, pktgen_args,
    require, serial, show_ports, sink_args, spawn_fastpathd, stamp, wait_for_socket, wait_ports_up, Proc, TestDir,
    Testpmd, Verdict, FRAMES, QUEUE_SIZE, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

#[test]
fn testpmd_virtio_user_to_fastpathd() {
    const TEST: &str = "testpmd_virtio_user_to_fastpathd";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], true) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("tpfp");
    let ctl = dir.join("ctl.sock");
    let (p_sock, a_sock, b_sock, s_sock) =
        (dir.join("p.sock"), dir.join("a.sock"), dir.join("b.sock"), dir.join("s.sock"));
    let mut v = Verdict::new(TEST);

    // The switch listens on all four sockets; its polling worker has CPU 0,
    // testpmd's forwarding core CPU 1; pktgen and sink sleep when idle.
    let mut fpd = spawn_fastpathd(
        "fastpathd",
        &peers,
        &dir,
        &ctl,
        &["br0", "br1"],
        &[
            fastpathd_port("br0", "p", "vhost", &p_sock),
            fastpathd_port("br0", "a", "vhost", &a_sock),
            fastpathd_port("br1", "b", "vhost", &b_sock),
            fastpathd_port("br1", "s", "vhost", &s_sock),
        ],
    );
    for sock in [&ctl, &p_sock, &a_sock, &b_sock, &s_sock] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut fpd],
            );
        }
    }
    let mut sink =
        Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("vu:{}", s_sock.display()), FRAMES), &[]);
    let mut tp = Testpmd::start(
        &peers,
        &dir,
        &[
            format!("virtio_user0,path={},queues=1,queue_size={QUEUE_SIZE}", a_sock.display()),
            format!("virtio_user1,path={},queues=1,queue_size={QUEUE_SIZE}", b_sock.display()),
        ],
        true,
    );
    // Everything but pktgen up before it sends: a frame flooded to a port that is
    // not ready yet would be dropped, and DPDK's virtio PMD discards what arrives
    // in its receive ring before its port has started (testpmd forwards only once
    // both ports have).
    if !tp.forwarding() {
        v.abort(
            format!("testpmd: expected it to start forwarding within {SETUP_TIMEOUT:?}"),
            &mut [&mut fpd, &mut sink, tp.proc()],
        );
    }
    if let Err(e) = wait_ports_up(&peers, &ctl, &["a", "b", "s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink, tp.proc()]);
    }
    let mut pktgen = Proc::spawn(
        "pktgen",
        &dir,
        &peers.bin("pktgen"),
        &pktgen_args(&format!("vu:{}", p_sock.display()), FRAMES),
        &[],
    );
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => {
            v.note(show_ports(&list));
            check_switch_counters(
                &mut v,
                &list,
                &[
                    ("p", "rx_packets", FRAMES),
                    ("a", "tx_packets", FRAMES),
                    ("b", "rx_packets", FRAMES),
                    ("s", "tx_packets", FRAMES),
                ],
            );
        }
        Err(e) => v.fail(e),
    }
    let stats = tp.stop();
    check_testpmd_forwarded(&mut v, &stats, 0, 1, FRAMES);
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {TEST}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, tp.proc(), &mut fpd]);
}
