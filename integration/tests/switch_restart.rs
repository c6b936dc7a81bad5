// fastpathd killed (-9) and started again as its systemd unit would, 20 times under ten runc
// containers' traffic; and `fastpathctl upgrade` under traffic. Outages printed, resources checked.
//! Restarts and upgrades of the switch under traffic.

#[path = "hook_common/mod.rs"]
mod hook_common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hook_common::{diff, fd_kinds, free_hugepages, hugepage_holders, mappings, mounts, Fixture, Rt};
use integration::{
    fastpathctl_list_with, last_json_line, output_text, require, run_with_timeout, serial, spawn_piped, wait_ctl_idle,
    wait_output, wait_until, workspace_dir, Proc, TestDir,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const TEST: &str = "switch_restart_kill9_ten_containers_runc";
/// pktgen → sink pairs, each on its own bridge (a sink sends nothing, so its bridge floods
/// to every other port: one pair per bridge keeps each sink's stream its own).
const PAIRS: usize = 5;
/// Rounds of kill -9 and restart when `FASTPATH_RESTART_ROUNDS` is not set.
const DEFAULT_ROUNDS: u32 = 20;
/// Frames per second each pktgen sends.
const RATE: u64 = 10_000;
/// Ring entries of the containers' ports: 100 ms of traffic, for containers waiting for a CPU.
const QUEUE: u64 = 1024;
/// Frames a round may lose per pair: what sat in pktgen's transmit ring and the sink's
/// receive ring when the switch died, and the switch's bursts in flight. pktgen pauses while
/// its link is down (those frames are never numbered), so nothing else may go missing.
const LOSS_PER_ROUND: u64 = 2 * QUEUE + 64;
/// How long traffic runs through each new switch before the figures are compared.
const STEADY: Duration = Duration::from_millis(400);
/// How long a new switch may take to forward every pair's frames.
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);

fn rounds() -> u32 {
    let n = hook_common::env_count("FASTPATH_RESTART_ROUNDS", DEFAULT_ROUNDS.into());
    u32::try_from(n).unwrap_or_else(|_| panic!("FASTPATH_RESTART_ROUNDS={n}: too many rounds"))
}

fn bridge(k: usize) -> String {
    format!("br{k}")
}

/// fastpathd's command line in its systemd unit (`fastpath/dist/fastpathd.service`), with
/// `bin` and `config` in place of the installed paths: how systemd starts it, every time.
fn unit_command(bin: &Path, config: &Path) -> Vec<String> {
    let unit_path = workspace_dir().join("fastpath/dist/fastpathd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap_or_else(|e| panic!("{}: {e}", unit_path.display()));
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("the unit has an ExecStart= line");
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert!(words[0].ends_with("/fastpathd"), "ExecStart= starts with fastpathd: {exec}");
    words[0] = bin.display().to_string();
    let cfg = words
        .iter_mut()
        .find(|w| std::path::Path::new(w.as_str()).extension().is_some_and(|e| e == "toml"))
        .expect("ExecStart= names a config file");
    *cfg = config.display().to_string();
    words.drain(1..).collect()
}

/// Frames delivered to each bridge's sink by the switch now (the most any port of the bridge
/// sent: a sink's port forwards the pair's stream), `None` for a bridge with no port listed.
fn delivered(list: &[Value]) -> Vec<Option<u64>> {
    (0..PAIRS)
        .map(|k| {
            list.iter()
                .filter(|p| p["bridge"] == bridge(k).as_str())
                .filter_map(|p| p["stats"]["tx_packets"].as_u64())
                .max()
        })
        .collect()
}

/// What must be the same after every restart as before the first, once traffic flows again.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    fds: Vec<String>,
    maps: Vec<String>,
    mounts: Vec<String>,
    hugepages_free: u64,
    /// The hook's ledger: each container id with its status.
    ledger: Vec<String>,
    /// The switch's ports: name, bridge and link state.
    ports: Vec<String>,
}

impl Figures {
    /// What differs from `base`, one line per kind of resource.
    fn differences(&self, base: &Figures) -> Vec<String> {
        let mut d = Vec::new();
        for (what, a, b) in [
            ("fastpathd fds", &self.fds, &base.fds),
            ("fastpathd mappings", &self.maps, &base.maps),
            ("host mounts", &self.mounts, &base.mounts),
            ("ledger", &self.ledger, &base.ledger),
            ("switch ports", &self.ports, &base.ports),
        ] {
            let mut a = a.clone();
            let mut b = b.clone();
            a.sort();
            b.sort();
            if a != b {
                d.push(format!("{what}: {} → {}: {}", b.len(), a.len(), diff(&b, &a)));
            }
        }
        if self.hugepages_free < base.hugepages_free {
            d.push(format!(
                "HugePages_Free {} → {} (mapping hugepages now: {:?})",
                base.hugepages_free,
                self.hugepages_free,
                hugepage_holders()
            ));
        }
        d
    }
}

/// The test's world: a hook fixture (runc, its ledger and rootfs) whose fastpathd is replaced
/// by one started from the systemd unit's command line, and the ten containers.
struct World {
    fx: Fixture,
    cmd: Vec<String>,
    bin: PathBuf,
    /// Each container: its name and its `runc run` (in the foreground, output piped).
    containers: Vec<(String, Option<Child>)>,
}

impl World {
    fn new(peers: &hook_common::Peers) -> Self {
        let mut fx = Fixture::new(peers, Rt::Runc, "1");
        // The fixture's own fastpathd goes: this test's starts as the unit starts it.
        fx.stop_switch();
        let bin = fx.dir.join("fastpathd");
        std::fs::copy(&peers.fastpathd, &bin).expect("a private copy of fastpathd");
        let config = fx.dir.join("fastpathd.toml");
        let bridges: Vec<String> = (0..PAIRS).map(|k| format!("\"{}\"", bridge(k))).collect();
        let toml = format!(
            "ctl_socket = \"{}\"\nstate_dir = \"{}\"\ncore = 0\nbridges = [{}]\n",
            fx.ctl.display(),
            fx.state.display(),
            bridges.join(", ")
        );
        std::fs::write(&config, toml).expect("fastpathd.toml");
        let cmd = unit_command(&bin, &config);
        let mut w = World { fx, cmd, bin, containers: vec![] };
        w.start_switch("fastpathd-0");
        w
    }

    /// Starts fastpathd from the unit's command line and waits until it answers.
    fn start_switch(&mut self, name: &str) -> Instant {
        let t = Instant::now();
        let sw = Proc::spawn(name, &self.fx.dir, &self.bin, &self.cmd, &[]);
        self.fx.fastpathd = Some(sw);
        let ok = wait_until(Duration::from_secs(10), || self.list().is_ok());
        if !ok {
            let ctl = self.fx.ctl.display().to_string();
            panic!("{TEST}: {name} did not answer on {ctl}\n{}", self.describe());
        }
        t
    }

    fn switch_pid(&self) -> u32 {
        self.fx.fastpathd.as_ref().expect("a running fastpathd").pid()
    }

    fn list(&self) -> Result<Vec<Value>, String> {
        fastpathctl_list_with(&self.fx.peers.fastpathctl, &self.fx.ctl)
    }

    /// `fastpathctl status`: when the switch forwarded its first frame (ms after its start).
    fn first_frame_ms(&self) -> Option<f64> {
        let o = run_with_timeout(
            Command::new(&self.fx.peers.fastpathctl).arg("--ctl").arg(&self.fx.ctl).args(["status", "--json"]),
            Duration::from_secs(5),
        )
        .ok()?;
        serde_json::from_slice::<Value>(&o.stdout).ok()?["first_frame_ms"].as_f64()
    }

    /// Starts container `name` on bridge `br` running `app` (pktgen or sink) with `args`.
    fn run(&mut self, name: &str, br: &str, app: &str, args: &str) {
        let script = format!(
            "exec {app} --port vu:/run/fastpath/sock/{br}.sock {args} --queue-size {QUEUE} --idle-sleep-us 50 \
             --link-timeout 30 --json --quiet"
        );
        let ann = [("fastpath.io/hugepages", "32Mi"), ("fastpath.io/vhost-user", br)];
        let mut c = self.fx.run_cmd(name, &script, &ann, None);
        self.containers.push((name.to_string(), Some(spawn_piped(&mut c))));
    }

    /// Sends SIGINT to container `name`'s app and collects its JSON result.
    fn stop(&mut self, name: &str) -> Value {
        let runc = self.fx.peers.runtime.clone().expect("runc");
        let _ = Command::new(runc).arg("--root").arg(self.fx.rt_root()).args(["kill", name, "INT"]).status();
        let child = self.containers.iter_mut().find(|(n, _)| n == name).and_then(|(_, c)| c.take());
        let o = wait_output(child.expect("a running container"), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{TEST}: container {name}: {e}"));
        last_json_line(&String::from_utf8_lossy(&o.stdout))
            .unwrap_or_else(|| panic!("{TEST}: container {name} printed no result: {}", output_text(&o)))
    }

    /// The figures; fastpathd's own first, once it holds no control connection (one is an fd
    /// of its until it has read the client's end), before this asks it for its ports.
    fn figures(&self) -> Figures {
        let pid = self.switch_pid();
        wait_ctl_idle(&self.fx.ctl, Duration::from_secs(2));
        // Each switch writes its own log files (fastpathd-N.out, .err): the same fds.
        let fds = fd_kinds(pid)
            .into_iter()
            .map(|f| match f.rsplit_once("/fastpathd-") {
                Some((dir, rest)) => {
                    format!("{dir}/fastpathd-N{}", rest.trim_start_matches(|c: char| c.is_ascii_digit()))
                }
                None => f,
            })
            .collect();
        let maps = mappings(pid);
        let ledger = self.fx.entries().iter().map(|(id, e)| format!("{id} {}", e["status"])).collect();
        let ports = self.list().map_or_else(
            |e| vec![format!("(list failed: {e})")],
            |l| l.iter().map(|p| format!("{} {} up={}", p["name"], p["bridge"], p["stats"]["link_up"])).collect(),
        );
        Figures { fds, maps, mounts: mounts(), hugepages_free: free_hugepages(), ledger, ports }
    }

    /// Waits (up to 5 s) for the figures to be `base`'s; the differences left otherwise.
    fn settle_to(&self, base: &Figures) -> Vec<String> {
        let mut left = vec![];
        let same = wait_until(Duration::from_secs(5), || {
            left = self.figures().differences(base);
            left.is_empty()
        });
        if same {
            vec![]
        } else {
            left
        }
    }

    fn describe(&mut self) -> String {
        let mut s = format!("--- test directory {}\n", self.fx.dir.path().display());
        if let Some(sw) = self.fx.fastpathd.as_mut() {
            s.push_str(&sw.describe(30, 0));
        }
        let _ = writeln!(s, "--- ledger: {}", self.fx.ledger());
        s.push_str(&integration::machine_note());
        s
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The fixture deletes the containers, runs the hook's gc and stops fastpathd.
        for (_, c) in &mut self.containers {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn percentiles(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |p: f64| s.get(((s.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0);
    format!("min {:.1} median {:.1} p90 {:.1} max {:.1} ms", at(0.0), at(0.5), at(0.9), at(1.0))
}

#[test]
fn switch_restart_kill9_ten_containers_runc() {
    let Some(peers) = hook_common::require(TEST, Some("runc")) else { return };
    let n = rounds();
    let t_test = Instant::now();
    let mut w = World::new(&peers);
    for k in 0..PAIRS {
        w.run(&format!("sink{k}"), &bridge(k), "sink", "--check");
    }
    for k in 0..PAIRS {
        // The source is the MAC the hook gave the container (port security checks it); the
        // destination is no one the bridge knows, so the frames flood to the pair's sink.
        let macs = format!("--dst-mac 02:00:00:00:0{k}:02");
        w.run(&format!("gen{k}"), &bridge(k), "pktgen", &format!("--rate {RATE} {macs}"));
    }
    let flowing = wait_until(Duration::from_mins(1), || {
        w.list().is_ok_and(|l| l.len() == 2 * PAIRS && delivered(&l).iter().all(|d| d.unwrap_or(0) > RATE / 10))
    });
    assert!(flowing, "{TEST}: the ten containers' traffic never flowed: {:?}\n{}", w.list(), w.describe());
    let started = t_test.elapsed();
    // The baseline: the switch settled with its ten frontends (the same figures twice).
    let mut base = w.figures();
    let settled = wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(200));
        let again = w.figures();
        std::mem::replace(&mut base, again.clone()).differences(&again).is_empty()
    });
    assert!(settled, "{TEST}: fastpathd's figures never settled with ten frontends: {base:?}\n{}", w.describe());
    eprintln!(
        "{TEST}: ten containers up in {:.1} s; baseline: fastpathd {} fds, {} mappings; {} mounts; HugePages_Free {}; \
         {} ledger entries; {n} rounds of kill -9 and restart follow",
        started.as_secs_f64(),
        base.fds.len(),
        base.maps.len(),
        base.mounts.len(),
        base.hugepages_free,
        base.ledger.len()
    );
    let (mut first_frame, mut kill_to_first, mut all_resumed) = (vec![], vec![], vec![]);
    let mut problems = Vec::new();
    for round in 1..=n {
        let t_kill = Instant::now();
        w.fx.fastpathd.as_mut().expect("fastpathd").kill();
        // systemd's Restart=always, RestartSec=0: the same command line at once.
        let t_start = w.start_switch(&format!("fastpathd-{round}"));
        let mut ff = None;
        let resumed = wait_until(RESUME_TIMEOUT, || {
            w.list().is_ok_and(|l| l.len() == 2 * PAIRS && delivered(&l).iter().all(|d| d.unwrap_or(0) > 0))
        });
        let all = t_start.elapsed().as_secs_f64() * 1000.0;
        if !resumed {
            let l = w.list();
            panic!(
                "{TEST}: round {round}: not every pair's traffic resumed within {RESUME_TIMEOUT:?} of the restart: \
                 delivered per bridge {:?}\n{l:?}\n{}",
                l.as_deref().map(delivered).unwrap_or_default(),
                w.describe()
            );
        }
        if wait_until(Duration::from_secs(2), || {
            ff = w.first_frame_ms();
            ff.is_some()
        }) {
            let ff = ff.unwrap_or_default();
            first_frame.push(ff);
            kill_to_first.push(t_start.duration_since(t_kill).as_secs_f64() * 1000.0 + ff);
        }
        all_resumed.push(all);
        // Traffic flows through the new switch as it did before.
        let before = w.list().map(|l| delivered(&l)).unwrap_or_default();
        std::thread::sleep(STEADY);
        let after = w.list().map(|l| delivered(&l)).unwrap_or_default();
        let want = RATE * STEADY.as_millis() as u64 / 1000 / 2;
        for k in 0..PAIRS {
            let got = after.get(k).copied().flatten().unwrap_or(0) - before.get(k).copied().flatten().unwrap_or(0);
            if got < want {
                problems.push(format!("round {round}: pair {k} delivered {got} frames in {STEADY:?} (< {want})"));
            }
        }
        for d in w.settle_to(&base) {
            problems.push(format!("round {round}: {d}"));
        }
        eprintln!(
            "{TEST}: round {round}/{n}: first frame {:.1} ms after the new switch's start ({:.1} ms after kill -9), \
             every pair through {all:.1} ms after its start",
            first_frame.last().copied().unwrap_or(f64::NAN),
            kill_to_first.last().copied().unwrap_or(f64::NAN)
        );
        assert!(problems.len() < 10, "{TEST}: too many problems, stopping:\n  * {}", problems.join("\n  * "));
    }
    // The containers were never restarted: each app ran through every round.
    let gens: Vec<Value> = (0..PAIRS).map(|k| w.stop(&format!("gen{k}"))).collect();
    std::thread::sleep(Duration::from_millis(500));
    let sinks: Vec<Value> = (0..PAIRS).map(|k| w.stop(&format!("sink{k}"))).collect();
    let mut report = format!(
        "{TEST}: {n} rounds of kill -9 and restart under {PAIRS} pktgen → sink pairs at {RATE} frames/s each, \
         {:.1} s in all\n  first frame after the new switch's start: {}\n  first frame after kill -9:            {}\n  \
         every pair through after the start:     {}\n",
        t_test.elapsed().as_secs_f64(),
        percentiles(&first_frame),
        percentiles(&kill_to_first),
        percentiles(&all_resumed)
    );
    for (k, (g, s)) in gens.iter().zip(&sinks).enumerate() {
        let (sent, received) = (g["sent"].as_u64().unwrap_or(0), s["received"].as_u64().unwrap_or(0));
        let lost = s["lost"].as_u64().unwrap_or(u64::MAX);
        let _ = writeln!(
            report,
            "  pair {k}: sent {sent}, received {received}, lost {lost} ({:.1} per round), reordered {}, bad {}, \
             pktgen resets {}, sink resets {}",
            lost as f64 / f64::from(n),
            s["reordered"],
            s["bad"],
            g["counters"]["resets"],
            s["counters"]["resets"]
        );
        let clean = s["bad"] == 0 && s["foreign"] == 0 && s["reordered"] == 0;
        if !clean || lost > LOSS_PER_ROUND * u64::from(n) || received + lost < sent.saturating_sub(2 * QUEUE) {
            problems.push(format!(
                "pair {k}: expected every frame intact, in order, and at most {LOSS_PER_ROUND} lost per round \
                 (frames in flight when the switch died); pktgen {g}, sink {s}"
            ));
        }
        for (who, v) in [("pktgen", g), ("sink", s)] {
            if v["counters"]["resets"].as_u64() != Some(u64::from(n)) {
                problems
                    .push(format!("pair {k}: {who} saw {} link resets, expected {n}: {v}", v["counters"]["resets"]));
            }
        }
    }
    eprint!("{report}");
    assert!(problems.is_empty(), "{TEST} FAILED:\n  * {}\n{report}{}", problems.join("\n  * "), w.describe());
}

/// `fastpathctl upgrade` with traffic running: the new binary takes the ports over, the old
/// one exits, traffic resumes by itself; the outage it prints is reported.
#[test]
fn switch_upgrade_under_traffic() {
    const UPGRADE: &str = "switch_upgrade_under_traffic";
    let Some(peers) = require(UPGRADE, &["fastpathd", "fastpathctl", "pktgen", "sink"], false) else { return };
    let _s = serial();
    let dir = TestDir::new("upgrade");
    let bins = peers.bin("");
    // Two copies: the one running, and the "new" one it is upgraded to.
    let (old, new) = (dir.join("fastpathd-old"), dir.join("fastpathd-new"));
    for b in [&old, &new] {
        std::fs::copy(bins.join("fastpathd"), b).expect("copy fastpathd");
    }
    let ctl = dir.join("ctl.sock");
    let config = dir.join("fastpathd.toml");
    std::fs::write(&config, format!("ctl_socket = \"{}\"\ncore = 0\n", ctl.display())).expect("fastpathd.toml");
    let mut sw = Proc::spawn("fastpathd-old", &dir, &old, &unit_command(&old, &config), &[]);
    let ctl_ok = || fastpathctl_list_with(&bins.join("fastpathctl"), &ctl).is_ok();
    assert!(wait_until(Duration::from_secs(10), ctl_ok), "fastpathd did not answer:\n{}", sw.describe(20, 0));
    let fastpathctl = |args: &[&str]| {
        let o = run_with_timeout(
            Command::new(bins.join("fastpathctl")).arg("--ctl").arg(&ctl).args(args),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("fastpathctl {args:?}: {e}"));
        assert!(o.status.success(), "fastpathctl {args:?}: {}", output_text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let sock = |p: &str| dir.join(&format!("{p}.sock")).display().to_string();
    fastpathctl(&["add-port", "--name", "a", "--socket", &sock("a")]);
    fastpathctl(&["add-port", "--name", "b", "--socket", &sock("b")]);
    let flags = ["--queue-size", "1024", "--idle-sleep-us", "20", "--json", "--link-timeout", "30"];
    let app = |name: &str, bin: &str, args: &[&str]| {
        let a: Vec<&str> = args.iter().chain(&flags).copied().collect();
        Proc::spawn(name, &dir, &bins.join(bin), &a, &[])
    };
    let mut sink = app("sink", "sink", &["--port", &format!("vu:{}", sock("a")), "--check"]);
    let mut gen = app("pktgen", "pktgen", &["--port", &format!("vu:{}", sock("b")), "--rate", "20000"]);
    let through = |min: u64| {
        fastpathctl_list_with(&bins.join("fastpathctl"), &ctl)
            .is_ok_and(|l| l.iter().any(|p| p["name"] == "a" && p["stats"]["tx_packets"].as_u64() > Some(min)))
    };
    assert!(wait_until(Duration::from_secs(20), || through(20_000)), "no traffic before the upgrade");
    let log = dir.join("fastpathd-new.log").display().to_string();
    let out = fastpathctl(&["upgrade", "--binary", &new.display().to_string(), "--log", &log]);
    // The new switch is fastpathctl's child, not this test's: stopped when this ends.
    let new_pid = out.split("-> pid ").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|p| p.parse().ok());
    let _new_switch = new_pid.map(Stopper);
    eprintln!("{UPGRADE}: fastpathctl upgrade said: {}", out.trim());
    assert!(new_pid.is_some(), "fastpathctl upgrade should name the new switch's pid: {out}");
    let outage: Option<f64> = out.split("outage: ").nth(1).and_then(|t| t.split_whitespace().next()?.parse().ok());
    assert!(outage.is_some(), "fastpathctl upgrade should print the outage in ms: {out}");
    let exited = sw.wait_timeout(Duration::from_secs(10));
    assert!(exited.is_some_and(|s| s.success()), "the old fastpathd should exit 0 after handing over: {exited:?}");
    // The new switch forwards the stream (its counters start from zero).
    assert!(wait_until(Duration::from_secs(10), || through(10_000)), "traffic did not resume through the new switch");
    gen.stop(Signal::SIGINT, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    sink.stop(Signal::SIGINT, Duration::from_secs(5));
    let (g, s) = (gen.last_json().unwrap_or_default(), sink.last_json().unwrap_or_default());
    eprintln!(
        "{UPGRADE}: outage {:.1} ms (old switch stopping → first frame through the new one); sink lost {} frames\n\
         {UPGRADE}: pktgen {g}\n{UPGRADE}: sink {s}",
        outage.unwrap_or_default(),
        s["lost"]
    );
    assert!(s["bad"] == 0 && s["reordered"] == 0, "damaged or reordered frames across the upgrade: {s}");
    assert!(s["lost"].as_u64().unwrap_or(u64::MAX) <= LOSS_PER_ROUND, "more lost than was in flight: {s}");
    assert_eq!(s["counters"]["resets"], 1, "the sink's link went down and up once: {s}");
}

/// A process this test did not start, stopped (SIGTERM) when the test ends.
struct Stopper(i32);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGTERM);
    }
}
