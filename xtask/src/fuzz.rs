// `cargo xtask fuzz`: builds the cargo-fuzz targets in fuzz/ (installing cargo-fuzz if
// missing) and runs each for a bounded time on its checked-in corpus, reporting exec counts.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::workspace::Workspace;

/// The fuzz targets (fuzz/fuzz_targets/*.rs).
pub const TARGETS: [&str; 4] = ["vhost_msg", "desc_chain", "packed_chain", "vnet_offload"];

/// Arguments of `cargo xtask fuzz`.
#[derive(Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// Run only this target (repeatable).
    #[arg(long = "target")]
    pub targets: Vec<String>,
}

/// What one target's run found.
pub struct FuzzResult {
    /// Target name.
    pub target: String,
    /// Executions done.
    pub execs: u64,
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing: cargo install cargo-fuzz (about 2 minutes)");
    let st = Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]).status()?;
    if !st.success() {
        bail!("cargo install cargo-fuzz failed ({st})");
    }
    Ok(())
}

/// Runs every (selected) target for `secs` seconds; fails on the first crash.
pub fn run_targets(ws: &Workspace, secs: u64, only: &[String]) -> Result<Vec<FuzzResult>> {
    ensure_cargo_fuzz()?;
    let dir = ws.root.join("fuzz");
    let mut results = Vec::new();
    for t in TARGETS.iter().filter(|t| only.is_empty() || only.iter().any(|o| o == *t)) {
        let corpus = dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let scratch = tempdir(t)?;
        eprintln!("xtask: fuzz {t} for {secs} s (corpus {})", corpus.display());
        let start = Instant::now();
        // The stable toolchain is the only one here; cargo-fuzz's -Z flags need the bootstrap switch.
        // New inputs go to a scratch dir so the checked-in corpus only grows on purpose.
        let out = Command::new("cargo")
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "-O", t])
            .arg(&scratch)
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={secs}"), "-print_final_stats=1"])
            .output()
            .with_context(|| format!("running cargo fuzz run {t}"))?;
        let _ = std::fs::remove_dir_all(&scratch);
        let text = String::from_utf8_lossy(&out.stderr);
        let execs = parse_execs(&text);
        if !out.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("fuzz target {t} failed after {:.0} s:\n{}", start.elapsed().as_secs_f64(), tail.join("\n"));
        }
        println!("fuzz {t}: {execs} execs in {:.0} s, no crash", start.elapsed().as_secs_f64());
        results.push(FuzzResult { target: (*t).to_string(), execs });
    }
    Ok(results)
}

fn tempdir(tag: &str) -> Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!("fastpath-fuzz-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

/// Total executions from libFuzzer's output ("Done N runs" or "stat::number_of_executed_units: N").
fn parse_execs(text: &str) -> u64 {
    for line in text.lines().rev() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            return n.trim().parse().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Done ") {
            return rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// `cargo xtask fuzz`.
pub fn run(ws: &Workspace, args: &FuzzArgs) -> Result<()> {
    if !Path::new(&ws.root.join("fuzz/Cargo.toml")).exists() {
        bail!("no fuzz/ crate in {}", ws.root.display());
    }
    let results = run_targets(ws, args.secs, &args.targets)?;
    println!();
    println!("{:<12} {:>12} {:>8}", "target", "execs", "secs");
    for r in &results {
        println!("{:<12} {:>12} {:>8}", r.target, r.execs, args.secs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_execs;

    #[test]
    fn parses_exec_counts() {
        assert_eq!(parse_execs("x\nDone 679417 runs in 21 second(s)\n"), 679_417);
        assert_eq!(parse_execs("stat::number_of_executed_units: 42\nDone 7 runs"), 7);
        assert_eq!(parse_execs("nothing"), 0);
    }
}
