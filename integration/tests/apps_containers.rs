// The apps in containers started by runc through fastpath-hook, on the fixture's fastpathd bridge:
// the C examples on the library the hook injects (fastpath.io/inject) against Rust examples, and
// the smoltcp UDP/TCP examples; every app finds its port in /run/fastpath/config.json.
//! Apps in containers through the hook: C ABI ↔ Rust, smoltcp ↔ smoltcp.

mod apps_common;
mod hook_common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use apps_common::{build_c, c_toolchain, int, show, Link, INJECTED_LIB_DIR};
use fastpath_oci::CONTRACT;
use hook_common::{add_static, finish, install, require, wait_ports_up, Fixture, Peers, Rt, RUN};
use integration::{bin_dir, check_sink, last_json_line, output_text, spawn_piped, workspace_dir, TestDir};
use serde_json::Value;

/// Frames the C sender sends to the Rust sink.
const FRAMES: u64 = 20_000;
/// Round trips of the Rust ping through the C echo (ping adds a tenth as warm-up).
const PINGS: u64 = 2_000;
/// Transactions of udp_rr against udp_echo.
const TRANSACTIONS: u64 = 2_000;
/// Bytes the TCP client sends and expects back.
const TCP_BYTES: u64 = 1_000_000;
/// The Rust apps' common flags (the port comes from the container's config.json).
const APP: &str = "--idle-sleep-us 20 --queue-size 1024 --json --quiet --link-timeout 30";

/// The fixture's annotations plus `extra`.
fn annotations(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut a = CONTRACT.to_vec();
    a.extend_from_slice(extra);
    a
}

/// The shared objects (and the loader) `files` need, as `ldd` resolves them on this host.
fn runtime_libs(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for f in files {
        let o = Command::new("ldd").arg(f).output().unwrap();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                let p = PathBuf::from(p);
                if !libs.contains(&p) {
                    libs.push(p);
                }
            }
        }
    }
    libs
}

/// The fixture's rootfs gets dynamically linked C programs: the C library and loader of
/// this host (not libfastpath_net: that comes from the hook's inject mount).
fn add_c_runtime(fx: &Fixture, programs: &[PathBuf]) {
    let mut files = programs.to_vec();
    files.push(bin_dir().join("libfastpath_net.so"));
    for lib in runtime_libs(&files) {
        if !lib.to_string_lossy().contains("libfastpath_net") {
            install(&lib, &fx.rootfs, &lib.display().to_string());
        }
    }
    for p in programs {
        let name = p.file_name().unwrap().to_string_lossy().replace("-injected", "");
        install(p, &fx.rootfs, &format!("bin/{name}"));
    }
}

/// The hook's lib_dir gets the real library and header (the fixture has stand-ins).
fn provide_library(fx: &Fixture) {
    let lib = fx.dir.join("lib");
    std::fs::copy(bin_dir().join("libfastpath_net.so"), lib.join("libfastpath_net.so")).unwrap();
    let h = workspace_dir().join("netlib/ffi/include/fastpath_net.h");
    std::fs::copy(h, lib.join("fastpath_net.h")).unwrap();
}

/// A container's JSON result, or a panic showing its output.
fn result(who: &str, o: &Output) -> Value {
    assert!(o.status.success(), "{who} container: {}", output_text(o));
    last_json_line(&String::from_utf8_lossy(&o.stdout))
        .unwrap_or_else(|| panic!("{who}: no JSON result: {}", output_text(o)))
}

fn c_peers(test: &str) -> Option<Peers> {
    let peers = require(test, Some("runc"))?;
    c_toolchain(test).then_some(peers)
}

#[test]
fn c_sender_in_container_to_rust_sink_in_container() {
    const TEST: &str = "c_sender_in_container_to_rust_sink_in_container";
    let Some(peers) = c_peers(TEST) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    let build = TestDir::new("ccont");
    let fp_send = build_c(&build, "fp_send", Link::Injected).unwrap_or_else(|e| panic!("{e}"));
    provide_library(&fx);
    add_c_runtime(&fx, &[fp_send]);

    let sink = format!("exec sink --check --count {FRAMES} --idle-exit 3 {APP}");
    let mut sink_child = Some(spawn_piped(&mut fx.run_cmd("fpsink", &sink, &CONTRACT, None)));
    wait_ports_up(&fx, 1, "fpsink", &mut sink_child);
    let sink_child = sink_child.expect("running");
    // The sender proves the library is the injected one, then opens its port from config.json.
    let send = format!(
        "echo LIB=$(ls {INJECTED_LIB_DIR}); echo CAPEFF=$(grep '^CapEff:' /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
         exec fp_send discover {FRAMES} 50000"
    );
    let send_child =
        spawn_piped(&mut fx.run_cmd("fpcsend", &send, &annotations(&[("fastpath.io/inject", "true")]), None));
    let send_out = finish(&fx, "fpcsend", send_child, RUN);
    let sink_out = finish(&fx, "fpsink", sink_child, Duration::from_secs(20));
    let sj = result("fp_send", &send_out);
    let kj = result("sink", &sink_out);
    let stdout = String::from_utf8_lossy(&send_out.stdout);
    assert!(
        stdout.contains("LIB=fastpath_net.h libfastpath_net.so"),
        "fp_send container: injected library not seen: {stdout}"
    );
    assert!(stdout.contains("CAPEFF=0000000000000000"), "fp_send container: expected no capabilities: {stdout}");
    assert_eq!(int(Some(&sj), "sent"), Some(FRAMES), "fp_send: {}", show(Some(&sj)));
    assert_eq!(int(Some(&sj), "held"), Some(0), "fp_send: {}", show(Some(&sj)));
    check_sink(Some(&kj), FRAMES).unwrap_or_else(|e| panic!("{e}"));
    fx.assert_released();
    fx.assert_clean(&[]);
    eprintln!("{TEST}: fp_send {sj} sink {kj} in {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn rust_ping_in_container_through_c_echo_in_container() {
    const TEST: &str = "rust_ping_in_container_through_c_echo_in_container";
    let Some(peers) = c_peers(TEST) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    let build = TestDir::new("cecont");
    let fp_echo = build_c(&build, "fp_echo", Link::Injected).unwrap_or_else(|e| panic!("{e}"));
    provide_library(&fx);
    add_c_runtime(&fx, &[fp_echo]);
    add_static(&fx, &["ping"]).unwrap_or_else(|e| panic!("{e}"));

    let mut echo_child = Some(spawn_piped(&mut fx.run_cmd(
        "fpcecho",
        &format!("exec fp_echo discover {}", PINGS + PINGS / 10),
        &annotations(&[("fastpath.io/inject", "true")]),
        None,
    )));
    wait_ports_up(&fx, 1, "fpcecho", &mut echo_child);
    let echo_child = echo_child.expect("running");
    // An absolute path: busybox sh would run its own ping applet.
    let ping = format!("exec /bin/ping --count {PINGS} {APP}");
    let ping_child = spawn_piped(&mut fx.run_cmd("fpping", &ping, &CONTRACT, None));
    let ping_out = finish(&fx, "fpping", ping_child, RUN);
    let echo_out = finish(&fx, "fpcecho", echo_child, Duration::from_secs(10));
    let pj = result("ping", &ping_out);
    let ej = result("fp_echo", &echo_out);
    assert!(int(Some(&pj), "count") == Some(PINGS) && int(Some(&pj), "lost") == Some(0), "ping: {pj}");
    assert!(int(Some(&ej), "echoed").is_some_and(|n| n >= PINGS) && int(Some(&ej), "held") == Some(0), "fp_echo: {ej}");
    fx.assert_released();
    fx.assert_clean(&[]);
    eprintln!("{TEST}: ping {pj} fp_echo {ej} in {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn smoltcp_udp_and_tcp_between_containers() {
    const TEST: &str = "smoltcp_udp_and_tcp_between_containers";
    let Some(peers) = require(TEST, Some("runc")) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    add_static(&fx, &["udp_echo", "udp_rr", "tcp_echo"]).unwrap_or_else(|e| panic!("{e}"));

    // UDP: echo server at 10.0.0.2, request/response client at 10.0.0.1.
    let mut echo_child = Some(spawn_piped(&mut fx.run_cmd(
        "fpudpecho",
        &format!("exec udp_echo --ip 10.0.0.2/24 --listen 7 {APP}"),
        &CONTRACT,
        None,
    )));
    wait_ports_up(&fx, 1, "fpudpecho", &mut echo_child);
    let echo_child = echo_child.expect("running");
    let rr = format!("exec udp_rr --ip 10.0.0.1/24 --server 10.0.0.2:7 --count {TRANSACTIONS} {APP}");
    let rr_child = spawn_piped(&mut fx.run_cmd("fpudprr", &rr, &CONTRACT, None));
    let rr_out = finish(&fx, "fpudprr", rr_child, RUN);
    // The server runs until told to stop.
    let echo_out = finish(&fx, "fpudpecho", echo_child, Duration::ZERO);
    let rj = result("udp_rr", &rr_out);
    let ej = result("udp_echo", &echo_out);
    assert!(
        int(Some(&rj), "count") == Some(TRANSACTIONS)
            && int(Some(&rj), "lost") == Some(0)
            && int(Some(&rj), "bad") == Some(0),
        "udp_rr: expected count {TRANSACTIONS}, lost 0, bad 0: {rj}"
    );
    assert!(int(Some(&ej), "echoed").is_some_and(|n| n >= TRANSACTIONS), "udp_echo: {ej}");
    fx.assert_released();

    // TCP: server at 10.0.1.2 (exits after one connection), checking client at 10.0.1.1.
    let server = format!("exec tcp_echo --ip 10.0.1.2/24 --listen 7 --conns 1 {APP}");
    let mut server_child = Some(spawn_piped(&mut fx.run_cmd("fptcpsrv", &server, &CONTRACT, None)));
    wait_ports_up(&fx, 1, "fptcpsrv", &mut server_child);
    let server_child = server_child.expect("running");
    let client = format!("exec tcp_echo --ip 10.0.1.1/24 --connect 10.0.1.2:7 --bytes {TCP_BYTES} {APP}");
    let client_child = spawn_piped(&mut fx.run_cmd("fptcpcli", &client, &CONTRACT, None));
    let client_out = finish(&fx, "fptcpcli", client_child, RUN);
    let server_out = finish(&fx, "fptcpsrv", server_child, Duration::from_secs(10));
    let cj = result("tcp_echo client", &client_out);
    let sj = result("tcp_echo server", &server_out);
    assert!(
        cj.get("ok").and_then(Value::as_bool) == Some(true)
            && int(Some(&cj), "received") == Some(TCP_BYTES)
            && int(Some(&cj), "wrong") == Some(0),
        "tcp_echo client: expected ok, received {TCP_BYTES}, wrong 0: {cj}"
    );
    assert!(int(Some(&sj), "echoed") == Some(TCP_BYTES) && int(Some(&sj), "conns") == Some(1), "tcp_echo server: {sj}");
    fx.assert_released();
    fx.assert_clean(&[]);
    eprintln!("{TEST}: udp_rr {rj} tcp client {cj} in {:.1} s", t0.elapsed().as_secs_f64());
}
