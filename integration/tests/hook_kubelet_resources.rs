// fastpath-hook under runc with the resources the kubelet's managers set in config.json: the
// runtime's exclusive cores and hugetlb limit become the container's, recorded and released.
//! The hook works with the kubelet's CPU and hugepage managers.

mod hook_common;

use hook_common::*;
use integration::{output_text, spawn_piped, wait_output, wait_until};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What the container runs: the contract checks (its CPUs, its hugetlbfs mount and how much
/// fits, its config.json), then a pause so the test sees its ledger entry.
fn script() -> String {
    format!("{CHECKS}\nsleep 3\n")
}

/// Adds what the kubelet's static CPU manager and hugepage resource put in config.json:
/// `linux.resources.cpu.cpus` and a 64Mi `hugepageLimits` entry for 2MB pages.
fn add_kubelet_resources(bundle: &Path, cpus: &str) {
    let p = bundle.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let linux = v.as_object_mut().unwrap().entry("linux").or_insert_with(|| json!({}));
    linux["resources"]["cpu"] = json!({ "cpus": cpus });
    linux["resources"]["hugepageLimits"] =
        json!([{ "pageSize": "2MB", "limit": 64u64 << 20 }, { "pageSize": "1GB", "limit": 0 }]);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn runc_run(fx: &mut Fixture, name: &str, ann: &[(&str, &str)], cpus: &str) -> Command {
    fx.names.push(name.into());
    let b = fx.bundle(name, &script(), ann, None);
    add_kubelet_resources(&b, cpus);
    let mut c = Command::new(fx.peers.runtime.clone().expect("runc"));
    c.arg("--root").arg(fx.rt_root()).args(["run", "--bundle"]).arg(&b).arg(name);
    c
}

#[test]
fn hook_kubelet_resources() {
    let Some(peers) = require("hook_kubelet_resources", Some("runc")) else { return };
    // The hook's pool is CPU 0; the "kubelet" gives the container CPU 1.
    let mut fx = Fixture::new(&peers, Rt::Runc, "0");
    let free_before = free_hugepages();
    let mut run = runc_run(&mut fx, "kres", &[("fastpath.io/vhost-user", "br0")], "1");
    let child = spawn_piped(&mut run);
    let ready = wait_until(Duration::from_secs(40), || fx.ready_entries().len() == 1);
    assert!(ready, "no ready ledger entry: {}", fx.ledger());
    let entry = fx.ready_entries().remove(0);
    assert_eq!(entry["cores"], json!([1]), "{entry}");
    assert_eq!(entry["cores_from_runtime"], true, "{entry}");
    assert_eq!(entry["hugepages"], json!({"bytes": 64u64 << 20, "page_size": 2u64 << 20}), "{entry}");
    // A one-node host: everything is on node 0, nothing to say.
    if Path::new("/sys/devices/system/node/node0").exists() && !Path::new("/sys/devices/system/node/node1").exists() {
        assert_eq!(entry["numa_node"], 0, "{entry}");
        assert!(entry.get("numa_note").is_none(), "{entry}");
    }
    let cgroups: Vec<std::path::PathBuf> =
        entry["cgroups"].as_array().unwrap().iter().filter_map(|p| p.as_str().map(Into::into)).collect();
    assert!(
        !cgroups.iter().any(|c| c.to_string_lossy().contains("cpuset")),
        "the hook wrote the runtime's cpuset: {entry}"
    );
    assert_eq!(fx.ports().len(), 1, "{:?}", fx.list());
    let out = wait_output(child, Duration::from_mins(1)).unwrap_or_else(|e| panic!("container: {e}"));
    let all = output_text(&out);
    assert!(out.status.success(), "{all}");
    let vals = kv(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(vals.get("CPUS").map(String::as_str), Some("1"), "{all}");
    let mount = vals.get("HUGEMOUNT").cloned().unwrap_or_default();
    assert!(
        mount.contains(" - hugetlbfs ") && mount.contains("size=67108864"),
        "hugetlbfs not sized from the limit: {mount}"
    );
    assert_eq!(vals.get("FILL").map(String::as_str), Some("ok"), "{all}");
    assert_eq!(vals.get("OVER").map(String::as_str), Some("refused"), "{all}");
    let cfg: Value = serde_json::from_str(vals.get("CONFIG").map_or("null", String::as_str)).unwrap();
    assert_eq!(cfg["cores"], json!([1]), "{all}");
    assert_eq!(cfg["hugepages"]["bytes"], 64u64 << 20, "{all}");
    fx.assert_released();
    fx.assert_clean(&cgroups);
    assert_hugepages_back(free_before);

    // More than the runtime's limit: refused, naming both, and nothing left behind.
    let mut run =
        runc_run(&mut fx, "kbig", &[("fastpath.io/hugepages", "128Mi"), ("fastpath.io/vhost-user", "br0")], "1");
    let out = wait_output(spawn_piped(&mut run), Duration::from_mins(1)).unwrap_or_else(|e| panic!("container: {e}"));
    assert!(!out.status.success(), "128Mi over a 64Mi limit ran: {}", output_text(&out));
    let why = format!("{}{}", output_text(&out), fx.hook_log());
    assert!(
        why.contains("'128Mi' is more than the runtime's hugetlb limit for 2Mi pages") && why.contains("64Mi"),
        "{why}"
    );
    fx.force_delete("kbig");
    fx.assert_released();
    fx.assert_clean(&[]);
    eprintln!("hook_kubelet_resources: ok");
}
