// `cargo xtask test`: setup, release build of every target, then the whole test suite with
// real peers required; prints a summary (passed/failed/ignored, failing tests) at the end.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use crate::procs::{Echo, Stream};
use crate::setup;
use crate::workspace::Workspace;

/// Arguments of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test`, after `--` (e.g. `-- -p netlib` or `-- -- --nocapture`).
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

/// Seconds each fuzz target runs during `cargo xtask test`.
const FUZZ_SECS: u64 = 20;

/// Totals of the `test result:` lines of one `cargo test` run.
#[derive(Default)]
struct Tally {
    binaries: u32,
    passed: u64,
    failed: u64,
    ignored: u64,
    failing: Vec<String>,
}

impl Tally {
    /// Adds what one line of libtest output says.
    fn feed(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("test result: ") {
            self.binaries += 1;
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        } else if let Some(name) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
            self.failing.push(name.to_string());
        }
    }
}

/// Runs setup, the release build and the test suite.
pub fn run(ws: &Workspace, args: &TestArgs) -> Result<()> {
    setup::run()?;
    let t = Instant::now();
    let build = ws.build_release(&["--all-targets"]).and_then(|()| {
        let dir = ws.build_static_examples()?;
        let deb = crate::package::build(ws, &dir)?;
        Ok((dir, deb))
    });
    let build_secs = t.elapsed().as_secs_f64();
    let (static_dir, deb) = match build {
        Ok(built) => built,
        Err(e) => {
            summary(&format!("FAILED ({build_secs:.0} s): {e:#}"), "not run");
            bail!("build failed");
        }
    };
    let bin_dir = ws.release_dir();
    // --no-fail-fast: run every test binary, so that the summary lists every failure.
    let mut test_args = vec!["test".to_string(), "--release".to_string(), "--no-fail-fast".to_string()];
    let picks_packages = args.cargo_args.iter().any(|a| a == "-p" || a.starts_with("--package"));
    if !picks_packages {
        test_args.push("--workspace".to_string());
    }
    test_args.extend(args.cargo_args.iter().cloned());
    eprintln!("xtask: FASTPATH_BIN_DIR={} FASTPATH_REQUIRE_PEERS=1 cargo {}", bin_dir.display(), test_args.join(" "));
    let refs: Vec<&str> = test_args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let mut tests = ws
        .cargo(&refs)
        .env("FASTPATH_BIN_DIR", &bin_dir)
        .env("FASTPATH_REQUIRE_PEERS", "1")
        .env("FASTPATH_STATIC_BIN_DIR", &static_dir)
        .env("FASTPATH_DEB", &deb)
        .stdout(Stream::Capture(Echo::Plain))
        .spawn()?;
    let status = tests.wait_timeout(Duration::from_secs(6 * 3600))?;
    let secs = t.elapsed().as_secs_f64();
    let mut tally = Tally::default();
    for line in tests.stdout_lines() {
        tally.feed(&line);
    }
    let ok = status.is_some_and(|s| s.success());
    let mut line = format!(
        "{} ({secs:.0} s): {} passed, {} failed, {} ignored, in {} test binaries",
        if ok { "ok" } else { "FAILED" },
        tally.passed,
        tally.failed,
        tally.ignored,
        tally.binaries
    );
    match status {
        None => line.push_str("; timed out"),
        Some(s) if !s.success() && tally.failed == 0 => {
            let _ = write!(line, "; cargo test exited ({s}): see its output above");
        }
        _ => {}
    }
    // A short bounded fuzz run of every target on its checked-in corpus.
    let fuzz = crate::fuzz::run_targets(ws, FUZZ_SECS, &[]);
    summary(&format!("ok ({build_secs:.0} s)"), &line);
    for name in &tally.failing {
        println!("  failed: {name}");
    }
    match &fuzz {
        Ok(rs) => {
            for r in rs {
                println!("fuzz    {}: {} execs in {FUZZ_SECS} s, no crash", r.target, r.execs);
            }
        }
        Err(e) => println!("fuzz    FAILED: {e:#}"),
    }
    if !ok {
        bail!("tests failed");
    }
    fuzz.map(|_| ())
}

fn summary(build: &str, tests: &str) {
    println!();
    println!("== cargo xtask test: summary ==");
    println!("setup   ok");
    println!("build   {build}");
    println!("tests   {tests}");
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn adds_up_test_result_lines_and_names_failures() {
        let mut t = Tally::default();
        for l in [
            "test a::b ... ok",
            "test a::c ... FAILED",
            "test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            t.feed(l);
        }
        assert_eq!((t.binaries, t.passed, t.failed, t.ignored), (2, 4, 1, 2));
        assert_eq!(t.failing, vec!["a::c".to_string()]);
    }
}
