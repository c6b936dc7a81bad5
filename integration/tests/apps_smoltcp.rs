// smoltcp on netlib through fastpathd: two processes on one bridge, each with its own IP;
// UDP request/response (udp_rr → udp_echo) and a checked TCP echo stream (tcp_echo client → server).
//! Interop: smoltcp apps ↔ fastpathd ↔ smoltcp apps.

mod apps_common;

use std::time::{Duration, Instant};

use apps_common::{int, show, spec};
use integration::{
    app_flags, fastpathctl_list, fastpathd_port, port_stat, require, serial, show_ports, spawn_fastpathd, stamp,
    wait_for_socket, wait_ports_up, Proc, TestDir, Verdict, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Round trips udp_rr makes.
const TRANSACTIONS: u64 = 2000;
/// Bytes tcp_echo's client sends and expects back.
const TCP_BYTES: u64 = 2_000_000;
/// Time for a client to finish.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

fn args(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_string()).collect();
    v.extend(app_flags());
    v
}

/// Waits for `client` to exit successfully within CLIENT_TIMEOUT; its JSON.
fn finish(v: &mut Verdict, client: &mut Proc) -> Option<Value> {
    if let Some(s) = client.wait_timeout(CLIENT_TIMEOUT) {
        v.check(s.success(), || format!("{}: expected exit status 0, got {s}", client.name()));
    } else {
        v.fail(format!("{}: expected it to finish within {CLIENT_TIMEOUT:?}", client.name()));
        client.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    client.last_json()
}

/// One run: UDP request/response and a checked TCP echo between smoltcp apps, through a
/// fastpathd whose ports and apps take `mtu` (the default 1500 when `None`); udp_rr makes
/// `count` transactions with its `rr` flags.
struct Run {
    test: &'static str,
    mtu: Option<&'static str>,
    rr: &'static [&'static str],
    count: u64,
}

#[test]
fn smoltcp_udp_and_tcp_through_fastpathd() {
    Run { test: "smoltcp_udp_and_tcp_through_fastpathd", mtu: None, rr: &[], count: TRANSACTIONS }.go();
}

/// Jumbo frames between smoltcp apps: ports at MTU 9000 on both sides of the switch, UDP
/// datagrams of each size from 1,400 to 8,972 bytes (the most an IPv4 MTU of 9000 carries;
/// udp_rr steps through the sizes in turn) echoed intact, and a TCP stream at that MTU.
#[test]
fn smoltcp_at_mtu_9000_through_fastpathd() {
    Run {
        test: "smoltcp_at_mtu_9000_through_fastpathd",
        mtu: Some("9000"),
        rr: &["--size", "1400", "--size-max", "8972"],
        count: 8972 - 1400 + 1,
    }
    .go();
}

impl Run {
    /// The app flags of this run, after `list`.
    fn args(&self, list: &[&str]) -> Vec<String> {
        let mut a = args(list);
        if let Some(m) = self.mtu {
            a.extend(["--mtu".to_string(), m.to_string()]);
        }
        a
    }

    #[allow(clippy::too_many_lines)]
    fn go(&self) {
        let test = self.test;
        let Some(peers) = require(test, &["fastpathd", "fastpathctl", "udp_echo", "udp_rr", "tcp_echo"], false) else {
            return;
        };
        let _serial = serial();
        let t0 = Instant::now();
        let dir = TestDir::new("smol");
        let ctl = dir.join("ctl.sock");
        let names = ["a", "b", "c", "d"];
        let sock = |n: &str| dir.join(&format!("{n}.sock"));
        let ports: Vec<String> = names
            .iter()
            .map(|n| {
                let p = fastpathd_port("br0", n, "vhost", &sock(n));
                self.mtu.map_or(p.clone(), |m| format!("{p},mtu={m}"))
            })
            .collect();
        let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0"], &ports);
        let v = Verdict::new(test);
        for s in [ctl.clone(), sock("a"), sock("b"), sock("c"), sock("d")] {
            if !wait_for_socket(&s, SETUP_TIMEOUT) {
                v.abort(
                    format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", s.display()),
                    &mut [&mut fpd],
                );
            }
        }
        let mut v = v;

        // UDP: echo server on port a (10.0.0.2), request/response client on port b (10.0.0.1).
        let mut echo = Proc::spawn(
            "udp_echo",
            &dir,
            &peers.bin("udp_echo"),
            &self.args(&["--port", &spec("vu", &sock("a")), "--ip", "10.0.0.2/24", "--listen", "7"]),
            &[],
        );
        if let Err(e) = wait_ports_up(&peers, &ctl, &["a"], SETUP_TIMEOUT) {
            v.abort(e, &mut [&mut fpd, &mut echo]);
        }
        let (count, n) = (self.count, self.count.to_string());
        let b = spec("vu", &sock("b"));
        let rr_args =
            [&["--port", &b, "--ip", "10.0.0.1/24", "--server", "10.0.0.2:7", "--count", &n], self.rr].concat();
        let mut rr = Proc::spawn("udp_rr", &dir, &peers.bin("udp_rr"), &self.args(&rr_args), &[]);
        let rj = finish(&mut v, &mut rr);
        v.check(
            int(rj.as_ref(), "count") == Some(count)
                && int(rj.as_ref(), "lost") == Some(0)
                && int(rj.as_ref(), "bad") == Some(0),
            || format!("udp_rr: expected \"count\":{count}, \"lost\":0, \"bad\":0, got {}", show(rj.as_ref())),
        );
        let st = echo.stop(Signal::SIGTERM, Duration::from_secs(5));
        v.check(st.success(), || format!("udp_echo: expected exit status 0 after SIGTERM, got {st}"));
        let ej = echo.last_json();
        v.check(int(ej.as_ref(), "echoed").is_some_and(|e| e >= count), || {
            format!("udp_echo: expected \"echoed\" >= {count}, got {}", show(ej.as_ref()))
        });

        // TCP: echo server on port c (10.0.1.2), checking client on port d (10.0.1.1).
        let mut server = Proc::spawn(
            "tcp_echo-server",
            &dir,
            &peers.bin("tcp_echo"),
            &self.args(&["--port", &spec("vu", &sock("c")), "--ip", "10.0.1.2/24", "--listen", "7", "--conns", "1"]),
            &[],
        );
        if let Err(e) = wait_ports_up(&peers, &ctl, &["c"], SETUP_TIMEOUT) {
            v.abort(e, &mut [&mut fpd, &mut server]);
        }
        let bytes = TCP_BYTES.to_string();
        let client_args =
            ["--port", &spec("vu", &sock("d")), "--ip", "10.0.1.1/24", "--connect", "10.0.1.2:7", "--bytes", &bytes];
        let mut client = Proc::spawn("tcp_echo-client", &dir, &peers.bin("tcp_echo"), &self.args(&client_args), &[]);
        let cj = finish(&mut v, &mut client);
        v.check(
            cj.as_ref().and_then(|j| j.get("ok")).and_then(Value::as_bool) == Some(true)
                && int(cj.as_ref(), "received") == Some(TCP_BYTES)
                && int(cj.as_ref(), "wrong") == Some(0),
            || {
                format!(
                    "tcp_echo client: expected \"ok\":true, \"received\":{TCP_BYTES}, \"wrong\":0, got {}",
                    show(cj.as_ref())
                )
            },
        );
        if let Some(s) = server.wait_timeout(Duration::from_secs(10)) {
            v.check(s.success(), || format!("tcp_echo server: expected exit status 0, got {s}"));
        } else {
            v.fail("tcp_echo server: expected it to exit once its one connection closed (--conns 1)");
            server.stop(Signal::SIGTERM, Duration::from_secs(3));
        }
        let sj = server.last_json();
        v.check(int(sj.as_ref(), "echoed") == Some(TCP_BYTES) && int(sj.as_ref(), "conns") == Some(1), || {
            format!("tcp_echo server: expected \"echoed\":{TCP_BYTES}, \"conns\":1, got {}", show(sj.as_ref()))
        });
        match fastpathctl_list(&peers, &ctl) {
            Ok(list) => {
                let big: u64 = names.iter().filter_map(|p| port_stat(&list, p, "drop_too_big")).sum();
                v.check(big == 0, || format!("fastpathd dropped {big} frames as too big for their ports"));
                v.note(show_ports(&list));
            }
            Err(e) => v.note(e),
        }
        let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
        v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
        eprintln!(
            "[{}] {test}: udp_rr {} tcp client {} in {:.2} s",
            stamp(),
            show(rj.as_ref()),
            show(cj.as_ref()),
            t0.elapsed().as_secs_f64()
        );
        v.finish(&mut [&mut rr, &mut echo, &mut client, &mut server, &mut fpd]);
    }
}

/// The kernel modes the udp_rr benchmark compares against, on loopback.
#[test]
fn udp_rr_kernel_mode_on_loopback() {
    const TEST: &str = "udp_rr_kernel_mode_on_loopback";
    let Some(peers) = require(TEST, &["udp_echo", "udp_rr"], false) else { return };
    let _serial = serial();
    let dir = TestDir::new("krr");
    let mut v = Verdict::new(TEST);
    // A port from our pid, so parallel runs on one machine do not collide.
    let port = 20_000 + std::process::id() % 20_000;
    let bind = format!("127.0.0.1:{port}");
    let mut echo =
        Proc::spawn("udp_echo", &dir, &peers.bin("udp_echo"), &["--kernel", "--bind", &bind, "--json", "--quiet"], &[]);
    let mut rr = Proc::spawn(
        "udp_rr",
        &dir,
        &peers.bin("udp_rr"),
        &["--kernel", "--server", &bind, "--count", "500", "--json", "--quiet"],
        &[],
    );
    let rj = finish(&mut v, &mut rr);
    v.check(int(rj.as_ref(), "count") == Some(500) && int(rj.as_ref(), "lost") == Some(0), || {
        format!("udp_rr --kernel: expected \"count\":500, \"lost\":0, got {}", show(rj.as_ref()))
    });
    let st = echo.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("udp_echo --kernel: expected exit status 0 after SIGTERM, got {st}"));
    v.finish(&mut [&mut rr, &mut echo]);
}
