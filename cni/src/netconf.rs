// The network config a runtime passes on stdin: its fields (only cniVersion, name and type
// required), and the per-attachment settings with their overrides from args.cni and runtimeConfig.
//! Network configuration.

use crate::error::{CniError, Result, DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG};
use fastpath_host::proto::{check_vlan_id, PortSecurity, MTUS};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The plugin's `type`.
pub const PLUGIN_TYPE: &str = "fastpath-cni";
/// Where the per-pod socket directories go unless `socketDir` says otherwise.
pub const DEFAULT_SOCKET_DIR: &str = "/run/fastpath/cni";
/// Where device-info files go unless `deviceInfoDir` (or the runtime's `CNIDeviceInfoFile`)
/// says otherwise: the device-info spec's directory for CNI plugins.
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/run/k8s.cni.cncf.io/devinfo/cni";
/// The bridge used unless `bridge` names one.
pub const DEFAULT_BRIDGE: &str = "br0";

/// What one attachment asks for: the network config's values, overridden by the pod's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Access VLAN (`None`: untagged).
    pub vlan: Option<u16>,
    /// What the switch checks the port's frames for (`None`: hook.toml's `port_security`).
    pub port_security: Option<PortSecurity>,
    /// The MTU reported in the result (`None`: not reported).
    pub mtu: Option<u32>,
    /// Exclusive cores to reserve from hook.toml's pool.
    pub cores: usize,
    /// Hugepage bytes to reserve.
    pub hugepages: u64,
    /// The uid the socket is given (so a pod running as that user can connect).
    pub uid: Option<u32>,
    /// The gid the socket is given.
    pub gid: Option<u32>,
}

/// The network config, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: String,
    /// `name`: the network.
    pub name: String,
    /// `bridge`: fastpathd's bridge the ports go on.
    pub bridge: String,
    /// `socketDir`: the host directory holding a directory per pod.
    pub socket_dir: PathBuf,
    /// `hookConfig`: the hook's host configuration (`None`: the hook's default lookup).
    pub hook_config: Option<PathBuf>,
    /// `deviceInfoDir`: where device-info files go.
    pub device_info_dir: PathBuf,
    /// The runtime's `runtimeConfig.CNIDeviceInfoFile`, if it passed one.
    pub device_info_file: Option<PathBuf>,
    /// The settings after the pod's overrides.
    pub settings: Settings,
    /// `ipam`, to delegate to the plugin it names.
    pub ipam: Option<Map<String, Value>>,
    /// `cni.dev/attachments` (GC): the (container id, ifname) pairs that stay.
    pub valid_attachments: Option<Vec<(String, String)>>,
    /// `prevResult`: the previous plugin's result in a chain (ADD), or the attachment's (CHECK).
    pub prev_result: Option<Value>,
}

/// The `cniVersion` of a config text, where it has one (for the version an error is given in).
pub fn version_of(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

fn bad(field: &str, v: &Value, why: &str) -> CniError {
    CniError::new(INVALID_CONFIG, format!("{field}: {v} {why}"))
}

/// Reads the network config `text`.
pub fn parse(text: &str) -> Result<NetConf> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| CniError::new(DECODE, "the network config on stdin is not JSON").details(e.to_string()))?;
    let Value::Object(m) = &v else {
        return Err(CniError::new(DECODE, format!("the network config on stdin is {v}, not a JSON object")));
    };
    let cni_version = required_str(m, "cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("cniVersion: '{cni_version}' is not one this plugin speaks ({})", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let name = required_str(m, "name")?;
    let ty = required_str(m, "type")?;
    if ty != PLUGIN_TYPE {
        return Err(bad("type", &m["type"], &format!("is not '{PLUGIN_TYPE}'")));
    }
    let path = |k: &str, default: Option<&str>| -> Result<Option<PathBuf>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(default.map(PathBuf::from)),
            Some(Value::String(s)) if s.starts_with('/') => Ok(Some(s.into())),
            Some(x) => Err(bad(k, x, "is not an absolute path")),
        }
    };
    let bridge = match m.get("bridge") {
        None | Some(Value::Null) => DEFAULT_BRIDGE.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(x) => Err(bad("bridge", x, "is not a bridge name"))?,
    };
    let mut settings = Settings::default();
    apply(&mut settings, m, "")?;
    if let Some(a) = m.get("args") {
        let cni = a.as_object().and_then(|a| a.get("cni"));
        if let Some(c) = cni {
            let c = c.as_object().ok_or_else(|| bad("args.cni", c, "is not an object"))?;
            apply(&mut settings, c, "args.cni.")?;
        }
    }
    let mut device_info_file = None;
    if let Some(rc) = m.get("runtimeConfig") {
        let rc = rc.as_object().ok_or_else(|| bad("runtimeConfig", rc, "is not an object"))?;
        apply(&mut settings, rc, "runtimeConfig.")?;
        device_info_file = match rc.get("CNIDeviceInfoFile") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.starts_with('/') => Some(PathBuf::from(s)),
            Some(x) => Err(bad("runtimeConfig.CNIDeviceInfoFile", x, "is not an absolute path"))?,
        };
    }
    let ipam = match m.get("ipam") {
        None | Some(Value::Null) => None,
        Some(Value::Object(i)) if i.is_empty() => None,
        Some(Value::Object(i)) => match i.get("type") {
            Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => Some(i.clone()),
            _ => Err(bad("ipam", &m["ipam"], "has no plugin name in 'type'"))?,
        },
        Some(x) => Err(bad("ipam", x, "is not an object"))?,
    };
    Ok(NetConf {
        cni_version,
        name,
        bridge,
        socket_dir: path("socketDir", Some(DEFAULT_SOCKET_DIR))?.unwrap_or_default(),
        hook_config: path("hookConfig", None)?,
        device_info_dir: path("deviceInfoDir", Some(DEFAULT_DEVICE_INFO_DIR))?.unwrap_or_default(),
        device_info_file,
        settings,
        ipam,
        valid_attachments: attachments(m)?,
        prev_result: match m.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(x) => Err(bad("prevResult", x, "is not an object"))?,
        },
    })
}

fn required_str(m: &Map<String, Value>, k: &str) -> Result<String> {
    match m.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None => Err(CniError::new(INVALID_CONFIG, format!("{k} is missing from the network config"))),
        Some(x) => Err(bad(k, x, "is not a non-empty string")),
    }
}

/// `cni.dev/attachments` of a GC call.
fn attachments(m: &Map<String, Value>) -> Result<Option<Vec<(String, String)>>> {
    const K: &str = "cni.dev/attachments";
    let Some(v) = m.get(K) else { return Ok(None) };
    let list = v.as_array().ok_or_else(|| bad(K, v, "is not a list"))?;
    list.iter()
        .map(|a| {
            let s = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
            s("containerID").zip(s("ifname")).ok_or_else(|| bad(K, a, "lacks containerID or ifname"))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Reads the per-attachment fields of `m` into `s`; `at` prefixes the field names in errors.
fn apply(s: &mut Settings, m: &Map<String, Value>, at: &str) -> Result<()> {
    let uint = |k: &str, max: u64| -> Result<Option<u64>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => match x.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(bad(&format!("{at}{k}"), x, &format!("is not a whole number from 0 to {max}"))),
            },
        }
    };
    if let Some(v) = uint("vlan", 4094)? {
        s.vlan = match v {
            0 => None,
            v => Some(check_vlan_id(&format!("{at}vlan"), v as u16).map_err(|e| CniError::new(INVALID_CONFIG, e))?),
        };
    }
    if let Some(x) = m.get("portSecurity") {
        let p = x.as_str().and_then(|t| t.parse::<PortSecurity>().ok());
        s.port_security = Some(p.ok_or_else(|| bad(&format!("{at}portSecurity"), x, "is not off, mac or mac+ip"))?);
    }
    if let Some(mtu) = uint("mtu", 65535)? {
        if mtu < u64::from(*MTUS.start()) {
            return Err(bad(&format!("{at}mtu"), &m["mtu"], "is below 68, the least IPv4 allows"));
        }
        if mtu > u64::from(*MTUS.end()) {
            return Err(bad(
                &format!("{at}mtu"),
                &m["mtu"],
                &format!("is above {}, the most fastpathd takes", MTUS.end()),
            ));
        }
        s.mtu = Some(mtu as u32);
    }
    if let Some(c) = uint("cores", 4096)? {
        s.cores = c as usize;
    }
    if let Some(x) = m.get("hugepages") {
        s.hugepages = match x {
            Value::Number(_) => x.as_u64(),
            Value::String(t) => parse_size(t),
            _ => None,
        }
        .ok_or_else(|| bad(&format!("{at}hugepages"), x, "is not a size (bytes, or with Ki/Mi/Gi: 256Mi)"))?;
    }
    if let Some(u) = uint("uid", u64::from(u32::MAX))? {
        s.uid = Some(u as u32);
    }
    if let Some(g) = uint("gid", u64::from(u32::MAX))? {
        s.gid = Some(g as u32);
    }
    Ok(())
}

/// A size as the hook reads it (`256Mi`, `1Gi`, bytes), or with Kubernetes-style `K`, `M`,
/// `G` read as the binary units hugepages come in (`256M` is 256Mi).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    match t.strip_suffix(['K', 'M', 'G', 'T']) {
        Some(_) => fastpath_hook::hugetlb::parse_size(&format!("{t}i")),
        None => fastpath_hook::hugetlb::parse_size(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{DECODE, INCOMPATIBLE_VERSION};

    const FULL: &str = r#"{ "cniVersion": "1.0.0", "name": "fastpath-net", "type": "fastpath-cni",
      "bridge": "br1", "socketDir": "/run/fp/cni", "hookConfig": "/etc/fastpath/hook.toml",
      "vlan": 100, "portSecurity": "mac", "mtu": 1500, "cores": 0, "hugepages": "0",
      "args": {"cni": {"cores": 2, "hugepages": "256M", "vlan": 7}},
      "runtimeConfig": {"CNIDeviceInfoFile": "/run/k8s.cni.cncf.io/devinfo/cni/x.json", "portSecurity": "off"} }"#;

    #[test]
    fn the_documented_config_with_the_pods_overrides() {
        let c = parse(FULL).unwrap();
        assert_eq!((c.cni_version.as_str(), c.name.as_str(), c.bridge.as_str()), ("1.0.0", "fastpath-net", "br1"));
        assert_eq!(c.socket_dir, PathBuf::from("/run/fp/cni"));
        assert_eq!(c.hook_config, Some(PathBuf::from("/etc/fastpath/hook.toml")));
        assert_eq!(c.device_info_file, Some(PathBuf::from("/run/k8s.cni.cncf.io/devinfo/cni/x.json")));
        let want = Settings {
            vlan: Some(7),
            port_security: Some(PortSecurity::Off),
            mtu: Some(1500),
            cores: 2,
            hugepages: 256 << 20,
            uid: None,
            gid: None,
        };
        assert_eq!(c.settings, want);
    }

    #[test]
    fn only_version_name_and_type_are_required() {
        let c = parse(r#"{"cniVersion":"0.4.0","name":"n","type":"fastpath-cni"}"#).unwrap();
        assert_eq!(c.bridge, DEFAULT_BRIDGE);
        assert_eq!(c.socket_dir, PathBuf::from(DEFAULT_SOCKET_DIR));
        assert_eq!(c.device_info_dir, PathBuf::from(DEFAULT_DEVICE_INFO_DIR));
        assert_eq!((c.hook_config, c.ipam, c.settings), (None, None, Settings::default()));
    }

    fn err(text: &str) -> CniError {
        parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_field_and_the_value_with_the_specs_codes() {
        let base = |extra: &str| format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"fastpath-cni"{extra}}}"#);
        let e = err("not json");
        assert_eq!(e.code, DECODE);
        assert!(!e.details.is_empty());
        assert_eq!(err("[1]").code, DECODE);
        let e = err(r#"{"cniVersion":"9.9.9","name":"n","type":"fastpath-cni"}"#);
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("cniVersion: '9.9.9'") && e.msg.contains("1.0.0"), "{e}");
        let e = err(r#"{"cniVersion":"1.0.0","type":"fastpath-cni"}"#);
        assert_eq!((e.code, e.msg.as_str()), (INVALID_CONFIG, "name is missing from the network config"));
        for (extra, want) in [
            (r#","type":"bridge""#, r#"type: "bridge" is not 'fastpath-cni'"#),
            (r#","vlan":5000"#, "vlan: 5000 is not a whole number from 0 to 4094"),
            (r#","vlan":"7""#, r#"vlan: "7" is not a whole number"#),
            (r#","portSecurity":"strict""#, r#"portSecurity: "strict" is not off, mac or mac+ip"#),
            (r#","mtu":10"#, "mtu: 10 is below 68"),
            (r#","mtu":9199"#, "mtu: 9199 is above 9198"),
            (r#","hugepages":"lots""#, r#"hugepages: "lots" is not a size"#),
            (r#","cores":-1"#, "cores: -1 is not a whole number"),
            (r#","socketDir":"rel/dir""#, r#"socketDir: "rel/dir" is not an absolute path"#),
            (r#","bridge":"""#, r#"bridge: "" is not a bridge name"#),
            (r#","args":{"cni":{"vlan":4095}}"#, "args.cni.vlan: 4095 is not a whole number from 0 to 4094"),
            (r#","runtimeConfig":{"cores":"two"}"#, r#"runtimeConfig.cores: "two" is not a whole number"#),
            (r#","ipam":{"subnet":"10.0.0.0/24"}"#, "ipam: "),
            (r#","cni.dev/attachments":[{"ifname":"e"}]"#, "cni.dev/attachments: "),
        ] {
            let text = base(extra).replacen(r#","type":"fastpath-cni","type":"bridge""#, r#","type":"bridge""#, 1);
            let e = err(&text);
            assert_eq!(e.code, INVALID_CONFIG, "{extra}: {e}");
            assert!(e.msg.starts_with(want), "{extra}: {e}");
        }
    }

    #[test]
    fn sizes_take_kubernetes_suffixes_as_binary() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("256Mi"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1Q"), None);
    }
}
