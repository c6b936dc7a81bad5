// The vhost-user backend as a Port: owns the socket (listening or connecting),
// feeds messages to the device state machine, and moves packets on its rings.
//! vhost-user backend (device side), used by fastpathd and the benchmarks.

pub mod device;
mod engine;
mod frame;
pub mod lane;
pub mod offload;
pub mod packed;
pub mod queue;
pub mod virtq;

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use device::{DeviceLimits, ProtocolFault, Reply, VhostDevice, DEFAULT_MAX_MEMORY};
pub use engine::{Burst, Filler};
pub use frame::{copy_chain, read_chain, write_chain, Frame, FrameBuf, Frames, TagEdit, TAG_LEN, TPID_8021Q};
pub use lane::{Lane, LaneRx};
pub use packed::PackedQueue;
pub use queue::{Chain, ChainFault, DeviceQueue};
pub use virtq::{RingQueue, VirtQueue};

use crate::cadence::Cadence;
use crate::pool::{Packet, PktPool, BURST};
use crate::port::{LinkState, Port, PortCounters};
use crate::spec::NET_HDR_LEN;
use crate::vhost_user::message::{encode, FLAG_REPLY, FLAG_VERSION};
use crate::vhost_user::{Conn, ConnError, Request};

/// The virtio-net header we write on receive (num_buffers = 1).
pub const RX_NET_HDR: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
/// Device-side index of the frontend's receive vring (we write into it).
pub const GUEST_RX: usize = 0;
/// Device-side index of the frontend's transmit vring (we read from it).
pub const GUEST_TX: usize = 1;

/// The frontend's receive vring of queue pair `pair`.
#[inline]
pub const fn rx_ring(pair: usize) -> usize {
    GUEST_RX + 2 * pair
}

/// The frontend's transmit vring of queue pair `pair`.
#[inline]
pub const fn tx_ring(pair: usize) -> usize {
    GUEST_TX + 2 * pair
}

/// Whether the backend listens or connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostMode {
    /// Bind the socket and accept one frontend at a time.
    Listen,
    /// Connect to a listening frontend (and reconnect after it goes).
    Connect,
}

/// Errors opening a backend.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// The socket could not be bound.
    #[error("vhost-user {path}: {what}: {source}")]
    Socket {
        /// Path.
        path: PathBuf,
        /// What we were doing.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// Why a port went down.
#[derive(Debug, thiserror::Error)]
pub enum PortFault {
    /// Protocol error.
    #[error(transparent)]
    Protocol(#[from] ProtocolFault),
    /// Ring error.
    #[error(transparent)]
    Chain(#[from] ChainFault),
    /// Socket error.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The frontend shrank the file behind memory it registered (SIGBUS caught).
    #[error("the frontend shrank its shared memory under the switch's mapping (SIGBUS caught; the region read zeros)")]
    MemoryTruncated,
}

/// Control work a frontend may cause, in tokens, refilled with time: a message
/// costs one, a memory table change and a new connection more.
#[derive(Debug)]
struct ControlBudget {
    tokens: u32,
    last: Instant,
}

impl Default for ControlBudget {
    fn default() -> Self {
        Self { tokens: Self::BURST, last: Instant::now() }
    }
}

impl ControlBudget {
    /// Tokens saved up at most (a handshake's worth, many times over).
    const BURST: u32 = 1024;
    /// Tokens earned per second.
    const PER_SEC: u32 = 4000;
    /// A message.
    const MESSAGE: u32 = 1;
    /// A memory table change (mmap, munmap), on top of its message.
    const MEMORY: u32 = 16;
    /// A new connection (accept, its state).
    const CONNECTION: u32 = 16;

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = (now.duration_since(self.last).as_micros() * u128::from(Self::PER_SEC) / 1_000_000) as u32;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(Self::BURST);
            self.last = now;
        }
    }

    /// Takes `n` tokens if there are (at least one), else says no.
    fn take(&mut self, n: u32) -> bool {
        if self.tokens == 0 {
            return false;
        }
        self.tokens = self.tokens.saturating_sub(n);
        true
    }
}

/// While a handshake is under way or a ring waits for its first kick, control (and
/// the kick) is looked at every this many calls.
const HANDSHAKE_CONTROL_EVERY: u32 = 16;
/// How often a port with no frontend looks for one (accept, or connect).
const IDLE_CONTROL_PERIOD: Duration = Duration::from_millis(1);
/// Messages handled in one look at the control path.
const MESSAGES_PER_LOOK: u32 = 16;
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// A vhost-user backend port.
#[derive(Debug)]
pub struct VhostBackend {
    name: String,
    path: PathBuf,
    mode: VhostMode,
    listener: Option<UnixListener>,
    conn: Option<Conn>,
    dev: VhostDevice,
    counters: PortCounters,
    tick: u32,
    cadence: Cadence,
    /// When a port without a frontend looks for one.
    idle: Cadence,
    /// What the frontend may still make us do on the control path.
    budget: ControlBudget,
    /// Connect and disconnect lines: a frontend retrying in a tight loop logs a few a second.
    conn_log: crate::log_limit::LogLimit,
    /// What the frontend may register and send.
    limits: DeviceLimits,
    /// The SIGBUS epoch this port last looked at.
    sigbus_seen: u64,
    last_try: Option<Instant>,
    last_fault: Option<String>,
    /// The burst being received (its chains are too big to build per call).
    burst: Burst,
    /// Receive-side scratch of the engine.
    filler: Filler,
    /// The transmit rings lent to other threads, by queue pair (see [`Self::lend`]).
    lanes: [Option<Lane>; device::MAX_QUEUE_PAIRS as usize],
    /// Whether any is (one check per poll when none).
    lending: bool,
}

impl VhostBackend {
    /// Opens a backend on `path`. In `Listen` mode a stale socket file is replaced.
    pub fn open(path: &Path, mode: VhostMode) -> Result<Self, VhostError> {
        let listener = match mode {
            VhostMode::Listen => {
                let err = |what, source| VhostError::Socket { path: path.to_path_buf(), what, source };
                let _ = std::fs::remove_file(path);
                let l = UnixListener::bind(path).map_err(|e| err("bind", e))?;
                l.set_nonblocking(true).map_err(|e| err("set_nonblocking", e))?;
                Some(l)
            }
            VhostMode::Connect => None,
        };
        Ok(Self {
            name: format!("vhost:{}", path.display()),
            path: path.to_path_buf(),
            mode,
            listener,
            conn: None,
            dev: VhostDevice::new(DeviceLimits::default()),
            counters: PortCounters::default(),
            tick: 0,
            cadence: Cadence::default(),
            idle: Cadence::new(IDLE_CONTROL_PERIOD),
            budget: ControlBudget::default(),
            conn_log: crate::log_limit::LogLimit::default(),
            limits: DeviceLimits::default(),
            sigbus_seen: crate::mem::sigbus::epoch(),
            last_try: None,
            last_fault: None,
            burst: Burst::default(),
            filler: Filler::default(),
            lanes: Default::default(),
            lending: false,
        })
    }

    /// Lends the transmit ring of queue pair `pair` (1 or more) to another thread: from
    /// now on, whenever that ring is live its queue is in the returned lane, polled by
    /// whoever holds a [`LaneRx`] of it, and this backend's own bursts skip it. The
    /// control path stays here: it takes the queue back (waiting for the lane's burst)
    /// whenever the ring changes, and a fault the lane's thread finds resets this port.
    /// Only before a frontend connects; `None` for pair 0, a pair past the port's
    /// [`DeviceLimits::queue_pairs`], or once connected.
    pub fn lend(&mut self, pair: usize) -> Option<Lane> {
        if self.conn.is_some() || pair >= usize::from(self.limits.queue_pairs) {
            return None;
        }
        let lane = Lane::new(pair)?;
        self.lanes[pair] = Some(lane.clone());
        self.lending = true;
        self.dev = self.new_device();
        Some(lane)
    }

    /// A device for the next frontend: the port's limits, its lanes.
    fn new_device(&self) -> VhostDevice {
        VhostDevice::new(self.limits).with_lanes(&self.lanes)
    }

    /// Holds the port's frontends to `limits` (from the next connection on).
    pub fn set_limits(&mut self, limits: DeviceLimits) {
        self.limits = limits;
        if self.conn.is_none() {
            self.dev = self.new_device();
        }
    }

    /// Renames the port in logs.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last fault that reset this port, if any.
    pub fn last_fault(&self) -> Option<&str> {
        self.last_fault.as_deref()
    }

    /// Whether a frontend is connected (handshake maybe not finished).
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The device, when both rings are live.
    #[inline]
    pub fn device_mut(&mut self) -> Option<&mut VhostDevice> {
        self.dev.ready().then_some(&mut self.dev)
    }

    /// The device, when a ring is live (read-only: its memory, for frames).
    #[inline]
    pub fn device(&self) -> Option<&VhostDevice> {
        self.dev.ready().then_some(&self.dev)
    }

    /// Drops the connection after a fault, with one log line naming port and fault. A
    /// fault found while the frontend's memory is poisoned (it shrank the file under our
    /// mapping, which now reads zeros) is that shrink's doing, and is reported as such:
    /// whatever the zeros looked like (an avail index far ahead, a bad descriptor).
    pub fn fault(&mut self, f: &PortFault) {
        let f = if self.dev.mem().poisoned() { &PortFault::MemoryTruncated } else { f };
        if let PortFault::Conn(ConnError::Closed) = f {
            if let Some(more) = self.conn_log.admit(Instant::now()) {
                tracing::info!("{}: frontend disconnected{more}", self.name);
            }
        } else {
            tracing::warn!("{}: {f}; closing the connection", self.name);
        }
        self.last_fault = Some(f.to_string());
        self.counters.resets += 1;
        self.conn = None;
        // The old device's lent queues come back from their lanes as it drops.
        self.dev = self.new_device();
    }

    /// Handles pending messages; accepts or reconnects when unconnected.
    fn control(&mut self) {
        self.budget.refill();
        if self.conn.is_none() {
            if !self.budget.take(ControlBudget::CONNECTION) {
                return;
            }
            let stream = match (&self.listener, self.mode) {
                (Some(l), _) => l.accept().ok().map(|(s, _)| s),
                (None, VhostMode::Connect) => {
                    if self.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
                        return;
                    }
                    self.last_try = Some(Instant::now());
                    UnixStream::connect(&self.path).ok()
                }
                (None, VhostMode::Listen) => None,
            };
            let Some(s) = stream else { return };
            // Replies never wait: a frontend that does not read them is cut off.
            match Conn::new(s).map(|c| c.with_send_wait(Duration::ZERO)) {
                Ok(c) => {
                    if let Some(more) = self.conn_log.admit(Instant::now()) {
                        tracing::info!("{}: frontend connected{more}", self.name);
                    }
                    self.conn = Some(c);
                }
                Err(e) => {
                    if let Some(more) = self.conn_log.admit(Instant::now()) {
                        tracing::warn!("{}: {e}{more}", self.name);
                    }
                }
            }
        }
        if !self.dev.all_started() {
            if let Err(e) = self.dev.poll_kicks() {
                self.fault(&e.into());
                return;
            }
        }
        // A bounded number of messages per look, and a budget over time, so that a
        // chatty (or flooding) frontend can't starve traffic: past the budget its
        // messages wait in its socket, and its sends block.
        for _ in 0..MESSAGES_PER_LOOK {
            let Some(conn) = self.conn.as_mut() else { return };
            if !self.budget.take(ControlBudget::MESSAGE) {
                return;
            }
            match conn.try_recv() {
                Ok(None) => return,
                Ok(Some(raw)) => {
                    let h = raw.header;
                    if matches!(
                        Request::from_code(h.request),
                        Some(Request::SetMemTable | Request::AddMemReg | Request::RemMemReg)
                    ) {
                        // Mapping and unmapping cost more than a message.
                        self.budget.take(ControlBudget::MEMORY);
                    }
                    let res = self.dev.handle(raw);
                    let ack = h.need_reply() && self.dev.reply_ack();
                    let conn = self.conn.as_ref().expect("still connected");
                    let sent = match &res {
                        Ok(Reply::Payload(p)) => conn.send(h.request, FLAG_VERSION | FLAG_REPLY, p, &[]),
                        Ok(Reply::None) if ack => conn.send(h.request, FLAG_VERSION | FLAG_REPLY, &encode::u64(0), &[]),
                        Err(_) if ack => conn.send(h.request, FLAG_VERSION | FLAG_REPLY, &encode::u64(1), &[]),
                        Ok(Reply::None) | Err(_) => Ok(()),
                    };
                    if let Err(e) = res {
                        self.fault(&e.into());
                        return;
                    }
                    if let Err(e) = sent {
                        self.fault(&e.into());
                        return;
                    }
                    if Request::from_code(h.request) == Some(Request::SetFeatures) {
                        if let Some(more) = self.conn_log.admit(Instant::now()) {
                            let (f, ring) = (self.dev.features(), if self.dev.packed() { "packed" } else { "split" });
                            tracing::info!("{}: features {f:#x}, {ring} rings{more}", self.name);
                        }
                    }
                    if self.dev.ready() {
                        tracing::debug!("{}: rings live", self.name);
                    }
                }
                Err(e) => {
                    self.fault(&e.into());
                    return;
                }
            }
        }
    }

    /// Drives the control path: every 5 ms once both rings of the first queue pair are
    /// live (another pair's ring waiting for its first kick is looked at then), every 16
    /// calls during a handshake (or while a first-pair ring waits for its first kick), and
    /// every millisecond while no frontend is connected. Resets the port if its frontend
    /// shrank the memory under our mapping. Returns whether a ring is live.
    #[inline]
    pub fn poll(&mut self) -> bool {
        let due = if self.conn.is_none() {
            self.idle.due()
        } else if self.dev.first_pair_started() {
            self.cadence.due()
        } else {
            self.tick = self.tick.wrapping_add(1);
            self.tick.is_multiple_of(HANDSHAKE_CONTROL_EVERY)
        };
        if due {
            self.control();
        }
        if self.lending {
            let fault = self.lanes.iter().flatten().find_map(Lane::take_fault);
            if let Some(f) = fault {
                self.fault(&f.into());
            }
        }
        let epoch = crate::mem::sigbus::epoch();
        if epoch != self.sigbus_seen {
            self.sigbus_seen = epoch;
            if self.dev.mem().poisoned() {
                self.fault(&PortFault::MemoryTruncated);
            }
        }
        self.dev.ready()
    }

    /// The fd that is readable when the control path has work: the connection, or
    /// the listening socket while no frontend is connected.
    pub fn control_fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.conn, &self.listener) {
            (Some(c), _) => Some(c.fd()),
            (None, Some(l)) => Some(l.as_fd()),
            (None, None) => None,
        }
    }

    /// The kick eventfds of the transmit rings of every queue pair in use (see
    /// [`VhostDevice::pairs`]), with their vring indices.
    pub fn tx_kick_fds(&self) -> impl Iterator<Item = (usize, &std::os::fd::OwnedFd)> + '_ {
        (0..self.dev.pairs()).filter_map(|p| {
            let ring = tx_ring(p);
            self.dev.kick_fd(ring).map(|fd| (ring, fd))
        })
    }

    fn dequeue(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> Result<usize, ChainFault> {
        let mut got = 0usize;
        loop {
            let room = (pkts.capacity() - pkts.len()).min(pool.available());
            if room == 0 || self.burst.pop(&mut self.dev, room)? == 0 {
                break;
            }
            let frames = self.burst.frames(self.dev.mem());
            let room = u32::from(pool.data_room());
            let mut bytes = 0u64;
            let mut ok_n = 0usize;
            for i in 0..frames.len() {
                let f = frames.get(i);
                let len = f.len();
                let runt = matches!(f, Frame::Guest { chain, .. } if chain.total < NET_HDR_LEN);
                if runt || len > room {
                    self.counters.rx_errors += 1;
                    continue;
                }
                let mut p = pool.alloc().expect("bounded by pool.available()");
                if f.read_all(pool.set_len(&mut p, len as usize)) {
                    bytes += u64::from(len);
                    pkts.push(p);
                    ok_n += 1;
                } else {
                    self.counters.rx_errors += 1;
                    pool.free(p);
                }
            }
            let full = frames.len() == BURST;
            self.burst.release(&mut self.dev);
            self.counters.rx_packets += ok_n as u64;
            self.counters.rx_bytes += bytes;
            got += ok_n;
            if !full {
                break;
            }
        }
        Ok(got)
    }

    fn enqueue(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> Result<usize, ChainFault> {
        let (taken, res) = {
            let src: &[Packet] = pkts;
            let pool_ref: &PktPool = pool;
            self.filler.fill(&mut self.dev, src.len(), |i| Frame::Local(pool_ref.data(&src[i])), &mut self.counters)
        };
        for p in pkts.drain(..taken) {
            pool.free(p);
        }
        res.map(|()| taken)
    }
}

impl Port for VhostBackend {
    fn rx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.poll() {
            return 0;
        }
        match self.dequeue(pool, pkts) {
            Ok(n) => n,
            Err(f) => {
                self.fault(&f.into());
                0
            }
        }
    }

    fn tx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.poll() {
            return 0;
        }
        match self.enqueue(pool, pkts) {
            Ok(n) => n,
            Err(f) => {
                self.fault(&f.into());
                0
            }
        }
    }

    fn link(&self) -> LinkState {
        if self.dev.ready() {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn counters(&self) -> PortCounters {
        self.counters
    }

    fn poll_control(&mut self, _pool: &mut PktPool) {
        self.control();
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for VhostBackend {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod indirect_tests;
#[cfg(test)]
mod lane_tests;
#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod mq_tests;
#[cfg(test)]
mod packed_tests;
#[cfg(test)]
pub(crate) mod tests;
