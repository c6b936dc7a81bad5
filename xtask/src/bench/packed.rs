// The packed-ring cases: DPDK's virtio_user with packed_vq=1 (CPU 1) against our vhost-user
// backend apps (CPU 0), and against testpmd's net_vhost in the same place. Both sides have
// the same frontend, so the ratio is the backends' (netlib's frontend has the split ring
// only).
//! Bench cases `v2h_64_packed`, `h2v_64_packed` and `twoway_64_packed`.

use std::time::Duration;

use anyhow::Result;

use super::ours::{final_json, number, port, Ctx};
use super::testpmd::{self, Testpmd, BURST};
use crate::scratch::Sandbox;

/// How long a listening side gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Slack on top of the run time for our binaries to start and finish.
const SLACK: Duration = Duration::from_secs(30);
/// Packets in flight in the two-way loop (as twoway_64).
const IN_FLIGHT: u32 = 256;

/// Which way the frames go.
#[derive(Clone, Copy, Debug)]
pub enum Flow {
    /// The frontend sends, the backend receives.
    V2h,
    /// The backend sends, the frontend receives.
    H2v,
    /// Both forward a primed loop.
    Twoway,
}

/// Ours: sink, pktgen or echo as the vhost-user backend on CPU 0; testpmd's packed
/// virtio_user on CPU 1 (txonly, rxonly or io).
pub fn ours(sb: &mut Sandbox, ctx: &Ctx, flow: Flow) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    // A sender or forwarder measured at testpmd runs past the measurement (testpmd's first
    // second of stats is a partial one).
    let secs = match flow {
        Flow::V2h => ctx.secs_arg(),
        Flow::H2v | Flow::Twoway => (ctx.secs + 3).to_string(),
    };
    let backend = port("vhost", &sock);
    let (bin, extra, mode): (&str, &[&str], &'static str) = match flow {
        Flow::V2h => ("sink", &[], "txonly"),
        Flow::H2v => ("pktgen", &["--size", "64"], "rxonly"),
        Flow::Twoway => ("echo", &["--no-macswap"], "io"),
    };
    let mut args = vec!["--port", backend.as_str(), "--core", "0", "--secs", secs.as_str(), "--json", "--quiet"];
    args.extend(extra);
    let be = ctx.spawn(sb, bin, &args)?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    let mut fe = Testpmd::virtio_user(&sock, mode).packed();
    if matches!(flow, Flow::Twoway) {
        fe = fe.prime(IN_FLIGHT / BURST);
    }
    let fe = fe.spawn(sb)?;
    match flow {
        Flow::V2h => {
            sb.wait_all_success(&[be], Duration::from_secs(ctx.secs) + SLACK)?;
            Ok(vec![number(&final_json(sb, be, "sink")?, "mpps")?])
        }
        Flow::H2v => testpmd::measure(sb, &[(fe, &[0])], ctx.secs),
        Flow::Twoway => {
            let theirs = testpmd::measure(sb, &[(fe, &[0])], ctx.secs)?[0];
            sb.wait_all_success(&[be], Duration::from_secs(ctx.secs) + SLACK)?;
            let mine = number(&final_json(sb, be, "echo")?, "mpps")?;
            Ok(vec![(mine + theirs) / 2.0])
        }
    }
}

/// The peer: testpmd's net_vhost on CPU 0 (rxonly, txonly or io) with the same packed
/// virtio_user on CPU 1.
pub fn peer(sb: &mut Sandbox, ctx: &Ctx, flow: Flow) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    let (be_mode, fe_mode) = match flow {
        Flow::V2h => ("rxonly", "txonly"),
        Flow::H2v => ("txonly", "rxonly"),
        Flow::Twoway => ("io", "io"),
    };
    let be = Testpmd::vhost(&sock, be_mode).spawn(sb)?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    let mut fe = Testpmd::virtio_user(&sock, fe_mode).packed();
    if matches!(flow, Flow::Twoway) {
        fe = fe.prime(IN_FLIGHT / BURST);
    }
    let fe = fe.spawn(sb)?;
    match flow {
        Flow::V2h => testpmd::measure(sb, &[(be, &[0])], ctx.secs),
        Flow::H2v => testpmd::measure(sb, &[(fe, &[0])], ctx.secs),
        Flow::Twoway => {
            let r = testpmd::measure(sb, &[(be, &[0]), (fe, &[0])], ctx.secs)?;
            Ok(vec![(r[0] + r[1]) / 2.0])
        }
    }
}
