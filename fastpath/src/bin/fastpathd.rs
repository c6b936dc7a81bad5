// fastpathd: the switch daemon. Reads the config and flags (taking over from a running switch
// if asked), restores its ports, pins the polling worker, and serves the control socket until
// SIGINT/SIGTERM or a handover.
//! The fastpath switch daemon.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use fastpath::config::{parse_port_flag, Config};
use fastpath::control;
use fastpath::fleet;
use fastpath::state::{restore, Durable};
use fastpath::switch::AddPorts;
use fastpath::switch::Switch;
use fastpath::worker::{self, FirstFrame};
use fastpath_host::fdtable;
use fastpath_host::logging::{self, LogFormat};

/// How long a running switch may take to hand over.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The fd table's size from the start (see [`fdtable`]): room for 64 ports' memory regions,
/// eventfds and connections, and a tenant's 253-fd message, many times over.
const FD_TABLE_SLOTS: u64 = 16_384;

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
    /// State directory: where the ports are kept across restarts (default: the control
    /// socket's directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Replace the fastpathd running on the control socket: ask it to hand its ports over
    /// (it closes them, saves its state and exits), then restore them here. Frontends
    /// reconnect; the outage is logged ("first frame through N ms after ... stopped").
    #[arg(long)]
    takeover: bool,
    /// CPU to pin the polling worker to.
    #[arg(long, conflicts_with = "cores")]
    core: Option<usize>,
    /// Run one polling worker on each of these CPUs (comma-separated, e.g. 0,1): ports are
    /// spread over the workers, each run by its own worker (and a vhost-user port's queue
    /// pairs past the first polled by the others: pair q by worker (w + q) mod N, unless
    /// --interrupt or the port's spread = false); the MAC tables are shared; a frame for
    /// another worker's port crosses to it through a link.
    #[arg(long, value_delimiter = ',', value_name = "CPU,CPU,...")]
    cores: Vec<usize>,
    /// A bridge to create (repeatable; default br0).
    #[arg(long = "bridge")]
    bridges: Vec<String>,
    /// Interrupt mode: sleep on the ports' kicks when there is no traffic (idle
    /// cost near zero; adds a wake-up to the first packet after a pause).
    #[arg(long)]
    interrupt: bool,
    /// Give the core away (a 20 us nap) whenever a batch of polls finds no traffic: for a
    /// worker pinned to a core it shares with apps, another poller or an afxdp uplink's NAPI
    /// thread.
    #[arg(long)]
    share_core: bool,
    /// A port (repeatable): BRIDGE:NAME:vhost:PATH (switch listens), BRIDGE:NAME:vhost-client:PATH,
    /// BRIDGE:NAME:tap:IFNAME, BRIDGE:NAME:afxdp:IFNAME[:QUEUE] or BRIDGE:NAME:vf:PCI, each
    /// optionally followed by `,mtu=N` (the port's MTU, 68 to 9198).
    #[arg(long = "port")]
    ports: Vec<String>,
    /// Log lines as `text` or `json` (one object per line: timestamp, level, target, message,
    /// the event's fields, span and spans). The level comes from RUST_LOG (default info).
    #[arg(long, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (e.g. 127.0.0.1:9469; off by
    /// default).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
}

fn main() -> Result<()> {
    let started = Instant::now();
    let a = Args::parse();
    logging::init(a.log_format, "RUST_LOG", "info");
    // Before any thread: growing the fd table later would make the worker wait for it.
    match fdtable::reserve(FD_TABLE_SLOTS) {
        Ok(r) if r.soft != r.soft_before => {
            tracing::info!("fd limit raised from {} to {}; fd table of {} slots", r.soft_before, r.soft, r.slots);
        }
        Ok(r) => tracing::debug!("fd limit {}; fd table of {} slots", r.soft, r.slots),
        Err(e) => {
            tracing::warn!("could not grow the fd table ahead of time ({e}): a tenant's fds may stall the worker");
        }
    }
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(c) = a.ctl {
        cfg.ctl_socket = c;
    }
    if let Some(d) = a.state_dir {
        cfg.state_dir = Some(d);
    }
    if a.core.is_some() {
        cfg.core = a.core;
        cfg.cores.clear();
    }
    if !a.cores.is_empty() {
        cfg.cores = a.cores;
        cfg.core = None;
    }
    if a.interrupt {
        cfg.interrupt = true;
    }
    if a.share_core {
        cfg.share_core = true;
    }
    if a.metrics.is_some() {
        cfg.metrics = a.metrics;
    }
    if !a.bridges.is_empty() {
        cfg.bridges = a.bridges;
    }
    for p in &a.ports {
        cfg.ports.push(parse_port_flag(p)?);
    }
    cfg.validate()?;
    // Everything that can fail without touching the running switch is done: now ask it to go.
    let (listener, since, took_over_from) = if a.takeover {
        let old = control::take_over(&cfg.ctl_socket, TAKEOVER_TIMEOUT).map_err(|e| {
            anyhow::anyhow!("--takeover: the fastpathd at {} did not hand over: {e}", cfg.ctl_socket.display())
        })?;
        let stopped = Instant::now();
        tracing::info!("fastpathd pid {} handed over {} ports", old.pid, old.ports);
        let l = control::bind_over(&cfg.ctl_socket)
            .with_context(|| format!("control socket {}", cfg.ctl_socket.display()))?;
        (l, stopped, Some(old.pid))
    } else {
        let l =
            control::bind(&cfg.ctl_socket).with_context(|| format!("control socket {}", cfg.ctl_socket.display()))?;
        (l, started, None)
    };
    let defaults = cfg.port_defaults();
    let found = restore::find(&cfg);
    let ledger = found.ledger.as_ref().map(|(p, l)| (p.as_path(), l));
    let plan = restore::plan(&cfg.ports, found.saved.as_ref(), ledger, restore::container_alive);
    for n in &plan.notes {
        tracing::info!("{n}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let cores = cfg.worker_cores();
    let first = Switch::with_mac_table(&cfg.bridges, cfg.mac_age_secs, cfg.mac_table_size as usize);
    let mut switches: Vec<Switch> = (1..cores.len())
        .map(|_| {
            Switch::with_mac_table(&cfg.bridges, cfg.mac_age_secs, cfg.mac_table_size as usize)
                .sharing_macs_with(&first)
        })
        .collect();
    switches.insert(0, first);
    let idle = worker::Idle::from_flags(cfg.interrupt, cfg.share_core);
    let first_frame = Arc::new(FirstFrame::since(since));
    let (tx, workers) = fleet::spawn(switches, &cores, &stop, idle, &first_frame)?;
    let mut running = worker::Running(&tx);
    let held = restore::open(plan, &mut running, &defaults)?;
    let mut mirrors = found.saved.map(|s| s.mirrors).unwrap_or_default();
    mirrors.retain(|m| match running.add_mirror(m.clone()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("saved {e}: not restored");
            false
        }
    });
    let ports = Durable::new(found.file, held).with_mirrors(mirrors);
    ports.save().context("fastpathd keeps its ports in its state directory (state_dir)")?;
    if let Some(addr) = cfg.metrics {
        let bound =
            fastpath::metrics::spawn(addr, tx.clone(), if a.takeover { TAKEOVER_TIMEOUT } else { Duration::ZERO })
                .with_context(|| format!("--metrics {addr}"))?;
        tracing::info!("metrics on http://{bound}{}", fastpath::metrics::http::PATH);
    }
    let core = cfg.core.or_else(|| cfg.cores.first().copied());
    tracing::info!(
        "fastpathd running: control {}, bridges {}, {} ports, {} worker{}, state {}",
        cfg.ctl_socket.display(),
        cfg.bridges.join(","),
        ports.len(),
        cores.len(),
        if cores.len() == 1 { "" } else { "s" },
        ports.path().display()
    );
    let ctl_path = cfg.ctl_socket.clone();
    let handed_over = Arc::new(AtomicBool::new(false));
    let server = control::Server {
        worker: tx,
        defaults,
        ports,
        first_frame: Arc::clone(&first_frame),
        took_over_from,
        core,
        cores: cfg.cores.clone(),
        handed_over: Arc::clone(&handed_over),
    };
    let ctl = std::thread::spawn(move || control::serve(listener, server));
    watch(&workers, &first_frame, took_over_from);
    for w in workers {
        let _ = w.join();
    }
    if handed_over.load(Ordering::Relaxed) {
        // The answer to the handover is still being written: the new switch owns the socket.
        let _ = ctl.join();
    } else {
        let _ = std::fs::remove_file(&ctl_path);
    }
    tracing::info!("fastpathd stopped");
    Ok(())
}

/// Waits for the workers to end, saying (once) when one forwarded the first frame: the outage
/// its frontends saw, from this switch's start, or from the old switch stopping on a takeover.
fn watch(workers: &[std::thread::JoinHandle<()>], first: &FirstFrame, took_over_from: Option<u32>) {
    let mut said = false;
    while workers.iter().any(|w| !w.is_finished()) {
        if !said {
            if let Some(ms) = first.ms() {
                said = true;
                let after = took_over_from.map_or_else(|| "start".into(), |pid| format!("fastpathd pid {pid} stopped"));
                tracing::info!("first frame through {ms:.1} ms after {after}");
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The systemd unit's command line is one this fastpathd takes (the integration tests
    /// start fastpathd with it, so the unit and the tests never drift apart).
    #[test]
    fn the_systemd_units_command_line_parses() {
        let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/fastpathd.service")).unwrap();
        let exec: Vec<&str> =
            unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap().split_whitespace().collect();
        assert!(exec[0].ends_with("/fastpathd"), "{exec:?}");
        let a = Args::try_parse_from(&exec).unwrap();
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("/etc/fastpath/fastpathd.toml")));
        assert!(unit.lines().any(|l| l == "Restart=always"), "{unit}");
    }
}
