// A frontend's memory as a vhost-user backend maps it: the table that turns its
// addresses into ours, and the bounded spans every copy in and out goes through.
//! A peer's memory, mapped here.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{round_up, Mapping, MemError};

/// One region of a peer's memory, mapped here: peer address `[start, start+len)`
/// is our `map` from `offset`.
#[derive(Debug)]
struct ForeignRegion {
    /// Guest-physical (for virtio-user: the frontend's virtual) address.
    gpa: u64,
    /// The frontend's own virtual address (used for ring addresses).
    uva: u64,
    len: u64,
    /// Our address of the region's first byte.
    host: u64,
    /// Whether the peer's file is sealed against shrinking (no SIGBUS possible).
    sealed: bool,
    map: Mapping,
}

/// A frontend's memory as a vhost-user backend maps it: the seed's
/// "FVA → BVA" translation table. Every lookup is bounded: an address range
/// that is not wholly inside one region is refused.
///
/// Each table (and each change to one) has an identity that no other table in
/// this process ever had, and every [`GuestSpan`] records the identity of the
/// table that made it: a span is only ever dereferenced through that table, which
/// the access borrows, so its memory is mapped for as long as the access lasts.
/// A span kept past a change of the table (or used with another port's table) is
/// refused, never followed.
#[derive(Debug)]
pub struct GuestMemory {
    id: u32,
    regions: Vec<ForeignRegion>,
}

/// The last table identity handed out; 0 is never one (it marks an exhausted counter).
static LAST_ID: AtomicU32 = AtomicU32::new(0);

/// A fresh identity, or 0 once all 2^32 - 1 are used (such a table translates nothing).
fn next_id() -> u32 {
    LAST_ID.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1)).map_or(0, |v| v + 1)
}

impl Default for GuestMemory {
    fn default() -> Self {
        Self { id: next_id(), regions: Vec::new() }
    }
}

/// A validated span of guest memory: `len` bytes at our address `host`, in the
/// table whose identity is `mem`. Only that table reads or writes through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestSpan {
    host: u64,
    len: u32,
    mem: u32,
}

impl GuestSpan {
    /// Length in bytes.
    pub fn len(self) -> u32 {
        self.len
    }
    /// Whether it is empty.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
    /// Starts loading the span's first cache line (a hint).
    #[inline(always)]
    pub fn prefetch(self) {
        crate::prefetch::prefetch(self.host);
    }
    /// Starts loading the cache line `off` bytes into the span (a hint; nothing past
    /// the span).
    #[inline(always)]
    pub fn prefetch_at(self, off: u32) {
        if off < self.len {
            crate::prefetch::prefetch(self.host + u64::from(off));
        }
    }
    /// Starts fetching the cache line `off` bytes into the span for writing (a hint;
    /// nothing past the span).
    #[inline(always)]
    pub fn prefetch_write_at(self, off: u32) {
        if off < self.len {
            crate::prefetch::prefetch_write(self.host + u64::from(off));
        }
    }
}

/// Limit on regions in one table (ADD_MEM_REG can add up to this many).
pub const MAX_GUEST_REGIONS: usize = 509;

impl GuestMemory {
    /// A table of `regions` at their own addresses (guest address = our address), as
    /// netlib's frontend shares its memory: the tests' device side of a driver's rings.
    #[cfg(test)]
    pub(crate) fn identity(regions: &[&super::Region]) -> std::sync::Arc<Self> {
        use std::os::fd::AsFd;
        let mut gm = Self::default();
        for r in regions {
            let m = r.map();
            gm.add_region(r.fd().as_fd(), m.addr(), m.addr(), m.len() as u64, 0).expect("identity region");
        }
        std::sync::Arc::new(gm)
    }

    /// Maps a region described by a vhost-user memory region message.
    /// `fd` is mapped from 0 to `mmap_offset + size` (rounded to its block size).
    pub fn add_region(
        &mut self,
        fd: BorrowedFd<'_>,
        gpa: u64,
        uva: u64,
        size: u64,
        mmap_offset: u64,
    ) -> Result<(), MemError> {
        if size == 0 || gpa.checked_add(size).is_none() || uva.checked_add(size).is_none() {
            return Err(MemError::BadSize(size));
        }
        if self.regions.len() >= MAX_GUEST_REGIONS {
            return Err(MemError::BadSize(size));
        }
        let overlap = |a: u64, b: u64, s: u64, e: u64| a < e && s < b;
        if self
            .regions
            .iter()
            .any(|r| overlap(gpa, gpa + size, r.gpa, r.gpa + r.len) || overlap(uva, uva + size, r.uva, r.uva + r.len))
        {
            return Err(MemError::Overlap { start: gpa, len: size });
        }
        let st = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(|e| MemError::Sys { what: "fstat of region fd".into(), source: e.into() })?;
        let blk = (st.st_blksize as u64).max(4096);
        let want = mmap_offset.checked_add(size).ok_or(MemError::BadSize(size))?;
        if (st.st_size as u64) < want {
            return Err(MemError::OutOfBounds {
                off: mmap_offset as usize,
                len: size as usize,
                size: st.st_size as usize,
            });
        }
        let maplen = round_up(want, blk).ok_or(MemError::BadSize(size))?;
        let maplen = usize::try_from(maplen).map_err(|_| MemError::BadSize(size))?;
        let map = Mapping::map_peer_fd(fd, maplen)?;
        let host = map.addr() + mmap_offset;
        let sealed = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS)
            .is_ok_and(|s| s & libc::F_SEAL_SHRINK != 0);
        self.regions.push(ForeignRegion { gpa, uva, len: size, host, sealed, map });
        self.id = next_id();
        Ok(())
    }

    /// Removes the region that starts at `gpa` with `size` bytes; false if none.
    pub fn remove_region(&mut self, gpa: u64, size: u64) -> bool {
        let before = self.regions.len();
        self.regions.retain(|r| !(r.gpa == gpa && r.len == size));
        self.id = next_id();
        self.regions.len() != before
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region is mapped.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Bytes registered in all regions.
    pub fn total_len(&self) -> u64 {
        self.regions.iter().map(|r| r.len).sum()
    }

    /// Regions whose file the peer could still shrink (not sealed with
    /// `F_SEAL_SHRINK`: hugetlbfs files, unsealed memfds). A shrink is caught (the
    /// region is poisoned and the port resets) but costs the port its traffic.
    pub fn unsealed(&self) -> usize {
        self.regions.iter().filter(|r| !r.sealed).count()
    }

    /// Whether the peer shrank the memory under one of the regions (SIGBUS recovered:
    /// it now reads zeros). The port must reset.
    pub fn poisoned(&self) -> bool {
        self.regions.iter().any(|r| r.map.poisoned())
    }

    /// Translates a descriptor address range; `None` unless it is wholly inside one region.
    #[inline]
    pub fn translate(&self, gpa: u64, len: u32) -> Option<GuestSpan> {
        if self.id == 0 {
            return None;
        }
        for r in &self.regions {
            let off = gpa.wrapping_sub(r.gpa);
            if off < r.len && (len as u64) <= r.len - off {
                return Some(GuestSpan { host: r.host + off, len, mem: self.id });
            }
        }
        None
    }

    /// Our address of the `len` bytes at `off` in `span`, if the span is this
    /// table's and they lie wholly inside it: the check every access goes through.
    #[inline(always)]
    fn at(&self, span: GuestSpan, off: u32, len: usize) -> Option<u64> {
        let end = (off as usize).checked_add(len)?;
        (span.mem == self.id && end <= span.len as usize).then(|| span.host + u64::from(off))
    }

    /// Translates a frontend virtual address (ring addresses) to our address.
    pub fn translate_uva(&self, uva: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let off = uva.wrapping_sub(r.uva);
            (off < r.len && len <= r.len - off).then(|| r.host + off)
        })
    }

    /// Copies `dst.len()` bytes from `span` at `off`; false if that is past the span.
    #[inline]
    pub fn read(&self, span: GuestSpan, off: u32, dst: &mut [u8]) -> bool {
        let Some(at) = self.at(span, off, dst.len()) else {
            return false;
        };
        // SAFETY: self.at() checked that `span` came from this table (whose regions stay
        // mapped while it is borrowed) and that [off, off + len) is inside it; dst is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(at as *const u8, dst.as_mut_ptr(), dst.len());
        }
        true
    }

    /// Copies `src` into `span` at `off`; false if that is past the span.
    #[inline]
    pub fn write(&self, span: GuestSpan, off: u32, src: &[u8]) -> bool {
        let Some(at) = self.at(span, off, src.len()) else {
            return false;
        };
        // SAFETY: as in read(): the range is inside the span, in a region we keep mapped.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), at as *mut u8, src.len());
        }
        true
    }

    /// As [`Self::write`], but leaves the bytes alone when they already hold `src`:
    /// for small headers that usually repeat, so that their cache line is only read
    /// (stays shared with the frontend's core) rather than taken over for a store.
    #[inline]
    pub fn write_unless_equal(&self, span: GuestSpan, off: u32, src: &[u8]) -> bool {
        let Some(at) = self.at(span, off, src.len()) else {
            return false;
        };
        let at = at as *mut u8;
        // SAFETY: as in read(): the range is inside the span, in a region we keep mapped.
        // The frontend may write these bytes meanwhile; we only compare a snapshot of them
        // (byte reads, no reference held) and then store ours.
        unsafe {
            let same = (0..src.len()).all(|i| std::ptr::read_volatile(at.add(i)) == src[i]);
            if !same {
                std::ptr::copy_nonoverlapping(src.as_ptr(), at, src.len());
            }
        }
        true
    }

    /// Copies `len` bytes from `src`+`src_off` (in `src_mem`) to `dst`+`dst_off`
    /// (in `self`): the switch's one copy between two containers.
    #[inline]
    pub fn copy_from(
        &self,
        dst: GuestSpan,
        dst_off: u32,
        src_mem: &GuestMemory,
        src: GuestSpan,
        src_off: u32,
        len: u32,
    ) -> bool {
        let (Some(from), Some(to)) = (src_mem.at(src, src_off, len as usize), self.at(dst, dst_off, len as usize))
        else {
            return false;
        };
        // SAFETY: at() checked that each span came from its table (both borrowed for this
        // call, so both stay mapped) and that both ranges lie inside their spans.
        // The regions belong to different processes' memory, so they don't overlap
        // (and if a frontend shared one fd twice, ptr::copy is still defined).
        unsafe {
            std::ptr::copy(from as *const u8, to as *mut u8, len as usize);
        }
        true
    }
}
