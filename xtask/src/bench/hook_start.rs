// The hook_start / hook_own bench case: start-to-exit time of a busybox `/bin/true` container under
// runc with fastpath-hook (and a private fastpathd) vs the same bundle bare, and the hook's own time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::ours::Ctx;
use super::report::median;
use crate::bundle::{self, HookHost, Runtime, Spec, CONTRACT};
use crate::procs::{check_interrupt, Echo, Stream};
use crate::scratch::Sandbox;

/// Containers started per run (and per kind of run); a run reports their median.
const CONTAINERS: usize = 5;
/// What the hook may add to a container's start, in ms: the `hook_own` peer value.
pub const BUDGET_MS: f64 = 20.0;
/// How long one container may take from `runc run` to its exit.
const CONTAINER_WAIT: Duration = Duration::from_secs(60);
/// The stages the hook runs at, in order.
const STAGES: [&str; 3] = ["createRuntime", "createContainer", "poststop"];

/// Counter making container ids unique within this process.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A fresh container id (unique on the machine while we run: cgroup paths are global).
fn container_id() -> String {
    format!("fphs{}x{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::SeqCst))
}

/// One run's world: runc with a private root, the hook's host side, fastpathd, a rootfs.
/// Fields drop in order: containers first, then the hook's leftovers; fastpathd goes with the
/// sandbox after both.
struct World {
    rt: Runtime,
    host: HookHost,
    rootfs: PathBuf,
}

impl World {
    /// Builds the rootfs, writes hook.toml (pool: one core beside fastpathd's) and starts
    /// fastpathd. Both sides run with fastpathd so that the machine looks the same.
    fn new(sb: &mut Sandbox, ctx: &Ctx) -> Result<Self> {
        let rootfs = sb.path("rootfs");
        bundle::make_rootfs(&rootfs, &[]).context("building the busybox rootfs")?;
        let host = HookHost::new(sb.dir(), &ctx.bin_dir.join("fastpath-hook"), &bundle::core_pool(1))?;
        host.start_switch(sb, &ctx.bin_dir.join("fastpathd"), Stream::Capture(Echo::Off))?;
        let rt = Runtime::find("runc", sb.path("runc-root"))?;
        Ok(Self { rt, host, rootfs })
    }

    /// The spec of the `/bin/true` container.
    fn spec<'a>(&'a self, ann: &'a [(&'a str, &'a str)], hooks: Option<&'a serde_json::Value>) -> Spec<'a> {
        Spec { annotations: ann, hooks, ..Spec::new("hook-start", &self.rootfs, &["/bin/true"]) }
    }

    /// Runs one container from `bundle` to its exit; ms from `runc run` to its exit.
    fn start(&self, bundle: &Path) -> Result<f64> {
        check_interrupt()?;
        let took = self.rt.run_timed(bundle, &container_id(), CONTAINER_WAIT).map_err(|e| {
            let log = self.host.hook_log();
            if log.is_empty() {
                e
            } else {
                e.context(format!("hook.log:\n{log}"))
            }
        })?;
        Ok(took.as_secs_f64() * 1e3)
    }
}

/// Writes a bash wrapper that runs the hook with its arguments and appends
/// `STAGE START END STATUS` (EPOCHREALTIME, seconds) to `log`; bash reads the clock without
/// forking, so the interval is the hook process's own life, from fork to exit.
fn write_timer(dir: &Path, hook: &Path, log: &Path) -> Result<PathBuf> {
    let path = dir.join("hook-timer");
    let text = format!(
        "#!/bin/bash\n# Times one fastpath-hook stage for the hook_own bench: appends STAGE START END STATUS.\nt0=$EPOCHREALTIME\n'{}' \"$@\"\nrc=$?\nt1=$EPOCHREALTIME\necho \"${{!#}} $t0 $t1 $rc\" >> '{}'\nexit $rc\n",
        hook.display(),
        log.display()
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", path.display()))?;
    Ok(path)
}

/// The ms each stage took, from the timer log lines `lines` (one container's).
fn stage_times(lines: &[&str]) -> Result<[f64; 3]> {
    let mut out = [f64::NAN; 3];
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let secs = |s: &str| s.replace(',', ".").parse::<f64>().ok();
        let (Some(stage), Some(t0), Some(t1), Some(rc)) =
            (f.first(), f.get(1).and_then(|s| secs(s)), f.get(2).and_then(|s| secs(s)), f.get(3))
        else {
            bail!("hook timer line {line:?} is not STAGE START END STATUS");
        };
        if *rc != "0" {
            bail!("fastpath-hook {stage} exited with status {rc}");
        }
        let Some(i) = STAGES.iter().position(|s| s == stage) else {
            bail!("hook timer line {line:?}: unknown stage {stage}");
        };
        out[i] = (t1 - t0) * 1e3;
    }
    if let Some(i) = out.iter().position(|v| v.is_nan()) {
        bail!("the hook's {} stage did not run (timer lines: {lines:?})", STAGES[i]);
    }
    Ok(out)
}

/// With the hook: per container, one start with the hook as `install` prints it (timed from
/// outside: hook_start) and one with the hook behind the timing wrapper (hook_own: the three
/// stages' sum). Returns the medians; prints the per-stage medians.
pub fn ours(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let w = World::new(sb, ctx)?;
    let log = sb.path("hook-times.log");
    let timer = write_timer(sb.dir(), &w.host.hook, &log)?;
    let hooks = w.host.oci_hooks(&w.host.hook, &w.host.config)?;
    let timed_hooks = w.host.oci_hooks(&timer, &w.host.config)?;
    let plain = bundle::write_bundle(&sb.path("b-hook"), &w.spec(&CONTRACT, Some(&hooks)))?;
    let timed = bundle::write_bundle(&sb.path("b-timed"), &w.spec(&CONTRACT, Some(&timed_hooks)))?;
    let mut with = Vec::new();
    let mut stages: [Vec<f64>; 3] = Default::default();
    let mut totals = Vec::new();
    for _ in 0..CONTAINERS {
        with.push(w.start(&plain).context("container with fastpath-hook")?);
        let seen = std::fs::read_to_string(&log).unwrap_or_default().lines().count();
        w.start(&timed).context("container with the timed fastpath-hook")?;
        let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        let lines: Vec<&str> = text.lines().skip(seen).collect();
        let t = stage_times(&lines)?;
        for (v, x) in stages.iter_mut().zip(t) {
            v.push(x);
        }
        totals.push(t.iter().sum());
    }
    let left = w.host.ledger();
    if !left.is_empty() {
        bail!("poststop did not release: ledger still holds {:?}", left.keys().collect::<Vec<_>>());
    }
    let (own, start) = (median(&totals), median(&with));
    eprintln!(
        "[hook_start] hook's own time per container (median of {CONTAINERS}): createRuntime {:.1} ms + createContainer {:.1} ms + poststop {:.1} ms = {own:.1} ms (target < {BUDGET_MS:.0} ms); start-to-exit with the hook {start:.1} ms; hook state dir {}{}",
        median(&stages[0]),
        median(&stages[1]),
        median(&stages[2]),
        w.host.state.display(),
        if w.host.state_on_tmpfs { " (tmpfs)" } else { " (not tmpfs: ledger fsyncs cost more than under /run)" },
    );
    Ok(vec![start, own])
}

/// Without the hook: the same container, no hooks, no annotations (fastpathd still running).
pub fn peer(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let w = World::new(sb, ctx)?;
    let bare = bundle::write_bundle(&sb.path("b-bare"), &w.spec(&[], None))?;
    let mut without = Vec::new();
    for _ in 0..CONTAINERS {
        without.push(w.start(&bare).context("container without the hook")?);
    }
    Ok(vec![median(&without), BUDGET_MS])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_times_sum_the_three_stages() {
        let t = stage_times(&[
            "createRuntime 100.000000 100.008000 0",
            "createContainer 100.010000 100.013000 0",
            "poststop 100.020000 100.024500 0",
        ])
        .unwrap();
        assert!((t[0] - 8.0).abs() < 1e-3 && (t[1] - 3.0).abs() < 1e-3 && (t[2] - 4.5).abs() < 1e-3, "{t:?}");
        let e = stage_times(&["createRuntime 1.0 1.1 0"]).unwrap_err().to_string();
        assert!(e.contains("createContainer"), "{e}");
        let e = stage_times(&["poststop 1.0 1.1 1"]).unwrap_err().to_string();
        assert!(e.contains("status 1"), "{e}");
    }
}
