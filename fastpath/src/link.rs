// A one-way link between two workers of the switch: a ring of frame buffers with exactly one
// producer (the worker forwarding to a port it does not own) and one consumer (the port's
// worker). The only unsafe code of the workers' sharing is here.
//! Links between workers.
//!
//! A frame for a port another worker owns is copied into that port's link from this worker
//! ([`LinkTx::send`]); the owner hands what arrived to the port ([`LinkRx::frames`], then
//! [`LinkRx::consume`]). One link per (sending worker, port): frames keep their order, and
//! the port's own worker is the only one that ever touches the port.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use netlib::vhost::FrameBuf;

/// Frames a link holds (a power of two): sixteen bursts, 20 ms of 25,000 frames a second
/// while the receiving worker waits for its CPU. A buffer's pages are touched as frames of
/// its size pass (2 MB of a link's 4.8 MB for 64-byte frames).
pub const LINK_SLOTS: usize = 512;
/// The longest frame a link carries: the largest MTU a port takes (9198), an Ethernet header
/// and a VLAN tag, rounded up. Longer frames (only from ports without an MTU) are dropped
/// and counted as too big.
pub const LINK_FRAME: usize = 9_344;

/// An index, alone on its cache line (the producer's and the consumer's never share one).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Index(AtomicUsize);

/// The ring both ends share.
#[derive(Debug)]
struct Ring {
    bufs: Box<[UnsafeCell<FrameBuf>]>,
    /// Frames published so far (written by the producer only).
    head: Index,
    /// Frames consumed so far (written by the consumer only).
    tail: Index,
}

// SAFETY: a buffer is written only by the producer while it is outside [tail, head) and read
// only by the consumer while inside it; `head` is stored with Release after the buffers are
// written and loaded with Acquire before they are read (and likewise `tail` the other way),
// so no buffer is ever accessed by both ends at once. Each end is a unique, non-Clone owner.
unsafe impl Sync for Ring {}

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
    let ring = Arc::new(Ring {
        bufs: (0..LINK_SLOTS).map(|_| UnsafeCell::new(FrameBuf::with_capacity(LINK_FRAME))).collect(),
        head: Index::default(),
        tail: Index::default(),
    });
    (LinkTx { ring: Arc::clone(&ring), bell }, LinkRx { ring, taken: 0 })
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
    /// Frames shown by the last [`LinkRx::frames`], not consumed yet.
    taken: usize,
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
        let head = r.head.0.load(Ordering::Relaxed);
        let room = LINK_SLOTS - head.wrapping_sub(r.tail.0.load(Ordering::Acquire));
        let mut at = head;
        let mut full = 0;
        for k in 0..n {
            if at.wrapping_sub(head) == room {
                full = n - k;
                break;
            }
            let cell = &r.bufs[at % LINK_SLOTS];
            // SAFETY: slot `at` is outside [tail, head): the consumer does not read it until
            // `head` passes it below, and this end is the only producer (`&mut self`).
            let buf = unsafe { &mut *cell.get() };
            match write(k, buf.room_mut()) {
                Ok(len) => {
                    buf.set_len(len);
                    at = at.wrapping_add(1);
                }
                Err(e) => skipped(e),
            }
        }
        r.head.0.store(at, Ordering::Release);
        if at != head {
            self.bell.ring_if_asleep();
        }
        (at.wrapping_sub(head), full)
    }

    /// Whether the receiving end is gone (the port was removed from its worker).
    pub fn orphaned(&self) -> bool {
        Arc::strong_count(&self.ring) == 1
    }
}

impl LinkRx {
    /// The frames waiting, oldest first: at most `max`, and only up to the ring's end (the
    /// rest come with the next call). They stay until [`Self::consume`].
    pub fn frames(&mut self, max: usize) -> &[FrameBuf] {
        let r = &*self.ring;
        let tail = r.tail.0.load(Ordering::Relaxed);
        let ready = r.head.0.load(Ordering::Acquire).wrapping_sub(tail);
        let from = tail % LINK_SLOTS;
        let n = ready.min(max).min(LINK_SLOTS - from);
        self.taken = n;
        let cells = &r.bufs[from..from + n];
        // SAFETY: these slots are inside [tail, head): published by the producer (Acquire on
        // `head` above) and not written again until `tail` passes them in `consume`, which
        // takes `&mut self` and so ends this borrow first. `UnsafeCell<FrameBuf>` has the
        // layout of `FrameBuf`.
        unsafe { std::slice::from_raw_parts(cells.as_ptr().cast::<FrameBuf>(), n) }
    }

    /// Gives the frames the last [`Self::frames`] showed back to the producer.
    pub fn consume(&mut self) {
        let r = &*self.ring;
        let tail = r.tail.0.load(Ordering::Relaxed);
        r.tail.0.store(tail.wrapping_add(self.taken), Ordering::Release);
        self.taken = 0;
    }

    /// Whether frames are waiting.
    pub fn ready(&self) -> bool {
        let r = &*self.ring;
        r.head.0.load(Ordering::Acquire) != r.tail.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(tx: &mut LinkTx, frames: &[Vec<u8>]) -> (usize, usize) {
        tx.send(
            frames.len(),
            |k, buf: &mut [u8]| -> Result<usize, ()> {
                buf[..frames[k].len()].copy_from_slice(&frames[k]);
                Ok(frames[k].len())
            },
            |()| {},
        )
    }

    #[test]
    fn frames_arrive_in_order_and_a_full_link_refuses_the_rest() {
        let (mut tx, mut rx) = link(Doorbell::new().unwrap());
        let frames: Vec<Vec<u8>> = (0..LINK_SLOTS + 10).map(|i| vec![i as u8; 60 + i % 7]).collect();
        assert_eq!(put(&mut tx, &frames), (LINK_SLOTS, 10), "room for LINK_SLOTS frames only");
        let mut seen = 0;
        loop {
            let got: Vec<Vec<u8>> = rx.frames(32).iter().map(|f| f.as_slice().to_vec()).collect();
            if got.is_empty() {
                break;
            }
            assert_eq!(got, frames[seen..seen + got.len()]);
            seen += got.len();
            rx.consume();
        }
        assert_eq!(seen, LINK_SLOTS);
        assert!(!rx.ready());
        assert_eq!(put(&mut tx, &frames[..3]), (3, 0), "room again once consumed");
        assert_eq!(rx.frames(32).len(), 3);
    }

    #[test]
    fn frames_for_a_sleeping_worker_ring_its_doorbell() {
        let bell = Doorbell::new().unwrap();
        let (mut tx, mut rx) = link(Arc::clone(&bell));
        put(&mut tx, &[vec![1; 60]]);
        assert_eq!(bell.fd.read().ok(), None, "awake: not rung");
        bell.going_to_sleep();
        assert!(rx.ready(), "the last look before sleeping sees what came before");
        put(&mut tx, &[vec![2; 60], vec![3; 60]]);
        assert_eq!(bell.fd.read().ok(), Some(1), "asleep: rung once per send");
        bell.awake();
        put(&mut tx, &[vec![4; 60]]);
        assert_eq!(bell.fd.read().ok(), None);
        assert_eq!(rx.frames(32).len(), 4);
    }

    #[test]
    fn a_frame_the_writer_skips_takes_no_slot() {
        let (mut tx, mut rx) = link(Doorbell::new().unwrap());
        let mut skipped = 0;
        let (went, full) = tx.send(
            3,
            |k, buf| {
                if k == 1 {
                    return Err("too big");
                }
                buf[0] = k as u8;
                Ok(1)
            },
            |_| skipped += 1,
        );
        assert_eq!((went, full, skipped), (2, 0, 1));
        let got: Vec<u8> = rx.frames(32).iter().map(|f| f.as_slice()[0]).collect();
        assert_eq!(got, [0, 2]);
    }

    #[test]
    fn two_threads_pass_a_million_frames_in_order() {
        const N: u32 = 1_000_000;
        let (mut tx, mut rx) = link(Doorbell::new().unwrap());
        let producer = std::thread::spawn(move || {
            let mut next = 0u32;
            while next < N {
                let (went, _) = tx.send(
                    32.min((N - next) as usize),
                    |k, buf: &mut [u8]| -> Result<usize, ()> {
                        buf[..4].copy_from_slice(&(next + k as u32).to_le_bytes());
                        Ok(64)
                    },
                    |()| {},
                );
                next += went as u32;
                if went == 0 {
                    std::thread::yield_now();
                }
            }
            tx
        });
        let mut want = 0u32;
        while want < N {
            let n = {
                let frames = rx.frames(32);
                for f in frames {
                    let got = u32::from_le_bytes(f.as_slice()[..4].try_into().unwrap());
                    assert_eq!((got, f.as_slice().len()), (want, 64));
                    want += 1;
                }
                frames.len()
            };
            rx.consume();
            if n == 0 {
                std::thread::yield_now();
            }
        }
        let tx = producer.join().unwrap();
        assert_eq!(tx.bell.fd.read().ok(), None, "nobody slept: nobody was rung");
        assert!(!tx.orphaned());
        drop(rx);
        assert!(tx.orphaned());
    }
}
