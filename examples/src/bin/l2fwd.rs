// l2fwd: forwards every frame from one port to the other, both ways, sent from the egress
// port's own MAC when it has one (else unchanged); --prime starts a loop of N frames on the
// first port. More ports make more such pairs (1st with 2nd, 3rd with 4th, ...), all polled
// by the one thread; or, with --queues N, two ports of N queue pairs, a thread per pair.
//! Two-port forwarder (or several pairs of ports).

use anyhow::{anyhow, bail, Result};
use clap::Parser;
use fastpath_examples::frame::{nth_mac, set_dst, set_src};
use fastpath_examples::{
    idle, init_logging, make_pool_for, mpps, open, open_pairs, own_mac, pin, prime_sized, report, stop_flag, wait_link,
    Common, Meter, DEFAULT_SRC_MAC,
};
use netlib::mac::Mac;
use netlib::pool::burst_vec;
use netlib::virtio_user::MAX_PAIRS;
use netlib::{Packet, PktPool, Port, PortSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Where primed frames go without --dst-pair: a MAC no port has (a switch floods them).
const PRIME_DST_MAC: Mac = [2, 0, 0, 0, 0, 0x99];

/// Most ports one l2fwd forwards between.
const MAX_PORTS: usize = 64;

/// Forwards between two ports.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath l2fwd: forwards frames between two ports, both directions",
    long_about = "fastpath l2fwd: forwards frames between two ports, both directions. Give --port \
                  2, 4, ... 64 times to forward between pairs of ports (the 1st with the 2nd, the 3rd \
                  with the 4th, ...), all polled by one thread."
)]
struct Args {
    /// The ports (give --port twice, or an even number of times up to 64 for pairs).
    #[arg(long, num_args = 1)]
    port: Vec<PortSpec>,
    /// The ports' MACs, in --port order (at most once per port): frames leave a port with
    /// its MAC as their source (default: the port's MAC from the container's fastpath
    /// config; with neither, frames leave unchanged).
    #[arg(long, num_args = 1)]
    mac: Vec<String>,
    /// Address each frame to the MAC of the port it came in on (its egress port's pair),
    /// so that a learning switch between the pairs sends it back to that port instead of
    /// flooding it, and drop (count as filtered) frames that come in addressed to another
    /// MAC, as a NIC out of promiscuous mode does; --prime sends half its frames on each
    /// port of a pair, so that the switch learns both MACs. Every port needs a MAC.
    #[arg(long)]
    dst_pair: bool,
    /// With --dst-pair: the first port of each pair stands for this many hosts. Frames
    /// leave it from its MAC and the N-1 after it in turn (counting in the low three
    /// bytes), and leave its pair addressed to those MACs in turn: N hosts behind one
    /// port, as a learning switch sees them (1..=16777216).
    #[arg(long, default_value_t = 1, value_name = "N")]
    hosts: u32,
    /// Send this many frames on the first port (of each pair) at start.
    #[arg(long, default_value_t = 0)]
    prime: u32,
    /// Bytes of each frame --prime sends (up to the --mtu's frame, e.g. 9014 with --mtu 9000).
    #[arg(long, default_value_t = 64)]
    prime_size: u16,
    /// Wait this many milliseconds after the links are up before priming (for a switch
    /// that starts forwarding a moment after it reports the link, e.g. testpmd's net_vhost).
    #[arg(long, default_value_t = 0)]
    prime_after_ms: u64,
    /// Open both ports (two vu:, vu-server: or vu-packed: ports) with this many queue pairs
    /// (1..=16), and forward queue pair q of one to queue pair q of the other on a thread
    /// of its own, with a pool of its own: the switch spreads flows over the pairs by
    /// their hash, each thread forwards its share, and every flow keeps its order.
    /// --prime sends on the first port's pair 0.
    #[arg(long, default_value_t = 1, value_name = "N")]
    queues: usize,
    #[command(flatten)]
    common: Common,
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let c = &a.common;
    let count = a.port.len();
    if !(2..=MAX_PORTS).contains(&count) || !count.is_multiple_of(2) {
        bail!("--port must be given an even number of times from 2 to {MAX_PORTS} (got {count})");
    }
    if a.mac.len() > count {
        bail!("--mac may be given at most once per --port ({count}; got {})", a.mac.len());
    }
    let macs = (0..count)
        .map(|i| own_mac(a.mac.get(i).map(String::as_str), "--mac", &a.port[i]))
        .collect::<Result<Vec<Option<Mac>>>>()?;
    if !(1..=1 << 24).contains(&a.hosts) {
        bail!("--hosts {} is not in 1..=16777216", a.hosts);
    }
    if a.hosts > 1 && !a.dst_pair {
        bail!("--hosts {} needs --dst-pair (the hosts' MACs are written as frames are addressed)", a.hosts);
    }
    let mut addresses = if a.dst_pair {
        let all = macs.iter().enumerate().map(|(i, m)| {
            m.ok_or_else(|| {
                anyhow!("--dst-pair: port {} ({}) has no MAC: give --mac for every --port", i + 1, a.port[i])
            })
        });
        Some(PairAddresses::new(all.collect::<Result<_>>()?, a.hosts))
    } else {
        None
    };
    pin(c.core)?;
    let stop = stop_flag();
    if a.queues != 1 {
        return run_queues(&a, &macs, addresses, &stop);
    }
    let mut pool = make_pool_for(c, count)?;
    let mut ports = Vec::with_capacity(count);
    for spec in &a.port {
        ports.push(open(spec, &mut pool, c)?);
    }
    wait_link(&mut ports, &mut pool, c, &stop)?;
    prime(&a, &macs, &mut ports, &mut pool)?;
    let mut meter = Meter::new("l2fwd", c);
    let done = forward(&mut ports, &mut pool, &macs, addresses.as_mut(), &mut meter, &stop, c);
    report(
        c,
        &serde_json::json!({"role":"l2fwd","ports":count,"hosts":a.hosts,"forwarded":done.fwd,"dropped":done.dropped,
            "filtered":done.filtered,"secs":done.secs,"mpps":mpps(done.fwd, done.secs)}),
    );
    Ok(())
}

/// --prime: frames sent on the first port of each pair (half on each with --dst-pair).
fn prime(a: &Args, macs: &[Option<Mac>], ports: &mut [Box<dyn Port>], pool: &mut PktPool) -> Result<()> {
    if a.prime == 0 {
        return Ok(());
    }
    std::thread::sleep(std::time::Duration::from_millis(a.prime_after_ms));
    for (i, port) in ports.iter_mut().enumerate() {
        let src = macs[i].unwrap_or(DEFAULT_SRC_MAC);
        let pair = i ^ 1;
        if a.dst_pair {
            // The first port's share is the larger one: an odd --prime still primes.
            let share = if i.is_multiple_of(2) { a.prime.div_ceil(2) } else { a.prime / 2 };
            let dst = macs[pair].unwrap_or(PRIME_DST_MAC);
            prime_sized(port.as_mut(), pool, share, a.prime_size, dst, src)?;
        } else if i.is_multiple_of(2) {
            prime_sized(port.as_mut(), pool, a.prime, a.prime_size, PRIME_DST_MAC, src)?;
        }
    }
    Ok(())
}

/// What a forwarding loop did.
#[derive(Debug, Default, Clone, Copy)]
struct Done {
    fwd: u64,
    dropped: u64,
    filtered: u64,
    /// From the first frame to the end.
    secs: f64,
}

/// Forwards between the pairs of `ports` (the 1st with the 2nd, ...) until Ctrl-C or
/// --secs (`meter`).
fn forward(
    ports: &mut [Box<dyn Port>],
    pool: &mut PktPool,
    macs: &[Option<Mac>],
    mut addresses: Option<&mut PairAddresses>,
    meter: &mut Meter,
    stop: &AtomicBool,
    c: &Common,
) -> Done {
    let mut burst = burst_vec();
    let (mut fwd, mut dropped, mut filtered) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) && meter.tick(fwd) {
        let before = fwd + dropped + filtered;
        for (pair, ends) in ports.chunks_exact_mut(2).enumerate() {
            let (x, y) = ends.split_at_mut(1);
            let (pa, pb) = (&mut x[0], &mut y[0]);
            for dir in 0..2 {
                let (from, to) = if dir == 0 { (&mut *pa, &mut *pb) } else { (&mut *pb, &mut *pa) };
                if from.rx_burst(pool, &mut burst) == 0 {
                    continue;
                }
                let (ingress, egress) = (2 * pair + dir, 2 * pair + 1 - dir);
                if let Some(addr) = addresses.as_deref_mut() {
                    let before = burst.len();
                    addr.keep_addressed_to(pool, &mut burst, ingress);
                    filtered += (before - burst.len()) as u64;
                    addr.address(pool, &burst, ingress, egress);
                } else if let Some(m) = &macs[egress] {
                    for p in &burst {
                        set_src(pool.data_mut(p), m);
                    }
                }
                if first.is_none() {
                    first = Some(Instant::now());
                }
                fwd += to.tx_burst(pool, &mut burst) as u64;
                dropped += burst.len() as u64;
                pool.free_all(&mut burst);
            }
        }
        if fwd + dropped + filtered == before {
            idle(c);
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    Done { fwd, dropped, filtered, secs }
}

/// `--queues N`: both ports opened with N queue pairs sharing N pools (pair q of both
/// ports on pool q, so a frame crosses from one to the other without a copy), and a
/// thread per pair forwarding between them.
fn run_queues(a: &Args, macs: &[Option<Mac>], addresses: Option<PairAddresses>, stop: &AtomicBool) -> Result<()> {
    let c = &a.common;
    if a.port.len() != 2 {
        bail!("--queues {} forwards between two ports (got {} --port)", a.queues, a.port.len());
    }
    if !(1..=MAX_PAIRS).contains(&a.queues) {
        bail!("--queues {} is not in 1..={MAX_PAIRS}", a.queues);
    }
    let mut pools = (0..a.queues).map(|_| make_pool_for(c, 2)).collect::<Result<Vec<_>>>()?;
    let first = open_pairs(&a.port[0], &mut pools, c)?;
    let second = open_pairs(&a.port[1], &mut pools, c)?;
    let results: Vec<Result<Done>> = std::thread::scope(|s| {
        let threads: Vec<_> = first
            .into_iter()
            .zip(second)
            .zip(pools)
            .enumerate()
            .map(|(q, ((x, y), mut pool))| {
                let mut addresses = addresses.clone();
                s.spawn(move || -> Result<Done> {
                    let mut ports: Vec<Box<dyn Port>> = vec![Box::new(x), Box::new(y)];
                    wait_link(&mut ports, &mut pool, c, stop)?;
                    if q == 0 {
                        prime(a, macs, &mut ports, &mut pool)?;
                    }
                    // The first pair's thread prints the live rate (of its pair).
                    let mut quiet = c.clone();
                    quiet.quiet |= q != 0;
                    let mut meter = Meter::new("l2fwd (queue pair 0)", &quiet);
                    Ok(forward(&mut ports, &mut pool, macs, addresses.as_mut(), &mut meter, stop, c))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(anyhow!("a queue pair's thread panicked"))))
            .collect()
    });
    let mut all = Done::default();
    let mut per_queue = Vec::new();
    for (q, r) in results.into_iter().enumerate() {
        let d = r?;
        per_queue.push(serde_json::json!({"pair":q,"forwarded":d.fwd,"dropped":d.dropped,"filtered":d.filtered}));
        all.fwd += d.fwd;
        all.dropped += d.dropped;
        all.filtered += d.filtered;
        all.secs = all.secs.max(d.secs);
    }
    report(
        c,
        &serde_json::json!({"role":"l2fwd","ports":2,"hosts":a.hosts,"forwarded":all.fwd,"dropped":all.dropped,
            "filtered":all.filtered,"secs":all.secs,"mpps":mpps(all.fwd, all.secs),"pairs":per_queue}),
    );
    Ok(())
}

/// How --dst-pair addresses frames: every port's MAC, and for the first port of each pair
/// its hosts (--hosts) and which one is next.
#[derive(Debug, Clone)]
struct PairAddresses {
    macs: Vec<Mac>,
    hosts: u32,
    /// Per pair: the host the next frame comes from or goes to.
    next: Vec<u32>,
}

impl PairAddresses {
    fn new(macs: Vec<Mac>, hosts: u32) -> Self {
        let pairs = macs.len() / 2;
        Self { macs, hosts, next: vec![0; pairs] }
    }

    /// Whether `dst` is port `port`'s MAC, or one of its hosts' on a pair's first port.
    #[inline]
    fn owns(&self, port: usize, dst: &[u8]) -> bool {
        let own = &self.macs[port];
        if self.hosts == 1 || !port.is_multiple_of(2) {
            return dst == own;
        }
        let low = |m: &[u8]| u32::from_be_bytes([0, m[3], m[4], m[5]]);
        dst[..3] == own[..3] && (low(dst).wrapping_sub(low(own)) & 0x00ff_ffff) < self.hosts
    }

    /// Frees the frames of `burst` not addressed to port `port`, keeping the others in order.
    fn keep_addressed_to(&self, pool: &mut PktPool, burst: &mut Vec<Packet>, port: usize) {
        let mut kept = 0;
        for i in 0..burst.len() {
            if pool.data(&burst[i]).get(..6).is_some_and(|d| self.owns(port, d)) {
                burst.swap(kept, i);
                kept += 1;
            }
        }
        while burst.len() > kept {
            if let Some(p) = burst.pop() {
                pool.free(p);
            }
        }
    }

    /// Addresses the frames of `burst`, which came in on `ingress`, from `egress` (or the
    /// next of its hosts) to `ingress` (or the next of its hosts).
    fn address(&mut self, pool: &mut PktPool, burst: &[Packet], ingress: usize, egress: usize) {
        let (src, dst) = (self.macs[egress], self.macs[ingress]);
        if self.hosts == 1 {
            for p in burst {
                let f = pool.data_mut(p);
                set_dst(f, &dst);
                set_src(f, &src);
            }
            return;
        }
        let next = &mut self.next[ingress / 2];
        for p in burst {
            let f = pool.data_mut(p);
            if egress.is_multiple_of(2) {
                set_dst(f, &dst);
                set_src(f, &nth_mac(&src, *next));
            } else {
                set_dst(f, &nth_mac(&dst, *next));
                set_src(f, &src);
            }
            *next += 1;
            if *next == self.hosts {
                *next = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0x0a, 0, 0, 0];
    const B: Mac = [2, 0, 0x0b, 0, 0, 0];

    #[test]
    fn a_pairs_first_port_owns_its_hosts_and_the_second_only_its_mac() {
        let one = PairAddresses::new(vec![A, B], 1);
        assert!(one.owns(0, &A) && one.owns(1, &B));
        assert!(!one.owns(0, &nth_mac(&A, 1)) && !one.owns(0, &B));
        let many = PairAddresses::new(vec![A, B], 10_000);
        assert!(many.owns(0, &A) && many.owns(0, &nth_mac(&A, 9_999)));
        assert!(!many.owns(0, &nth_mac(&A, 10_000)) && !many.owns(0, &[2, 0, 0x0c, 0, 0, 1]));
        assert!(many.owns(1, &B) && !many.owns(1, &nth_mac(&B, 1)));
    }
}
