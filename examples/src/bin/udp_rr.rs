// udp_rr: UDP request/response client: one datagram out, wait for its echo, N times; reports
// the mean and percentiles of the round trip. On smoltcp over a netlib port, or on kernel sockets.
//! UDP request/response latency client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fastpath_examples::smol::{stopped, Host, HostArgs};
use fastpath_examples::{init_logging, report, stop_flag, Common};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Measures UDP round trips.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath udp_rr: UDP request/response transactions against an echo server; mean, p50, p99 round trip",
    after_help = "smoltcp: udp_rr --port vu:/tmp/b.sock --ip 10.0.0.1/24 --server 10.0.0.2:7\n\
kernel:  udp_rr --kernel --server 10.0.0.2:7"
)]
struct Args {
    #[command(flatten)]
    host: HostArgs,
    /// The echo server, ADDRESS:PORT.
    #[arg(long)]
    server: String,
    /// Use the kernel's UDP socket instead of smoltcp.
    #[arg(long)]
    kernel: bool,
    /// Transactions to measure.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Transactions before measuring (ARP, caches).
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// UDP payload bytes (at least 8: the sequence number).
    #[arg(long, default_value_t = 18)]
    size: usize,
    /// Sweep the sizes: transaction N carries `--size + N % (SIZE_MAX - --size + 1)` bytes,
    /// so `--count` of at least that many covers every size from --size to SIZE_MAX.
    #[arg(long)]
    size_max: Option<usize>,
    /// Give up on one transaction after this many milliseconds (counted as lost).
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
    #[command(flatten)]
    common: Common,
}

/// Builds request `seq` into `buf` (sequence number then a pattern).
fn request(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[8..].iter_mut().enumerate() {
        *b = (i as u8) ^ (seq as u8);
    }
}

/// One side's transport: send a request, poll for a reply.
trait Transport {
    fn send(&mut self, req: &[u8]) -> Result<()>;
    /// Waits up to `until` for a datagram into `buf`; its length.
    fn recv(&mut self, buf: &mut [u8], until: Instant) -> Result<Option<usize>>;
}

struct Smol {
    host: Host,
    h: smoltcp::iface::SocketHandle,
    server: IpEndpoint,
}

impl Transport for Smol {
    fn send(&mut self, req: &[u8]) -> Result<()> {
        let s = self.host.sockets.get_mut::<udp::Socket>(self.h);
        s.send_slice(req, self.server).map_err(|e| anyhow::anyhow!("send: {e}"))?;
        self.host.poll();
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], until: Instant) -> Result<Option<usize>> {
        loop {
            let s = self.host.sockets.get_mut::<udp::Socket>(self.h);
            if let Ok((n, _)) = s.recv_slice(buf) {
                return Ok(Some(n));
            }
            if Instant::now() > until || stopped() {
                return Ok(None);
            }
            if !self.host.poll() {
                self.host.idle();
            }
        }
    }
}

struct Kernel {
    sock: std::net::UdpSocket,
}

impl Transport for Kernel {
    fn send(&mut self, req: &[u8]) -> Result<()> {
        self.sock.send(req).context("send")?;
        Ok(())
    }

    /// Blocks in recv (the socket's read timeout, set once, bounds each wait).
    fn recv(&mut self, buf: &mut [u8], until: Instant) -> Result<Option<usize>> {
        loop {
            if Instant::now() >= until || stopped() {
                return Ok(None);
            }
            match self.sock.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // An ICMP port unreachable (server not up yet) shows up here: retry.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).context("recv"),
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The payload size of transaction `seq` (warm-up included) for sizes `min..=max`.
fn size_of(seq: u64, min: usize, max: usize) -> usize {
    min + (seq % (max - min + 1) as u64) as usize
}

fn run(a: &Args, t: &mut dyn Transport) -> Result<serde_json::Value> {
    let timeout = Duration::from_millis(a.timeout_ms);
    let max = a.size_max.unwrap_or(a.size);
    let mut buf = vec![0u8; max];
    let mut resp = vec![0u8; max.max(2048)];
    let mut rtts: Vec<u64> = Vec::with_capacity(a.count as usize);
    let (mut lost, mut bad, mut late) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut measuring_since = started;
    for seq in 0..a.warmup + a.count {
        if stopped() {
            break;
        }
        if seq == a.warmup {
            measuring_since = Instant::now();
        }
        let req = &mut buf[..size_of(seq, a.size, max)];
        request(req, seq);
        let t0 = Instant::now();
        t.send(req)?;
        let until = t0 + timeout;
        let mut answered = false;
        while let Some(n) = t.recv(&mut resp, until)? {
            let got = u64::from_le_bytes(resp[..8.min(n)].try_into().unwrap_or([0xff; 8]));
            if got == seq {
                answered = true;
                if resp[..n] != *req {
                    bad += 1;
                }
                break;
            }
            late += 1; // an older reply that missed its deadline
        }
        let dt = t0.elapsed().as_nanos() as u64;
        if seq < a.warmup {
            continue;
        }
        if answered {
            rtts.push(dt);
        } else {
            lost += 1;
        }
    }
    let secs = measuring_since.elapsed().as_secs_f64();
    let n = rtts.len();
    let mean_us = if n > 0 { rtts.iter().sum::<u64>() as f64 / n as f64 / 1000.0 } else { 0.0 };
    rtts.sort_unstable();
    Ok(
        serde_json::json!({"role":"udp_rr","kernel":a.kernel,"size":a.size,"size_max":max,"count":n,"lost":lost,"bad":bad,"late":late,
        "mean_us":mean_us,"p50_us":percentile(&rtts, 0.5),"p99_us":percentile(&rtts, 0.99),
        "max_us":rtts.last().map_or(0.0, |&x| x as f64 / 1000.0),
        "tps": if secs > 0.0 { n as f64 / secs } else { 0.0 }}),
    )
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let c = &a.common;
    // The largest payload one unfragmented datagram carries: the MTU less IP and UDP headers.
    let most = usize::from(c.mtu).saturating_sub(28);
    if a.size < 8 || a.size > most {
        bail!("--size {} must be in 8..={most} (the sequence number takes 8 bytes; --mtu {})", a.size, c.mtu);
    }
    if let Some(m) = a.size_max.filter(|m| *m < a.size || *m > most) {
        bail!("--size-max {m} must be in --size..={most} ({}..={most}; --mtu {})", a.size, c.mtu);
    }
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let server: SocketAddr =
        a.server.parse().map_err(|_| anyhow::anyhow!("--server '{}' is not ADDRESS:PORT like 10.0.0.2:7", a.server))?;
    let SocketAddr::V4(server4) = server else { bail!("--server {server}: only IPv4") };
    let v = if a.kernel {
        if a.host.port.is_some() {
            bail!("give --port (smoltcp) or --kernel, not both");
        }
        fastpath_examples::pin(c.core)?;
        let _ = stop_flag();
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
        sock.connect(server).with_context(|| format!("--server {server}"))?;
        // Short enough to notice Ctrl-C and a transaction's deadline soon after they pass.
        sock.set_read_timeout(Some(Duration::from_millis(a.timeout_ms.clamp(1, 50))))?;
        run(&a, &mut Kernel { sock })?
    } else {
        let mut host = Host::open(&a.host, c)?;
        let room = usize::from(c.mtu).max(2048);
        let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * room]);
        let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * room]);
        let mut sock = udp::Socket::new(rx, tx);
        let local = 40_000 + (std::process::id() % 20_000) as u16;
        sock.bind(local).with_context(|| format!("binding UDP port {local}"))?;
        let h = host.sockets.add(sock);
        let server = IpEndpoint::new(IpAddress::Ipv4(*server4.ip()), server4.port());
        run(&a, &mut Smol { host, h, server })?
    };
    report(c, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::size_of;

    #[test]
    fn the_sweep_covers_every_size_once_per_round() {
        let sizes: Vec<usize> = (0..1465).map(|seq| size_of(seq, 8, 1472)).collect();
        assert_eq!(sizes.first(), Some(&8));
        assert_eq!(sizes.last(), Some(&1472));
        let mut sorted = sizes.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 1465);
        assert_eq!(size_of(1465, 8, 1472), 8);
        assert_eq!(size_of(7, 18, 18), 18);
    }
}
