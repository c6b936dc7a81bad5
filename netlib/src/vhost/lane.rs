// A queue pair's transmit ring polled by another thread than the one that runs its
// device: the device lends the live queue (with its memory and call fd) into a lane,
// the other thread pops bursts from it under the lane's lock, and the device's control
// path takes it back (waiting at most for one burst) whenever the ring changes.
//! Transmit rings lent to other threads.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};

use crate::mem::GuestMemory;
use crate::pool::BURST;

use super::device::MAX_QUEUE_PAIRS;
use super::engine::Burst;
use super::frame::Frames;
use super::queue::ChainFault;
use super::tx_ring;
use super::virtq::VirtQueue;

/// The transmit ring of one queue pair of a device, lent to another thread: the device
/// puts its live queue here (and takes it back on any change); the thread that holds the
/// [`LaneRx`] pops from it. Cloned, it is the same lane.
#[derive(Debug, Clone)]
pub struct Lane(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    pair: usize,
    /// A queue is in the slot (read without the lock: an idle lane costs one load).
    live: AtomicBool,
    /// The lane's thread found the ring faulty (the device resets its port).
    faulted: AtomicBool,
    /// The offload features the frontend negotiated (see [`LaneRx::offloads`]).
    offloads: AtomicU64,
    /// Frames the lane's thread popped (written by it alone).
    received: AtomicU64,
    slot: Arc<Mutex<Slot>>,
}

/// What the device lent.
#[derive(Debug, Default)]
struct Slot {
    queue: Option<VirtQueue>,
    /// The memory the queue's chains point into (kept mapped while lent).
    mem: Option<Arc<GuestMemory>>,
    /// The ring's call eventfd (a copy), to signal a frontend that sleeps.
    call: Option<OwnedFd>,
    fault: Option<ChainFault>,
}

impl Lane {
    /// A lane for the transmit ring of queue pair `pair`, 1..[`super::device::MAX_QUEUE_PAIRS`]
    /// (pair 0 is always its device's own). `None` for a pair out of range.
    pub fn new(pair: usize) -> Option<Self> {
        (1..usize::from(MAX_QUEUE_PAIRS)).contains(&pair).then(|| {
            Self(Arc::new(Shared {
                pair,
                live: AtomicBool::new(false),
                faulted: AtomicBool::new(false),
                offloads: AtomicU64::new(0),
                received: AtomicU64::new(0),
                slot: Arc::new(Mutex::new(Slot::default())),
            }))
        })
    }

    /// The queue pair whose transmit ring this is.
    pub fn pair(&self) -> usize {
        self.0.pair
    }

    /// Frames its thread received from the ring, over every queue lent to it.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }

    /// Whether a queue is lent now.
    pub fn live(&self) -> bool {
        self.0.live.load(Ordering::Relaxed)
    }

    /// Lends `queue` (of memory `mem`, call fd `call`, a frontend that negotiated the
    /// offload features `offloads`): the lane's thread pops from it next.
    pub(crate) fn put(&self, queue: VirtQueue, mem: &Arc<GuestMemory>, call: Option<&OwnedFd>, offloads: u64) {
        let mut s = self.0.slot.lock();
        self.0.offloads.store(offloads, Ordering::Relaxed);
        s.call = call.and_then(|fd| fd.try_clone().ok());
        s.mem = Some(Arc::clone(mem));
        s.queue = Some(queue);
        s.fault = None;
        self.0.live.store(true, Ordering::Release);
    }

    /// Takes the queue back (after the lane's thread released its burst), dropping the
    /// lane's hold on the memory.
    pub(crate) fn take(&self) -> Option<VirtQueue> {
        let mut s = self.0.slot.lock();
        self.0.live.store(false, Ordering::Relaxed);
        s.mem = None;
        s.call = None;
        s.queue.take()
    }

    /// Replaces the call fd of a lent queue.
    pub(crate) fn set_call(&self, call: Option<&OwnedFd>) {
        self.0.slot.lock().call = call.and_then(|fd| fd.try_clone().ok());
    }

    /// The fault the lane's thread found, once (the queue is gone from the lane then).
    pub fn take_fault(&self) -> Option<ChainFault> {
        if !self.0.faulted.swap(false, Ordering::Acquire) {
            return None;
        }
        self.0.slot.lock().fault.take()
    }
}

/// The polling end of a [`Lane`]: one burst at a time, the lane locked from
/// [`Self::pop`] to [`Self::release`] (the device's control path waits meanwhile).
pub struct LaneRx {
    lane: Lane,
    held: Option<ArcMutexGuard<RawMutex, Slot>>,
    burst: Burst,
}

impl LaneRx {
    /// Polls `lane`.
    pub fn new(lane: Lane) -> Self {
        Self { lane, held: None, burst: Burst::default() }
    }

    /// The queue pair it polls.
    pub fn pair(&self) -> usize {
        self.lane.pair()
    }

    /// Its lane.
    pub fn lane(&self) -> &Lane {
        &self.lane
    }

    /// The offload features ([`crate::vnet_hdr::OFFLOAD_FEATURES`]) the frontend of the
    /// lent ring negotiated: what its frames may ask for (as [`VhostDevice::offloads`]).
    ///
    /// [`VhostDevice::offloads`]: super::VhostDevice::offloads
    #[inline]
    pub fn offloads(&self) -> u64 {
        self.lane.0.offloads.load(Ordering::Relaxed)
    }

    /// Pops up to [`BURST`] frames; 0 when none, the lane has no queue, or its device
    /// holds it now. A faulty ring leaves the lane (its device resets the port).
    #[inline]
    pub fn pop(&mut self) -> usize {
        self.release();
        if !self.lane.live() {
            return 0;
        }
        let Some(mut slot) = Mutex::try_lock_arc(&self.lane.0.slot) else { return 0 };
        let Slot { queue: Some(q), mem: Some(mem), .. } = &mut *slot else { return 0 };
        match self.burst.pop_queue(mem, q, tx_ring(self.lane.0.pair), BURST) {
            Ok(0) => 0,
            Ok(n) => {
                self.held = Some(slot);
                let r = &self.lane.0.received;
                r.store(r.load(Ordering::Relaxed) + n as u64, Ordering::Relaxed);
                n
            }
            Err(f) => {
                self.burst.forget();
                slot.queue = None;
                slot.mem = None;
                slot.fault = Some(f);
                self.lane.0.live.store(false, Ordering::Relaxed);
                self.lane.0.faulted.store(true, Ordering::Release);
                0
            }
        }
    }

    /// The frames of the burst [`Self::pop`] took.
    #[inline]
    pub fn frames(&self) -> Frames<'_> {
        match self.held.as_deref() {
            Some(Slot { mem: Some(mem), .. }) => self.burst.frames(mem),
            _ => Frames::EMPTY,
        }
    }

    /// Returns the burst's chains to the frontend (signalling it if it sleeps) and
    /// unlocks the lane.
    #[inline]
    pub fn release(&mut self) {
        let Some(mut slot) = self.held.take() else { return };
        let Slot { queue: Some(q), call, .. } = &mut *slot else {
            self.burst.forget();
            return;
        };
        if self.burst.release_queue(q) {
            std::sync::atomic::fence(Ordering::SeqCst);
            if q.wants_signal() {
                if let Some(fd) = call {
                    let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
                }
            }
        }
    }
}

impl std::fmt::Debug for LaneRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneRx")
            .field("pair", &self.pair())
            .field("in_burst", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for LaneRx {
    fn drop(&mut self) {
        self.release();
    }
}

/// Where a vring's live queue is: nowhere (not live), in its device, or lent to a lane.
#[derive(Debug, Default)]
pub(crate) enum Held {
    /// Not live.
    #[default]
    Empty,
    /// Live, polled by the device's thread.
    Here(VirtQueue),
    /// Live, lent to this lane's thread.
    Lent(LentTo),
}

impl Held {
    /// Whether the vring is live (wherever its queue is).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        !matches!(self, Self::Empty)
    }

    /// The queue, when the device's thread polls it.
    #[inline]
    pub(crate) fn here(&self) -> Option<&VirtQueue> {
        match self {
            Self::Here(q) => Some(q),
            _ => None,
        }
    }

    /// The queue, when the device's thread polls it.
    #[inline]
    pub(crate) fn here_mut(&mut self) -> Option<&mut VirtQueue> {
        match self {
            Self::Here(q) => Some(q),
            _ => None,
        }
    }

    /// Takes the queue, from the lane if it is lent (waiting for the lane's burst).
    pub(crate) fn take(&mut self) -> Option<VirtQueue> {
        match std::mem::take(self) {
            Self::Empty => None,
            Self::Here(q) => Some(q),
            Self::Lent(l) => l.0.take(),
        }
    }

    /// Stops the vring (its queue dropped, wherever it was).
    pub(crate) fn clear(&mut self) {
        drop(self.take());
    }

    /// Makes `q` the live queue: lent to `lane` if there is one, else the device's.
    pub(crate) fn set(
        &mut self,
        q: VirtQueue,
        lane: Option<&Lane>,
        mem: &Arc<GuestMemory>,
        call: Option<&OwnedFd>,
        offloads: u64,
    ) {
        self.clear();
        *self = match lane {
            Some(l) => {
                l.put(q, mem, call, offloads);
                Self::Lent(LentTo(l.clone()))
            }
            None => Self::Here(q),
        };
    }

    /// The vring's call fd changed: a lent queue's lane gets the new one.
    pub(crate) fn call_changed(&self, call: Option<&OwnedFd>) {
        if let Self::Lent(l) = self {
            l.0.set_call(call);
        }
    }
}

/// A lane holding a device's queue: dropped (with its device, or its vring stopped), it
/// takes the queue back and drops it.
#[derive(Debug)]
pub(crate) struct LentTo(Lane);

impl Drop for LentTo {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}
