// Soak: N (default 1000) container start/stop cycles through fastpath-hook under runc, each
// container sending frames through one long-lived fastpathd to a long-lived host sink; then
// fastpathd's fds/RSS/mappings, the host's mounts and hugepages, the hook's ledger and the
// switch's ports must be what they were before the first cycle.
//! Soak test of the OCI hook under runc.

#[path = "hook_common/mod.rs"]
mod hook_common;

use hook_common::{diff, fd_kinds, mappings, mounts, status_kb};

use fastpath_oci::{hook_stages, write_bundle, Mounts, Spec, CONTRACT};
use integration::{
    fastpathctl_list_with, fastpathd_args, fastpathd_port, last_json_line, link_up, output_text, port_stat,
    wait_ctl_idle, wait_until, Proc, TestDir,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TEST: &str = "soak_1000_container_cycles_runc";
/// Frames each cycle's container sends.
const FRAMES_PER_CYCLE: u64 = 1000;
/// The rate it sends them at (1000 frames: 5 ms).
const RATE: u64 = 200_000;
/// Cycles when `FASTPATH_SOAK_CYCLES` is not set.
const DEFAULT_CYCLES: u64 = 1000;
/// Progress line every this many cycles.
const PROGRESS_EVERY: u64 = 50;
/// fastpathd's RSS may grow this much (allocator noise: freed memory kept in arenas).
const RSS_TOLERANCE_KB: u64 = 2048;
/// The sink's switch port (fastpathd creates it at start; not an `fp-` port, so `gc` leaves it).
const SINK_PORT: &str = "hostsink";
/// The port the hook gives the container, as its /run/fastpath/config.json names it
/// (`ports[0].socket` for bridge br0).
const CONTAINER_PORT: &str = "vu:/run/fastpath/sock/br0.sock";
/// The core pool of the hook: CPU 1 (fastpathd's worker spins on CPU 0).
const POOL: &str = "1";
/// How long one `runc run` may take.
const CYCLE_TIMEOUT: Duration = Duration::from_mins(1);
/// How long fastpathd may take to settle before the figures are taken (see `Soak::settled`).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

fn cycles() -> u64 {
    hook_common::env_count("FASTPATH_SOAK_CYCLES", DEFAULT_CYCLES)
}

/// A counter of the sink's switch port (0 when it is not listed).
fn sink_stat(ports: &[Value], key: &str) -> u64 {
    port_stat(ports, SINK_PORT, key).unwrap_or(0)
}

/// Everything that must not grow, with enough detail to say what grew.
#[derive(Debug, Clone)]
struct Figures {
    /// fastpathd's open fds: what they point at (`socket:[123]` → `socket`).
    fds: Vec<String>,
    rss_kb: u64,
    /// fastpathd's mappings: permissions and path (`[anon]` for none).
    maps: Vec<String>,
    /// The host's mounts: mount point, type, source.
    mounts: Vec<String>,
    hugepages_free: u64,
    ledger: Vec<String>,
    ports: Vec<String>,
    /// Per-container socket directories left under `<state>/sock`.
    sock_dirs: Vec<String>,
    /// Containers runc still knows (its private --root).
    containers: Vec<String>,
    /// Cgroup directories of this test's containers (`<hierarchy>/soakN`, v1 or v2).
    cgroups: Vec<String>,
}

impl Figures {
    fn rows(&self) -> [(&'static str, u64); 10] {
        let n = |v: &Vec<String>| v.len() as u64;
        [
            ("fastpathd fds", n(&self.fds)),
            ("fastpathd RSS kB", self.rss_kb),
            ("fastpathd mappings", n(&self.maps)),
            ("host mounts", n(&self.mounts)),
            ("HugePages_Free", self.hugepages_free),
            ("ledger entries", n(&self.ledger)),
            ("switch ports", n(&self.ports)),
            ("hook socket dirs", n(&self.sock_dirs)),
            ("runc containers", n(&self.containers)),
            ("container cgroups", n(&self.cgroups)),
        ]
    }
}

/// The soak's world: a directory, a rootfs and bundle, a hook.toml, fastpathd and a host sink.
/// Dropping it deletes every container of its runc root, runs the hook's gc, then kills the
/// sink and fastpathd (Proc) and removes the directory (TestDir).
struct Soak {
    peers: hook_common::Peers,
    runc: PathBuf,
    root: PathBuf,
    config: PathBuf,
    state: PathBuf,
    ctl: PathBuf,
    bundle: PathBuf,
    sink: Proc,
    fastpathd: Proc,
    dir: TestDir,
    /// Container cgroup directories that were there before this test (not ours to clean).
    foreign_cgroups: Vec<String>,
    _lock: integration::Serial,
}

impl Soak {
    fn new(mut peers: hook_common::Peers) -> Self {
        let lock = integration::serial();
        let dir = TestDir::new("soak");
        // Private copies: other people rebuild target/ while a soak runs for minutes.
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        for p in [&mut peers.hook, &mut peers.fastpathd, &mut peers.fastpathctl, &mut peers.sink] {
            let copy = dir.join("bin").join(p.file_name().unwrap());
            std::fs::copy(&*p, &copy).unwrap_or_else(|e| panic!("copy {} to {}: {e}", p.display(), copy.display()));
            *p = copy;
        }
        let hook_common::HookFiles { config, state, ctl, rootfs, .. } =
            hook_common::HookFiles::write(&dir, &peers, POOL);
        let sink_sock = dir.join("sink.sock");
        let mut fastpathd = Proc::spawn(
            "fastpathd",
            &dir,
            &peers.fastpathd,
            &fastpathd_args(&ctl, &["br0"], &[fastpathd_port("br0", SINK_PORT, "vhost", &sink_sock)]),
            &[],
        );
        assert!(
            wait_until(Duration::from_secs(10), || fastpathctl_list_with(&peers.fastpathctl, &ctl).is_ok()),
            "{TEST}: fastpathd did not answer on {}:\n{}",
            ctl.display(),
            fastpathd.describe(20, 0)
        );
        let sink = Proc::spawn(
            "sink",
            &dir,
            &peers.sink,
            &[
                "--port".into(),
                format!("vu:{}", sink_sock.display()),
                "--check".into(),
                "--idle-sleep-us".into(),
                "20".into(),
                "--queue-size".into(),
                "1024".into(),
                "--link-timeout".into(),
                "10".into(),
                "--json".into(),
                "--quiet".into(),
            ],
            &[],
        );
        let runc = peers.runtime.clone().expect("require() was asked for runc");
        let mut s = Soak {
            peers,
            runc,
            root: dir.join("runc-root"),
            config,
            state,
            ctl,
            bundle: dir.join("bundle"),
            sink,
            fastpathd,
            dir,
            foreign_cgroups: container_cgroups(),
            _lock: lock,
        };
        let up =
            wait_until(Duration::from_secs(15), || s.list_ports().is_ok_and(|l| link_up(&l, SINK_PORT) == Some(true)));
        assert!(up, "{TEST}: the host sink's port never came up: {:?}\n{}", s.list_ports(), s.describe());
        s.write_bundle(&rootfs);
        s
    }

    /// The bundle every cycle runs: pktgen (no shell) as uid 1000 without capabilities, with
    /// the contract's annotations and the hook at createRuntime, createContainer and poststop.
    fn write_bundle(&mut self, rootfs: &Path) {
        let hooks = hook_stages(&self.peers.hook, &self.config);
        let (count, rate) = (FRAMES_PER_CYCLE.to_string(), RATE.to_string());
        let args = [
            "/bin/pktgen",
            "--port",
            CONTAINER_PORT,
            "--count",
            &count,
            "--rate",
            &rate,
            "--nbufs",
            "2048",
            "--queue-size",
            "256",
            "--idle-sleep-us",
            "20",
            "--link-timeout",
            "20",
            "--json",
            "--quiet",
        ];
        let spec = Spec {
            env: &["RUST_LOG=warn"],
            annotations: &CONTRACT,
            hooks: Some(&hooks),
            mounts: Mounts::Minimal,
            ..Spec::new("soak", rootfs, &args)
        };
        write_bundle(&self.bundle, &spec).unwrap_or_else(|e| panic!("{TEST}: {e}"));
    }

    /// fastpathd's ports with their counters.
    fn list_ports(&self) -> Result<Vec<Value>, String> {
        fastpathctl_list_with(&self.peers.fastpathctl, &self.ctl)
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(&self.root);
        c
    }

    fn containers(&self) -> Vec<String> {
        let out = self.runc().args(["list", "-q"]).stdin(Stdio::null()).stderr(Stdio::null()).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
    }

    fn ledger(&self) -> Vec<String> {
        let t = std::fs::read_to_string(self.state.join("ledger.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
        v["containers"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    fn sock_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("sock"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    fn hook_log(&self) -> String {
        std::fs::read_to_string(self.state.join("hook.log")).unwrap_or_default()
    }

    /// fastpathd's and the sink's logs, the hook's log: for failure messages.
    fn describe(&mut self) -> String {
        let mut s = format!("--- test directory {}\n", self.dir.path().display());
        s.push_str(&self.fastpathd.describe(30, 0));
        s.push_str(&self.sink.describe(10, 5));
        // Every cycle logs the same RLIMIT_MEMLOCK warning (no CAP_SYS_RESOURCE here): leave those out.
        let log = self.hook_log();
        let memlock = log.lines().filter(|l| l.contains("warning: RLIMIT_MEMLOCK")).count();
        let tail: Vec<&str> = log.lines().rev().filter(|l| !l.contains("warning: RLIMIT_MEMLOCK")).take(20).collect();
        let _ = writeln!(s, "--- hook.log ({memlock} RLIMIT_MEMLOCK warnings left out), last {} lines:", tail.len());
        for l in tail.iter().rev() {
            let _ = writeln!(s, "    | {l}");
        }
        s.push_str(&integration::machine_note());
        s
    }

    /// Whether fastpathd has settled back to `before`: no control connection open, and no
    /// more fds and mappings than then.
    fn settled(&self, before: &Figures) -> bool {
        let pid = self.fastpathd.pid();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(usize::MAX, Iterator::count);
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_or(usize::MAX, |m| m.lines().count());
        integration::ctl_connections(&self.ctl) == 0 && fds <= before.fds.len() && maps <= before.maps.len()
    }

    /// The figures; fastpathd's own first, before this test talks to its control socket
    /// (a control connection is an fd until fastpathd has read its end of it).
    fn figures(&self) -> Figures {
        let pid = self.fastpathd.pid();
        let fds = fd_kinds(pid);
        let rss_kb = status_kb(pid, "VmRSS:");
        let maps = mappings(pid);
        let mounts = mounts();
        let hugepages_free = hook_common::free_hugepages();
        let ports = self.list_ports().map_or_else(
            |e| vec![format!("(list failed: {e})")],
            |l| l.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect(),
        );
        Figures {
            fds,
            rss_kb,
            maps,
            mounts,
            hugepages_free,
            ledger: self.ledger(),
            ports,
            sock_dirs: self.sock_dirs(),
            containers: self.containers(),
            cgroups: container_cgroups(),
        }
    }
}

/// The name of cycle `i`'s container.
fn container_name(i: u64) -> String {
    format!("soak{i}")
}

/// Directories under /sys/fs/cgroup (v2) or /sys/fs/cgroup/<hierarchy> (v1) named like a
/// container of this test: runc's default cgroup path is the container id.
fn container_cgroups() -> Vec<String> {
    let ours = |e: &std::fs::DirEntry| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n.strip_prefix("soak").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            && e.file_type().is_ok_and(|t| t.is_dir())
    };
    let mut v = Vec::new();
    for top in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        if ours(&top) {
            v.push(top.path().display().to_string());
        } else if top.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = std::fs::read_dir(top.path()).into_iter().flatten().flatten();
            v.extend(sub.filter(ours).map(|e| e.path().display().to_string()));
        }
    }
    v
}

impl Drop for Soak {
    fn drop(&mut self) {
        for name in self.containers() {
            eprintln!("{TEST}: deleting leftover container {name}");
            let _ = self
                .runc()
                .args(["delete", "--force", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = integration::run_with_timeout(
            Command::new(&self.peers.hook).arg("--config").arg(&self.config).args(["gc", "--json"]),
            Duration::from_secs(20),
        );
        // A runc killed before it saved the container's state leaves its cgroups behind (runc
        // list does not know the container): kill what is left in them and remove them.
        for cg in container_cgroups().into_iter().filter(|c| !self.foreign_cgroups.contains(c)) {
            let procs = std::fs::read_to_string(Path::new(&cg).join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
            let gone = wait_until(Duration::from_secs(5), || std::fs::remove_dir(&cg).is_ok());
            eprintln!("{TEST}: leftover cgroup {cg}: {}", if gone { "removed" } else { "could not remove it" });
        }
        // Then the fields: the sink and fastpathd are killed (Proc), the directory removed (TestDir).
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[test]
fn soak_1000_container_cycles_runc() {
    let Some(peers) = hook_common::require(TEST, Some("runc")) else { return };
    let n = cycles();
    let mut soak = Soak::new(peers);
    // The setup's control connections closed: fastpathd's fds are its own.
    let idle = wait_ctl_idle(&soak.ctl, SETTLE_TIMEOUT);
    assert!(idle, "{TEST}: fastpathd kept a control connection open for {SETTLE_TIMEOUT:?}\n{}", soak.describe());
    let before = soak.figures();
    let ports = soak.list_ports().unwrap_or_else(|e| panic!("{TEST}: {e}\n{}", soak.describe()));
    let mut delivered = sink_stat(&ports, "tx_packets");
    let mut sink_drops = sink_stat(&ports, "drop_ring_full");
    eprintln!("{TEST}: {n} cycles of {FRAMES_PER_CYCLE} frames at {RATE}/s, fastpathd pid {}", soak.fastpathd.pid());
    let t0 = Instant::now();
    let mut last = (0u64, t0);
    let mut run_times = Vec::with_capacity(n as usize);
    let mut check_time = Duration::ZERO;
    for i in 1..=n {
        let name = container_name(i);
        let t = Instant::now();
        let o =
            hook_common::run_timeout(soak.runc().args(["run", "--bundle"]).arg(&soak.bundle).arg(&name), CYCLE_TIMEOUT);
        run_times.push(t.elapsed());
        let tc = Instant::now();
        let out = String::from_utf8_lossy(&o.stdout);
        let sent = last_json_line(&out).and_then(|j| j["sent"].as_u64());
        assert!(
            o.status.success() && sent == Some(FRAMES_PER_CYCLE),
            "{TEST}: cycle {i}: expected the container to exit 0 after pktgen sent {FRAMES_PER_CYCLE} frames; \
                 got sent={sent:?}\nrunc run {name}: {}\n{}",
            output_text(&o),
            soak.describe()
        );
        // runc run returns after the poststop hook: the container's port is gone, its frames
        // were forwarded (or lost) by then, and nothing of it may be in the ledger.
        let ports = soak.list_ports().unwrap_or_else(|e| panic!("{TEST}: cycle {i}: {e}\n{}", soak.describe()));
        let (now, drops) = (sink_stat(&ports, "tx_packets"), sink_stat(&ports, "drop_ring_full"));
        let ledger = soak.ledger();
        let names: Vec<_> = ports.iter().map(|p| p["name"].clone()).collect();
        assert!(
            ports.len() == 1 && ledger.is_empty() && now - delivered == FRAMES_PER_CYCLE && drops == sink_drops,
            "{TEST}: cycle {i}: expected after `runc run` returned: only port {SINK_PORT} (got {names:?}), \
                 an empty ledger (got {ledger:?}), {FRAMES_PER_CYCLE} more frames delivered to the sink (got {}), \
                 no sink drops (drop_ring_full {sink_drops} -> {drops})\npktgen: {}\nports: {}\n{}",
            now - delivered,
            out.trim(),
            serde_json::to_string(&ports).unwrap_or_default(),
            soak.describe()
        );
        delivered = now;
        sink_drops = drops;
        check_time += tc.elapsed();
        if i % PROGRESS_EVERY == 0 || i == n {
            let el = t0.elapsed().as_secs_f64();
            let recent = (i - last.0) as f64 / last.1.elapsed().as_secs_f64();
            eprintln!(
                "{TEST}: cycle {i}/{n}: {el:.1} s elapsed, {:.2} cycles/s (last {}: {recent:.2}/s), fastpathd RSS {} kB",
                i as f64 / el,
                i - last.0,
                status_kb(soak.fastpathd.pid(), "VmRSS:")
            );
            last = (i, Instant::now());
        }
    }
    let total = t0.elapsed();
    // The switch settles: its control connections closed, and what it freed lazily (if it
    // does) freed. If that never happens, the figures below say what grew.
    wait_until(SETTLE_TIMEOUT, || soak.settled(&before));
    let mut after = soak.figures();
    if after.hugepages_free < before.hugepages_free {
        // The pool is the host's: other people's processes (fuzzers, benchmarks) take and give
        // back pages meanwhile. Ours are back once the count is, within 30 s.
        wait_until(Duration::from_secs(30), || hook_common::free_hugepages() >= before.hugepages_free);
        after = soak.figures();
    }
    // The sink's result: every frame of every cycle, intact.
    soak.sink.stop(Signal::SIGINT, Duration::from_secs(5));
    let sink = soak.sink.last_json();
    let received = sink.as_ref().and_then(|j| j["received"].as_u64());
    let bad = sink.as_ref().and_then(|j| j["bad"].as_u64());
    let foreign = sink.as_ref().and_then(|j| j["foreign"].as_u64());

    run_times.sort();
    let mut report = format!(
        "{TEST}: {n} cycles in {:.1} s: {:.1} ms per cycle, {:.2} cycles/s; `runc run` ms: min {:.0} median {:.0} \
         p90 {:.0} p99 {:.0} max {:.0}; checks per cycle {:.1} ms\n",
        total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / n.max(1) as f64,
        n as f64 / total.as_secs_f64(),
        percentile(&run_times, 0.0),
        percentile(&run_times, 0.5),
        percentile(&run_times, 0.9),
        percentile(&run_times, 0.99),
        percentile(&run_times, 1.0),
        check_time.as_secs_f64() * 1000.0 / n.max(1) as f64,
    );
    let _ = writeln!(report, "  {:<20} {:>10} {:>10} {:>8}", "resource", "before", "after", "growth");
    let mut problems = Vec::new();
    for ((what, b), (_, a)) in before.rows().into_iter().zip(after.rows()) {
        let _ = writeln!(report, "  {what:<20} {b:>10} {a:>10} {:>+8}", a as i64 - b as i64);
        let allowed = if what == "fastpathd RSS kB" { RSS_TOLERANCE_KB } else { 0 };
        if what == "HugePages_Free" {
            if a < b {
                problems.push(format!("{what} fell from {b} to {a} over {n} cycles (and did not come back in 30 s)"));
            }
        } else if a > b + allowed {
            problems.push(format!("{what} grew from {b} to {a} over {n} cycles"));
        }
    }
    let _ = writeln!(
        report,
        "  sink: received {received:?} of {} (bad {bad:?}, foreign {foreign:?}); switch delivered {delivered}",
        n * FRAMES_PER_CYCLE
    );
    eprint!("{report}");
    if let Some(p) = problems.iter_mut().find(|p| p.starts_with("fastpathd RSS")) {
        let _ = write!(
            p,
            " (more than the {RSS_TOLERANCE_KB} kB allowed for allocator noise: {:.1} kB per cycle)",
            (after.rss_kb - before.rss_kb) as f64 / n.max(1) as f64
        );
    }
    let details = [
        ("fastpathd fds", diff(&before.fds, &after.fds)),
        ("fastpathd mappings", diff(&before.maps, &after.maps)),
        ("host mounts", diff(&before.mounts, &after.mounts)),
        ("ledger entries", diff(&before.ledger, &after.ledger)),
        ("switch ports", diff(&before.ports, &after.ports)),
        ("hook socket dirs", diff(&before.sock_dirs, &after.sock_dirs)),
        ("runc containers", diff(&before.containers, &after.containers)),
        ("container cgroups", diff(&before.cgroups, &after.cgroups)),
    ];
    for p in &mut problems {
        if let Some((_, d)) = details.iter().find(|(w, d)| p.starts_with(w) && !d.is_empty()) {
            let _ = write!(p, ": {d}");
        }
        if p.starts_with("HugePages_Free") {
            let _ = write!(p, "; processes mapping hugepages now: {:?}", hook_common::hugepage_holders());
        }
    }
    let want = n * FRAMES_PER_CYCLE;
    if received != Some(want) || bad != Some(0) || foreign != Some(0) {
        problems.push(format!(
            "the host sink should have received all {want} frames intact (bad 0, foreign 0); its result: {}",
            sink.map_or_else(|| "no JSON line".into(), |j| j.to_string())
        ));
    }
    assert!(problems.is_empty(), "{TEST} FAILED:\n  * {}\n{report}{}", problems.join("\n  * "), soak.describe());
}
