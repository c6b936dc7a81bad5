// The node image end to end: deploy/build-image.sh builds it with podman (no registry pulls);
// podman runs its fastpathd with the namespaces, privilege and host mounts the DaemonSet
// declares, fastpathctl on the host talks to it, and two hook-started runc containers on the
// host get ports on it and exchange frames; its init container's install.sh fills a test node.
//! Node image test.

mod hook_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fastpath_oci::which;
use hook_common::*;
use integration::{
    output_text, run_with_timeout, skip_or_fail, static_bin_dir, wait_for_socket, workspace_dir, TestDir,
};
use serde_yaml::Value;

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
    /// The host pid of the container's fastpathd, once known: killed at the end whatever
    /// `podman rm` did (with the host's pid namespace, a removed container's process was seen
    /// to outlive it, polling core 0 for the rest of the suite).
    switch_pid: std::cell::Cell<Option<u32>>,
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
        if let Some(pid) = self.switch_pid.get() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "fastpathd" {
                quiet(Command::new("kill").args(["-9", &pid.to_string()]));
            }
        }
        quiet(self.cmd().args(["rmi", "--force", &self.image]));
        quiet(self.cmd().args(["system", "reset", "--force"]));
    }
}

/// Where a test puts one of the DaemonSet's host paths: the host directory and the path in
/// the container (`None`: not mounted).
type Place<'a> = &'a dyn Fn(&str, &str) -> Option<(PathBuf, String)>;

/// `podman run` flags for the DaemonSet's container `container`: the pod's namespaces, the
/// container's privilege and mounts, each hostPath where `place` says, the ConfigMap's files
/// in `cfg_dir` (each passed through `edit`); then the container's command and args.
fn daemonset_flags(
    container: &str,
    name: &str,
    place: Place,
    cfg_dir: &Path,
    edit: &dyn Fn(&str) -> String,
) -> (Vec<String>, Vec<String>) {
    let ds = yaml("daemonset.yaml");
    let spec = &ds["spec"]["template"]["spec"];
    let all = spec["initContainers"].as_sequence().into_iter().chain(spec["containers"].as_sequence()).flatten();
    let c = all
        .into_iter()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("daemonset.yaml: no container {container}"));
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
    for m in c["volumeMounts"].as_sequence().expect("volumeMounts") {
        let name = m["name"].as_str().unwrap();
        let at = m["mountPath"].as_str().unwrap();
        let vol = spec["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == name).unwrap();
        if let Some(host) = vol["hostPath"]["path"].as_str() {
            let Some((host, at)) = place(host, at) else { continue };
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
                std::fs::write(cfg_dir.join(k.as_str().unwrap()), edit(v.as_str().unwrap())).unwrap();
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
    let mut command = strs(&c["command"]);
    assert!(!command.is_empty(), "daemonset.yaml: {container} has no command");
    flags.push("--entrypoint".into());
    flags.push(command.remove(0));
    command.extend(strs(&c["args"]));
    (flags, command)
}

/// The podman store in `dir` and the image `deploy/build-image.sh` builds in it (the
/// DaemonSet's image); `None` (and a skip) when podman or the static binaries are missing.
fn build_image(test: &str, dir: &Path, name: &str) -> Option<Podman> {
    if which("podman").is_none() {
        skip_or_fail(test, "podman is not installed (apt-get install podman)");
        return None;
    }
    for b in ["fastpathd", "fastpathctl", "fastpath-hook"] {
        if !static_bin_dir().join(b).is_file() {
            let how = "deploy/build-image.sh builds it, or: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build \
                       --release --target x86_64-unknown-linux-gnu -p fastpath -p fastpath-hook --target-dir target/static";
            skip_or_fail(test, &format!("{} is missing ({how})", static_bin_dir().join(b).display()));
            return None;
        }
    }
    let image = yaml("daemonset.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("the DaemonSet's image")
        .to_string();
    // A private store in the test's directory.
    let global = vec![
        format!("--root={}", dir.join("pm/root").display()),
        format!("--runroot={}", dir.join("pm/run").display()),
        "--cgroup-manager=cgroupfs".to_string(),
    ];
    let pm = Podman { global, name: name.to_string(), image, switch_pid: std::cell::Cell::new(None) };
    let o = run_with_timeout(
        Command::new("sh")
            .arg(workspace_dir().join("deploy/build-image.sh"))
            .args(["--no-build", &pm.image])
            .env("PODMAN_FLAGS", pm.global.join(" "))
            .env("FASTPATH_STATIC_BIN_DIR", static_bin_dir()),
        Duration::from_mins(5),
    )
    .unwrap_or_else(|e| panic!("build-image.sh: {e}"));
    assert!(o.status.success(), "build-image.sh: {}", output_text(&o));
    Some(pm)
}

#[test]
fn node_image_fastpathd_serves_hook_containers() {
    let test = "node_image_fastpathd_serves_hook_containers";
    let Some(peers) = require(test, Some("runc")) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::without_switch(&peers, Rt::Runc, "0-1");
    let Some(pm) = build_image(test, fx.dir.path(), &format!("fpnode-{}", std::process::id())) else { return };
    let image = pm.image.clone();

    // Run: fastpathd from the image as the DaemonSet runs it, its worker on CPU 0 as every
    // test's fastpathd (the hook's pool here is 0-1; other tests' switches are pinned there too).
    let run_dir = fx.dir.path().to_path_buf();
    assert_eq!(fx.ctl, run_dir.join("ctl.sock"));
    // /run/fastpath is the test's directory, mounted at its own path like every other.
    let place = |host: &str, _at: &str| {
        let p = if host == NODE_RUN { run_dir.clone() } else { PathBuf::from(host) };
        Some((p.clone(), p.display().to_string()))
    };
    let ctl = format!("{}/ctl.sock", run_dir.display());
    let edit = |text: &str| text.replace(&format!("{NODE_RUN}/fastpathd.sock"), &ctl);
    let (flags, cmd) = daemonset_flags("fastpathd", &pm.name, &place, &fx.dir.join("config"), &edit);
    let o = run_with_timeout(
        pm.cmd().args(["run", "--detach", "--pull=never"]).args(&flags).arg(&image).args(&cmd).args(["--core", "0"]),
        Duration::from_mins(1),
    )
    .unwrap_or_else(|e| panic!("podman run: {e}"));
    assert!(o.status.success(), "podman run {flags:?} {image} {cmd:?}: {}", output_text(&o));
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
    pm.switch_pid.set(u32::try_from(pid).ok());
    let mnt = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    assert!(mnt(&pid.to_string()).is_some(), "pid {pid} (the DaemonSet's hostPID) is not visible from the host");
    assert_ne!(mnt(&pid.to_string()), mnt("self"), "fastpathd {pid} is not in the image's container");

    // Two hook-started runc containers on the host get ports on it and exchange frames.
    let got = pktgen_to_sink(&mut fx, "", &[], &|| format!("fastpathd: {}", pm.logs()));
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

/// Prints a loud note that `what` was not checked because this build lacks it.
fn pending(what: &str) {
    let stars = "*".repeat(72);
    let msg = format!("\n{stars}\nNOT CHECKED: {what} is not in this build yet\n{stars}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
}

#[test]
fn node_image_install_script_installs_the_node_parts() {
    let test = "node_image_install_script_installs_the_node_parts";
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail(test, "not root (podman run --privileged)");
        return;
    }
    let dir = TestDir::new("dinst");
    let Some(pm) = build_image(test, dir.path(), &format!("fpinst-{}", std::process::id())) else { return };
    // Each host path of the init container is a directory of the test's "node", mounted where
    // the manifest mounts it; the node's cgroups stay out of it (the ledger is empty: gc has
    // nothing to release) and /dev/hugepages is the host's.
    let node = dir.join("node");
    let place = |host: &str, at: &str| match host {
        "/sys/fs/cgroup" => None,
        "/dev/hugepages" => Some((PathBuf::from(host), at.to_string())),
        _ => {
            let p = node.join(host.trim_start_matches('/'));
            std::fs::create_dir_all(&p).unwrap();
            Some((p, at.to_string()))
        }
    };
    let (flags, cmd) = daemonset_flags("install", &pm.name, &place, &dir.join("config"), &str::to_string);
    let o = run_with_timeout(
        pm.cmd().args(["run", "--rm", "--pull=never"]).args(&flags).arg(&pm.image).args(&cmd),
        Duration::from_mins(2),
    )
    .unwrap_or_else(|e| panic!("podman run: {e}"));
    let out = output_text(&o);
    if o.status.success() {
        let cdi = node.join("etc/cdi/fastpath.io.yaml");
        let spec: Value = serde_yaml::from_str(
            &std::fs::read_to_string(&cdi).unwrap_or_else(|e| panic!("{}: {e}\n{out}", cdi.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", cdi.display()));
        assert!(spec["cdiVersion"].is_string() && spec["kind"].is_string(), "CDI spec: {spec:?}");
    } else if out.contains("unrecognized subcommand 'cdi'") {
        pending("`fastpath-hook cdi generate` (branch cdi), and the gc after it");
    } else {
        panic!("install.sh in the image: {out}");
    }
    // The hook, its library and config, its hooks.d files naming the installed hook and config.
    let hook = node.join("opt/fastpath/bin/fastpath-hook");
    let o = run_with_timeout(Command::new(&hook).arg("--version"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "the installed hook does not run: {}", output_text(&o));
    for f in ["libfastpath_net.so", "fastpath_net.h"] {
        assert!(node.join("opt/fastpath/lib").join(f).is_file(), "{f} not installed\n{out}");
    }
    let cm = yaml("configmap.yaml");
    let installed = std::fs::read_to_string(node.join("etc/fastpath/hook.toml")).unwrap_or_default();
    assert_eq!(cm["data"]["hook.toml"].as_str(), Some(installed.as_str()), "hook.toml is not the ConfigMap's");
    for d in ["usr/share/containers/oci/hooks.d", "etc/containers/oci/hooks.d"] {
        for stage in ["createRuntime", "createContainer", "poststop"] {
            let f = node.join(d).join(format!("fastpath-{stage}.json"));
            let v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}\n{out}", f.display())),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(v["hook"]["path"], "/opt/fastpath/bin/fastpath-hook", "{}", f.display());
            assert_eq!(
                v["hook"]["args"],
                serde_json::json!(["fastpath-hook", "--config", "/etc/fastpath/hook.toml", stage]),
                "{}",
                f.display()
            );
        }
    }
    // The CNI plugin and its network config, when the image has the plugin.
    if static_bin_dir().join("fastpath-cni").is_file() {
        assert!(node.join("opt/cni/bin/fastpath-cni").is_file(), "fastpath-cni not installed\n{out}");
        let conf = std::fs::read_to_string(node.join("etc/cni/net.d/99-fastpath-net.conf")).unwrap_or_default();
        assert_eq!(
            cm["data"]["fastpath-net.conf"].as_str(),
            Some(conf.as_str()),
            "the CNI config is not the ConfigMap's"
        );
    } else {
        pending("the fastpath-cni binary (branch cni)");
    }
    eprintln!("{test}: ok");
    drop(pm);
}
