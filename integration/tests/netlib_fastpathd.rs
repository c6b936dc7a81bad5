// Two netlib apps through fastpathd on one bridge: pktgen → br0 → sink, first
// with the switch listening (`vhost:`; apps `vu:`), then with the switch
// connecting (`vhost-client:`) to apps that listen (`vu-server:`); and 9014-byte
// frames between apps of MTU 9000, dropped and counted on a port of MTU 1500; and 10,000
// hosts behind one port, every one learned and every frame forwarded, none flooded; and two
// workers (`--cores 0,1`) with two transfers crossing between them at once, both ways, every
// frame of every flow in order; and apps with two queue pairs (a thread each), through the
// switch and across its restart, and an l2fwd forwarding each of its two pairs on a thread.
//! Interop: netlib virtio-user ↔ fastpathd ↔ netlib virtio-user.

use std::time::{Duration, Instant};

use integration::{check_pairs, finish_transfer_with, kind_stat, pktgen_args_at, Order};
use integration::{
    check_switch_counters, fastpathctl_list, fastpathd_args, fastpathd_port, finish_transfer, pktgen_args, require,
    run_with_timeout, serial, show_ports, sink_args, spawn_fastpathd, stamp, wait_for_socket, wait_ports_up, Peers,
    Proc, TestDir, Verdict, FRAMES, RATE, RUN_TIMEOUT, SETUP_TIMEOUT,
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
    check_ports(&mut v, peers, &ctl, &[("p", "rx_packets", FRAMES), ("s", "tx_packets", FRAMES)]);
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {test}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, &mut fpd]);
}

/// Lists fastpathd's ports (into the verdict's notes) and checks their `counters`.
fn check_ports(v: &mut Verdict, peers: &Peers, ctl: &std::path::Path, counters: &[(&str, &str, u64)]) {
    match fastpathctl_list(peers, ctl) {
        Ok(list) => {
            v.note(show_ports(&list));
            check_switch_counters(v, &list, counters);
        }
        Err(e) => v.fail(e),
    }
}

#[test]
fn two_netlib_through_fastpathd() {
    const TEST: &str = "two_netlib_through_fastpathd";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    run(&format!("{TEST} (switch listens: fastpathd vhost:, apps vu:)"), &peers, true);
    run(&format!("{TEST} (switch connects: fastpathd vhost-client:, apps vu-server:)"), &peers, false);
}

#[test]
fn jumbo_frames_through_fastpathd() {
    const TEST: &str = "jumbo_frames_through_fastpathd";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    let dir = TestDir::new("fpj");
    let ctl = dir.join("ctl.sock");
    let (p, s, m) = (dir.join("p.sock"), dir.join("s.sock"), dir.join("m.sock"));
    let mut v = Verdict::new(TEST);
    let ports = [fastpathd_port("br0", "p", "vhost", &p), fastpathd_port("br0", "s", "vhost", &s)];
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0"], &ports);
    for sock in [&ctl, &p, &s] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut fpd],
            );
        }
    }
    // A third port of MTU 1500, its frontend away: the flooded jumbo frames are too big
    // for it, and counted as such before anything else.
    let add = run_with_timeout(
        std::process::Command::new(peers.bin("fastpathctl"))
            .arg("--ctl")
            .arg(&ctl)
            .args(["add-port", "--name", "m", "--bridge", "br0", "--mtu", "1500", "--socket"])
            .arg(&m),
        Duration::from_secs(5),
    );
    if !add.as_ref().is_ok_and(|o| o.status.success()) {
        v.abort(format!("fastpathctl add-port --mtu 1500: expected success, got {add:?}"), &mut [&mut fpd]);
    }
    let jumbo = ["--mtu", "9000"].map(String::from);
    let mut sink_a = sink_args(&format!("vu:{}", s.display()), FRAMES);
    sink_a.extend(jumbo.clone());
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_a, &[]);
    if let Err(e) = wait_ports_up(&peers, &ctl, &["s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink]);
    }
    let mut gen_a = pktgen_args(&format!("vu:{}", p.display()), FRAMES);
    let size = gen_a.iter().position(|a| a == "--size").expect("pktgen_args has --size") + 1;
    gen_a[size] = "9014".into();
    gen_a.extend(jumbo);
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    check_ports(
        &mut v,
        &peers,
        &ctl,
        &[
            ("p", "rx_packets", FRAMES),
            ("p", "rx_bytes", FRAMES * 9014),
            ("s", "tx_packets", FRAMES),
            ("s", "tx_bytes", FRAMES * 9014),
            ("m", "drop_too_big", FRAMES),
            ("m", "tx_packets", 0),
        ],
    );
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    v.finish(&mut [&mut pktgen, &mut sink, &mut fpd]);
}

/// The MACs of one port's entry in `fastpathctl list`.
fn learned_macs(list: &[serde_json::Value], port: &str) -> Vec<String> {
    list.iter()
        .find(|p| p.get("name").and_then(serde_json::Value::as_str) == Some(port))
        .and_then(|p| p.get("macs"))
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(|m| m.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[test]
fn ten_thousand_hosts_behind_one_port() {
    const TEST: &str = "ten_thousand_hosts_behind_one_port";
    const HOSTS: u64 = 10_000;
    const SINK_MAC: &str = "02:00:0b:00:00:00";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    let dir = TestDir::new("fph");
    let ctl = dir.join("ctl.sock");
    let (gen_sock, sink_sock, idle_sock) = (dir.join("p.sock"), dir.join("s.sock"), dir.join("m.sock"));
    let mut v = Verdict::new(TEST);
    let ports = [
        fastpathd_port("br0", "p", "vhost", &gen_sock),
        fastpathd_port("br0", "s", "vhost", &sink_sock),
        fastpathd_port("br0", "m", "vhost", &idle_sock),
    ];
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0"], &ports);
    for sock in [&ctl, &gen_sock, &sink_sock] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut fpd],
            );
        }
    }
    // The sink announces its MAC; port m has no frontend: anything flooded is counted there.
    let mut sink_a = sink_args(&format!("vu:{}", sink_sock.display()), FRAMES);
    sink_a.extend(["--announce".into(), SINK_MAC.into()]);
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_a, &[]);
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let list = fastpathctl_list(&peers, &ctl).unwrap_or_default();
        if learned_macs(&list, "s").iter().any(|mac| mac == SINK_MAC) {
            break;
        }
        if Instant::now() > deadline {
            v.abort(
                format!("fastpathd: expected port s to learn the sink's {SINK_MAC} within {SETUP_TIMEOUT:?}"),
                &mut [&mut fpd, &mut sink],
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut gen_a = pktgen_args(&format!("vu:{}", gen_sock.display()), FRAMES);
    gen_a.extend(
        ["--src-mac", "02:00:0a:00:00:00", "--src-macs", &HOSTS.to_string(), "--dst-mac", SINK_MAC].map(String::from),
    );
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    // The hosts' MACs while pktgen sends (its port's MACs are forgotten when it goes away).
    let mut hosts: Vec<String> = Vec::new();
    let deadline = Instant::now() + RUN_TIMEOUT;
    while (hosts.len() as u64) < HOSTS && Instant::now() < deadline && pktgen.try_status().is_none() {
        if let Ok(list) = fastpathctl_list(&peers, &ctl) {
            let now = learned_macs(&list, "p");
            if now.len() > hosts.len() {
                hosts = now;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    v.check(hosts.len() as u64 == HOSTS, || {
        format!("fastpathd port p: expected {HOSTS} MACs learned while pktgen sent, got {}", hosts.len())
    });
    for want in ["02:00:0a:00:00:00", "02:00:0a:00:27:0f"] {
        v.check(hosts.iter().any(|h| h == want), || format!("fastpathd port p: expected {want} learned"));
    }
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => {
            // Every frame went to the sink's port alone: none flooded to m but the announcement.
            check_switch_counters(
                &mut v,
                &list,
                &[
                    ("p", "rx_packets", FRAMES),
                    ("s", "tx_packets", FRAMES),
                    ("m", "tx_packets", 0),
                    ("m", "drop_no_peer", 1),
                ],
            );
        }
        Err(e) => v.fail(e),
    }
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    v.finish(&mut [&mut pktgen, &mut sink, &mut fpd]);
}

#[test]
fn two_workers_keep_every_flow_in_order() {
    const TEST: &str = "two_workers_keep_every_flow_in_order";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    // Polling (giving the CPU away when idle), then in interrupt mode: a worker asleep is
    // rung by the other when frames for its ports go into its links.
    two_workers(&format!("{TEST} (--share-core)"), &peers, "--share-core");
    two_workers(&format!("{TEST} (--interrupt)"), &peers, "--interrupt");
}

/// Two transfers crossing between two workers, with fastpathd's `idle` flag.
fn two_workers(test: &str, peers: &Peers, idle: &str) {
    const FLOWS: u64 = 64;
    let t0 = Instant::now();
    let dir = TestDir::new("fpw");
    let ctl = dir.join("ctl.sock");
    let mut v = Verdict::new(test);
    // Ports go to the worker with the fewest: a and c on worker 0, b and d on worker 1. Each
    // transfer crosses: a (worker 0) -> b (worker 1) on br0, d (worker 1) -> c (worker 0) on br1.
    let sock = |n: &str| dir.join(&format!("{n}.sock"));
    let ports: Vec<String> = [("br0", "a"), ("br0", "b"), ("br1", "c"), ("br1", "d")]
        .iter()
        .map(|(br, n)| fastpathd_port(br, n, "vhost", &sock(n)))
        .collect();
    // Two workers, one per CPU, beside four apps: the workers give their CPU away when idle
    // (`idle`), and the generators send at a fifth of the usual rate, so that a link
    // (2,048 of these frames: 200 ms) outlasts a worker waiting for its CPU on a busy machine.
    let mut args = fastpathd_args(&ctl, &["br0", "br1"], &ports);
    integration::on_two_workers(&mut args, idle);
    let mut fpd = Proc::spawn("fastpathd", &dir, &peers.bin("fastpathd"), &args, &[]);
    for s in [ctl.clone(), sock("a"), sock("b"), sock("c"), sock("d")] {
        if !wait_for_socket(&s, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", s.display()),
                &mut [&mut fpd],
            );
        }
    }
    for (port, worker) in [("a", 0), ("b", 1), ("c", 0), ("d", 1)] {
        let line = format!("port {port} on worker {worker}");
        v.check(fpd.wait_for_stderr(&line, SETUP_TIMEOUT), || format!("fastpathd: expected \"{line}\" in its log"));
    }
    let mut sinks: Vec<Proc> = ["b", "c"]
        .iter()
        .map(|n| {
            let a = sink_args(&format!("vu:{}", sock(n).display()), FRAMES);
            Proc::spawn(&format!("sink-{n}"), &dir, &peers.bin("sink"), &a, &[])
        })
        .collect();
    if let Err(e) = wait_ports_up(peers, &ctl, &["b", "c"], SETUP_TIMEOUT) {
        let [b, c] = &mut sinks[..] else { unreachable!() };
        v.abort(e, &mut [&mut fpd, b, c]);
    }
    // Many flows (source MACs) from each generator, both at once.
    let mut gens: Vec<Proc> = [("a", "02:00:0a:00:00:00"), ("d", "02:00:0d:00:00:00")]
        .iter()
        .map(|(n, src)| {
            let mut a = pktgen_args_at(&format!("vu:{}", sock(n).display()), FRAMES, RATE / 5);
            a.extend(["--src-mac", src, "--src-macs", &FLOWS.to_string()].map(String::from));
            Proc::spawn(&format!("pktgen-{n}"), &dir, &peers.bin("pktgen"), &a, &[])
        })
        .collect();
    for (g, s) in gens.iter_mut().zip(sinks.iter_mut()) {
        let result = finish_transfer_with(&mut v, g, s, FRAMES, Order::Global);
        let flows = result.as_ref().and_then(|j| j.get("flows")).and_then(serde_json::Value::as_u64);
        v.check(flows == Some(FLOWS), || format!("{}: expected {FLOWS} flows, got {flows:?}", s.name()));
    }
    check_ports(
        &mut v,
        peers,
        &ctl,
        &[
            ("a", "rx_packets", FRAMES),
            ("b", "tx_packets", FRAMES),
            ("b", "tx_dropped", 0),
            ("d", "rx_packets", FRAMES),
            ("c", "tx_packets", FRAMES),
            ("c", "tx_dropped", 0),
        ],
    );
    // What the links between the workers dropped (in tx_dropped too, but named here), and
    // which worker polls each port.
    let list = fastpathctl_list(peers, &ctl).unwrap_or_default();
    let workers: Vec<Option<u64>> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            let p = list.iter().find(|p| p.get("name").and_then(serde_json::Value::as_str) == Some(n));
            p.and_then(|p| p.get("worker")).and_then(serde_json::Value::as_u64)
        })
        .collect();
    v.check(workers == [Some(0), Some(1), Some(0), Some(1)], || {
        format!("fastpathctl list: expected ports a, b, c, d on workers 0, 1, 0, 1, got {workers:?}")
    });
    for port in ["b", "c"] {
        let dropped = kind_stat(&list, port, "link_dropped");
        v.check(dropped == Some(0), || format!("fastpathd port {port}: expected link_dropped 0, got {dropped:?}"));
    }
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {test}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    let [ga, gd] = &mut gens[..] else { unreachable!() };
    let [sb, sc] = &mut sinks[..] else { unreachable!() };
    v.finish(&mut [ga, gd, sb, sc, &mut fpd]);
}

/// Source MACs (flows) of the queue-pair runs.
const PAIR_FLOWS: u64 = 64;

/// pktgen and sink with two queue pairs each (`--queues 2`: a handle, a pool and a thread
/// per pair) on fastpathd's ports: pktgen sends each of 64 flows from the pair its hash
/// picks, the switch takes frames from both of port g's transmit rings and spreads them
/// over port s's two receive rings by the same hash. Every frame arrives, each flow in
/// order and on its hash's pair. Then under traffic the switch is killed (`kill -9`) and
/// started again: both pairs of both apps reset their rings and come back (each pair
/// counts one reset), and frames flow on both pairs again, each flow still in order.
#[test]
fn netlib_pairs_through_fastpathd_and_its_restart() {
    const TEST: &str = "netlib_pairs_through_fastpathd_and_its_restart";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    pairs_and_restart(TEST, &peers, false);
}

/// The same with two workers (`--cores 0,1 --share-core`): g on worker 0, s on worker 1,
/// and each port's pair 1 polled by the other worker (its transmit ring lent): g's pair-1
/// frames are received by worker 1, its pair-0 frames by worker 0 and cross to s's worker
/// through a link. Flows stay in order, and the lanes come back with the new switch.
#[test]
fn netlib_pairs_spread_over_two_workers_and_a_restart() {
    const TEST: &str = "netlib_pairs_spread_over_two_workers_and_a_restart";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    pairs_and_restart(TEST, &peers, true);
}

/// Two apps of two queue pairs through fastpathd (of two workers if `two_workers`), then
/// its kill -9 and restart under traffic.
fn pairs_and_restart(test: &str, peers: &Peers, two_workers: bool) {
    let t0 = Instant::now();
    let dir = TestDir::new("fpq");
    let ctl = dir.join("ctl.sock");
    let (g, s) = (dir.join("g.sock"), dir.join("s.sock"));
    let mut v = Verdict::new(test);
    let ports = [fastpathd_port("br0", "g", "vhost", &g), fastpathd_port("br0", "s", "vhost", &s)];
    let spawn = |name: &str| {
        let mut args = fastpathd_args(&ctl, &["br0"], &ports);
        if two_workers {
            integration::on_two_workers(&mut args, "--share-core");
        }
        Proc::spawn(name, &dir, &peers.bin("fastpathd"), &args, &[])
    };
    // Two workers beside four app threads: the generator at a fifth of the usual rate (see
    // two_workers).
    let rate = if two_workers { RATE / 5 } else { RATE };
    let pktgen_at = |port: &std::path::Path, n: u64| pktgen_args_at(&format!("vu:{}", port.display()), n, rate);
    let mut fpd = spawn("fastpathd");
    let lent = ["port g: this worker polls queue pair(s) 1", "port s: this worker polls queue pair(s) 1"];
    if two_workers {
        for line in lent {
            v.check(fpd.wait_for_stderr(line, SETUP_TIMEOUT), || format!("fastpathd: expected \"{line}\" in its log"));
        }
    }
    for sock in [&ctl, &g, &s] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(format!("fastpathd: expected {} within {SETUP_TIMEOUT:?}", sock.display()), &mut [&mut fpd]);
        }
    }
    let pairs = ["--queues", "2"].map(String::from);
    let flows = ["--src-mac", "02:00:0b:00:00:00", "--src-macs", &PAIR_FLOWS.to_string()].map(String::from);
    let mut sink_a = sink_args(&format!("vu:{}", s.display()), FRAMES);
    sink_a.extend(pairs.clone());
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_a, &[]);
    if let Err(e) = wait_ports_up(peers, &ctl, &["s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink]);
    }
    let mut gen_a = pktgen_at(&g, FRAMES);
    gen_a.extend(pairs.iter().chain(&flows).cloned());
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    let sj = finish_transfer_with(&mut v, &mut pktgen, &mut sink, FRAMES, Order::PerFlow);
    check_pairs(&mut v, pktgen.last_json().as_ref(), sj.as_ref(), PAIR_FLOWS, Some(FRAMES));
    // The switch saw both pairs of each port: g's transmit rings, s's receive rings.
    let list = fastpathctl_list(peers, &ctl).unwrap_or_default();
    for (port, dir) in [("g", "rxq"), ("s", "txq")] {
        let n: Vec<Option<u64>> = (0..2).map(|q| kind_stat(&list, port, &format!("{dir}{q}_packets"))).collect();
        v.check(n.iter().all(|x| x.is_some_and(|x| x > 0)) && n.iter().flatten().sum::<u64>() == FRAMES, || {
            format!("fastpathd port {port}: expected {dir}0_packets and {dir}1_packets > 0, {FRAMES} in all, got {n:?}")
        });
    }

    // Under traffic, a kill -9 and a new switch on the same sockets.
    let mut sink_a = sink_args(&format!("vu:{}", s.display()), 0);
    sink_a.extend(pairs.clone());
    let mut sink = Proc::spawn("sink-2", &dir, &peers.bin("sink"), &sink_a, &[]);
    if let Err(e) = wait_ports_up(peers, &ctl, &["s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink]);
    }
    let delivered = |ctl: &std::path::Path| {
        let l = fastpathctl_list(peers, ctl).unwrap_or_default();
        integration::port_stat(&l, "s", "tx_packets").unwrap_or(0)
    };
    let before = delivered(&ctl);
    let mut gen_a = pktgen_at(&g, 0);
    gen_a.extend(pairs.iter().chain(&flows).cloned());
    let mut pktgen = Proc::spawn("pktgen-2", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    let flowing = integration::wait_until(RUN_TIMEOUT, || delivered(&ctl) > before + 20_000);
    v.check(flowing, || "fastpathd: expected 20,000 frames to port s before the restart".into());
    fpd.kill();
    let _ = std::fs::remove_file(&ctl);
    let mut fpd = spawn("fastpathd-2");
    if two_workers {
        for line in lent {
            v.check(fpd.wait_for_stderr(line, SETUP_TIMEOUT), || {
                format!("fastpathd-2: expected \"{line}\" in its log")
            });
        }
    }
    // The new switch's count for s (from 0, or from where the old one left it).
    let up = wait_for_socket(&ctl, SETUP_TIMEOUT);
    let from = delivered(&ctl);
    let back = up && integration::wait_until(RUN_TIMEOUT, || delivered(&ctl) > from + 20_000);
    v.check(back, || "fastpathd-2: expected 20,000 frames to port s after the restart".into());
    pktgen.stop(Signal::SIGINT, Duration::from_secs(5));
    if sink.wait_timeout(Duration::from_secs(u64::from(integration::SINK_IDLE_EXIT_SECS) + 5)).is_none() {
        v.fail("sink-2: expected it to exit once frames stopped");
        sink.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    let (pj, sj) = (pktgen.last_json(), sink.last_json());
    check_pairs(&mut v, pj.as_ref(), sj.as_ref(), PAIR_FLOWS, None);
    for (who, j) in [("pktgen-2", &pj), ("sink-2", &sj)] {
        let resets = j.as_ref().and_then(|j| j["counters"]["resets"].as_u64());
        v.check(resets == Some(2), || {
            format!("{who}: expected each of its 2 pairs to reset once (resets 2), got {resets:?}")
        });
    }
    let sj = sj.unwrap_or_default();
    v.check(sj["bad"].as_u64() == Some(0) && sj["flow_reordered"].as_u64() == Some(0), || {
        format!("sink-2: expected no damaged frame and every flow in order across the restart, got {sj}")
    });
    for p in [&pktgen, &sink] {
        v.check(p.stderr().contains("up again after"), || {
            format!("{}: expected its port to say it is up again", p.name())
        });
    }
    eprintln!("[{}] pktgen-2: {}\n[{}] sink-2: {sj}", stamp(), pj.unwrap_or_default(), stamp());
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd-2: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {test}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, &mut fpd]);
}

/// A VNF with two queue pairs: `l2fwd --queues 2` between ports a (br0) and b (br1), a
/// thread per pair, pair q of a forwarded to pair q of b on one pool, without a copy:
/// pktgen (`--queues 2`, 64 flows) -> g -> br0 -> a -> l2fwd -> b -> br1 -> s -> sink
/// (`--queues 2`). The switch spreads the flows over a's two receive pairs by hash; each
/// of l2fwd's threads forwards its share; every frame arrives, each flow in order and on
/// the pair its hash picks, and both of l2fwd's threads forwarded frames.
#[test]
fn l2fwd_with_two_queue_pairs_through_fastpathd() {
    const TEST: &str = "l2fwd_with_two_queue_pairs_through_fastpathd";
    let Some(peers) = require(TEST, &["pktgen", "sink", "l2fwd", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("fpl");
    let ctl = dir.join("ctl.sock");
    let sock = |n: &str| dir.join(&format!("{n}.sock"));
    let mut v = Verdict::new(TEST);
    let ports: Vec<String> = [("br0", "g"), ("br0", "a"), ("br1", "b"), ("br1", "s")]
        .iter()
        .map(|(br, n)| fastpathd_port(br, n, "vhost", &sock(n)))
        .collect();
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0", "br1"], &ports);
    for s in [ctl.clone(), sock("g"), sock("a"), sock("b"), sock("s")] {
        if !wait_for_socket(&s, SETUP_TIMEOUT) {
            v.abort(format!("fastpathd: expected {} within {SETUP_TIMEOUT:?}", s.display()), &mut [&mut fpd]);
        }
    }
    let queues = ["--queues", "2"].map(String::from);
    let mut l2_a: Vec<String> =
        ["--port", &format!("vu:{}", sock("a").display()), "--port", &format!("vu:{}", sock("b").display())]
            .map(String::from)
            .to_vec();
    l2_a.extend(queues.iter().cloned().chain(integration::app_flags()));
    let mut l2fwd = Proc::spawn("l2fwd", &dir, &peers.bin("l2fwd"), &l2_a, &[]);
    let mut sink_a = sink_args(&format!("vu:{}", sock("s").display()), FRAMES);
    sink_a.extend(queues.clone());
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_a, &[]);
    if let Err(e) = wait_ports_up(&peers, &ctl, &["a", "b", "s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink, &mut l2fwd]);
    }
    let mut gen_a = pktgen_args(&format!("vu:{}", sock("g").display()), FRAMES);
    gen_a.extend(queues.iter().cloned());
    gen_a.extend(["--src-mac", "02:00:0b:00:00:00", "--src-macs", &PAIR_FLOWS.to_string()].map(String::from));
    let mut pktgen = Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &gen_a, &[]);
    let sj = finish_transfer_with(&mut v, &mut pktgen, &mut sink, FRAMES, Order::PerFlow);
    check_pairs(&mut v, pktgen.last_json().as_ref(), sj.as_ref(), PAIR_FLOWS, Some(FRAMES));
    l2fwd.stop(Signal::SIGINT, Duration::from_secs(5));
    let lj = l2fwd.last_json().unwrap_or_default();
    let per: Vec<u64> =
        lj["pairs"].as_array().map_or_else(Vec::new, |a| a.iter().filter_map(|p| p["forwarded"].as_u64()).collect());
    v.check(per.len() == 2 && per.iter().all(|&n| n > 0) && lj["forwarded"].as_u64() == Some(FRAMES), || {
        format!("l2fwd: expected {FRAMES} frames forwarded, some by each queue pair's thread, got {lj}")
    });
    v.check(lj["dropped"].as_u64() == Some(0), || format!("l2fwd: expected nothing dropped, got {lj}"));
    check_ports(&mut v, &peers, &ctl, &[("a", "tx_packets", FRAMES), ("s", "tx_packets", FRAMES)]);
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] l2fwd: {lj}\n[{}] {TEST}: {:.2} s", stamp(), stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, &mut l2fwd, &mut fpd]);
}
