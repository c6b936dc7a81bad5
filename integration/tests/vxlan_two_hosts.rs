// Two "hosts" on one machine: two fastpathds, one in the root network namespace and one in
// another, each with a vxlan port over an afxdp uplink on its end of a veth pair (MTU 1600,
// so a full inner frame fits), and apps on vhost ports of each. Across the overlay: a
// pktgen → sink --check stream, ping through a reflector, UDP request/response, 1 MB over
// TCP; then the veth is deleted and re-created: the ports fault, recover, and UDP goes on.
//! Two fastpathds joined by VXLAN.

use std::path::Path;
use std::time::{Duration, Instant};

use integration::{
    app_flags, check_udp_rr, fastpathctl_list, fastpathd_args, fastpathd_port, field, finish_transfer, kind_counter,
    last_json_line, link_up, output_text, pktgen_args, port_stat, require, serial, show_ports, sink_args,
    smol_app_args, spawn_fastpathd, stamp, vxlan_port_flag, wait_for_socket, wait_ports_up, wait_until, Netns, Peers,
    Proc, TestDir, Verdict, Veth, FRAMES, RR_TIMEOUT, SETUP_TIMEOUT, VU_LINK_UP,
};
use nix::sys::signal::Signal;

const VNI: u32 = 5005;
const VTEP_A: &str = "10.202.0.1";
const VTEP_B: &str = "10.202.0.2";
/// The underlay's MTU: a 1514-byte inner frame + 36 fits.
const MTU: &str = "1600";
const PINGS: u64 = 1000;

/// Creates the veth pair, `b` in `ns`, both up with the underlay's MTU.
fn wire(ns: &Netns, a: &str, b: &str) -> Result<Veth, String> {
    integration::underlay(ns, a, b, MTU)
}

fn run(peers: &Peers, bin: &str, args: &[String], t: Duration) -> Result<std::process::Output, String> {
    integration::run_with_timeout(std::process::Command::new(peers.bin(bin)).args(args), t)
}

#[test]
fn two_fastpathds_joined_by_vxlan_carry_a_stream_ping_udp_and_tcp_and_survive_a_recreated_uplink() {
    const TEST: &str = "two_fastpathds_joined_by_vxlan_carry_a_stream_ping_udp_and_tcp_and_survive_a_recreated_uplink";
    let bins = ["fastpathd", "fastpathctl", "pktgen", "sink", "ping", "echo", "udp_echo", "udp_rr", "tcp_echo"];
    let Some(peers) = require(TEST, &bins, false) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vxlan-2h");
    // Each switch keeps its state file by its control socket: apart.
    let (ctl_a, ctl_b) = (dir.join("a/ctl.sock"), dir.join("b/ctl.sock"));
    for d in ["a", "b"] {
        let _ = std::fs::create_dir_all(dir.join(d));
    }
    let s = |n: &str| dir.join(&format!("{n}.sock"));
    let mut v = Verdict::new(TEST);
    let id = std::process::id() % 100_000;
    let ns = match Netns::new(&format!("fvt{id}")) {
        Ok(n) => n,
        Err(e) => v.abort(e, &mut []),
    };
    let (a_if, b_if) = (format!("fvt{id}a"), format!("fvt{id}b"));
    let mut veth = match wire(&ns, &a_if, &b_if) {
        Ok(x) => Some(x),
        Err(e) => v.abort(e, &mut []),
    };
    // Host A here; host B's fastpathd inside the namespace, on the other core.
    let ports_a = [
        vxlan_port_flag("vx", &a_if, VNI, VTEP_A, &[VTEP_B]),
        fastpathd_port("br0", "gen", "vhost", &s("gen")),
        fastpathd_port("br0", "ping", "vhost", &s("ping")),
        fastpathd_port("br0", "rr", "vhost", &s("rr")),
        fastpathd_port("br0", "tcpc", "vhost", &s("tcpc")),
    ];
    let ports_b = [
        vxlan_port_flag("vx", &b_if, VNI, VTEP_B, &[VTEP_A]),
        fastpathd_port("br0", "sink", "vhost", &s("sink")),
        fastpathd_port("br0", "echo", "vhost", &s("echo")),
        fastpathd_port("br0", "uecho", "vhost", &s("uecho")),
        fastpathd_port("br0", "tcps", "vhost", &s("tcps")),
    ];
    let mut fpd_a = spawn_fastpathd("fastpathd-a", &peers, &dir, &ctl_a, &["br0"], &ports_a);
    let mut args_b =
        vec!["netns".to_string(), "exec".into(), ns.0.clone(), peers.bin("fastpathd").display().to_string()];
    args_b
        .extend(fastpathd_args(&ctl_b, &["br0"], &ports_b).into_iter().map(|a| if a == "0" { "1".into() } else { a }));
    let mut fpd_b = Proc::spawn("fastpathd-b", &dir, Path::new("ip"), &args_b, &[]);
    if !(wait_for_socket(&s("tcpc"), SETUP_TIMEOUT) && wait_for_socket(&s("tcps"), SETUP_TIMEOUT)) {
        v.abort("fastpathd A and B: expected their vhost sockets", &mut [&mut fpd_a, &mut fpd_b]);
    }
    for ctl in [&ctl_a, &ctl_b] {
        if let Err(e) = wait_ports_up(&peers, ctl, &["vx"], SETUP_TIMEOUT) {
            v.abort(e, &mut [&mut fpd_a, &mut fpd_b]);
        }
    }
    // The VTEPs find each other's MAC with ARP (a frame before that is dropped, counted).
    let resolved = wait_until(SETUP_TIMEOUT, || {
        [&ctl_a, &ctl_b]
            .iter()
            .all(|c| fastpathctl_list(&peers, c).is_ok_and(|l| kind_counter(&l, "vx", "arp_in").is_some_and(|n| n > 0)))
    });
    v.check(resolved, || "expected each VTEP to hear the other's ARP".into());
    // 1. Ping through a reflector on B.
    let mut echo = Proc::spawn("echo", &dir, &peers.bin("echo"), &smol_port(&s("echo")), &[]);
    if echo.wait_for_stderr(VU_LINK_UP, SETUP_TIMEOUT) {
        let mut pa = smol_port(&s("ping"));
        pa.extend(["--count".into(), PINGS.to_string(), "--timeout-ms".into(), "500".into()]);
        match run(&peers, "ping", &pa, RR_TIMEOUT) {
            Ok(o) => {
                let j = last_json_line(&output_text(&o));
                v.check(
                    j.as_ref().and_then(|j| field(j, "count")) == Some(PINGS)
                        && j.as_ref().and_then(|j| field(j, "lost")) == Some(0),
                    || format!("ping (A) → echo (B): expected {PINGS} round trips, none lost: {}", output_text(&o)),
                );
                v.note(format!("ping A → B: {}", j.map_or_else(String::new, |j| j.to_string())));
            }
            Err(e) => v.fail(format!("ping: {e}")),
        }
    } else {
        v.fail("echo: expected its link up");
    }
    echo.stop(Signal::SIGINT, Duration::from_secs(3));
    // 2. A stream: pktgen on A → sink --check on B, every frame intact and in order.
    let mut sink =
        Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("vu:{}", s("sink").display()), FRAMES), &[]);
    if sink.wait_for_stderr(VU_LINK_UP, SETUP_TIMEOUT) {
        let mut pktgen = Proc::spawn(
            "pktgen",
            &dir,
            &peers.bin("pktgen"),
            &pktgen_args(&format!("vu:{}", s("gen").display()), FRAMES),
            &[],
        );
        finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES);
        v.note(format!("pktgen (A) → VXLAN → sink --check (B): {FRAMES} frames"));
    } else {
        v.fail(format!("sink: expected its link up within {SETUP_TIMEOUT:?}"));
        sink.kill();
    }
    // 3. UDP and TCP between smoltcp apps.
    let mut uecho = Proc::spawn(
        "udp_echo",
        &dir,
        &peers.bin("udp_echo"),
        &smol_app_args(&s("uecho"), "192.168.202.2", "02:00:00:ca:00:02", &[]),
        &[],
    );
    let mut tcps = Proc::spawn(
        "tcp_echo-server",
        &dir,
        &peers.bin("tcp_echo"),
        &smol_app_args(&s("tcps"), "192.168.202.12", "02:00:00:ca:00:12", &["--listen", "7"]),
        &[],
    );
    if let Err(e) = wait_ports_up(&peers, &ctl_b, &["uecho", "tcps"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd_a, &mut fpd_b, &mut uecho, &mut tcps]);
    }
    let rr = |n: u64| {
        let a = smol_app_args(
            &s("rr"),
            "192.168.202.1",
            "02:00:00:ca:00:01",
            &["--server", "192.168.202.2:7", "--count", &n.to_string()],
        );
        run(&peers, "udp_rr", &a, RR_TIMEOUT)
    };
    check_udp_rr(&mut v, "udp_rr (A) → udp_echo (B)", rr(500), 500);
    let tcp_args = smol_app_args(
        &s("tcpc"),
        "192.168.202.11",
        "02:00:00:ca:00:11",
        &["--connect", "192.168.202.12:7", "--bytes", "1000000"],
    );
    match run(&peers, "tcp_echo", &tcp_args, RR_TIMEOUT) {
        Ok(o) => {
            let text = output_text(&o);
            v.check(o.status.success(), || format!("tcp_echo client (A) → server (B), 1 MB: {text}"));
            v.note(format!("tcp 1 MB A → B: {}", last_json_line(&text).map_or_else(String::new, |j| j.to_string())));
        }
        Err(e) => v.fail(format!("tcp_echo client: {e}")),
    }
    // 4. The uplink deleted and re-created: both vxlan ports fault, come back, and carry UDP.
    drop(veth.take());
    let down = wait_until(SETUP_TIMEOUT, || {
        [&ctl_a, &ctl_b].iter().all(|c| fastpathctl_list(&peers, c).is_ok_and(|l| link_up(&l, "vx") == Some(false)))
    });
    v.check(down, || "after deleting the veth: expected both vxlan ports down".into());
    match wire(&ns, &a_if, &b_if) {
        Ok(x) => veth = Some(x),
        Err(e) => v.fail(format!("re-creating the veth: {e}")),
    }
    for ctl in [&ctl_a, &ctl_b] {
        if let Err(e) = wait_ports_up(&peers, ctl, &["vx"], SETUP_TIMEOUT) {
            v.fail(format!("after re-creating the veth: {e}"));
        }
        let resets = fastpathctl_list(&peers, ctl).ok().and_then(|l| port_stat(&l, "vx", "resets"));
        v.check(resets.is_some_and(|r| r >= 1), || format!("vx: expected a reset counted, got {resets:?}"));
    }
    check_udp_rr(&mut v, "after the uplink came back: udp_rr (A) → udp_echo (B)", rr(200), 200);
    for (name, ctl) in [("A", &ctl_a), ("B", &ctl_b)] {
        match fastpathctl_list(&peers, ctl) {
            Ok(list) => v.note(format!("{name}: {}", show_ports(&list))),
            Err(e) => v.fail(e),
        }
    }
    drop(veth);
    uecho.stop(Signal::SIGINT, Duration::from_secs(3));
    tcps.stop(Signal::SIGINT, Duration::from_secs(3));
    for f in [&mut fpd_a, &mut fpd_b] {
        let st = f.stop(Signal::SIGTERM, Duration::from_secs(5));
        v.check(st.success(), || format!("{}: expected exit status 0 after SIGTERM, got {st}", f.name()));
    }
    v.note(format!("{} {TEST}: {:.1} s", stamp(), t0.elapsed().as_secs_f64()));
    v.finish(&mut [&mut fpd_a, &mut fpd_b, &mut uecho, &mut tcps]);
}

/// An L2 app's arguments on vhost socket `sock`.
fn smol_port(sock: &Path) -> Vec<String> {
    let mut a = vec!["--port".to_string(), format!("vu:{}", sock.display())];
    a.extend(app_flags());
    a
}
