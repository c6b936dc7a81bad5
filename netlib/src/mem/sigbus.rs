// Surviving a peer that shrinks memory we have mapped: a SIGBUS on a watched
// mapping replaces it with zeroed memory and marks it poisoned, instead of
// killing the process; the port that owns it then resets.
//! SIGBUS recovery for a peer's mappings.
//!
//! A frontend can `ftruncate` the memfd or hugetlbfs file behind the memory it
//! registered. Our next access past the new end raises SIGBUS, which by default kills
//! the whole switch. Every mapping of a peer's memory is *watched*: the process-wide
//! handler installed here finds the watched range the fault is in, maps anonymous
//! zeroed memory over all of it (`MAP_FIXED`), marks it poisoned and returns, so the
//! faulting access is retried on the new memory and reads zeros. The owner sees the
//! mark ([`Watch::poisoned`], cheaply through [`epoch`]) and resets the port. A SIGBUS
//! outside every watched range goes to the handler that was there before (Rust's
//! stack-overflow handler, or the default action).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// Most mappings watched at once in a process (64 ports of 32 regions, with room).
const SLOTS: usize = 4096;

/// One watched range; `start == 0` marks a free slot.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    poisoned: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot { start: AtomicUsize::new(0), len: AtomicUsize::new(0), poisoned: AtomicBool::new(false) };
static WATCHED: [Slot; SLOTS] = [FREE; SLOTS];
/// Bumped by every recovered SIGBUS.
static EPOCH: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
/// Whether the handler is in place.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The handler that was installed before ours (written once, before ours goes in).
static mut PREVIOUS: MaybeUninit<libc::sigaction> = MaybeUninit::uninit();

/// How many SIGBUS faults on watched memory were recovered in this process: a
/// port compares it with the value it saw last, and looks at its own mappings only
/// when it moved.
#[inline]
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// A watched range; dropping it stops the watch (before the range is unmapped).
#[derive(Debug)]
pub struct Watch {
    slot: usize,
}

impl Watch {
    /// Watches `[start, start + len)` (a mapping of a peer's memory). `None` when the
    /// handler could not be installed or every slot is taken: the mapping is then
    /// used unwatched (a truncation kills the process, as it would without us).
    pub fn new(start: usize, len: usize) -> Option<Self> {
        install();
        if !INSTALLED.load(Ordering::Acquire) || start == 0 {
            return None;
        }
        for (i, s) in WATCHED.iter().enumerate() {
            if s.start.load(Ordering::Relaxed) != 0 {
                continue;
            }
            // Length and flag first; the start published last (with release) makes the
            // slot live for the handler.
            s.len.store(len, Ordering::Relaxed);
            s.poisoned.store(false, Ordering::Relaxed);
            if s.start.compare_exchange(0, start, Ordering::Release, Ordering::Relaxed).is_ok() {
                return Some(Self { slot: i });
            }
        }
        tracing::warn!("{SLOTS} peer mappings watched already: this one is not protected from truncation");
        None
    }

    /// Whether the peer shrank the memory under this range (it now reads zeros).
    #[inline]
    pub fn poisoned(&self) -> bool {
        WATCHED[self.slot].poisoned.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHED[self.slot].start.store(0, Ordering::Release);
    }
}

fn install() {
    INSTALL.call_once(|| {
        let mut sa = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: sa is a zeroed sigaction we fill before use; PREVIOUS is written here
        // once, before our handler (its only reader) is installed, under Once.
        unsafe {
            let p = sa.as_mut_ptr();
            (*p).sa_sigaction = on_sigbus as *const () as usize;
            (*p).sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(std::ptr::addr_of_mut!((*p).sa_mask));
            let prev = std::ptr::addr_of_mut!(PREVIOUS).cast::<libc::sigaction>();
            if libc::sigaction(libc::SIGBUS, p, prev) == 0 {
                INSTALLED.store(true, Ordering::Release);
            } else {
                tracing::warn!(
                    "SIGBUS handler not installed ({}): a peer truncating its memory would kill us",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// The process-wide SIGBUS handler. Only async-signal-safe work: atomics, `mmap`.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &WATCHED {
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        let len = s.len.load(Ordering::Relaxed);
        if addr - start >= len {
            continue;
        }
        // SAFETY: [start, start+len) is a mapping of a peer's memory that its owner keeps
        // (the watch ends before the unmap); replacing it with private zeroed pages at
        // the same address keeps every pointer into it valid, with the same protection.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            s.poisoned.store(true, Ordering::Release);
            EPOCH.fetch_add(1, Ordering::Release);
            return;
        }
        break;
    }
    // Not ours (or the remap failed): what would have happened without us.
    // SAFETY: PREVIOUS was written before this handler was installed and never since.
    unsafe {
        let prev = &*std::ptr::addr_of!(PREVIOUS).cast::<libc::sigaction>();
        let h = prev.sa_sigaction;
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            // The default action: back to it, then the retried access (or a re-raise,
            // for a SIGBUS someone sent) terminates the process as it would have.
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            if (*info).si_code <= 0 {
                libc::raise(libc::SIGBUS);
            }
        } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
            f(sig);
        }
    }
}
