// VLANs end to end: fastpathd with two vhost-user access ports, on VLANs 100 and 200, and a
// trunk uplink (a TAP port carrying both, tagged), behind which are two smoltcp udp_echo apps
// with the same address (and so the same MAC). The far side of the trunk is a kernel bridge
// to a second fastpathd standing in for a VLAN switch (this kernel has no 802.1Q
// sub-interfaces: CONFIG_VLAN_8021Q is off): its trunk carries VLANs 100, 200 and 300, and its
// access ports are TAP interfaces in namespaces of their own, each VLAN's with the same
// address. Each namespace's ping and kernel UDP socket reach its VLAN's app, and the first
// switch's counters show that not one frame went to the other VLAN's app; untagged and
// unknown-tag frames on the trunk are dropped and counted.
//! End to end: kernel stacks ↔ TAP access ports ↔ fastpathd ↔ 802.1Q trunk ↔ fastpathd VLANs ↔ smoltcp.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::{
    app_flags, fastpathctl_list, ip, output_text, port_entry, port_stat, require, run_with_timeout, serial, show_ports,
    spawn_fastpathd, stamp, wait_for_socket, wait_ports_up, Netns, Peers, Proc, TestDir, Verdict, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Datagrams udp_rr exchanges with each app.
const TRANSACTIONS: u64 = 200;
/// Pings to each app.
const PINGS: u64 = 5;
/// Each VLAN's kernel sub-interface, in its own namespace: the same address on both.
const NS_IP: &str = "10.77.0.1/24";
/// Both apps: the same address, so the same MAC (02:00 and the address), on two VLANs.
const APP_IP: &str = "10.77.0.2";

/// `fastpathctl --ctl CTL ARGS`.
fn fastpathctl(peers: &Peers, ctl: &Path, args: &[&str]) -> Result<String, String> {
    let o = run_with_timeout(Command::new(peers.bin("fastpathctl")).arg("--ctl").arg(ctl).args(args), SETUP_TIMEOUT)?;
    if o.status.success() {
        Ok(output_text(&o))
    } else {
        Err(format!("fastpathctl {}: {}", args.join(" "), output_text(&o)))
    }
}

/// A namespace with IPv6 off (no router solicitations or MLD reports: every frame on the
/// wire is one the test sent) and its loopback up.
fn quiet_netns(name: &str) -> Result<Netns, String> {
    let ns = Netns::new(name)?;
    let sysctl = ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"];
    let o = ns.exec(&sysctl, Duration::from_secs(5))?;
    if !o.status.success() {
        return Err(format!("{}: {}: {}", name, sysctl.join(" "), output_text(&o)));
    }
    ns.ip(&["link", "set", "lo", "up"])?;
    Ok(ns)
}

/// The growth of counter `key` of `port` from `before` to `after`.
fn grew(before: &[Value], after: &[Value], port: &str, key: &str) -> u64 {
    port_stat(after, port, key).unwrap_or(0).saturating_sub(port_stat(before, port, key).unwrap_or(0))
}

#[test]
fn vlan_apps_reach_their_vlan_across_a_trunk_and_never_the_other() {
    const TEST: &str = "vlan_apps_reach_their_vlan_across_a_trunk_and_never_the_other";
    let Some(peers) = require(TEST, &["fastpathd", "fastpathctl", "udp_echo", "udp_rr"], false) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vlan");
    let ctl = dir.join("ctl.sock");
    let id = std::process::id() % 10_000;
    let (sock_a, sock_b) = (dir.join("a.sock"), dir.join("b.sock"));
    let mut v = Verdict::new(TEST);
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0"], &[]);
    // The far switch: its own control socket and state directory, not pinned.
    let far_dir = dir.join("far");
    let far_ctl = far_dir.join("ctl.sock");
    let _ = std::fs::create_dir_all(&far_dir);
    let far_args = ["--ctl", &far_ctl.display().to_string(), "--bridge", "br0"].map(String::from);
    let mut far = Proc::spawn("fastpathd-far", &dir, &peers.bin("fastpathd"), &far_args, &[]);
    if !wait_for_socket(&ctl, SETUP_TIMEOUT) || !wait_for_socket(&far_ctl, SETUP_TIMEOUT) {
        v.abort(format!("fastpathd: expected its control socket within {SETUP_TIMEOUT:?}"), &mut [&mut fpd, &mut far]);
    }
    let (path_a, path_b) = (sock_a.display().to_string(), sock_b.display().to_string());
    let (uplink, far_uplink) = (format!("fpa{id}"), format!("fpb{id}"));
    let access = |vid: u16| format!("fk{vid}-{id}");
    let added = fastpathctl(&peers, &ctl, &["add-port", "--name", "trunk", "--tap", &uplink, "--trunk", "100,200"])
        .and_then(|_| fastpathctl(&peers, &ctl, &["add-port", "--name", "a", "--socket", &path_a, "--vlan", "100"]))
        .and_then(|_| fastpathctl(&peers, &ctl, &["add-port", "--name", "b", "--socket", &path_b, "--vlan", "200"]))
        .and_then(|_| {
            let up = ["add-port", "--name", "trunk", "--tap", &far_uplink, "--trunk", "100,200,300"];
            fastpathctl(&peers, &far_ctl, &up)
        })
        .and_then(|_| {
            for vid in [100, 200, 300] {
                let (name, tap, vlan) = (format!("k{vid}"), access(vid), vid.to_string());
                fastpathctl(&peers, &far_ctl, &["add-port", "--name", &name, "--tap", &tap, "--vlan", &vlan])?;
            }
            Ok(String::new())
        });
    if let Err(e) = added {
        v.abort(e, &mut [&mut fpd, &mut far]);
    }
    // The wire: both switches' trunk TAPs on a kernel bridge in a namespace of their own (the
    // bridge has an address: its frames go untagged). The far switch's VLAN 100 and 200 TAPs
    // each in a namespace of their own with the same address; its VLAN 300 TAP, a VLAN the
    // first switch's trunk does not carry, in the wire's namespace.
    let nss = [quiet_netns(&format!("fpv{id}")), quiet_netns(&format!("fpv{id}a")), quiet_netns(&format!("fpv{id}b"))];
    let [wire, ns100, ns200] = match nss {
        [Ok(wire), Ok(one), Ok(two)] => [wire, one, two],
        [wire, one, two] => {
            let e = [wire.err(), one.err(), two.err()].into_iter().flatten().collect::<Vec<_>>().join("; ");
            v.abort(e, &mut [&mut fpd, &mut far]);
        }
    };
    let bridge = format!("fpbr{id}");
    let setup = wire
        .ip(&["link", "add", &bridge, "type", "bridge"])
        .and_then(|_| wire.ip(&["addr", "add", "10.79.0.1/24", "dev", &bridge]))
        .and_then(|_| wire.ip(&["link", "set", &bridge, "up"]))
        .and_then(|_| {
            for tap in [&uplink, &far_uplink] {
                ip(&["link", "set", tap, "netns", &wire.0])?;
                wire.ip(&["link", "set", tap, "master", &bridge])?;
                wire.ip(&["link", "set", tap, "up"])?;
            }
            for (vid, ns, addr) in [(100, &ns100, NS_IP), (200, &ns200, NS_IP), (300, &wire, "10.78.0.1/24")] {
                ip(&["link", "set", &access(vid), "netns", &ns.0])?;
                ns.ip(&["addr", "add", addr, "dev", &access(vid)])?;
                ns.ip(&["link", "set", &access(vid), "up"])?;
            }
            Ok(String::new())
        });
    if let Err(e) = setup {
        v.abort(e, &mut [&mut fpd, &mut far]);
    }
    let echo = |name: &str, sock: &str| {
        let mut args: Vec<String> = ["--port", &format!("vu:{sock}"), "--ip", &format!("{APP_IP}/24")]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        args.extend(app_flags());
        Proc::spawn(name, &dir, &peers.bin("udp_echo"), &args, &[])
    };
    let (mut echo_a, mut echo_b) = (echo("udp_echo-100", &path_a), echo("udp_echo-200", &path_b));
    if let Err(e) = wait_ports_up(&peers, &ctl, &["a", "b"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut far, &mut echo_a, &mut echo_b]);
    }
    let list = |v: &mut Verdict| {
        fastpathctl_list(&peers, &ctl).unwrap_or_else(|e| {
            v.fail(e);
            Vec::new()
        })
    };
    let udp_rr = peers.bin("udp_rr");
    let udp_rr = udp_rr.to_str().unwrap_or("udp_rr");
    let server = format!("{APP_IP}:7");
    let count = TRANSACTIONS.to_string();
    for (ns, vid, me, other) in [(&ns100, 100, "a", "b"), (&ns200, 200, "b", "a")] {
        let before = list(&mut v);
        let pings = PINGS.to_string();
        // Generous: under a loaded machine (guests booting beside) `ip netns exec` itself
        // can take seconds to start; a ping that is answered finishes in about a second.
        match ns.exec(&["ping", "-c", &pings, "-i", "0.2", "-W", "2", APP_IP], Duration::from_mins(1)) {
            Ok(o) => {
                let text = output_text(&o);
                v.check(o.status.success() && text.contains(" 0% packet loss"), || {
                    format!("ping {APP_IP} from VLAN {vid}'s namespace: {text}")
                });
            }
            Err(e) => v.fail(format!("ping on VLAN {vid}: {e}")),
        }
        let rr = &[udp_rr, "--kernel", "--server", &server, "--count", &count, "--json", "--quiet"];
        match ns.exec(rr, Duration::from_mins(1)) {
            Ok(o) => {
                let text = output_text(&o);
                let j = text.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok());
                let field = |k: &str| j.as_ref().and_then(|j| j[k].as_u64());
                v.check(
                    o.status.success()
                        && field("count") == Some(TRANSACTIONS)
                        && field("lost") == Some(0)
                        && field("bad") == Some(0),
                    || format!("udp_rr --kernel on VLAN {vid}: expected {TRANSACTIONS} round trips, none lost or bad: {text}"),
                );
            }
            Err(e) => v.fail(format!("udp_rr on VLAN {vid}: {e}")),
        }
        let after = list(&mut v);
        // Every ping and datagram (and an ARP exchange) went to this VLAN's app and back...
        let (to_me, from_me) = (grew(&before, &after, me, "tx_packets"), grew(&before, &after, me, "rx_packets"));
        v.check(to_me > PINGS + TRANSACTIONS && from_me > PINGS + TRANSACTIONS, || {
            format!(
                "VLAN {vid}: port {me} should have carried the {PINGS} pings, {TRANSACTIONS} datagrams and an ARP \
                 exchange each way, got {to_me} to the app and {from_me} from it"
            )
        });
        // ... and not one frame to or from the other VLAN's app, at the same address and MAC.
        let (to_other, from_other) =
            (grew(&before, &after, other, "tx_packets"), grew(&before, &after, other, "rx_packets"));
        v.check(to_other == 0 && from_other == 0, || {
            format!("VLAN {vid}'s traffic reached port {other}: {to_other} frames to it, {from_other} from it")
        });
        v.note(format!(
            "VLAN {vid}: {PINGS} pings and {TRANSACTIONS} UDP round trips from the kernel behind {} reached port \
             {me} ({to_me} frames to the app, {from_me} back); port {other}: {to_other} and {from_other}",
            access(vid)
        ));
    }
    // One MAC, learned on both VLANs, behind a different port on each.
    let ports = list(&mut v);
    let app_mac = "02:00:0a:4d:00:02";
    for (port, vid) in [("a", 100), ("b", 200)] {
        let macs = port_entry(&ports, port).and_then(|p| p["macs"].as_array()).cloned().unwrap_or_default();
        let want = format!("{app_mac} vlan {vid}");
        v.check(macs.iter().any(|m| m.as_str() == Some(want.as_str())), || {
            format!("port {port}: expected {want} among the MACs learned there, got {macs:?}")
        });
    }
    // Off the trunk's VLANs: the kernel's ARP for 10.78.0.2 (tagged 300 by the far switch)
    // and 10.79.0.2 (untagged, from the bridge) are dropped at the trunk and counted; the
    // apps see none of them.
    for (what, target) in [("VLAN 300, which the trunk does not carry", "10.78.0.2"), ("untagged", "10.79.0.2")] {
        let before = list(&mut v);
        let ping = wire.exec(&["ping", "-c", "2", "-i", "0.5", "-W", "1", target], Duration::from_mins(1));
        if let Ok(o) = &ping {
            v.check(!o.status.success(), || format!("ping {target} ({what}) was answered: {}", output_text(o)));
        }
        let after = list(&mut v);
        let dropped = grew(&before, &after, "trunk", "drop_vlan");
        let reached = grew(&before, &after, "a", "tx_packets") + grew(&before, &after, "b", "tx_packets");
        v.check(dropped >= 1 && reached == 0, || {
            format!("{what}: expected the trunk to drop and count the kernel's ARP, got drop_vlan +{dropped}, {reached} frames to the apps")
        });
        v.note(format!("{what}: drop_vlan +{dropped} on the trunk, {reached} frames to the apps"));
    }
    let ports = list(&mut v);
    v.check(port_stat(&ports, "a", "drop_vlan") == Some(0) && port_stat(&ports, "b", "drop_vlan") == Some(0), || {
        format!("the access ports dropped frames for their VLAN: {}", show_ports(&ports))
    });
    v.note(show_ports(&ports));
    match fastpathctl_list(&peers, &far_ctl) {
        Ok(far_ports) => v.note(format!("far switch: {}", show_ports(&far_ports))),
        Err(e) => v.fail(e),
    }
    echo_a.stop(Signal::SIGINT, Duration::from_secs(3));
    echo_b.stop(Signal::SIGINT, Duration::from_secs(3));
    for p in [&mut fpd, &mut far] {
        let st = p.stop(Signal::SIGTERM, Duration::from_secs(5));
        v.check(st.success(), || format!("{}: expected exit status 0 after SIGTERM, got {st}", p.name()));
    }
    v.note(format!("{} {TEST}: {:.1} s", stamp(), t0.elapsed().as_secs_f64()));
    v.finish(&mut [&mut fpd, &mut far, &mut echo_a, &mut echo_b]);
}
