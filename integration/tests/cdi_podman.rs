// `fastpath-hook cdi generate` and podman's CDI: `podman run --device fastpath.io/port=br0`,
// no annotation, gets a fastpathd port and its own hugetlbfs, given back when it stops.
//! CDI devices under podman.

mod hook_common;

use hook_common::*;
use integration::{output_text, spawn_piped, wait_output, wait_until};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Podman 4.3 reads CDI specs from /etc/cdi and /var/run/cdi only (no `cdi_spec_dirs` in
/// its containers.conf): the test's spec goes to the tmpfs one, under its own name, and is
/// removed when the test ends.
struct SpecFile(PathBuf);

impl Drop for SpecFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn cdi_podman() {
    let Some(peers) = require("cdi_podman", Some("podman")) else { return };
    let mut fx = Fixture::new(&peers, Rt::Podman, "0-1");
    let free_before = free_hugepages();
    std::fs::create_dir_all("/var/run/cdi").unwrap();
    let spec = SpecFile(PathBuf::from(format!("/var/run/cdi/fastpath-test-{}.json", std::process::id())));
    let gen = run_timeout(
        Command::new(&peers.hook)
            .arg("--config")
            .arg(&fx.config)
            .args(["cdi", "generate", "--bridge", "br0", "--output"])
            .arg(&spec.0)
            .arg("--hook")
            .arg(&peers.hook),
        Duration::from_secs(10),
    );
    assert!(gen.status.success(), "cdi generate: {}", output_text(&gen));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&spec.0).unwrap()).unwrap();
    assert_eq!(written["kind"], "fastpath.io/port", "{written}");

    let name = "fpcdi";
    fx.names.push(name.into());
    let script = format!("{CHECKS}\nsleep 3\n");
    let mut run = Command::new(peers.runtime.clone().expect("podman"));
    run.args(fx.podman_global()).args(["run", "--rm", "--name", name]);
    run.args(["--user", "1000:1000", "--cap-drop", "all", "--network", "none", "--env", "PATH=/bin"]);
    run.args(["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]);
    run.args(["--device", "fastpath.io/port=br0", "--rootfs"]).arg(&fx.rootfs).args(["sh", "-c", &script]);
    let child = spawn_piped(&mut run);
    let ready = wait_until(Duration::from_mins(1), || fx.ready_entries().len() == 1);
    assert!(ready, "no ready ledger entry: {}\nhook.log: {}", fx.ledger(), fx.hook_log());
    let ports = fx.ports();
    assert_eq!(ports.len(), 1, "fastpathd ports: {ports:?}");
    let entry = fx.ready_entries().remove(0);
    assert_eq!(entry["ports"][0]["bridge"], "br0", "{entry}");
    let out = wait_output(child, Duration::from_secs(90)).unwrap_or_else(|e| panic!("podman run: {e}"));
    let all = output_text(&out);
    assert!(out.status.success(), "{all}\nhook.log: {}", fx.hook_log());
    let vals = kv(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(vals.get("UID").map(String::as_str), Some("1000"), "{all}");
    let mount = vals.get("HUGEMOUNT").cloned().unwrap_or_default();
    assert!(mount.contains(" - hugetlbfs ") && mount.contains("size=67108864"), "{mount}\n{all}");
    assert_eq!(vals.get("FILL").map(String::as_str), Some("ok"), "{all}");
    assert_eq!(vals.get("OVER").map(String::as_str), Some("refused"), "{all}");
    assert_eq!(vals.get("SOCKET").map(String::as_str), Some("br0.sock"), "{all}");
    let cfg: Value = serde_json::from_str(vals.get("CONFIG").map_or("null", String::as_str)).unwrap();
    assert_eq!(cfg["ports"][0]["bridge"], "br0", "{all}");
    // Stopped: the port, the ledger entry and the hugepages are back.
    fx.assert_released();
    fx.assert_clean(&[]);
    assert_hugepages_back(free_before);
    drop(spec);
    eprintln!("cdi_podman: ok");
}
