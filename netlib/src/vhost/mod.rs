// The vhost-user backend as a Port: owns the socket (listening or connecting),
// feeds messages to the device state machine, and moves packets on its rings.
//! vhost-user backend (device side), used by fastpathd and the benchmarks.

pub mod device;
mod engine;
mod frame;
pub mod queue;

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use device::{ProtocolFault, Reply, VhostDevice};
pub use engine::{Burst, Filler};
pub use frame::{copy_chain, read_chain, write_chain, Frame, FrameBuf, Frames};
pub use queue::{Chain, ChainFault, DeviceQueue};

use crate::cadence::Cadence;
use crate::pool::{Packet, PktPool, BURST, DATA_ROOM};
use crate::port::{LinkState, Port, PortCounters};
use crate::spec::NET_HDR_LEN;
use crate::vhost_user::message::{encode, FLAG_REPLY, FLAG_VERSION};
use crate::vhost_user::{Conn, ConnError};

/// The virtio-net header we write on receive (num_buffers = 1).
pub const RX_NET_HDR: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
/// Device-side index of the frontend's receive vring (we write into it).
pub const GUEST_RX: usize = 0;
/// Device-side index of the frontend's transmit vring (we read from it).
pub const GUEST_TX: usize = 1;

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
}

/// While one ring waits for its first kick, control (and the kick) is checked more often.
const PARTIAL_CONTROL_EVERY: u32 = 64;
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
    last_try: Option<Instant>,
    last_fault: Option<String>,
    /// The burst being received (its chains are too big to build per call).
    burst: Burst,
    /// Receive-side scratch of the engine.
    filler: Filler,
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
            dev: VhostDevice::default(),
            counters: PortCounters::default(),
            tick: 0,
            cadence: Cadence::default(),
            last_try: None,
            last_fault: None,
            burst: Burst::default(),
            filler: Filler::default(),
        })
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

    /// Drops the connection after a fault, with one log line naming port and fault.
    pub fn fault(&mut self, f: &PortFault) {
        if let PortFault::Conn(ConnError::Closed) = f {
            tracing::info!("{}: frontend disconnected", self.name);
        } else {
            tracing::warn!("{}: {f}; closing the connection", self.name);
        }
        self.last_fault = Some(f.to_string());
        self.counters.resets += 1;
        self.conn = None;
        self.dev = VhostDevice::default();
    }

    /// Handles pending messages; accepts or reconnects when unconnected.
    fn control(&mut self) {
        if self.conn.is_none() {
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
                    tracing::info!("{}: frontend connected", self.name);
                    self.conn = Some(c);
                }
                Err(e) => tracing::warn!("{}: {e}", self.name),
            }
        }
        if !self.dev.all_started() {
            if let Err(e) = self.dev.poll_kicks() {
                self.fault(&e.into());
                return;
            }
        }
        // A bounded number of messages per call, so a chatty peer can't starve traffic.
        for _ in 0..64 {
            let Some(conn) = self.conn.as_mut() else { return };
            match conn.try_recv() {
                Ok(None) => return,
                Ok(Some(raw)) => {
                    let h = raw.header;
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

    /// Drives the control path: every 5 ms while both rings are live, every call
    /// while none is, and every 64 calls while one waits for its first kick.
    /// Returns whether a ring is live.
    #[inline]
    pub fn poll(&mut self) -> bool {
        let due = if self.dev.all_started() {
            self.cadence.due()
        } else {
            self.tick = self.tick.wrapping_add(1);
            !self.dev.ready() || self.tick.is_multiple_of(PARTIAL_CONTROL_EVERY)
        };
        if due {
            self.control();
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

    /// The kick eventfd of the frontend's transmit ring, if it gave one.
    pub fn kick_fd(&self) -> Option<&std::os::fd::OwnedFd> {
        self.dev.kick_fd(GUEST_TX)
    }

    fn dequeue(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> Result<usize, ChainFault> {
        let mut got = 0usize;
        loop {
            let room = (pkts.capacity() - pkts.len()).min(pool.available());
            if room == 0 || self.burst.pop(&mut self.dev, room)? == 0 {
                break;
            }
            let frames = self.burst.frames(self.dev.mem());
            let mut bytes = 0u64;
            let mut ok_n = 0usize;
            for i in 0..frames.len() {
                let f = frames.get(i);
                let len = f.len();
                let runt = matches!(f, Frame::Guest { chain, .. } if chain.total < NET_HDR_LEN);
                if runt || len > u32::from(DATA_ROOM) {
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
mod tests;
