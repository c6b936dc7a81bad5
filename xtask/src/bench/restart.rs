// The restart case: what a crash of the switch costs the apps on it. pktgen → switch → sink at
// a steady rate; the switch is killed with SIGKILL and started again with the same command
// line, and the sink times the outage, from the kill and from the new switch's start.
//! Bench case `restart`: fastpathd (its ports from its state file) against OVS-DPDK (from ovsdb).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::cases::unix_ns;
use super::ours::{port, Ctx};
use super::ovs::Ovs;
use crate::procs::check_interrupt;
use crate::scratch::{ProcId, Sandbox};

/// pktgen's steady rate in frames per second: one every 5 µs, so that the sink's gaps in
/// steady traffic stay far below the outage.
const RATE: &str = "200000";
/// The sink reports gaps longer than this many ms; the outage is the longest after the kill.
const GAP_MS: &str = "1";
/// Steady traffic before the kill.
const STEADY: Duration = Duration::from_secs(1);
/// How long traffic is watched once it came back, for a longer gap to show (frames the old
/// switch left in a ring and read late are not the end of the outage).
const SETTLE: Duration = Duration::from_millis(300);
/// How long the first frame may take, at the start and after the restart (OVS-DPDK takes
/// seconds to start).
const TRAFFIC_WAIT: Duration = Duration::from_secs(60);
/// How long fastpathd gets to create a socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);

/// fastpathd on CPU 0 with its state directory in the sandbox; ports `a` and `b` added with
/// `fastpathctl add-port` (switch listens, as the hook adds them), so that they come back from
/// the state file, not from the command line. pktgen → b, a → sink, both connecting (`vu:`).
pub fn ours(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let (a, b) = (sb.path("a.sock"), sb.path("b.sock"));
    let ctl = sb.path("ctl.sock").display().to_string();
    let state = sb.path("state").display().to_string();
    let args = ["--core", "0", "--ctl", &ctl, "--state-dir", &state, "--bridge", "br0"];
    let switch = ctx.spawn(sb, "fastpathd", &args)?;
    sb.wait_for_path(Path::new(&ctl), SOCKET_WAIT)?;
    for (name, sock) in [("a", &a), ("b", &b)] {
        let sock_arg = sock.display().to_string();
        ctx.run("fastpathctl", &["--ctl", &ctl, "add-port", "--name", name, "--socket", &sock_arg], SOCKET_WAIT)?;
        sb.wait_for_path(sock, SOCKET_WAIT)?;
    }
    let mut apps = Apps::start(sb, ctx, "vu", &a, &b)?;
    apps.wait_steady(sb)?;
    let kill_ns = unix_ns();
    sb.kill(switch);
    let start_ns = unix_ns();
    ctx.spawn_as(sb, "fastpathd-2", "fastpathd", &args)?;
    apps.outage(sb, kill_ns, start_ns)
}

/// OVS-DPDK (PMD on CPU 0) with two `dpdkvhostuserclient` ports, connecting to the same
/// pktgen and sink listening (`vu-server:`, as testpmd's `virtio_user` with `server=1` would):
/// ovs-vswitchd killed and started again, its ports coming back from ovsdb.
pub fn peer(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let (a, b) = (sb.path("a.sock"), sb.path("b.sock"));
    let mut apps = Apps::start(sb, ctx, "vu-server", &a, &b)?;
    sb.wait_for_path(&a, SOCKET_WAIT)?;
    sb.wait_for_path(&b, SOCKET_WAIT)?;
    let mut ovs = Ovs::start_clients(sb, 0, &[("a", &a), ("b", &b)])?;
    apps.wait_steady(sb)?;
    let kill_ns = unix_ns();
    ovs.kill_vswitchd(sb);
    let start_ns = unix_ns();
    ovs.restart_vswitchd(sb)?;
    apps.outage(sb, kill_ns, start_ns)
}

/// pktgen sending into port `b` and the sink on port `a`, both on CPU 1.
struct Apps {
    sink: ProcId,
    /// How far the sink's output has been read.
    pos: usize,
}

impl Apps {
    /// Starts them with port kind `kind` (`vu`: they connect; `vu-server`: they listen).
    fn start(sb: &mut Sandbox, ctx: &Ctx, kind: &str, a: &Path, b: &Path) -> Result<Self> {
        let link = TRAFFIC_WAIT.as_secs().to_string();
        let (to_sink, from_gen) = (port(kind, a), port(kind, b));
        let sink = ctx.spawn(
            sb,
            "sink",
            &["--port", &to_sink, "--core", "1", "--gaps", GAP_MS, "--stamp-first", "--link-timeout", &link, "--quiet"],
        )?;
        ctx.spawn(
            sb,
            "pktgen",
            &["--port", &from_gen, "--core", "1", "--rate", RATE, "--link-timeout", &link, "--quiet"],
        )?;
        Ok(Self { sink, pos: 0 })
    }

    /// Waits for the sink's first frame, then [`STEADY`] more; fails if a process exits.
    fn wait_steady(&mut self, sb: &mut Sandbox) -> Result<()> {
        let deadline = Instant::now() + TRAFFIC_WAIT;
        loop {
            let (lines, next) = sb.proc(self.sink).stdout_since(self.pos);
            self.pos = next;
            if lines.iter().any(|l| event(l).is_some_and(|v| v["event"] == "first_packet")) {
                break;
            }
            wait_a_little(sb, deadline, "a first frame through the switch")?;
        }
        let steady = Instant::now() + STEADY;
        while Instant::now() < steady {
            wait_a_little(sb, steady + TRAFFIC_WAIT, "steady traffic")?;
        }
        Ok(())
    }

    /// Reads the sink's gaps until frames have come through the new switch (started at
    /// `start_ns`) for [`SETTLE`]: ms from `kill_ns` and from `start_ns` to the end of the outage.
    fn outage(&mut self, sb: &mut Sandbox, kill_ns: i128, start_ns: i128) -> Result<Vec<f64>> {
        let deadline = Instant::now() + TRAFFIC_WAIT;
        let mut outage = Outage::new(kill_ns, start_ns);
        let mut back: Option<Instant> = None;
        while back.map_or(true, |t| t.elapsed() < SETTLE) {
            let (lines, next) = sb.proc(self.sink).stdout_since(self.pos);
            self.pos = next;
            for l in &lines {
                if outage.see(l) && back.is_none() {
                    back = Some(Instant::now());
                }
            }
            if back.is_none() {
                wait_a_little(sb, deadline, "a frame through the restarted switch")?;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        outage.ms()
    }
}

/// A JSON object line.
fn event(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line.trim()).ok().filter(Value::is_object)
}

/// Sleeps a millisecond; fails if a process of the sandbox exited, on Ctrl-C, or after
/// `deadline` (saying it was waiting for `what`).
fn wait_a_little(sb: &mut Sandbox, deadline: Instant, what: &str) -> Result<()> {
    sb.check_alive()?;
    check_interrupt()?;
    if Instant::now() > deadline {
        bail!("no {what} within {} s", TRAFFIC_WAIT.as_secs());
    }
    std::thread::sleep(Duration::from_millis(1));
    Ok(())
}

/// The sink's gaps after a kill: the longest is the outage, and it ends at its event.
struct Outage {
    kill_ns: i128,
    start_ns: i128,
    /// The longest gap after the kill: its ms and when it ended.
    longest: Option<(f64, i128)>,
}

impl Outage {
    fn new(kill_ns: i128, start_ns: i128) -> Self {
        Self { kill_ns, start_ns, longest: None }
    }

    /// One line of the sink's output; true if it is a gap ending after the new switch started.
    fn see(&mut self, line: &str) -> bool {
        let Some(v) = event(line).filter(|v| v["event"] == "gap") else {
            return false;
        };
        let (Some(gap), Some(ns)) = (v["gap_ms"].as_f64(), v["unix_ns"].as_u64()) else {
            return false;
        };
        let ns = i128::from(ns);
        if ns > self.kill_ns && self.longest.map_or(true, |(g, _)| gap > g) {
            self.longest = Some((gap, ns));
        }
        ns > self.start_ns
    }

    /// Ms from the kill and from the new switch's start to the end of the longest gap.
    fn ms(&self) -> Result<Vec<f64>> {
        let (gap, end) = self.longest.ok_or_else(|| anyhow!("the sink saw no gap after the kill"))?;
        if end <= self.start_ns {
            bail!(
                "the longest gap after the kill ({gap:.1} ms) ended {:.1} ms before the new switch started",
                (self.start_ns - end) as f64 / 1e6
            );
        }
        Ok(vec![(end - self.kill_ns) as f64 / 1e6, (end - self.start_ns) as f64 / 1e6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(ms: f64, ns: i128) -> String {
        serde_json::json!({"event":"gap","gap_ms":ms,"unix_ns":ns as u64}).to_string()
    }

    #[test]
    fn the_outage_is_the_longest_gap_after_the_kill_ending_after_the_restart() {
        let ms = 1_000_000i128;
        let (kill, start) = (1_000 * ms, 1_002 * ms);
        let mut o = Outage::new(kill, start);
        assert!(!o.see(&gap(500.0, 900 * ms)), "before the kill");
        assert!(!o.see("sink: 0.2 Mpps") && !o.see(r#"{"event":"first_packet","unix_ns":1}"#));
        assert!(!o.see(&gap(3.0, 1_001 * ms)), "a late read of the old switch's frames");
        assert!(o.see(&gap(150.0, 1_150 * ms)));
        assert!(o.see(&gap(2.0, 1_160 * ms)));
        assert_eq!(o.ms().unwrap(), vec![150.0, 148.0]);
        assert!(!o.see(&gap(900.0, 999 * ms)), "a longer gap before the kill");
        assert_eq!(o.ms().unwrap(), vec![150.0, 148.0]);
    }

    #[test]
    fn no_outage_without_a_gap_through_the_new_switch() {
        let ms = 1_000_000i128;
        let mut o = Outage::new(1_000 * ms, 1_002 * ms);
        assert!(o.ms().unwrap_err().to_string().contains("no gap"));
        o.see(&gap(3.0, 1_001 * ms));
        let e = o.ms().unwrap_err().to_string();
        assert!(e.contains("before the new switch started"), "{e}");
    }
}
