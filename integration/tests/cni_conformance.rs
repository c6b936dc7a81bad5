// fastpath-cni run as a runtime runs it (CNI_* variables, the config on stdin) against a real
// fastpathd: ADD/CHECK/DEL, DEL twice, DEL after a failed ADD, CHECK without ADD, the error
// objects and their codes, IPAM delegated to host-local; the ledger and ports back to baseline.
//! CNI conformance: the spec's expectations, checked against a real fastpathd.

mod cni_common;
mod hook_common;

use std::path::Path;
use std::time::Duration;

use cni_common::{attach_env, call, files_under, net_conf, plugin, NETWORK};
use hook_common::{require, Fixture, Rt};
use integration::{bin_dir, is_socket, skip_or_fail, Netns, Proc};
use serde_json::{json, Value};

const TEST: &str = "cni_add_check_del_against_fastpathd";

/// A bad call: (environment, stdin, the code, how the message starts).
type Case<'a> = (Vec<(&'a str, &'a str)>, String, u64, &'a str);

#[test]
fn cni_add_check_del_against_fastpathd() {
    let Some(peers) = require(TEST, None) else { return };
    if !plugin().is_file() {
        skip_or_fail(TEST, &format!("{} is missing (cargo build --release -p fastpath-cni)", plugin().display()));
        return;
    }
    let mut fx = Fixture::new(&peers, Rt::Runc, "1");
    let socks = fx.dir.join("cni");
    let devinfo = fx.dir.join("devinfo");
    let _ns = Netns::new("fpcni-conf").unwrap_or_else(|e| panic!("{e}"));
    let netns = "/run/netns/fpcni-conf";
    let conf = net_conf("1.0.0", "br0", &socks, &devinfo, &fx.config, &json!({ "vlan": 100, "mtu": 1500 }));
    let text = conf.to_string();
    let (base_ports, base_entries) = (fx.ports(), fx.entries());
    let id = "c0ffee01";
    let sock = socks.join(id).join("net1.sock");
    let info_file = devinfo.join(format!("{NETWORK}-{id}-net1-device.json"));

    let version = call(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert!(version.ok, "{}", version.text);
    assert_eq!(version.out["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));

    // ADD: the result, the port, the ledger entry, the socket, the device-info file.
    let add = call(&attach_env("ADD", id, "net1", netns), &text);
    assert!(add.ok, "ADD: {}", add.text);
    let r = &add.out;
    assert_eq!(r["cniVersion"], "1.0.0");
    let iface = &r["interfaces"][0];
    assert_eq!((iface["name"].as_str(), iface["sandbox"].as_str()), (Some("net1"), Some(netns)));
    assert_eq!(iface["socketPath"], json!(sock));
    let mac = iface["mac"].as_str().unwrap_or_default().to_string();
    assert!(mac.starts_with("02:") && mac.len() == 17, "{}", add.text);
    assert_eq!((r["ips"].clone(), r["dns"].clone()), (json!([]), json!({})));
    let port = format!("fp-{id}-net1");
    let list = fx.list();
    let p = list.iter().find(|p| p["name"] == port.as_str()).unwrap_or_else(|| panic!("no port {port}: {list:?}"));
    assert_eq!((p["bridge"].as_str(), p["vlan"].as_u64()), (Some("br0"), Some(100)));
    assert!(is_socket(&sock), "{} is not a socket", sock.display());
    let entry = &fx.entries()[&format!("{id}/net1")];
    assert_eq!((entry["owner"].as_str(), entry["status"].as_str()), (Some("cni"), Some("ready")));
    assert_eq!(entry["cni"]["pod_name"], "pod1");
    assert_eq!(entry["ports"][0]["mac"], mac.as_str());
    let info: Value = serde_json::from_str(&std::fs::read_to_string(&info_file).unwrap()).unwrap();
    assert_eq!(
        info,
        json!({ "type": "vhost-user", "version": "1.1.0", "vhost-user": { "mode": "client", "path": sock } })
    );

    // CHECK: the link is down until an app drives the port, then up.
    let chk = call(&attach_env("CHECK", id, "net1", netns), &text);
    assert_eq!(chk.code(), 104, "{}", chk.text);
    assert!(chk.msg().contains("link down"), "{}", chk.text);
    let vu = format!("vu:{}", sock.display());
    let args = ["--port", &vu, "--idle-sleep-us", "50", "--link-timeout", "10", "--json", "--quiet"];
    let mut sink = Proc::spawn("sink", &fx.dir, &bin_dir().join("sink"), &args, &[]);
    assert!(fx.wait_links_up(1, Duration::from_secs(15)), "the sink did not connect: {}", sink.describe(20, 5));
    let chk = call(&attach_env("CHECK", id, "net1", netns), &text);
    assert!(chk.ok, "CHECK with the link up: {}", chk.text);
    // As runtimes call it: with ADD's result as prevResult.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = add.out.clone();
    let chk = call(&attach_env("CHECK", id, "net1", netns), &with_prev.to_string());
    assert!(chk.ok, "CHECK with prevResult: {}", chk.text);
    sink.kill();

    // DEL, twice: everything back.
    for n in 1..=2 {
        let del = call(&attach_env("DEL", id, "net1", netns), &text);
        assert!(del.ok && del.out.is_null(), "DEL #{n}: {}", del.text);
    }
    assert_baseline(&fx, &base_ports, &base_entries, &[&socks, &devinfo]);
    // DEL without a netns (the runtime lost it) and without any ADD succeeds too.
    let mut no_ns = attach_env("DEL", "never", "net1", "");
    no_ns.retain(|(k, _)| *k != "CNI_NETNS");
    assert!(call(&no_ns, &text).ok);

    // A failed ADD (no such bridge), then DEL: nothing left.
    let bad = net_conf("1.0.0", "br9", &socks, &devinfo, &fx.config, &json!({})).to_string();
    let add = call(&attach_env("ADD", id, "net1", netns), &bad);
    assert_eq!(add.code(), 7, "{}", add.text);
    assert!(add.msg().starts_with("bridge: 'br9' does not exist on fastpathd"), "{}", add.text);
    assert_eq!(add.out["cniVersion"], "1.0.0");
    assert!(call(&attach_env("DEL", id, "net1", netns), &bad).ok);
    assert_baseline(&fx, &base_ports, &base_entries, &[&socks, &devinfo]);

    // CHECK without ADD: the spec's "unknown container".
    let chk = call(&attach_env("CHECK", "nobody", "net1", netns), &text);
    assert_eq!(chk.code(), 3, "{}", chk.text);

    // Bad input: the spec's codes, messages naming the field or variable and the value.
    let bad = |extra: Value| net_conf("1.0.0", "br0", &socks, &devinfo, &fx.config, &extra).to_string();
    let cases: [Case; 6] = [
        (attach_env("ADD", id, "net1", netns), "{not json".into(), 6, "the network config on stdin is not JSON"),
        (attach_env("ADD", id, "net1", netns), bad(json!({ "cniVersion": "0.2.0" })), 1, "cniVersion: '0.2.0'"),
        (attach_env("ADD", id, "net1", netns), bad(json!({ "vlan": 4095 })), 7, "vlan: 4095 is not"),
        (
            attach_env("ADD", id, "net1", netns),
            bad(json!({ "args": { "cni": { "hugepages": "lots" } } })),
            7,
            "args.cni.hugepages: \"lots\"",
        ),
        (attach_env("ADD", id, "net/1", netns), text.clone(), 4, "CNI_IFNAME 'net/1'"),
        (vec![("CNI_COMMAND", "ADD")], text.clone(), 4, "CNI_CONTAINERID is not set"),
    ];
    for (env, stdin, code, want) in cases {
        let c = call(&env, &stdin);
        assert_eq!(c.code(), code, "{}", c.text);
        assert!(c.msg().starts_with(want), "want '{want}': {}", c.text);
        assert_eq!(c.out.as_object().map(serde_json::Map::len), Some(4), "cniVersion, code, msg, details: {}", c.text);
    }
    assert_baseline(&fx, &base_ports, &base_entries, &[&socks, &devinfo]);

    // IPAM delegated to host-local: the address in the result, released by DEL.
    let host_local = Path::new("/usr/lib/cni/host-local");
    if host_local.is_file() {
        let ipam = json!({ "ipam": { "type": "host-local", "dataDir": fx.dir.join("ipam"),
                                     "ranges": [[{ "subnet": "10.77.0.0/24" }]] } });
        let with_ipam = net_conf("1.0.0", "br0", &socks, &devinfo, &fx.config, &ipam).to_string();
        let add = call(&attach_env("ADD", id, "net1", netns), &with_ipam);
        assert!(add.ok, "ADD with ipam: {}", add.text);
        let ip = &add.out["ips"][0];
        assert!(ip["address"].as_str().is_some_and(|a| a.starts_with("10.77.0.")), "{}", add.text);
        assert_eq!(ip["interface"], 0);
        assert!(call(&attach_env("DEL", id, "net1", netns), &with_ipam).ok);
        let held = files_under(&fx.dir.join("ipam").join(NETWORK));
        assert!(
            held.iter().all(|f| !f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("10.77."))),
            "{held:?}"
        );
        assert_baseline(&fx, &base_ports, &base_entries, &[&socks, &devinfo]);
    } else {
        eprintln!(
            "{TEST}: {} is missing, IPAM delegation not checked (apt-get install containernetworking-plugins)",
            host_local.display()
        );
    }

    // fastpathd gone: ADD asks to try again later; DEL still releases the ledger entry.
    let add = call(&attach_env("ADD", id, "net1", netns), &text);
    assert!(add.ok, "{}", add.text);
    fx.stop_switch();
    let add2 = call(&attach_env("ADD", "other", "net1", netns), &text);
    assert_eq!(add2.code(), 11, "{}", add2.text);
    assert!(call(&attach_env("DEL", id, "net1", netns), &text).ok);
    assert!(fx.entries().is_empty(), "{:?}", fx.entries());
    assert!(files_under(&socks).is_empty() && files_under(&devinfo).is_empty());
}

/// fastpathd's ports and the ledger are as they were, and `dirs` hold nothing.
fn assert_baseline(fx: &Fixture, ports: &[String], entries: &serde_json::Map<String, Value>, dirs: &[&Path]) {
    assert_eq!(fx.ports(), ports, "fastpathd's ports");
    assert_eq!(&fx.entries(), entries, "the ledger");
    for d in dirs {
        let left = files_under(d);
        assert!(left.is_empty(), "left in {}: {left:?}", d.display());
    }
}
