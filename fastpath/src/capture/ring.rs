// The shared ring a capture runs through: fastpathd's worker copies each captured frame
// into a fixed-size slot of a memfd mapping, fastpathctl maps the same memfd and drains it.
//! Single-producer single-consumer capture ring over a shared memfd.
//!
//! Layout (little-endian): a 256-byte header (magic, slot count, slot size, then the
//! producer's `head`, the consumer's `tail` and the producer's `dropped`, each on its own
//! 64-byte line), then `slots` slots of `slot_size` bytes: captured length (u32), original
//! length (u32), timestamp in ns (u64), direction (u8, 0 inbound, 1 outbound), 7 bytes of
//! padding, then the frame's first bytes. The producer never waits: a full ring drops the
//! frame and counts it. The reader treats the whole mapping as untrusted: it checks the
//! header against the mapping's length and bounds every length it reads.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::pcapng::Direction;

/// "FPCR" in little-endian: the header's magic.
const MAGIC: u32 = 0x5243_5046;
/// Bytes before the first slot.
const HEADER: usize = 256;
/// Offsets of the header's fields.
const OFF_SLOTS: usize = 4;
const OFF_SLOT_SIZE: usize = 8;
const OFF_HEAD: usize = 64;
const OFF_TAIL: usize = 128;
const OFF_DROPPED: usize = 192;
/// Bytes of a slot before the frame's data.
const SLOT_HEADER: usize = 24;
/// The most slots and the largest snaplen a ring accepts (bounds the mapping at 1 GiB).
pub const MAX_SLOTS: u32 = 1 << 16;
/// The largest snaplen (a jumbo frame).
pub const MAX_SNAPLEN: u32 = 16 * 1024;

/// A frame read out of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Nanoseconds since the epoch when the worker saw it.
    pub ts_ns: u64,
    /// Whether the switch received or sent it on the port.
    pub direction: Direction,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// Its first bytes (up to the snaplen).
    pub data: Vec<u8>,
}

/// A shared mapping of a capture ring (either side).
pub struct Ring {
    base: NonNull<u8>,
    len: usize,
    slots: u32,
    slot_size: usize,
    file: File,
}

// SAFETY: the mapping is owned by the Ring and only reached through atomics (the indices)
// or by the one side that owns a slot at a time; moving it to another thread is sound.
unsafe impl Send for Ring {}

impl Ring {
    /// Creates a ring of `slots` slots each holding up to `snaplen` bytes in a new memfd
    /// (the producer's side; pass [`Ring::fd`] to the consumer).
    pub fn create(slots: u32, snaplen: u32) -> io::Result<Self> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(invalid(format!("capture ring slots {slots} (want 1..={MAX_SLOTS})")));
        }
        if snaplen == 0 || snaplen > MAX_SNAPLEN {
            return Err(invalid(format!("capture snaplen {snaplen} (want 1..={MAX_SNAPLEN})")));
        }
        let slot_size = (SLOT_HEADER + snaplen as usize + 7) & !7;
        let len = HEADER + slots as usize * slot_size;
        let fd = nix::sys::memfd::memfd_create(c"fastpath-capture", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(io::Error::from)?;
        let file = File::from(fd);
        file.set_len(len as u64)?;
        let ring = Self::map(file, len, slots, slot_size)?;
        ring.u32_at(0).store(MAGIC, Ordering::Relaxed);
        ring.u32_at(OFF_SLOTS).store(slots, Ordering::Relaxed);
        ring.u32_at(OFF_SLOT_SIZE).store(slot_size as u32, Ordering::Release);
        Ok(ring)
    }

    /// Maps a ring another process created (the consumer's side), checking its header
    /// against the memfd's size.
    pub fn open(fd: OwnedFd) -> io::Result<Self> {
        let file = File::from(fd);
        let len = usize::try_from(file.metadata()?.len()).map_err(|_| invalid("capture ring size".into()))?;
        if len < HEADER {
            return Err(invalid(format!("capture ring of {len} bytes (header is {HEADER})")));
        }
        let mut probe = Self::map(file, len, 0, 0)?;
        let magic = probe.u32_at(0).load(Ordering::Acquire);
        let slots = probe.u32_at(OFF_SLOTS).load(Ordering::Acquire);
        let slot_size = probe.u32_at(OFF_SLOT_SIZE).load(Ordering::Acquire) as usize;
        if magic != MAGIC {
            return Err(invalid(format!("capture ring magic {magic:#x} (want {MAGIC:#x})")));
        }
        if slots == 0 || slots > MAX_SLOTS || slot_size <= SLOT_HEADER || !slot_size.is_multiple_of(8) {
            return Err(invalid(format!("capture ring slots {slots} of {slot_size} bytes")));
        }
        if HEADER + slots as usize * slot_size > len {
            return Err(invalid(format!("capture ring of {len} bytes holds no {slots} slots of {slot_size} bytes")));
        }
        probe.slots = slots;
        probe.slot_size = slot_size;
        Ok(probe)
    }

    fn map(file: File, len: usize, slots: u32, slot_size: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of `len` bytes of a file we hold open; the
        // kernel picks the address, so nothing else is aliased.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| invalid("mmap returned null".into()))?;
        Ok(Self { base, len, slots, slot_size, file })
    }

    /// The most bytes a slot keeps of a frame (the snaplen, rounded up to 8).
    pub fn snaplen(&self) -> usize {
        self.slot_size - SLOT_HEADER
    }

    /// The memfd (to pass to the consumer over SCM_RIGHTS).
    pub fn fd(&self) -> &File {
        &self.file
    }

    // The mapping is page-aligned and `off` is a multiple of the atomic's size.
    #[allow(clippy::cast_ptr_alignment)]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= HEADER && off.is_multiple_of(4));
        // SAFETY: `off` is a 4-aligned constant inside the header, which lies inside the
        // page-aligned mapping that lives as long as `self`; shared access is atomic.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    #[allow(clippy::cast_ptr_alignment)]
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= HEADER && off.is_multiple_of(8));
        // SAFETY: as in `u32_at`, with an 8-aligned constant offset.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// The slot for index `i` as a raw pointer and its size.
    fn slot(&self, i: u64) -> *mut u8 {
        let at = HEADER + (i % u64::from(self.slots)) as usize * self.slot_size;
        // SAFETY: `at + slot_size <= len`: checked by `create`/`open` for every slot index.
        unsafe { self.base.as_ptr().add(at) }
    }

    /// Producer: copies up to the snaplen of `frame` with its timestamp and direction;
    /// when the ring is full the frame is dropped and counted. Never waits.
    pub fn push(&self, ts_ns: u64, direction: Direction, frame: &[u8]) {
        self.push_cut(ts_ns, direction, frame, u32::try_from(frame.len()).unwrap_or(u32::MAX));
    }

    /// Producer: like [`Ring::push`] for a frame of `orig_len` bytes of which `head` (its
    /// first bytes, already read out) is kept.
    pub fn push_cut(&self, ts_ns: u64, direction: Direction, head: &[u8], orig_len: u32) {
        let frame = head;
        let head = self.u64_at(OFF_HEAD).load(Ordering::Relaxed);
        let tail = self.u64_at(OFF_TAIL).load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= u64::from(self.slots) {
            let dropped = self.u64_at(OFF_DROPPED);
            dropped.store(dropped.load(Ordering::Relaxed) + 1, Ordering::Release);
            return;
        }
        let cap = frame.len().min(self.slot_size - SLOT_HEADER);
        let mut hdr = [0u8; SLOT_HEADER];
        hdr[0..4].copy_from_slice(&(cap as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&orig_len.to_le_bytes());
        hdr[8..16].copy_from_slice(&ts_ns.to_le_bytes());
        hdr[16] = u8::from(direction == Direction::Outbound);
        let slot = self.slot(head);
        // SAFETY: the slot is the producer's until `head` is published below (the consumer
        // reads only slots below `head`); SLOT_HEADER + cap <= slot_size bytes are written.
        unsafe {
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), slot, SLOT_HEADER);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(SLOT_HEADER), cap);
        }
        self.u64_at(OFF_HEAD).store(head.wrapping_add(1), Ordering::Release);
    }

    /// Consumer: the next frame, if any. Lengths are bounded by the slot; an index the
    /// producer could not have written is an error.
    pub fn pop(&self) -> io::Result<Option<Captured>> {
        let head = self.u64_at(OFF_HEAD).load(Ordering::Acquire);
        let tail = self.u64_at(OFF_TAIL).load(Ordering::Relaxed);
        if head == tail {
            return Ok(None);
        }
        if head.wrapping_sub(tail) > u64::from(self.slots) {
            return Err(invalid(format!("capture ring head {head} is more than {} past tail {tail}", self.slots)));
        }
        let mut hdr = [0u8; SLOT_HEADER];
        let slot = self.slot(tail);
        // SAFETY: the slot lies inside the mapping (see `slot`); the producer is done with it
        // (below `head`, acquired above). Only SLOT_HEADER bytes are read.
        unsafe { std::ptr::copy_nonoverlapping(slot, hdr.as_mut_ptr(), SLOT_HEADER) };
        let word = |at: usize| u32::from_le_bytes([hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]]);
        let cap = (word(0) as usize).min(self.slot_size - SLOT_HEADER);
        let mut data = vec![0u8; cap];
        // SAFETY: `cap` is bounded by the slot's data area just above.
        unsafe { std::ptr::copy_nonoverlapping(slot.add(SLOT_HEADER), data.as_mut_ptr(), cap) };
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&hdr[8..16]);
        let direction = if hdr[16] == 0 { Direction::Inbound } else { Direction::Outbound };
        self.u64_at(OFF_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        Ok(Some(Captured { ts_ns: u64::from_le_bytes(ts), direction, orig_len: word(4), data }))
    }

    /// Frames the producer dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.u64_at(OFF_DROPPED).load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("snaplen", &self.snaplen()).finish_non_exhaustive()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Takes ownership of a descriptor `recvmsg` just received with SCM_RIGHTS (closed when the
/// result drops).
pub fn adopt_received_fd(raw: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel installed `raw` in this process for this message alone (SCM_RIGHTS);
    // nothing else holds it, so it is owned once, here.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(ring: &Ring) -> Ring {
        Ring::open(OwnedFd::from(ring.fd().try_clone().unwrap())).unwrap()
    }

    #[test]
    fn frames_cross_the_shared_mapping_cut_to_the_snaplen() {
        let prod = Ring::create(4, 8).unwrap();
        let cons = consumer(&prod);
        prod.push(7, Direction::Inbound, &[1, 2, 3]);
        prod.push(9, Direction::Outbound, &[0xAB; 64]);
        let first = cons.pop().unwrap().unwrap();
        assert_eq!(first, Captured { ts_ns: 7, direction: Direction::Inbound, orig_len: 3, data: vec![1, 2, 3] });
        let second = cons.pop().unwrap().unwrap();
        assert_eq!(second.orig_len, 64);
        assert_eq!(second.direction, Direction::Outbound);
        // The slot is rounded up to 8 bytes past its header: 8 bytes of data.
        assert_eq!(second.data, vec![0xAB; 8]);
        assert_eq!(cons.pop().unwrap(), None);
    }

    #[test]
    fn wraps_around() {
        let prod = Ring::create(3, 16).unwrap();
        let cons = consumer(&prod);
        for i in 0..10u8 {
            prod.push(u64::from(i), Direction::Inbound, &[i; 5]);
            let got = cons.pop().unwrap().unwrap();
            assert_eq!((got.ts_ns, got.data), (u64::from(i), vec![i; 5]));
        }
        assert_eq!(cons.dropped(), 0);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let prod = Ring::create(2, 16).unwrap();
        let cons = consumer(&prod);
        for i in 0..5u64 {
            prod.push(i, Direction::Inbound, &[0; 10]);
        }
        assert_eq!(cons.dropped(), 3);
        assert_eq!(cons.pop().unwrap().unwrap().ts_ns, 0);
        assert_eq!(cons.pop().unwrap().unwrap().ts_ns, 1);
        assert_eq!(cons.pop().unwrap(), None);
        prod.push(5, Direction::Inbound, &[0; 10]);
        assert_eq!(cons.pop().unwrap().unwrap().ts_ns, 5);
    }

    #[test]
    fn reader_rejects_a_corrupt_ring() {
        let prod = Ring::create(2, 16).unwrap();
        // A slot count larger than the memfd holds.
        prod.u32_at(OFF_SLOTS).store(1000, Ordering::Relaxed);
        let err = Ring::open(OwnedFd::from(prod.fd().try_clone().unwrap())).err().unwrap();
        assert!(err.to_string().contains("holds no 1000 slots"), "{err}");
        prod.u32_at(OFF_SLOTS).store(2, Ordering::Relaxed);
        // A head too far past the tail, and a length past the slot.
        let cons = consumer(&prod);
        prod.u64_at(OFF_HEAD).store(9, Ordering::Relaxed);
        assert!(cons.pop().is_err());
        prod.u64_at(OFF_HEAD).store(0, Ordering::Relaxed);
        prod.push(1, Direction::Inbound, &[1; 4]);
        // SAFETY: test-only corruption of slot 0's captured length, inside the mapping.
        unsafe { std::ptr::write_unaligned(prod.slot(0).cast::<u32>(), u32::MAX) };
        assert_eq!(cons.pop().unwrap().unwrap().data.len(), 16);
    }
}
