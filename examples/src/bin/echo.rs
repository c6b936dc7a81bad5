// echo: a reflector. Sends back every frame it receives, to its sender and from its own MAC
// (else MACs swapped; unchanged with --no-macswap); --prime starts a loop of N frames.
//! Reflector.

use anyhow::Result;
use clap::Parser;
use fastpath_examples::frame::{macswap, reply_from};
use fastpath_examples::{
    discover_port, init_logging, make_pool, mpps, open, own_mac, pin, prime, report, stop_flag, wait_link, Common,
    Idler, Meter, DEFAULT_DST_MAC, DEFAULT_SRC_MAC,
};
use netlib::pool::burst_vec;
use netlib::PortSpec;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Reflects frames.
#[derive(Debug, Parser)]
#[command(version, about = "fastpath echo: sends every received frame back out of the same port")]
struct Args {
    /// Port: vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH or vf:PCI (default: the
    /// port in the container's fastpath config, /run/fastpath/config.json).
    #[arg(long)]
    port: Option<PortSpec>,
    /// Leave MAC addresses as they are.
    #[arg(long)]
    no_macswap: bool,
    /// This port's MAC: replies go to their sender from it (default: the port's MAC from
    /// the container's fastpath config; with neither, the two MACs are swapped).
    #[arg(long)]
    mac: Option<String>,
    /// Send this many 64-byte frames first (starts a loop with another reflector).
    #[arg(long, default_value_t = 0)]
    prime: u32,
    #[command(flatten)]
    common: Common,
}

fn main() -> Result<()> {
    init_logging();
    let mut a = Args::parse();
    let spec = discover_port(a.port.take(), &mut a.common)?;
    let c = &a.common;
    let me = own_mac(a.mac.as_deref(), "--mac", &spec)?;
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = make_pool(c)?;
    let mut ports = vec![open(&spec, &mut pool, c)?];
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let port = &mut ports[0];
    let mut burst = burst_vec();
    if a.prime > 0 {
        prime(port.as_mut(), &mut pool, a.prime, DEFAULT_DST_MAC, me.unwrap_or(DEFAULT_SRC_MAC))?;
    }
    let (mut fwd, mut dropped) = (0u64, 0u64);
    let mut meter = Meter::new("echo", c);
    let mut first: Option<Instant> = None;
    let mut idler = Idler::default();
    while !stop.load(Ordering::Relaxed) && meter.tick(fwd) {
        let n = port.rx_burst(&mut pool, &mut burst);
        if n == 0 {
            idler.empty(c, port.as_mut(), &mut pool);
            continue;
        }
        idler.busy();
        if first.is_none() {
            first = Some(Instant::now());
        }
        if !a.no_macswap {
            for p in &burst {
                match &me {
                    Some(m) => reply_from(pool.data_mut(p), m),
                    None => macswap(pool.data_mut(p)),
                }
            }
        }
        fwd += port.tx_burst(&mut pool, &mut burst) as u64;
        dropped += burst.len() as u64;
        pool.free_all(&mut burst);
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    report(
        c,
        &serde_json::json!({"role":"echo","forwarded":fwd,"dropped":dropped,"secs":secs,"mpps":mpps(fwd, secs),
        "port":spec.to_string()}),
    );
    Ok(())
}
