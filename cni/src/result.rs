// What ADD prints (the spec's result: interfaces with the MAC and socket path, the IPAM
// plugin's addresses if one was delegated to), what VERSION prints, and the device-info file.
//! Results.

use crate::netconf::SUPPORTED_VERSIONS;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The device-info spec version written.
pub const DEVICE_INFO_VERSION: &str = "1.1.0";

/// The interface an attachment made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface<'a> {
    /// `CNI_IFNAME`.
    pub name: &'a str,
    /// Its MAC.
    pub mac: &'a str,
    /// `CNI_NETNS`.
    pub sandbox: &'a Path,
    /// The vhost-user socket (host path).
    pub socket: &'a Path,
    /// The MTU, if the config gave one.
    pub mtu: Option<u32>,
}

/// The ADD result for `version`: the interfaces, addresses, routes and DNS of `prev` (the
/// previous plugin's result in a chain, if any) with this interface appended, and the `ips`,
/// `routes` and `dns` of the IPAM plugin's result (`ipam`; none: no addresses), each address
/// put on this interface.
pub fn add_result(version: &str, i: &Interface, ipam: Option<&Value>, prev: Option<&Value>) -> Value {
    let mut iface = Map::new();
    iface.insert("name".into(), json!(i.name));
    iface.insert("mac".into(), json!(i.mac));
    iface.insert("sandbox".into(), json!(i.sandbox));
    // socketPath (and mtu) are the 1.1 spec's; older readers ignore them.
    iface.insert("socketPath".into(), json!(i.socket));
    if let Some(m) = i.mtu {
        iface.insert("mtu".into(), json!(m));
    }
    let list = |r: Option<&Value>, k: &str| -> Vec<Value> {
        r.and_then(|r| r.get(k)).and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let mut interfaces = list(prev, "interfaces");
    let index = interfaces.len();
    interfaces.push(Value::Object(iface));
    let mut ips = list(prev, "ips");
    for mut ip in list(ipam, "ips") {
        if let Some(o) = ip.as_object_mut() {
            o.insert("interface".into(), json!(index));
        }
        ips.push(ip);
    }
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version));
    out.insert("interfaces".into(), json!(interfaces));
    out.insert("ips".into(), json!(ips));
    let routes: Vec<Value> = list(prev, "routes").into_iter().chain(list(ipam, "routes")).collect();
    if !routes.is_empty() {
        out.insert("routes".into(), json!(routes));
    }
    let dns = ipam.and_then(|r| r.get("dns")).or_else(|| prev.and_then(|r| r.get("dns")));
    out.insert("dns".into(), dns.cloned().unwrap_or_else(|| json!({})));
    Value::Object(out)
}

/// What VERSION prints: the versions this plugin speaks, in `version` (the caller's, when
/// it is one of them).
pub fn version_result(version: Option<&str>) -> Value {
    let v = version.filter(|v| SUPPORTED_VERSIONS.contains(v)).unwrap_or("1.1.0");
    json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS })
}

/// The device-info file (network-plumbing-wg device-info spec 1.1.0) of a vhost-user port the
/// switch listens on: mode `client` in the spec's words ("the host is responsible for creating
/// the socket file and the application in the container attaches to it").
pub fn device_info(socket: &Path) -> Value {
    json!({
        "type": "vhost-user",
        "version": DEVICE_INFO_VERSION,
        "vhost-user": { "mode": "client", "path": socket },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(mtu: Option<u32>) -> Interface<'static> {
        Interface {
            name: "net1",
            mac: "02:aa:bb:cc:dd:ee",
            sandbox: Path::new("/run/netns/p1"),
            socket: Path::new("/run/fastpath/cni/c1/net1.sock"),
            mtu,
        }
    }

    /// The shape the spec's result schema gives: cniVersion, interfaces (name, mac, sandbox,
    /// socketPath), ips with an interface index into interfaces, dns an object.
    #[test]
    fn add_result_has_the_specs_shape() {
        let r = add_result("1.0.0", &iface(Some(1500)), None, None);
        let want = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": "net1", "mac": "02:aa:bb:cc:dd:ee", "sandbox": "/run/netns/p1",
                             "socketPath": "/run/fastpath/cni/c1/net1.sock", "mtu": 1500 }],
            "ips": [],
            "dns": {},
        });
        assert_eq!(r, want);
        let ipam = json!({ "cniVersion": "1.0.0", "ips": [{ "address": "10.1.0.2/24", "gateway": "10.1.0.1" }],
                           "routes": [{ "dst": "0.0.0.0/0" }], "dns": { "nameservers": ["10.1.0.1"] } });
        let r = add_result("1.0.0", &iface(None), Some(&ipam), None);
        assert_eq!(r["ips"], json!([{ "address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0 }]));
        assert_eq!(r["routes"], ipam["routes"]);
        assert_eq!(r["dns"], ipam["dns"]);
        assert!(r["interfaces"][0].get("mtu").is_none());
        // Every address names an interface that exists.
        for ip in r["ips"].as_array().unwrap() {
            let i = ip["interface"].as_u64().unwrap() as usize;
            assert!(i < r["interfaces"].as_array().unwrap().len());
        }
    }

    /// Chained after another plugin: its interfaces and addresses stay, ours is appended and
    /// our addresses point at it.
    #[test]
    fn a_previous_result_is_kept_and_extended() {
        let prev = json!({ "cniVersion": "1.0.0", "interfaces": [{ "name": "eth0" }],
                           "ips": [{ "address": "10.0.0.2/24", "interface": 0 }], "dns": { "domain": "x" } });
        let ipam = json!({ "ips": [{ "address": "10.1.0.2/24" }] });
        let r = add_result("1.0.0", &iface(None), Some(&ipam), Some(&prev));
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["interfaces"][1]["name"], "net1");
        assert_eq!(
            r["ips"],
            json!([{ "address": "10.0.0.2/24", "interface": 0 }, { "address": "10.1.0.2/24", "interface": 1 }])
        );
        assert_eq!(r["dns"], json!({ "domain": "x" }));
        assert!(r.get("routes").is_none());
    }

    #[test]
    fn version_and_device_info() {
        let v = version_result(Some("1.0.0"));
        assert_eq!(v, json!({ "cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"] }));
        assert_eq!(version_result(Some("0.1.0"))["cniVersion"], "1.1.0");
        let d = device_info(Path::new("/run/fastpath/cni/c1/net1.sock"));
        assert_eq!(d["type"], "vhost-user");
        assert_eq!(d["version"], "1.1.0");
        assert_eq!(d["vhost-user"], json!({ "mode": "client", "path": "/run/fastpath/cni/c1/net1.sock" }));
    }
}
