// The jumbo case: 9014-byte frames (MTU 9000) looping between two apps' ports through the
// switch, in Gbit/s: fastpathd against testpmd (two net_vhost ports, io forward) there.
//! Bench case `jumbo_9000`: container → switch → container with jumbo frames.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::ours::{final_json, number, port, Ctx};
use super::testpmd::Testpmd;
use crate::scratch::Sandbox;

/// Frame length on the wire (no FCS): a 9000-byte MTU with its Ethernet header.
pub const FRAME: u32 = 9014;
/// The apps' and the switch ports' MTU.
const MTU: &str = "9000";
/// How long a listening side gets to create its sockets.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Slack on top of the run time for the apps to start and finish.
const SLACK: Duration = Duration::from_secs(30);
/// Frames in flight in the loop (as switch_64's 256, fewer: each is 9 KB).
const IN_FLIGHT: &str = "128";

/// Gbit/s of [`FRAME`]-byte frames at `mpps`.
pub fn gbps(mpps: f64) -> f64 {
    mpps * f64::from(FRAME) * 8.0 / 1000.0
}

/// fastpathd on CPU 0 with ports a and b of MTU 9000.
pub fn ours(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let (a, b, ctl) = (sb.path("a.sock"), sb.path("b.sock"), sb.path("ctl.sock"));
    let ctl = ctl.display().to_string();
    let port_a = format!("br0:a:vhost:{},mtu={MTU}", a.display());
    let port_b = format!("br0:b:vhost:{},mtu={MTU}", b.display());
    ctx.spawn(
        sb,
        "fastpathd",
        &["--core", "0", "--ctl", &ctl, "--bridge", "br0", "--port", &port_a, "--port", &port_b],
    )?;
    through(sb, ctx, &a, &b)
}

/// testpmd on CPU 0 in io forward between two net_vhost ports (it negotiates mergeable
/// receive buffers with the apps, as a virtio_user with `mrg_rxbuf=1` would), one mbuf per
/// jumbo frame.
pub fn peer(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let (a, b) = (sb.path("a.sock"), sb.path("b.sock"));
    let mut sw = Testpmd::vhost(&a, "io");
    sw.name = "testpmd-switch";
    sw.vdevs = vec![
        format!("net_vhost0,iface={},queues=1", a.display()),
        format!("net_vhost1,iface={},queues=1", b.display()),
    ];
    sw.extra = vec!["--max-pkt-len=9018".into(), "--mbuf-size=10240".into()];
    sw.spawn(sb)?;
    through(sb, ctx, &a, &b)
}

/// Once the switch's sockets `a` and `b` exist: l2fwd on CPU 1, holding both ports (as two
/// containers' apps would, in one process as switch_64 does), loops [`IN_FLIGHT`]
/// [`FRAME`]-byte frames through the switch; its rate (both directions) in Gbit/s. A closed
/// loop: no generator outruns the receiver, so the switch's cost per byte is what shows.
fn through(sb: &mut Sandbox, ctx: &Ctx, a: &Path, b: &Path) -> Result<Vec<f64>> {
    sb.wait_for_path(a, SOCKET_WAIT)?;
    sb.wait_for_path(b, SOCKET_WAIT)?;
    let (secs, size) = (ctx.secs_arg(), FRAME.to_string());
    let (vu_a, vu_b) = (port("vu", a), port("vu", b));
    let fwd = ctx.spawn(
        sb,
        "l2fwd",
        &[
            "--port",
            &vu_a,
            "--port",
            &vu_b,
            "--core",
            "1",
            "--mtu",
            MTU,
            "--prime",
            IN_FLIGHT,
            "--prime-size",
            &size,
            "--prime-after-ms",
            "500",
            "--secs",
            &secs,
            "--json",
            "--quiet",
        ],
    )?;
    sb.wait_all_success(&[fwd], Duration::from_secs(ctx.secs) + SLACK)?;
    Ok(vec![gbps(number(&final_json(sb, fwd, "l2fwd")?, "mpps")?)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_jumbo_frames_a_second_is_72_gbits() {
        assert!((gbps(1.0) - 72.112).abs() < 1e-9);
    }
}
