// Two "hosts" on one machine, each with its own fastpathd (A here, B in a network
// namespace), vxlan port over an afxdp uplink on its end of a veth, hook config and state
// dir; runc starts every app as a container through fastpath-hook (uid 1000, no
// capabilities, the MAC the hook assigns). Across the overlay: ping through a reflector,
// UDP request/response and 1 MB of TCP between smoltcp apps, a pktgen → sink --check stream.
//! Containers on two fastpathds joined by VXLAN.

mod hook_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use fastpath_oci::CONTRACT;
use hook_common::{finish, require, Fixture, Rt, RUN};
use integration::{
    fastpathctl_list_with, fastpathd_args, kind_counter, last_json_line, output_text, spawn_piped, static_bin_dir,
    vxlan_port_flag, wait_until, Netns, Proc, Veth,
};
use serde_json::Value;

const VNI: u32 = 5006;
const VTEP_A: &str = "10.203.0.1";
const VTEP_B: &str = "10.203.0.2";
/// The underlay's MTU: a 1514-byte inner frame + 36 fits.
const MTU: &str = "1600";
/// Frames of the pktgen → sink stream, and its rate.
const FRAMES: u64 = 20_000;
const RATE: u64 = 20_000;
const PINGS: u64 = 1_000;
const TRANSACTIONS: u64 = 500;
const TCP_BYTES: u64 = 1_000_000;
/// The apps' common flags (the port and the MAC come from the container's config.json).
const APP: &str = "--idle-sleep-us 20 --queue-size 1024 --json --quiet --link-timeout 30";
/// How long the switches get to come up and find each other.
const SETUP: Duration = Duration::from_secs(30);

/// Creates the veth pair, `b` in `ns`, both up with the underlay's MTU.
fn wire(ns: &Netns, a: &str, b: &str) -> Veth {
    integration::underlay(ns, a, b, MTU).unwrap_or_else(|e| panic!("the underlay's veth: {e}"))
}

/// Static examples into a host's rootfs /bin (not through busybox's applet links).
fn add_static(fx: &Fixture, names: &[&str]) {
    for n in names {
        let src = static_bin_dir().join(n);
        assert!(src.is_file(), "{} is missing (cargo xtask test builds the static examples)", src.display());
        let dst = fx.rootfs.join("bin").join(n);
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Starts host `fx`'s fastpathd on CPU `core` with a vxlan port over `ifname` (in `ns`
/// when given), its control socket and state directory the hook's.
fn start_switch(fx: &mut Fixture, ns: Option<&Netns>, core: &str, ifname: &str, local: &str, remote: &str) {
    let mut args = fastpathd_args(&fx.ctl, &["br0"], &[vxlan_port_flag("vx", ifname, VNI, local, &[remote])]);
    args[1] = core.into();
    args.extend(["--state-dir".into(), fx.state.display().to_string()]);
    let sw = match ns {
        Some(ns) => {
            let mut a = vec!["netns".into(), "exec".into(), ns.0.clone(), fx.peers.fastpathd.display().to_string()];
            a.extend(args);
            Proc::spawn("fastpathd-b", &fx.dir, Path::new("ip"), &a, &[])
        }
        None => Proc::spawn("fastpathd-a", &fx.dir, &fx.peers.fastpathd, &args, &[]),
    };
    fx.fastpathd = Some(sw);
}

/// Runs `script` in a container on host `fx` (the contract's annotations: a core, hugepages,
/// a vhost-user port on br0).
fn container(fx: &mut Fixture, name: &str, script: &str) -> Child {
    spawn_piped(&mut fx.run_cmd(name, script, &CONTRACT, None))
}

/// Waits until host `fx` has `n` ports up (the vxlan port and its containers'); else fails
/// with container `name`'s output.
fn wait_up(fx: &Fixture, n: usize, name: &str, child: &mut Option<Child>) {
    let up = wait_until(SETUP, || {
        fastpathctl_list_with(&fx.peers.fastpathctl, &fx.ctl)
            .is_ok_and(|l| l.iter().filter(|p| p["stats"]["link_up"] == true).count() >= n)
    });
    if !up {
        let out = child.take().map(|c| finish(fx, name, c, Duration::ZERO));
        panic!(
            "{name}: expected {n} ports up on {}: {:?}\n{name} container: {}\nhook log: {}",
            fx.ctl.display(),
            fx.list(),
            out.as_ref().map_or_else(String::new, output_text),
            fx.hook_log()
        );
    }
}

/// What a container prints of itself before its app: its uid and effective capabilities.
const WHO: &str = "echo UID=$(id -u); echo CAPEFF=$(grep '^CapEff:' /proc/self/status | tr -d ' \\t' | cut -d: -f2)";

/// The container ran as uid 1000 with no capabilities.
fn unprivileged(who: &str, o: &Output) {
    let kv = hook_common::kv(&String::from_utf8_lossy(&o.stdout));
    assert!(
        kv.get("UID").map(String::as_str) == Some("1000")
            && kv.get("CAPEFF").map(String::as_str) == Some("0000000000000000"),
        "{who}: expected uid 1000 and no capabilities: {kv:?}"
    );
}

/// A container's JSON result, or a panic showing its output.
fn result(who: &str, o: &Output) -> Value {
    assert!(o.status.success(), "{who} container: {}", output_text(o));
    last_json_line(&String::from_utf8_lossy(&o.stdout))
        .unwrap_or_else(|| panic!("{who}: no JSON result: {}", output_text(o)))
}

fn int(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

#[test]
fn containers_on_two_fastpathds_joined_by_vxlan_ping_udp_tcp_and_stream() {
    const TEST: &str = "containers_on_two_fastpathds_joined_by_vxlan_ping_udp_tcp_and_stream";
    let Some(peers) = require(TEST, Some("runc")) else { return };
    let t0 = Instant::now();
    // Host A: the fixture's world, its fastpathd replaced by one with the overlay.
    let mut a = Fixture::new(&peers, Rt::Runc, "0-1");
    a.stop_switch();
    let mut b = a.second_host("0-1");
    let apps = ["pktgen", "sink", "ping", "echo", "udp_echo", "udp_rr", "tcp_echo"];
    add_static(&a, &apps);
    add_static(&b, &apps);
    let id = std::process::id() % 100_000;
    let ns = Netns::new(&format!("fvc{id}")).unwrap_or_else(|e| panic!("{e}"));
    let (a_if, b_if) = (format!("fvc{id}a"), format!("fvc{id}b"));
    let _veth = wire(&ns, &a_if, &b_if);
    start_switch(&mut a, None, "0", &a_if, VTEP_A, VTEP_B);
    start_switch(&mut b, Some(&ns), "1", &b_if, VTEP_B, VTEP_A);
    for fx in [&a, &b] {
        wait_up(fx, 1, "the vxlan port", &mut None);
    }
    let heard = wait_until(SETUP, || {
        [&a, &b].iter().all(|fx| {
            fastpathctl_list_with(&fx.peers.fastpathctl, &fx.ctl)
                .is_ok_and(|l| kind_counter(&l, "vx", "arp_in").is_some_and(|n| n > 0))
        })
    });
    assert!(heard, "expected each VTEP to hear the other's ARP: A {:?} B {:?}", a.list(), b.list());

    // 1. ping (A) through a reflector (B).
    // Absolute paths: busybox sh would run its own echo (and ping) applet.
    let mut echo = Some(container(&mut b, "vcecho", &format!("exec /bin/echo {APP}")));
    wait_up(&b, 2, "vcecho", &mut echo);
    let ping = container(&mut a, "vcping", &format!("{WHO}; exec /bin/ping --count {PINGS} --timeout-ms 500 {APP}"));
    let ping_out = finish(&a, "vcping", ping, RUN);
    unprivileged("ping (A)", &ping_out);
    let pj = result("ping", &ping_out);
    assert!(int(&pj, "count") == Some(PINGS) && int(&pj, "lost") == Some(0), "ping A → echo B: {pj}");
    let _ = finish(&b, "vcecho", echo.take().expect("running"), Duration::ZERO);

    // 2. UDP request/response between smoltcp apps.
    let mut uecho =
        Some(container(&mut b, "vcuecho", &format!("exec udp_echo --ip 192.168.203.2/24 --listen 7 {APP}")));
    wait_up(&b, 2, "vcuecho", &mut uecho);
    let rr = format!("exec udp_rr --ip 192.168.203.1/24 --server 192.168.203.2:7 --count {TRANSACTIONS} {APP}");
    let rr = container(&mut a, "vcudprr", &rr);
    let rj = result("udp_rr", &finish(&a, "vcudprr", rr, RUN));
    assert!(
        int(&rj, "count") == Some(TRANSACTIONS) && int(&rj, "lost") == Some(0) && int(&rj, "bad") == Some(0),
        "udp_rr A → udp_echo B: expected {TRANSACTIONS} round trips, none lost or bad: {rj}"
    );
    let _ = finish(&b, "vcuecho", uecho.take().expect("running"), Duration::ZERO);

    // 3. 1 MB over TCP, echoed and checked byte for byte by the client.
    let mut srv =
        Some(container(&mut b, "vctcps", &format!("exec tcp_echo --ip 192.168.203.12/24 --listen 7 --conns 1 {APP}")));
    wait_up(&b, 2, "vctcps", &mut srv);
    let cli = format!("exec tcp_echo --ip 192.168.203.11/24 --connect 192.168.203.12:7 --bytes {TCP_BYTES} {APP}");
    let cli = container(&mut a, "vctcpc", &cli);
    let cj = result("tcp_echo client", &finish(&a, "vctcpc", cli, RUN));
    let sj = result("tcp_echo server", &finish(&b, "vctcps", srv.take().expect("running"), RUN));
    assert!(
        cj.get("ok").and_then(Value::as_bool) == Some(true)
            && int(&cj, "received") == Some(TCP_BYTES)
            && int(&cj, "wrong") == Some(0),
        "tcp_echo client A → server B: expected ok, {TCP_BYTES} received, 0 wrong: {cj}"
    );
    assert!(int(&sj, "echoed") == Some(TCP_BYTES), "tcp_echo server B: {sj}");

    // 4. A stream: every frame intact and in order.
    let sink = format!("{WHO}; exec sink --check --count {FRAMES} --idle-exit 5 {APP}");
    let mut sink = Some(container(&mut b, "vcsink", &sink));
    wait_up(&b, 2, "vcsink", &mut sink);
    let gen = format!("exec pktgen --count {FRAMES} --rate {RATE} --size 64 {APP}");
    let gen = container(&mut a, "vcgen", &gen);
    let gj = result("pktgen", &finish(&a, "vcgen", gen, RUN));
    let sink_out = finish(&b, "vcsink", sink.take().expect("running"), RUN);
    unprivileged("sink (B)", &sink_out);
    let kj = result("sink", &sink_out);
    assert_eq!(int(&gj, "sent"), Some(FRAMES), "pktgen A: {gj}");
    integration::check_sink(Some(&kj), FRAMES).unwrap_or_else(|e| panic!("pktgen A → sink B: {e}"));
    eprintln!("{TEST}: ping {pj}, udp_rr {rj}, tcp {cj}, stream {kj} in {:.1} s", t0.elapsed().as_secs_f64());
}
