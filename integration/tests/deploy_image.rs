// The node image end to end: deploy/build-image.sh builds it with podman (no registry pulls),
// podman runs its fastpathd with the host mounts, namespaces and privileges the DaemonSet
// declares, fastpathctl on the host talks to it, and two hook-started runc containers on the
// host get ports on it and exchange frames.
//! Node image test.

mod hook_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fastpath_oci::{which, CONTRACT};
use hook_common::*;
use integration::{
    last_json_line, output_text, run_with_timeout, skip_or_fail, spawn_piped, static_bin_dir, wait_for_socket,
    wait_output, workspace_dir,
};
use serde_yaml::Value;

const SOCK: &str = "vu:/run/fastpath/sock/br0.sock";
const APP: &str = "--idle-sleep-us 20 --queue-size 4096 --json --quiet --link-timeout 30";
/// Where the DaemonSet keeps fastpathd's socket and state on the node; the test's own
/// directory stands in for it.
const NODE_RUN: &str = "/run/fastpath";

fn yaml(file: &str) -> Value {
    let p = workspace_dir().join("deploy/kubernetes").join(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|w| w.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Removes the test's container and image from its private podman store, and the store.
struct Podman {
    global: Vec<String>,
    name: String,
    image: String,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.args(&self.global);
        c
    }

    fn logs(&self) -> String {
        run_with_timeout(self.cmd().args(["logs", &self.name]), Duration::from_secs(20))
            .map_or_else(|e| e, |o| output_text(&o))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let quiet = |c: &mut Command| {
            let _ = run_with_timeout(c, Duration::from_mins(1));
        };
        quiet(self.cmd().args(["rm", "--force", "--time", "5", &self.name]));
        quiet(self.cmd().args(["rmi", "--force", &self.image]));
        quiet(self.cmd().args(["system", "reset", "--force"]));
    }
}

/// `podman run` flags for the DaemonSet's fastpathd container: its namespaces, privilege and
/// mounts, each host path at its own path as in the manifest, with `/run/fastpath` replaced by
/// `run_dir` and the ConfigMap's files (fastpathd's control socket moved there too) in `cfg_dir`.
fn daemonset_flags(name: &str, run_dir: &Path, cfg_dir: &Path) -> (Vec<String>, Vec<String>) {
    let ds = yaml("daemonset.yaml");
    let spec = &ds["spec"]["template"]["spec"];
    let c = spec["containers"]
        .as_sequence()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "fastpathd"))
        .expect("daemonset.yaml: a container named fastpathd");
    let mut flags = vec!["--name".to_string(), name.to_string()];
    if spec["hostNetwork"] == true {
        flags.extend(["--network".into(), "host".into()]);
    }
    if spec["hostPID"] == true {
        flags.extend(["--pid".into(), "host".into()]);
    }
    if c["securityContext"]["privileged"] == true {
        flags.push("--privileged".into());
    }
    let cm = yaml("configmap.yaml");
    for m in c["volumeMounts"].as_sequence().expect("fastpathd's volumeMounts") {
        let name = m["name"].as_str().unwrap();
        let at = m["mountPath"].as_str().unwrap();
        let vol = spec["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == name).unwrap();
        if let Some(host) = vol["hostPath"]["path"].as_str() {
            let host = if host == NODE_RUN { run_dir.to_path_buf() } else { PathBuf::from(host) };
            let at = if at == NODE_RUN { run_dir.display().to_string() } else { at.to_string() };
            if !host.exists() {
                // DirectoryOrCreate on a node; here (no VFs, say) nothing to give it.
                eprintln!("deploy_image: {} does not exist here: not mounted", host.display());
                continue;
            }
            flags.push("--volume".into());
            flags.push(format!("{}:{at}", host.display()));
        } else if vol["configMap"]["name"].is_string() {
            std::fs::create_dir_all(cfg_dir).unwrap();
            let data = cm["data"].as_mapping().expect("configmap.yaml data");
            for (k, v) in data {
                let text = v
                    .as_str()
                    .unwrap()
                    .replace(&format!("{NODE_RUN}/fastpathd.sock"), &format!("{}/ctl.sock", run_dir.display()));
                std::fs::write(cfg_dir.join(k.as_str().unwrap()), text).unwrap();
            }
            flags.push("--volume".into());
            flags.push(format!("{}:{at}:ro", cfg_dir.display()));
        } else {
            panic!("daemonset.yaml: volume {name} is neither a hostPath nor a configMap");
        }
    }
    // Kubernetes leaves the runtime's limits; podman's defaults may be above what the
    // runtime may set here, so the limits of the hook tests' podman containers.
    flags.extend(["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"].map(String::from));
    let command = strs(&c["command"]);
    flags.push("--entrypoint".into());
    flags.push(command.first().expect("fastpathd's command").clone());
    (flags, strs(&c["args"]))
}

#[test]
fn node_image_fastpathd_serves_hook_containers() {
    let test = "node_image_fastpathd_serves_hook_containers";
    let Some(peers) = require(test, Some("runc")) else { return };
    if which("podman").is_none() {
        skip_or_fail(test, "podman is not installed (apt-get install podman)");
        return;
    }
    for b in ["fastpathd", "fastpathctl", "fastpath-hook"] {
        if !static_bin_dir().join(b).is_file() {
            skip_or_fail(
                test,
                &format!(
                    "{} is missing (deploy/build-image.sh builds it, or: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu -p fastpath -p fastpath-hook --target-dir target/static)",
                    static_bin_dir().join(b).display()
                ),
            );
            return;
        }
    }
    let t0 = Instant::now();
    let mut fx = Fixture::without_switch(&peers, Rt::Runc, "0-1");
    let image = yaml("daemonset.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("the DaemonSet's image")
        .to_string();
    // A private store in the test's directory.
    let global = vec![
        format!("--root={}", fx.dir.join("pm/root").display()),
        format!("--runroot={}", fx.dir.join("pm/run").display()),
        "--cgroup-manager=cgroupfs".to_string(),
    ];
    let pm = Podman { global, name: format!("fpnode-{}", std::process::id()), image: image.clone() };

    // Build: deploy/build-image.sh with the binaries already built, into the private store.
    let o = run_with_timeout(
        Command::new("sh")
            .arg(workspace_dir().join("deploy/build-image.sh"))
            .args(["--no-build", &image])
            .env("PODMAN_FLAGS", pm.global.join(" "))
            .env("FASTPATH_STATIC_BIN_DIR", static_bin_dir()),
        Duration::from_mins(5),
    )
    .unwrap_or_else(|e| panic!("build-image.sh: {e}"));
    assert!(o.status.success(), "build-image.sh: {}", output_text(&o));

    // Run: fastpathd from the image as the DaemonSet runs it, its worker on CPU 0 as every
    // test's fastpathd (the hook's pool here is 0-1; other tests' switches are pinned there too).
    let run_dir = fx.dir.path().to_path_buf();
    assert_eq!(fx.ctl, run_dir.join("ctl.sock"));
    let (flags, args) = daemonset_flags(&pm.name, &run_dir, &fx.dir.join("config"));
    let o = run_with_timeout(
        pm.cmd().args(["run", "--detach", "--pull=never"]).args(&flags).arg(&image).args(&args).args(["--core", "0"]),
        Duration::from_mins(1),
    )
    .unwrap_or_else(|e| panic!("podman run: {e}"));
    assert!(o.status.success(), "podman run {flags:?} {image} {args:?}: {}", output_text(&o));
    let up = wait_for_socket(&fx.ctl, Duration::from_secs(20));
    assert!(up, "fastpathd in the image did not create {}: {}", fx.ctl.display(), pm.logs());

    // fastpathctl on the host talks to it, and it is the container's fastpathd.
    let o = run_with_timeout(
        Command::new(&peers.fastpathctl).arg("--ctl").arg(&fx.ctl).args(["status", "--json"]),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("fastpathctl status: {e}"));
    assert!(o.status.success(), "fastpathctl status: {}\n{}", output_text(&o), pm.logs());
    let status: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("fastpathctl status --json: {e}: {}", output_text(&o)));
    let state = status["state_file"].as_str().unwrap_or("");
    assert!(Path::new(state).starts_with(&run_dir), "fastpathd keeps its state in {state}, not in the node's run dir");
    let pid = status["pid"].as_u64().unwrap_or_else(|| panic!("status has no pid: {status}"));
    let mnt = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    assert!(mnt(&pid.to_string()).is_some(), "pid {pid} (the DaemonSet's hostPID) is not visible from the host");
    assert_ne!(mnt(&pid.to_string()), mnt("self"), "fastpathd {pid} is not in the image's container");

    // Two hook-started runc containers on the host get ports on it and exchange frames.
    let sink = format!("exec sink --port {SOCK} --check --count {FRAMES} --idle-exit 3 {APP}");
    let mut c = fx.run_cmd("fpsink", &sink, &CONTRACT, None);
    let mut sink_child = Some(spawn_piped(&mut c));
    wait_ports_up(&fx, 1, "fpsink", &mut sink_child);
    let gen = format!("exec pktgen --port {SOCK} --count {FRAMES} --rate 50000 {APP}");
    let mut c = fx.run_cmd("fpgen", &gen, &CONTRACT, None);
    let gen_child = spawn_piped(&mut c);
    let gen_out = wait_output(gen_child, RUN).unwrap_or_else(|e| panic!("pktgen container: {e}"));
    let sink_out = finish(&fx, "fpsink", sink_child.take().unwrap(), RUN);
    assert!(gen_out.status.success(), "pktgen container: {}\nhook log: {}", output_text(&gen_out), fx.hook_log());
    assert!(sink_out.status.success(), "sink container: {}\nfastpathd: {}", output_text(&sink_out), pm.logs());
    let r = last_json_line(&String::from_utf8_lossy(&sink_out.stdout))
        .unwrap_or_else(|| panic!("no sink JSON: {}", output_text(&sink_out)));
    let got = r["received"].as_u64().unwrap_or(0);
    assert!(got >= FRAMES * 99 / 100 && r["bad"] == 0, "sink: {r}");
    // poststop took the ports back from the image's fastpathd.
    fx.assert_released();
    let ports = fx.ports();
    assert!(ports.is_empty(), "ports left on the image's fastpathd: {ports:?}");
    eprintln!(
        "{test}: ok, {got}/{FRAMES} frames through fastpathd {pid} of {image}, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(pm);
}
