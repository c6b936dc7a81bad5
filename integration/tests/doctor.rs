// `fastpathctl doctor` on this machine as it is, and with checks broken on purpose (hugepages
// unmounted in a private mount namespace, fastpathd stopped, the hook not installed): the status
// and the fix line each prints, and the fix, run, making the check pass. And fastpathd's JSON logs.
//! `fastpathctl doctor` and `--log-format json`, end to end.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration::{
    bin_dir, require, run_with_timeout, serial, spawn_fastpathd, wait_for_socket, Peers, TestDir, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A PATH with our binaries first (the fix lines name them by name).
fn path_with_bins() -> String {
    format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default())
}

/// A hook configuration with the pool on CPU 1 (the tests' fastpathd is on CPU 0).
fn hook_config(dir: &TestDir) -> PathBuf {
    let p = dir.join("hook.toml");
    std::fs::write(&p, "cores = \"1\"\n").unwrap();
    p
}

/// `fastpathctl --ctl CTL doctor --json --hook-config CFG --hooks-dir HOOKS`, run through
/// `wrap` (e.g. `unshare -m ... sh -c`): its exit code and its checks by name.
fn doctor_json(wrap: &[&str], ctl: &Path, cfg: &Path, hooks: &Path) -> (i32, Vec<Value>) {
    let ctl_bin = bin_dir().join("fastpathctl");
    let mut c = Command::new(wrap.first().copied().unwrap_or(ctl_bin.to_str().unwrap()));
    if !wrap.is_empty() {
        c.args(&wrap[1..]).arg(&ctl_bin);
    }
    c.arg("--ctl").arg(ctl).args(["doctor", "--json", "--hook-config"]).arg(cfg).arg("--hooks-dir").arg(hooks);
    c.env("PATH", path_with_bins());
    let out = run_with_timeout(&mut c, Duration::from_secs(30)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let checks: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON check ({e}): {l}\n{text}")))
        .collect();
    for c in &checks {
        for k in ["name", "status", "detail", "fix"] {
            assert!(c.get(k).is_some(), "check without '{k}': {c}");
        }
    }
    (out.status.code().unwrap_or(-1), checks)
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check '{name}' in {checks:#?}"))
}

fn status_of(checks: &[Value], name: &str) -> String {
    check(checks, name)["status"].as_str().unwrap().to_string()
}

fn fix_of(checks: &[Value], name: &str) -> String {
    check(checks, name)["fix"].as_str().unwrap_or_else(|| panic!("'{name}' has no fix: {checks:#?}")).to_string()
}

/// Runs a fix line with `sh -c` (our binaries on PATH), its output to files in `dir`.
fn run_fix(dir: &TestDir, fix: &str, wrap: &[&str]) {
    let mut c = if wrap.is_empty() { Command::new("sh") } else { Command::new(wrap[0]) };
    if !wrap.is_empty() {
        c.args(&wrap[1..]).arg("sh");
    }
    c.arg("-c").arg(fix).env("PATH", path_with_bins());
    c.stdin(Stdio::null())
        .stdout(File::create(dir.join("fix.out")).unwrap())
        .stderr(File::create(dir.join("fix.err")).unwrap());
    let st = c.status().unwrap();
    let err = std::fs::read_to_string(dir.join("fix.err")).unwrap_or_default();
    assert!(st.success(), "the fix '{fix}' failed ({st}): {err}");
}

fn install_hook(hooks: &Path) {
    let hook = bin_dir().join("fastpath-hook");
    let out = run_with_timeout(
        Command::new(&hook).arg("install").arg("--hooks-dir").arg(hooks).arg("--hook").arg(&hook),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn start_switch(peers: &Peers, dir: &TestDir) -> (integration::Proc, PathBuf) {
    let ctl = dir.join("ctl.sock");
    let fpd = spawn_fastpathd("fastpathd", peers, dir, &ctl, &["br0"], &[]);
    assert!(wait_for_socket(&ctl, SETUP_TIMEOUT), "fastpathd did not create {}", ctl.display());
    (fpd, ctl)
}

/// This machine as `cargo xtask setup` leaves it, with fastpathd running and the hook in a
/// hooks directory: hugepages reserved and mounted, the hugetlb controller, the crun fix, the
/// switch answering on CPU 0 outside the pool: nothing fails, so the exit status is 0.
#[test]
fn doctor_on_this_machine() {
    let Some(peers) = require("doctor_on_this_machine", &["fastpathd", "fastpathctl", "fastpath-hook"], false) else {
        return;
    };
    let _lock = serial();
    let dir = TestDir::new("doc");
    let cfg = hook_config(&dir);
    let hooks = dir.join("hooks.d");
    install_hook(&hooks);
    let (mut fpd, ctl) = start_switch(&peers, &dir);
    let (code, checks) = doctor_json(&[], &ctl, &cfg, &hooks);
    fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    for name in [
        "hugepages.reserved",
        "hugepages.mounted",
        "hugepages.cgroup",
        "cores.pool",
        "cores.switch",
        "numa",
        "cgroup.mode",
        "cgroup.crun-hugetlb",
        "runtime.podman",
        "runtime.crun",
        "runtime.runc",
        "fastpathd",
    ] {
        assert_eq!(status_of(&checks, name), "ok", "{name}: {}", check(&checks, name));
    }
    assert!(check(&checks, "fastpathd")["detail"].as_str().unwrap().contains("worker on CPU 0"));
    assert!(check(&checks, "cores.pool")["detail"].as_str().unwrap().starts_with("the hook gives containers cores 1"));
    // This kernel command line isolates nothing, and these VMs have no IOMMU.
    assert_eq!(status_of(&checks, "cores.isolcpus"), "warn");
    assert_eq!(status_of(&checks, "iommu.groups"), "warn");
    for c in checks.iter().filter(|c| c["status"] != "ok") {
        assert!(!c["fix"].as_str().unwrap_or_default().is_empty(), "a {} without a fix: {c}", c["status"]);
    }
    assert!(!checks.iter().any(|c| c["status"] == "fail"), "{checks:#?}");
    assert_eq!(code, 0);
    // The text form: one line per check, `STATUS NAME: DETAIL[; fix: COMMAND]`.
    let out = run_with_timeout(
        Command::new(peers.bin("fastpathctl"))
            .arg("--ctl")
            .arg(dir.join("gone.sock"))
            .args(["doctor", "--hook-config"])
            .arg(&cfg)
            .arg("--hooks-dir")
            .arg(&hooks),
        Duration::from_secs(30),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), checks.len(), "{text}");
    for l in text.lines() {
        let st = l.split_whitespace().next().unwrap();
        assert!(["ok", "warn", "fail"].contains(&st), "{l}");
        assert_eq!(st != "ok", l.contains("; fix: "), "{l}");
    }
    assert!(text.contains("fail fastpathd: "), "{text}");
}

/// Every hugetlbfs unmounted in a private mount namespace (the host keeps its own):
/// `hugepages.mounted` fails with the mount command, and that command, run in such a namespace,
/// makes it pass.
#[test]
fn doctor_hugepages_unmounted() {
    if require("doctor_hugepages_unmounted", &["fastpathctl"], false).is_none() {
        return;
    }
    let dir = TestDir::new("doch");
    let cfg = hook_config(&dir);
    let unmount_all =
        "awk '$3==\"hugetlbfs\"{print $2}' /proc/self/mounts | sort -r | while read m; do umount -l \"$m\"; done";
    let ns = ["unshare", "-m", "--propagation", "private", "sh", "-c", &format!("{unmount_all}; exec \"$0\" \"$@\"")];
    let (code, checks) = doctor_json(&ns, &dir.join("none.sock"), &cfg, &dir.join("hooks.d"));
    assert_eq!(status_of(&checks, "hugepages.mounted"), "fail", "{checks:#?}");
    let fix = fix_of(&checks, "hugepages.mounted");
    assert_eq!(fix, "mkdir -p /dev/hugepages && mount -t hugetlbfs none /dev/hugepages");
    assert_eq!(code, 1);
    // The fix, in a namespace broken the same way, then doctor again there.
    let ctl_bin = bin_dir().join("fastpathctl");
    let script = format!(
        "{unmount_all}; {fix} && \"{}\" --ctl {} doctor --json --hook-config {}",
        ctl_bin.display(),
        dir.join("none.sock").display(),
        cfg.display()
    );
    let out = run_with_timeout(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]),
        Duration::from_secs(30),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let after: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(status_of(&after, "hugepages.mounted"), "ok", "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(check(&after, "hugepages.mounted")["detail"], "hugetlbfs at /dev/hugepages");
    // The host's own mount is untouched.
    assert!(std::fs::read_to_string("/proc/self/mounts").unwrap().contains(" /dev/hugepages hugetlbfs "));
}

/// No fastpathd on the socket: `fastpathd` fails with the command that starts one there, and
/// that command does.
#[test]
fn doctor_fastpathd_stopped() {
    let Some(peers) = require("doctor_fastpathd_stopped", &["fastpathd", "fastpathctl"], false) else { return };
    let _lock = serial();
    let dir = TestDir::new("docs");
    let cfg = hook_config(&dir);
    let ctl = dir.join("ctl.sock");
    let hooks = dir.join("hooks.d");
    let (code, checks) = doctor_json(&[], &ctl, &cfg, &hooks);
    assert_eq!(status_of(&checks, "fastpathd"), "fail");
    assert_eq!(status_of(&checks, "cores.switch"), "warn");
    assert!(check(&checks, "fastpathd")["detail"].as_str().unwrap().contains("is fastpathd running?"));
    let fix = fix_of(&checks, "fastpathd");
    assert_eq!(fix, format!("fastpathd --ctl {} --state-dir {} &", ctl.display(), dir.path().display()));
    assert_eq!(code, 1);
    run_fix(&dir, &fix, &[]);
    assert!(wait_for_socket(&ctl, SETUP_TIMEOUT), "the fix did not start fastpathd on {}", ctl.display());
    let (_, after) = doctor_json(&[], &ctl, &cfg, &hooks);
    // The switch the fix started: stop it by its pid, which it reports.
    let st = run_with_timeout(
        Command::new(peers.bin("fastpathctl")).arg("--ctl").arg(&ctl).args(["status", "--json"]),
        Duration::from_secs(5),
    )
    .unwrap();
    let pid = serde_json::from_slice::<Value>(&st.stdout).ok().and_then(|v| v["pid"].as_i64());
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    assert!(pid.is_some(), "fastpathctl status: {}", String::from_utf8_lossy(&st.stdout));
    assert_eq!(status_of(&after, "fastpathd"), "ok", "{after:#?}");
    // Started without --core: its worker is not pinned.
    assert_eq!(status_of(&after, "cores.switch"), "warn");
    assert!(check(&after, "cores.switch")["detail"].as_str().unwrap().contains("not pinned"));
}

/// podman is installed and the hooks directory holds no hook: `runtime.podman` fails with the
/// install command, and that command fixes it.
#[test]
fn doctor_hook_not_installed() {
    if require("doctor_hook_not_installed", &["fastpathctl", "fastpath-hook"], false).is_none() {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        integration::skip_or_fail("doctor_hook_not_installed", "podman is not installed (cargo xtask setup)");
        return;
    }
    let dir = TestDir::new("dock");
    let cfg = hook_config(&dir);
    let hooks = dir.join("hooks.d");
    let (code, checks) = doctor_json(&[], &dir.join("none.sock"), &cfg, &hooks);
    assert_eq!(status_of(&checks, "runtime.podman"), "fail", "{checks:#?}");
    let fix = fix_of(&checks, "runtime.podman");
    assert_eq!(fix, format!("{} install --hooks-dir {}", bin_dir().join("fastpath-hook").display(), hooks.display()));
    assert_eq!(code, 1);
    run_fix(&dir, &fix, &[]);
    let (_, after) = doctor_json(&[], &dir.join("none.sock"), &cfg, &hooks);
    assert_eq!(status_of(&after, "runtime.podman"), "ok", "{after:#?}");
    assert!(hooks.join("fastpath-createRuntime.json").is_file());
}

/// `fastpathd --log-format json`: every line of its stderr is a JSON object with timestamp,
/// level, target and message, through start, a port added and removed, and a stop.
#[test]
fn fastpathd_json_logs() {
    let Some(peers) = require("fastpathd_json_logs", &["fastpathd", "fastpathctl"], false) else { return };
    let _lock = serial();
    let dir = TestDir::new("docj");
    let ctl = dir.join("ctl.sock");
    let mut args = integration::fastpathd_args(&ctl, &["br0"], &[]);
    args.extend(["--log-format".into(), "json".into()]);
    let mut fpd = integration::Proc::spawn("fastpathd", &dir, &peers.bin("fastpathd"), &args, &[]);
    assert!(wait_for_socket(&ctl, SETUP_TIMEOUT));
    let sock = dir.join("a.sock");
    let ctl_cmd = |a: &[&str]| {
        let out = run_with_timeout(
            Command::new(peers.bin("fastpathctl")).arg("--ctl").arg(&ctl).args(a),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(out.status.success(), "{a:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ctl_cmd(&["add-port", "--name", "a", "--socket", sock.to_str().unwrap()]);
    ctl_cmd(&["del-port", "a"]);
    fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    let err = fpd.stderr();
    assert!(err.lines().count() >= 3, "{err}");
    for l in err.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        for k in ["timestamp", "level", "target", "message"] {
            assert!(v[k].is_string(), "no '{k}' in {l}");
        }
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap()), "{l}");
    }
    assert!(err.contains(r#""message":"fastpathd running: control "#), "{err}");
    assert!(err.contains(r#""message":"fastpathd stopped""#), "{err}");
}

/// `fastpath-hook --log-format json`: a stage's lines are JSON objects with timestamp, level,
/// target, message, and the stage's span (its name and the container).
#[test]
fn hook_json_logs() {
    let Some(peers) = require("hook_json_logs", &["fastpath-hook"], false) else { return };
    let dir = TestDir::new("dochj");
    let cfg = dir.join("hook.toml");
    std::fs::write(
        &cfg,
        format!(
            "cores = \"1\"\nstate_dir = \"{}\"\nswitch_socket = \"{}\"\n",
            dir.join("state").display(),
            dir.join("none.sock").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(peers.bin("fastpath-hook"))
        .args(["--log-format", "json", "--config"])
        .arg(&cfg)
        .arg("poststop")
        .env("FASTPATH_HOOK_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"doctor-json","status":"stopped","bundle":"{}"}}"#,
        dir.path().display()
    );
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), state.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.lines().count() >= 1, "no log line: {err}");
    for l in err.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        for k in ["timestamp", "level", "target", "message"] {
            assert!(v[k].is_string(), "no '{k}' in {l}");
        }
        assert_eq!(v["span"]["name"], "hook", "{l}");
        assert_eq!(v["span"]["stage"], "poststop", "{l}");
        assert_eq!(v["span"]["container"], "doctor-json", "{l}");
    }
}
