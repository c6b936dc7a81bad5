// The packed-ring cases: netlib's frontend on packed rings (CPU 1) against our vhost-user
// backend apps (CPU 0), and DPDK's virtio_user with packed_vq=1 against testpmd's
// net_vhost in the same places: v2h_64, h2v_64 and twoway_64 on packed rings.
//! Bench cases `v2h_64_packed`, `h2v_64_packed` and `twoway_64_packed`.

use std::time::Duration;

use anyhow::Result;

use super::ours::Ctx;
use super::testpmd::{self, Testpmd, BURST};
use crate::scratch::Sandbox;

/// How long a listening side gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
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

/// Ours: netlib's frontend on packed rings (`vu-packed:`, CPU 1) and our backend apps
/// (CPU 0), as in v2h_64, h2v_64 and twoway_64.
pub fn ours(sb: &mut Sandbox, ctx: &Ctx, flow: Flow) -> Result<Vec<f64>> {
    match flow {
        Flow::V2h => super::cases::ours_one_way(sb, ctx, 64, true, "vu-packed"),
        Flow::H2v => super::cases::ours_one_way(sb, ctx, 64, false, "vu-packed"),
        Flow::Twoway => super::cases::ours_twoway(sb, ctx, "vu-packed"),
    }
}

/// The peer: testpmd's net_vhost on CPU 0 (rxonly, txonly or io) with testpmd's packed
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
