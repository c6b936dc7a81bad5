// The device side's burst, written once for every vhost-user backend (netlib's
// Port and the switch's ports): pop chains in place with their lines prefetched,
// hand them out as frames, return them; fill receive buffers, publish, notify.
//! The data-path engine of the device side.

use crate::mem::GuestMemory;
use crate::pool::BURST;
use crate::port::PortCounters;
use crate::spec::NET_HDR_LEN;

use super::device::VhostDevice;
use super::frame::{Frame, Frames};
use super::queue::{Chain, ChainFault};
use super::{GUEST_RX, GUEST_TX, RX_NET_HDR};

/// The chains of one burst from a frontend's transmit ring, walked in place (a
/// chain is a few hundred bytes: it is never moved per packet).
#[derive(Debug)]
pub struct Burst {
    chains: Box<[Chain; BURST]>,
    n: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self { chains: Box::new([Chain::empty(0); BURST]), n: 0 }
    }
}

impl Burst {
    /// Pops up to `max` (at most [`BURST`]) chains from the frontend's transmit ring:
    /// starts loading every descriptor of the burst, then walks each chain and starts
    /// loading its frame's first line, so that later reads find their lines arriving.
    /// On a fault the chains popped so far stay in the burst (the port is reset anyway).
    #[inline]
    pub fn pop(&mut self, dev: &mut VhostDevice, max: usize) -> Result<usize, ChainFault> {
        self.n = 0;
        let (mem, q) = dev.mem_and_queue(GUEST_TX);
        // A frontend that never sends may leave its transmit ring unstarted.
        let Some(q) = q else { return Ok(0) };
        let n = (q.available()? as usize).min(max).min(BURST);
        if n == 0 {
            return Ok(0);
        }
        q.prefetch(n as u16);
        for c in &mut self.chains[..n] {
            q.pop_into(mem, false, c)?;
            self.n += 1;
            if let Some(s) = c.segs().first() {
                s.prefetch_at(NET_HDR_LEN);
            }
        }
        Ok(n)
    }

    /// Chains in the burst.
    #[inline]
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the burst is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The burst's frames, in `mem` (the memory of the device they were popped from).
    #[inline]
    pub fn frames<'a>(&'a self, mem: &'a GuestMemory) -> Frames<'a> {
        Frames::Guest { mem, chains: &self.chains[..self.n], skip: NET_HDR_LEN }
    }

    /// Returns every chain of the burst to the frontend (used, length 0), publishes
    /// them, and signals the frontend if it sleeps. The burst is empty afterwards.
    #[inline]
    pub fn release(&mut self, dev: &mut VhostDevice) {
        if self.n == 0 {
            return;
        }
        if let Some(q) = dev.queue(GUEST_TX) {
            for c in &self.chains[..self.n] {
                q.push_used(c.head, 0);
            }
            q.publish();
        }
        dev.notify(GUEST_TX);
        self.n = 0;
    }
}

/// Copies frames into a frontend's receive buffers.
#[derive(Debug)]
pub struct Filler {
    chains: Box<[Chain; BURST]>,
}

impl Default for Filler {
    fn default() -> Self {
        Self { chains: Box::new([Chain::empty(0); BURST]) }
    }
}

impl Filler {
    /// Copies the frames `frame(0)..frame(n)` into the frontend's receive ring: reads
    /// how many buffers it offers once, walks a batch of chains first (starting the
    /// loads of their header lines, and of their data lines for writing), then copies;
    /// publishes what it wrote and signals the frontend if it sleeps. Counts what it
    /// sends in `c`, and a frame too big for its buffer as dropped (`drop_too_big`).
    /// Returns how many frames it took (sent or dropped), even when the ring faulted
    /// part way (the fault comes second): the frames after those found no buffer, and
    /// are the caller's to keep or count.
    #[inline]
    pub fn fill<'f>(
        &mut self,
        dev: &mut VhostDevice,
        n: usize,
        frame: impl Fn(usize) -> Frame<'f>,
        c: &mut PortCounters,
    ) -> (usize, Result<(), ChainFault>) {
        let (mem, q) = dev.mem_and_queue(GUEST_RX);
        let Some(q) = q else { return (0, Ok(())) };
        let n = match q.available() {
            Ok(a) => n.min(a as usize),
            Err(f) => return (0, Err(f)),
        };
        if n == 0 {
            return (0, Ok(()));
        }
        q.prefetch(n.min(BURST) as u16);
        let mut taken = 0;
        let mut res = Ok(());
        while taken < n && res.is_ok() {
            let k = (n - taken).min(BURST);
            let mut popped = 0;
            for ch in &mut self.chains[..k] {
                if let Err(f) = q.pop_into(mem, true, ch) {
                    res = Err(f);
                    break;
                }
                if let Some(s) = ch.segs().first() {
                    s.prefetch_at(0);
                    s.prefetch_write_at(NET_HDR_LEN);
                }
                popped += 1;
            }
            for ch in &self.chains[..popped] {
                if let Some(len) = frame(taken).write_to(mem, ch, &RX_NET_HDR) {
                    q.push_used(ch.head, len);
                    c.tx_packets += 1;
                    c.tx_bytes += u64::from(len - NET_HDR_LEN);
                } else {
                    q.push_used(ch.head, 0);
                    c.tx_dropped += 1;
                    c.drop_too_big += 1;
                }
                taken += 1;
            }
        }
        q.publish();
        dev.notify(GUEST_RX);
        (taken, res)
    }
}
