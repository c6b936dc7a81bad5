// The virtio-user PMD: a vhost-user frontend that shares our pool and rings
// with a backend, and the driver side of the two split virtqueues.
//! virtio-user: a vhost-user frontend and the driver side of a virtio-net device.
//!
//! The port's state and its [`Port`] face are here; `queue` holds the driver side of
//! each virtqueue and its burst work, `handshake` the vhost-user set-up of a fresh
//! connection, and `reconnect` the connection's life (going down, coming back).
//! `pairs` opens a port with several queue pairs, a [`VirtioUserPair`] handle per pair
//! for a thread of its own ([`VirtioUser::open_pairs`]).

mod backoff;
mod handshake;
#[cfg(test)]
mod in_order_tests;
#[cfg(test)]
mod merge_tests;
mod pairs;
mod queue;
mod reconnect;
#[cfg(test)]
mod tests;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cadence::Cadence;
use crate::pool::{Packet, PktPool};
use crate::port::{LinkState, PoolCheck, Port, PortCounters};
use crate::vhost_user::{Conn, ConnError};
pub use pairs::{VirtioUserPair, MAX_PAIRS};
use queue::DriverQueue;

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
    /// Take packed rings (VIRTIO_F_RING_PACKED) when the backend offers them; split
    /// rings otherwise, or when it does not.
    pub packed: bool,
    /// Take the transmit offloads the backend offers (VIRTIO_NET_F_CSUM, HOST_TSO4,
    /// HOST_TSO6): frames may then leave their TCP/UDP checksum to finish and be GSO
    /// frames of up to 64 KiB. When they are taken ([`VirtioUser::tx_offloads`]), every
    /// frame sent carries the header its sender wrote with `PktPool::set_net_hdr`: a
    /// buffer's header is zero (asks nothing) unless set since the buffer was last sent,
    /// as the port zeroes a sent frame's header when the backend gives it back, and a
    /// received one's header asks nothing either. When they are not taken, headers are
    /// zeroed as usual and the sender must finish its own checksums.
    pub tx_offloads: bool,
}

impl Default for VirtioUserOptions {
    fn default() -> Self {
        Self {
            queue_size: 256,
            server: false,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(5),
            packed: false,
            tx_offloads: false,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Down,
    Up,
}

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
    /// VIRTIO_NET_F_MRG_RXBUF was negotiated: a received frame may span several buffers.
    mrg_rxbuf: bool,
    /// The transmit offloads negotiated (VIRTIO_NET_F_CSUM, with HOST_TSO4/6 if
    /// offered), 0 if none: frames then carry their sender's header.
    tx_features: u64,
    counters: PortCounters,
    cadence: Cadence,
    /// When the port tries its backend again while down.
    backoff: backoff::Backoff,
    /// When the port went down after having been up (for the "up again" log line).
    down_since: Option<Instant>,
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
            mrg_rxbuf: false,
            tx_features: 0,
            counters: PortCounters::default(),
            cadence: Cadence::default(),
            backoff: backoff::Backoff::default(),
            down_since: None,
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

    /// Whether transmit offloads were negotiated with the backend now connected (asked
    /// for with [`VirtioUserOptions::tx_offloads`]): frames then carry their sender's
    /// virtio-net header, and may be GSO frames (with HOST_TSO4/6: see
    /// [`Self::tx_features`]).
    pub fn tx_offloads(&self) -> bool {
        self.tx_features != 0
    }

    /// The transmit offload features negotiated (VIRTIO_NET_F_CSUM, HOST_TSO4 and
    /// HOST_TSO6 bits): 0 without [`Self::tx_offloads`].
    pub fn tx_features(&self) -> u64 {
        self.tx_features
    }

    /// Whether the rings are packed (VIRTIO_F_RING_PACKED negotiated with the backend now
    /// connected, or the last one).
    pub fn packed(&self) -> bool {
        self.rxq.packed()
    }

    #[inline]
    fn check_pool(&mut self, pool: &PktPool) -> bool {
        self.own_pool.accepts(pool, &self.name, &mut self.counters)
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
        let (got, fault) = self.rxq.rx_burst(pool, pkts, &mut self.counters, self.mrg_rxbuf);
        if let Some(f) = fault {
            self.go_down(pool, &f);
        }
        got
    }

    fn tx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) || !self.tick(pool) {
            return 0;
        }
        let own_headers = self.tx_features != 0;
        match self.txq.tx_burst(pool, pkts, &mut self.counters, self.in_order, own_headers) {
            Ok(n) => n,
            Err(f) => {
                self.go_down(pool, &f);
                0
            }
        }
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
            if let Err(f) = self.txq.reclaim_tx(pool, self.in_order) {
                self.go_down(pool, &f);
                return false;
            }
            if self.txq.all_free() {
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
        if q.arm_call() {
            return true;
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(q.call.as_fd(), PollFlags::POLLIN), PollFd::new(conn.fd(), PollFlags::POLLIN)];
        let woke = poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0;
        let control = fds[1].revents().is_some_and(|r| !r.is_empty());
        q.disarm_call();
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
