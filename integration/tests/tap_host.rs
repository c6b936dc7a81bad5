// The host's own stack reaching a container app through a TAP port: fastpathd with a
// `tap` port and a vhost-user port on one bridge, smoltcp's udp_echo on the vhost port,
// and on the other side a network namespace holding the TAP interface with an address,
// from which the real `ping` and a kernel-socket udp_rr talk to the app.
//! Interop: the kernel's stack (ping, UDP sockets) ↔ TAP port ↔ fastpathd ↔ smoltcp.

use std::time::{Duration, Instant};

use integration::{
    app_flags, fastpathctl_list, fastpathd_port, ip, output_text, require, serial, show_ports, spawn_fastpathd, stamp,
    wait_for_socket, wait_ports_up, Netns, Proc, TestDir, Verdict, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

/// Datagrams udp_rr exchanges with the echo server.
const TRANSACTIONS: u64 = 500;
const HOST_IP: &str = "10.77.0.1";
const APP_IP: &str = "10.77.0.2";

#[test]
fn host_pings_and_udp_echoes_a_smoltcp_app_through_a_tap_port() {
    const TEST: &str = "host_pings_and_udp_echoes_a_smoltcp_app_through_a_tap_port";
    let Some(peers) = require(TEST, &["fastpathd", "fastpathctl", "udp_echo", "udp_rr"], false) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("tap");
    let ctl = dir.join("ctl.sock");
    let tap = format!("fptap{}", std::process::id() % 10_000);
    let app_sock = dir.join("app.sock");
    let mut v = Verdict::new(TEST);
    let ports = [
        fastpathd_port("br0", "host", "tap", std::path::Path::new(&tap)),
        fastpathd_port("br0", "app", "vhost", &app_sock),
    ];
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0"], &ports);
    if !wait_for_socket(&app_sock, SETUP_TIMEOUT) {
        v.abort(format!("fastpathd: expected {} within {SETUP_TIMEOUT:?}", app_sock.display()), &mut [&mut fpd]);
    }
    // The host's side: the TAP interface moved into its own namespace, with an address.
    let ns = match Netns::new(&format!("fpt{}", std::process::id())) {
        Ok(ns) => ns,
        Err(e) => v.abort(e, &mut [&mut fpd]),
    };
    let setup = ip(&["link", "set", &tap, "netns", &ns.0])
        .and_then(|_| ns.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", &tap]))
        .and_then(|_| ns.ip(&["link", "set", &tap, "up"]))
        .and_then(|_| ns.ip(&["link", "set", "lo", "up"]));
    if let Err(e) = setup {
        v.abort(e, &mut [&mut fpd]);
    }
    let mut echo_args: Vec<String> = ["--port", &format!("vu:{}", app_sock.display()), "--ip", &format!("{APP_IP}/24")]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    echo_args.extend(app_flags());
    let mut echo = Proc::spawn("udp_echo", &dir, &peers.bin("udp_echo"), &echo_args, &[]);
    if let Err(e) = wait_ports_up(&peers, &ctl, &["app"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut echo]);
    }
    // ICMP: the kernel's ping, answered by smoltcp.
    match ns.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", APP_IP], Duration::from_secs(20)) {
        Ok(o) => {
            let text = output_text(&o);
            v.check(o.status.success() && text.contains(" 0% packet loss"), || {
                format!("ping {APP_IP} from the TAP's namespace: {text}")
            });
            v.note(format!(
                "ping: {}",
                text.lines().filter(|l| l.contains("packet loss") || l.contains("rtt")).collect::<Vec<_>>().join("; ")
            ));
        }
        Err(e) => v.fail(format!("ping: {e}")),
    }
    // UDP: a kernel socket in the namespace against smoltcp's echo.
    let server = format!("{APP_IP}:7");
    let n = TRANSACTIONS.to_string();
    match ns.exec(
        &[
            peers.bin("udp_rr").to_str().unwrap_or("udp_rr"),
            "--kernel",
            "--server",
            &server,
            "--count",
            &n,
            "--json",
            "--quiet",
        ],
        Duration::from_mins(1),
    ) {
        Ok(o) => {
            let text = output_text(&o);
            let j = text.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            let got = j.as_ref().and_then(|j| j["count"].as_u64());
            let lost = j.as_ref().and_then(|j| j["lost"].as_u64()).unwrap_or(u64::MAX);
            let bad = j.as_ref().and_then(|j| j["bad"].as_u64()).unwrap_or(u64::MAX);
            v.check(o.status.success() && got == Some(TRANSACTIONS) && lost == 0 && bad == 0, || {
                format!(
                    "udp_rr --kernel through the TAP: expected {TRANSACTIONS} round trips, none lost or bad: {text}"
                )
            });
            v.note(format!(
                "udp_rr (kernel socket → TAP → fastpathd → smoltcp): {}",
                j.map_or_else(String::new, |j| j.to_string())
            ));
        }
        Err(e) => v.fail(format!("udp_rr: {e}")),
    }
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => v.note(show_ports(&list)),
        Err(e) => v.fail(e),
    }
    echo.stop(Signal::SIGINT, Duration::from_secs(3));
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    v.note(format!("{} {TEST}: {:.1} s", stamp(), t0.elapsed().as_secs_f64()));
    v.finish(&mut [&mut fpd, &mut echo]);
}
