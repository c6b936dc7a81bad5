// The device side of one virtqueue: walks the frontend's descriptor chains
// with every index, length and address bounded, and returns them used.
//! Device-side virtqueue processing with validated descriptor chains.

use crate::mem::{GuestMemory, GuestSpan};
use crate::ring::{Desc, DeviceRing};
use crate::spec::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Most segments one chain may have (a packet in more pieces is refused).
pub const MAX_SEGS: usize = 16;
/// Most descriptors walked for one chain, empty ones included: a chain that is
/// longer is refused after this much work, however long the ring.
pub const MAX_CHAIN_DESCS: u16 = 64;
/// Largest frame a frontend may send unless its port says otherwise: a 9000-byte
/// MTU with Ethernet and VLAN headers fits, with room.
pub const DEFAULT_MAX_FRAME: u32 = 9216;

/// What was wrong with a frontend's ring: the port is reset on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    /// The avail index moved more than a ring's worth ahead.
    #[error("avail index {avail} is {ahead} entries ahead of {last} (ring of {size})")]
    AvailJump {
        /// Avail idx read.
        avail: u16,
        /// Our last avail.
        last: u16,
        /// Distance.
        ahead: u16,
        /// Ring size.
        size: u16,
    },
    /// A head or next index past the descriptor table.
    #[error("descriptor index {index} is past the table of {size}")]
    IndexOutOfRange {
        /// The index.
        index: u16,
        /// Ring size.
        size: u16,
    },
    /// A chain that loops or is longer than the ring.
    #[error("descriptor chain from head {head} is longer than the ring ({size}): a loop")]
    ChainTooLong {
        /// Head.
        head: u16,
        /// Ring size.
        size: u16,
    },
    /// A chain of more descriptors than we walk (empty ones included).
    #[error("descriptor chain from head {head} has more than {MAX_CHAIN_DESCS} descriptors")]
    TooManyDescriptors {
        /// Head.
        head: u16,
    },
    /// A frame from the frontend longer than its port allows.
    #[error("descriptor chain from head {head} carries {len} bytes, over this port's limit of {max}")]
    FrameTooLong {
        /// Head.
        head: u16,
        /// Bytes in the chain.
        len: u64,
        /// The limit (header included).
        max: u32,
    },
    /// A chain with more segments than we take.
    #[error("descriptor chain from head {head} has more than {MAX_SEGS} segments")]
    TooManySegments {
        /// Head.
        head: u16,
    },
    /// A descriptor whose address range is outside every region (or straddles two).
    #[error("descriptor {index} addr {addr:#x} len {len} is outside the frontend's memory")]
    BadAddress {
        /// Descriptor index.
        index: u16,
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// Device-writable descriptor where a readable one belongs, or vice versa.
    #[error("descriptor {index} has flags {flags:#x}: wrong direction for this queue")]
    WrongDirection {
        /// Index.
        index: u16,
        /// Flags.
        flags: u16,
    },
    /// Indirect descriptors were not negotiated.
    #[error("descriptor {index} is indirect, which was not negotiated")]
    Indirect {
        /// Index.
        index: u16,
    },
    /// An indirect descriptor whose table is not one we walk: its length is zero, not a
    /// multiple of 16 or more entries than the ring has, it is outside the frontend's
    /// memory, or it has NEXT set too.
    #[error("descriptor {index} points to an indirect table at {addr:#x} of {len} bytes that {why}")]
    BadIndirectTable {
        /// Index of the indirect descriptor.
        index: u16,
        /// The table's address.
        addr: u64,
        /// The table's length.
        len: u32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An entry of an indirect table that is indirect itself.
    #[error("entry {entry} of the indirect table of descriptor {index} is indirect too (nested)")]
    NestedIndirect {
        /// Index of the indirect descriptor in the ring.
        index: u16,
        /// The entry in its table.
        entry: u16,
    },
    /// A descriptor inside a chain whose head was available is not (its wrap bits lie).
    #[error("descriptor {index} continues an available chain but is not available (its wrap bits lie)")]
    NotAvailable {
        /// Descriptor index (ring position).
        index: u16,
    },
    /// A packed chain's buffer id past the ring.
    #[error("buffer id {id} is past the ring of {size}")]
    IdOutOfRange {
        /// The id.
        id: u16,
        /// Ring size.
        size: u16,
    },
    /// Total length of a chain overflows.
    #[error("descriptor chain from head {head} totals more than 4 GiB")]
    LengthOverflow {
        /// Head.
        head: u16,
    },
}

/// A walked chain: its head and the spans of its segments.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    /// Head descriptor index (returned in the used ring); on a packed ring, the
    /// chain's buffer id.
    pub head: u16,
    /// Descriptors the chain took on a packed ring (where the next one starts).
    pub descs: u16,
    /// Segments.
    pub segs: [GuestSpan; MAX_SEGS],
    /// Number of segments.
    pub nsegs: u8,
    /// Total bytes.
    pub total: u32,
}

impl Chain {
    /// A chain with no segments.
    pub fn empty(head: u16) -> Self {
        Self { head, descs: 0, segs: [GuestSpan::default(); MAX_SEGS], nsegs: 0, total: 0 }
    }

    /// The segments.
    #[inline]
    pub fn segs(&self) -> &[GuestSpan] {
        &self.segs[..self.nsegs as usize]
    }

    /// Empties the chain, to be walked from `head`.
    #[inline]
    pub(super) fn restart(&mut self, head: u16) {
        self.head = head;
        self.descs = 0;
        self.nsegs = 0;
        self.total = 0;
    }

    /// Adds descriptor `index` (`addr`, `len`, `flags`) to the chain after checking it:
    /// direction (`writable`: the device writes), not indirect, inside `mem`, and the
    /// chain's segments and bytes (at most `max_read` when the device reads) bounded.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        mem: &GuestMemory,
        writable: bool,
        max_read: u32,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
    ) -> Result<(), ChainFault> {
        if flags & VRING_DESC_F_INDIRECT != 0 {
            return Err(ChainFault::Indirect { index });
        }
        if (flags & VRING_DESC_F_WRITE != 0) != writable {
            return Err(ChainFault::WrongDirection { index, flags });
        }
        let head = self.head;
        if len > 0 {
            let span = mem.translate(addr, len).ok_or(ChainFault::BadAddress { index, addr, len })?;
            if self.nsegs as usize == MAX_SEGS {
                return Err(ChainFault::TooManySegments { head });
            }
            let total = u64::from(self.total) + u64::from(len);
            if total > u64::from(u32::MAX) {
                return Err(ChainFault::LengthOverflow { head });
            }
            self.segs[self.nsegs as usize] = span;
            self.nsegs += 1;
            self.total = total as u32;
        }
        if !writable && self.total > max_read {
            return Err(ChainFault::FrameTooLong { head, len: u64::from(self.total), max: max_read });
        }
        Ok(())
    }
}

/// One device-side queue: the ring plus our avail/used cursors.
#[derive(Debug)]
pub struct DeviceQueue {
    /// The ring (its pointers resolved once).
    pub ring: DeviceRing,
    /// Next avail entry to take.
    pub last_avail: u16,
    /// Next used entry to write.
    pub last_used: u16,
    /// Most bytes a chain the device reads (a frame sent to us) may carry.
    max_read: u32,
    /// Whether the frontend may use indirect tables (VIRTIO_RING_F_INDIRECT_DESC).
    indirect: bool,
}

impl DeviceQueue {
    /// A queue starting at `base`, taking readable chains of up to
    /// [`DEFAULT_MAX_FRAME`] bytes plus a virtio-net header.
    pub fn new(ring: DeviceRing, base: u16) -> Self {
        Self::with_max_read(ring, base, DEFAULT_MAX_FRAME + crate::spec::NET_HDR_LEN)
    }

    /// A queue starting at `base`, taking readable chains of up to `max_read` bytes.
    pub fn with_max_read(ring: DeviceRing, base: u16, max_read: u32) -> Self {
        Self { ring, last_avail: base, last_used: base, max_read, indirect: false }
    }

    /// The same queue, taking indirect tables if `on` (VIRTIO_RING_F_INDIRECT_DESC was
    /// negotiated).
    #[must_use]
    pub fn with_indirect(self, on: bool) -> Self {
        Self { indirect: on, ..self }
    }

    /// How many chains are available (bounded by the ring size).
    #[inline]
    pub fn available(&self) -> Result<u16, ChainFault> {
        let avail = self.ring.avail_idx();
        let ahead = avail.wrapping_sub(self.last_avail);
        let size = self.ring.size();
        if ahead > size {
            return Err(ChainFault::AvailJump { avail, last: self.last_avail, ahead, size });
        }
        Ok(ahead)
    }

    /// Starts loading the descriptors of the next `n` available chains (a hint; call it
    /// with what [`Self::available`] said before popping a burst).
    #[inline]
    pub fn prefetch(&self, n: u16) {
        self.ring.prefetch_heads(self.last_avail, n);
    }

    /// Takes the next available chain and walks it. `writable` says which
    /// direction the descriptors must have (true: the device writes).
    #[inline]
    pub fn pop(&mut self, mem: &GuestMemory, writable: bool) -> Result<Chain, ChainFault> {
        let mut chain = Chain::empty(0);
        self.pop_into(mem, writable, &mut chain)?;
        Ok(chain)
    }

    /// As [`Self::pop`], walking the chain into `chain` in place: a chain is a few
    /// hundred bytes, too many to move around by value once per packet.
    #[inline]
    pub fn pop_into(&mut self, mem: &GuestMemory, writable: bool, chain: &mut Chain) -> Result<(), ChainFault> {
        let size = self.ring.size();
        let head = self.ring.avail_entry(self.last_avail);
        self.last_avail = self.last_avail.wrapping_add(1);
        chain.restart(head);
        let mut idx = head;
        for _ in 0..size.min(MAX_CHAIN_DESCS) {
            let d = self.ring.desc(idx).ok_or(ChainFault::IndexOutOfRange { index: idx, size })?;
            if d.flags & VRING_DESC_F_INDIRECT != 0 {
                if !self.indirect {
                    return Err(ChainFault::Indirect { index: idx });
                }
                return self.walk_indirect(mem, writable, idx, &d, chain);
            }
            chain.add(mem, writable, self.max_read, idx, d.addr, d.len, d.flags)?;
            if d.flags & VRING_DESC_F_NEXT == 0 {
                return Ok(());
            }
            if d.next >= size {
                return Err(ChainFault::IndexOutOfRange { index: d.next, size });
            }
            idx = d.next;
        }
        if size > MAX_CHAIN_DESCS {
            return Err(ChainFault::TooManyDescriptors { head });
        }
        Err(ChainFault::ChainTooLong { head, size })
    }

    /// Walks the indirect table that ring descriptor `index` (`d`) points to, as the rest
    /// of `chain`: the table inside the frontend's memory,
    /// a whole number of entries and no more than the ring has, no entry indirect itself,
    /// every `next` inside the table, and at most as many steps as it has entries (no loop).
    #[cold]
    fn walk_indirect(
        &self,
        mem: &GuestMemory,
        writable: bool,
        index: u16,
        d: &Desc,
        chain: &mut Chain,
    ) -> Result<(), ChainFault> {
        let table = IndirectTable::check(mem, index, (d.addr, d.len, d.flags), self.ring.size())?;
        let entries = table.entries;
        let mut at = 0u16;
        for _ in 0..entries.min(MAX_CHAIN_DESCS) {
            let e = desc_from_le(&table.entry(mem, at)?);
            if e.flags & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainFault::NestedIndirect { index, entry: at });
            }
            chain.add(mem, writable, self.max_read, at, e.addr, e.len, e.flags)?;
            if e.flags & VRING_DESC_F_NEXT == 0 {
                return Ok(());
            }
            if e.next >= entries {
                return Err(ChainFault::IndexOutOfRange { index: e.next, size: entries });
            }
            at = e.next;
        }
        if entries > MAX_CHAIN_DESCS {
            return Err(ChainFault::TooManyDescriptors { head: chain.head });
        }
        Err(ChainFault::ChainTooLong { head: chain.head, size: entries })
    }

    /// Gives back the last `n` chains popped and not yet used: the next pops walk them
    /// again (a frame that would span more receive chains than the ring holds takes none).
    #[inline]
    pub fn unpop(&mut self, n: u16) {
        self.last_avail = self.last_avail.wrapping_sub(n);
    }

    /// Writes a used entry (not yet published).
    #[inline]
    pub fn push_used(&mut self, head: u16, len: u32) {
        self.ring.set_used(self.last_used, head, len);
        self.last_used = self.last_used.wrapping_add(1);
    }

    /// Publishes the used entries written so far.
    #[inline]
    pub fn publish(&self) {
        self.ring.publish_used(self.last_used);
    }
}

/// An indirect table a descriptor points to, checked the same way on split and packed
/// rings: the descriptor does not continue (NEXT), the table is a whole number of 16-byte
/// entries, no more than the ring has, and inside the frontend's memory. Its entries are
/// read one by one ([`Self::entry`]); only their format differs between the layouts.
pub(super) struct IndirectTable {
    span: GuestSpan,
    /// Entries in the table.
    pub(super) entries: u16,
    index: u16,
    addr: u64,
    len: u32,
}

impl IndirectTable {
    /// Checks the table that descriptor `index` (`addr`, `len`, `flags`) of a ring of
    /// `ring_size` points to.
    pub(super) fn check(
        mem: &GuestMemory,
        index: u16,
        (addr, len, flags): (u64, u32, u16),
        ring_size: u16,
    ) -> Result<Self, ChainFault> {
        let bad = |why| ChainFault::BadIndirectTable { index, addr, len, why };
        if flags & VRING_DESC_F_NEXT != 0 {
            return Err(bad("has NEXT set too"));
        }
        if len == 0 || !len.is_multiple_of(16) {
            return Err(bad("is not a whole number of 16-byte entries"));
        }
        let entries = len / 16;
        if entries > u32::from(ring_size) {
            return Err(bad("has more entries than the ring"));
        }
        let span = mem.translate(addr, len).ok_or_else(|| bad("is outside the frontend's memory"))?;
        Ok(Self { span, entries: entries as u16, index, addr, len })
    }

    /// The raw 16 bytes of entry `at` (below [`Self::entries`]).
    pub(super) fn entry(&self, mem: &GuestMemory, at: u16) -> Result<[u8; 16], ChainFault> {
        let mut raw = [0u8; 16];
        if !mem.read(self.span, u32::from(at) * 16, &mut raw) {
            let (index, addr, len) = (self.index, self.addr, self.len);
            return Err(ChainFault::BadIndirectTable { index, addr, len, why: "is outside the frontend's memory" });
        }
        Ok(raw)
    }
}

/// A descriptor from the 16 little-endian bytes of an indirect table's entry.
fn desc_from_le(b: &[u8; 16]) -> Desc {
    let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = *b;
    Desc {
        addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        len: u32::from_le_bytes([l0, l1, l2, l3]),
        flags: u16::from_le_bytes([f0, f1]),
        next: u16::from_le_bytes([n0, n1]),
    }
}
