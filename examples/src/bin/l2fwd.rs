// l2fwd: forwards every frame from one port to the other, both ways, sent from the egress
// port's own MAC when it has one (else unchanged); --prime starts a loop of N frames on the first port.
//! Two-port forwarder.

use anyhow::{bail, Result};
use clap::Parser;
use fastpath_examples::frame::set_src;
use fastpath_examples::{
    idle, init_logging, make_pool, mpps, open, own_mac, pin, prime_sized, report, stop_flag, wait_link, Common, Meter,
    DEFAULT_SRC_MAC,
};
use netlib::pool::burst_vec;
use netlib::PortSpec;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Forwards between two ports.
#[derive(Debug, Parser)]
#[command(version, about = "fastpath l2fwd: forwards frames between two ports, both directions")]
struct Args {
    /// The two ports (give --port twice).
    #[arg(long, num_args = 1)]
    port: Vec<PortSpec>,
    /// The ports' MACs, in --port order (at most twice): frames leave a port with its MAC
    /// as their source (default: the port's MAC from the container's fastpath config; with
    /// neither, frames leave unchanged).
    #[arg(long, num_args = 1)]
    mac: Vec<String>,
    /// Send this many frames on the first port at start.
    #[arg(long, default_value_t = 0)]
    prime: u32,
    /// Bytes of each frame --prime sends (up to the --mtu's frame, e.g. 9014 with --mtu 9000).
    #[arg(long, default_value_t = 64)]
    prime_size: u16,
    /// Wait this many milliseconds after the links are up before priming (for a switch
    /// that starts forwarding a moment after it reports the link, e.g. testpmd's net_vhost).
    #[arg(long, default_value_t = 0)]
    prime_after_ms: u64,
    #[command(flatten)]
    common: Common,
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let c = &a.common;
    if a.port.len() != 2 {
        bail!("--port must be given exactly twice (got {})", a.port.len());
    }
    if a.mac.len() > 2 {
        bail!("--mac may be given at most twice, once per --port (got {})", a.mac.len());
    }
    let macs = [0, 1].map(|i| own_mac(a.mac.get(i).map(String::as_str), "--mac", &a.port[i]));
    let [mac_a, mac_b] = macs;
    let macs = [mac_a?, mac_b?];
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = make_pool(c)?;
    let mut ports = vec![open(&a.port[0], &mut pool, c)?, open(&a.port[1], &mut pool, c)?];
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let mut burst = burst_vec();
    if a.prime > 0 {
        std::thread::sleep(std::time::Duration::from_millis(a.prime_after_ms));
        let src = macs[0].unwrap_or(DEFAULT_SRC_MAC);
        prime_sized(ports[0].as_mut(), &mut pool, a.prime, a.prime_size, [2, 0, 0, 0, 0, 0x99], src)?;
    }
    let (mut fwd, mut dropped) = (0u64, 0u64);
    let mut meter = Meter::new("l2fwd", c);
    let mut first: Option<Instant> = None;
    let (a_port, b_port) = ports.split_at_mut(1);
    let (pa, pb) = (&mut a_port[0], &mut b_port[0]);
    while !stop.load(Ordering::Relaxed) && meter.tick(fwd) {
        let before = fwd + dropped;
        for dir in 0..2 {
            let (from, to) = if dir == 0 { (&mut *pa, &mut *pb) } else { (&mut *pb, &mut *pa) };
            if from.rx_burst(&mut pool, &mut burst) == 0 {
                continue;
            }
            if let Some(m) = &macs[1 - dir] {
                for p in &burst {
                    set_src(pool.data_mut(p), m);
                }
            }
            if first.is_none() {
                first = Some(Instant::now());
            }
            fwd += to.tx_burst(&mut pool, &mut burst) as u64;
            dropped += burst.len() as u64;
            pool.free_all(&mut burst);
        }
        if fwd + dropped == before {
            idle(c);
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    report(
        c,
        &serde_json::json!({"role":"l2fwd","forwarded":fwd,"dropped":dropped,"secs":secs,"mpps":mpps(fwd, secs)}),
    );
    Ok(())
}
