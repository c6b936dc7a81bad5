// The vhost-user backend as a Port: owns the socket (listening or connecting),
// feeds messages to the device state machine, and moves packets on its rings.
//! vhost-user backend (device side), used by fastpathd and the benchmarks.

pub mod device;
pub mod queue;

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use device::{ProtocolFault, Reply, VhostDevice};
pub use queue::{copy_chain, read_chain, write_chain, Chain, ChainFault, DeviceQueue};

use crate::cadence::Cadence;
use crate::pool::{Packet, PktPool, DATA_ROOM};
use crate::port::{LinkState, Port, PortCounters};
use crate::spec::NET_HDR_LEN;
use crate::vhost_user::message::{encode, FLAG_REPLY, FLAG_VERSION};
use crate::vhost_user::{Conn, ConnError};

/// The virtio-net header we write on receive (num_buffers = 1).
pub const RX_NET_HDR: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
/// Chains walked ahead of their copies (one burst).
const BATCH: usize = 32;
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
    /// Chains of the batch being moved (kept here: too big to build per call).
    chains: Box<[Chain; BATCH]>,
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
            chains: Box::new([Chain::empty(0); BATCH]),
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

    /// Counters, writable (the switch counts what it moves through the device).
    pub fn counters_mut(&mut self) -> &mut PortCounters {
        &mut self.counters
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
            match Conn::new(s) {
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

    /// Signals the frontend's call eventfd for vring `i` if it asked for interrupts.
    #[inline]
    fn notify(dev: &mut VhostDevice, i: usize) {
        dev.notify(i);
    }

    /// The fds to wait on while the switch sleeps: the listener or the connection
    /// (control messages), and the kick eventfd of the frontend's transmit queue.
    pub fn wait_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = Vec::with_capacity(2);
        match (&self.conn, &self.listener) {
            (Some(c), _) => v.push(c.fd()),
            (None, Some(l)) => v.push(l.as_fd()),
            (None, None) => {}
        }
        if let Some(k) = self.dev.kick_fd(GUEST_TX) {
            v.push(k.as_fd());
        }
        v
    }

    fn dequeue(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> Result<usize, ChainFault> {
        let (mem, q) = self.dev.mem_and_queue(GUEST_TX);
        let Some(q) = q else { return Ok(0) };
        let n = (q.available()? as usize).min(pkts.capacity() - pkts.len()).min(pool.available());
        if n == 0 {
            return Ok(0);
        }
        q.prefetch(n as u16);
        let chains = &mut self.chains;
        let mut got = 0usize;
        let mut bytes = 0u64;
        let mut left = n;
        while left > 0 {
            let k = left.min(BATCH);
            left -= k;
            // Walk the whole batch first, starting the loads of every packet's data, so
            // that the copies below find their lines arriving rather than wait one by one.
            for c in &mut chains[..k] {
                q.pop_into(mem, false, c)?;
                if let Some(s) = c.segs().first() {
                    s.prefetch_at(NET_HDR_LEN);
                }
            }
            for c in &chains[..k] {
                let len = c.total.wrapping_sub(NET_HDR_LEN);
                if c.total < NET_HDR_LEN || len > u32::from(DATA_ROOM) {
                    self.counters.rx_errors += 1;
                    q.push_used(c.head, 0);
                    continue;
                }
                let mut p = pool.alloc().expect("counted");
                let buf = pool.set_len(&mut p, len as usize);
                let (_, ok) = read_chain(mem, c, NET_HDR_LEN, buf);
                q.push_used(c.head, 0);
                if ok {
                    bytes += len as u64;
                    pkts.push(p);
                    got += 1;
                } else {
                    self.counters.rx_errors += 1;
                    pool.free(p);
                }
            }
        }
        q.publish();
        self.counters.rx_packets += got as u64;
        self.counters.rx_bytes += bytes;
        Self::notify(&mut self.dev, GUEST_TX);
        Ok(got)
    }

    fn enqueue(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> Result<usize, ChainFault> {
        let (mem, q) = self.dev.mem_and_queue(GUEST_RX);
        let Some(q) = q else { return Ok(0) };
        let n = (q.available()? as usize).min(pkts.len());
        if n == 0 {
            return Ok(0);
        }
        q.prefetch(n as u16);
        let chains = &mut self.chains;
        let mut sent = 0u64;
        let mut bytes = 0u64;
        let mut res = Ok(());
        let mut taken = 0;
        'batches: for batch in pkts[..n].chunks(BATCH) {
            // Walk the batch's chains first and ask for their header and data lines
            // (the data for writing), then copy.
            let mut k = 0;
            for c in &mut chains[..batch.len()] {
                if let Err(f) = q.pop_into(mem, true, c) {
                    res = Err(f);
                    break;
                }
                if let Some(s) = c.segs().first() {
                    s.prefetch_at(0);
                    s.prefetch_write_at(NET_HDR_LEN);
                }
                k += 1;
            }
            for (c, p) in chains[..k].iter().zip(batch) {
                taken += 1;
                let data = pool.data(p);
                if let Some(len) = write_chain(mem, c, &RX_NET_HDR, data) {
                    q.push_used(c.head, len);
                    sent += 1;
                    bytes += data.len() as u64;
                } else {
                    q.push_used(c.head, 0);
                    self.counters.tx_dropped += 1;
                    self.counters.drop_too_big += 1;
                }
            }
            if res.is_err() {
                break 'batches;
            }
        }
        q.publish();
        for p in pkts.drain(..taken) {
            pool.free(p);
        }
        self.counters.tx_packets += sent;
        self.counters.tx_bytes += bytes;
        Self::notify(&mut self.dev, GUEST_RX);
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
