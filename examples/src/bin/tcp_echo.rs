// tcp_echo: a TCP echo server on smoltcp over a netlib port (a backlog of listening sockets,
// many connections at once), and with --connect its client: sends N bytes of a pattern, reads
// them back and checks every byte (on smoltcp, or with --kernel on the kernel's TCP).
//! TCP echo server and client.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fastpath_examples::smol::{stopped, Host, HostArgs};
use fastpath_examples::tcp_server::{echo, socket, Backlog, SOCKET_BUFFER};
use fastpath_examples::{init_logging, report, Common};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Echoes TCP streams, or checks an echo server.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath tcp_echo: TCP echo server on smoltcp over a netlib port; --connect makes it the client",
    after_help = "server: tcp_echo --port vu:/tmp/a.sock --ip 10.0.0.2/24 --listen 7 --backlog 16\n\
client: tcp_echo --port vu:/tmp/b.sock --ip 10.0.0.1/24 --connect 10.0.0.2:7 --bytes 1000000\n\
kernel client: tcp_echo --kernel --connect 10.0.0.2:7 --bytes 10000000"
)]
struct Args {
    #[command(flatten)]
    host: HostArgs,
    /// Server: TCP port to listen on.
    #[arg(long, default_value_t = 7)]
    listen: u16,
    /// Server: sockets listening on the port, so this many connections are served at
    /// once (a SYN that finds none listening is refused).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    backlog: u16,
    /// Server: exit after this many connections have closed (0: never).
    #[arg(long, default_value_t = 0)]
    conns: u64,
    /// Client mode: the server, ADDRESS:PORT.
    #[arg(long)]
    connect: Option<String>,
    /// Client: use the kernel's TCP instead of smoltcp (no --port).
    #[arg(long)]
    kernel: bool,
    /// Client: bytes to send and expect back.
    #[arg(long, default_value_t = 1_000_000)]
    bytes: u64,
    /// Client: give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    common: Common,
}

/// Byte `i` of the client's stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

/// How often the server prints its counters on stderr (unless --quiet).
const REPORT_EVERY: Duration = Duration::from_secs(1);

fn server(a: &Args, host: &mut Host) -> Result<serde_json::Value> {
    let mut backlog = Backlog::listen(&mut host.sockets, a.listen, usize::from(a.backlog))
        .with_context(|| format!("--listen {} --backlog {}", a.listen, a.backlog))?;
    if !a.common.quiet {
        eprintln!(
            "tcp_echo: listening on {}:{} with a backlog of {}",
            a.host.ip.as_deref().unwrap_or("?"),
            a.listen,
            a.backlog
        );
    }
    let end = (a.common.secs > 0.0).then(|| Instant::now() + Duration::from_secs_f64(a.common.secs));
    let mut buf = vec![0u8; SOCKET_BUFFER];
    let (mut next_report, mut reported) = (Instant::now() + REPORT_EVERY, backlog.counters());
    while !stopped() && end.is_none_or(|e| Instant::now() < e) {
        let mut moved = host.poll();
        moved |= backlog.service(&mut host.sockets, |s| echo(s, &mut buf))?;
        let c = backlog.counters();
        if a.conns > 0 && c.closed >= a.conns {
            break;
        }
        if moved {
            host.poll();
        } else {
            host.idle();
        }
        if !a.common.quiet && Instant::now() >= next_report {
            if c != reported {
                eprintln!("tcp_echo: {c}");
                reported = c;
            }
            next_report = Instant::now() + REPORT_EVERY;
        }
    }
    for _ in 0..100 {
        host.poll();
    }
    let c = backlog.counters();
    Ok(serde_json::json!({"role":"tcp_echo","backlog":a.backlog,"accepted":c.accepted,"active":c.active,
        "closed":c.closed,"bytes":c.bytes,"conns":c.closed,"echoed":c.bytes}))
}

fn client(a: &Args, host: &mut Host, to: &str) -> Result<serde_json::Value> {
    let server: std::net::SocketAddrV4 =
        to.parse().map_err(|_| anyhow::anyhow!("--connect '{to}' is not ADDRESS:PORT like 10.0.0.2:7"))?;
    let handle = host.sockets.add(socket());
    let local = 40_000 + (std::process::id() % 20_000) as u16;
    let remote = IpEndpoint::new(IpAddress::Ipv4(*server.ip()), server.port());
    host.sockets
        .get_mut::<tcp::Socket>(handle)
        .connect(host.iface.context(), remote, local)
        .map_err(|e| anyhow::anyhow!("connect to {server}: {e}"))?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.timeout);
    let (mut sent, mut got, mut wrong) = (0u64, 0u64, 0u64);
    let mut first_wrong: Option<u64> = None;
    let mut buf = vec![0u8; 65536];
    let mut connected_at: Option<Instant> = None;
    let mut closed = false;
    loop {
        if stopped() {
            bail!("interrupted after {got} of {} bytes came back", a.bytes);
        }
        if Instant::now() > deadline {
            bail!("timeout after {} s: sent {sent}, got back {got} of {} bytes", a.timeout, a.bytes);
        }
        let mut moved = host.poll();
        let sock = host.sockets.get_mut::<tcp::Socket>(handle);
        if connected_at.is_none() && sock.may_send() {
            connected_at = Some(Instant::now());
        }
        if connected_at.is_some() && !sock.is_open() && got < a.bytes {
            bail!("the server closed the connection after {got} of {} bytes", a.bytes);
        }
        while sock.can_send() && sent < a.bytes {
            let n = (a.bytes - sent).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(sent + i as u64);
            }
            let k = sock.send_slice(&buf[..n]).unwrap_or(0);
            if k == 0 {
                break;
            }
            sent += k as u64;
            moved = true;
        }
        while sock.can_recv() {
            let n = sock.recv_slice(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            check(&buf[..n], got, &mut wrong, &mut first_wrong);
            got += n as u64;
            moved = true;
        }
        if got >= a.bytes && !closed {
            sock.close();
            closed = true;
        }
        if closed && !sock.is_open() {
            break;
        }
        if closed && sock.state() == tcp::State::TimeWait {
            break;
        }
        if !moved {
            host.idle();
        }
    }
    let secs = connected_at.map_or(0.0, |c| c.elapsed().as_secs_f64());
    Ok(serde_json::json!({"role":"tcp_echo_client","bytes":a.bytes,"sent":sent,"received":got,"wrong":wrong,
        "first_wrong":first_wrong,"ok":wrong == 0 && got == a.bytes,"secs":secs,
        "mbit_s": if secs > 0.0 { got as f64 * 8.0 / secs / 1e6 } else { 0.0 }}))
}

/// Counts the bytes of `got` (stream offset `at`) that differ from the pattern.
fn check(got: &[u8], at: u64, wrong: &mut u64, first_wrong: &mut Option<u64>) {
    for (i, b) in got.iter().enumerate() {
        if *b != pattern(at + i as u64) {
            *wrong += 1;
            first_wrong.get_or_insert(at + i as u64);
        }
    }
}

/// The client on the kernel's TCP: a thread writes the pattern while this one reads the
/// echo back and checks it.
fn kernel_client(a: &Args, to: &str) -> Result<serde_json::Value> {
    use std::io::{Read as _, Write as _};
    let server: std::net::SocketAddr =
        to.parse().map_err(|_| anyhow::anyhow!("--connect '{to}' is not ADDRESS:PORT like 10.0.0.2:7"))?;
    let timeout = Duration::from_secs_f64(a.timeout);
    let t0 = Instant::now();
    let mut s =
        std::net::TcpStream::connect_timeout(&server, timeout).with_context(|| format!("connect to {server}"))?;
    s.set_read_timeout(Some(timeout)).context("SO_RCVTIMEO")?;
    let mut w = s.try_clone().context("dup of the socket")?;
    let bytes = a.bytes;
    let writer = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut buf = vec![0u8; 65536];
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(sent + i as u64);
            }
            w.write_all(&buf[..n])?;
            sent += n as u64;
        }
        w.shutdown(std::net::Shutdown::Write)?;
        Ok(sent)
    });
    let (mut got, mut wrong, mut first_wrong) = (0u64, 0u64, None);
    let mut buf = vec![0u8; 65536];
    while got < a.bytes && t0.elapsed() < timeout {
        let n = s.read(&mut buf).with_context(|| format!("reading the echo after {got} of {} bytes", a.bytes))?;
        if n == 0 {
            bail!("the server closed the connection after {got} of {} bytes", a.bytes);
        }
        check(&buf[..n], got, &mut wrong, &mut first_wrong);
        got += n as u64;
    }
    let sent = writer.join().map_err(|_| anyhow::anyhow!("the writer thread panicked"))?.context("writing")?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(serde_json::json!({"role":"tcp_echo_client","kernel":true,"bytes":a.bytes,"sent":sent,"received":got,
        "wrong":wrong,"first_wrong":first_wrong,"ok":wrong == 0 && got == a.bytes,"secs":secs,
        "mbit_s": if secs > 0.0 { got as f64 * 8.0 / secs / 1e6 } else { 0.0 }}))
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let v = match (&a.connect, a.kernel) {
        (Some(to), true) => {
            if a.host.port.is_some() {
                bail!("give --port (smoltcp) or --kernel, not both");
            }
            kernel_client(&a, to)?
        }
        (None, true) => bail!("--kernel is for the client: give --connect ADDRESS:PORT"),
        (Some(to), false) => client(&a, &mut Host::open(&a.host, &a.common)?, to)?,
        (None, false) => server(&a, &mut Host::open(&a.host, &a.common)?)?,
    };
    report(&a.common, &v);
    if v.get("ok").and_then(serde_json::Value::as_bool) == Some(false) {
        bail!("the echoed stream differs from what was sent");
    }
    Ok(())
}
