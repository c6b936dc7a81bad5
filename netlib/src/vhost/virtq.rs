// What the data path asks of a device-side virtqueue, split or packed: the trait
// the engine is written against, and the enum a device holds.
//! Device-side virtqueues of either layout.

use crate::mem::GuestMemory;
use crate::spec::{
    RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY,
};

use super::packed::PackedQueue;
use super::queue::{Chain, ChainFault, DeviceQueue};

/// A device-side virtqueue as the engine uses it: chains popped in order, used in
/// the order popped, published in batches.
pub trait RingQueue {
    /// How many chains are available (at least; a packed ring counts a burst's worth).
    fn available(&self) -> Result<u16, ChainFault>;
    /// Starts loading the descriptors of the next `n` chains (a hint).
    fn prefetch(&self, n: u16);
    /// Takes the next available chain and walks it into `chain`; `writable`: the
    /// device writes its buffers.
    fn pop_into(&mut self, mem: &GuestMemory, writable: bool, chain: &mut Chain) -> Result<(), ChainFault>;
    /// Gives back `chains`, the last ones popped and not used: the next pops walk them again.
    fn give_back(&mut self, chains: &[Chain]);
    /// Returns `chain` used, `len` bytes written (not yet published).
    fn put_used(&mut self, chain: &Chain, len: u32);
    /// Publishes what [`Self::put_used`] wrote.
    fn publish(&mut self);
}

impl RingQueue for DeviceQueue {
    #[inline]
    fn available(&self) -> Result<u16, ChainFault> {
        DeviceQueue::available(self)
    }
    #[inline]
    fn prefetch(&self, n: u16) {
        DeviceQueue::prefetch(self, n);
    }
    #[inline]
    fn pop_into(&mut self, mem: &GuestMemory, writable: bool, chain: &mut Chain) -> Result<(), ChainFault> {
        DeviceQueue::pop_into(self, mem, writable, chain)
    }
    #[inline]
    fn give_back(&mut self, chains: &[Chain]) {
        self.unpop(chains.len() as u16);
    }
    #[inline]
    fn put_used(&mut self, chain: &Chain, len: u32) {
        self.push_used(chain.head, len);
    }
    #[inline]
    fn publish(&mut self) {
        DeviceQueue::publish(self);
    }
}

/// A live queue of a device, in the layout its frontend negotiated.
#[derive(Debug)]
pub enum VirtQueue {
    /// A split ring.
    Split(DeviceQueue),
    /// A packed ring (VIRTIO_F_RING_PACKED).
    Packed(PackedQueue),
}

impl VirtQueue {
    /// How many chains are available (see [`RingQueue::available`]).
    #[inline]
    pub fn available(&self) -> Result<u16, ChainFault> {
        match self {
            VirtQueue::Split(q) => q.available(),
            VirtQueue::Packed(q) => q.available(),
        }
    }

    /// Where the frontend resumes: GET_VRING_BASE's value (a packed ring's wrap counter
    /// in bit 15).
    pub fn base(&self) -> u32 {
        match self {
            VirtQueue::Split(q) => u32::from(q.last_avail),
            VirtQueue::Packed(q) => q.base(),
        }
    }

    /// Whether the frontend wants to be signalled when buffers are used.
    #[inline]
    pub fn wants_signal(&self) -> bool {
        match self {
            VirtQueue::Split(q) => q.ring.avail_flags() & VRING_AVAIL_F_NO_INTERRUPT == 0,
            VirtQueue::Packed(q) => q.ring.driver_event_flags() != RING_EVENT_FLAGS_DISABLE,
        }
    }

    /// Asks the frontend to kick when it adds buffers (`true`) or not to (`false`).
    pub fn set_kicks(&self, on: bool) {
        match self {
            VirtQueue::Split(q) => q.ring.set_used_flags(if on { 0 } else { VRING_USED_F_NO_NOTIFY }),
            VirtQueue::Packed(q) => {
                q.ring.set_device_event_flags(if on { RING_EVENT_FLAGS_ENABLE } else { RING_EVENT_FLAGS_DISABLE });
            }
        }
    }
}
