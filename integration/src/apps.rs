// Our packet programs in these tests: the command lines of pktgen and sink (`app_flags`,
// `pktgen_args`, `sink_args`) and the check of a one-way transfer (`finish_transfer`).

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{
    check_sink, check_sink_per_flow, field, stamp, Proc, Verdict, IDLE_SLEEP_US, QUEUE_SIZE, RATE, RUN_TIMEOUT,
    SETUP_TIMEOUT, SINK_IDLE_EXIT_SECS,
};

/// Flags every one of our packet programs gets in these tests.
pub fn app_flags() -> Vec<String> {
    vec![
        "--queue-size".into(),
        QUEUE_SIZE.to_string(),
        // More buffers than a full receive ring plus a full transmit ring: with
        // the default 8192 and 4096-entry rings, pktgen's pool runs dry when its
        // peer stalls and pktgen never calls tx_burst (which reclaims) again.
        "--nbufs".into(),
        (4 * QUEUE_SIZE).to_string(),
        "--idle-sleep-us".into(),
        IDLE_SLEEP_US.to_string(),
        "--link-timeout".into(),
        SETUP_TIMEOUT.as_secs().to_string(),
        "--json".into(),
        "--quiet".into(),
    ]
}

/// `pktgen` arguments: `n` 64-byte frames at `RATE` on `port`.
pub fn pktgen_args(port: &str, n: u64) -> Vec<String> {
    pktgen_args_at(port, n, RATE)
}

/// `pktgen` arguments: `n` 64-byte frames at `rate` frames/s on `port` (a slower one where
/// more pollers than CPUs share the machine).
pub fn pktgen_args_at(port: &str, n: u64, rate: u64) -> Vec<String> {
    let mut v: Vec<String> = ["--port", port, "--size", "64", "--count"].map(String::from).to_vec();
    v.push(n.to_string());
    v.push("--rate".into());
    v.push(rate.to_string());
    v.extend(app_flags());
    v
}

/// `sink --check` arguments: stop after `n` frames or `SINK_IDLE_EXIT_SECS` of silence.
pub fn sink_args(port: &str, n: u64) -> Vec<String> {
    let mut v: Vec<String> = ["--port", port, "--check", "--count"].map(String::from).to_vec();
    v.push(n.to_string());
    v.push("--idle-exit".into());
    v.push(SINK_IDLE_EXIT_SECS.to_string());
    v.extend(app_flags());
    v
}

/// Waits for pktgen to finish, then for the sink (asking it to stop with
/// SIGINT, so it still prints its result, if it is still waiting for frames
/// that will never come); checks pktgen sent `n` and the sink got all `n` intact
/// and in order. Returns the sink's JSON.
pub fn finish_transfer(v: &mut Verdict, pktgen: &mut Proc, sink: &mut Proc, n: u64) -> Option<Value> {
    finish_transfer_with(v, pktgen, sink, n, Order::Global)
}

/// The order a transfer's frames must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// All of them, as pktgen sent them (one queue all the way).
    Global,
    /// Each flow's (source MAC's): frames spread over several queues may interleave.
    PerFlow,
}

/// [`finish_transfer`], the frames in `order`.
pub fn finish_transfer_with(
    v: &mut Verdict,
    pktgen: &mut Proc,
    sink: &mut Proc,
    n: u64,
    order: Order,
) -> Option<Value> {
    match pktgen.wait_timeout(RUN_TIMEOUT) {
        None => {
            v.fail(format!(
                "pktgen: expected it to send {n} frames and exit within {RUN_TIMEOUT:?}; it was still running"
            ));
            pktgen.stop(Signal::SIGINT, Duration::from_secs(3));
        }
        Some(s) if !s.success() => v.fail(format!("pktgen: expected exit status 0, got {s}")),
        Some(_) => {}
    }
    let pj = pktgen.last_json();
    v.check(pj.as_ref().and_then(|j| field(j, "sent")) == Some(n), || {
        format!(
            "pktgen: expected \"sent\":{n} in its JSON result, got {}",
            pj.as_ref().map_or("no JSON line".into(), Value::to_string)
        )
    });
    // The sink exits at n frames; if some were lost it waits SINK_IDLE_EXIT_SECS of silence.
    if sink.wait_timeout(Duration::from_secs(u64::from(SINK_IDLE_EXIT_SECS) + 3)).is_none() {
        v.fail(format!(
            "sink: expected it to exit after {n} frames or {SINK_IDLE_EXIT_SECS} s of silence; it was still running \
             (stopped with SIGINT)"
        ));
        sink.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    if let Some(s) = sink.try_status().filter(|s| !s.success()) {
        v.fail(format!("sink: expected exit status 0, got {s}"));
    }
    let sj = sink.last_json();
    match order {
        Order::Global => v.check_result(check_sink(sj.as_ref(), n)),
        Order::PerFlow => v.check_result(check_sink_per_flow(sj.as_ref(), n)),
    }
    if let Some(j) = &sj {
        let next = field(j, "next_seq").unwrap_or(n);
        let tail_only = next < n
            && field(j, "received") == Some(next)
            && field(j, "lost") == Some(0)
            && field(j, "reordered") == Some(0)
            && field(j, "bad") == Some(0);
        if tail_only {
            v.note(format!(
                "hint: exactly the last {} frames are missing (sequence {next}..{n}): pktgen exits as soon as its \
                 last tx_burst returns, without waiting for its peer to take the frames still in its TX ring; \
                 they are lost when the connection closes (more likely when the peer's CPU is busy)",
                n - next
            ));
        }
    }
    eprintln!(
        "[{}] pktgen: {}\n[{}] sink: {}",
        stamp(),
        pj.map_or("-".into(), |j| j.to_string()),
        stamp(),
        sj.as_ref().map_or("-".into(), Value::to_string)
    );
    sj
}

/// Checks a transfer between a `pktgen --queues` and a `sink --queues` (JSON results): the
/// sink saw `flows` flows, none on another pair than its hash's (`off_pair` 0), and every
/// pair sent and received frames (`frames` in all, if given).
pub fn check_pairs(v: &mut Verdict, pktgen: Option<&Value>, sink: Option<&Value>, flows: u64, frames: Option<u64>) {
    let per_pair = |j: Option<&Value>, key: &str| -> Vec<u64> {
        j.and_then(|j| j["pairs"].as_array())
            .map_or_else(Vec::new, |a| a.iter().filter_map(|p| p[key].as_u64()).collect())
    };
    let seen = sink.and_then(|j| j["flows"].as_u64());
    v.check(seen == Some(flows), || format!("sink: expected {flows} flows, got {seen:?}"));
    let off = sink.and_then(|j| j["off_pair"].as_u64());
    v.check(off == Some(0), || {
        format!("sink: expected no frame on another pair than its flow's hash picks (off_pair 0), got {off:?}")
    });
    for (who, j, key) in [("pktgen", pktgen, "sent"), ("sink", sink, "received")] {
        let n = per_pair(j, key);
        let total_ok = frames.is_none_or(|f| n.iter().sum::<u64>() == f);
        v.check(n.len() >= 2 && n.iter().all(|&x| x > 0) && total_ok, || {
            format!("{who}: expected {key} > 0 on every pair ({frames:?} in all), got {n:?}")
        });
    }
}
