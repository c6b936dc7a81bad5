// The C ABI of netlib (libfastpath_net): ports opened from a spec or the discovered config,
// bursts of packet handles, buffer access, counters; errors as negative codes plus a thread-local message
// (the ways to open a port are in open.rs).
//! `libfastpath_net`: netlib for C programs.
//!
//! The header `include/fastpath_net.h` is the contract and documents every
//! function; this file implements it. A packet handle (`fp_pkt`) is the index
//! of its buffer in the port's pool; the library tracks which handles the
//! application holds, so a stale, foreign or doubly-freed handle is an error
//! code, never memory corruption. Every entry point checks its pointers for
//! NULL and catches panics, so no argument can crash the process through us.
//! This crate and netlib's `mem`/`ring` modules are the only places with `unsafe`.
#![deny(missing_docs)]

mod open;
pub use open::{fp_open, fp_open_discovered, fp_open_offloads, fp_open_pairs};

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use netlib::mac::Mac;
use netlib::pool::{burst_vec, BURST};
use netlib::{LinkState, Packet, PktPool, Port};

/// Success.
pub const FP_OK: c_int = 0;
/// A required pointer argument is NULL.
pub const FP_ERR_NULL: c_int = -1;
/// An argument is out of range or malformed.
pub const FP_ERR_ARG: c_int = -2;
/// The port (or its pool) could not be opened.
pub const FP_ERR_OPEN: c_int = -3;
/// No free packet buffer.
pub const FP_ERR_NOBUF: c_int = -4;
/// The packet handle is not one the application holds.
pub const FP_ERR_HANDLE: c_int = -5;
/// The link did not come up in time.
pub const FP_ERR_LINK: c_int = -6;
/// No usable discovered configuration (or nothing it says: a port without a MAC).
pub const FP_ERR_CONFIG: c_int = -7;
/// A bug in the library (an internal panic was caught).
pub const FP_ERR_INTERNAL: c_int = -8;

/// Largest pool accepted by `fp_open` (netlib's own limit).
const MAX_POOL: u32 = 1 << 22;

/// A packet handle: the index of its buffer in the port's pool.
#[allow(non_camel_case_types)]
pub type fp_pkt = u32;

/// Port counters, as `struct fp_counters` in the header: the first seven of
/// netlib's [`netlib::PortCounters`], in C's layout (netlib's own type may grow;
/// this one is the ABI and does not).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct fp_counters {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive faults (malformed buffers from the peer).
    pub rx_errors: u64,
    /// Packets refused on transmit.
    pub tx_dropped: u64,
    /// Port resets (peer reconnects, faults).
    pub resets: u64,
}

impl From<netlib::PortCounters> for fp_counters {
    fn from(c: netlib::PortCounters) -> Self {
        Self {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_errors: c.rx_errors,
            tx_dropped: c.tx_dropped,
            resets: c.resets,
        }
    }
}

/// A virtio-net header, as `struct fp_net_hdr` in the header: its first ten bytes
/// (`num_buffers` aside), in host order. What a packet sent on a port opened with
/// [`fp_open_offloads`] asks of the switch.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct fp_net_hdr {
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM (1): the L4 checksum is left to finish.
    pub flags: u8,
    /// VIRTIO_NET_HDR_GSO_NONE (0), _TCPV4 (1) or _TCPV6 (4).
    pub gso_type: u8,
    /// Bytes of headers before the TCP payload.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Where the checksummed bytes start (the L4 header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// An open port with its own pool, as `fp_port` (opaque) in the header.
pub struct FpPort {
    pool: PktPool,
    port: Box<dyn Port>,
    /// The packets the application holds, by buffer index.
    held: Vec<Option<Packet>>,
    burst: Vec<Packet>,
    /// Received packets not handed out yet (a burst brought more than asked for).
    rx_stash: VecDeque<Packet>,
    /// The MAC fastpath-hook gave the port, when it is one of the container's.
    mac: Option<Mac>,
    /// The transmit offloads negotiated (VIRTIO_NET_F_CSUM, HOST_TSO4, HOST_TSO6 bits):
    /// 0 unless opened with [`fp_open_offloads`] and the backend took them.
    tx_features: u64,
    /// The queue pairs of the port this handle is a pair of (1 unless opened with
    /// [`fp_open_pairs`]).
    pairs: usize,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` as this thread's last error and returns `code`.
fn fail(code: c_int, msg: impl Into<String>) -> c_int {
    let mut m = msg.into().into_bytes();
    m.retain(|b| *b != 0);
    let c = CString::new(m).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
    code
}

/// Runs `f`, turning a panic into `FP_ERR_INTERNAL` with a message.
fn guard(what: &str, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(c) => c,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            fail(FP_ERR_INTERNAL, format!("{what}: internal error (please report): {why}"))
        }
    }
}

/// Reads a C string argument; `name` is the parameter's name for messages.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string.
unsafe fn arg_str(s: *const c_char, name: &str, func: &str) -> Result<String, c_int> {
    if s.is_null() {
        return Err(fail(FP_ERR_NULL, format!("{func}: {name} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str().map(str::to_owned).map_err(|_| fail(FP_ERR_ARG, format!("{func}: {name} is not UTF-8")))
}

/// The port behind a pointer.
///
/// # Safety
/// `p` is NULL or a pointer `fp_open*` returned that was not closed.
unsafe fn port<'a>(p: *mut FpPort, func: &str) -> Result<&'a mut FpPort, c_int> {
    // SAFETY: the caller promises an open port from fp_open (or NULL, handled by as_mut).
    unsafe { p.as_mut() }.ok_or_else(|| fail(FP_ERR_NULL, format!("{func}: port is NULL")))
}

impl FpPort {
    /// A port around `pool` and `port`, nothing held.
    fn with(pool: PktPool, port: Box<dyn Port>) -> Self {
        let held = (0..pool.capacity()).map(|_| None).collect();
        Self {
            pool,
            port,
            held,
            burst: burst_vec(),
            rx_stash: VecDeque::with_capacity(BURST),
            mac: None,
            tx_features: 0,
            pairs: 1,
        }
    }

    /// Takes the packet behind handle `h` out of the held set.
    fn take(&mut self, h: fp_pkt) -> Option<Packet> {
        self.held.get_mut(h as usize).and_then(Option::take)
    }

    /// Puts a packet back in the held set; returns its handle.
    fn hold(&mut self, p: Packet) -> fp_pkt {
        let h = p.index();
        self.held[h as usize] = Some(p);
        h
    }

    /// Gives the packets left in the burst back to the application.
    fn unburst(&mut self) {
        let mut back = std::mem::take(&mut self.burst);
        for pkt in back.drain(..) {
            self.hold(pkt);
        }
        self.burst = back;
    }

    fn bad_handle(&self, func: &str, h: fp_pkt) -> c_int {
        let why = if (h as usize) < self.held.len() {
            "the application does not hold it (already freed or sent, or never allocated)"
        } else {
            "it is past the end of the pool"
        };
        fail(FP_ERR_HANDLE, format!("{func}: packet handle {h}: {why}"))
    }
}

impl Drop for FpPort {
    fn drop(&mut self) {
        for p in self.held.iter_mut().filter_map(Option::take) {
            self.pool.free(p);
        }
        self.pool.free_all(&mut self.burst);
        for p in self.rx_stash.drain(..) {
            self.pool.free(p);
        }
    }
}

/// The library version, e.g. "0.1.0" (a static string).
#[no_mangle]
pub extern "C" fn fp_version() -> *const c_char {
    static V: &CStr = c"0.1.0";
    V.as_ptr()
}

/// The message of the last failed call on this thread ("" if none); valid until the
/// next failing call on this thread.
#[no_mangle]
pub extern "C" fn fp_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The transmit offloads the port's backend took: VIRTIO_NET_F_CSUM (bit 0), HOST_TSO4
/// (bit 11), HOST_TSO6 (bit 12); 0 for a port not opened with [`fp_open_offloads`], or
/// whose backend offered none.
///
/// # Safety
/// `port` is NULL or an open port.
#[no_mangle]
pub unsafe extern "C" fn fp_tx_offloads(port: *mut FpPort) -> c_int {
    guard("fp_tx_offloads", || {
        // SAFETY: the caller's contract on port.
        match unsafe { self::port(port, "fp_tx_offloads") } {
            // The three bits are below bit 13: they fit.
            Ok(p) => p.tx_features as c_int,
            Err(c) => c,
        }
    })
}

/// Sets the virtio-net header the packet is sent with on a port opened with
/// [`fp_open_offloads`]: checked against the packet's length now (set it first), so a
/// header the switch would refuse is refused here, naming the field (FP_ERR_ARG).
///
/// # Safety
/// `port` is NULL or an open port; `hdr` is NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn fp_pkt_set_net_hdr(port: *mut FpPort, pkt: fp_pkt, hdr: *const fp_net_hdr) -> c_int {
    guard("fp_pkt_set_net_hdr", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pkt_set_net_hdr") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        // SAFETY: NULL or readable per the contract.
        let Some(h) = (unsafe { hdr.as_ref() }) else {
            return fail(FP_ERR_NULL, "fp_pkt_set_net_hdr: hdr is NULL");
        };
        let FpPort { held, pool, .. } = &mut *p;
        let Some(b) = held.get(pkt as usize).and_then(Option::as_ref) else {
            return p.bad_handle("fp_pkt_set_net_hdr", pkt);
        };
        let mut raw = [0u8; netlib::vnet_hdr::HDR_FIELDS_LEN];
        raw[0] = h.flags;
        raw[1] = h.gso_type;
        for (i, v) in [h.hdr_len, h.gso_size, h.csum_start, h.csum_offset].into_iter().enumerate() {
            raw[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        match netlib::vnet_hdr::VnetHdr::parse(&raw, b.len()) {
            Ok(parsed) => {
                pool.set_net_hdr(b, &parsed);
                FP_OK
            }
            Err(e) => fail(FP_ERR_ARG, format!("fp_pkt_set_net_hdr: packet {pkt} of {} bytes: {e}", b.len())),
        }
    })
}

/// The queue pair (0-based) that the frame `data` (`len` bytes) goes out on to keep its
/// flow in order: the frame's flow hash over the port's pairs, the one fastpathd uses to
/// pick the pair it gives the flow to. 0 for a port of one pair.
///
/// # Safety
/// `port` is NULL or an open port; `data` is NULL or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn fp_pair_of(port: *mut FpPort, data: *const u8, len: u32) -> c_int {
    guard("fp_pair_of", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pair_of") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if data.is_null() {
            return fail(FP_ERR_NULL, "fp_pair_of: data is NULL");
        }
        let n = (len as usize).min(netlib::flow::FLOW_HEAD);
        // SAFETY: not NULL, and the caller promises `len` readable bytes (we read at most n).
        let head = unsafe { std::slice::from_raw_parts(data, n) };
        let pair = netlib::flow::pick(netlib::flow::flow_hash(head), p.pairs);
        c_int::try_from(pair).unwrap_or(FP_ERR_INTERNAL)
    })
}

/// Closes a port and frees everything it holds, including packets the application
/// still holds (their handles become invalid). NULL is ignored.
///
/// # Safety
/// `port` is NULL or an open port; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fp_close(port: *mut FpPort) {
    if port.is_null() {
        return;
    }
    let _ = guard("fp_close", || {
        // SAFETY: an open port from fp_open, given back exactly once per the contract.
        drop(unsafe { Box::from_raw(port) });
        FP_OK
    });
}

/// Drives the port's control path; returns 1 if the link is up, 0 if not.
///
/// # Safety
/// `port` is NULL or an open port.
#[no_mangle]
pub unsafe extern "C" fn fp_link_up(port: *mut FpPort) -> c_int {
    guard("fp_link_up", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_link_up") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        p.port.poll_control(&mut p.pool);
        c_int::from(p.port.link() == LinkState::Up)
    })
}

/// Waits up to `timeout_ms` for the link to come up (driving the control path).
///
/// # Safety
/// `port` is NULL or an open port.
#[no_mangle]
pub unsafe extern "C" fn fp_wait_link(port: *mut FpPort, timeout_ms: u32) -> c_int {
    guard("fp_wait_link", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_wait_link") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        let end = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        loop {
            p.port.poll_control(&mut p.pool);
            if p.port.link() == LinkState::Up {
                return FP_OK;
            }
            if Instant::now() >= end {
                return fail(
                    FP_ERR_LINK,
                    format!("fp_wait_link: {}: link still down after {timeout_ms} ms", p.port.name()),
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// Receives up to `max` packets; writes their handles to `pkts[0..n]` and returns n.
///
/// # Safety
/// `port` is NULL or an open port; `pkts` is NULL or has room for `max` handles.
#[no_mangle]
pub unsafe extern "C" fn fp_rx_burst(port: *mut FpPort, pkts: *mut fp_pkt, max: u32) -> c_int {
    guard("fp_rx_burst", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_rx_burst") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if pkts.is_null() {
            return fail(FP_ERR_NULL, "fp_rx_burst: pkts is NULL");
        }
        let max = max.min(c_int::MAX as u32) as usize;
        // SAFETY: non-NULL, and the caller promises room for max handles.
        let out = unsafe { std::slice::from_raw_parts_mut(pkts, max) };
        let mut n = 0;
        while n < max {
            if p.rx_stash.is_empty() {
                if p.port.rx_burst(&mut p.pool, &mut p.burst) == 0 {
                    break;
                }
                p.rx_stash.extend(p.burst.drain(..));
            }
            // A burst can bring more than max asks for: the rest waits in the stash.
            while n < max {
                let Some(pkt) = p.rx_stash.pop_front() else { break };
                out[n] = p.hold(pkt);
                n += 1;
            }
        }
        n as c_int
    })
}

/// Sends `pkts[0..n]`; returns how many were taken, from the front (their handles
/// now belong to the port); the rest are still the application's.
///
/// # Safety
/// `port` is NULL or an open port; `pkts` is NULL or holds `n` handles.
#[no_mangle]
pub unsafe extern "C" fn fp_tx_burst(port: *mut FpPort, pkts: *const fp_pkt, n: u32) -> c_int {
    guard("fp_tx_burst", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_tx_burst") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if pkts.is_null() {
            return if n == 0 { 0 } else { fail(FP_ERR_NULL, "fp_tx_burst: pkts is NULL") };
        }
        let n = n.min(c_int::MAX as u32) as usize;
        // SAFETY: non-NULL, and the caller promises n handles.
        let handles = unsafe { std::slice::from_raw_parts(pkts, n) };
        let mut sent = 0usize;
        for chunk in handles.chunks(BURST) {
            p.burst.clear();
            for &h in chunk {
                let Some(pkt) = p.take(h) else {
                    // Nothing of this chunk is sent: give its packets back.
                    p.unburst();
                    return if sent == 0 { p.bad_handle("fp_tx_burst", h) } else { sent as c_int };
                };
                p.burst.push(pkt);
            }
            let took = p.port.tx_burst(&mut p.pool, &mut p.burst);
            sent += took;
            if !p.burst.is_empty() {
                p.unburst();
                break;
            }
        }
        sent as c_int
    })
}

/// Takes a free buffer: an empty packet (length 0) whose handle goes to `*pkt`.
///
/// # Safety
/// `port` is NULL or an open port; `pkt` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fp_pkt_alloc(port: *mut FpPort, pkt: *mut fp_pkt) -> c_int {
    guard("fp_pkt_alloc", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pkt_alloc") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if pkt.is_null() {
            return fail(FP_ERR_NULL, "fp_pkt_alloc: pkt is NULL");
        }
        let Some(b) = p.pool.alloc() else {
            return fail(FP_ERR_NOBUF, format!("fp_pkt_alloc: all {} buffers are in use", p.pool.capacity()));
        };
        let h = p.hold(b);
        // SAFETY: non-NULL and writable per the contract.
        unsafe { pkt.write(h) };
        FP_OK
    })
}

/// Takes up to `n` free buffers into `pkts`; returns how many (0 when none is free).
///
/// # Safety
/// `port` is NULL or an open port; `pkts` is NULL or has room for `n` handles.
#[no_mangle]
pub unsafe extern "C" fn fp_pkt_alloc_bulk(port: *mut FpPort, pkts: *mut fp_pkt, n: u32) -> c_int {
    guard("fp_pkt_alloc_bulk", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pkt_alloc_bulk") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if pkts.is_null() {
            return fail(FP_ERR_NULL, "fp_pkt_alloc_bulk: pkts is NULL");
        }
        let n = n.min(c_int::MAX as u32) as usize;
        // SAFETY: non-NULL, and the caller promises room for n handles.
        let out = unsafe { std::slice::from_raw_parts_mut(pkts, n) };
        let mut k = 0;
        while k < n {
            let Some(b) = p.pool.alloc() else { break };
            out[k] = p.hold(b);
            k += 1;
        }
        k as c_int
    })
}

/// Returns a packet the application holds to the pool.
///
/// # Safety
/// `port` is NULL or an open port.
#[no_mangle]
pub unsafe extern "C" fn fp_pkt_free(port: *mut FpPort, pkt: fp_pkt) -> c_int {
    guard("fp_pkt_free", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pkt_free") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        match p.take(pkt) {
            Some(b) => {
                p.pool.free(b);
                FP_OK
            }
            None => p.bad_handle("fp_pkt_free", pkt),
        }
    })
}

/// The packet's data: `*data` gets its first byte's address and `*len` its length
/// (either may be NULL if not wanted). The pointer is valid until the packet is
/// sent or freed, or the port closed.
///
/// # Safety
/// `port` is NULL or an open port; `data` and `len` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fp_pkt_data(port: *mut FpPort, pkt: fp_pkt, data: *mut *mut u8, len: *mut u32) -> c_int {
    guard("fp_pkt_data", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pkt_data") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        let Some(b) = p.held.get(pkt as usize).and_then(Option::as_ref) else {
            return p.bad_handle("fp_pkt_data", pkt);
        };
        let l = b.len() as u32;
        let ptr = p.pool.data_mut(b).as_mut_ptr();
        if !data.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { data.write(ptr) };
        }
        if !len.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { len.write(l) };
        }
        FP_OK
    })
}

/// Sets the packet's data length (0..=`fp_pkt_room`); bytes past the old length are
/// whatever the buffer held.
///
/// # Safety
/// `port` is NULL or an open port.
#[no_mangle]
pub unsafe extern "C" fn fp_pkt_set_len(port: *mut FpPort, pkt: fp_pkt, len: u32) -> c_int {
    guard("fp_pkt_set_len", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pkt_set_len") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        let Some(mut b) = p.take(pkt) else {
            return p.bad_handle("fp_pkt_set_len", pkt);
        };
        let room = p.pool.tailroom(&b);
        let r = if len as usize > room {
            fail(FP_ERR_ARG, format!("fp_pkt_set_len: len {len} is more than the packet's room of {room} bytes"))
        } else {
            p.pool.set_len(&mut b, len as usize);
            FP_OK
        };
        p.hold(b);
        r
    })
}

/// The most bytes the packet can hold (its buffer's room after the data start), or
/// a negative error.
///
/// # Safety
/// `port` is NULL or an open port.
#[no_mangle]
pub unsafe extern "C" fn fp_pkt_room(port: *mut FpPort, pkt: fp_pkt) -> c_int {
    guard("fp_pkt_room", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_pkt_room") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        match p.held.get(pkt as usize).and_then(Option::as_ref) {
            Some(b) => p.pool.tailroom(b) as c_int,
            None => p.bad_handle("fp_pkt_room", pkt),
        }
    })
}

/// Copies the port's counters into `*out`.
///
/// # Safety
/// `port` is NULL or an open port; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fp_counters(port: *mut FpPort, out: *mut fp_counters) -> c_int {
    guard("fp_counters", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_counters") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if out.is_null() {
            return fail(FP_ERR_NULL, "fp_counters: out is NULL");
        }
        let v = fp_counters::from(p.port.counters());
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(v) };
        FP_OK
    })
}

/// Copies the MAC fastpath-hook gave the port (the source MAC its frames must carry
/// when the switch checks them) into `out[0..6]`; `FP_ERR_CONFIG` when it has none
/// (not a port of the container's config), with `out` left as it was.
///
/// # Safety
/// `port` is NULL or an open port; `out` is NULL or 6 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn fp_port_mac(port: *mut FpPort, out: *mut u8) -> c_int {
    guard("fp_port_mac", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_port_mac") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if out.is_null() {
            return fail(FP_ERR_NULL, "fp_port_mac: out is NULL");
        }
        let Some(mac) = p.mac else {
            return fail(
                FP_ERR_CONFIG,
                format!(
                    "fp_port_mac: {} has no MAC: it is not a port fastpath-hook gave this container",
                    p.port.name()
                ),
            );
        };
        // SAFETY: non-NULL and 6 writable bytes per the contract.
        unsafe { std::ptr::copy_nonoverlapping(mac.as_ptr(), out, mac.len()) };
        FP_OK
    })
}

/// Packets the application holds now (allocated or received, not yet sent or freed).
///
/// # Safety
/// `port` is NULL or an open port.
#[no_mangle]
pub unsafe extern "C" fn fp_held(port: *mut FpPort) -> c_int {
    guard("fp_held", || {
        // SAFETY: the caller's contract on port.
        let p = match unsafe { self::port(port, "fp_held") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        p.held.iter().filter(|h| h.is_some()).count() as c_int
    })
}

#[cfg(test)]
mod tests;
