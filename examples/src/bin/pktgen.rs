// pktgen: sends fixed-size test frames (sequence number and checksum inside)
// at full speed or a given rate, with live rates.
//! Packet generator.

use anyhow::Context;
use anyhow::{bail, Result};
use clap::Parser;
use fastpath_examples::frame::{nth_mac, parse_mac, set_src, Template, MIN_FRAME};
use fastpath_examples::gso::GsoFrame;
use fastpath_examples::{
    discover_port, idle, init_logging, make_pool, make_pools, mpps, open, open_pairs, own_mac_or, pin, report,
    schedule_from, send_budget, stop_flag, wait_link, Common, Meter, DEFAULT_SRC_MAC,
};
use netlib::mac::Mac;
use netlib::pool::{burst_vec, PoolOptions, MAX_DATA_ROOM};
use netlib::virtio_user::{VirtioUser, VirtioUserOptions, VirtioUserPair, MAX_PAIRS};
use netlib::vnet_hdr::VIRTIO_NET_F_HOST_TSO4;
use netlib::{LinkState, PktPool, Port, PortCounters, PortSpec};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Sends test frames on a port.
#[derive(Debug, Parser)]
#[command(version, about = "fastpath packet generator: fixed-size frames with sequence numbers and checksums")]
struct Args {
    /// Port: vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH or vf:PCI (default: the
    /// first port in the container's fastpath config).
    #[arg(long)]
    port: Option<PortSpec>,
    /// Frame size in bytes (60..=9018, no FCS; past 1518 with an --mtu that fits it).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Frames to send (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:02")]
    dst_mac: String,
    /// Source MAC (default: the port's MAC from the container's fastpath config, else
    /// 02:00:00:00:00:01).
    #[arg(long, visible_alias = "mac")]
    src_mac: Option<String>,
    /// Send from this many source MACs in turn: the source MAC and the ones after it
    /// (counting in the low three bytes), as that many hosts behind one port would
    /// (1..=16777216).
    #[arg(long, default_value_t = 1, value_name = "N")]
    src_macs: u32,
    /// Send TCP/IPv4 GSO frames of --size bytes (up to 65400) that ask the port's backend
    /// to cut them into segments of MSS payload bytes and checksum each (TSO): on a vu: or
    /// vu-packed: port whose backend offers HOST_TSO4 (fastpathd's ports with offloads on).
    /// The frames carry no sequence numbers: a sink counts them, it does not --check them.
    #[arg(long, value_name = "MSS")]
    gso_mss: Option<u16>,
    /// The GSO frames' IPv4 source address.
    #[arg(long, default_value = "10.0.0.1", requires = "gso_mss")]
    src_ip: Ipv4Addr,
    /// The GSO frames' IPv4 destination address.
    #[arg(long, default_value = "10.0.0.2", requires = "gso_mss")]
    dst_ip: Ipv4Addr,
    /// Open the port (vu:, vu-server: or vu-packed:) with this many queue pairs (1..=16),
    /// a thread and a pool each: each source MAC (a flow) is sent from the pair its flow
    /// hash picks, as fastpathd picks a pair for a flow, so every flow keeps its order.
    /// --rate and --count are for all pairs together; sequence numbers are unique across
    /// them (a sink checks each flow's order). The backend must take that many pairs
    /// (fastpathd: the port's `queues`).
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with = "gso_mss")]
    queues: usize,
    #[command(flatten)]
    common: Common,
}

fn main() -> Result<()> {
    init_logging();
    let mut a = Args::parse();
    let spec = discover_port(a.port.take(), &mut a.common)?;
    let c = &a.common;
    let src = own_mac_or(a.src_mac.as_deref(), "--src-mac", &spec, DEFAULT_SRC_MAC)?;
    let dst = parse_mac(&a.dst_mac).map_err(|e| anyhow::anyhow!("--dst-mac: {e}"))?;
    let ips = (a.src_ip, a.dst_ip);
    let gso = a.gso_mss.map(|mss| GsoFrame::new(a.size, mss, dst, src, ips)).transpose().map_err(anyhow::Error::msg)?;
    // The sequence template is not used for GSO frames; a valid size keeps it simple.
    let tpl_size = if gso.is_some() { MIN_FRAME } else { a.size };
    let tpl = Template::new(tpl_size, dst, src).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
    if !(1..=1 << 24).contains(&a.src_macs) {
        bail!("--src-macs {} is not in 1..=16777216", a.src_macs);
    }
    if a.rate < 0.0 {
        bail!("--rate {} must not be negative", a.rate);
    }
    if a.queues != 1 {
        return run_pairs(&a, &spec, &tpl, src);
    }
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = match &gso {
        Some(g) => gso_pool(c, g)?,
        None => make_pool(c)?,
    };
    check_room(&a, &tpl, &pool)?;
    let mut ports = vec![match &gso {
        Some(_) => open_tso(&spec, &mut pool, c)?,
        None => open(&spec, &mut pool, c)?,
    }];
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let port = &mut ports[0];
    let claims = AtomicU64::new(0);
    let job = Job { a: &a, tpl: &tpl, gso: gso.as_ref(), src, macs: None, rate: a.rate, claims: &claims, stop: &stop };
    let mut meter = Meter::new("pktgen", c);
    let start = Instant::now();
    let sent = send_loop(port.as_mut(), &mut pool, &job, &mut meter);
    let secs = start.elapsed().as_secs_f64();
    // Don't close while frames are still in the ring: the peer would lose them.
    if !port.flush_tx(&mut pool, std::time::Duration::from_secs(2)) {
        tracing::warn!("{}: the peer did not take every frame within 2 s", port.name());
    }
    report(
        c,
        &serde_json::json!({"role":"pktgen","sent":sent,"secs":secs,"mpps":mpps(sent, secs),
        "size":a.size,"src_macs":a.src_macs,"gso_mss":a.gso_mss,
        "segments":gso.as_ref().map(|g| g.segments() as u64 * sent),"port":spec.to_string(),"counters":port.counters()}),
    );
    Ok(())
}

/// An error unless a buffer of `pool` holds a frame of the template.
fn check_room(a: &Args, tpl: &Template, pool: &PktPool) -> Result<()> {
    if tpl.len() > usize::from(pool.data_room()) {
        bail!(
            "--size {} is more than a buffer of --mtu {} holds ({} bytes): raise --mtu",
            a.size,
            a.common.mtu,
            pool.data_room()
        );
    }
    Ok(())
}

/// What one sending loop sends.
struct Job<'a> {
    a: &'a Args,
    tpl: &'a Template,
    gso: Option<&'a GsoFrame>,
    /// The first source MAC.
    src: Mac,
    /// The indices (among --src-macs) of the source MACs this loop sends from, in turn;
    /// `None`: all of them.
    macs: Option<Vec<u32>>,
    /// This loop's frames per second (0: as fast as possible).
    rate: f64,
    /// Sequence numbers handed out so far, by every loop: a loop claims the numbers of
    /// the frames it adds to its burst (never more than --count in all).
    claims: &'a AtomicU64,
    stop: &'a AtomicBool,
}

impl Job<'_> {
    /// Claims up to `want` sequence numbers: the first one and how many.
    fn claim(&self, want: usize) -> (u64, usize) {
        let count = self.a.count;
        let mut cur = self.claims.load(Ordering::Relaxed);
        loop {
            let k = if count == 0 { want as u64 } else { (want as u64).min(count.saturating_sub(cur)) };
            if k == 0 {
                return (cur, 0);
            }
            match self.claims.compare_exchange_weak(cur, cur + k, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (cur, k as usize),
                Err(now) => cur = now,
            }
        }
    }

    /// Whether every frame --count asks for has been claimed (never, without a count).
    fn all_claimed(&self) -> bool {
        self.a.count > 0 && self.claims.load(Ordering::Relaxed) >= self.a.count
    }

    /// The index (among --src-macs) of the source MAC of this loop's `n`-th frame.
    #[inline]
    fn mac_index(&self, n: u64) -> Option<u32> {
        match &self.macs {
            None => Some((n % u64::from(self.a.src_macs)) as u32),
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v[(n % v.len() as u64) as usize]),
        }
    }
}

/// Sends `job`'s frames on `port` until the count, --secs (`meter`) or Ctrl-C; returns
/// how many this loop sent.
fn send_loop(port: &mut dyn Port, pool: &mut PktPool, job: &Job<'_>, meter: &mut Meter) -> u64 {
    let (a, c) = (job.a, &job.a.common);
    let mut burst = burst_vec();
    let mut rx = burst_vec();
    // Buffers that already hold the template's payload: only the headers change.
    let mut filled = vec![false; pool.capacity() as usize];
    let mut last_resets = port.counters().resets;
    let mut sent: u64 = 0;
    // Frames this loop has made (the next one's source MAC follows from it).
    let mut made: u64 = 0;
    // The --rate schedule: restarted after the link was down (see schedule_from).
    let mut schedule = Instant::now();
    let mut link_was_down = false;
    let mut loops: u32 = 0;
    let idle_loop = job.macs.as_ref().is_some_and(Vec::is_empty);
    loop {
        let done = job.all_claimed() && burst.is_empty();
        if done || job.stop.load(Ordering::Relaxed) {
            break;
        }
        if !meter.tick(job.claims.load(Ordering::Relaxed)) {
            break;
        }
        loops = loops.wrapping_add(1);
        if loops.is_multiple_of(64) {
            // Drain anything that comes back so the peer never stalls on us.
            port.rx_burst(pool, &mut rx);
            for p in &rx {
                filled[p.index() as usize] = false;
            }
            pool.free_all(&mut rx);
            // After a reconnect, buffers that sat in the receive ring may hold anything.
            let resets = port.counters().resets;
            if resets != last_resets {
                last_resets = resets;
                filled.fill(false);
            }
        }
        if link_was_down && port.link() == LinkState::Up {
            link_was_down = false;
            schedule = schedule_from(sent + burst.len() as u64, job.rate);
        }
        // As many as the pool has buffers for: every number claimed goes to a frame.
        let budget = send_budget(burst.capacity() - burst.len(), sent + burst.len() as u64, 0, job.rate, schedule)
            .min(pool.available());
        let (first_seq, want) = if idle_loop { (0, 0) } else { job.claim(budget) };
        let before = burst.len();
        pool.alloc_bulk(&mut burst, want);
        for (k, p) in burst[before..].iter_mut().enumerate() {
            let seq = first_seq + k as u64;
            let fresh = !std::mem::replace(&mut filled[p.index() as usize], true);
            if let Some(g) = job.gso {
                let buf = pool.set_len(p, g.bytes.len());
                if fresh {
                    buf.copy_from_slice(&g.bytes);
                }
                pool.set_net_hdr(p, &g.hdr);
                continue;
            }
            let buf = pool.set_len(p, job.tpl.len());
            if fresh {
                job.tpl.write(buf, seq);
            } else {
                job.tpl.write_header(buf, seq);
            }
            if a.src_macs > 1 || job.macs.is_some() {
                if let Some(i) = job.mac_index(made) {
                    set_src(buf, &nth_mac(&job.src, i));
                }
            }
            made += 1;
        }
        if burst.is_empty() {
            // Nothing to send (rate limit, or every buffer in flight): a send of
            // nothing still reclaims what the peer has finished with.
            port.tx_burst(pool, &mut burst);
            if job.rate > 0.0 {
                // Ahead of the schedule: give the CPU away until about a burst is due.
                let burst_secs = (32.0 / job.rate).min(0.0002);
                std::thread::sleep(std::time::Duration::from_secs_f64(burst_secs));
            } else {
                idle(c);
            }
            continue;
        }
        let took = port.tx_burst(pool, &mut burst);
        sent += took as u64;
        // The switch went away (restarted, upgraded): the port reconnects by itself, and
        // the stream resumes at its rate when it is back.
        link_was_down |= took == 0 && port.link() == LinkState::Down;
        if took == 0 {
            idle(c);
        }
    }
    pool.free_all(&mut burst);
    sent
}

/// `--queues N`: a thread per queue pair, each sending the source MACs whose flows hash to
/// its pair.
fn run_pairs(a: &Args, spec: &PortSpec, tpl: &Template, src: Mac) -> Result<()> {
    let c = &a.common;
    if !(1..=MAX_PAIRS).contains(&a.queues) {
        bail!("--queues {} is not in 1..={MAX_PAIRS}", a.queues);
    }
    pin(c.core)?;
    let stop = stop_flag();
    let mut pools = make_pools(c, a.queues)?;
    check_room(a, tpl, &pools[0])?;
    let handles = open_pairs(spec, &mut pools, c)?;
    // Each source MAC's flow goes out on the pair its hash picks.
    let mut macs: Vec<Vec<u32>> = vec![Vec::new(); a.queues];
    let mut f = vec![0u8; tpl.len()];
    tpl.write(&mut f, 0);
    for i in 0..a.src_macs {
        set_src(&mut f, &nth_mac(&src, i));
        macs[handles[0].pair_of(&f)].push(i);
    }
    for (p, m) in macs.iter().enumerate() {
        if m.is_empty() {
            tracing::warn!("pair {p} has none of the {} source MACs' flows: it sends nothing", a.src_macs);
        }
    }
    let claims = AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<Result<(u64, PortCounters, usize)>> = std::thread::scope(|s| {
        let threads: Vec<_> = handles
            .into_iter()
            .zip(pools)
            .zip(macs)
            .map(|((h, pool), m)| {
                let rate = a.rate * m.len() as f64 / f64::from(a.src_macs);
                let job = Job { a, tpl, gso: None, src, macs: Some(m), rate, claims: &claims, stop: &stop };
                s.spawn(move || pair_thread(h, pool, &job))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a pair's thread panicked"))))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut sent = 0;
    let mut counters = PortCounters::default();
    let mut per_pair = Vec::new();
    for (p, r) in results.into_iter().enumerate() {
        let (n, cnt, flows) = r?;
        sent += n;
        counters += cnt;
        per_pair.push(serde_json::json!({"pair":p,"sent":n,"src_macs":flows}));
    }
    report(
        c,
        &serde_json::json!({"role":"pktgen","sent":sent,"secs":secs,"mpps":mpps(sent, secs),
        "size":a.size,"src_macs":a.src_macs,"pairs":per_pair,"port":spec.to_string(),"counters":counters}),
    );
    Ok(())
}

/// One pair's thread: waits for the link, sends, and waits for the peer to take its last
/// frames. Returns what it sent, its counters and how many source MACs it sent from.
fn pair_thread(h: VirtioUserPair, mut pool: PktPool, job: &Job<'_>) -> Result<(u64, PortCounters, usize)> {
    let c = &job.a.common;
    let pair = h.pair();
    let mut ports: Vec<Box<dyn Port>> = vec![Box::new(h)];
    wait_link(&mut ports, &mut pool, c, job.stop)?;
    let port = &mut ports[0];
    // The first pair's thread prints the live rate (of all pairs together).
    let mut quiet = c.clone();
    quiet.quiet |= pair != 0;
    let mut meter = Meter::new("pktgen", &quiet);
    let sent = send_loop(port.as_mut(), &mut pool, job, &mut meter);
    if !port.flush_tx(&mut pool, std::time::Duration::from_secs(2)) {
        tracing::warn!("{}: the peer did not take every frame within 2 s", port.name());
    }
    Ok((sent, port.counters(), job.macs.as_ref().map_or(0, Vec::len)))
}

/// A pool whose buffers hold the GSO frame `g`: enough of them for both rings and two
/// bursts, not --nbufs (each is up to 64 KiB: with --queue-size 128, 21 MB).
fn gso_pool(c: &Common, g: &GsoFrame) -> Result<PktPool> {
    let room = (g.bytes.len().next_multiple_of(64)).min(usize::from(MAX_DATA_ROOM)) as u16;
    let opts = PoolOptions {
        nbufs: 2 * u32::from(c.queue_size) + 64,
        hugedir: Some(c.hugedir.clone().into()),
        data_room: room,
    };
    PktPool::new(&opts).context("creating the packet pool for GSO frames")
}

/// Opens `spec`, a virtio-user port, with transmit offloads; an error unless the backend
/// took TSO over IPv4.
fn open_tso(spec: &PortSpec, pool: &mut PktPool, c: &Common) -> Result<Box<dyn Port>> {
    let (path, packed) = match spec {
        PortSpec::VirtioUser(p) => (p, false),
        PortSpec::VirtioUserPacked(p) => (p, true),
        other => bail!("--gso-mss needs a vu: or vu-packed: port (virtio-user with transmit offloads), not {other}"),
    };
    let opts = VirtioUserOptions { queue_size: c.queue_size, packed, tx_offloads: true, ..Default::default() };
    let port = VirtioUser::open(path, pool, opts).with_context(|| format!("opening port {spec}"))?;
    if port.tx_features() & VIRTIO_NET_F_HOST_TSO4 == 0 {
        bail!(
            "--gso-mss: the backend of {spec} did not take TSO (transmit offloads {:#x}): \
             turn the port's offloads on (fastpathctl add-port --offloads on)",
            port.tx_features()
        );
    }
    Ok(Box::new(port))
}
