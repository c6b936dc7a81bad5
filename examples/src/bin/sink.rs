// sink: receives frames, counts them, and with --check verifies each one's
// checksum and sequence number, reporting loss, reordering, damage and the longest gap.
//! Packet sink.

use anyhow::Result;
use clap::Parser;
use fastpath_examples::frame::{check, parse_mac, Check, SeqTracker};
use fastpath_examples::gap::{unix_ns, Gaps};
use fastpath_examples::timeline::Timeline;
use fastpath_examples::{
    discover_port, init_logging, make_pool, mpps, open, pin, prime, report, stop_flag, wait_link, Common, Idler, Meter,
};
use netlib::pool::burst_vec;
use netlib::PortSpec;
use std::sync::atomic::Ordering;
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
