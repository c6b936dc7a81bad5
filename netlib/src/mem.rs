// Memory: shared mappings backed by hugetlbfs files or memfds, and the
// bounded views of another process's memory that a vhost-user backend follows.
//! Shared memory regions and bounded access to mapped foreign memory.
//!
//! This is one of the few modules with `unsafe`: every raw pointer that the rest
//! of netlib touches is created here, with its bounds checked here.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Errors from creating or mapping memory.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What we were doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A region of zero bytes, or one whose size overflows.
    #[error("bad region size {0}")]
    BadSize(u64),
    /// A region overlapping one already in the table.
    #[error("region {start:#x}+{len:#x} overlaps a region already mapped")]
    Overlap {
        /// Start address.
        start: u64,
        /// Length.
        len: u64,
    },
    /// An offset/length outside a mapping.
    #[error("range {off:#x}+{len} is outside a mapping of {size} bytes")]
    OutOfBounds {
        /// Offset asked for.
        off: usize,
        /// Length asked for.
        len: usize,
        /// Size of the mapping.
        size: usize,
    },
}

fn sys(what: impl Into<String>) -> MemError {
    MemError::Sys { what: what.into(), source: std::io::Error::last_os_error() }
}

/// What backs a region: this is logged, since it decides performance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A file in a hugetlbfs directory (the container's `/dev/hugepages`).
    HugetlbfsFile(PathBuf),
    /// `memfd_create(MFD_HUGETLB)`.
    MemfdHuge,
    /// A plain memfd (4 KiB pages): works everywhere, slower.
    Memfd,
}

impl Backing {
    /// The hugetlbfs directory, for a region there.
    pub fn hugetlbfs_dir(&self) -> Option<&Path> {
        match self {
            Backing::HugetlbfsFile(p) => Some(p),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::HugetlbfsFile(p) => write!(f, "hugetlbfs file in {}", p.display()),
            Backing::MemfdHuge => f.write_str("memfd with MFD_HUGETLB"),
            Backing::Memfd => f.write_str("plain memfd (no hugepages)"),
        }
    }
}

/// A `MAP_SHARED` mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is plain shared memory; it has no thread affinity.
unsafe impl Send for Mapping {}
// SAFETY: all access through &Mapping goes through bounds-checked raw copies or atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from file offset 0, shared, read-write, prefaulted.
    pub fn map_fd(fd: BorrowedFd<'_>, len: usize) -> Result<Self, MemError> {
        if len == 0 {
            return Err(MemError::BadSize(0));
        }
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(sys(format!("mmap of {len} bytes")));
        }
        Ok(Self { base: NonNull::new(p.cast()).expect("mmap returned null"), len })
    }

    /// First byte's address in this process.
    pub fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: usize, len: usize) -> Result<(), MemError> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(MemError::OutOfBounds { off, len, size: self.len }),
        }
    }

    /// Bytes `[off, off+len)` as a slice. `&mut self` makes it exclusive in this process.
    pub fn slice_mut(&mut self, off: usize, len: usize) -> Result<&mut [u8], MemError> {
        self.check(off, len)?;
        // SAFETY: range checked above; &mut self guarantees no other Rust reference.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), len) })
    }

    /// Bytes `[off, off+len)` as a slice.
    pub fn slice(&self, off: usize, len: usize) -> Result<&[u8], MemError> {
        self.check(off, len)?;
        // SAFETY: range checked above; data written by the peer only in buffers it owns.
        Ok(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len) })
    }

    /// Raw pointer to `off` after checking `[off, off+len)` is inside.
    pub fn ptr_at(&self, off: usize, len: usize) -> Result<*mut u8, MemError> {
        self.check(off, len)?;
        // SAFETY: in bounds, checked above.
        Ok(unsafe { self.base.as_ptr().add(off) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len came from our own mmap; nothing borrows it past drop.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

static REGION_SEQ: AtomicU64 = AtomicU64::new(0);

/// A region of our own memory that another process can map: an fd plus our mapping.
#[derive(Debug)]
pub struct Region {
    fd: OwnedFd,
    map: Mapping,
    backing: Backing,
}

fn huge_page_size(dir: &Path) -> Option<u64> {
    let st = nix::sys::statfs::statfs(dir).ok()?;
    // HUGETLBFS_MAGIC
    if st.filesystem_type().0 as u64 != 0x9584_58f6 {
        return None;
    }
    Some(st.block_size() as u64)
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

fn memfd(name: &str, huge: bool) -> Result<OwnedFd, MemError> {
    let cname = CString::new(name).expect("no NUL");
    let flags = libc::MFD_CLOEXEC | if huge { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: cname is a valid C string; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        return Err(sys(format!("memfd_create({name}, huge={huge})")));
    }
    // SAFETY: fd is a fresh descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Region {
    /// Creates a region of at least `len` bytes: a file in `hugedir` if it is a
    /// hugetlbfs mount, else a `MFD_HUGETLB` memfd, else a plain memfd. The
    /// choice is logged. The size is rounded up to the page size.
    pub fn create(hugedir: Option<&Path>, len: u64) -> Result<Self, MemError> {
        if len == 0 || len > (1 << 40) {
            return Err(MemError::BadSize(len));
        }
        let seq = REGION_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("fastpath-{}-{seq}", std::process::id());
        if let Some(dir) = hugedir {
            if let Some(pg) = huge_page_size(dir) {
                match Self::in_hugetlbfs(dir, &name, round_up(len, pg).ok_or(MemError::BadSize(len))?) {
                    Ok(r) => return Ok(r),
                    Err(e) => tracing::warn!("hugetlbfs {} unusable ({e}); trying memfd", dir.display()),
                }
            } else {
                tracing::info!("{} is not a hugetlbfs mount; trying memfd", dir.display());
            }
        }
        let huge_len = round_up(len, 2 << 20).ok_or(MemError::BadSize(len))?;
        match memfd(&name, true).and_then(|fd| Self::with_fd(fd, huge_len, Backing::MemfdHuge)) {
            Ok(r) => {
                tracing::info!("memory: {} bytes from memfd MFD_HUGETLB", huge_len);
                return Ok(r);
            }
            Err(e) => tracing::warn!("memfd MFD_HUGETLB unusable ({e}); using plain memfd (4 KiB pages, slower)"),
        }
        let small_len = round_up(len, 4096).ok_or(MemError::BadSize(len))?;
        Self::with_fd(memfd(&name, false)?, small_len, Backing::Memfd)
    }

    fn in_hugetlbfs(dir: &Path, name: &str, len: u64) -> Result<Self, MemError> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| MemError::Sys { what: format!("create {}", path.display()), source: e })?;
        // Unlinked at once: the memory goes away with the last fd or mapping.
        let _ = std::fs::remove_file(&path);
        let r = Self::with_fd(file.into(), len, Backing::HugetlbfsFile(dir.to_path_buf()))?;
        tracing::info!("memory: {len} bytes from hugetlbfs {}", dir.display());
        Ok(r)
    }

    fn with_fd(fd: OwnedFd, len: u64, backing: Backing) -> Result<Self, MemError> {
        nix::unistd::ftruncate(&fd, len as i64)
            .map_err(|e| MemError::Sys { what: format!("ftruncate to {len} ({backing})"), source: e.into() })?;
        let map = Mapping::map_fd(fd.as_fd(), len as usize)?;
        Ok(Self { fd, map, backing })
    }

    /// The fd to send to a backend.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Our mapping of the region.
    pub fn map(&self) -> &Mapping {
        &self.map
    }

    /// Our mapping of the region, exclusively.
    pub fn map_mut(&mut self) -> &mut Mapping {
        &mut self.map
    }

    /// What backs it.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }
}

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
    _map: Mapping,
}

/// A frontend's memory as a vhost-user backend maps it: the seed's
/// "FVA → BVA" translation table. Every lookup is bounded: an address range
/// that is not wholly inside one region is refused.
#[derive(Debug, Default)]
pub struct GuestMemory {
    regions: Vec<ForeignRegion>,
}

/// A validated span of guest memory: `len` bytes at our address `host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestSpan {
    host: u64,
    len: u32,
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
        crate::ring::prefetch(self.host);
    }
    /// Our address of the `len` bytes at `off` in the span, if they lie wholly inside it.
    #[inline(always)]
    fn at(self, off: u32, len: usize) -> Option<u64> {
        let end = (off as usize).checked_add(len)?;
        (end <= self.len as usize).then(|| self.host + u64::from(off))
    }
    /// Starts loading the cache line `off` bytes into the span (a hint; nothing past
    /// the span).
    #[inline(always)]
    pub fn prefetch_at(self, off: u32) {
        if off < self.len {
            crate::ring::prefetch(self.host + u64::from(off));
        }
    }
    /// Starts fetching the cache line `off` bytes into the span for writing (a hint;
    /// nothing past the span).
    #[inline(always)]
    pub fn prefetch_write_at(self, off: u32) {
        if off < self.len {
            crate::ring::prefetch_write(self.host + u64::from(off));
        }
    }
}

/// Limit on regions in one table (ADD_MEM_REG can add up to this many).
pub const MAX_GUEST_REGIONS: usize = 509;

impl GuestMemory {
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
        let map = Mapping::map_fd(fd, maplen)?;
        let host = map.addr() + mmap_offset;
        self.regions.push(ForeignRegion { gpa, uva, len: size, host, _map: map });
        Ok(())
    }

    /// Removes the region that starts at `gpa` with `size` bytes; false if none.
    pub fn remove_region(&mut self, gpa: u64, size: u64) -> bool {
        let before = self.regions.len();
        self.regions.retain(|r| !(r.gpa == gpa && r.len == size));
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

    /// Translates a descriptor address range; `None` unless it is wholly inside one region.
    #[inline]
    pub fn translate(&self, gpa: u64, len: u32) -> Option<GuestSpan> {
        for r in &self.regions {
            let off = gpa.wrapping_sub(r.gpa);
            if off < r.len && (len as u64) <= r.len - off {
                return Some(GuestSpan { host: r.host + off, len });
            }
        }
        None
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
        let Some(at) = span.at(off, dst.len()) else {
            return false;
        };
        // SAFETY: span was produced by translate() on a region that `self`
        // keeps mapped; [off, off + len) is inside it (span.at); dst is our own memory.
        unsafe {
            std::ptr::copy_nonoverlapping(at as *const u8, dst.as_mut_ptr(), dst.len());
        }
        true
    }

    /// Copies `src` into `span` at `off`; false if that is past the span.
    #[inline]
    pub fn write(&self, span: GuestSpan, off: u32, src: &[u8]) -> bool {
        let Some(at) = span.at(off, src.len()) else {
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
        let Some(at) = span.at(off, src.len()) else {
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
        let _ = src_mem; // the span carries the address; the table keeps it mapped
        let (Some(from), Some(to)) = (src.at(src_off, len as usize), dst.at(dst_off, len as usize)) else {
            return false;
        };
        // SAFETY: both spans come from translate() on tables that are borrowed
        // for this call, so both stay mapped; both ranges were checked above.
        // The regions belong to different processes' memory, so they don't overlap
        // (and if a frontend shared one fd twice, ptr::copy is still defined).
        unsafe {
            std::ptr::copy(from as *const u8, to as *mut u8, len as usize);
        }
        true
    }
}

/// Atomically readable 16-bit cells and volatile 64/32-bit fields at
/// guest-or-own addresses, for the ring module. The address must be 2-aligned
/// and stay mapped while used.
pub(crate) mod raw {
    use std::sync::atomic::AtomicU16;

    /// Returns the AtomicU16 at `addr`.
    ///
    /// # Safety
    /// `addr` must be 2-aligned and inside a mapping that outlives `'a`.
    #[inline(always)]
    pub(crate) unsafe fn atomic_u16<'a>(addr: u64) -> &'a AtomicU16 {
        // SAFETY: guaranteed by the caller.
        unsafe { &*(addr as *const AtomicU16) }
    }
}

/// A counter of created regions (for tests that check nothing leaks).
pub fn regions_created() -> u64 {
    REGION_SEQ.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_region_roundtrip_and_bounds() {
        let mut r = Region::create(None, 10_000).unwrap();
        assert!(r.map().len() >= 10_000);
        r.map_mut().slice_mut(0, 4).unwrap().copy_from_slice(b"abcd");
        assert_eq!(r.map().slice(0, 4).unwrap(), b"abcd");
        assert!(r.map().slice(r.map().len() - 1, 2).is_err());
        assert!(r.map().slice(usize::MAX, 2).is_err());
    }

    #[test]
    fn guest_memory_translates_only_inside_regions() {
        let mut r = Region::create(None, 8192).unwrap();
        r.map_mut().slice_mut(100, 3).unwrap().copy_from_slice(b"xyz");
        let len = r.map().len() as u64;
        let mut g = GuestMemory::default();
        g.add_region(r.fd(), 0x1000_0000, 0x7000_0000, len, 0).unwrap();
        let s = g.translate(0x1000_0000 + 100, 3).unwrap();
        let mut out = [0u8; 3];
        assert!(g.read(s, 0, &mut out));
        assert_eq!(&out, b"xyz");
        assert!(!g.read(s, 1, &mut out), "read past the span");
        assert!(g.translate(0x1000_0000 + len - 1, 2).is_none(), "straddles the end");
        assert!(g.translate(0x0fff_ffff, 2).is_none(), "starts before");
        assert!(g.translate(u64::MAX, 2).is_none(), "wraps");
        assert!(g.translate_uva(0x7000_0000, len).is_some());
        assert!(g.translate_uva(0x7000_0000, len + 1).is_none());
        // write_unless_equal: bounded like write, and stores only what differs
        assert!(g.write_unless_equal(s, 0, b"xyz"));
        assert!(g.write_unless_equal(s, 1, b"ab"));
        assert!(g.read(s, 0, &mut out));
        assert_eq!(&out, b"xab");
        assert!(!g.write_unless_equal(s, 2, b"ab"), "write past the span");
        assert!(!g.write_unless_equal(s, u32::MAX, b"a"), "offset overflow");
        // overlapping second region is refused
        assert!(g.add_region(r.fd(), 0x1000_0000 + 4096, 0x9000_0000, 4096, 0).is_err());
        // a region past the end of the file is refused
        assert!(g.add_region(r.fd(), 0x2000_0000, 0x9000_0000, len, 4096).is_err());
    }
}
