// netlib's vhost-user backend against DPDK's virtio-user frontend: pktgen
// (vhost:S2) → testpmd virtio_user0 → io fwd → virtio_user1 → sink (vhost:S).
// Covers netlib backend tx (device → driver) and rx (driver → device).
//! Interop: netlib vhost-user backend ↔ DPDK virtio_user.

use std::time::Instant;

use integration::{
    check_testpmd_forwarded, finish_transfer, pktgen_args, require, serial, sink_args, stamp, wait_for_socket, Proc,
    TestDir, Testpmd, Verdict, FRAMES, QUEUE_SIZE, SETUP_TIMEOUT,
};

#[test]
fn netlib_backend_with_testpmd_virtio_user() {
    const TEST: &str = "netlib_backend_with_testpmd_virtio_user";
    let Some(peers) = require(TEST, &["pktgen", "sink"], true) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("nbe");
    let (s, s2) = (dir.join("s.sock"), dir.join("s2.sock"));
    let mut v = Verdict::new(TEST);

    // Both of ours listen (so they start first); testpmd connects to both while it
    // starts. pktgen sends as soon as its vrings are live. Note that DPDK's virtio
    // PMD fills its receive ring and then discards whatever the backend already
    // put there ("Flush the old packets" in virtio_dev_start) before it kicks the
    // backend: a backend must not start a ring before that first kick (vhost-user
    // spec, "Starting and stopping rings"), else those frames are lost.
    let mut sink =
        Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("vhost:{}", s.display()), FRAMES), &[]);
    let mut pktgen = Proc::spawn(
        "pktgen",
        &dir,
        &peers.bin("pktgen"),
        &pktgen_args(&format!("vhost:{}", s2.display()), FRAMES),
        &[],
    );
    for (sock, who) in [(&s, "sink"), (&s2, "pktgen")] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("{who}: expected it to listen on {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut sink, &mut pktgen],
            );
        }
    }
    let mut tp = Testpmd::start(
        &peers,
        &dir,
        &[
            format!("virtio_user0,path={},queues=1,queue_size={QUEUE_SIZE}", s2.display()),
            format!("virtio_user1,path={},queues=1,queue_size={QUEUE_SIZE}", s.display()),
        ],
        true,
    );
    if !tp.forwarding() {
        v.abort(
            format!("testpmd: expected it to start forwarding within {SETUP_TIMEOUT:?}"),
            &mut [&mut sink, &mut pktgen, tp.proc()],
        );
    }
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    let stats = tp.stop();
    check_testpmd_forwarded(&mut v, &stats, 0, 1, FRAMES);
    let rx0 = stats.as_ref().ok().and_then(|s| s.iter().find(|p| p.port == 0)).map(|p| (p.rx_packets, p.rx_dropped));
    if let Some((rx, 0)) = rx0.filter(|&(rx, _)| rx < FRAMES) {
        v.note(format!(
            "hint: pktgen counted {FRAMES} frames as sent but testpmd's port 0 received {rx} without dropping any. \
             Likely cause: the netlib backend started the vring before the driver's first kick, and DPDK's \
             virtio_dev_start discarded what it had already put in the receive ring (it flushes the ring, then \
             kicks)."
        ));
    }
    eprintln!("[{}] {TEST}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, tp.proc()]);
}
