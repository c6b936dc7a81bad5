// fastpathd: the switch daemon. Reads the config and flags, creates the ports,
// pins the polling worker, and serves the control socket until SIGINT/SIGTERM.
//! The fastpath switch daemon.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use fastpath::config::{parse_port_flag, Config};
use fastpath::control;
use fastpath::switch::{NewPort, Switch};
use fastpath::worker;

/// fastpathd: a polling vhost-user switch for containers.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpathd: a polling vhost-user switch (L2 learning bridges) for containers",
    after_help = "Ports are vhost-user sockets: the switch listens (vhost) or connects to a container that listens (vhost-client).\n\
Example: fastpathd --core 0 --ctl /tmp/fp.sock --port br0:a:vhost:/tmp/a.sock --port br0:b:vhost:/tmp/b.sock\n\
Then: fastpathctl --ctl /tmp/fp.sock stats --watch"
)]
struct Args {
    /// TOML configuration file (flags below override or add to it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Control socket path.
    #[arg(long)]
    ctl: Option<PathBuf>,
    /// CPU to pin the polling worker to.
    #[arg(long)]
    core: Option<usize>,
    /// A bridge to create (repeatable; default br0).
    #[arg(long = "bridge")]
    bridges: Vec<String>,
    /// Interrupt mode: sleep on the ports' kicks when there is no traffic (idle
    /// cost near zero; adds a wake-up to the first packet after a pause).
    #[arg(long)]
    interrupt: bool,
    /// A port: BRIDGE:NAME:vhost:PATH (switch listens) or BRIDGE:NAME:vhost-client:PATH (repeatable).
    #[arg(long = "port")]
    ports: Vec<String>,
}

fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let a = Args::parse();
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(c) = a.ctl {
        cfg.ctl_socket = c;
    }
    if a.core.is_some() {
        cfg.core = a.core;
    }
    if a.interrupt {
        cfg.interrupt = true;
    }
    if !a.bridges.is_empty() {
        cfg.bridges = a.bridges;
    }
    for p in &a.ports {
        cfg.ports.push(parse_port_flag(p)?);
    }
    cfg.validate()?;
    let listener =
        control::bind(&cfg.ctl_socket).with_context(|| format!("control socket {}", cfg.ctl_socket.display()))?;
    let defaults = cfg.port_defaults();
    let mut sw = Switch::new(&cfg.bridges, cfg.mac_age_secs);
    for p in &cfg.ports {
        let port = NewPort::open(p.clone(), &defaults)?;
        sw.add_port(port)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let (tx, rx) = channel();
    let core = cfg.core;
    let interrupt = cfg.interrupt;
    let wstop = Arc::clone(&stop);
    let w = std::thread::Builder::new().name("fastpath-worker".into()).spawn(move || {
        if let Some(c) = core {
            let mut set = nix::sched::CpuSet::new();
            if set.set(c).is_ok() && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok() {
                tracing::info!("worker pinned to CPU {c}");
            } else {
                tracing::warn!("could not pin the worker to CPU {c}");
            }
        }
        worker::run(sw, &rx, &wstop, interrupt);
    })?;
    tracing::info!(
        "fastpathd running: control {}, bridges {}, {} ports",
        cfg.ctl_socket.display(),
        cfg.bridges.join(","),
        cfg.ports.len()
    );
    let ctl_path = cfg.ctl_socket.clone();
    std::thread::spawn(move || control::serve(&listener, &tx, &defaults));
    let _ = w.join();
    let _ = std::fs::remove_file(&ctl_path);
    tracing::info!("fastpathd stopped");
    Ok(())
}
