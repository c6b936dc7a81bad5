// l2fwd: forwards every frame from one port to the other, both ways, unchanged;
// --prime starts a loop of N frames on the first port.
//! Two-port forwarder.

use anyhow::{bail, Result};
use clap::Parser;
use fastpath_examples::{
    idle, init_logging, make_pool, mpps, open, pin, prime, report, stop_flag, wait_link, Common, Meter,
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
    /// Send this many 64-byte frames on the first port at start.
    #[arg(long, default_value_t = 0)]
    prime: u32,
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
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = make_pool(c)?;
    let mut ports = vec![open(&a.port[0], &mut pool, c)?, open(&a.port[1], &mut pool, c)?];
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let mut burst = burst_vec();
    if a.prime > 0 {
        prime(ports[0].as_mut(), &mut pool, a.prime, "02:00:00:00:00:99", "02:00:00:00:00:01")?;
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
