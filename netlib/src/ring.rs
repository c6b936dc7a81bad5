// The split and packed virtqueues' memory layouts and their two sides' raw accessors:
// the driver side (our own ring memory) and the device side (a frontend's memory).
//! Virtqueue layouts and accessors.
//!
//! One of the few modules with `unsafe`. Pointers into the three ring areas are
//! resolved once, when a queue is set up; the per-packet path then only reads
//! and writes through them. Avail and used indices are loaded with acquire and
//! published with release, as the virtio spec's memory model asks.
#![allow(unsafe_code)]
// Every ring address is 16-aligned (descriptors) or checked aligned at setup
// (avail 2, used 4), so the casts from byte pointers below are aligned.
#![allow(clippy::cast_ptr_alignment)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::mem::{raw::atomic_u16, GuestMemory, MemError, Region};
use crate::prefetch::prefetch;
use crate::spec::MAX_QUEUE_SIZE;

/// One descriptor as read from a ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// Buffer address (frontend VA).
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `VRING_DESC_F_*`.
    pub flags: u16,
    /// Next descriptor in the chain.
    pub next: u16,
}

/// Addresses of the three areas of a split ring of `size` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLayout {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
    /// Number of entries (a power of two).
    pub size: u16,
}

impl SplitLayout {
    /// Bytes of the descriptor table.
    pub fn desc_bytes(size: u16) -> u64 {
        16 * size as u64
    }
    /// Bytes of the avail ring (flags, idx, ring, used_event).
    pub fn avail_bytes(size: u16) -> u64 {
        6 + 2 * size as u64
    }
    /// Bytes of the used ring (flags, idx, ring, avail_event).
    pub fn used_bytes(size: u16) -> u64 {
        6 + 8 * size as u64
    }
    /// Bytes of a whole ring laid out by [`SplitLayout::at`].
    pub fn total_bytes(size: u16) -> u64 {
        Self::used_offset(size) + Self::used_bytes(size)
    }
    fn used_offset(size: u16) -> u64 {
        (Self::desc_bytes(size) + Self::avail_bytes(size)).div_ceil(64) * 64
    }
    /// The layout of a ring placed at `base`: descriptors, avail, then used on
    /// its own cache line.
    pub fn at(base: u64, size: u16) -> Self {
        Self { desc: base, avail: base + Self::desc_bytes(size), used: base + Self::used_offset(size), size }
    }
}

#[inline(always)]
fn read_desc_at(addr: u64) -> Desc {
    // SAFETY: callers pass the address of a descriptor inside a ring whose
    // memory is kept mapped by the struct that owns the pointer; 16-aligned.
    unsafe {
        let p = addr as *const u8;
        Desc {
            addr: std::ptr::read_volatile(p.cast::<u64>()),
            len: std::ptr::read_volatile(p.add(8).cast::<u32>()),
            flags: std::ptr::read_volatile(p.add(12).cast::<u16>()),
            next: std::ptr::read_volatile(p.add(14).cast::<u16>()),
        }
    }
}

/// Why a driver-side ring could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DriverRingError {
    /// The size is 0 or not a power of two.
    #[error("ring size {0} is not a power of two in 1..={MAX_QUEUE_SIZE}")]
    BadSize(u16),
    /// The ring's memory could not be had.
    #[error("ring memory: {0}")]
    Mem(#[from] MemError),
}

/// The driver side of a split ring, in memory this process owns and shares.
#[derive(Debug)]
pub struct DriverRing {
    layout: SplitLayout,
    mask: u16,
    region: Region,
}

impl DriverRing {
    /// Allocates a zeroed ring of `size` entries (a power of two) in its own region.
    pub fn new(size: u16, hugedir: Option<&std::path::Path>) -> Result<Self, DriverRingError> {
        // A u16 holds no power of two above MAX_QUEUE_SIZE.
        if !size.is_power_of_two() {
            return Err(DriverRingError::BadSize(size));
        }
        Self::in_region(Region::create(hugedir, SplitLayout::total_bytes(size))?, size)
    }

    /// A ring of `size` entries (a power of two) at the start of `region`, which must
    /// hold it (e.g. a region of the caller's own making, [`Region::from_fd`]).
    pub fn in_region(region: Region, size: u16) -> Result<Self, DriverRingError> {
        if !size.is_power_of_two() {
            return Err(DriverRingError::BadSize(size));
        }
        let need = SplitLayout::total_bytes(size);
        if (region.map().len() as u64) < need {
            return Err(MemError::OutOfBounds { off: 0, len: need as usize, size: region.map().len() }.into());
        }
        let layout = SplitLayout::at(region.map().addr(), size);
        Ok(Self { layout, mask: size - 1, region })
    }

    /// Ring addresses (our VAs, which the backend receives).
    pub fn layout(&self) -> SplitLayout {
        self.layout
    }

    /// The region holding the ring.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region holding the ring, writable (tests that play a broken driver).
    pub fn region_mut(&mut self) -> &mut Region {
        &mut self.region
    }

    /// Entries.
    #[inline]
    pub fn size(&self) -> u16 {
        self.layout.size
    }

    /// Zeroes the whole ring (before a new handshake).
    pub fn reset(&mut self) {
        let len = SplitLayout::total_bytes(self.layout.size) as usize;
        self.region.map_mut().slice_mut(0, len).expect("ring inside its region").fill(0);
    }

    /// Writes descriptor `i` (masked into range), as two 8-byte stores: a burst's
    /// descriptor stores wait on lines the device's core holds, and fewer, wider
    /// stores keep the store buffer from filling meanwhile.
    #[inline(always)]
    pub fn set_desc(&self, i: u16, d: Desc) {
        let a = self.layout.desc + 16 * (i & self.mask) as u64;
        let tail = u64::from(d.len) | u64::from(d.flags) << 32 | u64::from(d.next) << 48;
        // SAFETY: a is a descriptor slot inside our region, 16-aligned. The split ring
        // is little-endian (virtio 1.0), as is every target this builds for.
        unsafe {
            let p = a as *mut u64;
            std::ptr::write_volatile(p, d.addr.to_le());
            std::ptr::write_volatile(p.add(1), tail.to_le());
        }
    }

    /// Reads descriptor `i` back (masked).
    #[inline(always)]
    pub fn desc(&self, i: u16) -> Desc {
        read_desc_at(self.layout.desc + 16 * (i & self.mask) as u64)
    }

    /// Puts `head` in avail slot `idx` (masked). Not visible until [`Self::publish_avail`].
    /// Skips the store when the slot already holds `head`, so a ring used in order
    /// never dirties its avail entries.
    #[inline(always)]
    pub fn set_avail(&self, idx: u16, head: u16) {
        let a = self.layout.avail + 4 + 2 * (idx & self.mask) as u64;
        // SAFETY: slot inside our region, 2-aligned.
        let slot = unsafe { atomic_u16(a) };
        if slot.load(Ordering::Relaxed) != head {
            slot.store(head, Ordering::Relaxed);
        }
    }

    /// The head we put in avail slot `idx` (masked): our own line, never the device's.
    #[inline(always)]
    pub fn avail_entry(&self, idx: u16) -> u16 {
        let a = self.layout.avail + 4 + 2 * (idx & self.mask) as u64;
        // SAFETY: slot inside our region, 2-aligned.
        unsafe { atomic_u16(a) }.load(Ordering::Relaxed)
    }

    /// Publishes the avail index with release.
    #[inline(always)]
    pub fn publish_avail(&self, idx: u16) {
        // SAFETY: avail.idx inside our region, 2-aligned.
        unsafe { atomic_u16(self.layout.avail + 2) }.store(idx, Ordering::Release);
    }

    /// Sets the avail ring's flags.
    pub fn set_avail_flags(&self, flags: u16) {
        // SAFETY: avail.flags inside our region, 2-aligned.
        unsafe { atomic_u16(self.layout.avail) }.store(flags, Ordering::Release);
    }

    /// Used index, with acquire (entries up to it are visible after this).
    #[inline(always)]
    pub fn used_idx(&self) -> u16 {
        // SAFETY: used.idx inside our region, 2-aligned.
        unsafe { atomic_u16(self.layout.used + 2) }.load(Ordering::Acquire)
    }

    /// Used ring flags.
    #[inline(always)]
    pub fn used_flags(&self) -> u16 {
        // SAFETY: used.flags inside our region, 2-aligned.
        unsafe { atomic_u16(self.layout.used) }.load(Ordering::Relaxed)
    }

    /// Used element at slot `idx` (masked): (id, len), as the device wrote them
    /// (untrusted: the caller bounds `id`).
    #[inline(always)]
    pub fn used_elem(&self, idx: u16) -> (u32, u32) {
        let a = self.layout.used + 4 + 8 * (idx & self.mask) as u64;
        // SAFETY: slot inside our region, 4-aligned.
        unsafe {
            let p = a as *const u32;
            (std::ptr::read_volatile(p), std::ptr::read_volatile(p.add(1)))
        }
    }
}

/// Why a device-side ring could not be set up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingSetupError {
    /// Size is 0, not a power of two, or too big.
    #[error("ring size {0} is not a power of two in 1..={MAX_QUEUE_SIZE}")]
    BadSize(u32),
    /// An area is misaligned.
    #[error("ring {area} address {addr:#x} is misaligned")]
    Misaligned {
        /// desc, avail or used.
        area: &'static str,
        /// The address.
        addr: u64,
    },
    /// An area is not inside one mapped region.
    #[error("ring {area} at {addr:#x} (+{len}) is outside every memory region")]
    Unmapped {
        /// desc, avail or used.
        area: &'static str,
        /// The address.
        addr: u64,
        /// Its length.
        len: u64,
    },
}

/// A device-side ring's size as a u16, if it is a power of two in 1..=[`MAX_QUEUE_SIZE`].
fn check_size(size: u32) -> Result<u16, RingSetupError> {
    if size == 0 || size > u32::from(MAX_QUEUE_SIZE) || !size.is_power_of_two() {
        return Err(RingSetupError::BadSize(size));
    }
    Ok(size as u16)
}

/// Where the ring area `area` at frontend VA `addr` (`len` bytes, `align`-aligned) is
/// mapped here: wholly inside one region of `mem`.
fn resolve_area(mem: &GuestMemory, area: &'static str, addr: u64, len: u64, align: u64) -> Result<u64, RingSetupError> {
    if !addr.is_multiple_of(align) {
        return Err(RingSetupError::Misaligned { area, addr });
    }
    mem.translate_uva(addr, len).ok_or(RingSetupError::Unmapped { area, addr, len })
}

/// The device side of a split ring, in a frontend's memory.
#[derive(Debug)]
pub struct DeviceRing {
    desc: u64,
    avail: u64,
    used: u64,
    size: u16,
    mask: u16,
    /// Keeps the mapping behind the three pointers alive.
    _mem: Arc<GuestMemory>,
}

impl DeviceRing {
    /// Resolves the ring areas (frontend VAs) in `mem`, once. Each area must be
    /// aligned and wholly inside one region.
    pub fn new(mem: &Arc<GuestMemory>, size: u32, desc: u64, avail: u64, used: u64) -> Result<Self, RingSetupError> {
        let s = check_size(size)?;
        let resolve = |area, addr, len, align| resolve_area(mem, area, addr, len, align);
        let d = resolve("desc", desc, SplitLayout::desc_bytes(s), 16)?;
        let a = resolve("avail", avail, SplitLayout::avail_bytes(s), 2)?;
        let u = resolve("used", used, SplitLayout::used_bytes(s), 4)?;
        Ok(Self { desc: d, avail: a, used: u, size: s, mask: s - 1, _mem: Arc::clone(mem) })
    }

    /// Entries.
    #[inline(always)]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Avail index, with acquire.
    #[inline(always)]
    pub fn avail_idx(&self) -> u16 {
        // SAFETY: avail.idx was translated inside a mapped region (kept by _mem), 2-aligned.
        unsafe { atomic_u16(self.avail + 2) }.load(Ordering::Acquire)
    }

    /// Avail flags.
    #[inline(always)]
    pub fn avail_flags(&self) -> u16 {
        // SAFETY: as avail_idx.
        unsafe { atomic_u16(self.avail) }.load(Ordering::Relaxed)
    }

    /// Head index in avail slot `idx` (masked); untrusted: the caller bounds it.
    #[inline(always)]
    pub fn avail_entry(&self, idx: u16) -> u16 {
        // SAFETY: slot inside the translated avail area, 2-aligned.
        unsafe { atomic_u16(self.avail + 4 + 2 * (idx & self.mask) as u64) }.load(Ordering::Relaxed)
    }

    /// Descriptor `i`, or `None` if `i` is past the table.
    #[inline(always)]
    pub fn desc(&self, i: u16) -> Option<Desc> {
        (i < self.size).then(|| read_desc_at(self.desc + 16 * i as u64))
    }

    /// Starts loading the descriptors that the next `n` avail slots from `idx` name, so
    /// that popping them does not wait for each line in turn (the frontend's core wrote
    /// them). A hint only: heads past the table are skipped.
    #[inline(always)]
    pub fn prefetch_heads(&self, idx: u16, n: u16) {
        for k in 0..n.min(self.size) {
            let head = self.avail_entry(idx.wrapping_add(k));
            if head < self.size {
                prefetch(self.desc + 16 * u64::from(head));
            }
        }
    }

    /// Writes used slot `idx` (masked).
    #[inline(always)]
    pub fn set_used(&self, idx: u16, id: u16, len: u32) {
        let a = self.used + 4 + 8 * (idx & self.mask) as u64;
        // SAFETY: slot inside the translated used area, 4-aligned.
        unsafe {
            let p = a as *mut u32;
            std::ptr::write_volatile(p, id as u32);
            std::ptr::write_volatile(p.add(1), len);
        }
    }

    /// Publishes the used index with release.
    #[inline(always)]
    pub fn publish_used(&self, idx: u16) {
        // SAFETY: used.idx inside the translated used area, 2-aligned.
        unsafe { atomic_u16(self.used + 2) }.store(idx, Ordering::Release);
    }

    /// Used index as currently in memory.
    pub fn used_idx(&self) -> u16 {
        // SAFETY: as publish_used.
        unsafe { atomic_u16(self.used + 2) }.load(Ordering::Acquire)
    }

    /// Sets the used ring's flags (e.g. `VRING_USED_F_NO_NOTIFY`).
    pub fn set_used_flags(&self, flags: u16) {
        // SAFETY: used.flags inside the translated used area, 2-aligned.
        unsafe { atomic_u16(self.used) }.store(flags, Ordering::Release);
    }
}

/// One descriptor of a packed ring, as read (untrusted: the caller bounds it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackedDesc {
    /// Buffer address (frontend VA).
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// Buffer id (given back in the used descriptor).
    pub id: u16,
    /// `VRING_DESC_F_*` and the packed AVAIL/USED bits.
    pub flags: u16,
}

/// Bytes of a packed ring's descriptors.
pub fn packed_desc_bytes(size: u16) -> u64 {
    16 * u64::from(size)
}

/// Bytes of a packed ring's event suppression structure (offset/wrap, flags).
pub const PACKED_EVENT_BYTES: u64 = 4;

/// The device side of a packed ring, in a frontend's memory: the descriptor ring
/// and the two event suppression structures (the driver's, which we read, and ours).
#[derive(Debug)]
pub struct PackedDeviceRing {
    desc: u64,
    driver_event: u64,
    device_event: u64,
    size: u16,
    /// Keeps the mapping behind the three pointers alive.
    _mem: Arc<GuestMemory>,
}

impl PackedDeviceRing {
    /// Resolves the ring areas (frontend VAs: SET_VRING_ADDR's desc, avail and used
    /// carry the descriptor ring, the driver area and the device area) in `mem`, once.
    pub fn new(
        mem: &Arc<GuestMemory>,
        size: u32,
        desc: u64,
        driver_event: u64,
        device_event: u64,
    ) -> Result<Self, RingSetupError> {
        let s = check_size(size)?;
        let resolve = |area, addr, len, align| resolve_area(mem, area, addr, len, align);
        let d = resolve("desc", desc, packed_desc_bytes(s), 16)?;
        let drv = resolve("driver event", driver_event, PACKED_EVENT_BYTES, 4)?;
        let dev = resolve("device event", device_event, PACKED_EVENT_BYTES, 4)?;
        Ok(Self { desc: d, driver_event: drv, device_event: dev, size: s, _mem: Arc::clone(mem) })
    }

    /// Entries.
    #[inline(always)]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The flags of descriptor `i` (masked into range), with acquire: the rest of the
    /// descriptor, read after, is what the driver wrote before making it available.
    #[inline(always)]
    pub fn flags(&self, i: u16) -> u16 {
        let a = self.desc + 16 * u64::from(i & (self.size - 1)) + 14;
        // SAFETY: flags of a descriptor inside the translated ring (kept by _mem), 2-aligned.
        unsafe { atomic_u16(a) }.load(Ordering::Acquire)
    }

    /// Descriptor `i` (masked into range); its flags as [`Self::flags`] read them.
    #[inline(always)]
    pub fn desc(&self, i: u16) -> PackedDesc {
        let flags = self.flags(i);
        let a = self.desc + 16 * u64::from(i & (self.size - 1));
        // SAFETY: a descriptor inside the translated ring (kept by _mem), 16-aligned.
        unsafe {
            let p = a as *const u8;
            PackedDesc {
                addr: std::ptr::read_volatile(p.cast::<u64>()),
                len: std::ptr::read_volatile(p.add(8).cast::<u32>()),
                id: std::ptr::read_volatile(p.add(12).cast::<u16>()),
                flags,
            }
        }
    }

    /// Starts loading descriptor `i` (masked): a hint.
    #[inline(always)]
    pub fn prefetch(&self, i: u16) {
        prefetch(self.desc + 16 * u64::from(i & (self.size - 1)));
    }

    /// Writes the id and length of a used descriptor at slot `i` (masked), not its flags:
    /// the driver does not look at it until [`Self::set_flags`].
    #[inline(always)]
    pub fn set_used(&self, i: u16, id: u16, len: u32) {
        let a = self.desc + 16 * u64::from(i & (self.size - 1));
        // SAFETY: a descriptor inside the translated ring, 16-aligned.
        unsafe {
            let p = a as *mut u8;
            std::ptr::write_volatile(p.add(8).cast::<u32>(), len);
            std::ptr::write_volatile(p.add(12).cast::<u16>(), id);
        }
    }

    /// Stores the flags of slot `i` (masked) with release: a used descriptor written by
    /// [`Self::set_used`] becomes the driver's.
    #[inline(always)]
    pub fn set_flags(&self, i: u16, flags: u16) {
        let a = self.desc + 16 * u64::from(i & (self.size - 1)) + 14;
        // SAFETY: flags of a descriptor inside the translated ring, 2-aligned.
        unsafe { atomic_u16(a) }.store(flags, Ordering::Release);
    }

    /// The driver's event suppression flags (`RING_EVENT_FLAGS_*`): whether it wants
    /// to be signalled.
    #[inline(always)]
    pub fn driver_event_flags(&self) -> u16 {
        // SAFETY: flags of the translated driver area, 2-aligned (the area is 4-aligned).
        unsafe { atomic_u16(self.driver_event + 2) }.load(Ordering::Relaxed)
    }

    /// Sets our event suppression flags: whether we want kicks.
    pub fn set_device_event_flags(&self, flags: u16) {
        // SAFETY: flags of the translated device area, 2-aligned.
        unsafe { atomic_u16(self.device_event + 2) }.store(flags, Ordering::Release);
    }
}

/// Where a packed ring's device event area starts after its descriptors (its own cache
/// line: the driver event area, which we write, is in the line before).
const PACKED_DEVICE_EVENT_AT: u64 = 64;

/// The driver side of a packed ring, in memory this process owns and shares: the
/// descriptors, then the driver event area (ours: whether we want to be signalled), then
/// the device event area (the backend's: whether it wants kicks).
#[derive(Debug)]
pub struct PackedDriverRing {
    desc: u64,
    driver_event: u64,
    device_event: u64,
    size: u16,
    region: Region,
}

impl PackedDriverRing {
    /// Bytes of a ring of `size` entries with its two event areas.
    pub fn total_bytes(size: u16) -> u64 {
        packed_desc_bytes(size) + PACKED_DEVICE_EVENT_AT + PACKED_EVENT_BYTES
    }

    /// Allocates a zeroed ring of `size` entries (a power of two) in its own region.
    pub fn new(size: u16, hugedir: Option<&std::path::Path>) -> Result<Self, DriverRingError> {
        if !size.is_power_of_two() {
            return Err(DriverRingError::BadSize(size));
        }
        let region = Region::create(hugedir, Self::total_bytes(size))?;
        let desc = region.map().addr();
        let driver_event = desc + packed_desc_bytes(size);
        Ok(Self { desc, driver_event, device_event: driver_event + PACKED_DEVICE_EVENT_AT, size, region })
    }

    /// The ring's areas (our VAs, which the backend receives in SET_VRING_ADDR's desc,
    /// avail and used): descriptors, driver event area, device event area.
    pub fn areas(&self) -> (u64, u64, u64) {
        (self.desc, self.driver_event, self.device_event)
    }

    /// The region holding the ring.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Entries.
    #[inline(always)]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Zeroes the whole ring (before a new handshake).
    pub fn reset(&mut self) {
        let len = Self::total_bytes(self.size) as usize;
        self.region.map_mut().slice_mut(0, len).expect("ring inside its region").fill(0);
    }

    /// Writes descriptor `i` (masked into range): address, length and id first, then its
    /// flags with release, which makes it the device's.
    #[inline(always)]
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, id: u16, flags: u16) {
        let a = self.desc + 16 * u64::from(i & (self.size - 1));
        // SAFETY: a descriptor slot inside our region, 16-aligned; little-endian target.
        unsafe {
            let p = a as *mut u8;
            std::ptr::write_volatile(p.cast::<u64>(), addr.to_le());
            std::ptr::write_volatile(p.add(8).cast::<u32>(), len.to_le());
            std::ptr::write_volatile(p.add(12).cast::<u16>(), id.to_le());
            atomic_u16(a + 14).store(flags, Ordering::Release);
        }
    }

    /// The flags of descriptor `i` (masked), with acquire: its id and length, read after,
    /// are what the device wrote before marking it used.
    #[inline(always)]
    pub fn flags(&self, i: u16) -> u16 {
        let a = self.desc + 16 * u64::from(i & (self.size - 1)) + 14;
        // SAFETY: flags of a descriptor inside our region, 2-aligned.
        unsafe { atomic_u16(a) }.load(Ordering::Acquire)
    }

    /// The id and length the device wrote in used descriptor `i` (masked; untrusted: the
    /// caller bounds the id).
    #[inline(always)]
    pub fn used(&self, i: u16) -> (u16, u32) {
        let a = self.desc + 16 * u64::from(i & (self.size - 1));
        // SAFETY: a descriptor inside our region, 16-aligned.
        unsafe {
            let p = a as *const u8;
            (std::ptr::read_volatile(p.add(12).cast::<u16>()), std::ptr::read_volatile(p.add(8).cast::<u32>()))
        }
    }

    /// Sets our event suppression flags (`RING_EVENT_FLAGS_*`): whether we want calls.
    pub fn set_driver_event_flags(&self, flags: u16) {
        // SAFETY: flags of our driver event area, 2-aligned.
        unsafe { atomic_u16(self.driver_event + 2) }.store(flags, Ordering::Release);
    }

    /// The device's event suppression flags: whether it wants kicks.
    #[inline(always)]
    pub fn device_event_flags(&self) -> u16 {
        // SAFETY: flags of our device event area, 2-aligned.
        unsafe { atomic_u16(self.device_event + 2) }.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn layout_is_aligned_and_disjoint() {
        for size in [1u16, 2, 256, 1024, MAX_QUEUE_SIZE] {
            let l = SplitLayout::at(0x10000, size);
            assert_eq!(l.desc % 16, 0);
            assert!(l.avail >= l.desc + SplitLayout::desc_bytes(size));
            assert!(l.used >= l.avail + SplitLayout::avail_bytes(size));
            assert_eq!(l.used % 64, 0);
        }
    }

    #[test]
    fn driver_ring_refuses_bad_sizes() {
        for bad in [0u16, 3, 100, 65535] {
            let e = DriverRing::new(bad, None).unwrap_err();
            assert!(matches!(e, DriverRingError::BadSize(s) if s == bad), "{e:?}");
            assert_eq!(e.to_string(), format!("ring size {bad} is not a power of two in 1..=32768"));
        }
        assert_eq!(DriverRing::new(MAX_QUEUE_SIZE, None).unwrap().size(), MAX_QUEUE_SIZE);
    }

    #[test]
    fn a_ring_in_a_given_region_must_fit() {
        let fd = || nix::sys::memfd::memfd_create(c"ring", nix::sys::memfd::MemFdCreateFlag::empty()).unwrap();
        let r = DriverRing::in_region(Region::from_fd(fd(), 4096).unwrap(), 64).unwrap();
        assert_eq!((r.size(), r.layout().desc), (64, r.region().map().addr()));
        let e = DriverRing::in_region(Region::from_fd(fd(), 4096).unwrap(), 1024).unwrap_err();
        assert!(matches!(e, DriverRingError::Mem(MemError::OutOfBounds { .. })), "{e:?}");
        let e = DriverRing::in_region(Region::from_fd(fd(), 4096).unwrap(), 6).unwrap_err();
        assert!(matches!(e, DriverRingError::BadSize(6)), "{e:?}");
    }

    #[test]
    fn driver_and_device_views_agree() {
        let drv = DriverRing::new(8, None).unwrap();
        let l = drv.layout();
        let mut gm = GuestMemory::default();
        let r = drv.region();
        gm.add_region(r.fd().as_fd(), r.map().addr(), r.map().addr(), r.map().len() as u64, 0).unwrap();
        let gm = Arc::new(gm);
        let dev = DeviceRing::new(&gm, 8, l.desc, l.avail, l.used).unwrap();
        let d = Desc { addr: 0xdead_beef, len: 60, flags: 0, next: 0 };
        drv.set_desc(3, d);
        drv.set_avail(0, 3);
        drv.publish_avail(1);
        assert_eq!(dev.avail_idx(), 1);
        assert_eq!(dev.avail_entry(0), 3);
        assert_eq!(dev.desc(3), Some(d));
        assert_eq!(dev.desc(8), None);
        dev.set_used(0, 3, 42);
        dev.publish_used(1);
        assert_eq!(drv.used_idx(), 1);
        assert_eq!(drv.used_elem(0), (3, 42));
    }

    #[test]
    fn packed_driver_and_device_views_agree() {
        let drv = PackedDriverRing::new(8, None).unwrap();
        let (desc, drv_ev, dev_ev) = drv.areas();
        let r = drv.region();
        let mut gm = GuestMemory::default();
        gm.add_region(r.fd().as_fd(), r.map().addr(), r.map().addr(), r.map().len() as u64, 0).unwrap();
        let gm = Arc::new(gm);
        let dev = PackedDeviceRing::new(&gm, 8, desc, drv_ev, dev_ev).unwrap();
        drv.set_desc(9, 0xdead_beef, 60, 5, 0x80);
        assert_eq!(dev.desc(1), PackedDesc { addr: 0xdead_beef, len: 60, id: 5, flags: 0x80 });
        dev.set_used(1, 5, 42);
        dev.set_flags(1, 0x8080);
        assert_eq!((drv.flags(1), drv.used(1)), (0x8080, (5, 42)));
        drv.set_driver_event_flags(1);
        dev.set_device_event_flags(1);
        assert_eq!((dev.driver_event_flags(), drv.device_event_flags()), (1, 1));
        assert!(matches!(PackedDriverRing::new(6, None), Err(DriverRingError::BadSize(6))));
    }

    #[test]
    fn device_ring_refuses_bad_setup() {
        let drv = DriverRing::new(8, None).unwrap();
        let l = drv.layout();
        let r = drv.region();
        let mut gm = GuestMemory::default();
        gm.add_region(r.fd().as_fd(), r.map().addr(), r.map().addr(), r.map().len() as u64, 0).unwrap();
        let gm = Arc::new(gm);
        for bad in [0u32, 3, 65536] {
            assert_eq!(DeviceRing::new(&gm, bad, l.desc, l.avail, l.used).unwrap_err(), RingSetupError::BadSize(bad));
        }
        assert!(matches!(
            DeviceRing::new(&gm, 8, l.desc + 1, l.avail, l.used),
            Err(RingSetupError::Misaligned { area: "desc", .. })
        ));
        assert!(matches!(
            DeviceRing::new(&gm, 8, 0x10, l.avail, l.used),
            Err(RingSetupError::Unmapped { area: "desc", .. })
        ));
        // a ring too large for the region it starts in
        let end = r.map().addr() + r.map().len() as u64;
        assert!(matches!(
            DeviceRing::new(&gm, MAX_QUEUE_SIZE.into(), end - 4096, l.avail, l.used),
            Err(RingSetupError::Unmapped { area: "desc", .. })
        ));
    }
}
