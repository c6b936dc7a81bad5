// `fastpathctl mirror` against a running fastpathd: pktgen → br0 → sink, with the sink's port
// mirrored to an IDS-like sink on another bridge; both count the same frames, the mirror's
// counters agree, and the mirror is still there after fastpathd restarts.
//! Port mirroring through fastpathd.

use std::process::Command;
use std::time::{Duration, Instant};

use integration::{
    fastpathd_port, field, finish_transfer, pktgen_args, require, serial, sink_args, spawn_fastpathd, stamp,
    wait_for_socket, wait_ports_up, Peers, Proc, TestDir, Verdict, FRAMES, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// `fastpathctl --ctl CTL ARGS...`: its stdout, or what went wrong.
fn fastpathctl(peers: &Peers, dir: &TestDir, args: &[&str]) -> Result<String, String> {
    let ctl = dir.join("ctl.sock").display().to_string();
    let out = Command::new(peers.bin("fastpathctl"))
        .args(["--ctl", &ctl])
        .args(args)
        .output()
        .map_err(|e| format!("fastpathctl {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("fastpathctl {args:?}: {} {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The mirrors `fastpathctl mirror list --json` shows.
fn mirrors(peers: &Peers, dir: &TestDir) -> Result<Vec<Value>, String> {
    let out = fastpathctl(peers, dir, &["mirror", "list", "--json"])?;
    serde_json::from_str(&out).map_err(|e| format!("mirror list --json: {e}: {out}"))
}

#[test]
fn a_mirror_port_sees_what_the_sink_got() {
    const TEST: &str = "a_mirror_port_sees_what_the_sink_got";
    let Some(peers) = require(TEST, &["pktgen", "sink", "fastpathd", "fastpathctl"], false) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("mirror");
    let mut v = Verdict::new(TEST);
    let ctl = dir.join("ctl.sock");
    let (p, s, ids) = (dir.join("p.sock"), dir.join("s.sock"), dir.join("ids.sock"));
    // The IDS's port on another bridge: it gets only what the mirror copies, nothing flooded.
    let ports = [
        fastpathd_port("br0", "p", "vhost", &p),
        fastpathd_port("br0", "s", "vhost", &s),
        fastpathd_port("br1", "ids", "vhost", &ids),
    ];
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0", "br1"], &ports);
    for sock in [&ctl, &p, &s, &ids] {
        if !wait_for_socket(sock, SETUP_TIMEOUT) {
            v.abort(
                format!("fastpathd: expected it to create {} within {SETUP_TIMEOUT:?}", sock.display()),
                &mut [&mut fpd],
            );
        }
    }
    let mut sink =
        Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&format!("vu:{}", s.display()), FRAMES), &[]);
    let mut ids_sink =
        Proc::spawn("ids", &dir, &peers.bin("sink"), &sink_args(&format!("vu:{}", ids.display()), FRAMES), &[]);
    if let Err(e) = wait_ports_up(&peers, &ctl, &["s", "ids"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut sink, &mut ids_sink]);
    }
    if let Err(e) = fastpathctl(&peers, &dir, &["mirror", "add", "--from", "s", "--to", "ids", "--direction", "tx"]) {
        v.abort(e, &mut [&mut fpd, &mut sink, &mut ids_sink]);
    }
    let mut pktgen =
        Proc::spawn("pktgen", &dir, &peers.bin("pktgen"), &pktgen_args(&format!("vu:{}", p.display()), FRAMES), &[]);
    let got = finish_transfer(&mut v, &mut pktgen, &mut sink, FRAMES).and_then(|j| field(&j, "received"));
    if ids_sink.wait_timeout(Duration::from_secs(8)).is_none() {
        ids_sink.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    let ids_got = ids_sink.last_json().and_then(|j| field(&j, "received"));
    match mirrors(&peers, &dir) {
        Ok(m) => {
            let (sent, dropped) =
                (m.first().and_then(|m| field(m, "sent")), m.first().and_then(|m| field(m, "dropped")));
            v.note(format!("mirror: {m:?}; sink {got:?}, ids {ids_got:?}"));
            v.check(sent.zip(dropped).is_some_and(|(a, b)| Some(a + b) == got), || {
                format!("mirror: expected sent + dropped = the sink's {got:?}, got {m:?}")
            });
            v.check(ids_got == sent, || format!("ids: expected the {sent:?} frames the mirror sent, got {ids_got:?}"));
        }
        Err(e) => v.fail(e),
    }
    v.check(ids_got == got, || {
        format!("ids: expected the sink's {got:?} frames (none dropped on an idle host), got {ids_got:?}")
    });
    // The mirror is kept across a restart; then it goes.
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    let mut fpd2 = spawn_fastpathd("fastpathd-again", &peers, &dir, &ctl, &["br0", "br1"], &ports);
    v.check(wait_for_socket(&ctl, SETUP_TIMEOUT), || "fastpathd-again: no control socket".into());
    match mirrors(&peers, &dir) {
        Ok(m) => v
            .check(m.len() == 1 && m[0]["from"] == "s" && m[0]["to"] == "ids" && m[0]["direction"] == "tx", || {
                format!("fastpathd-again: expected the mirror s -> ids (tx) restored, got {m:?}")
            }),
        Err(e) => v.fail(e),
    }
    v.check_result(fastpathctl(&peers, &dir, &["mirror", "del", "--from", "s", "--to", "ids"]).map(drop));
    v.check(mirrors(&peers, &dir).is_ok_and(|m| m.is_empty()), || "mirror del: expected no mirror left".into());
    let st = fpd2.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd-again: expected exit status 0 after SIGTERM, got {st}"));
    eprintln!("[{}] {TEST}: {:.2} s", stamp(), t0.elapsed().as_secs_f64());
    v.finish(&mut [&mut pktgen, &mut sink, &mut ids_sink, &mut fpd, &mut fpd2]);
}
