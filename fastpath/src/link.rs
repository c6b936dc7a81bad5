// A one-way link between two workers of the switch: a ring of bytes holding frames one after
// the other, with exactly one producer (the worker forwarding to a port it does not own) and
// one consumer (the port's worker). The only unsafe code of the workers' sharing is here.
//! Links between workers.
//!
//! A frame for a port another worker owns is copied into that port's link from this worker
//! ([`LinkTx::send`]); the owner hands what arrived to the port ([`LinkRx::frames`], then
//! [`LinkRx::consume`]). One link per (sending worker, port): frames keep their order, and
//! the port's own worker is the only one that ever touches the port.
//!
//! A link is [`LINK_BYTES`] of memory whatever the frames' sizes: each frame takes a record
//! of an 8-byte header (its length) and its bytes, rounded up to a cache line, so the ring
//! holds 2,048 frames of 64 bytes or 27 of 9,216 (a record never wraps: a marker sends the
//! reader back to the start). Its pages are touched only as frames pass.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use netlib::pool::BURST;
use netlib::vhost::Frames;
use nix::sys::eventfd::{EfdFlags, EventFd};

/// Bytes of frames a link holds: 2,048 frames of 64 bytes (80 ms at 25,000 a second while
/// the receiving worker waits for its CPU), 160 of 1,518.
pub const LINK_BYTES: usize = 256 * 1024;
/// The longest frame a link carries: the largest MTU a port takes (9198), an Ethernet header
/// and a VLAN tag, rounded up. Longer frames (only from ports without an MTU) are dropped
/// and counted as too big.
pub const LINK_FRAME: usize = 9_344;
/// Records start on cache lines (the writer's line is never the reader's).
const ALIGN: usize = 64;
/// A record's header: the frame's length (native-endian `u32`), then padding.
const HEADER: usize = 8;
/// The header of the marker that sends the reader back to the ring's start.
const WRAP: u32 = u32::MAX;
/// The room a writer asks for before writing a frame of a length it does not know yet.
const MOST: usize = HEADER + LINK_FRAME;

const _: () = assert!(LINK_BYTES.is_power_of_two() && LINK_BYTES.is_multiple_of(ALIGN) && MOST < LINK_BYTES / 4);

/// The bytes a frame of `len` bytes takes in the ring.
#[inline]
fn record(len: usize) -> usize {
    (HEADER + len).next_multiple_of(ALIGN)
}

/// An index, alone on its cache line (the producer's and the consumer's never share one).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Index(AtomicUsize);

/// The ring both ends share.
#[derive(Debug)]
struct Ring {
    bytes: Box<[UnsafeCell<u8>]>,
    /// Bytes published so far (written by the producer only).
    head: Index,
    /// Bytes consumed so far (written by the consumer only).
    tail: Index,
}

// SAFETY: bytes are written only by the producer while outside [tail, head) and read only by
// the consumer while inside it; `head` is stored with Release after the bytes are written and
// loaded with Acquire before they are read (and `tail` likewise the other way), so no byte is
// ever accessed by both ends at once. Each end is a unique, non-Clone owner.
unsafe impl Sync for Ring {}

impl Ring {
    fn new() -> Self {
        let zeroed = vec![0u8; LINK_BYTES].into_boxed_slice();
        // SAFETY: `UnsafeCell<u8>` has the layout of `u8` (repr(transparent)): the box's
        // allocation is the same, with the same length.
        let bytes = unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [UnsafeCell<u8>]) };
        Self { bytes, head: Index::default(), tail: Index::default() }
    }

    /// The bytes at `at..at + len` of the ring, to write.
    ///
    /// # Safety
    /// `at + len` is within the ring, and the bytes are the producer's (outside
    /// [tail, head)): no other reference to them exists while the result lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn writable(&self, at: usize, len: usize) -> &mut [u8] {
        debug_assert!(at + len <= LINK_BYTES);
        // SAFETY: the caller's promise; `UnsafeCell::raw_get` makes the pointer writable.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(self.bytes.as_ptr().add(at)), len) }
    }

    /// The bytes at `at..at + len` of the ring, to read.
    ///
    /// # Safety
    /// `at + len` is within the ring, and the bytes are published (inside [tail, head)):
    /// the producer does not write them while the result lives.
    unsafe fn readable(&self, at: usize, len: usize) -> &[u8] {
        debug_assert!(at + len <= LINK_BYTES);
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(UnsafeCell::raw_get(self.bytes.as_ptr().add(at)), len) }
    }

    /// The header of the record at `at` (published).
    fn header(&self, at: usize) -> u32 {
        // SAFETY: a record's header is published with it (the caller reads only inside
        // [tail, head)), and every record's start leaves room for a header.
        let h = unsafe { self.readable(at, 4) };
        u32::from_ne_bytes([h[0], h[1], h[2], h[3]])
    }
}

/// A worker's doorbell: the other workers ring it when they put frames into its links while
/// it sleeps (interrupt mode), so that no frame waits for its sleep to time out.
#[derive(Debug)]
pub struct Doorbell {
    fd: EventFd,
    sleeping: AtomicBool,
}

impl Doorbell {
    /// A doorbell (a non-blocking eventfd).
    pub fn new() -> std::io::Result<Arc<Self>> {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Arc::new(Self { fd, sleeping: AtomicBool::new(false) }))
    }

    /// The worker is about to sleep: from now on frames put into its links ring. Its links
    /// must be looked at once more after this (what came before was not rung for).
    pub fn going_to_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The worker is awake again (the doorbell is quieted).
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
        let _ = self.fd.read();
    }

    /// Rings if the worker sleeps (after frames were published).
    fn ring_if_asleep(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            let _ = self.fd.write(1);
        }
    }

    /// The fd to sleep on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Makes a link to a port of the worker whose doorbell is `bell`: its sending end and its
/// receiving end.
pub fn link(bell: Arc<Doorbell>) -> (LinkTx, LinkRx) {
    let ring = Arc::new(Ring::new());
    let rx = LinkRx { ring: Arc::clone(&ring), spans: [(0, 0); BURST], start: 0, until: 0 };
    (LinkTx { ring, bell }, rx)
}

/// The sending end of a link (one worker's, for one port of another worker).
#[derive(Debug)]
pub struct LinkTx {
    ring: Arc<Ring>,
    /// The receiving worker's.
    bell: Arc<Doorbell>,
}

/// The receiving end of a link (the port's worker's).
#[derive(Debug)]
pub struct LinkRx {
    ring: Arc<Ring>,
    /// Where each frame of the last [`LinkRx::frames`] is, from `start`.
    spans: [(u32, u32); BURST],
    /// Where the last [`LinkRx::frames`] began (past a wrap marker) and ended.
    start: usize,
    until: usize,
}

impl LinkTx {
    /// Writes up to `n` frames into the link: `write(k, buf)` writes frame `k` at the
    /// start of `buf` ([`LINK_FRAME`] bytes) and returns its length, or `Err` to skip it
    /// (its reason is the caller's to count). Publishes them at once; returns how many
    /// went in and how many found the link full.
    pub fn send<E>(
        &mut self,
        n: usize,
        mut write: impl FnMut(usize, &mut [u8]) -> Result<usize, E>,
        mut skipped: impl FnMut(E),
    ) -> (usize, usize) {
        let r = &*self.ring;
        let first = r.head.0.load(Ordering::Relaxed);
        let tail = r.tail.0.load(Ordering::Acquire);
        let mut head = first;
        let (mut went, mut full) = (0, 0);
        for k in 0..n {
            let at = head % LINK_BYTES;
            // The largest record must fit where it starts: else it starts at the ring's start.
            let wrap = if LINK_BYTES - at < MOST { LINK_BYTES - at } else { 0 };
            if (head + wrap + MOST).wrapping_sub(tail) > LINK_BYTES {
                full = n - k;
                break;
            }
            if wrap > 0 {
                // SAFETY: [head, head + wrap + MOST) is free (checked above): the reader is not
                // there, and `at + HEADER` is within the ring (a record start leaves a line).
                let marker = unsafe { r.writable(at, HEADER) };
                marker[..4].copy_from_slice(&WRAP.to_ne_bytes());
                head += wrap;
            }
            let at = head % LINK_BYTES;
            // SAFETY: as above: `at + MOST` is within the ring (no wrap needed now) and free.
            let rec = unsafe { r.writable(at, MOST) };
            match write(k, &mut rec[HEADER..]) {
                Ok(len) => {
                    let len = len.min(LINK_FRAME);
                    rec[..4].copy_from_slice(&(len as u32).to_ne_bytes());
                    head += record(len);
                    went += 1;
                }
                Err(e) => skipped(e),
            }
        }
        if head != first {
            r.head.0.store(head, Ordering::Release);
            self.bell.ring_if_asleep();
        }
        (went, full)
    }

    /// Whether the receiving end is gone (the port was removed from its worker).
    pub fn orphaned(&self) -> bool {
        Arc::strong_count(&self.ring) == 1
    }
}

impl LinkRx {
    /// The frames waiting, oldest first: at most `max` (and [`BURST`]), and only up to the
    /// ring's end (the rest come with the next call). They stay until [`Self::consume`].
    pub fn frames(&mut self, max: usize) -> Frames<'_> {
        let r = &*self.ring;
        let head = r.head.0.load(Ordering::Acquire);
        let mut t = r.tail.0.load(Ordering::Relaxed);
        let mut n = 0;
        self.start = t;
        while n < max.min(BURST) && t != head {
            let at = t % LINK_BYTES;
            let len = r.header(at);
            if len == WRAP {
                if n > 0 {
                    break;
                }
                t += LINK_BYTES - at;
                self.start = t;
                continue;
            }
            let len = (len as usize).min(LINK_FRAME);
            let from = (at - self.start % LINK_BYTES + HEADER) as u32;
            self.spans[n] = (from, len as u32);
            n += 1;
            t += record(len);
            if t.is_multiple_of(LINK_BYTES) {
                break;
            }
        }
        self.until = t;
        let from = self.start % LINK_BYTES;
        // SAFETY: [start, until) is published (up to `head`, loaded with Acquire) and does not
        // wrap (the loop stops at the ring's end and at a marker); the producer does not write
        // it until `consume`, which takes `&mut self` and so ends this borrow first.
        let base = unsafe { r.readable(from, t - self.start) };
        Frames::Spans { base, spans: &self.spans[..n] }
    }

    /// Gives the frames the last [`Self::frames`] showed (and any marker before them) back to
    /// the producer.
    pub fn consume(&mut self) {
        // Written only when it moves: the producer reads this line, an idle pass leaves it be.
        let tail = &self.ring.tail.0;
        if tail.load(Ordering::Relaxed) != self.until {
            tail.store(self.until, Ordering::Release);
        }
    }

    /// Whether frames are waiting.
    pub fn ready(&self) -> bool {
        let r = &*self.ring;
        r.head.0.load(Ordering::Acquire) != r.tail.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
