// A vhost-user port another worker owns, of which this worker polls some queue pairs:
// it receives the frames the frontend sends on those pairs (their transmit rings are
// lent to it), and what this worker forwards to the port goes into the link to its
// owner, like any remote port's.
//! Queue pairs of another worker's port.

use netlib::vhost::{Frames, LaneRx};
use netlib::{LinkState, PortCounters};

use super::remote::RemotePort;
use super::SwitchPort;
use crate::link::LinkTx;

/// Another worker's port of which this worker polls the transmit rings of some queue
/// pairs. Receives from them in turn, a burst from one at a time; sends into the link to
/// the port's worker. Its counters are what it received (the switch counts them) and what
/// it sent into the link; its worker's are the port's own (with each lane's frames in
/// its per-queue counters).
#[derive(Debug)]
pub struct LanesPort {
    remote: RemotePort,
    lanes: Vec<LaneRx>,
    /// The lane of the burst being forwarded.
    current: usize,
    /// The lane the next receive looks at first.
    next: usize,
}

impl LanesPort {
    /// The port at the other end of `link`, polling `lanes` (at least one).
    pub fn new(link: LinkTx, lanes: Vec<LaneRx>) -> Self {
        Self { remote: RemotePort::new(link), lanes, current: 0, next: 0 }
    }
}

impl SwitchPort for LanesPort {
    #[inline]
    fn poll(&mut self) -> bool {
        self.remote.poll()
    }

    #[inline]
    fn recv(&mut self) -> usize {
        let n = self.lanes.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let got = self.lanes[i].pop();
            if got > 0 {
                self.current = i;
                self.next = i + 1;
                return got;
            }
        }
        0
    }

    #[inline]
    fn frames(&self) -> Frames<'_> {
        self.lanes.get(self.current).map_or(Frames::EMPTY, LaneRx::frames)
    }

    #[inline]
    fn release(&mut self) {
        if let Some(l) = self.lanes.get_mut(self.current) {
            l.release();
        }
    }

    #[inline]
    fn send(&mut self, src: &Frames<'_>, picks: &[u8]) {
        self.remote.send(src, picks);
    }

    fn send_built(&mut self, n: usize, build: &mut dyn FnMut(usize, &mut [u8]) -> usize) -> usize {
        self.remote.send_built(n, build)
    }

    /// What the frontend negotiated, for the frames of the lane's burst (what goes to the
    /// port crosses a link: [`SwitchPort::offloads`] stays 0, and such frames are finished
    /// in software on their way in).
    #[inline]
    fn rx_offloads(&self) -> u64 {
        self.lanes.get(self.current).map_or(0, LaneRx::offloads)
    }

    fn counters(&self) -> PortCounters {
        self.remote.counters()
    }

    fn counters_mut(&mut self) -> &mut PortCounters {
        self.remote.counters_mut()
    }

    fn link(&self) -> LinkState {
        self.remote.link()
    }

    fn last_fault(&self) -> Option<&str> {
        None
    }
}
