// sink: receives frames, counts them, and with --check verifies each one's
// checksum and sequence number, reporting loss, reordering, damage and the longest gap.
//! Packet sink.

use anyhow::Result;
use clap::Parser;
use fastpath_examples::frame::{check, parse_mac, Check, SeqTracker};
use fastpath_examples::gap::{unix_ns, Gaps};
use fastpath_examples::timeline::Timeline;
use fastpath_examples::{
    discover_port, init_logging, make_pool, make_pools, mpps, open, open_pairs, pin, prime, report, stop_flag,
    wait_link, Common, Idler, Meter,
};
use netlib::flow::{flow_hash, pick, FLOW_HEAD};
use netlib::pool::burst_vec;
use netlib::virtio_user::{VirtioUserPair, MAX_PAIRS};
use netlib::{PktPool, Port, PortCounters, PortSpec};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Receives and counts frames.
#[derive(Debug, Parser)]
#[command(version, about = "fastpath sink: counts frames, checks sequence numbers and checksums")]
struct Args {
    /// Port: vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH or vf:PCI (default: the
    /// first port in the container's fastpath config).
    #[arg(long)]
    port: Option<PortSpec>,
    /// Stop after this many frames (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Verify every frame's checksum and sequence number; also counts the flows (source
    /// MACs) and the frames that came before an earlier one of their own flow
    /// (`flow_reordered`: frames spread over several queues may interleave, a flow may not).
    #[arg(long)]
    check: bool,
    /// Stop after this many seconds without a frame, once one has come (0: never).
    #[arg(long, default_value_t = 0.0)]
    idle_exit: f64,
    /// Print {"event":"first_packet","unix_ns":N} when the first frame arrives.
    #[arg(long)]
    stamp_first: bool,
    /// Print {"event":"gap","gap_ms":G,"unix_ns":N} when frames come after more than MS
    /// milliseconds without one (N: when they came), and add "longest_gap_ms" to the
    /// final JSON line.
    #[arg(long, value_name = "MS")]
    gaps: Option<f64>,
    /// Print a JSON line every this many milliseconds (0: never): the window's frames and
    /// longest gap, and the totals so far ({"event":"interval",...}).
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Once the link is up, send one broadcast frame from this MAC, so that a learning
    /// switch in front of the sink forwards frames for MAC to it instead of flooding.
    #[arg(long, value_name = "MAC")]
    announce: Option<String>,
    /// Open the port (vu:, vu-server: or vu-packed:) with this many queue pairs (1..=16),
    /// a thread and a pool each. The backend spreads flows over the pairs by flow hash
    /// (fastpathd does): with --check, each pair counts the frames whose flow hashes to
    /// another pair (`off_pair`), and the result has a line per pair. --count is for all
    /// pairs together. Not with --gaps, --interval-ms, --stamp-first or --announce.
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with_all = ["gaps", "interval_ms", "stamp_first", "announce"])]
    queues: usize,
    #[command(flatten)]
    common: Common,
}

fn main() -> Result<()> {
    init_logging();
    let mut a = Args::parse();
    let spec = discover_port(a.port.take(), &mut a.common)?;
    let c = &a.common;
    let announce = a.announce.as_deref().map(parse_mac).transpose().map_err(|e| anyhow::anyhow!("--announce: {e}"))?;
    let mut gaps =
        a.gaps.map(|ms| Gaps::threshold_ms("--gaps", ms).map(Gaps::new)).transpose().map_err(anyhow::Error::msg)?;
    if a.queues != 1 {
        return run_pairs(&a, &spec);
    }
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = make_pool(c)?;
    let mut ports = vec![open(&spec, &mut pool, c)?];
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let port = &mut ports[0];
    if let Some(mac) = announce {
        if prime(port.as_mut(), &mut pool, 1, [0xff; 6], mac)? != 1 {
            anyhow::bail!("--announce: the port did not take the frame within 5 s");
        }
    }
    let mut burst = burst_vec();
    let (mut received, mut bad, mut foreign) = (0u64, 0u64, 0u64);
    let mut seqs = SeqTracker::default();
    let mut flows = FlowOrder::default();
    let mut meter = Meter::new("sink", c);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let idle_for = Duration::from_secs_f64(a.idle_exit);
    let mut empty_loops: u32 = 0;
    let mut idler = Idler::default();
    let mut timeline = Timeline::new(Some(Duration::from_millis(a.interval_ms)), Instant::now());
    while !stop.load(Ordering::Relaxed) && (a.count == 0 || received < a.count) && meter.tick(received) {
        let n = port.rx_burst(&mut pool, &mut burst);
        let now = Instant::now();
        if let Some(w) = timeline.window_due(now) {
            println!(
                "{}",
                serde_json::json!({"event":"interval","unix_ms":w.end_unix_ms,"secs":w.secs,"frames":w.frames,
                "max_gap_us":w.max_gap.as_micros() as u64,"open_gap_us":w.open_gap.as_micros() as u64,"received":received,"bad":bad,"foreign":foreign,
                "lost":seqs.lost,"reordered":seqs.reordered})
            );
        }
        if n == 0 {
            timeline.empty(now);
            idler.empty(c, port.as_mut(), &mut pool);
            empty_loops += 1;
            if a.idle_exit > 0.0 && first.is_some() && empty_loops.is_multiple_of(4096) && last.elapsed() > idle_for {
                break;
            }
            continue;
        }
        empty_loops = 0;
        timeline.frames(now, n as u64);
        idler.busy();
        if let Some(gap) = gaps.as_mut().and_then(|g| g.frame(now)) {
            let ms = gap.as_secs_f64() * 1000.0;
            println!("{}", serde_json::json!({"event":"gap","gap_ms":ms,"unix_ns":unix_ns()}));
        }
        if first.is_none() {
            first = Some(now);
            meter.restart();
            if a.stamp_first {
                println!("{}", serde_json::json!({"event":"first_packet","unix_ns":unix_ns()}));
            }
        }
        if a.check {
            for p in &burst {
                let frame = pool.data(p);
                match check(frame) {
                    Check::Good(seq) => {
                        seqs.see(seq);
                        flows.see(frame, seq);
                    }
                    Check::Damaged => bad += 1,
                    Check::Foreign => foreign += 1,
                }
            }
        }
        last = now;
        received += n as u64;
        pool.free_all(&mut burst);
    }
    // The rate counts from the first frame to the last one, not idle time around them.
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let mut v = serde_json::json!({"role":"sink","received":received,"bad":bad,"foreign":foreign,
        "lost":seqs.lost,"reordered":seqs.reordered,"next_seq":seqs.next,
        "flows":flows.last.len(),"flow_reordered":flows.reordered,"secs":secs,"mpps":mpps(received, secs),
        "max_gap_us":timeline.max_gap().as_micros() as u64,
        "port":spec.to_string(),"counters":port.counters()});
    if let Some(g) = &gaps {
        v["longest_gap_ms"] = serde_json::json!(g.longest().as_secs_f64() * 1000.0);
    }
    report(c, &v);
    Ok(())
}

/// What one pair's thread of `--queues` saw.
#[derive(Debug, Default)]
struct PairSeen {
    received: u64,
    bad: u64,
    foreign: u64,
    /// Frames older than the newest one seen on this pair.
    reordered: u64,
    newest: Option<u64>,
    /// Frames whose flow hashes to another pair.
    off_pair: u64,
    flows: FlowOrder,
    /// The sequence numbers seen (bit per number).
    seqs: Vec<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Sequence numbers a `--queues` sink keeps track of (32 MiB of bits per pair at most):
/// frames past it are counted, not told apart.
const SEQ_BITS_MAX: u64 = 1 << 28;

impl PairSeen {
    /// Accounts for the test frame `f` with sequence number `seq`, received on `pair` of
    /// `port`.
    fn see(&mut self, f: &[u8], seq: u64, pair_of_flow: usize, pair: usize) {
        self.flows.see(f, seq);
        if self.newest.is_some_and(|n| seq < n) {
            self.reordered += 1;
        } else {
            self.newest = Some(seq);
        }
        self.off_pair += u64::from(pair_of_flow != pair);
        if seq < SEQ_BITS_MAX {
            let w = (seq / 64) as usize;
            if w >= self.seqs.len() {
                self.seqs.resize(w + 1, 0);
            }
            self.seqs[w] |= 1 << (seq % 64);
        }
    }
}

/// `--queues N`: a thread per queue pair, each receiving and checking what comes on its
/// pair; one result for them all, with a line per pair.
fn run_pairs(a: &Args, spec: &PortSpec) -> Result<()> {
    let c = &a.common;
    if !(1..=MAX_PAIRS).contains(&a.queues) {
        anyhow::bail!("--queues {} is not in 1..={MAX_PAIRS}", a.queues);
    }
    pin(c.core)?;
    let stop = stop_flag();
    let mut pools = make_pools(c, a.queues)?;
    let handles = open_pairs(spec, &mut pools, c)?;
    let total = AtomicU64::new(0);
    // Nanoseconds from `t0` to the last frame any pair received (0: none yet).
    let t0 = Instant::now();
    let last_ns = AtomicU64::new(0);
    let shared = PairsShared { a, total: &total, t0, last_ns: &last_ns, stop: &stop };
    let results: Vec<Result<(PairSeen, PortCounters)>> = std::thread::scope(|s| {
        let threads: Vec<_> = handles
            .into_iter()
            .zip(pools)
            .map(|(h, pool)| {
                let shared = &shared;
                s.spawn(move || pair_thread(h, pool, shared))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a pair's thread panicked"))))
            .collect()
    });
    let mut all = PairSeen::default();
    let mut counters = PortCounters::default();
    let mut per_pair = Vec::new();
    let mut flows = std::collections::HashSet::new();
    for (p, r) in results.into_iter().enumerate() {
        let (seen, cnt) = r?;
        per_pair.push(serde_json::json!({"pair":p,"received":seen.received,"flows":seen.flows.last.len(),
            "flow_reordered":seen.flows.reordered,"reordered":seen.reordered,"off_pair":seen.off_pair}));
        all.received += seen.received;
        all.bad += seen.bad;
        all.foreign += seen.foreign;
        all.reordered += seen.reordered;
        all.off_pair += seen.off_pair;
        all.flows.reordered += seen.flows.reordered;
        flows.extend(seen.flows.last.keys().copied());
        all.first = all.first.into_iter().chain(seen.first).min();
        all.last = all.last.into_iter().chain(seen.last).max();
        if all.seqs.len() < seen.seqs.len() {
            all.seqs.resize(seen.seqs.len(), 0);
        }
        for (w, bits) in all.seqs.iter_mut().zip(&seen.seqs) {
            *w |= bits;
        }
        counters += cnt;
    }
    // Lost: numbers below the highest one seen that never came.
    let distinct: u64 = all.seqs.iter().map(|w| u64::from(w.count_ones())).sum();
    let next = all
        .seqs
        .iter()
        .rposition(|w| *w != 0)
        .map_or(0, |i| i as u64 * 64 + 64 - u64::from(all.seqs[i].leading_zeros()));
    let secs = match (all.first, all.last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let v = serde_json::json!({"role":"sink","received":all.received,"bad":all.bad,"foreign":all.foreign,
        "lost":next.saturating_sub(distinct),"reordered":all.reordered,"next_seq":next,
        "flows":flows.len(),"flow_reordered":all.flows.reordered,"off_pair":all.off_pair,"secs":secs,
        "mpps":mpps(all.received, secs),"pairs":per_pair,"port":spec.to_string(),"counters":counters});
    report(c, &v);
    Ok(())
}

/// What the threads of `--queues` share.
struct PairsShared<'a> {
    a: &'a Args,
    /// Frames received by every pair.
    total: &'a AtomicU64,
    t0: Instant,
    last_ns: &'a AtomicU64,
    stop: &'a AtomicBool,
}

impl PairsShared<'_> {
    /// Whether the run is over: Ctrl-C, --count frames in all, or --idle-exit seconds
    /// without a frame on any pair once one came.
    fn over(&self) -> bool {
        let a = self.a;
        if self.stop.load(Ordering::Relaxed) || (a.count > 0 && self.total.load(Ordering::Relaxed) >= a.count) {
            return true;
        }
        let last = self.last_ns.load(Ordering::Relaxed);
        a.idle_exit > 0.0 && last > 0 && self.t0.elapsed().as_secs_f64() - last as f64 / 1e9 > a.idle_exit
    }
}

/// One pair's thread: receives (and with --check, checks) until the run is over.
fn pair_thread(h: VirtioUserPair, mut pool: PktPool, sh: &PairsShared<'_>) -> Result<(PairSeen, PortCounters)> {
    let c = &sh.a.common;
    let pair = h.pair();
    let pairs = h.pairs();
    let mut ports: Vec<Box<dyn Port>> = vec![Box::new(h)];
    wait_link(&mut ports, &mut pool, c, sh.stop)?;
    let port = &mut ports[0];
    let mut quiet = c.clone();
    quiet.quiet |= pair != 0;
    let mut meter = Meter::new("sink", &quiet);
    let mut seen = PairSeen::default();
    let mut burst = burst_vec();
    let mut idler = Idler::default();
    let mut loops: u32 = 0;
    while meter.tick(sh.total.load(Ordering::Relaxed)) {
        loops = loops.wrapping_add(1);
        if loops.is_multiple_of(256) && sh.over() {
            break;
        }
        let n = port.rx_burst(&mut pool, &mut burst);
        if n == 0 {
            idler.empty(c, port.as_mut(), &mut pool);
            continue;
        }
        idler.busy();
        let now = Instant::now();
        seen.first.get_or_insert(now);
        seen.last = Some(now);
        sh.last_ns.store(now.duration_since(sh.t0).as_nanos().max(1) as u64, Ordering::Relaxed);
        if sh.a.check {
            for p in &burst {
                let frame = pool.data(p);
                match check(frame) {
                    Check::Good(seq) => {
                        let head = &frame[..frame.len().min(FLOW_HEAD)];
                        seen.see(frame, seq, pick(flow_hash(head), pairs), pair);
                    }
                    Check::Damaged => seen.bad += 1,
                    Check::Foreign => seen.foreign += 1,
                }
            }
        }
        seen.received += n as u64;
        sh.total.fetch_add(n as u64, Ordering::Relaxed);
        pool.free_all(&mut burst);
    }
    Ok((seen, port.counters()))
}

/// Order within each flow (a source MAC): the last sequence number of each, and how many
/// frames came after a later one of their own flow.
#[derive(Debug, Default)]
struct FlowOrder {
    last: std::collections::HashMap<[u8; 6], u64>,
    reordered: u64,
}

impl FlowOrder {
    /// Accounts for the test frame `f` with sequence number `seq`.
    fn see(&mut self, f: &[u8], seq: u64) {
        let Some(src) = f.get(6..12).and_then(|m| <[u8; 6]>::try_from(m).ok()) else { return };
        let last = self.last.entry(src).or_insert(seq);
        if seq < *last {
            self.reordered += 1;
        } else {
            *last = seq;
        }
    }
}
