// The C ABI end to end: the C examples are built with gcc against libfastpath_net and
// run against our Rust binaries: C sender (vu:) → Rust sink --check; Rust ping → C echo (static link).
//! Interop: C programs on libfastpath_net ↔ netlib's Rust examples.

mod apps_common;

use std::time::{Duration, Instant};

use apps_common::{build_c, c_toolchain, int, show, spec, Link};
use integration::{
    app_flags, check_sink, require, serial, sink_args, stamp, wait_for_socket, Proc, TestDir, Verdict, FRAMES, RATE,
    RUN_TIMEOUT, SETUP_TIMEOUT, SINK_IDLE_EXIT_SECS,
};
use nix::sys::signal::Signal;

#[test]
fn c_sender_to_rust_sink() {
    const TEST: &str = "c_sender_to_rust_sink";
    let Some(peers) = require(TEST, &["sink"], false) else { return };
    if !c_toolchain(TEST) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("csend");
    let v = Verdict::new(TEST);
    let fp_send = match build_c(&dir, "fp_send", Link::Shared) {
        Ok(b) => b,
        Err(e) => v.abort(e, &mut []),
    };
    let sock = dir.join("s.sock");
    let mut sink = Proc::spawn("sink", &dir, &peers.bin("sink"), &sink_args(&spec("vhost", &sock), FRAMES), &[]);
    if !wait_for_socket(&sock, SETUP_TIMEOUT) {
        v.abort(
            format!("sink: expected it to listen on {} within {SETUP_TIMEOUT:?}", sock.display()),
            &mut [&mut sink],
        );
    }
    let mut v = v;
    let mut sender =
        Proc::spawn("fp_send", &dir, &fp_send, &[spec("vu", &sock), FRAMES.to_string(), RATE.to_string()], &[]);
    match sender.wait_timeout(RUN_TIMEOUT) {
        Some(s) => v.check(s.success(), || format!("fp_send: expected exit status 0, got {s}")),
        None => v.fail(format!("fp_send: expected it to send {FRAMES} frames within {RUN_TIMEOUT:?}")),
    }
    let sj = sender.last_json();
    v.check(int(sj.as_ref(), "sent") == Some(FRAMES), || {
        format!("fp_send: expected \"sent\":{FRAMES}, got {}", show(sj.as_ref()))
    });
    v.check(int(sj.as_ref(), "held") == Some(0), || {
        format!("fp_send: expected to hold no packet at the end (\"held\":0), got {}", show(sj.as_ref()))
    });
    if sink.wait_timeout(Duration::from_secs(u64::from(SINK_IDLE_EXIT_SECS) + 3)).is_none() {
        v.fail("sink: still running after the sender finished (stopped with SIGINT)");
        sink.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    let kj = sink.last_json();
    v.check_result(check_sink(kj.as_ref(), FRAMES));
    eprintln!(
        "[{}] {TEST}: fp_send {} sink {} in {:.2} s",
        stamp(),
        show(sj.as_ref()),
        show(kj.as_ref()),
        t0.elapsed().as_secs_f64()
    );
    v.finish(&mut [&mut sender, &mut sink]);
}

#[test]
fn rust_ping_through_static_c_echo() {
    const TEST: &str = "rust_ping_through_static_c_echo";
    const PINGS: u64 = 2000;
    let Some(peers) = require(TEST, &["ping"], false) else { return };
    if !c_toolchain(TEST) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("cecho");
    let v = Verdict::new(TEST);
    let fp_echo = match build_c(&dir, "fp_echo", Link::Static) {
        Ok(b) => b,
        Err(e) => v.abort(e, &mut []),
    };
    let sock = dir.join("e.sock");
    let mut echo = Proc::spawn("fp_echo", &dir, &fp_echo, &[spec("vhost", &sock)], &[]);
    if !wait_for_socket(&sock, SETUP_TIMEOUT) {
        v.abort(
            format!("fp_echo: expected it to listen on {} within {SETUP_TIMEOUT:?}", sock.display()),
            &mut [&mut echo],
        );
    }
    let mut v = v;
    let mut args: Vec<String> = vec!["--port".into(), spec("vu", &sock), "--count".into(), PINGS.to_string()];
    args.extend(app_flags());
    let mut ping = Proc::spawn("ping", &dir, &peers.bin("ping"), &args, &[]);
    match ping.wait_timeout(RUN_TIMEOUT * 2) {
        Some(s) => v.check(s.success(), || format!("ping: expected exit status 0, got {s}")),
        None => v.fail(format!("ping: expected {PINGS} round trips within {:?}", RUN_TIMEOUT * 2)),
    }
    let pj = ping.last_json();
    v.check(int(pj.as_ref(), "count") == Some(PINGS) && int(pj.as_ref(), "lost") == Some(0), || {
        format!("ping: expected \"count\":{PINGS} and \"lost\":0 (every frame reflected), got {}", show(pj.as_ref()))
    });
    let st = echo.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fp_echo: expected exit status 0 after SIGTERM, got {st}"));
    let ej = echo.last_json();
    // ping's warm-up round trips come on top of the measured ones.
    v.check(int(ej.as_ref(), "echoed").is_some_and(|n| n >= PINGS) && int(ej.as_ref(), "held") == Some(0), || {
        format!("fp_echo: expected \"echoed\" >= {PINGS} and \"held\":0, got {}", show(ej.as_ref()))
    });
    eprintln!(
        "[{}] {TEST}: ping {} echo {} in {:.2} s",
        stamp(),
        show(pj.as_ref()),
        show(ej.as_ref()),
        t0.elapsed().as_secs_f64()
    );
    v.finish(&mut [&mut ping, &mut echo]);
}
