// fastpathctl: the human front of fastpathd's control socket: add, remove and
// list ports, and watch per-port rates and drops live.
//! fastpathd's command-line client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use fastpath::config::PortMode;
use fastpath::control::{call, Request};
use fastpath::switch::PortInfo;

/// fastpathctl: control a running fastpathd.
#[derive(Debug, Parser)]
#[command(version, about = "fastpathctl: add, remove, list fastpathd ports and watch their rates")]
struct Args {
    /// fastpathd's control socket.
    #[arg(long, default_value = "/run/fastpath/fastpathd.sock", global = true)]
    ctl: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Add a vhost-user port to a bridge.
    AddPort {
        /// Port name.
        #[arg(long)]
        name: String,
        /// Bridge.
        #[arg(long, default_value = "br0")]
        bridge: String,
        /// Socket path.
        #[arg(long)]
        socket: PathBuf,
        /// The switch connects to a listening container instead of listening.
        #[arg(long)]
        client: bool,
        /// Owner uid of the socket file (a non-root container must own it to connect).
        #[arg(long)]
        uid: Option<u32>,
        /// Owner gid of the socket file.
        #[arg(long)]
        gid: Option<u32>,
    },
    /// Remove a port.
    DelPort {
        /// Port name.
        name: String,
    },
    /// List ports with counters.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List bridges.
    Bridges,
    /// Per-port rates and drops (once, or live with --watch).
    Stats {
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
}

fn list(ctl: &std::path::Path) -> Result<Vec<PortInfo>> {
    Ok(call(ctl, &Request::List)?.ports.unwrap_or_default())
}

fn print_table(ports: &[PortInfo], prev: Option<(&[PortInfo], f64)>) {
    println!(
        "{:<12} {:<6} {:<5} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9} {:>6}",
        "port",
        "bridge",
        "link",
        "rx pkts",
        "tx pkts",
        "rx Mpps",
        "tx Mpps",
        "drop full",
        "drop big",
        "filtered",
        "resets"
    );
    for p in ports {
        let (rx_rate, tx_rate) = prev
            .and_then(|(old, dt)| old.iter().find(|o| o.name == p.name).map(|o| (o, dt)))
            .map_or((0.0, 0.0), |(o, dt)| {
                (
                    (p.stats.rx_packets - o.stats.rx_packets) as f64 / dt / 1e6,
                    (p.stats.tx_packets - o.stats.tx_packets) as f64 / dt / 1e6,
                )
            });
        println!(
            "{:<12} {:<6} {:<5} {:>12} {:>12} {:>10.3} {:>10.3} {:>9} {:>9} {:>9} {:>6}",
            p.name,
            p.bridge,
            if p.stats.link_up { "up" } else { "down" },
            p.stats.rx_packets,
            p.stats.tx_packets,
            rx_rate,
            tx_rate,
            p.stats.drop_ring_full,
            p.stats.drop_too_big,
            p.stats.drop_filtered,
            p.stats.resets
        );
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    match a.cmd {
        Cmd::AddPort { name, bridge, socket, client, uid, gid } => {
            let mode = if client { PortMode::Client } else { PortMode::Server };
            call(&a.ctl, &Request::AddPort { name: name.clone(), bridge, socket, mode, uid, gid })?;
            println!("port {name} added");
        }
        Cmd::DelPort { name } => {
            call(&a.ctl, &Request::DelPort { name: name.clone() })?;
            println!("port {name} removed");
        }
        Cmd::List { json } => {
            let ports = list(&a.ctl)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ports)?);
            } else {
                for p in &ports {
                    println!(
                        "{} bridge={} socket={} mode={:?} link={} fault={}",
                        p.name,
                        p.bridge,
                        p.socket,
                        p.mode,
                        if p.stats.link_up { "up" } else { "down" },
                        p.last_fault.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        Cmd::Bridges => {
            for b in call(&a.ctl, &Request::Bridges)?.bridges.unwrap_or_default() {
                println!("{b}");
            }
        }
        Cmd::Stats { watch } => {
            let mut prev = list(&a.ctl)?;
            let mut t = Instant::now();
            if !watch {
                print_table(&prev, None);
                return Ok(());
            }
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = list(&a.ctl)?;
                let dt = t.elapsed().as_secs_f64();
                t = Instant::now();
                print!("\x1b[2J\x1b[H");
                print_table(&now, Some((&prev, dt)));
                prev = now;
            }
        }
    }
    Ok(())
}
