// Tenants attacking fastpathd from their own ports (issue 12), one case at a time, while a
// legitimate pktgen → sink --check pair on the same bridge runs. Each case must leave the
// pair at 90% or more of its rate, with nothing lost or damaged and no gap over 10 ms more
// than the pair's own scheduling noise; fastpathd alive, only the hostile port reset (one
// log line per fault, naming it), its fds, mappings and memory back where they were.
//! Hostile tenants against fastpathd, beside a legitimate pair.
//!
//! The gap rule. The machine's 2 CPUs are shared with other people's builds, so the pair
//! has gaps of its own (a few ms, now and then more) whatever a tenant does. The sink
//! measures a gap only while it is looking (its own descheduling never counts), in 100 ms
//! windows. The pair's own longest gap is measured twice: in a quiet 3 s before the cases
//! (the noise floor) and in the quiet second before each case. A case may add at most
//! 10 ms to the larger of the two. A case that fails on the pair's timing alone (its rate,
//! its longest gap, frames lost to a full ring) is run once more: another process's burst
//! on the shared CPUs does not repeat on demand, and every stall these cases provoke
//! does (against a switch without the fixes, each fails the same way every time). Both
//! runs are shown.
//!
//! `FASTPATH_SWITCH_BIN_DIR=DIR` takes fastpathd and fastpathctl from DIR (the apps and
//! `hostile` stay this build's): to show each case failing against a switch without its fix.
//!
//! `FASTPATH_HOSTILE_CASES=a,b` runs only those cases.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use integration::{
    app_flags, fastpathctl_list, fastpathd_port, field, link_up, port_stat, require, run_with_timeout, serial, stamp,
    wait_ctl_idle, wait_for_socket, wait_ports_up, wait_until, Peers, Proc, TestDir, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const TEST: &str = "hostile_tenants_leave_the_neighbours_alone";
const BINS: &[&str] = &["fastpathd", "fastpathctl", "pktgen", "sink"];
/// The pair's rate in frames a second: what it sustains beside everything else on 2 CPUs.
const PAIR_RATE: u32 = 40_000;
/// How long each attack lasts (fd-churn: until its connections are made, at most 20 s).
const ATTACK_SECS: &str = "3";
/// The sink's window, in milliseconds.
const WINDOW_MS: u64 = 100;
/// The pair alone before the cases: its own longest gap is the noise floor.
const BASELINE: Duration = Duration::from_secs(3);
/// The pair alone before each case: its rate "before", and the noise of the moment.
const QUIET: Duration = Duration::from_secs(1);
/// What a case may add to the pair's own longest gap.
const GAP_LIMIT: Duration = Duration::from_millis(10);
/// The share of its rate the pair keeps during a case.
const RATE_FLOOR: f64 = 0.9;
/// How much fastpathd's resident memory may grow while a tenant attacks.
const RSS_LIMIT: u64 = 64 << 20;
/// How long fastpathd may take to be back at its fd and mapping counts after a case.
const SETTLE: Duration = Duration::from_secs(5);
/// How many more fds than at its start a switch may hold and still run the next case (a
/// connection or two may come and go; a leak is thousands).
const LEAK_LIMIT: usize = 8;
/// The MAC the spoofing tenant's port is given (its frames claim the sink's instead).
const SPOOFER_MAC: &str = "02:00:00:00:00:0e";
/// The sink's MAC: pktgen's frames go to it, and the spoofer claims it.
const SINK_MAC: &str = "02:00:00:00:00:02";

/// One attack.
struct Case {
    /// The `hostile` case (and the hostile port's name, `h-NAME`).
    name: &'static str,
    /// More `hostile` flags.
    args: &'static [&'static str],
    /// More `fastpathctl add-port` flags for the hostile port. A build that lacks them gets
    /// the port without them, and the case a problem.
    port_flags: &'static [&'static str],
    /// What each of its faults' log line says; `None`: it must cause none.
    fault: Option<&'static str>,
    /// A second hostile port, `h2-NAME` (the attack is between the two).
    peer: bool,
}

const CASES: &[Case] = &[
    Case { name: "no-read", args: &[], port_flags: &[], fault: Some("is not reading its socket"), peer: false },
    Case {
        name: "over-cap",
        args: &[],
        port_flags: &["--max-memory", "64Mi"],
        fault: Some("over this port's cap"),
        peer: false,
    },
    Case { name: "sparse", args: &[], port_flags: &[], fault: None, peer: false },
    Case { name: "flood", args: &[], port_flags: &[], fault: None, peer: false },
    Case { name: "memtable-churn", args: &[], port_flags: &[], fault: None, peer: false },
    Case { name: "truncate-memfd", args: &[], port_flags: &[], fault: Some("shrank its shared memory"), peer: false },
    Case {
        name: "truncate-hugetlbfs",
        args: &[],
        port_flags: &[],
        fault: Some("shrank its shared memory"),
        peer: false,
    },
    Case {
        name: "fd-churn",
        args: &["--connections", "2600", "--secs", "20"],
        port_flags: &[],
        fault: Some("too many fds"),
        peer: false,
    },
    Case { name: "call-eventfd", args: &[], port_flags: &[], fault: None, peer: false },
    Case { name: "call-pipe", args: &[], port_flags: &[], fault: Some("is not an eventfd"), peer: false },
    Case { name: "zero-chains", args: &[], port_flags: &[], fault: Some("more than 64 descriptors"), peer: false },
    Case { name: "giant-frames", args: &[], port_flags: &[], fault: Some("over this port's limit"), peer: true },
    Case {
        name: "spoof",
        args: &["--neighbour", SINK_MAC],
        port_flags: &["--mac", SPOOFER_MAC, "--port-security", "mac"],
        fault: None,
        peer: false,
    },
];

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// One of the sink's `{"event":"interval"}` lines.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start_ms: f64,
    end_ms: f64,
    secs: f64,
    frames: u64,
    /// The longest gap that ended in it, or was still open at its end.
    gap: Duration,
    bad: u64,
    lost: u64,
    reordered: u64,
}

impl Window {
    fn parse(v: &Value) -> Option<Self> {
        if v.get("event")?.as_str()? != "interval" {
            return None;
        }
        let end_ms = field(v, "unix_ms")? as f64;
        let secs = v.get("secs")?.as_f64()?;
        let us = field(v, "max_gap_us")?.max(field(v, "open_gap_us").unwrap_or(0));
        Some(Self {
            start_ms: end_ms - secs * 1000.0,
            end_ms,
            secs,
            frames: field(v, "frames")?,
            gap: Duration::from_micros(us),
            bad: field(v, "bad")?,
            lost: field(v, "lost")?,
            reordered: field(v, "reordered")?,
        })
    }
}

/// Frames a second and the longest gap over `ws`.
fn rate_and_gap(ws: &[Window]) -> (f64, Duration) {
    let secs: f64 = ws.iter().map(|w| w.secs).sum();
    let frames: u64 = ws.iter().map(|w| w.frames).sum();
    let rate = if secs > 0.0 { frames as f64 / secs } else { 0.0 };
    (rate, ws.iter().map(|w| w.gap).max().unwrap_or_default())
}

/// The windows wholly inside `[from, to]` (Unix ms).
fn inside(ws: &[Window], from: u64, to: u64) -> Vec<Window> {
    ws.iter().copied().filter(|w| w.start_ms >= from as f64 - 1.0 && w.end_ms <= to as f64).collect()
}

fn count_lines(path: &str) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn count_entries(path: &str) -> usize {
    std::fs::read_dir(path).map_or(0, Iterator::count)
}

/// fastpathd (ports a and b on br0) and the pair: `sink --check` on a, `pktgen` on b.
struct Env {
    n: u32,
    ctl: PathBuf,
    fpd: Proc,
    sink: Proc,
    gen: Proc,
    /// fastpathd's fds with the pair running and no other port: a case that leaves it
    /// many more ([`LEAK_LIMIT`]) has damaged it for the cases after it, which get a new one.
    fds_base: usize,
}

impl Env {
    /// The `n`th fastpathd and pair of the run (a new one after a case killed or froze the last).
    fn start(peers: &Peers, dir: &TestDir, n: u32) -> Self {
        let (ctl, a, b) = (dir.join("ctl.sock"), dir.join("a.sock"), dir.join("b.sock"));
        let ports = [fastpathd_port("br0", "a", "vhost", &a), fastpathd_port("br0", "b", "vhost", &b)];
        let args = integration::fastpathd_args(&ctl, &["br0"], &ports);
        let mut fpd = Proc::spawn(&format!("fastpathd-{n}"), dir, &peers.bin("fastpathd"), &args, &[]);
        for s in [&ctl, &a, &b] {
            assert!(wait_for_socket(s, SETUP_TIMEOUT), "{} never appeared:\n{}", s.display(), fpd.describe(20, 0));
        }
        let (vu_a, vu_b) = (format!("vu:{}", a.display()), format!("vu:{}", b.display()));
        let interval = WINDOW_MS.to_string();
        let flags = app_flags();
        let sink_args = [&["--port", &vu_a, "--check", "--interval-ms", &interval][..], &str_refs(&flags)].concat();
        let mut sink = Proc::spawn(&format!("sink-{n}"), dir, &peers.bin("sink"), &sink_args, &[]);
        // pktgen starts once the sink's port is up: the bridge floods to who is there.
        wait_ports_up(peers, &ctl, &["a"], SETUP_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", sink.describe(20, 0)));
        let rate = PAIR_RATE.to_string();
        let gen_args = [&["--port", &vu_b, "--rate", &rate][..], &str_refs(&flags)].concat();
        let mut gen = Proc::spawn(&format!("pktgen-{n}"), dir, &peers.bin("pktgen"), &gen_args, &[]);
        wait_ports_up(peers, &ctl, &["a", "b"], SETUP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", gen.describe(20, 0)));
        wait_ctl_idle(&ctl, SETTLE);
        let fds_base = count_entries(&format!("/proc/{}/fd", fpd.pid()));
        Self { n, ctl, fpd, sink, gen, fds_base }
    }

    /// Why it can't run a case, if it can't: a process gone, or fastpathd not answering.
    fn unhealthy(&mut self, peers: &Peers) -> Option<String> {
        for p in [&mut self.fpd, &mut self.sink, &mut self.gen] {
            if let Some(s) = p.try_status() {
                return Some(format!("{} exited: {s}", p.name()));
            }
        }
        fastpathctl_list(peers, &self.ctl).err().map(|e| format!("fastpathd does not answer: {e}"))
    }

    /// Why the next case needs a new switch, if it does: [`Self::unhealthy`], or fds the
    /// last case left it holding.
    fn spent(&mut self, peers: &Peers) -> Option<String> {
        self.unhealthy(peers).or_else(|| {
            (self.fds() > self.fds_base + LEAK_LIMIT)
                .then(|| format!("fastpathd holds {} fds, {} at its start", self.fds(), self.fds_base))
        })
    }

    fn pid(&self) -> u32 {
        self.fpd.pid()
    }

    fn fds(&self) -> usize {
        count_entries(&format!("/proc/{}/fd", self.pid()))
    }

    fn maps(&self) -> usize {
        count_lines(&format!("/proc/{}/maps", self.pid()))
    }

    /// fastpathd's resident memory in bytes (0 once it is gone).
    fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb << 10)
    }

    fn windows(&self) -> Vec<Window> {
        self.sink
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| Window::parse(&v))
            .collect()
    }

    /// fastpathd's WARN lines so far.
    fn warnings(&self) -> Vec<String> {
        self.fpd.stderr().lines().filter(|l| l.contains("WARN")).map(String::from).collect()
    }

    fn ctl(&self, peers: &Peers, args: &[&str]) -> Result<(), String> {
        let mut cmd = std::process::Command::new(peers.bin("fastpathctl"));
        cmd.arg("--ctl").arg(&self.ctl).args(args);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(5))?;
        if out.status.success() {
            Ok(())
        } else {
            // Its first line says why (the rest is usage or a backtrace).
            let why =
                String::from_utf8_lossy(&out.stderr).lines().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
            Err(format!("fastpathctl {}: {why}", args.join(" ")))
        }
    }
}

fn str_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What one run of one case measured, and what was wrong.
#[derive(Debug, Default)]
struct Row {
    name: String,
    rate_before: f64,
    rate_during: f64,
    gap: Duration,
    allowed: Duration,
    fds: (usize, usize),
    maps: (usize, usize),
    rss_growth: u64,
    warns: usize,
    resets: u64,
    hostile: String,
    problems: Vec<String>,
    /// Whether the pair's timing (rate, gap, loss) was all that was wrong.
    timing_only: bool,
    /// fastpathd after the case: "alive" (and answering), "hung" (not answering) or "dead".
    switch: &'static str,
}

impl Row {
    fn line(&self) -> String {
        format!(
            "{:<24} {:>7.0} {:>7.0} {:>5.1}% {:>8.1} {:>8.1} {:>6} {:>6} {:>9} {:>6.1} {:>5}/{:<5} {}",
            self.name,
            self.rate_before,
            self.rate_during,
            if self.rate_before > 0.0 { 100.0 * self.rate_during / self.rate_before } else { 0.0 },
            self.gap.as_secs_f64() * 1e3,
            self.allowed.as_secs_f64() * 1e3,
            self.switch,
            format!("{}→{}", self.fds.0, self.fds.1),
            format!("{}→{}", self.maps.0, self.maps.1),
            self.rss_growth as f64 / f64::from(1 << 20),
            self.warns,
            self.resets,
            if self.problems.is_empty() { "ok".to_string() } else { format!("FAIL: {}", self.problems.join("; ")) }
        )
    }
}

const HEADER: &str =
    "case                      before  during  kept  gap(ms)  allowed switch    fds      maps  rss+MiB warns/resets";

/// Adds the hostile port `name` on `sock` with `flags`; without them if this build refuses
/// them (a problem of the case, which still runs).
fn add_port(peers: &Peers, env: &Env, name: &str, sock: &Path, flags: &[&str], problems: &mut Vec<String>) {
    let sock = sock.display().to_string();
    let base = ["add-port", "--name", name, "--bridge", "br0", "--socket", &sock];
    if let Err(e) = env.ctl(peers, &[&base[..], flags].concat()) {
        if flags.is_empty() {
            problems.push(e);
            return;
        }
        problems.push(format!("this build refuses {flags:?} ({e}); the port was added without them"));
        if let Err(e) = env.ctl(peers, &base) {
            problems.push(e);
        }
    }
}

/// Sum of a counter over the ports `names` in `list`.
fn stat_sum(list: &[Value], names: &[String], key: &str) -> u64 {
    names.iter().filter_map(|n| port_stat(list, n, key)).sum()
}

/// Runs `case` on `env` (noise floor `noise`); the hostile binary is `hostile`.
#[allow(clippy::too_many_lines)]
fn run_case(peers: &Peers, dir: &TestDir, env: &mut Env, case: &Case, noise: Duration, hostile: &Path) -> Row {
    let mut row = Row { name: case.name.to_string(), ..Row::default() };
    let mut problems = Vec::new();
    let p = &mut problems;
    // How many of the problems are the pair's timing alone (see the module's doc).
    let mut timing = 0;
    let names: Vec<String> = [format!("h-{}", case.name), format!("h2-{}", case.name)]
        .into_iter()
        .take(if case.peer { 2 } else { 1 })
        .collect();
    let socks: Vec<PathBuf> = names.iter().map(|n| dir.join(&format!("{n}.sock"))).collect();
    wait_ctl_idle(&env.ctl, SETTLE);
    let (fds_pre, maps_pre) = (env.fds(), env.maps());
    for (i, (n, s)) in names.iter().zip(&socks).enumerate() {
        add_port(peers, env, n, s, if i == 0 { case.port_flags } else { &[] }, p);
    }
    wait_ctl_idle(&env.ctl, SETTLE);
    let (fds0, maps0, rss0) = (env.fds(), env.maps(), env.rss());
    let list0 = fastpathctl_list(peers, &env.ctl).unwrap_or_default();
    let warn0 = env.warnings().len();
    // The pair alone for a moment, then the attack.
    let t_quiet = now_ms();
    std::thread::sleep(QUIET);
    let t0 = now_ms();
    let mut args: Vec<String> =
        vec![case.name.into(), socks[0].display().to_string(), "--secs".into(), ATTACK_SECS.into()];
    args.extend(case.args.iter().map(|a| (*a).to_string()));
    if case.peer {
        args.extend(["--peer".to_string(), socks[1].display().to_string()]);
    }
    let mut h = Proc::spawn(&format!("hostile-{}-{}", case.name, env.n), dir, hostile, &args, &[]);
    let mut rss_peak = rss0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while h.try_status().is_none() && Instant::now() < deadline {
        rss_peak = rss_peak.max(env.rss());
        std::thread::sleep(Duration::from_millis(20));
    }
    let t1 = now_ms();
    match h.try_status() {
        None => {
            h.kill();
            p.push("the hostile frontend was still running after 40 s (killed)".into());
        }
        Some(s) if !s.success() => p.push(format!("hostile: {s}: {}", h.stderr().lines().next().unwrap_or(""))),
        Some(_) => {}
    }
    let out = h.last_json().unwrap_or_default();
    row.hostile = out.to_string();
    // Settle: the hostile ports down (the switch has seen the tenant go), and a sink window
    // that ends well after the attack, so that a stall the attack caused is seen in full.
    wait_until(Duration::from_secs(2), || {
        fastpathctl_list(peers, &env.ctl).is_ok_and(|l| names.iter().all(|n| link_up(&l, n) != Some(true)))
    });
    wait_until(Duration::from_secs(3), || env.windows().last().is_some_and(|w| w.end_ms >= (t1 + 300) as f64));
    let t2 = now_ms();
    row.switch = match env.fpd.try_status() {
        Some(_) => "dead",
        None if fastpathctl_list(peers, &env.ctl).is_err() => "hung",
        None => "alive",
    };
    if let Some(why) = env.unhealthy(peers) {
        p.push(why);
    }
    // The pair: its rate, its longest gap, nothing lost or damaged.
    let ws = env.windows();
    let (rate_before, gap_quiet) = rate_and_gap(&inside(&ws, t_quiet, t0));
    let (rate_during, _) = rate_and_gap(&inside(&ws, t0, t1));
    let around: Vec<Window> = ws.iter().copied().filter(|w| w.end_ms > t0 as f64 && w.end_ms <= t2 as f64).collect();
    let (_, gap) = rate_and_gap(&around);
    (row.rate_before, row.rate_during, row.gap) = (rate_before, rate_during, gap);
    row.allowed = GAP_LIMIT + noise.max(gap_quiet);
    if rate_before <= 0.0 {
        p.push("the pair moved nothing before the attack".into());
    } else if rate_during < RATE_FLOOR * rate_before {
        timing += 1;
        p.push(format!("the pair's rate fell to {rate_during:.0}/s from {rate_before:.0}/s"));
    }
    if row.gap > row.allowed {
        timing += 1;
        p.push(format!("the pair's longest gap was {:.1} ms (allowed {:.1})", ms(row.gap), ms(row.allowed)));
    }
    let last_before = ws.iter().rev().find(|w| w.end_ms <= t0 as f64).copied().unwrap_or_default();
    let last_after = ws.iter().rev().find(|w| w.end_ms <= t2 as f64).copied().unwrap_or_default();
    let (bad, lost, reordered) = (
        last_after.bad.saturating_sub(last_before.bad),
        last_after.lost.saturating_sub(last_before.lost),
        last_after.reordered.saturating_sub(last_before.reordered),
    );
    if bad + reordered > 0 {
        p.push(format!("the sink saw {bad} damaged and {reordered} reordered frames"));
    }
    if lost > 0 {
        timing += 1;
        p.push(format!("the sink lost {lost} frames"));
    }
    // The switch: only the hostile ports reset, one log line per fault, naming the port.
    let list = fastpathctl_list(peers, &env.ctl).unwrap_or_default();
    for n in ["a", "b"] {
        let (r0, r1) = (port_stat(&list0, n, "resets"), port_stat(&list, n, "resets"));
        if r1 != r0 {
            p.push(format!("port {n} was reset ({r0:?} → {r1:?} resets)"));
        }
    }
    row.resets = stat_sum(&list, &names, "resets") - stat_sum(&list0, &names, "resets");
    let new = env.warnings().split_off(warn0.min(env.warnings().len()));
    row.warns = new.len();
    let ours = |l: &str| names.iter().any(|n| l.contains(&format!("port {n} (")));
    for l in &new {
        match case.fault {
            Some(f) if ours(l) && l.contains(f) => {}
            _ => p.push(format!(
                "log line {l:?} (expected {})",
                case.fault.map_or("none".into(), |f| format!("'{f}' on {names:?}"))
            )),
        }
    }
    if case.fault.is_some() && new.is_empty() {
        p.push(format!("no log line of the fault ('{}')", case.fault.unwrap_or_default()));
    }
    if new.len() as u64 > row.resets {
        p.push(format!("{} log lines for {} resets", new.len(), row.resets));
    }
    if rss_peak.saturating_sub(rss0) > RSS_LIMIT {
        p.push(format!("fastpathd's memory grew by {} MiB", rss_peak.saturating_sub(rss0) >> 20));
    }
    row.rss_growth = rss_peak.saturating_sub(rss0);
    match case.name {
        "spoof" => {
            let (sent, spoofed) = (field(&out, "sent").unwrap_or(0), stat_sum(&list, &names, "drop_spoofed"));
            if sent == 0 || spoofed != sent {
                p.push(format!("the spoofer sent {sent} frames, drop_spoofed counted {spoofed}"));
            }
        }
        "fd-churn" => {
            let made = field(&out, "rounds").unwrap_or(0);
            if made < 2600 {
                p.push(format!("only {made} of 2600 connections were made"));
            }
        }
        _ => {}
    }
    // Back where it was: with the port there (its tenant gone), then without it.
    wait_ctl_idle(&env.ctl, SETTLE);
    wait_until(SETTLE, || env.fds() == fds0 && env.maps() == maps0);
    row.fds = (fds0, env.fds());
    row.maps = (maps0, env.maps());
    if row.fds.1 != fds0 || row.maps.1 != maps0 {
        p.push(format!("fastpathd holds {} fds and {} mappings, {fds0} and {maps0} before", row.fds.1, row.maps.1));
    }
    if case.name == "fd-churn" && env.unhealthy(peers).is_none() {
        if let Err(e) = a_new_frontend_connects(peers, dir, env) {
            p.push(e);
        }
    }
    for n in &names {
        let _ = env.ctl(peers, &["del-port", n]);
    }
    wait_ctl_idle(&env.ctl, SETTLE);
    wait_until(SETTLE, || env.fds() == fds_pre && env.maps() == maps_pre);
    if env.fpd.try_status().is_none() && (env.fds(), env.maps()) != (fds_pre, maps_pre) {
        p.push(format!(
            "with the port removed fastpathd holds {} fds and {} mappings, {fds_pre} and {maps_pre} before it was added",
            env.fds(),
            env.maps()
        ));
    }
    row.timing_only = timing > 0 && problems.len() == timing;
    row.problems = problems;
    row
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A well-formed frontend (netlib's, in `sink`) on a fresh port gets its link up.
fn a_new_frontend_connects(peers: &Peers, dir: &TestDir, env: &Env) -> Result<(), String> {
    let sock = dir.join("well-formed.sock");
    env.ctl(peers, &["add-port", "--name", "well-formed", "--bridge", "br0", "--socket", &sock.display().to_string()])?;
    let spec = format!("vu:{}", sock.display());
    let args = ["--port", &spec, "--secs", "0.3", "--link-timeout", "5", "--json", "--quiet", "--nbufs", "1024"];
    let mut cmd = std::process::Command::new(peers.bin("sink"));
    cmd.args(args);
    let res = run_with_timeout(&mut cmd, Duration::from_secs(15));
    let _ = env.ctl(peers, &["del-port", "well-formed"]);
    match res {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "a well-formed frontend on a new port did not come up: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )),
        Err(e) => Err(format!("a well-formed frontend on a new port: {e}")),
    }
}

#[test]
fn hostile_tenants_leave_the_neighbours_alone() {
    let Some(peers) = require(TEST, BINS, false) else { return };
    let _serial = serial();
    let t_start = Instant::now();
    let only: Option<Vec<String>> =
        std::env::var("FASTPATH_HOSTILE_CASES").ok().map(|s| s.split(',').map(String::from).collect());
    let dir = TestDir::new("tenants");
    let hostile = Path::new(env!("CARGO_BIN_EXE_hostile"));
    let mut env = Env::start(&peers, &dir, 1);
    // The noise floor: the pair alone.
    let t = now_ms();
    std::thread::sleep(BASELINE);
    let (rate, noise) = rate_and_gap(&inside(&env.windows(), t, now_ms()));
    eprintln!("[{}] the pair alone for {BASELINE:?}: {rate:.0} frames/s, longest gap {:.1} ms", stamp(), ms(noise));
    let mut rows: Vec<Row> = Vec::new();
    let mut restarts = Vec::new();
    for case in CASES.iter().filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name))) {
        if let Some(why) = env.spent(&peers) {
            restarts.push(format!("before {}: {why}; fastpathd and the pair started again", case.name));
            let n = env.n + 1;
            drop(env);
            env = Env::start(&peers, &dir, n);
            std::thread::sleep(QUIET);
        }
        eprintln!("[{}] case {}", stamp(), case.name);
        let mut row = run_case(&peers, &dir, &mut env, case, noise, hostile);
        eprintln!("{HEADER}\n{}\n    hostile: {}", row.line(), row.hostile);
        if row.timing_only {
            eprintln!("[{}] case {}: only the pair's timing was off; once more", stamp(), case.name);
            let again = run_case(&peers, &dir, &mut env, case, noise, hostile);
            eprintln!("{}", again.line());
            row.name.push_str(" (1st)");
            rows.push(row);
            row = Row { name: format!("{} (2nd)", case.name), ..again };
        }
        rows.push(row);
    }
    let _ = env.sink.stop(Signal::SIGINT, Duration::from_secs(3));
    env.gen.kill();
    let fin = env.sink.last_json().unwrap_or_default();
    eprintln!(
        "\n{TEST}: noise floor {:.1} ms; {:.0} s\n{HEADER}\n{}\nsink at the end: {fin}",
        ms(noise),
        t_start.elapsed().as_secs_f64(),
        rows.iter().map(Row::line).collect::<Vec<_>>().join("\n")
    );
    for r in &restarts {
        eprintln!("{r}");
    }
    // A case that passed on its second run passed.
    let failed: Vec<&Row> = rows
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let passed_again = r.name.ends_with("(1st)") && rows[i + 1].problems.is_empty();
            !r.problems.is_empty() && !passed_again
        })
        .map(|(_, r)| r)
        .collect();
    assert!(
        failed.is_empty(),
        "{TEST}: {} case(s) failed:\n{}\n{}",
        failed.len(),
        failed.iter().map(|r| format!("  {}: {}", r.name, r.problems.join("; "))).collect::<Vec<_>>().join("\n"),
        env.fpd.describe(30, 0)
    );
}
