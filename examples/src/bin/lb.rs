// lb: an L4 load balancer between two ports: each IPv4 flow (5-tuple) goes to one backend
// by consistent hashing; its destination MAC (and IP with --nat backends) is rewritten.
//! L4 load balancer.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fastpath_examples::lb::{parse_backends, Action, Backend, Balancer};
use fastpath_examples::vnf::{take_flag, Logic, MacArgs, Totals, Vnf};
use fastpath_examples::{init_logging, report, Common};
use netlib::PortSpec;

/// Balances flows over backends.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath lb: L4 load balancer; flows from --in go to --out with the chosen backend's MAC (and IP)",
    after_help = "Backends: --backend MAC or --backend MAC,IP (rewrites the destination IP too), repeatable,\n\
and/or --backends FILE with one such entry a line, re-read on SIGHUP (flows move only to added backends).\n\
SIGUSR1 prints the per-backend counters."
)]
struct Args {
    /// Ingress port (vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH, vf:PCI).
    #[arg(long = "in")]
    inp: PortSpec,
    /// Egress port.
    #[arg(long)]
    out: PortSpec,
    /// A backend: MAC or MAC,IP (repeatable).
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// A file of backends, one MAC or MAC,IP a line; re-read on SIGHUP.
    #[arg(long = "backends")]
    backends_file: Option<PathBuf>,
    #[command(flatten)]
    macs: MacArgs,
    #[command(flatten)]
    common: Common,
}

fn load(a: &Args) -> Result<Vec<Backend>> {
    let mut v = Vec::new();
    for b in &a.backends {
        v.push(Backend::parse(b).map_err(|e| anyhow::anyhow!("--backend: {e}"))?);
    }
    if let Some(p) = &a.backends_file {
        let text = std::fs::read_to_string(p).with_context(|| format!("--backends {}: cannot read it", p.display()))?;
        v.extend(parse_backends(&text, &p.display().to_string()).map_err(anyhow::Error::msg)?);
    }
    if v.is_empty() {
        bail!("no backends: give --backend MAC[,IP] or --backends FILE");
    }
    Ok(v)
}

fn show(lb: &Balancer) -> String {
    let mut s = String::new();
    for (b, n) in lb.backends().iter().zip(&lb.per_backend) {
        let _ = writeln!(s, "backend {b}: {n} packets");
    }
    let _ = write!(s, "not IPv4 (dropped): {} packets", lb.not_ipv4);
    s
}

/// The balancer plus what its signals ask for.
struct Lb<'a> {
    args: &'a Args,
    balancer: Balancer,
    usr1: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Logic for Lb<'_> {
    #[inline]
    fn process(&mut self, f: &mut [u8]) -> bool {
        matches!(self.balancer.process(f), Action::To(_))
    }

    fn house(&mut self, _t: &Totals) {
        if take_flag(&self.hup) {
            // A reload swaps in a new table between bursts; a bad file keeps the old one.
            match load(self.args).and_then(|v| {
                let n = v.len();
                self.balancer.set_backends(v).map_err(anyhow::Error::msg).map(|()| n)
            }) {
                Ok(n) => eprintln!("lb: reloaded: {n} backend(s)"),
                Err(e) => eprintln!("lb: reload refused, keeping the old backends: {e:#}"),
            }
        }
        if take_flag(&self.usr1) {
            eprintln!("{}", show(&self.balancer));
        }
    }
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let c = &a.common;
    // The source MAC is the egress port's, written by the VNF loop (MacArgs).
    let lb = Balancer::new(load(&a)?, None).map_err(anyhow::Error::msg)?;
    let usr1 = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&usr1))?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    let mut vnf = Vnf::open(&a.inp, &a.out, &a.macs, c)?;
    if !c.quiet {
        eprintln!("lb: {} backend(s); {} -> {}", lb.backends().len(), a.inp, a.out);
    }
    let mut logic = Lb { args: &a, balancer: lb, usr1, hup };
    let totals = vnf.run(c, "lb", &mut logic);
    let lb = logic.balancer;
    if !c.quiet {
        eprintln!("{}", show(&lb));
    }
    let per: Vec<serde_json::Value> = lb
        .backends()
        .iter()
        .zip(&lb.per_backend)
        .map(|(b, n)| serde_json::json!({"backend": b.to_string(), "packets": n}))
        .collect();
    let mut v = totals.json();
    v["role"] = "lb".into();
    v["backends"] = per.into();
    v["not_ipv4"] = lb.not_ipv4.into();
    report(c, &v);
    Ok(())
}
