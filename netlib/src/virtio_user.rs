// The virtio-user PMD: a vhost-user frontend that shares our pool and rings
// with a backend, and the driver side of the two split virtqueues.
//! virtio-user: a vhost-user frontend and the driver side of a virtio-net device.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::cadence::Cadence;
use crate::pool::{Packet, PktPool, DATA_ROOM, HEADROOM};
use crate::port::{LinkState, PoolCheck, Port, PortCounters};
use crate::ring::{Desc, DriverRing};
use crate::spec::{
    NET_HDR_LEN, PROTOCOL_F_CONFIGURE_MEM_SLOTS, PROTOCOL_F_REPLY_ACK, VHOST_USER_F_PROTOCOL_FEATURES,
    VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use crate::vhost_user::conn::RawMsg;
use crate::vhost_user::message::{encode, FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION};
use crate::vhost_user::{Conn, ConnError, MemRegion, Request, VringAddr, VringState};

/// Options for a virtio-user port.
#[derive(Debug, Clone)]
pub struct VirtioUserOptions {
    /// Ring entries per queue (power of two).
    pub queue_size: u16,
    /// Listen for the backend instead of connecting.
    pub server: bool,
    /// How long `open` waits for a listening backend's socket to appear.
    pub connect_timeout: Duration,
    /// How long to wait for each reply during the handshake.
    pub reply_timeout: Duration,
}

impl Default for VirtioUserOptions {
    fn default() -> Self {
        Self {
            queue_size: 256,
            server: false,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors of the virtio-user port.
#[derive(Debug, thiserror::Error)]
pub enum VirtioUserError {
    /// Bad options.
    #[error("virtio-user options: {0}")]
    Options(String),
    /// Socket errors.
    #[error("virtio-user {path}: {what}: {source}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// What we were doing.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// vhost-user connection error.
    #[error("virtio-user {path}: {source}")]
    Conn {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: ConnError,
    },
    /// The backend answered wrongly.
    #[error("virtio-user {path}: backend: {0}", path = .1.display())]
    Backend(String, PathBuf),
    /// A ring could not be made (its size, or its memory).
    #[error("virtio-user {0}")]
    Ring(#[from] crate::ring::DriverRingError),
}

/// One driver-side queue with its packets in flight.
#[derive(Debug)]
struct DriverQueue {
    ring: DriverRing,
    /// Free descriptor ids, oldest first: with a backend that completes in order,
    /// ids cycle in avail order, so avail ring entries never change (no cache-line
    /// ping-pong on them).
    free: VecDeque<u16>,
    /// Packet behind each descriptor id in flight.
    slots: Vec<Option<Packet>>,
    avail_idx: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
}

impl DriverQueue {
    fn new(size: u16) -> Result<Self, VirtioUserError> {
        let ring = DriverRing::new(size, None)?;
        let ev =
            || {
                EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(|e| VirtioUserError::Socket { path: PathBuf::new(), what: "eventfd", source: e.into() })
            };
        Ok(Self {
            ring,
            free: (0..size).collect(),
            slots: (0..size).map(|_| None).collect(),
            avail_idx: 0,
            last_used: 0,
            kick: ev()?,
            call: ev()?,
        })
    }

    /// Returns every packet in flight to the pool and zeroes the ring.
    fn reset(&mut self, pool: &mut PktPool) {
        for s in &mut self.slots {
            if let Some(p) = s.take() {
                pool.free(p);
            }
        }
        self.free.clear();
        self.free.extend(0..self.ring.size());
        self.avail_idx = 0;
        self.last_used = 0;
        self.ring.reset();
    }

    /// Posts free receive descriptors with fresh buffers (the receive queue).
    fn refill_rx(&mut self, pool: &mut PktPool) {
        let mut n = 0u16;
        while let Some(&id) = self.free.front() {
            let Some(p) = pool.alloc() else { break };
            self.free.pop_front();
            self.ring.set_desc(
                id,
                Desc {
                    addr: pool.data_addr(&p) - NET_HDR_LEN as u64,
                    len: NET_HDR_LEN + u32::from(DATA_ROOM),
                    flags: VRING_DESC_F_WRITE,
                    next: 0,
                },
            );
            self.slots[id as usize] = Some(p);
            self.ring.set_avail(self.avail_idx.wrapping_add(n), id);
            n += 1;
        }
        if n > 0 {
            self.avail_idx = self.avail_idx.wrapping_add(n);
            self.ring.publish_avail(self.avail_idx);
        }
    }
}

/// A fresh connection to a backend during the handshake, and the protocol features
/// negotiated on it so far. It borrows the connection (not the port), so that the
/// handshake can attach the port's own fds to a message without duplicating them.
struct Channel<'a> {
    conn: &'a mut Conn,
    path: &'a Path,
    reply_timeout: Duration,
    protocol: u64,
}

impl Channel<'_> {
    fn backend_err(&self, msg: String) -> VirtioUserError {
        VirtioUserError::Backend(msg, self.path.to_path_buf())
    }

    /// Sends a request; with REPLY_ACK negotiated and `ack`, waits for the ack.
    fn request(
        &mut self,
        req: Request,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        ack: bool,
    ) -> Result<(), VirtioUserError> {
        let want_ack = ack && self.protocol & PROTOCOL_F_REPLY_ACK != 0;
        let flags = FLAG_VERSION | if want_ack { FLAG_NEED_REPLY } else { 0 };
        self.conn
            .send(req as u32, flags, payload, fds)
            .map_err(|source| VirtioUserError::Conn { path: self.path.to_path_buf(), source })?;
        if want_ack {
            let v = self.reply_u64(req)?;
            if v != 0 {
                return Err(self.backend_err(format!("{req:?} failed (ack {v})")));
            }
        }
        Ok(())
    }

    fn reply(&mut self, req: Request) -> Result<RawMsg, VirtioUserError> {
        let m = self
            .conn
            .recv_timeout(self.reply_timeout)
            .map_err(|source| VirtioUserError::Conn { path: self.path.to_path_buf(), source })?;
        if m.header.request != req as u32 || m.header.flags & FLAG_REPLY == 0 {
            return Err(self.backend_err(format!(
                "expected a reply to {req:?}, got request {} flags {:#x}",
                m.header.request, m.header.flags
            )));
        }
        Ok(m)
    }

    fn reply_u64(&mut self, req: Request) -> Result<u64, VirtioUserError> {
        let m = self.reply(req)?;
        if m.payload.len() != 8 {
            return Err(self.backend_err(format!("reply to {req:?} has {} bytes, expected 8", m.payload.len())));
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&m.payload);
        Ok(u64::from_le_bytes(b))
    }

    fn get_u64(&mut self, req: Request) -> Result<u64, VirtioUserError> {
        self.request(req, &[], &[], false)?;
        self.reply_u64(req)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Down,
    Up,
}

/// Shares our memory regions with the backend: one ADD_MEM_REG each where it takes them,
/// else one SET_MEM_TABLE.
fn send_memory(ch: &mut Channel<'_>, regions: &[(MemRegion, BorrowedFd<'_>)]) -> Result<(), VirtioUserError> {
    if ch.protocol & PROTOCOL_F_CONFIGURE_MEM_SLOTS != 0 {
        let slots = ch.get_u64(Request::GetMaxMemSlots)?;
        if slots < regions.len() as u64 {
            return Err(ch.backend_err(format!("backend offers {slots} memory slots, we need {}", regions.len())));
        }
        for (r, fd) in regions {
            ch.request(Request::AddMemReg, &encode::one_region(r), &[*fd], true)?;
        }
    } else {
        let table: Vec<MemRegion> = regions.iter().map(|(r, _)| *r).collect();
        let fds: Vec<BorrowedFd<'_>> = regions.iter().map(|(_, f)| *f).collect();
        ch.request(Request::SetMemTable, &encode::mem_table(&table), &fds, true)?;
    }
    Ok(())
}

/// How often a down port retries its backend.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// A virtio-user port: our pool and rings shared with a vhost-user backend.
#[derive(Debug)]
pub struct VirtioUser {
    name: String,
    path: PathBuf,
    opts: VirtioUserOptions,
    listener: Option<UnixListener>,
    conn: Option<Conn>,
    pool_fd: OwnedFd,
    own_pool: PoolCheck,
    pool_len: u64,
    rxq: DriverQueue,
    txq: DriverQueue,
    state: State,
    protocol: u64,
    /// VIRTIO_F_IN_ORDER was negotiated.
    in_order: bool,
    counters: PortCounters,
    cadence: Cadence,
    last_try: Option<Instant>,
    /// The last unusual accept/connect failure, already logged.
    retry_error: Option<String>,
}

impl VirtioUser {
    /// Opens a port on `path` sharing `pool`'s memory. A client waits up to
    /// `connect_timeout` for the backend and does the handshake before
    /// returning; a server returns at once and comes up when a backend connects.
    pub fn open(path: &Path, pool: &mut PktPool, opts: VirtioUserOptions) -> Result<Self, VirtioUserError> {
        if !opts.queue_size.is_power_of_two() || opts.queue_size < 8 || opts.queue_size > 4096 {
            return Err(VirtioUserError::Options(format!(
                "queue size {} must be a power of two in 8..=4096",
                opts.queue_size
            )));
        }
        let sock_err = |what, source| VirtioUserError::Socket { path: path.to_path_buf(), what, source };
        let pool_fd = pool.region().fd().try_clone_to_owned().map_err(|e| sock_err("dup pool fd", e))?;
        let listener = if opts.server {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).map_err(|e| sock_err("bind", e))?;
            l.set_nonblocking(true).map_err(|e| sock_err("set_nonblocking", e))?;
            Some(l)
        } else {
            None
        };
        let mut me = Self {
            name: format!("vu:{}", path.display()),
            path: path.to_path_buf(),
            listener,
            conn: None,
            pool_fd,
            own_pool: PoolCheck::new(pool),
            pool_len: pool.region().map().len() as u64,
            rxq: DriverQueue::new(opts.queue_size)?,
            txq: DriverQueue::new(opts.queue_size)?,
            state: State::Down,
            protocol: 0,
            in_order: false,
            counters: PortCounters::default(),
            cadence: Cadence::default(),
            last_try: None,
            retry_error: None,
            opts,
        };
        if !me.opts.server {
            let deadline = Instant::now() + me.opts.connect_timeout;
            let stream = loop {
                match UnixStream::connect(path) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() >= deadline => return Err(sock_err("connect", e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            me.start(stream, pool)?;
        }
        Ok(me)
    }

    /// Whether VIRTIO_F_IN_ORDER was negotiated with the backend now connected (the
    /// transmit ring is then reclaimed from the used index alone).
    pub fn in_order(&self) -> bool {
        self.in_order
    }

    /// Takes a fresh connection through the whole handshake and brings the port up.
    fn start(&mut self, stream: UnixStream, pool: &mut PktPool) -> Result<(), VirtioUserError> {
        self.rxq.reset(pool);
        self.txq.reset(pool);
        self.conn = None;
        let mut conn = Conn::new(stream).map_err(|e| VirtioUserError::Socket {
            path: self.path.clone(),
            what: "socket setup",
            source: e,
        })?;
        self.protocol = 0;
        self.in_order = false;
        let res = self.handshake(&mut conn, pool);
        match &res {
            Ok(()) => self.conn = Some(conn),
            Err(e) => {
                tracing::warn!("{}: handshake failed: {e}", self.name);
                self.rxq.reset(pool);
                self.txq.reset(pool);
            }
        }
        res
    }

    fn handshake(&mut self, conn: &mut Conn, pool: &mut PktPool) -> Result<(), VirtioUserError> {
        let mut ch = Channel { conn, path: &self.path, reply_timeout: self.opts.reply_timeout, protocol: 0 };
        let features = ch.get_u64(Request::GetFeatures)?;
        if features & VIRTIO_F_VERSION_1 == 0 {
            return Err(ch.backend_err(format!("features {features:#x} lack VIRTIO_F_VERSION_1")));
        }
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            let offered = ch.get_u64(Request::GetProtocolFeatures)?;
            let want = offered & (PROTOCOL_F_REPLY_ACK | PROTOCOL_F_CONFIGURE_MEM_SLOTS);
            ch.request(Request::SetProtocolFeatures, &encode::u64(want), &[], false)?;
            ch.protocol = want;
        }
        ch.request(Request::SetOwner, &[], &[], false)?;
        let ours = VIRTIO_F_VERSION_1 | (features & (VHOST_USER_F_PROTOCOL_FEATURES | VIRTIO_F_IN_ORDER));
        self.in_order = ours & VIRTIO_F_IN_ORDER != 0;
        ch.request(Request::SetFeatures, &encode::u64(ours), &[], true)?;
        send_memory(&mut ch, &self.regions())?;
        // Receive buffers go in before the backend sees the ring.
        self.rxq.refill_rx(pool);
        self.rxq.ring.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
        self.txq.ring.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
        for (qi, q) in [(0u32, &self.rxq), (1, &self.txq)] {
            let l = q.ring.layout();
            let num = encode::state(VringState { index: qi, num: u32::from(l.size) });
            let base = encode::state(VringState { index: qi, num: 0 });
            let addr =
                encode::addr(VringAddr { index: qi, flags: 0, desc: l.desc, used: l.used, avail: l.avail, log: 0 });
            ch.request(Request::SetVringNum, &num, &[], true)?;
            ch.request(Request::SetVringBase, &base, &[], true)?;
            ch.request(Request::SetVringAddr, &addr, &[], true)?;
            ch.request(Request::SetVringKick, &encode::u64(u64::from(qi)), &[q.kick.as_fd()], true)?;
            ch.request(Request::SetVringCall, &encode::u64(u64::from(qi)), &[q.call.as_fd()], true)?;
        }
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            for qi in 0..2u32 {
                let en = encode::state(VringState { index: qi, num: 1 });
                ch.request(Request::SetVringEnable, &en, &[], true)?;
            }
        }
        self.protocol = ch.protocol;
        // Rings start on their first kick (vhost-user spec): kick both once.
        let _ = self.rxq.kick.write(1);
        let _ = self.txq.kick.write(1);
        self.state = State::Up;
        tracing::info!(
            "{}: up (features {ours:#x}, protocol {:#x}, {} entries per ring)",
            self.name,
            self.protocol,
            self.opts.queue_size
        );
        Ok(())
    }

    /// Our memory regions: the pool and the two rings, identity-mapped (VA as address).
    fn regions(&self) -> [(MemRegion, BorrowedFd<'_>); 3] {
        let reg = |addr: u64, len: u64| MemRegion {
            guest_phys_addr: addr,
            memory_size: len,
            userspace_addr: addr,
            mmap_offset: 0,
        };
        let ring = |q: &DriverQueue| {
            let m = q.ring.region().map();
            reg(m.addr(), m.len() as u64)
        };
        [
            (reg(self.own_pool.addr(), self.pool_len), self.pool_fd.as_fd()),
            (ring(&self.rxq), self.rxq.ring.region().fd()),
            (ring(&self.txq), self.txq.ring.region().fd()),
        ]
    }

    fn go_down(&mut self, pool: &mut PktPool, why: &str) {
        tracing::warn!("{}: down: {why}", self.name);
        self.conn = None;
        self.state = State::Down;
        self.counters.resets += 1;
        self.rxq.reset(pool);
        self.txq.reset(pool);
    }

    /// Checks the control socket: peer gone, or (when down) a new backend.
    fn control(&mut self, pool: &mut PktPool) {
        if self.state == State::Up {
            let r = self.conn.as_mut().map(Conn::try_recv);
            match r {
                Some(Ok(None)) | None => {}
                Some(Ok(Some(m))) => {
                    tracing::debug!("{}: ignoring unexpected message {}", self.name, m.header.request);
                }
                Some(Err(e)) => self.go_down(pool, &e.to_string()),
            }
            return;
        }
        if self.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return;
        }
        self.last_try = Some(Instant::now());
        let stream = match &self.listener {
            Some(l) => l.accept().map(|(s, _)| s),
            None => UnixStream::connect(&self.path),
        };
        match stream {
            Ok(s) => {
                self.retry_error = None;
                let _ = s.set_nonblocking(false);
                if let Err(e) = self.start(s, pool) {
                    tracing::warn!("{}: {e}", self.name);
                }
            }
            Err(e) => self.note_retry_error(&e),
        }
    }

    /// A failed accept or connect while down. No backend yet is the usual case and
    /// passes silently; anything else (out of fds, permissions) is logged once, and
    /// retried all the same.
    fn note_retry_error(&mut self, e: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionRefused, NotFound, WouldBlock};
        let text = e.to_string();
        if matches!(e.kind(), WouldBlock | NotFound | ConnectionRefused) || self.retry_error.as_ref() == Some(&text) {
            return;
        }
        let what = if self.listener.is_some() { "accepting a backend" } else { "connecting" };
        tracing::warn!("{}: {what}: {text}; staying down, retrying every {RETRY_EVERY:?}", self.name);
        self.retry_error = Some(text);
    }

    #[inline]
    fn check_pool(&mut self, pool: &PktPool) -> bool {
        self.own_pool.accepts(pool, &self.name, &mut self.counters)
    }

    /// Frees transmitted packets; false if the backend returned a bad id.
    #[inline]
    fn reclaim_tx(&mut self, pool: &mut PktPool) -> Result<(), String> {
        let q = &mut self.txq;
        let used = q.ring.used_idx();
        let pending = used.wrapping_sub(q.last_used);
        if pending > q.ring.size() {
            return Err(format!("tx used index jumped from {} to {used}", q.last_used));
        }
        for _ in 0..pending {
            // In order, the k-th buffer used is the k-th we made available: its id is in
            // our own avail ring, and the used entry (a line the device's core wrote)
            // need not be read at all.
            let id = if self.in_order {
                u32::from(q.ring.avail_entry(q.last_used))
            } else {
                q.ring.used_elem(q.last_used).0
            };
            q.last_used = q.last_used.wrapping_add(1);
            match q.slots.get_mut(id as usize).and_then(Option::take) {
                Some(p) => {
                    pool.free(p);
                    q.free.push_back(id as u16);
                }
                None => return Err(format!("tx used id {id} is not in flight")),
            }
        }
        Ok(())
    }

    #[inline]
    fn tick(&mut self, pool: &mut PktPool) -> bool {
        if self.state != State::Up || self.cadence.due() {
            self.control(pool);
        }
        self.state == State::Up
    }
}

impl Port for VirtioUser {
    fn rx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) || !self.tick(pool) {
            return 0;
        }
        let q = &mut self.rxq;
        let used = q.ring.used_idx();
        let pending = used.wrapping_sub(q.last_used);
        if pending > q.ring.size() {
            self.go_down(pool, &format!("rx used index jumped to {used}"));
            return 0;
        }
        let room = pkts.capacity() - pkts.len();
        let n = (pending as usize).min(room);
        let mut got = 0;
        let mut bytes = 0u64;
        let mut fault = None;
        for _ in 0..n {
            let (id, len) = q.ring.used_elem(q.last_used);
            q.last_used = q.last_used.wrapping_add(1);
            let Some(mut p) = q.slots.get_mut(id as usize).and_then(Option::take) else {
                fault = Some(format!("rx used id {id} is not in flight"));
                break;
            };
            q.free.push_back(id as u16);
            let data_len = len.wrapping_sub(NET_HDR_LEN);
            if len < NET_HDR_LEN || data_len > u32::from(DATA_ROOM) {
                self.counters.rx_errors += 1;
                pool.free(p);
                continue;
            }
            PktPool::reshape(&mut p, HEADROOM, data_len as u16);
            bytes += data_len as u64;
            pkts.push(p);
            got += 1;
        }
        self.counters.rx_packets += got as u64;
        self.counters.rx_bytes += bytes;
        if let Some(f) = fault {
            self.go_down(pool, &f);
            return got;
        }
        if got > 0 {
            self.rxq.refill_rx(pool);
        }
        got
    }

    fn tx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) || !self.tick(pool) {
            return 0;
        }
        if let Err(f) = self.reclaim_tx(pool) {
            self.go_down(pool, &f);
            return 0;
        }
        let q = &mut self.txq;
        let n = pkts.len().min(q.free.len());
        let mut bytes = 0u64;
        for (k, p) in pkts.drain(..n).enumerate() {
            let id = q.free.pop_front().expect("counted");
            // num_buffers (the last two bytes) only means something on receive: left as
            // is, as DPDK's driver does, so a reflected buffer's header is not stored to.
            let hdr = pool.clear_header(&p, NET_HDR_LEN as u16, NET_HDR_LEN as u16 - 2);
            bytes += p.len() as u64;
            q.ring.set_desc(id, Desc { addr: hdr, len: NET_HDR_LEN + p.len() as u32, flags: 0, next: 0 });
            q.ring.set_avail(q.avail_idx.wrapping_add(k as u16), id);
            q.slots[id as usize] = Some(p);
        }
        if n > 0 {
            q.avail_idx = q.avail_idx.wrapping_add(n as u16);
            q.ring.publish_avail(q.avail_idx);
            // Order the avail store before the flag load (the device's fence pairs with it).
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if q.ring.used_flags() & VRING_USED_F_NO_NOTIFY == 0 {
                let _ = q.kick.write(1);
            }
        }
        self.counters.tx_packets += n as u64;
        self.counters.tx_bytes += bytes;
        n
    }

    fn link(&self) -> LinkState {
        match self.state {
            State::Up => LinkState::Up,
            State::Down => LinkState::Down,
        }
    }

    fn counters(&self) -> PortCounters {
        self.counters
    }

    fn poll_control(&mut self, pool: &mut PktPool) {
        if self.check_pool(pool) {
            self.control(pool);
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn flush_tx(&mut self, pool: &mut PktPool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.check_pool(pool) || self.state != State::Up {
                return false;
            }
            if let Err(f) = self.reclaim_tx(pool) {
                self.go_down(pool, &f);
                return false;
            }
            if self.txq.free.len() == usize::from(self.txq.ring.size()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.control(pool);
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn wait_rx(&mut self, pool: &mut PktPool, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        if !self.check_pool(pool) {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return false;
        }
        let Some(conn) = self.conn.as_ref().filter(|_| self.state == State::Up) else {
            self.control(pool);
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return false;
        };
        let q = &self.rxq;
        // Ask for a call, then look once more: packets may have come in between.
        q.ring.set_avail_flags(0);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if q.ring.used_idx() != q.last_used {
            q.ring.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
            return true;
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(q.call.as_fd(), PollFlags::POLLIN), PollFd::new(conn.fd(), PollFlags::POLLIN)];
        let woke = poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0;
        let control = fds[1].revents().is_some_and(|r| !r.is_empty());
        let _ = q.call.read();
        q.ring.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
        if control {
            self.control(pool);
        }
        woke
    }
}

impl Drop for VirtioUser {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{burst_vec, PoolOptions};
    use crate::vhost::{VhostBackend, VhostMode};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn tmp_sock(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("fp-test-vu-{tag}-{}.sock", std::process::id()))
    }

    fn small_pool() -> PktPool {
        PktPool::new(&PoolOptions { nbufs: 512, hugedir: None }).unwrap()
    }

    /// Our vhost-user backend in a thread, connecting to `path` (a server-mode frontend).
    struct Backend {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Backend {
        /// Starts it and waits until it has connected (the connection then waits in the
        /// frontend's listener until the frontend accepts).
        fn connect(path: &Path) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let (connected_tx, connected_rx) = std::sync::mpsc::channel();
            let (path, stop2) = (path.to_path_buf(), Arc::clone(&stop));
            let thread = std::thread::spawn(move || {
                let mut be = VhostBackend::open(&path, VhostMode::Connect).unwrap();
                let mut told = false;
                while !stop2.load(Ordering::Relaxed) {
                    be.poll();
                    if !told && be.connected() {
                        told = connected_tx.send(()).is_ok();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            connected_rx.recv_timeout(Duration::from_secs(5)).expect("backend connected");
            Self { stop, thread: Some(thread) }
        }
    }

    impl Drop for Backend {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Polls `fe` until it is up or `secs` pass.
    fn wait_up(fe: &mut VirtioUser, pool: &mut PktPool, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while fe.link() != LinkState::Up && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            fe.poll_control(pool);
        }
        fe.link() == LinkState::Up
    }

    /// A call with a pool other than the port's own is refused, counted, and touches
    /// neither pool: not even the control path, which would post the wrong pool's buffers.
    #[test]
    fn another_pool_is_refused_and_counted() {
        let path = tmp_sock("wrongpool");
        let (mut own, mut other) = (small_pool(), small_pool());
        let opts = VirtioUserOptions { server: true, ..Default::default() };
        let mut fe = VirtioUser::open(&path, &mut own, opts).unwrap();
        let _be = Backend::connect(&path);
        let full = other.available();
        fe.poll_control(&mut other);
        assert_eq!(fe.link(), LinkState::Down, "no handshake on the wrong pool");
        assert_eq!(other.available(), full);
        assert!(wait_up(&mut fe, &mut own, 5), "up on its own pool");
        let mut pkts = burst_vec();
        other.alloc_bulk(&mut pkts, 4);
        assert_eq!(fe.tx_burst(&mut other, &mut pkts), 0);
        assert_eq!(pkts.len(), 4, "the packets stay with the caller");
        other.free_all(&mut pkts);
        assert_eq!(fe.rx_burst(&mut other, &mut pkts), 0);
        assert!(!fe.flush_tx(&mut other, Duration::ZERO));
        assert!(!fe.wait_rx(&mut other, Duration::ZERO));
        assert_eq!(other.available(), full);
        assert_eq!(fe.counters().wrong_pool, 5);
        assert_eq!(fe.link(), LinkState::Up, "a wrong call does not take the port down");
        own.alloc_bulk(&mut pkts, 4);
        assert_eq!(fe.tx_burst(&mut own, &mut pkts), 4, "its own pool still works");
    }

    /// Set in the child process that runs the body of the test below.
    const FD_CHILD: &str = "NETLIB_TEST_OUT_OF_FDS_CHILD";

    /// A server-mode frontend that finds no free fd when a backend comes (at accept, or
    /// during the handshake) stays down without panicking, and comes up once fds are back.
    /// The body runs in a child process (under `prlimit`), since it takes every fd the
    /// process may have.
    #[test]
    fn reconnect_survives_running_out_of_fds() {
        if std::env::var_os(FD_CHILD).is_some() {
            out_of_fds_body();
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("prlimit")
            .arg("--nofile=512:512")
            .arg(exe)
            .args(["--exact", "virtio_user::tests::reconnect_survives_running_out_of_fds", "--nocapture"])
            .env(FD_CHILD, "1")
            .output()
            .expect("running prlimit (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child: {}\n{text}", out.status);
        assert!(text.contains("1 passed"), "the child ran the test: {text}");
    }

    fn out_of_fds_body() {
        let path = tmp_sock("nofds");
        let mut pool = small_pool();
        let opts = VirtioUserOptions { server: true, reply_timeout: Duration::from_secs(2), ..Default::default() };
        let mut fe = VirtioUser::open(&path, &mut pool, opts).unwrap();
        let backend = Backend::connect(&path);
        // The backend's connection waits in our listener's backlog; now take every fd.
        let mut hog = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hog.push(f);
        }
        assert!(!hog.is_empty());
        fe.poll_control(&mut pool);
        assert_eq!(fe.link(), LinkState::Down, "accept found no fd");
        // One fd: enough to accept, not for the fds the handshake shares.
        hog.pop();
        std::thread::sleep(RETRY_EVERY + Duration::from_millis(10));
        fe.poll_control(&mut pool);
        assert_eq!(fe.link(), LinkState::Down, "the backend could not take our memory's fds");
        drop(hog);
        let up = wait_up(&mut fe, &mut pool, 10);
        drop(backend);
        assert!(up, "up once fds are back");
    }
}
