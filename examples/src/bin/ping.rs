// ping: measures round trips through a reflector: one frame out, wait for it to
// come back, N times; prints p50/p99/p99.9 in microseconds.
//! Round-trip latency.

use anyhow::{bail, Result};
use clap::Parser;
use fastpath_examples::frame::{seq_of, Template};
use fastpath_examples::{
    discover_port, init_logging, make_pool, open, own_mac_or, pin, report, stop_flag, wait_link, Common,
    DEFAULT_DST_MAC, DEFAULT_SRC_MAC,
};
use netlib::pool::burst_vec;
use netlib::PortSpec;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Measures round-trip time.
#[derive(Debug, Parser)]
#[command(version, about = "fastpath ping: round-trip latency through a reflector (echo, testpmd macswap)")]
struct Args {
    /// Port: vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH or vf:PCI (default: the
    /// port in the container's fastpath config, /run/fastpath/config.json).
    #[arg(long)]
    port: Option<PortSpec>,
    /// Round trips to measure.
    #[arg(long, default_value_t = 10000)]
    count: u64,
    /// Frame size.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Pause between round trips, in microseconds (lets a sleeping reflector fall asleep).
    #[arg(long, default_value_t = 0)]
    interval_us: u64,
    /// Source MAC (default: the port's MAC from the container's fastpath config, else
    /// 02:00:00:00:00:01).
    #[arg(long)]
    mac: Option<String>,
    /// Give up on one frame after this many milliseconds (counted as lost).
    #[arg(long, default_value_t = 100)]
    timeout_ms: u64,
    #[command(flatten)]
    common: Common,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> Result<()> {
    init_logging();
    let mut a = Args::parse();
    let spec = discover_port(a.port.take(), &mut a.common)?;
    let c = &a.common;
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let src = own_mac_or(a.mac.as_deref(), "--mac", &spec, DEFAULT_SRC_MAC)?;
    let tpl = Template::new(a.size, DEFAULT_DST_MAC, src).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = make_pool(c)?;
    let mut ports = vec![open(&spec, &mut pool, c)?];
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let port = &mut ports[0];
    let mut rtts: Vec<u64> = Vec::with_capacity(a.count as usize);
    let mut lost = 0u64;
    let mut out = burst_vec();
    let mut rx = burst_vec();
    let timeout = Duration::from_millis(a.timeout_ms);
    let warmup = (a.count / 10).min(1000);
    for seq in 0..a.count + warmup {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if a.interval_us > 0 {
            std::thread::sleep(Duration::from_micros(a.interval_us));
        }
        let Some(mut p) = pool.alloc() else { bail!("pool exhausted") };
        tpl.write(pool.set_len(&mut p, tpl.len()), seq);
        out.push(p);
        let t0 = Instant::now();
        while port.tx_burst(&mut pool, &mut out) == 0 {
            if t0.elapsed() > timeout {
                break;
            }
        }
        pool.free_all(&mut out);
        let mut back = false;
        while !back && t0.elapsed() < timeout {
            if port.rx_burst(&mut pool, &mut rx) > 0 {
                back = rx.iter().any(|p| seq_of(pool.data(p)) == Some(seq));
                pool.free_all(&mut rx);
            }
        }
        let dt = t0.elapsed().as_nanos() as u64;
        if seq < warmup {
            continue;
        }
        if back {
            rtts.push(dt);
        } else {
            lost += 1;
        }
    }
    rtts.sort_unstable();
    report(
        c,
        &serde_json::json!({"role":"ping","count":rtts.len(),"lost":lost,
        "p50_us":percentile(&rtts, 0.5),"p99_us":percentile(&rtts, 0.99),"p999_us":percentile(&rtts, 0.999),
        "max_us":rtts.last().map_or(0.0, |&x| x as f64 / 1000.0)}),
    );
    Ok(())
}
