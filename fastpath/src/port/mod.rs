// The switch's port interface: what every port kind (vhost-user, TAP, AF_XDP, VFs;
// VXLAN next) gives the forwarding loop, and the opener of each kind.
//! Switch ports.
//!
//! A port kind is one module with a type implementing [`SwitchPort`], plus one arm in
//! [`open`]. The switch drives every port the same way, one burst at a time:
//! [`SwitchPort::poll`], then [`SwitchPort::recv`] a burst, read it through
//! [`SwitchPort::frames`], hand it to each destination's [`SwitchPort::send`], and
//! [`SwitchPort::release`] it. A frame is copied once, from the source's buffers
//! into the destination's.

pub mod afxdp;
pub mod lanes;
pub mod loopback;
pub mod pmd;
pub mod remote;
pub mod tap;
#[cfg(test)]
mod test_frames;
pub mod vhost;
pub mod vxlan;

use std::os::fd::BorrowedFd;

use netlib::vhost::{DeviceLimits, Frame, Frames};
use netlib::{LinkState, PortCounters};

use crate::config::{PortConfig, PortKind, PortMode};
use crate::error::SwitchError;

/// The fds a port's peer wakes a sleeping switch with.
#[derive(Debug, Default)]
pub struct WakeFds<'a> {
    /// Readable when the control path has work (a listener, a connection).
    pub control: Option<BorrowedFd<'a>>,
    /// Readable when the peer has sent frames (after [`SwitchPort::arm_wakeup`]): one
    /// per queue it sends on.
    pub data: Vec<BorrowedFd<'a>>,
}

/// One port of the switch, of any kind.
///
/// None of these may block, allocate per frame, or take a lock: they run on the
/// polling worker, between every other port's bursts. A port that finds its peer
/// misbehaving resets itself (counting `resets`, remembering the fault) and stays
/// down until the peer comes back; it never takes the switch with it.
pub trait SwitchPort: Send + std::fmt::Debug {
    /// Drives the control path when it is due (accepting, handshakes, the peer's
    /// messages, reconnecting); returns whether frames can move.
    fn poll(&mut self) -> bool;
    /// Takes a burst of at most [`netlib::pool::BURST`] frames from the peer into the
    /// port's buffers; returns how many. The switch counts what it forwards.
    fn recv(&mut self) -> usize;
    /// The frames of the burst [`Self::recv`] took.
    fn frames(&self) -> Frames<'_>;
    /// Gives the burst's buffers back to the peer (after every destination copied).
    fn release(&mut self);
    /// Copies the frames of `src` at positions `picks` (ascending) to the peer, in
    /// that order, and makes them visible to it. Counts what it sends (`tx_*`) and
    /// what it drops (`tx_dropped`, with the reason).
    fn send(&mut self, src: &Frames<'_>, picks: &[u8]);
    /// The counters.
    fn counters(&self) -> PortCounters;
    /// The counters, to add what the switch counts (receive, filtered, errors).
    fn counters_mut(&mut self) -> &mut PortCounters;
    /// Whether frames can move.
    fn link(&self) -> LinkState;
    /// The last fault that reset the port, if any.
    fn last_fault(&self) -> Option<&str>;
    /// The offload features ([`netlib::vnet_hdr::OFFLOAD_FEATURES`]) its peer negotiated:
    /// what the frames it sends may ask for (the switch then reads their virtio-net
    /// headers), and what it takes as it is. 0 (the default) for kinds without headers.
    fn offloads(&self) -> u64 {
        0
    }
    /// The offload features the frames of the burst [`Self::recv`] took may ask for:
    /// [`Self::offloads`], unless the port receives from a peer other than the one it
    /// sends to (another worker's port, whose frames go through a link: [`Self::offloads`]
    /// 0, while the queue pairs it polls are the frontend's).
    fn rx_offloads(&self) -> u64 {
        self.offloads()
    }
    /// Sends one frame with `hdr` in front of it: the virtio-net header of a frame whose
    /// offloads (a partial checksum, GSO) this port's peer negotiated. Only ports whose
    /// [`Self::offloads`] is not 0 get such frames. Returns false when it has no room now
    /// (the frame is the caller's to count).
    fn send_with_header(&mut self, hdr: &[u8; 12], f: Frame<'_>) -> bool {
        let _ = (hdr, f);
        false
    }
    /// Counts what became of a frame that asked for an offload (kinds with headers show
    /// them in [`Self::kind_counters`]).
    fn count_offload(&mut self, e: OffloadEvent) {
        let _ = e;
    }
    /// Sends `n` frames written straight into the port's own transmit buffers:
    /// `build(k, buf)` writes frame `k` at the start of `buf` and returns its length, or
    /// 0 to send nothing for it (the caller counts why). Counts what it sends and drops
    /// like [`Self::send`]; returns how many went out. A kind with no buffers of its own
    /// to lend (vhost) sends nothing.
    fn send_built(&mut self, n: usize, build: &mut dyn FnMut(usize, &mut [u8]) -> usize) -> usize {
        let _ = (n, build);
        0
    }
    /// What the port's kind counts beyond [`PortCounters`], by name (none by default).
    fn kind_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Lends the transmit ring of the peer's queue pair `pair` (1 or more) to another
    /// worker, which then receives what the peer sends there (see
    /// [`netlib::vhost::VhostBackend::lend`]); only before the peer connects. `None`
    /// (the default) for kinds without queue pairs, or a pair the port does not take.
    fn lend(&mut self, pair: usize) -> Option<netlib::vhost::Lane> {
        let _ = pair;
        None
    }
    /// Interrupt mode: asks the peer to signal when it sends; returns whether frames
    /// are already waiting (checked after asking, so none is missed).
    fn arm_wakeup(&mut self) -> bool {
        false
    }
    /// The fds to sleep on.
    fn wake_fds(&self) -> WakeFds<'_> {
        WakeFds::default()
    }
    /// Back to polling: the peer need not signal any more; `woken` says whether its
    /// data fd was readable (the signal is consumed).
    fn disarm_wakeup(&mut self, woken: bool) {
        let _ = woken;
    }
}

/// What became of a frame that asked for an offload (a partial checksum, GSO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadEvent {
    /// The port's peer sent this many.
    Asked(u64),
    /// One went to the port as it was, with its header (its peer negotiated the same).
    AsIs,
    /// One went to the port with its checksum finished in software.
    Finished,
    /// One went to the port cut into this many segments in software.
    Segmented(u64),
}

/// Why a frame being written into a port's transmit buffer was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// Larger than the buffer (`drop_too_big`).
    TooBig,
    /// Its source could not be read (`tx_dropped` only).
    Unreadable,
    /// The builder chose to send nothing (counted by the builder).
    Skipped,
}

impl Unsent {
    /// Counts the frame in `c` as its reason says.
    pub fn count(self, c: &mut PortCounters) {
        match self {
            Self::TooBig => {
                c.tx_dropped += 1;
                c.drop_too_big += 1;
            }
            Self::Unreadable => c.tx_dropped += 1,
            Self::Skipped => {}
        }
    }
}

/// Writes frame `picks[k]` of `src` into `buf` (for a port's transmit loop).
#[inline]
pub fn copy_pick(src: &Frames<'_>, picks: &[u8], k: usize, buf: &mut [u8]) -> Result<usize, Unsent> {
    let f = src.get(picks[k] as usize);
    let len = f.len() as usize;
    let dst = buf.get_mut(..len).ok_or(Unsent::TooBig)?;
    if f.read_all(dst) {
        Ok(len)
    } else {
        Err(Unsent::Unreadable)
    }
}

/// A caller's builder (0: nothing to send) as a transmit loop's.
#[inline]
pub fn built(len: usize) -> Result<usize, Unsent> {
    if len == 0 {
        Err(Unsent::Skipped)
    } else {
        Ok(len)
    }
}

/// Opens the port `cfg` describes (binds its socket, or prepares to connect); its
/// frontends are held to `limits`.
pub fn open(cfg: &PortConfig, limits: DeviceLimits) -> Result<Box<dyn SwitchPort>, SwitchError> {
    let err = |e: &dyn std::fmt::Display| SwitchError::Open { port: cfg.name.clone(), why: e.to_string() };
    crate::config::check_port(cfg).map_err(|e| err(&e))?;
    let ifname = cfg.ifname.as_deref().unwrap_or_default();
    match cfg.kind {
        PortKind::Tap => return Ok(Box::new(tap::TapPort::open(ifname).map_err(|e| err(&e))?)),
        PortKind::Afxdp => {
            return Ok(Box::new(afxdp::AfxdpPort::open(ifname, cfg.queue.unwrap_or(0)).map_err(|e| err(&e))?));
        }
        PortKind::Vxlan => return Ok(Box::new(vxlan::VxlanPort::open(cfg, limits).map_err(|e| err(&e))?)),
        PortKind::Vf => {
            let pci = cfg.pci.as_deref().unwrap_or_default();
            return Ok(Box::new(pmd::vf(pci).map_err(|e| err(&e))?));
        }
        PortKind::Vhost => {}
    }
    let name = format!("port {} ({})", cfg.name, cfg.socket.display());
    let mut port = match cfg.mode {
        PortMode::Server => vhost::VhostPort::listen(&cfg.socket, name).map_err(|e| err(&e))?,
        PortMode::Client => vhost::VhostPort::connect(&cfg.socket, name).map_err(|e| err(&e))?,
    };
    port.set_limits(limits);
    Ok(Box::new(port))
}
