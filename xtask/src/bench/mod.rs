// `cargo xtask bench`: races our binaries against DPDK testpmd / OVS-DPDK, interleaved
// (ours, peer, ours, peer...) with a cross-core probe before each pair, then reports medians.

mod apps;
mod cases;
mod hook_start;
mod interrupt;
mod jumbo;
mod ours;
mod ovs;
mod packed;
mod ports;
mod probe;
mod report;
mod restart;
mod scrape;
mod testpmd;
mod tso;
mod uplink;
mod vxlan;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use self::cases::Case;
use self::ours::Ctx;
use self::report::{Failure, Series};
use crate::procs::{self, check_interrupt, Interrupted};
use crate::setup;
use crate::workspace::Workspace;

/// Arguments of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// One round of 2 s runs (unless --rounds or --secs say otherwise).
    #[arg(long)]
    pub quick: bool,
    /// Rounds (pairs of runs) per case [default: 5].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seconds of traffic per run [default: 5].
    #[arg(long)]
    pub secs: Option<u64>,
    /// Run only this case (repeatable): v2h_64 v2h_1518 h2v_64 h2v_1518 twoway_64 switch_64 capture_64 rtt
    /// start lb_64 fw_64 udp_rr hook_start wake idle_cpu afxdp_64 afxdp_ovs_64 tap_rr vxlan_64 restart scrape_64
    /// jumbo_9000 switch_16 switch_64ports macs_10k mq2_64 mq2w_64 v2h_64_packed h2v_64_packed twoway_64_packed tso_64k.
    #[arg(long = "case", value_name = "NAME")]
    pub cases: Vec<String>,
    /// Skip the release build and use the binaries already in target/release.
    #[arg(long)]
    pub no_build: bool,
    /// Show every command line and all output of every process, prefixed with its name.
    #[arg(long)]
    pub verbose: bool,
    /// Also run our binaries from DIR (e.g. a release build of the previous commit) in
    /// every round, between ours and the peer's, and print their ratio next to ours:
    /// a before/after comparison in one interleaved run.
    #[arg(long, value_name = "DIR")]
    pub baseline: Option<std::path::PathBuf>,
}

/// Which side of a round.
#[derive(Clone, Copy)]
enum Side {
    Ours,
    /// Our binaries from `--baseline`.
    Baseline,
    Peer,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Ours => "fastpath",
            Side::Baseline => "baseline",
            Side::Peer => "peer",
        }
    }
}

/// Runs the benchmark; fails (after writing the report) if any run failed.
pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<()> {
    setup::run()?;
    if args.verbose {
        procs::echo_everything();
    }
    if !args.no_build {
        ws.build_release(&["--bins"])?;
    }
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 5 }).max(1);
    let secs = args.secs.unwrap_or(if args.quick { 2 } else { 5 }).max(1);
    let selected: Vec<&Case> = if args.cases.is_empty() {
        cases::CASES.iter().collect()
    } else {
        let mut v: Vec<&Case> = Vec::new();
        for name in &args.cases {
            let c = cases::find(name)?;
            if !v.iter().any(|x| x.name == c.name) {
                v.push(c);
            }
        }
        v
    };
    let ctx = Ctx { bin_dir: ws.release_dir(), secs };
    let baseline = args.baseline.as_ref().map(|d| Ctx { bin_dir: d.clone(), secs });
    if let Some(b) = &baseline {
        if !b.bin_dir.join("fastpathd").is_file() {
            bail!("--baseline {}: no fastpathd there (give a directory of release binaries)", b.bin_dir.display());
        }
    }
    eprintln!(
        "bench: {} case(s) x {rounds} round(s) x {} runs of {secs} s; ours from {}{}",
        selected.len(),
        if baseline.is_some() { 3 } else { 2 },
        ctx.bin_dir.display(),
        baseline.as_ref().map_or_else(String::new, |b| format!(", baseline from {}", b.bin_dir.display()))
    );

    let mut all_series = Vec::new();
    let mut failures = Vec::new();
    for case in selected {
        all_series.extend(run_case(case, &ctx, baseline.as_ref(), rounds, &mut failures)?);
    }

    report::print_table(&all_series);
    let path = ws.target.join("bench").join("latest.json");
    report::write_json(&path, &all_series, rounds, secs, &failures)?;
    println!("wrote {}", path.display());
    if !failures.is_empty() {
        let mut which: Vec<String> = failures.iter().map(|f| format!("{} ({})", f.case, f.side)).collect();
        which.dedup();
        bail!("{} run(s) failed: {}", failures.len(), which.join(", "));
    }
    Ok(())
}

/// Runs the rounds of one case; a side that fails once is not run again for this case.
fn run_case(
    case: &Case,
    ctx: &Ctx,
    baseline: Option<&Ctx>,
    rounds: u32,
    failures: &mut Vec<Failure>,
) -> Result<Vec<Series>> {
    let mut series: Vec<Series> = case.metrics.iter().map(|m| Series::new(m.name, m.unit)).collect();
    for round in 0..rounds as usize {
        check_interrupt()?;
        let tag = format!("[{} {}/{rounds}]", case.name, round + 1);
        let probe = match probe::cross_core_ns(0, 1, Duration::from_millis(50)) {
            Ok(ns) => Some(ns),
            Err(e) => {
                eprintln!("{tag} probe failed: {e:#}");
                None
            }
        };
        let mut line = format!("{tag} probe {}", probe.map_or_else(|| "-".to_string(), |p| format!("{p:.0} ns")));
        for s in &mut series {
            s.probes.push(probe);
        }
        let sides: &[Side] =
            if baseline.is_some() { &[Side::Ours, Side::Baseline, Side::Peer] } else { &[Side::Ours, Side::Peer] };
        for &side in sides {
            let already_failed = series[0].side(side).1;
            let values = if already_failed {
                None
            } else {
                let result = match (side, baseline) {
                    (Side::Ours, _) => case.run_ours(ctx),
                    (Side::Baseline, Some(b)) => case.run_ours(b),
                    (Side::Baseline, None) => continue,
                    (Side::Peer, _) => case.run_peer(ctx),
                };
                match result {
                    Ok(v) if v.len() == series.len() => Some(v),
                    Ok(v) => {
                        record(
                            failures,
                            case,
                            side,
                            round,
                            &tag,
                            &format!("{} values, expected {}", v.len(), series.len()),
                        );
                        None
                    }
                    Err(e) if e.is::<Interrupted>() => return Err(e),
                    Err(e) => {
                        record(failures, case, side, round, &tag, &format!("{e:#}"));
                        None
                    }
                }
            };
            for (i, s) in series.iter_mut().enumerate() {
                let v = values.as_ref().map(|v| v[i]);
                let (runs, failed) = s.side_mut(side);
                runs.push(v);
                *failed |= v.is_none();
            }
        }
        for s in &series {
            let show = |v: Option<f64>| v.map_or_else(|| "FAILED".to_string(), |x| format!("{x:.3}"));
            let _ = write!(
                line,
                " | {} {}: fastpath {} peer {} ratio {}",
                s.name,
                s.unit.label(),
                show(s.ours[round]),
                show(s.peer[round]),
                s.round_ratio(round).map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
            );
            if let Some(b) = s.baseline.get(round) {
                let _ = write!(line, " baseline {}", show(*b));
            }
        }
        eprintln!("{line}");
    }
    Ok(series)
}

/// Logs and records one failed run.
fn record(failures: &mut Vec<Failure>, case: &Case, side: Side, round: usize, tag: &str, error: &str) {
    eprintln!("{tag} {} FAILED: {error}", side.label());
    failures.push(Failure {
        case: case.name.to_string(),
        side: side.label(),
        round: round + 1,
        error: error.to_string(),
    });
}
