// A port another worker owns, as this worker's switch sees it: frames sent to it go into
// the link to that worker; it receives nothing and has no control path.
//! Ports of other workers.

use netlib::vhost::Frames;
use netlib::{LinkState, PortCounters};

use super::{SwitchPort, Unsent};
use crate::link::LinkTx;

/// A port of another worker: [`SwitchPort::send`] copies into the link its worker drains.
/// Its counters are what this worker sent it and what the link had no room for
/// (`drop_ring_full`) or could not carry (`drop_too_big`); the port's own counters are its
/// worker's.
#[derive(Debug)]
pub struct RemotePort {
    link: LinkTx,
    counters: PortCounters,
}

impl RemotePort {
    /// The port at the other end of `link`.
    pub fn new(link: LinkTx) -> Self {
        Self { link, counters: PortCounters::default() }
    }

    fn transmit(&mut self, n: usize, mut write: impl FnMut(usize, &mut [u8]) -> Result<usize, Unsent>) -> usize {
        let c = &mut self.counters;
        let mut bytes = 0u64;
        let mut unsent = [0u64; 2];
        let (went, full) = self.link.send(
            n,
            |k, buf| {
                let len = write(k, buf)?;
                bytes += len as u64;
                Ok(len)
            },
            |e: Unsent| match e {
                Unsent::TooBig => unsent[0] += 1,
                Unsent::Unreadable => unsent[1] += 1,
                Unsent::Skipped => {}
            },
        );
        c.tx_packets += went as u64;
        c.tx_bytes += bytes;
        c.tx_dropped += full as u64 + unsent[0] + unsent[1];
        c.drop_ring_full += full as u64;
        c.drop_too_big += unsent[0];
        went
    }
}

impl SwitchPort for RemotePort {
    fn poll(&mut self) -> bool {
        !self.link.orphaned()
    }

    fn recv(&mut self) -> usize {
        0
    }

    fn frames(&self) -> Frames<'_> {
        Frames::EMPTY
    }

    fn release(&mut self) {}

    fn send(&mut self, src: &Frames<'_>, picks: &[u8]) {
        self.transmit(picks.len(), |k, buf| super::copy_pick(src, picks, k, buf));
    }

    fn send_built(&mut self, n: usize, build: &mut dyn FnMut(usize, &mut [u8]) -> usize) -> usize {
        self.transmit(n, |k, buf| super::built(build(k, buf)))
    }

    fn counters(&self) -> PortCounters {
        self.counters
    }

    fn counters_mut(&mut self) -> &mut PortCounters {
        &mut self.counters
    }

    fn link(&self) -> LinkState {
        if self.link.orphaned() {
            LinkState::Down
        } else {
            LinkState::Up
        }
    }

    fn last_fault(&self) -> Option<&str> {
        None
    }
}
