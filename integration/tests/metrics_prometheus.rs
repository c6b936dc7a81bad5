// fastpathd's metrics through a real Prometheus (Debian's, started by the test with its own
// config and storage, scraping every second): after pktgen → br0 → sink, Prometheus's query
// API gives the counters `fastpathctl stats` shows; a hook-started runc container carrying
// Kubernetes annotations shows up labelled with its pod.
//! Prometheus scraping fastpathd.

mod hook_common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hook_common::{finish, Fixture, Rt};
use integration::{
    fastpathctl_list, fastpathd_args, fastpathd_port, find_in_path, find_prometheus, finish_transfer, metrics_addr,
    pktgen_args, port_stat, require, scrape, serial, show_ports, sink_args, skip_or_fail, spawn_piped, stamp,
    wait_for_socket, wait_ports_up, wait_until, Peers, Proc, Prometheus, TestDir, Verdict, FRAMES, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

/// How long Prometheus may take to show a value (a scrape a second, and its own start).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(20);
/// fastpathd's metrics address in these tests: a port the kernel picks, read from its log.
const METRICS: &str = "127.0.0.1:0";

/// `promtool check metrics` on `text`: its complaints, if any (none when promtool is absent).
fn promtool_check(text: &str) -> Result<(), String> {
    let Some(promtool) = find_in_path("promtool") else { return Ok(()) };
    let mut c = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e}"))?;
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(text.as_bytes());
    }
    let o = c.wait_with_output().map_err(|e| format!("promtool: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics: {}: {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// Prometheus on the machine, or a skip (or a failure under `FASTPATH_REQUIRE_PEERS=1`).
fn have_prometheus(test: &str) -> bool {
    match find_prometheus() {
        Ok(_) => true,
        Err(why) => {
            skip_or_fail(test, &why);
            false
        }
    }
}

fn run(test: &str, peers: &Peers) {
    let t0 = Instant::now();
    let dir = TestDir::new("prom");
    let ctl = dir.join("ctl.sock");
    let (gen_sock, sink_sock) = (dir.join("p.sock"), dir.join("s.sock"));
    let mut v = Verdict::new(test);
    let ports = [fastpathd_port("br0", "p", "vhost", &gen_sock), fastpathd_port("br0", "s", "vhost", &sink_sock)];
    let mut args = fastpathd_args(&ctl, &["br0"], &ports);
    args.extend(["--metrics".to_string(), METRICS.to_string()]);
    let mut fpd = Proc::spawn("fastpathd", &dir, &peers.bin("fastpathd"), &args, &[]);
    for sock in [&ctl, &gen_sock, &sink_sock] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut fpd],
            );
        }
    }
    let addr = match metrics_addr(&mut fpd, SETUP_TIMEOUT) {
        Ok(a) => a,
        Err(e) => v.abort(e, &mut [&mut fpd]),
    };
    match scrape(addr) {
        Ok(text) => {
            v.check(
                text.contains("fastpath_port_rx_packets_total{port=\"p\",bridge=\"br0\",kind=\"vhost\"} 0\n"),
                || format!("fastpathd's first scrape: expected port p at 0 frames:\n{text}"),
            );
            if let Err(e) = promtool_check(&text) {
                v.fail(e);
            }
        }
        Err(e) => v.fail(e),
    }
    let mut prom = match Prometheus::start(&dir, addr) {
        Ok(p) => p,
        Err(e) => v.abort(e, &mut [&mut fpd]),
    };
    let mut sink =
        Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("vu:{}", sink_sock.display()), FRAMES), &[]);
    if let Err(e) = wait_ports_up(peers, &ctl, &["s"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink]);
    }
    let mut pktgen = Proc::spawn(
        "pktgen",
        &dir,
        &peers.bin("pktgen"),
        &pktgen_args(&format!("vu:{}", gen_sock.display()), FRAMES),
        &[],
    );
    finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
    // The traffic has stopped: what fastpathctl shows now, Prometheus shows within a few scrapes.
    match fastpathctl_list(peers, &ctl) {
        Ok(list) => {
            v.note(show_ports(&list));
            for (port, key, metric) in [
                ("p", "rx_packets", "fastpath_port_rx_packets_total"),
                ("s", "tx_packets", "fastpath_port_tx_packets_total"),
            ] {
                let Some(want) = port_stat(&list, port, key) else {
                    v.fail(format!("fastpathctl list: no stats.{key} for port {port}"));
                    continue;
                };
                v.check(want >= FRAMES, || {
                    format!("fastpathctl: port {port} {key} {want}, expected at least {FRAMES}")
                });
                let q = format!("{metric}{{port=\"{port}\"}}");
                match prom.wait_value(&q, want, PROMETHEUS_WAIT) {
                    Ok(()) => v.note(format!("prometheus: {q} = {want}, as fastpathctl shows")),
                    Err(e) => v.fail(e),
                }
            }
        }
        Err(e) => v.fail(e),
    }
    // The worker's own counters made it too: every frame taken was in a burst.
    match prom.value("fastpath_worker_burst_frames_sum") {
        Ok(Some(n)) => v.check(n >= FRAMES, || format!("prometheus: burst frames sum {n}, expected at least {FRAMES}")),
        other => v.fail(format!("prometheus: fastpath_worker_burst_frames_sum: {other:?}")),
    }
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {test}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, &mut fpd, &mut prom.proc]);
}

#[test]
fn prometheus_reads_what_fastpathctl_shows() {
    const TEST: &str = "prometheus_reads_what_fastpathctl_shows";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    if !have_prometheus(TEST) {
        return;
    }
    let _serial = serial();
    run(TEST, &peers);
}

/// The Kubernetes annotations the container carries (CRI-O's container name among them).
const K8S: [(&str, &str); 5] = [
    ("fastpath.io/hugepages", "32Mi"),
    ("fastpath.io/vhost-user", "br0"),
    ("io.kubernetes.pod.name", "web-0"),
    ("io.kubernetes.pod.namespace", "shop"),
    ("io.kubernetes.container.name", "nginx"),
];

#[test]
fn a_hook_started_container_is_labelled_with_its_pod() {
    const TEST: &str = "a_hook_started_container_is_labelled_with_its_pod";
    let Some(peers) = hook_common::require(TEST, Some("runc")) else { return };
    if !have_prometheus(TEST) {
        return;
    }
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    // The fixture's switch again, with metrics.
    fx.stop_switch();
    let mut args = fastpathd_args(&fx.ctl, &["br0"], &[]);
    args.extend(["--metrics".to_string(), METRICS.to_string()]);
    let mut sw = Proc::spawn("fastpathd-metrics", &fx.dir, &peers.fastpathd, &args, &[]);
    assert!(wait_for_socket(&fx.ctl, SETUP_TIMEOUT), "fastpathd: no control socket:\n{}", sw.describe(20, 0));
    let addr = metrics_addr(&mut sw, SETUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    fx.fastpathd = Some(sw);
    let prom = Prometheus::start(&fx.dir, addr).unwrap_or_else(|e| panic!("{e}"));
    let name = "fpk8s";
    let mut child =
        Some(spawn_piped(&mut fx.run_cmd(name, "trap 'exit 0' TERM; while true; do sleep 1; done", &K8S, None)));
    let port = format!("fp-{name}-br0");
    let line = format!(
        "fastpath_port_link_up{{port=\"{port}\",bridge=\"br0\",kind=\"vhost\",container_id=\"{name}\",\
         container_name=\"nginx\",pod_name=\"web-0\",pod_namespace=\"shop\"}} "
    );
    let mut last = String::new();
    let shown = wait_until(Duration::from_secs(30), || {
        last = scrape(addr).unwrap_or_else(|e| e);
        last.contains(&line)
    });
    if !shown {
        let out = child.take().map(|c| finish(&fx, name, c, Duration::ZERO));
        panic!(
            "expected '{line}' in fastpathd's metrics within 30 s:\n{last}\ncontainer: {out:?}\nhook log: {}",
            fx.hook_log()
        );
    }
    // Through Prometheus: the series of the pod's port, with its labels.
    let q = "fastpath_port_rx_packets_total{pod_name=\"web-0\",pod_namespace=\"shop\"}";
    let found = wait_until(PROMETHEUS_WAIT, || prom.query(q).is_ok_and(|r| r.len() == 1));
    let r = prom.query(q).unwrap_or_else(|e| panic!("{e}"));
    assert!(found, "prometheus: expected one series for {q}, got {r:?}; targets: {}", prom.targets());
    let m = &r[0]["metric"];
    assert_eq!(
        (m["port"].as_str(), m["container_id"].as_str(), m["container_name"].as_str(), m["job"].as_str()),
        (Some(port.as_str()), Some(name), Some("nginx"), Some("fastpath")),
        "{m}"
    );
    if let Some(c) = child.take() {
        let o = finish(&fx, name, c, Duration::ZERO);
        eprintln!("{name}: {}", o.status);
    }
    fx.assert_released();
    eprintln!("{TEST}: port {port} labelled pod shop/web-0, container nginx");
}
