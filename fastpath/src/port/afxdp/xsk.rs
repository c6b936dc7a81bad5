// An AF_XDP socket and its four rings (fill, completion, RX, TX) mapped from the
// kernel: the raw calls and the ring accessors, indices read with acquire and
// published with release as the kernel's side expects.
//! AF_XDP sockets.
#![allow(unsafe_code)]
// The kernel places every ring's descriptors 8-aligned (fill, completion: u64) or
// 16-aligned (RX, TX: struct xdp_desc), so the casts of slot pointers below are aligned.
#![allow(clippy::cast_ptr_alignment)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// How an XSK is bound: copy mode works on every driver, zero-copy where it has support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs into the UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM.
    Copy,
}

/// One ring mapped from the socket.
#[derive(Debug)]
struct Ring {
    map: *mut libc::c_void,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
}

// SAFETY: the ring is memory shared with the kernel; the port that owns it uses it from
// one thread at a time (the worker), and only through atomics and bounded slots.
unsafe impl Send for Ring {}

impl Ring {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, pgoff: u64, size: u32, desc_size: usize) -> io::Result<Self> {
        let map_len = off.desc as usize + size as usize * desc_size;
        // SAFETY: a fresh shared mapping of the socket's ring at the offset the kernel gave.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = |o: u64| (map as usize + o as usize) as *mut u8;
        Ok(Self {
            map,
            map_len,
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            desc: at(off.desc),
            mask: size - 1,
        })
    }

    #[inline(always)]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: inside the mapping (kernel-given offset), 4-aligned, live while self is.
        unsafe { &*self.producer }
    }

    #[inline(always)]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as producer().
        unsafe { &*self.consumer }
    }

    #[inline(always)]
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as producer().
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Address of slot `i` (masked) of `desc_size` bytes.
    #[inline(always)]
    fn slot(&self, i: u32, desc_size: usize) -> *mut u8 {
        // SAFETY: (i & mask) < size, so the slot is inside the mapping.
        unsafe { self.desc.add((i & self.mask) as usize * desc_size) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing points into it after drop.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}

const DESC: usize = std::mem::size_of::<libc::xdp_desc>();
const ADDR: usize = std::mem::size_of::<u64>();

/// An AF_XDP socket bound to one queue of an interface, over a UMEM it registered.
#[derive(Debug)]
pub struct Xsk {
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    fd: OwnedFd,
    /// Our cursors (the kernel's side of each ring is read from the ring).
    rx_cons: u32,
    tx_prod: u32,
    fill_prod: u32,
    comp_cons: u32,
    size: u32,
    mode: BindMode,
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v points to a T that lives across the call; its size is passed.
    let rc = unsafe {
        libc::setsockopt(fd, libc::SOL_XDP, opt, std::ptr::from_ref(v).cast(), std::mem::size_of::<T>() as u32)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Xsk {
    /// Creates a socket over the UMEM at `[umem, umem + umem_len)` (frames of
    /// `frame_size` bytes; the memory must stay mapped as long as the socket lives),
    /// with rings of `ring_size` entries, bound to queue `queue` of interface `ifindex`:
    /// zero-copy if the driver has it, else copy mode.
    pub fn open(
        umem: u64,
        umem_len: u64,
        frame_size: u32,
        ring_size: u32,
        ifindex: u32,
        queue: u32,
    ) -> io::Result<Self> {
        match Self::open_mode(umem, umem_len, frame_size, ring_size, ifindex, queue, BindMode::ZeroCopy) {
            Ok(s) => Ok(s),
            Err(_) => Self::open_mode(umem, umem_len, frame_size, ring_size, ifindex, queue, BindMode::Copy),
        }
    }

    fn open_mode(
        umem: u64,
        umem_len: u64,
        frame_size: u32,
        ring_size: u32,
        ifindex: u32,
        queue: u32,
        mode: BindMode,
    ) -> io::Result<Self> {
        // SAFETY: socket(2); the fd is owned at once.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let reg = libc::xdp_umem_reg {
            addr: umem,
            len: umem_len,
            chunk_size: frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        for opt in [libc::XDP_UMEM_FILL_RING, libc::XDP_UMEM_COMPLETION_RING, libc::XDP_RX_RING, libc::XDP_TX_RING] {
            setsockopt(raw, opt, &ring_size)?;
        }
        // SAFETY: xdp_mmap_offsets is plain old data; zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: the kernel fills in `off` (of `len` bytes), which lives across the call.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                std::ptr::addr_of_mut!(off).cast(),
                std::ptr::addr_of_mut!(len),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let rx = Ring::map(raw, &off.rx, libc::XDP_PGOFF_RX_RING as u64, ring_size, DESC)?;
        let tx = Ring::map(raw, &off.tx, libc::XDP_PGOFF_TX_RING as u64, ring_size, DESC)?;
        let fill = Ring::map(raw, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING, ring_size, ADDR)?;
        let comp = Ring::map(raw, &off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING, ring_size, ADDR)?;
        let flags = libc::XDP_USE_NEED_WAKEUP
            | match mode {
                BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                BindMode::Copy => libc::XDP_COPY,
            };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: sa is a sockaddr_xdp that lives across the call; its size is passed.
        let rc =
            unsafe { libc::bind(raw, std::ptr::addr_of!(sa).cast(), std::mem::size_of::<libc::sockaddr_xdp>() as u32) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let (fill_prod, rx_cons) = (fill.producer().load(Ordering::Relaxed), rx.consumer().load(Ordering::Relaxed));
        let (tx_prod, comp_cons) = (tx.producer().load(Ordering::Relaxed), comp.consumer().load(Ordering::Relaxed));
        Ok(Self { rx, tx, fill, comp, fd, rx_cons, tx_prod, fill_prod, comp_cons, size: ring_size, mode })
    }

    /// How the socket was bound.
    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// The socket's fd (for the XSKMAP, and to sleep on).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Up to `out.len()` received frames as (UMEM offset, length); they stay ours
    /// until given back with [`Self::fill`]. Call [`Self::rx_done`] once read.
    #[inline]
    pub fn rx_peek(&mut self, out: &mut [(u64, u32)]) -> usize {
        let avail = self.rx.producer().load(Ordering::Acquire).wrapping_sub(self.rx_cons);
        let n = (avail as usize).min(out.len());
        for (k, o) in out.iter_mut().take(n).enumerate() {
            let p = self.rx.slot(self.rx_cons.wrapping_add(k as u32), DESC).cast::<libc::xdp_desc>();
            // SAFETY: a descriptor slot inside the RX ring, written by the kernel before the
            // producer store we acquired; read as a copy.
            let d = unsafe { std::ptr::read_volatile(p) };
            *o = (d.addr, d.len);
        }
        n
    }

    /// Gives the `n` descriptors read by [`Self::rx_peek`] back to the kernel's RX side.
    #[inline]
    pub fn rx_done(&mut self, n: usize) {
        self.rx_cons = self.rx_cons.wrapping_add(n as u32);
        self.rx.consumer().store(self.rx_cons, Ordering::Release);
    }

    /// Posts frames (UMEM offsets) to the fill ring for the kernel to receive into;
    /// returns how many fitted.
    #[inline]
    pub fn fill(&mut self, addrs: &[u64]) -> usize {
        let used = self.fill_prod.wrapping_sub(self.fill.consumer().load(Ordering::Acquire));
        let n = (self.size - used.min(self.size)) as usize;
        let n = n.min(addrs.len());
        for (k, &a) in addrs.iter().take(n).enumerate() {
            // SAFETY: a slot of the fill ring the kernel has consumed (bounded by `used`).
            unsafe { std::ptr::write_volatile(self.fill.slot(self.fill_prod.wrapping_add(k as u32), ADDR).cast(), a) };
        }
        self.fill_prod = self.fill_prod.wrapping_add(n as u32);
        self.fill.producer().store(self.fill_prod, Ordering::Release);
        if n > 0 && self.fill.needs_wakeup() {
            self.wake();
        }
        n
    }

    /// Free TX slots.
    #[inline]
    pub fn tx_room(&self) -> u32 {
        let used = self.tx_prod.wrapping_sub(self.tx.consumer().load(Ordering::Acquire));
        self.size - used.min(self.size)
    }

    /// Writes a TX descriptor (not yet visible: [`Self::tx_publish`]). The caller
    /// checked [`Self::tx_room`].
    #[inline]
    pub fn tx_push(&mut self, addr: u64, len: u32) {
        let d = libc::xdp_desc { addr, len, options: 0 };
        // SAFETY: a TX slot the kernel has consumed (the caller checked tx_room).
        unsafe { std::ptr::write_volatile(self.tx.slot(self.tx_prod, DESC).cast(), d) };
        self.tx_prod = self.tx_prod.wrapping_add(1);
    }

    /// TX descriptors published or pushed that the kernel has not taken yet.
    #[inline]
    pub fn tx_pending(&self) -> u32 {
        self.size - self.tx_room()
    }

    /// Publishes the TX descriptors pushed so far and wakes the kernel if it sleeps
    /// (copy mode always needs the call). Called also with nothing new while descriptors
    /// wait: in copy mode the kernel sends only when kicked (at most a budget per kick), and
    /// a kick that found the interface's queue stopped left them in the ring.
    #[inline]
    pub fn tx_publish(&mut self) {
        self.tx.producer().store(self.tx_prod, Ordering::Release);
        if self.mode == BindMode::Copy || self.tx.needs_wakeup() {
            // SAFETY: sendto(2) with no data on our socket: the kernel's TX kick.
            unsafe {
                libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0);
            }
        }
    }

    /// Takes the UMEM offsets of sent frames off the completion ring.
    #[inline]
    pub fn completed(&mut self, out: &mut Vec<u64>) {
        let avail = self.comp.producer().load(Ordering::Acquire).wrapping_sub(self.comp_cons);
        for k in 0..avail {
            // SAFETY: a completion slot the kernel filled before the producer we acquired.
            let a =
                unsafe { std::ptr::read_volatile(self.comp.slot(self.comp_cons.wrapping_add(k), ADDR).cast::<u64>()) };
            out.push(a);
        }
        self.comp_cons = self.comp_cons.wrapping_add(avail);
        self.comp.consumer().store(self.comp_cons, Ordering::Release);
    }

    /// Wakes the kernel's receive side (it asked to be, with need_wakeup).
    fn wake(&self) {
        // SAFETY: a zero-length, non-blocking recvfrom on our socket: the RX kick.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }
}

/// The index of interface `name`, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a NUL-terminated string that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
