// DPDK's virtio-user frontend against fastpathd's vhost-user ports:
// pktgen (vu) → fastpathd br0 → testpmd virtio_user0 → io fwd → virtio_user1 →
// fastpathd br1 → sink (vu). The two bridges keep the paths apart, so every
// frame crosses testpmd exactly once; the same with 9014-byte frames and mrg_rxbuf=1, and
// both on packed rings (testpmd's packed_vq=1); and with two queue pairs on testpmd's ports
// (queues=2: frames spread over both by flow, each flow kept in order), through one worker
// and through two (each port's pair 1 polled by the other).
//! Interop: DPDK virtio_user ↔ fastpathd.

use std::time::{Duration, Instant};

use integration::{
    check_switch_counters, check_testpmd_forwarded, fastpathctl_list, fastpathd_args, fastpathd_port,
    finish_transfer_with, pktgen_args, require, serial, show_ports, sink_args, stamp, wait_for_socket, wait_ports_up,
    Order, Proc, TestDir, Testpmd, Verdict, FRAMES, QUEUE_SIZE, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

/// How one run differs: 64-byte frames by default, or jumbo frames.
#[derive(Default)]
struct Run {
    /// Frame size pktgen sends (none: its default).
    size: Option<u64>,
    /// Appended to testpmd's ports' fastpathd specs (e.g. `,mtu=9000`).
    port_opts: &'static str,
    /// Appended to testpmd's vdevs (e.g. `,mrg_rxbuf=1`).
    vdev_opts: &'static str,
    /// testpmd's own extra arguments.
    testpmd_args: &'static [&'static str],
    /// pktgen's and sink's extra arguments.
    app_args: &'static [&'static str],
    /// testpmd's ports take packed rings (`packed_vq=1`).
    packed: bool,
    /// Queue pairs of testpmd's ports (0: one).
    queues: u16,
    /// fastpathd runs two workers (`--cores 0,1 --share-core`): each port's pair 1 is
    /// polled by the other worker.
    two_workers: bool,
}

/// Source MACs pktgen sends from in the multiqueue run: as many flows, spread over the
/// queues by their hash.
const FLOWS: u32 = 64;

#[test]
fn testpmd_virtio_user_to_fastpathd() {
    run("testpmd_virtio_user_to_fastpathd", &Run::default());
}

/// Two queue pairs on each of testpmd's ports (`queues=2`, `--rxq=2 --txq=2`): the switch
/// spreads the 64 flows pktgen sends over port a's two receive queues by their hash,
/// testpmd forwards each queue to the same queue of port b, and the switch takes frames
/// from both of b's transmit queues. Every frame arrives; each flow in order.
#[test]
fn testpmd_multiqueue_virtio_user_through_fastpathd() {
    run(
        "testpmd_multiqueue_virtio_user_through_fastpathd",
        &Run {
            queues: 2,
            vdev_opts: ",cq=1",
            // Four receive rings of 1,024 and four transmit rings fit testpmd's mbufs.
            testpmd_args: &["--rxq=2", "--txq=2", "--rxd=1024", "--txd=1024"],
            ..Run::default()
        },
    );
}

/// The same through two workers (`--cores 0,1`, polling with `--share-core`; testpmd's
/// forwarding core shares CPU 1): p and b on worker 0, a and s on worker 1, and the
/// transmit ring of pair 1 of each of testpmd's ports polled by the other worker. Every
/// frame arrives, each flow in order.
#[test]
fn testpmd_multiqueue_virtio_user_through_two_workers() {
    run(
        "testpmd_multiqueue_virtio_user_through_two_workers",
        &Run {
            queues: 2,
            vdev_opts: ",cq=1",
            testpmd_args: &["--rxq=2", "--txq=2", "--rxd=1024", "--txd=1024"],
            two_workers: true,
            ..Run::default()
        },
    );
}

/// 9014-byte frames (MTU 9000) through testpmd with mergeable receive buffers: each frame
/// spans five of its 2 KB mbufs on receive (`--enable-scatter`) and goes back out as a
/// chain of them.
#[test]
fn testpmd_jumbo_mrg_rxbuf_through_fastpathd() {
    run(
        "testpmd_jumbo_mrg_rxbuf_through_fastpathd",
        &Run {
            size: Some(9014),
            port_opts: ",mtu=9000",
            vdev_opts: ",mrg_rxbuf=1",
            testpmd_args: &["--max-pkt-len=9018", "--mbuf-size=2048", "--enable-scatter"],
            app_args: &["--mtu", "9000"],
            ..Run::default()
        },
    );
}

/// The same on packed rings: testpmd's virtio_user with `packed_vq=1`, fastpathd's
/// ports offering VIRTIO_F_RING_PACKED.
#[test]
fn testpmd_packed_virtio_user_to_fastpathd() {
    run("testpmd_packed_virtio_user_to_fastpathd", &Run { packed: true, ..Run::default() });
}

/// Jumbo frames over packed rings: mergeable receive buffers across packed chains, and
/// testpmd's 5-mbuf frames sent as indirect tables. On a packed ring DPDK puts each such
/// frame in one ring slot and reclaims sent mbufs only when its ring is nearly full, so
/// its transmit ring is 1,024 slots (5,120 mbufs), not 4,096 (20,480: the whole pool,
/// which would leave nothing to receive into, whatever the backend).
#[test]
fn testpmd_packed_jumbo_mrg_rxbuf_through_fastpathd() {
    run(
        "testpmd_packed_jumbo_mrg_rxbuf_through_fastpathd",
        &Run {
            size: Some(9014),
            port_opts: ",mtu=9000",
            vdev_opts: ",mrg_rxbuf=1",
            testpmd_args: &["--max-pkt-len=9018", "--mbuf-size=2048", "--enable-scatter", "--txd=1024"],
            app_args: &["--mtu", "9000"],
            packed: true,
            ..Run::default()
        },
    );
}

fn run(test: &str, r: &Run) {
    let Some(peers) = require(test, &["pktgen", "sink", "fastpathd", "fastpathctl"], true) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("tpfp");
    let ctl = dir.join("ctl.sock");
    let (p_sock, a_sock, b_sock, s_sock) =
        (dir.join("p.sock"), dir.join("a.sock"), dir.join("b.sock"), dir.join("s.sock"));
    let mut v = Verdict::new(test);
    let queues = r.queues.max(1);

    // The switch listens on all four sockets; its polling worker has CPU 0,
    // testpmd's forwarding core CPU 1; pktgen and sink sleep when idle.
    let ports = [
        fastpathd_port("br0", "p", "vhost", &p_sock),
        fastpathd_port("br0", "a", "vhost", &a_sock) + r.port_opts,
        fastpathd_port("br1", "b", "vhost", &b_sock) + r.port_opts,
        fastpathd_port("br1", "s", "vhost", &s_sock),
    ];
    let mut args = fastpathd_args(&ctl, &["br0", "br1"], &ports);
    if r.two_workers {
        integration::on_two_workers(&mut args, "--share-core");
    }
    let mut fpd = Proc::spawn("fastpathd", &dir, &peers.bin("fastpathd"), &args, &[]);
    if r.two_workers {
        for port in ["a", "b"] {
            let line = format!("port {port}: this worker polls queue pair(s) 1");
            v.check(fpd.wait_for_stderr(&line, SETUP_TIMEOUT), || format!("fastpathd: expected \"{line}\" in its log"));
        }
    }
    for sock in [&ctl, &p_sock, &a_sock, &b_sock, &s_sock] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut fpd],
            );
        }
    }
    let app_args = r.app_args.iter().map(|a| (*a).to_string());
    let mut sink_a = sink_args(&format!("vu:{}", s_sock.display()), FRAMES);
    sink_a.extend(app_args.clone());
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_a, &[]);
    let mut tp = Testpmd::start_with(
        &peers,
        &dir,
        &[
            format!(
                "virtio_user0,path={},queues={queues},queue_size={QUEUE_SIZE},packed_vq={}{}",
                a_sock.display(),
                u8::from(r.packed),
                r.vdev_opts
            ),
            format!(
                "virtio_user1,path={},queues={queues},queue_size={QUEUE_SIZE},packed_vq={}{}",
                b_sock.display(),
                u8::from(r.packed),
                r.vdev_opts
            ),
        ],
        true,
        &r.testpmd_args.iter().map(|a| (*a).to_string()).collect::<Vec<_>>(),
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
    let mut gen_a = pktgen_args(&format!("vu:{}", p_sock.display()), FRAMES);
    if let Some(size) = r.size {
        let at = gen_a.iter().position(|a| a == "--size").expect("pktgen_args has --size") + 1;
        gen_a[at] = size.to_string();
    }
    gen_a.extend(app_args);
    let order = if queues > 1 {
        // From MACs apart from the destination pktgen sends to (02:00:00:00:00:02).
        gen_a.extend(["--src-mac", "02:00:0b:00:00:00", "--src-macs", &FLOWS.to_string()].map(String::from));
        Order::PerFlow
    } else {
        Order::Global
    };
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    let sj = finish_transfer_with(&mut v, &mut pktgen, &mut sink, FRAMES, order);
    if queues > 1 {
        let flows = sj.as_ref().and_then(|j| j["flows"].as_u64());
        v.check(flows == Some(u64::from(FLOWS)), || format!("sink: expected {FLOWS} flows, got {flows:?}"));
    }
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => {
            v.note(show_ports(&list));
            let mut want = vec![
                ("p", "rx_packets", FRAMES),
                ("a", "tx_packets", FRAMES),
                ("b", "rx_packets", FRAMES),
                ("s", "tx_packets", FRAMES),
            ];
            if let Some(size) = r.size {
                want.extend([("a", "tx_bytes", FRAMES * size), ("b", "rx_bytes", FRAMES * size)]);
            }
            check_switch_counters(&mut v, &list, &want);
            if queues > 1 {
                check_both_queues(&mut v, &list);
            }
        }
        Err(e) => v.fail(e),
    }
    // Each of testpmd's ports told the switch which ring layout it took.
    let log = fpd.stderr();
    let want = if r.packed { "packed rings" } else { "split rings" };
    for port in ["a", "b"] {
        let said: Vec<&str> =
            log.lines().filter(|l| l.contains(&format!("port {port} (")) && l.contains("features")).collect();
        v.check(said.iter().any(|l| l.contains(want)), || {
            format!("fastpathd: expected port {port} to negotiate {want}, its feature lines: {said:?}")
        });
    }
    let stats = tp.stop();
    check_testpmd_forwarded(&mut v, &stats, 0, 1, FRAMES);
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {test}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, tp.proc(), &mut fpd]);
}

/// Both queue pairs carried frames: the switch's to port a (spread by flow over its
/// receive queues) and port b's to the switch (testpmd forwards queue i to queue i), and
/// the per-queue counts add up to the frames sent.
fn check_both_queues(v: &mut Verdict, list: &[serde_json::Value]) {
    for (port, dir) in [("a", "txq"), ("b", "rxq")] {
        let Some(p) = list.iter().find(|p| p["name"] == port) else {
            v.fail(format!("fastpathctl list: no port {port}"));
            continue;
        };
        let counts: Vec<u64> = (0..2)
            .map(|q| {
                p["kind_counters"]
                    .as_array()
                    .and_then(|c| c.iter().find(|kv| kv[0] == format!("{dir}{q}_packets")))
                    .and_then(|kv| kv[1].as_u64())
                    .unwrap_or(0)
            })
            .collect();
        v.check(counts.iter().all(|&n| n > 0) && counts.iter().sum::<u64>() == FRAMES, || {
            format!(
                "port {port}: expected frames on both queue pairs ({dir}0_packets, {dir}1_packets > 0, {FRAMES} in \
                 all), got {counts:?}: {}",
                p["kind_counters"]
            )
        });
    }
}
