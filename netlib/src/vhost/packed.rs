// The device side of one packed virtqueue (VIRTIO_F_RING_PACKED): walks the
// frontend's descriptors by the wrap-counter rules and writes used ones in order.
//! Device-side packed virtqueue processing with validated descriptor chains.
//!
//! One ring of descriptors that both sides write. A descriptor is available when
//! its AVAIL bit equals the driver's wrap counter and its USED bit does not; the
//! device marks it used by setting both bits to its own wrap counter. Each counter
//! flips when its side's position wraps past the ring's end. We consume chains in
//! order and write used descriptors where their chains started, one per chain, the
//! first of a batch's flags stored last so that the driver sees the batch at once.
//!
//! With VIRTIO_F_IN_ORDER, a ring we only read (a transmit ring: the used lengths mean
//! nothing) gets one used descriptor per published batch, as the spec allows: written
//! at the batch's first slot with the buffer id of its last chain; the driver frees
//! every buffer up to that one and skips ahead. One line written per burst instead of
//! one per four frames, and the driver reads one.

use crate::mem::GuestMemory;
use crate::pool::BURST;
use crate::ring::PackedDeviceRing;
use crate::spec::{
    PACKED_BASE_WRAP, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_PACKED_DESC_F_AVAIL,
    VRING_PACKED_DESC_F_USED,
};

use super::queue::{Chain, ChainFault, IndirectTable, MAX_CHAIN_DESCS};
use super::virtq::RingQueue;

/// Whether a descriptor with `flags` is available to a device whose driver-side wrap
/// counter is `wrap`.
#[inline(always)]
fn is_avail(flags: u16, wrap: bool) -> bool {
    (flags & VRING_PACKED_DESC_F_AVAIL != 0) == wrap && (flags & VRING_PACKED_DESC_F_USED != 0) != wrap
}

/// A ring position and its wrap counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    pos: u16,
    wrap: bool,
}

impl Cursor {
    /// `n` slots on (at most a ring's worth), in a ring of `size`.
    #[inline(always)]
    fn ahead(self, n: u16, size: u16) -> Self {
        let p = u32::from(self.pos) + u32::from(n);
        if p >= u32::from(size) {
            Self { pos: (p - u32::from(size)) as u16, wrap: !self.wrap }
        } else {
            Self { pos: p as u16, wrap: self.wrap }
        }
    }

    /// `n` slots back (at most a ring's worth), in a ring of `size`.
    #[inline(always)]
    fn back(self, n: u16, size: u16) -> Self {
        if n > self.pos {
            Self { pos: (u32::from(self.pos) + u32::from(size) - u32::from(n)) as u16, wrap: !self.wrap }
        } else {
            Self { pos: self.pos - n, wrap: self.wrap }
        }
    }

    /// The SET/GET_VRING_BASE value: the position, the wrap counter in bit 15.
    fn base(self) -> u32 {
        u32::from(self.pos) | if self.wrap { PACKED_BASE_WRAP } else { 0 }
    }
}

/// One device-side packed queue: the ring plus our avail and used cursors.
#[derive(Debug)]
pub struct PackedQueue {
    /// The ring (its pointers resolved once).
    pub ring: PackedDeviceRing,
    /// Next descriptor to take, and the driver's wrap counter there.
    avail: Cursor,
    /// Next slot to write a used descriptor into, and our wrap counter.
    used: Cursor,
    /// Most bytes a chain the device reads may carry.
    max_read: u32,
    /// The first used descriptor written and not published: its slot and flags.
    pending: Option<(u16, u16)>,
    /// Whether the frontend may use indirect tables (VIRTIO_RING_F_INDIRECT_DESC).
    indirect: bool,
    /// One used descriptor per published batch (IN_ORDER, a ring we only read).
    batched: bool,
    /// In a batched ring, the buffer id of the last chain used and not published.
    batch_last: u16,
}

impl PackedQueue {
    /// A queue resuming at `base` (SET_VRING_BASE): the avail position in bits 0 to 14
    /// and the driver's wrap counter in bit 15; the used position and our wrap counter in
    /// bits 16 to 30 and 31, as QEMU sends them (or none: 0 there, as DPDK's virtio-user
    /// and older frontends send, and used resumes where avail does). Taking readable
    /// chains of up to `max_read` bytes. `None` if a position is past the ring.
    pub fn new(ring: PackedDeviceRing, base: u32, max_read: u32) -> Option<Self> {
        let size = u32::from(ring.size());
        let cursor = |half: u32| {
            let pos = half & (PACKED_BASE_WRAP - 1);
            (pos < size).then_some(Cursor { pos: pos as u16, wrap: half & PACKED_BASE_WRAP != 0 })
        };
        let avail = cursor(base & 0xffff)?;
        let used = if base >> 16 == 0 { avail } else { cursor(base >> 16)? };
        Some(Self { ring, avail, used, max_read, pending: None, indirect: false, batched: false, batch_last: 0 })
    }

    /// The same queue, taking indirect tables if `on` (VIRTIO_RING_F_INDIRECT_DESC was
    /// negotiated).
    #[must_use]
    pub fn with_indirect(self, on: bool) -> Self {
        Self { indirect: on, ..self }
    }

    /// The same queue, writing one used descriptor per published batch if `on`: only
    /// for a ring whose used lengths mean nothing (a transmit ring, which the device
    /// reads) with VIRTIO_F_IN_ORDER negotiated. The slots it skips keep the flags the
    /// driver gave them, so [`Self::resume_where_the_ring_says`] cannot read such a ring
    /// (a frontend that resets its rings when it reconnects, as netlib's and DPDK's
    /// virtio-user do, needs it not).
    #[must_use]
    pub fn with_batched_used(self, on: bool) -> Self {
        Self { batched: on, ..self }
    }

    /// Walks the indirect table that descriptor `index` (`addr`, `len`, `flags`) points
    /// to as the rest of `chain`: not continued (NEXT), inside the frontend's memory, a
    /// whole number of 16-byte packed descriptors and no more than the ring has, none of
    /// them indirect itself; every entry is a segment, in order (a packed table has no
    /// `next` fields).
    #[cold]
    fn walk_indirect(
        &self,
        mem: &GuestMemory,
        writable: bool,
        index: u16,
        (addr, len, flags): (u64, u32, u16),
        chain: &mut Chain,
    ) -> Result<(), ChainFault> {
        if !self.indirect {
            return Err(ChainFault::Indirect { index });
        }
        let table = IndirectTable::check(mem, index, (addr, len, flags), self.ring.size().min(MAX_CHAIN_DESCS))?;
        for at in 0..table.entries {
            let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, _, _, f0, f1] = table.entry(mem, at)?;
            let e_flags = u16::from_le_bytes([f0, f1]);
            if e_flags & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainFault::NestedIndirect { index, entry: at });
            }
            let e_addr = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
            let e_len = u32::from_le_bytes([l0, l1, l2, l3]);
            // DPDK's virtio driver presets every entry of its packed transmit tables with
            // WRITE (vring_desc_init_indirect_packed) and leaves it on the header's entry;
            // DPDK's vhost never checks. Reading a buffer the frontend marked writable
            // reads nothing but its own memory, so a readable chain's entries are taken
            // whatever their WRITE bit says; a writable chain's must all have it.
            let e_flags = if writable { e_flags } else { e_flags & !VRING_DESC_F_WRITE };
            chain.add(mem, writable, self.max_read, at, e_addr, e_len, e_flags & !VRING_DESC_F_NEXT)?;
        }
        Ok(())
    }

    /// Where the frontend resumes (GET_VRING_BASE): our avail position and its wrap
    /// counter in bit 15, our used position and wrap counter in bits 16 to 31 (as
    /// QEMU's `virtio_queue_set_last_avail_idx` reads them back).
    pub fn base(&self) -> u32 {
        self.avail.base() | self.used.base() << 16
    }

    /// Moves both cursors to where the ring itself says the driver is, and returns the
    /// new base if that is not where the base put them. A packed ring has no index in
    /// shared memory: when the previous backend died, QEMU could not ask it where it
    /// stopped (GET_VRING_BASE) and sends the base it had before, which the driver has
    /// long passed (`virtio_queue_packed_restore_last_avail_idx` is a no-op). The ring's
    /// flags say it instead: the oldest available descriptor is the one whose
    /// predecessor is not available in the same lap (the driver makes them available in
    /// order, and we take and use them in order, marking every slot of a chain used, not
    /// just its first); with none available, the driver's next
    /// slot is where the used descriptors' lap changes (or 0, in the next lap, if the
    /// whole ring is of one). One pass over the flags; what a lying frontend gets out of
    /// it is a wrong position in its own ring.
    pub fn resume_where_the_ring_says(&mut self) -> Option<u32> {
        let size = self.ring.size();
        let flags = |i: u16| self.ring.flags(i);
        let avail_bit = |f: u16| f & VRING_PACKED_DESC_F_AVAIL != 0;
        let used_bit = |f: u16| f & VRING_PACKED_DESC_F_USED != 0;
        let is_available = |f: u16| avail_bit(f) != used_bit(f);
        let mut found: Option<Cursor> = None;
        let mut any_available = false;
        for i in 0..size {
            let f = flags(i);
            if !is_available(f) {
                continue;
            }
            any_available = true;
            let w = avail_bit(f);
            let prev = flags(if i == 0 { size - 1 } else { i - 1 });
            // The predecessor in the driver's order: the slot before, in the same lap, or
            // the ring's last slot, in the lap before.
            let continues = is_available(prev) && avail_bit(prev) == if i == 0 { !w } else { w };
            if !continues {
                found = Some(Cursor { pos: i, wrap: w });
                break;
            }
        }
        let at = match found {
            Some(c) => c,
            // Available everywhere and every slot continues its predecessor: only a lying
            // ring; stay where the base says.
            None if any_available => return None,
            None => {
                let first = used_bit(flags(0));
                match (1..size).find(|&i| used_bit(flags(i)) != first) {
                    Some(i) => Cursor { pos: i, wrap: first },
                    None => Cursor { pos: 0, wrap: !first },
                }
            }
        };
        if at == self.avail && at == self.used {
            return None;
        }
        self.avail = at;
        self.used = at;
        Some(self.base())
    }

    /// Our avail position and the driver's wrap counter there (a base's lower half).
    pub fn avail_base(&self) -> u32 {
        self.avail.base()
    }

    /// The next used slot and our wrap counter there (as a base value).
    pub fn used_base(&self) -> u32 {
        self.used.base()
    }
}

impl RingQueue for PackedQueue {
    /// Chains available from our position, counted up to a burst's worth: a chain
    /// whose head is available and a later descriptor is not is a fault (the driver
    /// makes a chain's head available last).
    #[inline]
    fn available(&self) -> Result<u16, ChainFault> {
        let size = self.ring.size();
        let (mut at, mut chains, mut descs, mut in_chain) = (self.avail, 0u16, 0u16, false);
        while (chains as usize) < BURST && descs < size {
            let f = self.ring.flags(at.pos);
            if !is_avail(f, at.wrap) {
                if in_chain {
                    return Err(ChainFault::NotAvailable { index: at.pos });
                }
                break;
            }
            descs += 1;
            at = at.ahead(1, size);
            in_chain = f & VRING_DESC_F_NEXT != 0;
            if !in_chain {
                chains += 1;
            }
        }
        Ok(chains)
    }

    #[inline]
    fn prefetch(&self, n: u16) {
        // Four descriptors to a line.
        for k in (0..n.min(self.ring.size())).step_by(4) {
            self.ring.prefetch(self.avail.pos.wrapping_add(k));
        }
    }

    #[inline]
    fn pop_into(&mut self, mem: &GuestMemory, writable: bool, chain: &mut Chain) -> Result<(), ChainFault> {
        let size = self.ring.size();
        let mut at = self.avail;
        chain.restart(at.pos);
        for n in 1..=size.min(MAX_CHAIN_DESCS) {
            let d = self.ring.desc(at.pos);
            if !is_avail(d.flags, at.wrap) {
                return Err(ChainFault::NotAvailable { index: at.pos });
            }
            if d.flags & VRING_DESC_F_INDIRECT != 0 {
                // The table is the rest of the chain (the descriptor must not have NEXT).
                self.walk_indirect(mem, writable, at.pos, (d.addr, d.len, d.flags), chain)?;
            } else {
                chain.add(mem, writable, self.max_read, at.pos, d.addr, d.len, d.flags)?;
            }
            at = at.ahead(1, size);
            if d.flags & VRING_DESC_F_NEXT == 0 {
                if d.id >= size {
                    return Err(ChainFault::IdOutOfRange { id: d.id, size });
                }
                chain.head = d.id;
                chain.descs = n;
                self.avail = at;
                return Ok(());
            }
        }
        if size > MAX_CHAIN_DESCS {
            return Err(ChainFault::TooManyDescriptors { head: self.avail.pos });
        }
        Err(ChainFault::ChainTooLong { head: self.avail.pos, size })
    }

    #[inline]
    fn give_back(&mut self, chains: &[Chain]) {
        let size = self.ring.size();
        for c in chains {
            self.avail = self.avail.back(c.descs, size);
        }
    }

    #[inline]
    fn put_used(&mut self, chain: &Chain, len: u32) {
        let used_flags = |wrap: bool| if wrap { VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED } else { 0 };
        let size = self.ring.size();
        let flags = used_flags(self.used.wrap);
        if self.batched {
            // The batch's one descriptor is written when it is published.
            if self.pending.is_none() {
                self.pending = Some((self.used.pos, flags));
            }
            self.batch_last = chain.head;
            self.used = self.used.ahead(chain.descs.max(1), size);
            return;
        }
        self.ring.set_used(self.used.pos, chain.head, len);
        if self.pending.is_none() {
            self.pending = Some((self.used.pos, flags));
        } else {
            self.ring.set_flags(self.used.pos, flags);
        }
        // The chain's other slots are marked used too (the driver skips them by its own
        // count and never reads them): the ring's flags then tell exactly what is
        // outstanding, which is how a restarted backend finds the driver
        // (see [`PackedQueue::resume_where_the_ring_says`]).
        for k in 1..chain.descs {
            let at = self.used.ahead(k, size);
            self.ring.set_flags(at.pos, used_flags(at.wrap));
        }
        self.used = self.used.ahead(chain.descs.max(1), size);
    }

    #[inline]
    fn publish(&mut self) {
        if let Some((pos, flags)) = self.pending.take() {
            if self.batched {
                self.ring.set_used(pos, self.batch_last, 0);
            }
            self.ring.set_flags(pos, flags);
        }
    }
}
