// The host's own stack reaching a container app through a TAP port: fastpathd with a
// `tap` port and a vhost-user port on one bridge, a smoltcp app on the vhost port, and on
// the other side a network namespace holding the TAP interface with an address, from which
// the real `ping`, a kernel-socket udp_rr and kernel TCP streams talk to the app.
//! Interop: the kernel's stack (ping, UDP and TCP sockets) ↔ TAP port ↔ fastpathd ↔ smoltcp.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::{
    app_flags, fastpathctl_list, fastpathd_port, ip, output_text, require, serial, show_ports, spawn_fastpathd, stamp,
    wait_for_socket, wait_ports_up, Netns, Peers, Proc, TestDir, Verdict, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

/// Datagrams udp_rr exchanges with the echo server.
const TRANSACTIONS: u64 = 500;
const HOST_IP: &str = "10.77.0.1";
const APP_IP: &str = "10.77.0.2";
/// TCP connections made one after the other, each closed as soon as its echo is read.
const TCP_IN_A_ROW: u64 = 100;
/// TCP connections open at once.
const TCP_AT_ONCE: u64 = 10;
/// Bytes each TCP connection sends and expects back.
const TCP_BYTES: usize = 1_000_000;
/// Listening sockets of the TCP echo server.
const BACKLOG: u64 = 16;
/// How long one TCP connection may take.
const TCP_TIMEOUT: Duration = Duration::from_secs(30);

/// fastpathd with a TAP port (`host`) and a vhost-user port (`app`) on br0, and the TAP
/// interface moved into its own namespace with HOST_IP.
struct Rig {
    dir: TestDir,
    ctl: PathBuf,
    app_sock: PathBuf,
    fpd: Proc,
    ns: Netns,
}

/// Sets up the [`Rig`]; `tag` names its directory, TAP and namespace.
fn rig(peers: &Peers, tag: &str, v: Verdict) -> (Verdict, Rig) {
    let dir = TestDir::new(tag);
    let ctl = dir.join("ctl.sock");
    let tap = format!("fp{tag}{}", std::process::id() % 10_000);
    let app_sock = dir.join("app.sock");
    let ports = [
        fastpathd_port("br0", "host", "tap", std::path::Path::new(&tap)),
        fastpathd_port("br0", "app", "vhost", &app_sock),
    ];
    let mut fpd = spawn_fastpathd("fastpathd", peers, &dir, &ctl, &["br0"], &ports);
    if !wait_for_socket(&app_sock, SETUP_TIMEOUT) {
        v.abort(format!("fastpathd: expected {} within {SETUP_TIMEOUT:?}", app_sock.display()), &mut [&mut fpd]);
    }
    // The host's side: the TAP interface moved into its own namespace, with an address.
    let ns = match Netns::new(&format!("fp{tag}{}", std::process::id())) {
        Ok(ns) => ns,
        Err(e) => v.abort(e, &mut [&mut fpd]),
    };
    let setup = ip(&["link", "set", &tap, "netns", &ns.0])
        .and_then(|_| ns.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", &tap]))
        .and_then(|_| ns.ip(&["link", "set", &tap, "up"]))
        .and_then(|_| ns.ip(&["link", "set", "lo", "up"]));
    if let Err(e) = setup {
        v.abort(e, &mut [&mut fpd]);
    }
    (v, Rig { dir, ctl, app_sock, fpd, ns })
}

impl Rig {
    /// Starts app `bin` on the vhost port with APP_IP and `extra` flags, and waits for its link.
    fn app(&mut self, peers: &Peers, bin: &str, extra: &[&str], v: Verdict) -> (Verdict, Proc) {
        let mut args: Vec<String> =
            ["--port", &format!("vu:{}", self.app_sock.display()), "--ip", &format!("{APP_IP}/24")]
                .iter()
                .chain(extra)
                .map(|s| (*s).to_string())
                .collect();
        args.extend(app_flags());
        let mut app = Proc::spawn(bin, &self.dir, &peers.bin(bin), &args, &[]);
        if let Err(e) = wait_ports_up(peers, &self.ctl, &["app"], SETUP_TIMEOUT) {
            v.abort(e, &mut [&mut self.fpd, &mut app]);
        }
        (v, app)
    }
}

#[test]
fn host_pings_and_udp_echoes_a_smoltcp_app_through_a_tap_port() {
    const TEST: &str = "host_pings_and_udp_echoes_a_smoltcp_app_through_a_tap_port";
    let Some(peers) = require(TEST, &["fastpathd", "fastpathctl", "udp_echo", "udp_rr"], false) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let (v, mut rig) = rig(&peers, "t", Verdict::new(TEST));
    let (mut v, mut echo) = rig.app(&peers, "udp_echo", &[], v);
    let Rig { ctl, mut fpd, ns, .. } = rig;
    // ICMP: the kernel's ping, answered by smoltcp.
    match ns.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", APP_IP], Duration::from_secs(20)) {
        Ok(o) => {
            let text = output_text(&o);
            v.check(o.status.success() && text.contains(" 0% packet loss"), || {
                format!("ping {APP_IP} from the TAP's namespace: {text}")
            });
            v.note(format!(
                "ping: {}",
                text.lines().filter(|l| l.contains("packet loss") || l.contains("rtt")).collect::<Vec<_>>().join("; ")
            ));
        }
        Err(e) => v.fail(format!("ping: {e}")),
    }
    // UDP: a kernel socket in the namespace against smoltcp's echo.
    let server = format!("{APP_IP}:7");
    let n = TRANSACTIONS.to_string();
    match ns.exec(
        &[
            peers.bin("udp_rr").to_str().unwrap_or("udp_rr"),
            "--kernel",
            "--server",
            &server,
            "--count",
            &n,
            "--json",
            "--quiet",
        ],
        Duration::from_mins(1),
    ) {
        Ok(o) => {
            let text = output_text(&o);
            let j = text.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            let got = j.as_ref().and_then(|j| j["count"].as_u64());
            let lost = j.as_ref().and_then(|j| j["lost"].as_u64()).unwrap_or(u64::MAX);
            let bad = j.as_ref().and_then(|j| j["bad"].as_u64()).unwrap_or(u64::MAX);
            v.check(o.status.success() && got == Some(TRANSACTIONS) && lost == 0 && bad == 0, || {
                format!(
                    "udp_rr --kernel through the TAP: expected {TRANSACTIONS} round trips, none lost or bad: {text}"
                )
            });
            v.note(format!(
                "udp_rr (kernel socket → TAP → fastpathd → smoltcp): {}",
                j.map_or_else(String::new, |j| j.to_string())
            ));
        }
        Err(e) => v.fail(format!("udp_rr: {e}")),
    }
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => v.note(show_ports(&list)),
        Err(e) => v.fail(e),
    }
    echo.stop(Signal::SIGINT, Duration::from_secs(3));
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    v.note(format!("{} {TEST}: {:.1} s", stamp(), t0.elapsed().as_secs_f64()));
    v.finish(&mut [&mut fpd, &mut echo]);
}

/// Byte `i` of TCP connection `conn`'s stream.
fn pattern(conn: u64, i: usize) -> u8 {
    let i = i as u64;
    (i.wrapping_mul(31) ^ (i >> 8) ^ conn.wrapping_mul(0x9e)) as u8
}

/// One TCP connection from the calling thread's namespace to `to`: sends TCP_BYTES of
/// connection `conn`'s pattern while reading the echo, compares every byte, and closes
/// as soon as the last one came back.
fn echo_stream(to: SocketAddr, conn: u64) -> Result<(), String> {
    let what = |e: std::io::Error| format!("connection {conn} to {to}: {e}");
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(what)?;
    s.set_read_timeout(Some(TCP_TIMEOUT)).map_err(what)?;
    s.set_write_timeout(Some(TCP_TIMEOUT)).map_err(what)?;
    let mut w = s.try_clone().map_err(what)?;
    let mut s = s;
    std::thread::scope(|sc| {
        let writer = sc.spawn(move || {
            let data: Vec<u8> = (0..TCP_BYTES).map(|i| pattern(conn, i)).collect();
            w.write_all(&data).map_err(what)
        });
        let mut buf = vec![0u8; 65536];
        let mut got = 0;
        while got < TCP_BYTES {
            let n = s
                .read(&mut buf)
                .map_err(|e| format!("connection {conn}: after {got} of {TCP_BYTES} bytes back: {e}"))?;
            if n == 0 {
                return Err(format!("connection {conn}: the server closed after {got} of {TCP_BYTES} bytes back"));
            }
            if let Some(k) = (0..n).find(|&k| buf[k] != pattern(conn, got + k)) {
                return Err(format!("connection {conn}: byte {} came back wrong", got + k));
            }
            got += n;
        }
        writer.join().map_err(|_| format!("connection {conn}: the writer panicked"))?
    })
}

/// Runs `f` in a thread of namespace `ns`.
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            ns.enter()?;
            f()
        })
        .join()
        .map_err(|_| "a client thread panicked".to_string())?
    })
}

#[test]
fn host_kernel_tcp_streams_are_echoed_by_a_smoltcp_server_with_a_backlog_through_a_tap_port() {
    const TEST: &str = "host_kernel_tcp_streams_are_echoed_by_a_smoltcp_server_with_a_backlog_through_a_tap_port";
    let Some(peers) = require(TEST, &["fastpathd", "fastpathctl", "tcp_echo"], false) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let (v, mut rig) = rig(&peers, "c", Verdict::new(TEST));
    let total = TCP_IN_A_ROW + TCP_AT_ONCE;
    let (backlog, conns) = (BACKLOG.to_string(), total.to_string());
    let (mut v, mut server) =
        rig.app(&peers, "tcp_echo", &["--listen", "7", "--backlog", &backlog, "--conns", &conns], v);
    let Rig { ctl, mut fpd, ns, .. } = rig;
    let to: SocketAddr = format!("{APP_IP}:7").parse().expect("a socket address");
    // One after the other, each closed as soon as its echo was read.
    let t = Instant::now();
    let in_a_row = in_netns(&ns, || {
        for conn in 0..TCP_IN_A_ROW {
            echo_stream(to, conn)?;
        }
        Ok(())
    });
    v.check_result(in_a_row.map_err(|e| format!("{TCP_IN_A_ROW} connections in a row of {TCP_BYTES} bytes: {e}")));
    let in_a_row_secs = t.elapsed().as_secs_f64();
    v.note(format!("{TCP_IN_A_ROW} connections in a row: {in_a_row_secs:.2} s"));
    // All at once, each from its own thread.
    let t = Instant::now();
    let at_once = std::thread::scope(|sc| {
        let threads: Vec<_> = (0..TCP_AT_ONCE)
            .map(|i| {
                let ns = &ns;
                sc.spawn(move || in_netns(ns, || echo_stream(to, TCP_IN_A_ROW + i)))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a client thread panicked".into())))
            .collect::<Vec<_>>()
    });
    for e in at_once.into_iter().filter_map(Result::err) {
        v.fail(format!("{TCP_AT_ONCE} connections at once: {e}"));
    }
    let at_once_secs = t.elapsed().as_secs_f64();
    v.note(format!("{TCP_AT_ONCE} connections at once: {at_once_secs:.2} s"));
    // The server exits by itself once all of them closed (--conns), with its counters.
    if let Some(st) = server.wait_timeout(Duration::from_secs(20)) {
        v.check(st.success(), || format!("tcp_echo server: expected exit status 0, got {st}"));
    } else {
        v.fail(format!("tcp_echo server: expected it to exit once {total} connections had closed (--conns {total})"));
        server.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    let sj = server.last_json();
    let get = |k: &str| sj.as_ref().and_then(|j| j[k].as_u64());
    let shown = sj.as_ref().map_or_else(String::new, ToString::to_string);
    let want = [("accepted", total), ("closed", total), ("active", 0), ("bytes", total * TCP_BYTES as u64)];
    v.check(want.iter().all(|(k, n)| get(k) == Some(*n)), || {
        format!("tcp_echo server: expected {want:?}, got {shown}")
    });
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => v.note(show_ports(&list)),
        Err(e) => v.fail(e),
    }
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!(
        "[{}] {TEST}: {TCP_IN_A_ROW} connections in a row {in_a_row_secs:.2} s, {TCP_AT_ONCE} at once \
         {at_once_secs:.2} s, server {shown}, {:.1} s",
        stamp(),
        t0.elapsed().as_secs_f64()
    );
    v.finish(&mut [&mut fpd, &mut server]);
}
