// Memory: our own shared regions (hugetlbfs files or memfds) and the bounded views
// of a peer's memory that a vhost-user backend follows; one file per job.
//! Shared memory regions and bounded access to mapped foreign memory.
//!
//! `unsafe` lives in [`mapping`] (mmap and raw slices of our own mappings),
//! [`region`] (`memfd_create`), [`sigbus`] (the SIGBUS handler) and [`guest`] (copies in and out of a peer's
//! memory): every raw pointer that the rest of netlib touches is created here, with
//! its bounds checked here.
#![allow(unsafe_code)]

mod guest;
mod mapping;
mod region;
pub mod sigbus;

pub use guest::{GuestMemory, GuestSpan, MAX_GUEST_REGIONS};
pub use mapping::Mapping;
pub use region::{regions_created, Backing, Region};

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

pub(crate) fn sys(what: impl Into<String>) -> MemError {
    MemError::Sys { what: what.into(), source: std::io::Error::last_os_error() }
}

pub(crate) fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
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

#[cfg(test)]
mod tests;
