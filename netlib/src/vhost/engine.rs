// The device side's burst, written once for every vhost-user backend (netlib's
// Port and the switch's ports): pop chains in place with their lines prefetched,
// hand them out as frames, return them; fill receive buffers, publish, notify.
//! The data-path engine of the device side.

use crate::mem::GuestMemory;
use crate::pool::BURST;
use crate::port::PortCounters;
use crate::spec::{NET_HDR_LEN, NUM_BUFFERS_AT};

use super::device::VhostDevice;
use super::frame::{Frame, Frames};
use super::queue::{Chain, ChainFault, MAX_SEGS};
use super::virtq::{RingQueue, VirtQueue};
use super::{rx_ring, tx_ring, GUEST_TX, RX_NET_HDR};

/// The chains of one burst from a frontend's transmit ring, walked in place (a
/// chain is a few hundred bytes: it is never moved per packet).
#[derive(Debug)]
pub struct Burst {
    chains: Box<[Chain; BURST]>,
    n: usize,
    /// The transmit vring the burst came from.
    ring: usize,
    /// The queue pair the next pop looks at first (several pairs take turns).
    next_pair: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self { chains: Box::new([Chain::empty(0); BURST]), n: 0, ring: GUEST_TX, next_pair: 0 }
    }
}

impl Burst {
    /// Pops up to `max` (at most [`BURST`]) chains from the frontend's transmit ring:
    /// starts loading every descriptor of the burst, then walks each chain and starts
    /// loading its frame's first line, so that later reads find their lines arriving.
    /// On a fault the chains popped so far stay in the burst (the port is reset anyway).
    /// With several queue pairs live, the pairs' transmit rings take turns: each pop
    /// starts at the pair after the one the last burst came from, and takes its burst
    /// from the first ring with frames (a burst is always from one ring, see
    /// [`Self::pair`]).
    #[inline]
    pub fn pop(&mut self, dev: &mut VhostDevice, max: usize) -> Result<usize, ChainFault> {
        self.n = 0;
        let pairs = dev.pairs();
        if pairs <= 1 {
            self.ring = GUEST_TX;
            return self.pop_ring(dev, max);
        }
        for k in 0..pairs {
            let pair = (self.next_pair + k) % pairs;
            self.ring = tx_ring(pair);
            let n = self.pop_ring(dev, max)?;
            if n > 0 {
                self.next_pair = pair + 1;
                return Ok(n);
            }
        }
        Ok(0)
    }

    /// [`Self::pop`] from the transmit vring `self.ring`.
    #[inline]
    fn pop_ring(&mut self, dev: &mut VhostDevice, max: usize) -> Result<usize, ChainFault> {
        let (mem, q) = dev.mem_and_queue(self.ring);
        // A frontend that never sends may leave its transmit ring unstarted.
        match q {
            None => Ok(0),
            Some(VirtQueue::Split(q)) => self.pop_from(mem, q, max),
            Some(VirtQueue::Packed(q)) => self.pop_from(mem, q, max),
        }
    }

    /// [`Self::pop`] from one transmit queue held apart from its device (a lent
    /// [`super::lane::Lane`]'s), vring `ring`, in `mem`.
    #[inline]
    pub(crate) fn pop_queue(
        &mut self,
        mem: &GuestMemory,
        q: &mut VirtQueue,
        ring: usize,
        max: usize,
    ) -> Result<usize, ChainFault> {
        self.n = 0;
        self.ring = ring;
        match q {
            VirtQueue::Split(q) => self.pop_from(mem, q, max),
            VirtQueue::Packed(q) => self.pop_from(mem, q, max),
        }
    }

    /// [`Self::release`] to one queue held apart from its device; returns whether
    /// chains went back (the caller signals the frontend).
    #[inline]
    pub(crate) fn release_queue(&mut self, q: &mut VirtQueue) -> bool {
        if self.n == 0 {
            return false;
        }
        let used = &self.chains[..self.n];
        match q {
            VirtQueue::Split(q) => release_to(q, used),
            VirtQueue::Packed(q) => release_to(q, used),
        }
        self.n = 0;
        true
    }

    /// Forgets the burst's chains without returning them (their queue went away).
    #[inline]
    pub(crate) fn forget(&mut self) {
        self.n = 0;
    }

    /// The queue pair the burst came from.
    #[inline]
    pub fn pair(&self) -> usize {
        self.ring / 2
    }

    /// [`Self::pop`] on one queue of either layout.
    #[inline]
    fn pop_from(&mut self, mem: &GuestMemory, q: &mut impl RingQueue, max: usize) -> Result<usize, ChainFault> {
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
        let used = &self.chains[..self.n];
        match dev.queue(self.ring) {
            Some(VirtQueue::Split(q)) => release_to(q, used),
            Some(VirtQueue::Packed(q)) => release_to(q, used),
            None => {}
        }
        dev.notify(self.ring);
        self.n = 0;
    }
}

/// Returns `chains` to `q` used (length 0) and publishes them.
#[inline]
fn release_to(q: &mut impl RingQueue, chains: &[Chain]) {
    for c in chains {
        q.put_used(c, 0);
    }
    q.publish();
}

/// Copies frames into a frontend's receive buffers.
#[derive(Debug)]
pub struct Filler {
    chains: Box<[Chain; BURST]>,
    /// The receive chains one merged frame spans (VIRTIO_NET_F_MRG_RXBUF).
    merged: Box<[Chain; MAX_SEGS]>,
}

impl Default for Filler {
    fn default() -> Self {
        Self { chains: Box::new([Chain::empty(0); BURST]), merged: Box::new([Chain::empty(0); MAX_SEGS]) }
    }
}

/// What became of a frame too big for one receive chain, with buffers merged.
enum Merge {
    /// Written whole, this many bytes in all (its header included).
    Sent(u32),
    /// The ring has too few chains for it now: none taken, the frame waits.
    Short,
    /// Its chains would have more than [`MAX_SEGS`] segments (or could not be written):
    /// none taken, the frame is dropped.
    TooBig,
}

impl Filler {
    /// Copies the frames `frame(0)..frame(n)` into the frontend's receive ring: reads
    /// how many buffers it offers once, walks a batch of chains first (starting the
    /// loads of their header lines, and of their data lines for writing), then copies;
    /// publishes what it wrote and signals the frontend if it sleeps. Counts what it
    /// sends in `c`, and a frame too big for its buffer as dropped (`drop_too_big`).
    /// With VIRTIO_NET_F_MRG_RXBUF a frame longer than one chain is written across as
    /// many as it needs (see [`Self::fill_queue`]).
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
        self.fill_pair(dev, 0, n, frame, c)
    }

    /// [`Self::fill`] into the receive ring of queue pair `pair` (nothing taken if that
    /// ring is not live).
    #[inline]
    pub fn fill_pair<'f>(
        &mut self,
        dev: &mut VhostDevice,
        pair: usize,
        n: usize,
        frame: impl Fn(usize) -> Frame<'f>,
        c: &mut PortCounters,
    ) -> (usize, Result<(), ChainFault>) {
        let merge = dev.mrg_rxbuf();
        let ring = rx_ring(pair);
        let (mem, q) = dev.mem_and_queue(ring);
        let (taken, res) = match q {
            None => return (0, Ok(())),
            Some(VirtQueue::Split(q)) => self.fill_queue(mem, q, merge, n, frame, c),
            Some(VirtQueue::Packed(q)) => self.fill_queue(mem, q, merge, n, frame, c),
        };
        if taken > 0 {
            dev.notify(ring);
        }
        (taken, res)
    }

    /// [`Self::fill`] on one queue, publishing what it wrote; `merge`: receive buffers
    /// are merged. A frame that does not fit its chain is then written across the chains
    /// after it too, `num_buffers` in its first header, one used entry per chain; all or
    /// nothing: if the ring has too few chains for it, none is taken and the fill stops
    /// there (the frame and those after it are the caller's), and if the chains would
    /// have more than [`MAX_SEGS`] segments in all, none is taken and the frame is
    /// dropped (`drop_too_big`). A frame is never truncated.
    #[inline]
    pub fn fill_queue<'f>(
        &mut self,
        mem: &GuestMemory,
        q: &mut impl RingQueue,
        merge: bool,
        n: usize,
        frame: impl Fn(usize) -> Frame<'f>,
        counters: &mut PortCounters,
    ) -> (usize, Result<(), ChainFault>) {
        let mut taken = 0;
        let mut res = Ok(());
        let mut short = false;
        let mut first = true;
        while taken < n && res.is_ok() && !short {
            let batch = match q.available() {
                Ok(a) => (n - taken).min(a as usize).min(BURST),
                Err(fault) => {
                    res = Err(fault);
                    break;
                }
            };
            if batch == 0 {
                break;
            }
            if first {
                q.prefetch(batch as u16);
                first = false;
            }
            let mut popped = 0;
            for ch in &mut self.chains[..batch] {
                if let Err(fault) = q.pop_into(mem, true, ch) {
                    res = Err(fault);
                    break;
                }
                if let Some(s) = ch.segs().first() {
                    s.prefetch_at(0);
                    s.prefetch_write_at(NET_HDR_LEN);
                }
                popped += 1;
            }
            let mut ci = 0;
            while ci < popped {
                let (f, ch) = (frame(taken), &self.chains[ci]);
                if let Some(len) = f.write_to(mem, ch, &RX_NET_HDR) {
                    q.put_used(ch, len);
                    counters.tx_packets += 1;
                    counters.tx_bytes += u64::from(len - NET_HDR_LEN);
                } else if merge && u64::from(f.len()) + u64::from(NET_HDR_LEN) > u64::from(ch.total) {
                    // The chains after this one are the frame's too: walk them again.
                    q.give_back(&self.chains[ci..popped]);
                    match merge_into(&mut self.merged, mem, q, f, &RX_NET_HDR) {
                        Ok(Merge::Sent(len)) => {
                            counters.tx_packets += 1;
                            counters.tx_bytes += u64::from(len - NET_HDR_LEN);
                        }
                        Ok(Merge::Short) => short = true,
                        Ok(Merge::TooBig) => {
                            counters.tx_dropped += 1;
                            counters.drop_too_big += 1;
                        }
                        Err(e) => res = Err(e),
                    }
                    if !short {
                        taken += 1;
                    }
                    break;
                } else {
                    q.put_used(ch, 0);
                    counters.tx_dropped += 1;
                    counters.drop_too_big += 1;
                }
                taken += 1;
                ci += 1;
            }
        }
        if taken > 0 {
            q.publish();
        }
        (taken, res)
    }

    /// Copies one frame into the frontend's receive ring with `hdr` in front of it: the
    /// virtio-net header an offloading sender's frame asks of a frontend that negotiated
    /// the same offloads (see [`super::offload`]), `num_buffers` 1. A frame longer than a
    /// chain is merged across chains as [`Self::fill_queue`] does (its `num_buffers` set),
    /// never truncated; one too big even so is dropped and counted (`drop_too_big`).
    /// Publishes and signals as [`Self::fill`]. Returns whether the frame was taken
    /// (sent or dropped): false when the ring has no room for it now.
    /// `pair`: the queue pair whose receive ring takes it.
    pub fn fill_with_header(
        &mut self,
        dev: &mut VhostDevice,
        pair: usize,
        hdr: &[u8; NET_HDR_LEN as usize],
        f: Frame<'_>,
        c: &mut PortCounters,
    ) -> (bool, Result<(), ChainFault>) {
        let merge = dev.mrg_rxbuf();
        let ring = rx_ring(pair);
        let (mem, q) = dev.mem_and_queue(ring);
        let res = match q {
            None => return (false, Ok(())),
            Some(VirtQueue::Split(q)) => self.fill_one(mem, q, merge, hdr, f, c),
            Some(VirtQueue::Packed(q)) => self.fill_one(mem, q, merge, hdr, f, c),
        };
        let taken = matches!(res, Ok(true));
        if taken {
            dev.notify(ring);
        }
        (taken, res.map(|_| ()))
    }

    /// [`Self::fill_with_header`] on one queue, publishing what it wrote: whether the
    /// frame was taken.
    fn fill_one(
        &mut self,
        mem: &GuestMemory,
        q: &mut impl RingQueue,
        merge: bool,
        hdr: &[u8; NET_HDR_LEN as usize],
        f: Frame<'_>,
        c: &mut PortCounters,
    ) -> Result<bool, ChainFault> {
        let res = (|| {
            if q.available()? == 0 {
                return Ok(false);
            }
            let ch = &mut self.chains[0];
            q.pop_into(mem, true, ch)?;
            if let Some(len) = f.write_to(mem, ch, hdr) {
                q.put_used(ch, len);
                c.tx_packets += 1;
                c.tx_bytes += u64::from(len - NET_HDR_LEN);
                return Ok(true);
            }
            if merge && u64::from(f.len()) + u64::from(NET_HDR_LEN) > u64::from(ch.total) {
                q.give_back(&self.chains[..1]);
                match merge_into(&mut self.merged, mem, q, f, hdr)? {
                    Merge::Sent(len) => {
                        c.tx_packets += 1;
                        c.tx_bytes += u64::from(len - NET_HDR_LEN);
                    }
                    Merge::Short => return Ok(false),
                    Merge::TooBig => {
                        c.tx_dropped += 1;
                        c.drop_too_big += 1;
                    }
                }
                return Ok(true);
            }
            q.put_used(ch, 0);
            c.tx_dropped += 1;
            c.drop_too_big += 1;
            Ok(true)
        })();
        q.publish();
        res
    }
}

/// Writes `f` across as many of `q`'s next chains as it needs (walked into `merged`),
/// `first_hdr` with its `num_buffers` set in front; takes none of them unless it is
/// written whole.
fn merge_into(
    merged: &mut [Chain; MAX_SEGS],
    mem: &GuestMemory,
    q: &mut impl RingQueue,
    f: Frame<'_>,
    first_hdr: &[u8; NET_HDR_LEN as usize],
) -> Result<Merge, ChainFault> {
    let need = u64::from(f.len()) + u64::from(NET_HDR_LEN);
    let mut all = Chain::empty(0);
    let mut got = 0u64;
    let mut k = 0usize;
    let verdict = loop {
        if got >= need {
            break None;
        }
        if k == MAX_SEGS {
            break Some(Merge::TooBig);
        }
        if q.available()? == 0 {
            break Some(Merge::Short);
        }
        q.pop_into(mem, true, &mut merged[k])?;
        let ch = &merged[k];
        k += 1;
        let at = all.nsegs as usize;
        let Some(to) = all.segs.get_mut(at..at + ch.nsegs as usize) else { break Some(Merge::TooBig) };
        to.copy_from_slice(ch.segs());
        all.nsegs += ch.nsegs;
        got += u64::from(ch.total);
    };
    if let Some(v) = verdict {
        q.give_back(&merged[..k]);
        return Ok(v);
    }
    all.total = got.min(u64::from(u32::MAX)) as u32;
    let mut hdr = *first_hdr;
    hdr[NUM_BUFFERS_AT..NUM_BUFFERS_AT + 2].copy_from_slice(&(k as u16).to_le_bytes());
    let Some(len) = f.write_to(mem, &all, &hdr) else {
        q.give_back(&merged[..k]);
        return Ok(Merge::TooBig);
    };
    let mut left = len;
    for ch in &merged[..k] {
        let l = left.min(ch.total);
        q.put_used(ch, l);
        left -= l;
    }
    Ok(Merge::Sent(len))
}
