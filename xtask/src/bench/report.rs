// Results of a benchmark: per-metric runs of both sides, their medians and per-pair ratios,
// printed as a table and written as target/bench/latest.json.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::cases::Unit;

/// The runs of one metric: one entry per round and side (`None`: failed or skipped).
pub struct Series {
    /// Metric name.
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// Our value per round.
    pub ours: Vec<Option<f64>>,
    /// The peer's value per round.
    pub peer: Vec<Option<f64>>,
    /// The `--baseline` binaries' value per round (empty without `--baseline`).
    pub baseline: Vec<Option<f64>>,
    /// Whether any baseline run failed.
    pub baseline_failed: bool,
    /// Whether any of our runs failed (then our value is reported as null).
    pub ours_failed: bool,
    /// Whether any peer run failed (then the peer value is reported as null).
    pub peer_failed: bool,
    /// Cross-core probe before each round, ns per handoff.
    pub probes: Vec<Option<f64>>,
}

impl Series {
    /// An empty series.
    pub fn new(name: &'static str, unit: Unit) -> Self {
        Self {
            name,
            unit,
            ours: Vec::new(),
            peer: Vec::new(),
            baseline: Vec::new(),
            baseline_failed: false,
            ours_failed: false,
            peer_failed: false,
            probes: Vec::new(),
        }
    }

    /// The runs of one side and whether one of them failed.
    pub(super) fn side(&self, side: super::Side) -> (&[Option<f64>], bool) {
        match side {
            super::Side::Ours => (&self.ours, self.ours_failed),
            super::Side::Baseline => (&self.baseline, self.baseline_failed),
            super::Side::Peer => (&self.peer, self.peer_failed),
        }
    }

    /// As [`Self::side`], to record a run.
    pub(super) fn side_mut(&mut self, side: super::Side) -> (&mut Vec<Option<f64>>, &mut bool) {
        match side {
            super::Side::Ours => (&mut self.ours, &mut self.ours_failed),
            super::Side::Baseline => (&mut self.baseline, &mut self.baseline_failed),
            super::Side::Peer => (&mut self.peer, &mut self.peer_failed),
        }
    }

    /// The median of our runs, unless one failed.
    pub fn ours_median(&self) -> Option<f64> {
        summarize(&self.ours, self.ours_failed)
    }

    /// The median of the peer's runs, unless one failed.
    pub fn peer_median(&self) -> Option<f64> {
        summarize(&self.peer, self.peer_failed)
    }

    /// The median over rounds of ours-vs-peer ratios (> 1: ours better), if both sides ran.
    pub fn ratio(&self) -> Option<f64> {
        self.ratio_of(&self.ours, self.ours_failed)
    }

    /// As [`Self::ratio`], for the `--baseline` binaries.
    pub fn baseline_ratio(&self) -> Option<f64> {
        if self.baseline.is_empty() {
            return None;
        }
        self.ratio_of(&self.baseline, self.baseline_failed)
    }

    fn ratio_of(&self, runs: &[Option<f64>], failed: bool) -> Option<f64> {
        if failed || self.peer_failed {
            return None;
        }
        let ratios: Vec<f64> = runs
            .iter()
            .zip(&self.peer)
            .filter_map(|(o, p)| Some(self.unit.ratio((*o)?, (*p)?)))
            .filter(|r| r.is_finite())
            .collect();
        finite(median(&ratios))
    }

    /// The ratio of one round, for the log.
    pub fn round_ratio(&self, round: usize) -> Option<f64> {
        let o = (*self.ours.get(round)?)?;
        let p = (*self.peer.get(round)?)?;
        finite(self.unit.ratio(o, p))
    }

    /// The median probe of the rounds.
    pub fn probe_median(&self) -> Option<f64> {
        let v: Vec<f64> = self.probes.iter().flatten().copied().collect();
        finite(median(&v))
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn summarize(runs: &[Option<f64>], failed: bool) -> Option<f64> {
    if failed {
        return None;
    }
    let v: Vec<f64> = runs.iter().flatten().copied().collect();
    finite(median(&v))
}

/// The median of `v` (mean of the two middle values for an even count); NaN if empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// One failed run, for the JSON report.
#[derive(Serialize)]
pub struct Failure {
    /// Case name.
    pub case: String,
    /// "fastpath" or "peer".
    pub side: &'static str,
    /// Round number, from 1.
    pub round: usize,
    /// The error, with the stderr tail of the process that failed.
    pub error: String,
}

#[derive(Serialize)]
struct CaseJson {
    name: &'static str,
    unit: &'static str,
    fastpath: Option<f64>,
    peer: Option<f64>,
    ratio: Option<f64>,
    fastpath_runs: Vec<Option<f64>>,
    peer_runs: Vec<Option<f64>>,
    /// With `--baseline` only: the baseline binaries' median and ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_ratio: Option<f64>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    cases: Vec<CaseJson>,
    rounds: u32,
    secs: u64,
    probe_ns: BTreeMap<&'static str, Vec<Option<f64>>>,
    failures: &'a [Failure],
}

/// Writes `{"cases":[{"name","unit","fastpath","peer","ratio",...}],...}` to `path`.
pub fn write_json(path: &Path, series: &[Series], rounds: u32, secs: u64, failures: &[Failure]) -> Result<()> {
    let report = ReportJson {
        cases: series
            .iter()
            .map(|s| CaseJson {
                name: s.name,
                unit: s.unit.label(),
                fastpath: s.ours_median(),
                peer: s.peer_median(),
                ratio: s.ratio(),
                fastpath_runs: s.ours.clone(),
                peer_runs: s.peer.clone(),
                baseline: summarize(&s.baseline, s.baseline_failed),
                baseline_ratio: s.baseline_ratio(),
            })
            .collect(),
        rounds,
        secs,
        probe_ns: series.iter().map(|s| (s.name, s.probes.clone())).collect(),
        failures,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// A value for the table: 2 decimals, or "FAILED" / "-".
fn cell(v: Option<f64>, failed: bool) -> String {
    match v {
        Some(x) => format!("{x:.2}"),
        None if failed => "FAILED".to_string(),
        None => "-".to_string(),
    }
}

/// Prints the result table (with the `--baseline` columns when there were such runs).
pub fn print_table(series: &[Series]) {
    let with_baseline = series.iter().any(|s| !s.baseline.is_empty());
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
    println!();
    let mut head = format!("{:<14} {:<5} {:>10} {:>10} {:>7}", "case", "unit", "fastpath", "peer", "ratio");
    if with_baseline {
        let _ = write!(head, " {:>10} {:>10}", "baseline", "b. ratio");
    }
    println!("{head} {:>9}", "probe ns");
    for s in series {
        let mut row = format!(
            "{:<14} {:<5} {:>10} {:>10} {:>7}",
            s.name,
            s.unit.label(),
            cell(s.ours_median(), s.ours_failed),
            cell(s.peer_median(), s.peer_failed),
            ratio(s.ratio()),
        );
        if with_baseline {
            let _ = write!(
                row,
                " {:>10} {:>10}",
                cell(summarize(&s.baseline, s.baseline_failed), s.baseline_failed),
                ratio(s.baseline_ratio())
            );
        }
        println!("{row} {:>9}", s.probe_median().map_or_else(|| "-".to_string(), |p| format!("{p:.0}")));
    }
    println!("(ratio > 1: fastpath better; medians over rounds; ratio = median of per-round ratios; b. ratio: the same for --baseline's binaries)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratio_is_above_one_when_ours_is_better() {
        let mut t = Series::new("rtt", Unit::Us);
        t.ours = vec![Some(1.0), Some(2.0)];
        t.peer = vec![Some(2.0), Some(2.0)];
        assert!((t.ratio().unwrap() - 1.5).abs() < 1e-9);
        let mut m = Series::new("v2h_64", Unit::Mpps);
        m.ours = vec![Some(20.0)];
        m.peer = vec![Some(10.0)];
        assert!((m.ratio().unwrap() - 2.0).abs() < 1e-9);
        m.ours_failed = true;
        assert!(m.ratio().is_none() && m.ours_median().is_none());
    }
}
