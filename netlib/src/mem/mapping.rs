// A MAP_SHARED mapping of an fd, unmapped on drop, with bounds-checked slices:
// the one place netlib calls mmap on memory it shares with another process.
//! Shared mappings.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use super::sigbus::Watch;
use super::{sys, MemError};

/// A `MAP_SHARED` mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// For a peer's memory: the SIGBUS watch over the range.
    watch: Option<Watch>,
}

// SAFETY: a Mapping is plain shared memory; it has no thread affinity.
unsafe impl Send for Mapping {}
// SAFETY: all access through &Mapping goes through bounds-checked raw copies or atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of our own `fd` from file offset 0, shared, read-write,
    /// prefaulted (our memory: the faults are taken now, not on the data path).
    pub fn map_fd(fd: BorrowedFd<'_>, len: usize) -> Result<Self, MemError> {
        Self::map(fd, len, libc::MAP_POPULATE)
    }

    /// Maps `len` bytes of a peer's `fd` from file offset 0, shared, read-write, not
    /// prefaulted (a peer may register far more than it uses: only the pages its
    /// descriptors name are ever touched), and watched for SIGBUS (the peer may shrink
    /// the file under us: see [`super::sigbus`]).
    pub fn map_peer_fd(fd: BorrowedFd<'_>, len: usize) -> Result<Self, MemError> {
        let mut m = Self::map(fd, len, 0)?;
        m.watch = Watch::new(m.base.as_ptr() as usize, len);
        Ok(m)
    }

    /// Whether a peer shrank the memory under this mapping (it now reads zeros).
    #[inline]
    pub fn poisoned(&self) -> bool {
        self.watch.as_ref().is_some_and(Watch::poisoned)
    }

    fn map(fd: BorrowedFd<'_>, len: usize, extra_flags: libc::c_int) -> Result<Self, MemError> {
        if len == 0 {
            return Err(MemError::BadSize(0));
        }
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | extra_flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(sys(format!("mmap of {len} bytes")));
        }
        let base = NonNull::new(p.cast()).ok_or_else(|| sys("mmap returned address 0"))?;
        Ok(Self { base, len, watch: None })
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
        // The watch ends before the range goes, so the handler never remaps a range
        // that something else may be mapped at by then.
        self.watch = None;
        // SAFETY: base/len came from our own mmap; nothing borrows it past drop.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
