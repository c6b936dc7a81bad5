// `fastpath-hook cdi generate`: CDI specs (container-device-interface) for the VFs of vf_pools
// (kind fastpath.io/vf) and the switch bridges (kind fastpath.io/port), the hook in their hooks.
//! CDI specs.
//!
//! A CDI device can't carry annotations, so its `env` says what the `fastpath.io/*`
//! annotations would (`FASTPATH_IO_VHOST_USER=br0`, see [`crate::annotations::env_name`]),
//! and its `hooks` run the hook at createRuntime, createContainer and poststop.

use crate::annotations::{env_name, HUGEPAGES, VF, VHOST_USER};
use crate::devices;
use crate::hostconfig::HostConfig;
use crate::install::{self, STAGES};
use crate::pci::Pci;
use serde_json::{json, Value};
use std::path::Path;

/// The CDI version written: the newest podman 4.3 (CDI 0.5) accepts, and containerd 1.7 too;
/// nothing here needs 0.6's annotations.
pub const CDI_VERSION: &str = "0.5.0";
/// The kind of the switch-port devices (`--device fastpath.io/port=br0`).
pub const PORT_KIND: &str = "fastpath.io/port";
/// The kind of the VF devices (`--device fastpath.io/vf=0000:81:10.0`).
pub const VF_KIND: &str = "fastpath.io/vf";

/// The hook at every stage, as CDI `hooks` entries.
fn hooks(hook: &Path, config: Option<&Path>) -> Vec<Value> {
    STAGES
        .iter()
        .map(|s| json!({"hookName": s, "path": hook, "args": install::args(s, config), "timeout": 30}))
        .collect()
}

/// The `fastpath.io/port` spec: one device per bridge, giving a port on it and, unless
/// `hugepages` is `None` (then the runtime's hugetlb limit decides), that much hugetlbfs.
pub fn port_spec(bridges: &[String], hugepages: Option<&str>, hook: &Path, config: Option<&Path>) -> Value {
    let devices: Vec<Value> = bridges
        .iter()
        .map(|b| {
            let mut env = vec![format!("{}={b}", env_name(VHOST_USER))];
            env.extend(hugepages.map(|h| format!("{}={h}", env_name(HUGEPAGES))));
            json!({"name": b, "containerEdits": {"env": env}})
        })
        .collect();
    json!({
        "cdiVersion": CDI_VERSION,
        "kind": PORT_KIND,
        "devices": devices,
        "containerEdits": {"hooks": hooks(hook, config)},
    })
}

/// The `fastpath.io/vf` spec: one device per VF of `vf_pools` (named by its PCI address),
/// with `/dev/vfio/vfio` and its group's node, and the hook binding it. VFs that can't be
/// probed are left out, each with the reason in the second value.
pub fn vf_spec(pci: &Pci, cfg: &HostConfig, hook: &Path, config: Option<&Path>) -> (Value, Vec<String>) {
    let mut devices = Vec::new();
    let mut skipped = Vec::new();
    let addrs: std::collections::BTreeSet<&String> = cfg.vf_pools.values().flatten().collect();
    for a in addrs {
        match devices::probe(pci, cfg, a, a, true) {
            Ok(v) => devices.push(json!({
                "name": a,
                "containerEdits": {
                    "env": [format!("{}={a}", env_name(VF))],
                    "deviceNodes": [{"path": "/dev/vfio/vfio"}, {"path": format!("/dev/vfio/{}", v.group)}],
                },
            })),
            Err(e) => skipped.push(format!("VF {a} left out: {e}")),
        }
    }
    let spec = json!({
        "cdiVersion": CDI_VERSION,
        "kind": VF_KIND,
        "devices": devices,
        "containerEdits": {"hooks": hooks(hook, config)},
    });
    (spec, skipped)
}

/// Where the VF spec goes beside the port spec at `output`: `fastpath.io.yaml` →
/// `fastpath.io-vf.yaml`.
pub fn vf_path(output: &Path) -> std::path::PathBuf {
    let stem = output.file_stem().map_or_else(|| "fastpath.io".into(), |s| s.to_string_lossy().into_owned());
    let ext = output.extension().map_or_else(|| "yaml".into(), |s| s.to_string_lossy().into_owned());
    output.with_file_name(format!("{stem}-vf.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::fake::FakeTree;

    #[test]
    fn port_spec_shape() {
        let s = port_spec(&["br0".into(), "br1".into()], Some("64Mi"), Path::new("/usr/bin/fastpath-hook"), None);
        assert_eq!(s["cdiVersion"], CDI_VERSION);
        assert_eq!(s["kind"], "fastpath.io/port");
        assert_eq!(s["devices"][0]["name"], "br0");
        assert_eq!(
            s["devices"][1]["containerEdits"]["env"],
            json!(["FASTPATH_IO_VHOST_USER=br1", "FASTPATH_IO_HUGEPAGES=64Mi"])
        );
        let hooks = s["containerEdits"]["hooks"].as_array().unwrap();
        let names: Vec<&str> = hooks.iter().map(|h| h["hookName"].as_str().unwrap()).collect();
        assert_eq!(names, ["createRuntime", "createContainer", "poststop"]);
        assert_eq!(hooks[0]["path"], "/usr/bin/fastpath-hook");
        assert_eq!(hooks[0]["args"], json!(["fastpath-hook", "createRuntime"]));
        let s = port_spec(&["br0".into()], None, Path::new("/h"), Some(Path::new("/etc/h.toml")));
        assert_eq!(s["devices"][0]["containerEdits"]["env"], json!(["FASTPATH_IO_VHOST_USER=br0"]));
        assert_eq!(
            s["containerEdits"]["hooks"][2]["args"],
            json!(["fastpath-hook", "--config", "/etc/h.toml", "poststop"])
        );
    }

    #[test]
    fn vf_spec_has_the_group_node_and_leaves_out_what_it_cannot_probe() {
        let t = FakeTree::new("cdi-vf", true);
        t.pf("0000:81:00.0", 7, &["0000:81:10.0", "0000:81:10.2"], 42);
        t.pci().set_numvfs("0000:81:00.0", 2).unwrap();
        let cfg = HostConfig::parse("[vf_pools]\nfast = [\"0000:81:10.0\", \"0000:99:00.0\"]\n", None, "0-3").unwrap();
        let (s, skipped) = vf_spec(&t.pci(), &cfg, Path::new("/h"), None);
        assert_eq!(s["kind"], "fastpath.io/vf");
        let d = &s["devices"].as_array().unwrap()[..];
        assert_eq!(d.len(), 1, "{s}");
        assert_eq!(d[0]["name"], "0000:81:10.0");
        assert_eq!(d[0]["containerEdits"]["env"], json!(["FASTPATH_IO_VF=0000:81:10.0"]));
        let group = d[0]["containerEdits"]["deviceNodes"][1]["path"].as_str().unwrap();
        assert!(group.starts_with("/dev/vfio/") && group != "/dev/vfio/vfio", "{group}");
        assert_eq!(d[0]["containerEdits"]["deviceNodes"][0]["path"], "/dev/vfio/vfio");
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("0000:99:00.0"), "{skipped:?}");
        assert_eq!(vf_path(Path::new("/etc/cdi/fastpath.io.yaml")), Path::new("/etc/cdi/fastpath.io-vf.yaml"));
        let _ = std::fs::remove_dir_all(&t.dir);
    }
}
