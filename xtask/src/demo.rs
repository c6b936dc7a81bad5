// `cargo xtask demo`: fastpathd with two listening ports on one bridge, a sink on one and a
// rate-limited pktgen on the other, their live lines shown prefixed, until Ctrl-C or --secs.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::procs::{interrupted, Echo, Spawn, Stream};
use crate::scratch::Sandbox;
use crate::setup;
use crate::workspace::Workspace;

/// Arguments of `cargo xtask demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    pub secs: Option<u64>,
}

/// Runs the demo; Ctrl-C is the normal way to end it.
pub fn run(ws: &Workspace, args: &DemoArgs) -> Result<()> {
    setup::run()?;
    ws.build_release(&["--bins"])?;
    let bins = ws.release_dir();
    for b in ["fastpathd", "sink", "pktgen"] {
        if !bins.join(b).is_file() {
            bail!("{} is missing (not written yet, or the build failed)", bins.join(b).display());
        }
    }
    let mut sb = Sandbox::new("demo")?;
    let (a, b, ctl) = (sb.path("a.sock"), sb.path("b.sock"), sb.path("ctl.sock"));
    let show = Stream::Capture(Echo::Prefixed);
    let switch = sb.spawn(
        Spawn::new("fastpathd", bins.join("fastpathd"))
            .args(["--core", "0", "--bridge", "br0"])
            .args(["--ctl".to_string(), ctl.display().to_string()])
            .args(["--port".to_string(), format!("br0:a:vhost:{}", a.display())])
            .args(["--port".to_string(), format!("br0:b:vhost:{}", b.display())])
            .stdout(show)
            .stderr(show),
    )?;
    sb.wait_for_path(&a, Duration::from_secs(20))?;
    sb.wait_for_path(&b, Duration::from_secs(20))?;
    let sink = sb.spawn(
        Spawn::new("sink", bins.join("sink"))
            .args(["--port".to_string(), format!("vu:{}", a.display())])
            .args(["--core", "1", "--secs", "0", "--json", "--check", "--queue-size", "1024", "--idle-sleep-us", "5"])
            .stderr(show),
    )?;
    let gen = sb.spawn(
        Spawn::new("pktgen", bins.join("pktgen"))
            .args(["--port".to_string(), format!("vu:{}", b.display())])
            .args(["--core", "1", "--secs", "0", "--rate", "1000000"])
            .stdout(show)
            .stderr(show),
    )?;
    let until = args.secs.map(|s| Instant::now() + Duration::from_secs(s));
    eprintln!(
        "demo: switch + sink + pktgen running in {}; {}",
        sb.dir().display(),
        match args.secs {
            Some(s) => format!("stopping after {s} s (or Ctrl-C)"),
            None => "Ctrl-C to stop".to_string(),
        }
    );
    let mut problem = None;
    while !interrupted() && until.map_or(true, |u| Instant::now() < u) {
        if let Err(e) = sb.check_alive() {
            problem = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("demo: stopping");
    // Generator first so the sink sees the stream end, then the sink (which prints its
    // summary on SIGINT), then the switch.
    sb.stop(gen, Signal::SIGINT, Duration::from_secs(3));
    sb.stop(sink, Signal::SIGINT, Duration::from_secs(5));
    sb.stop(switch, Signal::SIGTERM, Duration::from_secs(5));
    let summary = sb
        .proc(sink)
        .stdout_lines()
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v.get("role").and_then(Value::as_str) == Some("sink"));
    match summary {
        Some(v) => println!("sink summary: {v}"),
        None => println!("sink printed no summary{}", sb.proc(sink).stderr_excerpt()),
    }
    drop(sb);
    match problem {
        Some(e) => Err(e.context("a demo process stopped early")),
        None => Ok(()),
    }
}
