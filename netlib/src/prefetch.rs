// Cache-line prefetch hints (x86_64 `prefetcht0` and `prefetchw`): the data path
// starts every load of a burst before it waits on any.
//! Prefetch hints.
#![allow(unsafe_code)]

/// Asks the CPU to start loading the cache line at `addr` (a hint: never faults).
#[inline(always)]
pub(crate) fn prefetch(addr: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it does not fault whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Asks the CPU to fetch the cache line at `addr` for writing (`prefetchw`): the line
/// we are about to store to arrives exclusive, without a second trip to the other core.
/// A hint only; CPUs without the instruction treat it as a no-op.
#[inline(always)]
pub(crate) fn prefetch_write(addr: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetchw is only a hint; it does not fault, whatever the address, and
    // touches no register or flag.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
