// fastpath-hook end to end with real runc, crun and podman: two unprivileged containers talk
// through fastpathd; clean host after exit, after a killed runtime (gc), under a race, on bad input.
//! Hook tests against real OCI runtimes.

mod hook_common;

use fastpath_oci::CONTRACT;
use hook_common::*;
use integration::{last_json_line, output_text, spawn_piped, wait_output, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SOCK: &str = "vu:/run/fastpath/sock/br0.sock";
const APP: &str = "--idle-sleep-us 20 --queue-size 4096 --json --quiet --link-timeout 30";

/// Ledger entries by id, once `n` are ready.
fn wait_ready(fx: &Fixture, n: usize, t: Duration) -> BTreeMap<String, Value> {
    let ok = wait_until(t, || fx.ready_entries().len() >= n);
    assert!(ok, "{n} ready ledger entries expected, ledger: {}", fx.ledger());
    fx.entries().into_iter().collect()
}

fn cgroups_of(entries: &BTreeMap<String, Value>) -> Vec<PathBuf> {
    entries
        .values()
        .flat_map(|e| e["cgroups"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(PathBuf::from))
        .collect()
}

fn host_hugepages_dev() -> String {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .find(|l| l.split(' ').nth(4) == Some("/dev/hugepages"))
        .and_then(|l| l.split(' ').nth(2))
        .unwrap_or("")
        .to_string()
}

/// Checks one contract container's report against the ledger.
fn check_container(who: &str, o: &Output, ledger: &BTreeMap<String, Value>, host_dev: &str) -> Vec<usize> {
    let out = String::from_utf8_lossy(&o.stdout);
    let all = output_text(o);
    let k = kv(&out);
    assert_eq!(k.get("UID").map(String::as_str), Some("1000"), "{who}: uid\n{all}");
    assert_eq!(k.get("CAPEFF").map(String::as_str), Some("0000000000000000"), "{who}: CapEff\n{all}");
    let cfg: Value =
        serde_json::from_str(k.get("CONFIG").unwrap_or_else(|| panic!("{who}: no config\n{all}"))).unwrap();
    let id = cfg["container_id"].as_str().unwrap();
    let entry = ledger.get(id).unwrap_or_else(|| panic!("{who}: {id} not in the ledger {ledger:?}"));
    assert_eq!(entry["cores"], cfg["cores"], "{who}: config.json and ledger disagree");
    assert_eq!(
        k.get("CPUS").cloned(),
        Some(cpu_list(&entry["cores"])),
        "{who}: Cpus_allowed_list is not the ledger's core\n{all}"
    );
    let m = k.get("HUGEMOUNT").cloned().unwrap_or_default();
    assert!(
        m.contains(" - hugetlbfs ") && m.contains("size=67108864") && m.contains("uid=1000") && m.contains("mode=700"),
        "{who}: {m}"
    );
    assert_ne!(m.split(' ').nth(2), Some(host_dev), "{who}: /dev/hugepages is the host's mount, not its own: {m}");
    assert_eq!(k.get("FILL").map(String::as_str), Some("ok"), "{who}: 64Mi did not fit\n{all}");
    assert_eq!(k.get("OVER").map(String::as_str), Some("refused"), "{who}: allocating past 64Mi worked\n{all}");
    assert_eq!(k.get("SOCKET").map(String::as_str), Some("br0.sock"), "{who}\n{all}");
    // RLIMIT_MEMLOCK covers the hugepages, or config.json says why not (no CAP_SYS_RESOURCE here).
    let m = &cfg["memlock"];
    assert!(m["soft"].as_u64() >= m["wanted"].as_u64() || m["note"].is_string(), "{who}: memlock {m}");
    entry["cores"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect()
}

fn contract(rt: Rt, test: &str) {
    let Some(peers) = require(test, Some(rt.name())) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, rt, "0-1");
    let free_before = free_hugepages();
    let host_dev = host_hugepages_dev();
    let ann = CONTRACT;
    let sink = format!("{CHECKS}\nexec sink --port {SOCK} --check --count {FRAMES} --idle-exit 3 {APP}");
    let mut c = fx.run_cmd("fpsink", &sink, &ann, None);
    let sink_child = spawn_piped(&mut c);
    // The sender starts once the receiver's port is up (the bridge floods to who is there).
    let up = fx.wait_links_up(1, Duration::from_secs(40));
    assert!(up, "the sink's port never came up: {:?}", fx.list());
    let gen = format!("{CHECKS}\nexec pktgen --port {SOCK} --count {FRAMES} --rate 50000 {APP}");
    let mut c = fx.run_cmd("fpgen", &gen, &ann, None);
    let gen_child = spawn_piped(&mut c);
    let ledger = wait_ready(&fx, 2, Duration::from_secs(40));
    let cgroups = cgroups_of(&ledger);
    let gen_out = wait_output(gen_child, Duration::from_secs(90)).unwrap_or_else(|e| panic!("pktgen container: {e}"));
    let sink_out = wait_output(sink_child, Duration::from_secs(90)).unwrap_or_else(|e| panic!("sink container: {e}"));
    assert!(gen_out.status.success(), "pktgen container: {}", output_text(&gen_out));
    assert!(sink_out.status.success(), "sink container: {}", output_text(&sink_out));
    let a = check_container("sink", &sink_out, &ledger, &host_dev);
    let b = check_container("pktgen", &gen_out, &ledger, &host_dev);
    assert!(a.iter().all(|c| !b.contains(c)), "both containers got core(s) {a:?} / {b:?}");
    let r = last_json_line(&String::from_utf8_lossy(&sink_out.stdout))
        .unwrap_or_else(|| panic!("no sink JSON: {}", output_text(&sink_out)));
    let got = r["received"].as_u64().unwrap_or(0);
    assert!(got >= FRAMES * 99 / 100 && r["bad"] == 0, "sink: {r}");
    // After both exit: poststop released everything.
    fx.assert_released();
    fx.assert_clean(&cgroups);
    assert_hugepages_back(free_before);
    eprintln!("{test}: ok, {got}/{FRAMES} frames, cores {a:?} and {b:?}, {:.1} s", t0.elapsed().as_secs_f64());
}

/// What the container of `gc_after_kill` allocates in its hugetlbfs (`fallocate -l 32M`).
const HELD: u64 = 32 << 20;

/// The pid of conmon for a podman container (the test kills only that process).
fn conmon_of(id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.starts_with("/usr/bin/conmon") || cmd.contains("conmon\0")).then_some(())?;
        cmd.contains(id).then_some(pid)
    })
}

fn gc_after_kill(rt: Rt, test: &str) {
    let Some(peers) = require(test, Some(rt.name())) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, rt, "0-1");
    let free_before = free_hugepages();
    let mut c = fx.run_cmd("fpkill", "fallocate -l 32M /dev/hugepages/held; sleep 3", &CONTRACT, None);
    let mut child = spawn_piped(&mut c);
    let ledger = wait_ready(&fx, 1, Duration::from_secs(40));
    let cgroups = cgroups_of(&ledger);
    let (id, e) = ledger.iter().next().unwrap();
    let pid = e["pid"].as_i64().unwrap() as i32;
    // The container runs its script (it holds its hugepages) before its runtime is killed.
    let held = PathBuf::from(format!("/proc/{pid}/root/dev/hugepages/held"));
    let running = wait_until(Duration::from_secs(30), || std::fs::metadata(&held).is_ok_and(|m| m.len() == HELD));
    assert!(running, "container {id} (pid {pid}) did not allocate {HELD} bytes in {} within 30 s", held.display());
    // The runtime dies mid-flight: no poststop will run.
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    if rt == Rt::Podman {
        if let Some(c) = conmon_of(id) {
            kill(Pid::from_raw(c), Signal::SIGKILL).unwrap();
        }
    }
    assert!(
        wait_until(Duration::from_secs(30), || !Path::new(&format!("/proc/{pid}")).exists()),
        "container pid {pid} lives on"
    );
    // What is under test: nothing releases the entry of a container whose runtime was killed.
    // This pause is the window in which a wrong release (a poststop, a cleanup) would show.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fx.entries().len(), 1, "the entry should outlive the killed runtime: {}", fx.ledger());
    assert_eq!(fx.ports().len(), 1);
    let o = fx.gc();
    assert!(o.status.success(), "gc: {}", output_text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["released"], serde_json::json!([id]), "{}", output_text(&o));
    fx.assert_clean(&cgroups);
    assert_hugepages_back(free_before);
    eprintln!("{test}: ok, {:.1} s", t0.elapsed().as_secs_f64());
}

fn race(rt: Rt, test: &str) {
    let Some(peers) = require(test, Some(rt.name())) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, rt, "1");
    let ann = [("fastpath.io/cores", "1"), ("fastpath.io/vhost-user", "br0")];
    let mut kids = Vec::new();
    for i in 0..10 {
        let mut c = fx.run_cmd(&format!("fprace{i}"), "echo STARTED; sleep 60", &ann, None);
        kids.push((i, spawn_piped(&mut c)));
    }
    // Nine fail; one runs.
    let end = Instant::now() + Duration::from_mins(2);
    let mut failed = Vec::new();
    while failed.len() < 9 && Instant::now() < end {
        let mut still = Vec::new();
        for (i, mut k) in kids {
            if k.try_wait().unwrap().is_some() {
                failed.push((i, k.wait_with_output().unwrap()));
            } else {
                still.push((i, k));
            }
        }
        kids = still;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kids.len(), 1, "exactly one container should win; {} still run, {} ended", kids.len(), failed.len());
    let ledger = wait_ready(&fx, 1, Duration::from_secs(20));
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let holder = ledger.keys().next().unwrap().clone();
    let msg = "annotation fastpath.io/cores: '1' cannot be met: the core pool 1 has 0 free of 1";
    let held = format!("core 1 held by container {holder}");
    for (i, o) in &failed {
        let all = output_text(o);
        assert!(!o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("STARTED"), "fprace{i} ran: {all}");
        // runc passes the hook's stderr on; crun drops it (the hook's log has it for all).
        if rt == Rt::Runc {
            assert!(
                all.contains(msg) && all.contains(&held),
                "fprace{i}: no message naming the pool and the holder:\n{all}"
            );
        }
    }
    let log = fx.hook_log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(msg)).collect();
    assert_eq!(lines.len(), 9, "hook.log should name the pool for each loser:\n{log}");
    assert!(lines.iter().all(|l| l.contains(&held)), "hook.log should name the holder:\n{log}");
    assert_eq!(fx.ports().len(), 1, "{:?}", fx.ports());
    let cgroups = cgroups_of(&ledger);
    // Stop the winner; its poststop releases the core.
    let (i, winner) = kids.pop().unwrap();
    let name = format!("fprace{i}");
    let rtbin = peers.runtime.clone().unwrap();
    let mut k = Command::new(&rtbin);
    match rt {
        Rt::Podman => k.args(fx.podman_global()).args(["kill", &name]),
        _ => k.arg("--root").arg(fx.rt_root()).args(["kill", &name, "KILL"]),
    };
    let ko = run_timeout(&mut k, Duration::from_secs(30));
    assert!(ko.status.success(), "kill: {}", output_text(&ko));
    wait_output(winner, Duration::from_mins(1)).unwrap_or_else(|e| panic!("{name}, killed: {e}"));
    if rt == Rt::Podman {
        fx.force_delete(&name);
    } else {
        // runc/crun `run` deletes the container (and runs poststop) when it exits.
        fx.assert_released();
    }
    for i in 0..10 {
        fx.force_delete(&format!("fprace{i}"));
    }
    fx.assert_released();
    fx.assert_clean(&cgroups);
    eprintln!("{test}: ok, winner {holder}, {:.1} s", t0.elapsed().as_secs_f64());
}

/// A bad-input case: container name, annotations, another hook.toml, the message expected.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<PathBuf>, String);

fn bad_input(rt: Rt, test: &str) {
    let Some(peers) = require(test, Some(rt.name())) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, rt, "0-1");
    let free_before = free_hugepages();
    let nowhere = fx.dir.join("no-fastpathd.sock");
    let other_cfg = fx.config_with_switch(&nowhere);
    let cases: Vec<Case> = vec![
        (
            "fpbad1",
            vec![("fastpath.io/colour", "blue")],
            None,
            "annotation fastpath.io/colour: 'blue' is not a fastpath annotation".into(),
        ),
        (
            "fpbad2",
            vec![("fastpath.io/hugepages", "64Mx")],
            None,
            "annotation fastpath.io/hugepages: '64Mx' is not a size (try 64Mi or 1Gi)".into(),
        ),
        (
            "fpbad3",
            vec![("fastpath.io/cores", "3")],
            None,
            "annotation fastpath.io/cores: '3' is more cores than the pool has: pool 0-1".into(),
        ),
        (
            "fpbad4",
            vec![("fastpath.io/vhost-user", "br9")],
            None,
            "annotation fastpath.io/vhost-user: 'br9' bridge 'br9' does not exist on fastpathd".into(),
        ),
        (
            "fpbad5",
            CONTRACT.to_vec(),
            Some(other_cfg),
            format!("annotation fastpath.io/vhost-user: 'br0' fastpathd at {}: not answering", nowhere.display()),
        ),
    ];
    for (name, ann, cfg, want) in cases {
        let logged = fx.hook_log().len();
        let mut c = fx.run_cmd(name, "echo STARTED", &ann, cfg.as_deref());
        let o = run_timeout(&mut c, Duration::from_mins(1));
        let all = output_text(&o);
        assert!(!o.status.success(), "{name}: the container started: {all}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains("STARTED"), "{name}: the container ran: {all}");
        // runc passes the hook's stderr on; crun drops it, so the hook's log must have it.
        let log = fx.hook_log()[logged..].to_string();
        assert!(log.contains(&want), "{name}: expected '{want}' in hook.log:\n{log}\nruntime: {all}");
        if rt == Rt::Runc {
            assert!(all.contains(&want), "{name}: expected '{want}' in:\n{all}");
        }
        fx.force_delete(name);
        fx.assert_clean(&[]);
        if rt != Rt::Podman {
            for ctrl in ["cpuset", "hugetlb"] {
                let p = PathBuf::from(format!("/sys/fs/cgroup/{ctrl}/{name}"));
                assert!(!p.exists(), "{name}: {} left", p.display());
            }
        }
    }
    assert_hugepages_back(free_before);
    eprintln!("{test}: ok, {:.1} s", t0.elapsed().as_secs_f64());
}

fn inject(rt: Rt, test: &str) {
    let Some(peers) = require(test, Some(rt.name())) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, rt, "0-1");
    let script = r#"cat /usr/local/lib/fastpath/libfastpath_net.so; ls /usr/local/lib/fastpath
if touch /usr/local/lib/fastpath/x 2>/dev/null; then echo WRITE=allowed; else echo WRITE=refused; fi
grep -o '"lib_dir": *"[^"]*"' /run/fastpath/config.json"#;
    let mut c = fx.run_cmd("fpinject", script, &[("fastpath.io/inject", "true")], None);
    let o = run_timeout(&mut c, Duration::from_mins(1));
    let all = output_text(&o);
    assert!(o.status.success(), "{all}\nhook.log: {}", fx.hook_log());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("not really a library") && out.contains("fastpath_net.h"), "{all}");
    assert_eq!(kv(&out).get("WRITE").map(String::as_str), Some("refused"), "{all}");
    assert!(out.contains(r#""lib_dir": "/usr/local/lib/fastpath""#), "{all}");
    fx.assert_released();
    fx.assert_clean(&[]);
    eprintln!("{test}: ok, {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn hook_inject_runc() {
    inject(Rt::Runc, "hook_inject_runc");
}
#[test]
fn hook_inject_crun() {
    inject(Rt::Crun, "hook_inject_crun");
}
#[test]
fn hook_inject_podman() {
    inject(Rt::Podman, "hook_inject_podman");
}
#[test]
fn hook_contract_runc() {
    contract(Rt::Runc, "hook_contract_runc");
}
#[test]
fn hook_contract_crun() {
    contract(Rt::Crun, "hook_contract_crun");
}
#[test]
fn hook_contract_podman() {
    contract(Rt::Podman, "hook_contract_podman");
}
#[test]
fn hook_gc_after_killed_runtime_runc() {
    gc_after_kill(Rt::Runc, "hook_gc_after_killed_runtime_runc");
}
#[test]
fn hook_gc_after_killed_runtime_crun() {
    gc_after_kill(Rt::Crun, "hook_gc_after_killed_runtime_crun");
}
#[test]
fn hook_gc_after_killed_runtime_podman() {
    gc_after_kill(Rt::Podman, "hook_gc_after_killed_runtime_podman");
}
#[test]
fn hook_race_for_one_core_runc() {
    race(Rt::Runc, "hook_race_for_one_core_runc");
}
#[test]
fn hook_race_for_one_core_crun() {
    race(Rt::Crun, "hook_race_for_one_core_crun");
}
#[test]
fn hook_race_for_one_core_podman() {
    race(Rt::Podman, "hook_race_for_one_core_podman");
}
#[test]
fn hook_bad_input_runc() {
    bad_input(Rt::Runc, "hook_bad_input_runc");
}
#[test]
fn hook_bad_input_crun() {
    bad_input(Rt::Crun, "hook_bad_input_crun");
}
#[test]
fn hook_bad_input_podman() {
    bad_input(Rt::Podman, "hook_bad_input_podman");
}
