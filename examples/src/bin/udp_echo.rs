// udp_echo: a UDP echo server on smoltcp over a netlib port (--port, --ip), or on the
// kernel's sockets (--kernel --bind) for comparison; sends every datagram back to its sender.
//! UDP echo server.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fastpath_examples::smol::{stopped, Host, HostArgs};
use fastpath_examples::{init_logging, report, stop_flag, Common};
use smoltcp::socket::udp;

/// Echoes UDP datagrams.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath udp_echo: UDP echo server on smoltcp over a netlib port, or on kernel sockets (--kernel)",
    after_help = "smoltcp: udp_echo --port vu:/tmp/a.sock --ip 10.0.0.2/24 --listen 7\n\
kernel:  udp_echo --kernel --bind 10.0.0.2:7"
)]
struct Args {
    #[command(flatten)]
    host: HostArgs,
    /// UDP port to listen on (smoltcp).
    #[arg(long, default_value_t = 7)]
    listen: u16,
    /// Use the kernel's UDP socket instead of smoltcp.
    #[arg(long)]
    kernel: bool,
    /// Address to bind with --kernel.
    #[arg(long, default_value = "0.0.0.0:7")]
    bind: String,
    /// Exit after echoing this many datagrams (0: never).
    #[arg(long, default_value_t = 0)]
    count: u64,
    #[command(flatten)]
    common: Common,
}

fn deadline(c: &Common) -> Option<Instant> {
    (c.secs > 0.0).then(|| Instant::now() + Duration::from_secs_f64(c.secs))
}

fn smol(a: &Args) -> Result<u64> {
    let c = &a.common;
    let mut host = Host::open(&a.host, c)?;
    // Room for 256 datagrams of the largest size the port's MTU carries.
    let room = usize::from(c.mtu).max(2048);
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 256 * room]);
    let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 256 * room]);
    let mut sock = udp::Socket::new(rx, tx);
    sock.bind(a.listen).with_context(|| format!("--listen {}", a.listen))?;
    let handle = host.sockets.add(sock);
    if !c.quiet {
        eprintln!("udp_echo: listening on {}:{}", a.host.ip.as_deref().unwrap_or("?"), a.listen);
    }
    let end = deadline(c);
    let mut buf = vec![0u8; room];
    let mut echoed = 0u64;
    let mut loops = 0u32;
    while !stopped() && (a.count == 0 || echoed < a.count) {
        let mut moved = host.poll();
        let sock = host.sockets.get_mut::<udp::Socket>(handle);
        while sock.can_send() {
            let Ok((n, meta)) = sock.recv_slice(&mut buf) else { break };
            if sock.send_slice(&buf[..n], meta.endpoint).is_ok() {
                echoed += 1;
            }
            moved = true;
        }
        if moved {
            host.poll();
        } else {
            host.idle();
        }
        loops = loops.wrapping_add(1);
        if loops.is_multiple_of(1024) && end.is_some_and(|e| Instant::now() > e) {
            break;
        }
    }
    // Let the last replies go out.
    for _ in 0..100 {
        host.poll();
    }
    Ok(echoed)
}

fn kernel(a: &Args) -> Result<u64> {
    let c = &a.common;
    fastpath_examples::pin(c.core)?;
    let _ = stop_flag();
    let s = std::net::UdpSocket::bind(&a.bind).with_context(|| format!("--bind {}: cannot bind", a.bind))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    if !c.quiet {
        eprintln!("udp_echo: kernel socket on {}", s.local_addr()?);
    }
    let end = deadline(c);
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0u64;
    while !stopped() && (a.count == 0 || echoed < a.count) && end.is_none_or(|e| Instant::now() < e) {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => {
                if s.send_to(&buf[..n], from).is_ok() {
                    echoed += 1;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("recv_from"),
        }
    }
    Ok(echoed)
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    if a.kernel && a.host.port.is_some() {
        bail!("give --port (smoltcp) or --kernel, not both");
    }
    let echoed = if a.kernel { kernel(&a)? } else { smol(&a)? };
    report(&a.common, &serde_json::json!({"role":"udp_echo","echoed":echoed,"kernel":a.kernel}));
    Ok(())
}
