// fw: a stateless firewall between two ports: frames from --in pass to --out if the
// first matching rule of the ACL allows them; per-rule counters at exit, on SIGUSR1, or with --stats.
//! Stateless ACL firewall.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use fastpath_examples::acl::{Acl, Verdict};
use fastpath_examples::vnf::{take_flag, Logic, MacArgs, Totals, Vnf};
use fastpath_examples::{init_logging, report, Common};
use netlib::PortSpec;

/// Filters frames by a rules file.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath fw: stateless ACL firewall; frames from --in go to --out if the rules allow them",
    after_help = "Rules file, first match wins:\n  allow udp 10.0.0.0/8 any -> 192.168.1.0/24 53\n  deny tcp any any -> any 22\n  default deny\n\
Frames coming back on --out pass to --in unfiltered. SIGUSR1 prints the per-rule counters."
)]
struct Args {
    /// Ingress port (vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH, vf:PCI).
    #[arg(long = "in")]
    inp: PortSpec,
    /// Egress port.
    #[arg(long)]
    out: PortSpec,
    /// The rules file.
    #[arg(long)]
    rules: PathBuf,
    /// Print the per-rule counters every second on stderr.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    macs: MacArgs,
    #[command(flatten)]
    common: Common,
}

/// The ACL plus what its signals and --stats ask for.
struct Fw {
    acl: Acl,
    usr1: Arc<AtomicBool>,
    every_sec: bool,
    next: Instant,
}

impl Logic for Fw {
    #[inline]
    fn process(&mut self, f: &mut [u8]) -> bool {
        self.acl.check(f) == Verdict::Allow
    }

    fn house(&mut self, _t: &Totals) {
        let due = self.every_sec && Instant::now() >= self.next;
        if take_flag(&self.usr1) || due {
            eprint!("{}", self.acl.report());
            self.next = Instant::now() + Duration::from_secs(1);
        }
    }
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let c = &a.common;
    let text =
        std::fs::read_to_string(&a.rules).with_context(|| format!("--rules {}: cannot read it", a.rules.display()))?;
    let acl = Acl::parse(&text, &a.rules.display().to_string()).map_err(anyhow::Error::msg)?;
    let usr1 = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&usr1))?;
    let mut vnf = Vnf::open(&a.inp, &a.out, &a.macs, c)?;
    if !c.quiet {
        eprintln!("fw: {} rule(s), default {}; {} -> {}", acl.rules().len(), acl.default_verdict(), a.inp, a.out);
    }
    let mut fw = Fw { acl, usr1, every_sec: a.stats, next: Instant::now() + Duration::from_secs(1) };
    let totals = vnf.run(c, "fw", &mut fw);
    eprint!("{}", fw.acl.report());
    let mut v = totals.json();
    v["role"] = "fw".into();
    v["acl"] = fw.acl.json();
    report(c, &v);
    Ok(())
}
