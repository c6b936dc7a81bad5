// The TSO case: a netlib app sends 64 KB TCP GSO frames through fastpathd to an app that
// took no offloads, so the switch cuts and checksums every segment in software; against
// the same app sending the same bytes as 1518-byte frames. Gbit/s the receiver got.
//! Bench case `tso_64k`: software segmentation in the switch vs 1518-byte frames.

use std::time::Duration;

use anyhow::{Context, Result};

use super::ours::{final_json, port, Ctx};
use crate::scratch::Sandbox;

/// The GSO frame's length: a 64 KB TCP/IPv4 packet with its Ethernet header.
const GSO_FRAME: &str = "65000";
/// Payload bytes per segment: a 1500-byte MTU's (1518-byte frames with an option-less
/// TCP/IPv4 header are 1502 bytes on the wire).
const MSS: &str = "1448";
/// The frame the other side sends.
const PLAIN_FRAME: &str = "1518";
/// How long a listening side gets to create its sockets.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Slack on top of the run time for the apps to start and finish.
const SLACK: Duration = Duration::from_secs(30);

/// fastpathd on CPU 0 (its ports take offloads, as by default) between pktgen sending GSO
/// frames and a sink without offloads, both on CPU 1. The switch cuts each frame into
/// 45 segments and checksums each (the sender's CPU saved, the switch's spent).
pub fn ours(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    through(sb, ctx, &["--gso-mss", MSS, "--size", GSO_FRAME])
}

/// The same switch and apps, pktgen sending 1518-byte frames.
pub fn plain(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    through(sb, ctx, &["--size", PLAIN_FRAME])
}

/// pktgen (with `gen_args`) → fastpathd → sink; the sink's Gbit/s, from the first frame
/// to the last.
fn through(sb: &mut Sandbox, ctx: &Ctx, gen_args: &[&str]) -> Result<Vec<f64>> {
    let (a, b, ctl) = (sb.path("a.sock"), sb.path("b.sock"), sb.path("ctl.sock"));
    let ctl = ctl.display().to_string();
    let (port_a, port_b) = (format!("br0:a:vhost:{}", a.display()), format!("br0:b:vhost:{}", b.display()));
    ctx.spawn(
        sb,
        "fastpathd",
        &["--core", "0", "--ctl", &ctl, "--bridge", "br0", "--port", &port_a, "--port", &port_b],
    )?;
    sb.wait_for_path(&a, SOCKET_WAIT)?;
    sb.wait_for_path(&b, SOCKET_WAIT)?;
    let secs = ctx.secs_arg();
    let (vu_a, vu_b) = (port("vu", &a), port("vu", &b));
    // The two apps share CPU 1: each naps when it has nothing to do (its receive ring
    // empty, its transmit ring full), so that the other runs then, and the sink's ring
    // holds 1024 frames. Spinning, each would hold the core for a whole time slice while
    // the other's ring sat full (one ring of frames through per slice). pktgen's ring
    // holds 256: 256 GSO frames are 16 MB in flight already, more only spill the caches.
    let share = ["--core", "1", "--idle-sleep-us", "20", "--json", "--quiet"];
    let sink_args = [&["--port", vu_b.as_str(), "--idle-exit", "2", "--queue-size", "1024"], &share[..]].concat();
    let sink = ctx.spawn(sb, "sink", &sink_args)?;
    let mut args = [&["--port", vu_a.as_str(), "--secs", secs.as_str(), "--queue-size", "256"], &share[..]].concat();
    args.extend_from_slice(gen_args);
    let gen = ctx.spawn(sb, "pktgen", &args)?;
    sb.wait_all_success(&[gen, sink], Duration::from_secs(ctx.secs) + SLACK)?;
    let v = final_json(sb, sink, "sink")?;
    let bytes = v["counters"]["rx_bytes"].as_f64().context("sink: no counters.rx_bytes")?;
    let secs = v["secs"].as_f64().filter(|s| *s > 0.0).context("sink: no secs")?;
    Ok(vec![bytes * 8.0 / secs / 1e9])
}
