// The docker runtime shim (`fastpath-hook shim`), called exactly as containerd-shim-runc-v2
// calls runc (create, start, delete with --root/--log/--pid-file), with the real runc behind it.
//! Docker shim test.

mod hook_common;

use fastpath_oci::{write_bundle, Spec, CONTRACT};
use hook_common::*;
use integration::{output_text, wait_until};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `fastpath-hook shim --runtime RUNC --config CFG <runc args as containerd passes them>`.
fn shim(fx: &Fixture, runc: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(&fx.peers.hook);
    c.arg("shim").arg("--runtime").arg(runc).arg("--config").arg(&fx.config);
    c.arg("--root").arg(fx.rt_root()).arg("--log").arg(fx.dir.join("runc-log.json")).args(["--log-format", "json"]);
    c.args(args);
    c
}

/// A bundle as docker writes it: no hooks (the shim adds them).
fn bundle_without_hooks(fx: &Fixture, name: &str, script: &str, ann: &[(&str, &str)]) -> PathBuf {
    let args = ["sh", "-c", script];
    let spec = Spec { annotations: ann, ..Spec::new(name, &fx.rootfs, &args) };
    write_bundle(&fx.dir.join(&format!("b-{name}")), &spec).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn hook_docker_shim_runc() {
    let test = "hook_docker_shim_runc";
    let Some(peers) = require(test, Some("runc")) else { return };
    let t0 = Instant::now();
    let runc = peers.runtime.clone().unwrap();
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    let free_before = free_hugepages();
    fx.names.push("fpshim".into());
    fx.names.push("fpplain".into());

    // A container without fastpath annotations: the shim leaves its config.json alone.
    let plain = bundle_without_hooks(&fx, "fpplain", "true", &[]);
    let before = std::fs::read(plain.join("config.json")).unwrap();
    let pid_file = fx.dir.join("plain.pid");
    // The created container inherits runc's stdio: not pipes we would wait on.
    let st = shim(
        &fx,
        &runc,
        &["create", "--bundle", plain.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), "fpplain"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .unwrap();
    assert!(st.success(), "plain create: {st}");
    assert_eq!(std::fs::read(plain.join("config.json")).unwrap(), before, "the shim changed a plain bundle");
    let o = run_timeout(&mut shim(&fx, &runc, &["delete", "--force", "fpplain"]), Duration::from_secs(30));
    assert!(o.status.success(), "plain delete: {}", output_text(&o));

    // The contract container through the shim.
    let b = bundle_without_hooks(&fx, "fpshim", &format!("{CHECKS}\necho DONE"), &CONTRACT);
    let pid_file = fx.dir.join("init.pid");
    let out_path = fx.dir.join("container.out");
    // containerd hands runc the container's stdio; without a terminal they become the container's.
    let out = File::create(&out_path).unwrap();
    let err = File::create(fx.dir.join("container.err")).unwrap();
    let st = shim(
        &fx,
        &runc,
        &["create", "--bundle", b.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), "fpshim"],
    )
    .stdin(Stdio::null())
    .stdout(out)
    .stderr(err)
    .status()
    .unwrap();
    let err_text = std::fs::read_to_string(fx.dir.join("container.err")).unwrap_or_default();
    assert!(st.success(), "shim create: {st}: {err_text}\nhook.log: {}", fx.hook_log());
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(b.join("config.json")).unwrap()).unwrap();
    for stage in ["createRuntime", "createContainer", "poststop"] {
        assert_eq!(
            spec["hooks"][stage][0]["path"],
            Value::from(peers.hook.to_str().unwrap()),
            "{stage} hook not added: {spec}"
        );
    }
    let ledger: std::collections::BTreeMap<String, Value> = fx.entries().into_iter().collect();
    assert_eq!(ledger.len(), 1, "createRuntime did not run at create: {ledger:?}");
    let cgroups: Vec<PathBuf> =
        ledger["fpshim"]["cgroups"].as_array().unwrap().iter().map(|p| PathBuf::from(p.as_str().unwrap())).collect();
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let o = run_timeout(&mut shim(&fx, &runc, &["start", "fpshim"]), Duration::from_secs(30));
    assert!(o.status.success(), "start: {}", output_text(&o));
    assert!(
        wait_until(Duration::from_secs(30), || !Path::new(&format!("/proc/{pid}")).exists()),
        "container did not exit"
    );
    let o = run_timeout(&mut shim(&fx, &runc, &["delete", "fpshim"]), Duration::from_secs(30));
    assert!(o.status.success(), "delete: {}", output_text(&o));

    let report = std::fs::read_to_string(&out_path).unwrap();
    let k = kv(&report);
    assert_eq!(k.get("DONE"), None, "DONE has no '='");
    assert!(report.contains("DONE"), "the container did not finish: {report}");
    assert_eq!(k["UID"], "1000", "{report}");
    assert_eq!(k["CAPEFF"], "0000000000000000", "{report}");
    assert_eq!(k["CPUS"], cpu_list(&ledger["fpshim"]["cores"]), "{report}");
    assert!(k["HUGEMOUNT"].contains("hugetlbfs") && k["HUGEMOUNT"].contains("size=67108864"), "{report}");
    assert_eq!(k["FILL"], "ok", "{report}");
    assert_eq!(k["OVER"], "refused", "{report}");
    assert_eq!(k["SOCKET"], "br0.sock", "{report}");
    // delete ran poststop through the shim: nothing left.
    fx.assert_clean(&cgroups);
    assert_hugepages_back(free_before);
    eprintln!("{test}: ok, {:.1} s", t0.elapsed().as_secs_f64());
}
