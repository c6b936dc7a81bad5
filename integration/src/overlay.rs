// What the VXLAN tests share: a vxlan port's --port flag, its per-reason counters in
// `fastpathctl list --json`, and one udp_rr run checked (every transaction back, intact).
//! VXLAN test helpers.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::{app_flags, ip, output_text, Netns, Verdict, Veth};

/// The bad packets `vxlan_garble` sends, each with the counter a receiving fastpathd vxlan
/// port raises for it.
pub const GARBLE_CASES: &[(&str, &str)] = &[
    ("short", "rx_short"),
    ("garbled", "rx_garbled"),
    ("bad-checksum", "rx_bad_checksum"),
    ("fragment", "rx_fragment"),
    ("not-ours", "rx_not_our_vtep"),
    ("not-4789", "rx_not_udp_4789"),
    ("no-i-flag", "rx_no_i_flag"),
    ("wrong-vni", "rx_wrong_vni"),
];

/// A smoltcp app's arguments on vhost socket `sock` with address `ip`/24 and MAC `mac`,
/// then `rest`, then the apps' common flags.
pub fn smol_app_args(sock: &Path, ip: &str, mac: &str, rest: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["--port", &format!("vu:{}", sock.display()), "--ip", &format!("{ip}/24"), "--mac", mac]
        .iter()
        .chain(rest)
        .map(|s| (*s).to_string())
        .collect();
    a.extend(app_flags());
    a
}

/// fastpathd's `--port` for a vxlan port `name` on `br0` over an AF_XDP uplink on `ifname`.
pub fn vxlan_port_flag(name: &str, ifname: &str, vni: u32, local: &str, remotes: &[&str]) -> String {
    let s = format!("br0:{name}:vxlan:afxdp:{ifname},vni={vni},local={local}");
    if remotes.is_empty() {
        s
    } else {
        format!("{s},remote={}", remotes.join("+"))
    }
}

/// Counter `counter` of port `port`'s kind (e.g. a vxlan port's `rx_wrong_vni`) in a
/// `fastpathctl list --json`.
pub fn kind_counter(list: &[Value], port: &str, counter: &str) -> Option<u64> {
    let p = list.iter().find(|p| p["name"] == port)?;
    p["kind_counters"].as_array()?.iter().find(|kv| kv[0] == counter).and_then(|kv| kv[1].as_u64())
}

/// Checks a finished `udp_rr --json` run (`out`): `n` transactions, none lost or bad; notes
/// its line as `what`.
pub fn check_udp_rr(v: &mut Verdict, what: &str, out: Result<std::process::Output, String>, n: u64) {
    match out {
        Ok(o) => {
            let text = output_text(&o);
            let j = text.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok());
            let got = j.as_ref().and_then(|j| j["count"].as_u64());
            let lost = j.as_ref().and_then(|j| j["lost"].as_u64()).unwrap_or(u64::MAX);
            let bad = j.as_ref().and_then(|j| j["bad"].as_u64()).unwrap_or(u64::MAX);
            v.check(o.status.success() && got == Some(n) && lost == 0 && bad == 0, || {
                format!("{what}: expected {n} round trips, none lost or bad: {text}")
            });
            v.note(format!("{what}: {}", j.map_or_else(String::new, |j| j.to_string())));
        }
        Err(e) => v.fail(format!("{what}: {e}")),
    }
}

/// How long one udp_rr run may take.
pub const RR_TIMEOUT: Duration = Duration::from_mins(1);

/// Two "hosts"' underlay: the veth pair `a` ↔ `b`, `b` moved into `ns`, both with MTU `mtu`
/// and `b` up (`a` is up from [`Veth::new`]).
pub fn underlay(ns: &Netns, a: &str, b: &str, mtu: &str) -> Result<Veth, String> {
    let veth = Veth::new(a, b)?;
    ip(&["link", "set", a, "mtu", mtu])?;
    ip(&["link", "set", b, "mtu", mtu])?;
    ip(&["link", "set", b, "netns", &ns.0])?;
    ns.ip(&["link", "set", b, "up"])?;
    Ok(veth)
}
