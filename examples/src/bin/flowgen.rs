// flowgen: sends IPv4 UDP/TCP frames over many 5-tuples (for lb and fw) and, with --rx,
// receives them back on a second port, checking each one's checksums and which MAC each flow went to.
//! IPv4 flow generator and checker.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use fastpath_examples::flow::{
    build, csum_update16, ipv4_csum_ok, l4_csum_ok, parse, parse_ip, FiveTuple, FrameSpec, ETH_LEN, IPV4_LEN,
    PROTO_TCP, PROTO_UDP, TCP_LEN, UDP_LEN,
};
use fastpath_examples::frame::parse_mac;
use fastpath_examples::{
    idle, init_logging, make_pool, mpps, open, own_mac_or, pin, report, send_budget, stop_flag, wait_link, Common,
    Meter, DEFAULT_SRC_MAC,
};
use netlib::pool::burst_vec;
use netlib::PortSpec;

/// The payload's first bytes: magic, sequence (LE u64), flow index (LE u32).
const MAGIC: [u8; 4] = *b"FPF1";
const PAYLOAD: usize = 16;

/// Sends (and receives) IPv4 flows.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath flowgen: IPv4 UDP/TCP frames over many 5-tuples; with --rx, receives and checks them",
    after_help = "Flow i (0-based): source address --src + i, source port --sport + i, to --dst:--dport;\n\
--proto mix makes even flows UDP and odd ones TCP. Frames go out round-robin over the flows."
)]
struct Args {
    /// Port to send on.
    #[arg(long)]
    port: PortSpec,
    /// Port to receive the frames on after the device under test (may be the same as --port).
    #[arg(long)]
    rx: Option<PortSpec>,
    /// Number of flows.
    #[arg(long, default_value_t = 1024)]
    flows: u32,
    /// Frame size in bytes (grown to fit the headers: 58 for UDP, 70 for TCP).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// udp, tcp or mix.
    #[arg(long, default_value = "udp")]
    proto: String,
    /// First source address.
    #[arg(long, default_value = "10.0.0.0")]
    src: String,
    /// Destination address.
    #[arg(long, default_value = "192.168.1.10")]
    dst: String,
    /// First source port.
    #[arg(long, default_value_t = 1024)]
    sport: u16,
    /// Destination port.
    #[arg(long, default_value_t = 53)]
    dport: u16,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:fe")]
    dst_mac: String,
    /// Source MAC (default: --port's MAC from the container's fastpath config, else
    /// 02:00:00:00:00:01).
    #[arg(long, visible_alias = "mac")]
    src_mac: Option<String>,
    /// Frames to send (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Check every received frame (checksums, payload, which MAC each flow goes to).
    #[arg(long)]
    check: bool,
    /// After sending ends, keep receiving until nothing came for this many seconds.
    #[arg(long, default_value_t = 1.0)]
    drain_secs: f64,
    #[command(flatten)]
    common: Common,
}

/// One flow's frame, checksums computed with sequence 0.
struct Flow {
    frame: Vec<u8>,
    /// Offset of the payload.
    pay: usize,
    /// Offset of the L4 checksum.
    csum: usize,
}

fn flows(a: &Args) -> Result<Vec<Flow>> {
    let src = parse_ip(&a.src).map_err(|e| anyhow::anyhow!("--src: {e}"))?;
    let dst = parse_ip(&a.dst).map_err(|e| anyhow::anyhow!("--dst: {e}"))?;
    let dst_mac = parse_mac(&a.dst_mac).map_err(|e| anyhow::anyhow!("--dst-mac: {e}"))?;
    let src_mac = own_mac_or(a.src_mac.as_deref(), "--src-mac", &a.port, DEFAULT_SRC_MAC)?;
    if a.flows == 0 || a.flows > 1 << 20 {
        bail!("--flows {} must be in 1..=1048576", a.flows);
    }
    if !(60..=1514).contains(&a.size) {
        bail!("--size {} must be in 60..=1514", a.size);
    }
    let protos: &[u8] = match a.proto.as_str() {
        "udp" => &[PROTO_UDP],
        "tcp" => &[PROTO_TCP],
        "mix" => &[PROTO_UDP, PROTO_TCP],
        p => bail!("--proto '{p}' is not udp, tcp or mix"),
    };
    let mut v = Vec::with_capacity(a.flows as usize);
    for i in 0..a.flows {
        let proto = protos[i as usize % protos.len()];
        let l4 = if proto == PROTO_UDP { UDP_LEN } else { TCP_LEN };
        let len = a.size.max(ETH_LEN + IPV4_LEN + l4 + PAYLOAD);
        let tuple =
            FiveTuple { src: src.wrapping_add(i), dst, sport: a.sport.wrapping_add(i as u16), dport: a.dport, proto };
        let mut payload = [0u8; PAYLOAD];
        payload[..4].copy_from_slice(&MAGIC);
        payload[12..16].copy_from_slice(&i.to_le_bytes());
        let mut frame = vec![0u8; len];
        let pay = build(&mut frame, &FrameSpec { dst_mac, src_mac, tuple, len }, &payload)
            .ok_or_else(|| anyhow::anyhow!("flow {i}: cannot build a {len}-byte frame"))?;
        let csum = ETH_LEN + IPV4_LEN + if proto == PROTO_UDP { 6 } else { 16 };
        v.push(Flow { frame, pay, csum });
    }
    Ok(v)
}

/// Writes flow `f`'s frame with sequence `seq` into `out`, fixing the L4
/// checksum for the sequence words (they were 0 in the template).
#[inline]
fn write(f: &Flow, out: &mut [u8], seq: u64) {
    out.copy_from_slice(&f.frame);
    let s = seq.to_le_bytes();
    out[f.pay + 4..f.pay + 12].copy_from_slice(&s);
    let mut c = u16::from_be_bytes([out[f.csum], out[f.csum + 1]]);
    for w in s.chunks_exact(2) {
        c = csum_update16(c, 0, u16::from_be_bytes([w[0], w[1]]));
    }
    out[f.csum..f.csum + 2].copy_from_slice(&c.to_be_bytes());
}

/// What the receive side found.
#[derive(Default)]
struct Rx {
    received: u64,
    bad: u64,
    foreign: u64,
    /// Each flow's destination MAC, as first seen.
    flow_mac: Vec<Option<[u8; 6]>>,
    /// Times a flow's destination MAC changed.
    moved: u64,
    /// Flows whose destination MAC changed at least once.
    moved_flows: u64,
    /// Whether each flow has moved.
    flow_moved: Vec<bool>,
    /// For each MAC, the flows that moved onto it.
    moved_to: BTreeMap<[u8; 6], u64>,
    per_mac: BTreeMap<[u8; 6], u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Rx {
    fn check(&mut self, f: &[u8]) {
        let Some(p) = parse(f) else {
            self.foreign += 1;
            return;
        };
        let Some(l4) = p.l4 else {
            self.foreign += 1;
            return;
        };
        let pay = l4 + if p.tuple.proto == PROTO_UDP { UDP_LEN } else { TCP_LEN };
        if f.len() < pay + PAYLOAD || f[pay..pay + 4] != MAGIC {
            self.foreign += 1;
            return;
        }
        let idx = u32::from_le_bytes([f[pay + 12], f[pay + 13], f[pay + 14], f[pay + 15]]) as usize;
        if !ipv4_csum_ok(f, &p) || !l4_csum_ok(f, &p) || idx >= self.flow_mac.len() {
            self.bad += 1;
            return;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&f[0..6]);
        *self.per_mac.entry(mac).or_default() += 1;
        match self.flow_mac[idx] {
            None => self.flow_mac[idx] = Some(mac),
            Some(m) if m != mac => {
                self.moved += 1;
                self.flow_mac[idx] = Some(mac);
                *self.moved_to.entry(mac).or_default() += 1;
                if !std::mem::replace(&mut self.flow_moved[idx], true) {
                    self.moved_flows += 1;
                }
            }
            Some(_) => {}
        }
    }
}

fn hex_mac(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let c = &a.common;
    if a.rate < 0.0 {
        bail!("--rate {} must not be negative", a.rate);
    }
    let flows = flows(&a)?;
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = make_pool(c)?;
    let mut ports = vec![open(&a.port, &mut pool, c)?];
    let rx_idx = match &a.rx {
        Some(r) if *r == a.port => Some(0),
        Some(r) => {
            ports.push(open(r, &mut pool, c)?);
            Some(1)
        }
        None => None,
    };
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let mut rx = Rx { flow_mac: vec![None; flows.len()], flow_moved: vec![false; flows.len()], ..Rx::default() };
    let mut burst = burst_vec();
    let mut rxb = burst_vec();
    let (mut seq, mut sent) = (0u64, 0u64);
    let mut meter = Meter::new("flowgen", c);
    let start = Instant::now();
    let mut sending_done: Option<Instant> = None;
    let drain = Duration::from_secs_f64(a.drain_secs.max(0.0));
    let nflows = flows.len() as u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sending = sending_done.is_none();
        if sending
            && (!meter.tick(if rx_idx.is_some() { rx.received } else { sent }) || (a.count > 0 && sent >= a.count))
        {
            sending_done = Some(Instant::now());
        }
        let mut work = false;
        if sending_done.is_none() {
            let want = send_budget(burst.capacity() - burst.len(), sent + burst.len() as u64, a.count, a.rate, start);
            let before = burst.len();
            pool.alloc_bulk(&mut burst, want);
            for p in &mut burst[before..] {
                let f = &flows[(seq % nflows) as usize];
                write(f, pool.set_len(p, f.frame.len()), seq);
                seq += 1;
            }
            if !burst.is_empty() {
                let n = ports[0].tx_burst(&mut pool, &mut burst);
                sent += n as u64;
                work |= n > 0;
            }
        }
        match rx_idx {
            Some(i) => {
                let n = ports[i].rx_burst(&mut pool, &mut rxb);
                if n > 0 {
                    work = true;
                    let now = Instant::now();
                    rx.first.get_or_insert(now);
                    rx.last = Some(now);
                    rx.received += n as u64;
                    if a.check {
                        for p in &rxb {
                            rx.check(pool.data(p));
                        }
                    }
                    pool.free_all(&mut rxb);
                }
                if let Some(done) = sending_done {
                    let quiet_since = rx.last.map_or(done, |l| l.max(done));
                    if quiet_since.elapsed() > drain {
                        break;
                    }
                }
            }
            None => {
                if sending_done.is_some() {
                    break;
                }
            }
        }
        if !work {
            if a.rate > 0.0 && sending_done.is_none() {
                std::thread::sleep(Duration::from_secs_f64((32.0 / a.rate).min(0.0002)));
            } else {
                idle(c);
            }
        }
    }
    pool.free_all(&mut burst);
    let tx_secs = sending_done.unwrap_or_else(Instant::now).duration_since(start).as_secs_f64();
    let rx_secs = match (rx.first, rx.last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let per_mac: serde_json::Map<String, serde_json::Value> =
        rx.per_mac.iter().map(|(m, n)| (hex_mac(*m), (*n).into())).collect();
    let moved_to: serde_json::Map<String, serde_json::Value> =
        rx.moved_to.iter().map(|(m, n)| (hex_mac(*m), (*n).into())).collect();
    let flows_seen = rx.flow_mac.iter().filter(|m| m.is_some()).count();
    report(
        c,
        &serde_json::json!({"role":"flowgen","sent":sent,"tx_mpps":mpps(sent, tx_secs),"received":rx.received,
            "mpps":mpps(rx.received, rx_secs),"secs":rx_secs,"checked":a.check,"bad":rx.bad,"foreign":rx.foreign,
            "flows":flows.len(),"flows_seen":flows_seen,"moved":rx.moved,"moved_flows":rx.moved_flows,"moved_to":moved_to,"per_mac":per_mac,
            "counters":ports.iter().map(|p| p.counters()).collect::<Vec<_>>()}),
    );
    Ok(())
}
