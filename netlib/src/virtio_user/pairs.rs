// virtio-user with several queue pairs (VIRTIO_NET_F_MQ): a handle per pair, each with
// its own pool and rings, for a thread of its own; the connection and the handshake are
// shared, driven by whichever handle is due, and a reset reaches every handle.
//! virtio-user with several queue pairs, a handle per pair.
//!
//! [`VirtioUser::open_pairs`] opens one port with a queue pair per pool given, and returns
//! a [`VirtioUserPair`] for each: a [`Port`] that moves frames on its own pair only, with
//! its own pool and counters, so that each can be moved to a thread of its own and run
//! without locks. The backend spreads the frames it sends over the pairs by flow hash
//! (fastpathd and DPDK do), and a sender keeps a flow's frames in order by sending each
//! flow on one pair: [`VirtioUserPair::pair_of`] says which (the same hash).
//!
//! The connection is the port's, shared: a handle looks at it every few milliseconds when
//! nobody else is (a `try_lock`). When it goes down (the backend went away, or broke a
//! ring), the shared state's generation moves on; each handle, at its next call, takes
//! back the frames in flight on its own rings into its own pool and says so; the port
//! comes up again only once every live handle has (a handle must keep being called:
//! bursts, `poll_control` or `wait_rx`). A handle dropped leaves its pair disabled.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::handshake::{
    identity_region, send_memory, send_vring, tx_offloads_of, Channel, VringSetup, MEM_TABLE_REGIONS,
};
use super::queue::DriverQueue;
use super::reconnect::dial;
use super::{VirtioUser, VirtioUserError, VirtioUserOptions};
use crate::cadence::Cadence;
use crate::flow::{flow_hash, pick};
use crate::pool::{Packet, PktPool};
use crate::port::{LinkState, PoolCheck, Port, PortCounters};
use crate::spec::{
    PROTOCOL_F_CONFIGURE_MEM_SLOTS, PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK, VHOST_USER_F_PROTOCOL_FEATURES,
    VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
};
use crate::vhost_user::message::{encode, FLAG_VERSION};
use crate::vhost_user::{Conn, MemRegion, Request, VringState};

/// Queue pairs a port opened with [`VirtioUser::open_pairs`] may have.
pub const MAX_PAIRS: usize = 16;

/// The state word's up bit; the rest is the generation (`gen << 1`).
const UP: u64 = 1;
/// A handle's acknowledgement once it is dropped: no generation waits for it.
const RETIRED: u64 = u64::MAX;

/// What every handle of a port shares.
#[derive(Debug)]
struct Shared {
    /// `gen << 1 | UP`: the generation moves on each time the port goes down.
    state: AtomicU64,
    /// Per pair, the generation whose reset the handle has done ([`RETIRED`] once dropped).
    acks: Vec<AtomicU64>,
    /// The features negotiated by the handshake of the current generation (stored before
    /// the state says up).
    features: AtomicU64,
    /// The connection and its life.
    ctl: Mutex<Control>,
}

impl Shared {
    fn ctl(&self) -> MutexGuard<'_, Control> {
        // A handle that panicked holding the lock left nothing half-written that matters:
        // every step of the control path starts from the state word.
        self.ctl.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A pair's rings as the handshake shares them: the regions, addresses and eventfds,
/// duplicated from the handle's own (its rings never move: their layout is chosen at
/// open).
#[derive(Debug)]
struct PairRings {
    rx: RingFds,
    tx: RingFds,
}

#[derive(Debug)]
struct RingFds {
    region: MemRegion,
    region_fd: OwnedFd,
    addrs: super::queue::RingAddrs,
    base: u32,
    kick: OwnedFd,
    call: OwnedFd,
}

impl RingFds {
    fn of(q: &DriverQueue) -> std::io::Result<Self> {
        let m = q.region().map();
        Ok(Self {
            region: identity_region(m.addr(), m.len() as u64),
            region_fd: q.region().fd().try_clone_to_owned()?,
            addrs: q.addrs(),
            base: q.base(),
            kick: q.kick.as_fd().try_clone_to_owned()?,
            call: q.call.as_fd().try_clone_to_owned()?,
        })
    }

    fn setup(&self, index: u32) -> VringSetup<'_> {
        VringSetup { index, addrs: self.addrs, base: self.base, kick: self.kick.as_fd(), call: self.call.as_fd() }
    }
}

/// The port's connection and what its handshake needs.
#[derive(Debug)]
struct Control {
    name: String,
    path: PathBuf,
    opts: VirtioUserOptions,
    listener: Option<UnixListener>,
    conn: Option<Conn>,
    /// Each pool's region (identity-mapped) and a duplicate of its fd.
    pools: Vec<(MemRegion, OwnedFd)>,
    rings: Vec<PairRings>,
    backoff: Backoff,
    down_since: Option<Instant>,
    retry_error: Option<String>,
    /// Times the port went down.
    resets: u64,
}

impl Control {
    /// Goes down (from the generation in `state`), with one log line saying why.
    fn go_down(&mut self, shared: &Shared, why: &str) {
        let s = shared.state.load(Ordering::Acquire);
        if s & UP == 0 {
            return;
        }
        tracing::warn!("{}: down: {why}; reconnecting", self.name);
        self.conn = None;
        self.down_since = Some(Instant::now());
        self.backoff.reset();
        self.resets += 1;
        shared.state.store((s | UP) + 1, Ordering::Release);
    }

    /// One look at the control path: the peer gone when up; when down, a new backend once
    /// every live handle has reset its rings.
    fn step(&mut self, shared: &Shared) {
        let s = shared.state.load(Ordering::Acquire);
        if s & UP != 0 {
            match self.conn.as_mut().map(Conn::try_recv) {
                Some(Ok(None)) => {}
                Some(Ok(Some(m))) => tracing::debug!("{}: ignoring unexpected message {}", self.name, m.header.request),
                Some(Err(e)) => self.go_down(shared, &e.to_string()),
                None => self.go_down(shared, "no connection"),
            }
            return;
        }
        let gen = s >> 1;
        let reset = shared.acks.iter().map(|a| a.load(Ordering::Acquire)).all(|a| a == gen || a == RETIRED);
        if !reset {
            return;
        }
        let Some(stream) =
            dial(&self.name, &self.path, self.listener.as_ref(), &mut self.backoff, &mut self.retry_error)
        else {
            return;
        };
        if let Err(e) = self.start(shared, stream) {
            tracing::warn!("{}: {e}", self.name);
            self.backoff.failed();
        }
    }

    /// Takes a fresh connection through the handshake; the port is up when it returns Ok.
    fn start(&mut self, shared: &Shared, stream: UnixStream) -> Result<(), VirtioUserError> {
        let mut conn = Conn::new(stream).map_err(|e| VirtioUserError::Socket {
            path: self.path.clone(),
            what: "socket setup",
            source: e,
        })?;
        let retired: Vec<bool> = shared.acks.iter().map(|a| a.load(Ordering::Acquire) == RETIRED).collect();
        let features = self.handshake(&mut conn, &retired).inspect_err(|e| {
            tracing::warn!("{}: handshake failed: {e}", self.name);
            // The backend may have started on our rings before it failed: the generation
            // moves on, so that every pair resets its rings before the next try.
            let s = shared.state.load(Ordering::Acquire);
            shared.state.store(s + 2, Ordering::Release);
        })?;
        self.conn = Some(conn);
        self.backoff.reset();
        shared.features.store(features, Ordering::Relaxed);
        let s = shared.state.load(Ordering::Acquire);
        shared.state.store(s | UP, Ordering::Release);
        if let Some(t) = self.down_since.take() {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            tracing::info!("{}: up again after {ms:.1} ms down (reset {})", self.name, self.resets);
        }
        Ok(())
    }

    /// Negotiates features (with MQ), shares every pool and ring, and sets up and enables
    /// every pair (a `retired` one's rings are set up but left disabled). Returns the
    /// features negotiated.
    fn handshake(&self, conn: &mut Conn, retired: &[bool]) -> Result<u64, VirtioUserError> {
        let pairs = self.rings.len();
        let mut ch = Channel::new(conn, &self.path, self.opts.reply_timeout);
        let features = ch.get_u64(Request::GetFeatures)?;
        if features & VIRTIO_F_VERSION_1 == 0 {
            return Err(ch.backend_err(format!("features {features:#x} lack VIRTIO_F_VERSION_1")));
        }
        if features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            return Err(ch.backend_err(format!(
                "features {features:#x} lack VHOST_USER_F_PROTOCOL_FEATURES: it cannot take {pairs} queue pairs"
            )));
        }
        let offered = ch.get_u64(Request::GetProtocolFeatures)?;
        if offered & PROTOCOL_F_MQ == 0 {
            return Err(
                ch.backend_err(format!("protocol features {offered:#x} lack MQ: it cannot take {pairs} queue pairs"))
            );
        }
        let want = offered & (PROTOCOL_F_REPLY_ACK | PROTOCOL_F_CONFIGURE_MEM_SLOTS | PROTOCOL_F_MQ);
        ch.request(Request::SetProtocolFeatures, &encode::u64(want), &[], false)?;
        ch.protocol = want;
        let queues = ch.get_u64(Request::GetQueueNum)?;
        if queues < pairs as u64 {
            return Err(ch.backend_err(format!("it takes {queues} queue pair(s), this port has {pairs}")));
        }
        ch.request(Request::SetOwner, &[], &[], false)?;
        if self.opts.packed && features & VIRTIO_F_RING_PACKED == 0 {
            return Err(ch.backend_err(format!(
                "features {features:#x} lack VIRTIO_F_RING_PACKED, which this port's rings were made for \
                 (several pairs choose their ring layout when opened: open them without `packed`)"
            )));
        }
        let ours = VIRTIO_F_VERSION_1
            | features & (VHOST_USER_F_PROTOCOL_FEATURES | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_F_IN_ORDER)
            | features & VIRTIO_NET_F_MQ
            | if self.opts.packed { VIRTIO_F_RING_PACKED } else { 0 }
            | if self.opts.tx_offloads { tx_offloads_of(features) } else { 0 };
        ch.request(Request::SetFeatures, &encode::u64(ours), &[], true)?;
        let mut regions: Vec<(MemRegion, std::os::fd::BorrowedFd<'_>)> =
            self.pools.iter().map(|(r, fd)| (*r, fd.as_fd())).collect();
        for p in &self.rings {
            regions.push((p.rx.region, p.rx.region_fd.as_fd()));
            regions.push((p.tx.region, p.tx.region_fd.as_fd()));
        }
        if ch.protocol & PROTOCOL_F_CONFIGURE_MEM_SLOTS == 0 && regions.len() > MEM_TABLE_REGIONS {
            return Err(ch.backend_err(format!(
                "{pairs} queue pairs share {} memory regions (a pool and two rings each), and the backend, without \
                 CONFIGURE_MEM_SLOTS, takes {MEM_TABLE_REGIONS}: use at most {} pairs with it",
                regions.len(),
                MEM_TABLE_REGIONS / 3
            )));
        }
        send_memory(&mut ch, &regions)?;
        for (p, rings) in self.rings.iter().enumerate() {
            let rx = 2 * p as u32;
            send_vring(&mut ch, &rings.rx.setup(rx))?;
            send_vring(&mut ch, &rings.tx.setup(rx + 1))?;
        }
        for (p, gone) in retired.iter().enumerate() {
            for qi in [2 * p as u32, 2 * p as u32 + 1] {
                let en = encode::state(VringState { index: qi, num: u32::from(!gone) });
                ch.request(Request::SetVringEnable, &en, &[], true)?;
            }
        }
        // Rings start on their first kick (vhost-user spec).
        for (rings, gone) in self.rings.iter().zip(retired) {
            if !gone {
                let _ = nix::unistd::write(rings.rx.kick.as_fd(), &1u64.to_ne_bytes());
                let _ = nix::unistd::write(rings.tx.kick.as_fd(), &1u64.to_ne_bytes());
            }
        }
        tracing::info!(
            "{}: up (features {ours:#x}, protocol {:#x}, {pairs} queue pairs of {} entries per {} ring)",
            self.name,
            ch.protocol,
            self.opts.queue_size,
            if self.opts.packed { "packed" } else { "split" }
        );
        Ok(ours)
    }

    /// Tells the backend (if connected) that pair `p` is no longer used.
    fn disable(&mut self, p: usize) {
        let Some(conn) = &self.conn else { return };
        for qi in [2 * p as u32, 2 * p as u32 + 1] {
            let en = encode::state(VringState { index: qi, num: 0 });
            let _ = conn.send(Request::SetVringEnable as u32, FLAG_VERSION, &en, &[]);
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One queue pair of a virtio-user port opened with [`VirtioUser::open_pairs`]: a
/// [`Port`] of its own, with its own pool, rings and counters, for a thread of its own.
#[derive(Debug)]
pub struct VirtioUserPair {
    name: String,
    pair: usize,
    pairs: usize,
    shared: Arc<Shared>,
    own_pool: PoolCheck,
    rxq: DriverQueue,
    txq: DriverQueue,
    /// The state word this handle last caught up with.
    seen: u64,
    /// Of the features negotiated, those the bursts need.
    in_order: bool,
    mrg_rxbuf: bool,
    tx_features: u64,
    counters: PortCounters,
    cadence: Cadence,
}

impl VirtioUser {
    /// Opens one port on `path` with a queue pair per pool in `pools` (1 to
    /// [`MAX_PAIRS`]), and returns a handle per pair, in order: pair `p` moves frames
    /// with `pools[p]` only. A client waits up to `connect_timeout` for the backend and
    /// does the handshake before returning; a server returns at once and comes up when a
    /// backend connects (driven by whichever handle is called).
    ///
    /// The backend must offer MQ (PROTOCOL_F_MQ, and GET_QUEUE_NUM at least the pairs).
    /// Each pair shares its pool and two rings: a backend without CONFIGURE_MEM_SLOTS
    /// (8 regions) takes at most two pairs. With `packed`, the rings are packed from the
    /// start, and a backend that does not offer them is refused (one pair falls back to
    /// split rings; several cannot, as their rings are made at open).
    pub fn open_pairs(
        path: &Path,
        pools: &mut [PktPool],
        opts: VirtioUserOptions,
    ) -> Result<Vec<VirtioUserPair>, VirtioUserError> {
        let pairs = pools.len();
        if !(1..=MAX_PAIRS).contains(&pairs) {
            return Err(VirtioUserError::Options(format!("{pairs} queue pairs: a port takes 1 to {MAX_PAIRS}")));
        }
        if !opts.queue_size.is_power_of_two() || opts.queue_size < 8 || opts.queue_size > 4096 {
            return Err(VirtioUserError::Options(format!(
                "queue size {} must be a power of two in 8..=4096",
                opts.queue_size
            )));
        }
        let sock_err = |what, source| VirtioUserError::Socket { path: path.to_path_buf(), what, source };
        let name = format!("vu:{}", path.display());
        let mut queues = Vec::with_capacity(pairs);
        let mut pool_regions = Vec::with_capacity(pairs);
        let mut rings = Vec::with_capacity(pairs);
        for pool in pools.iter() {
            let mut rxq = DriverQueue::new(opts.queue_size)?;
            let mut txq = DriverQueue::new(opts.queue_size)?;
            rxq.set_layout(opts.packed)?;
            txq.set_layout(opts.packed)?;
            let m = pool.region().map();
            let fd = pool.region().fd().try_clone_to_owned().map_err(|e| sock_err("dup pool fd", e))?;
            pool_regions.push((identity_region(m.addr(), m.len() as u64), fd));
            let fds = |q: &DriverQueue| RingFds::of(q).map_err(|e| sock_err("dup ring fds", e));
            rings.push(PairRings { rx: fds(&rxq)?, tx: fds(&txq)? });
            queues.push((rxq, txq));
        }
        let listener = if opts.server {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).map_err(|e| sock_err("bind", e))?;
            l.set_nonblocking(true).map_err(|e| sock_err("set_nonblocking", e))?;
            Some(l)
        } else {
            None
        };
        let server = opts.server;
        let connect_timeout = opts.connect_timeout;
        let ctl = Control {
            name: name.clone(),
            path: path.to_path_buf(),
            opts,
            listener,
            conn: None,
            pools: pool_regions,
            rings,
            backoff: Backoff::default(),
            down_since: None,
            retry_error: None,
            resets: 0,
        };
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            acks: (0..pairs).map(|_| AtomicU64::new(0)).collect(),
            features: AtomicU64::new(0),
            ctl: Mutex::new(ctl),
        });
        let mut handles: Vec<VirtioUserPair> = queues
            .into_iter()
            .zip(pools.iter())
            .enumerate()
            .map(|(p, ((rxq, txq), pool))| VirtioUserPair {
                name: format!("{name}#{p}"),
                pair: p,
                pairs,
                shared: Arc::clone(&shared),
                own_pool: PoolCheck::new(pool),
                rxq,
                txq,
                seen: 0,
                in_order: false,
                mrg_rxbuf: false,
                tx_features: 0,
                counters: PortCounters::default(),
                cadence: Cadence::default(),
            })
            .collect();
        if !server {
            // Receive buffers go in before the backend sees the rings.
            for (h, pool) in handles.iter_mut().zip(pools.iter_mut()) {
                h.rxq.refill_rx(pool);
                h.quiet();
            }
            let deadline = Instant::now() + connect_timeout;
            let stream = loop {
                match UnixStream::connect(path) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() >= deadline => return Err(sock_err("connect", e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            if let Err(e) = shared.ctl().start(&shared, stream) {
                for (h, pool) in handles.iter_mut().zip(pools.iter_mut()) {
                    h.rxq.reset(pool);
                }
                return Err(e);
            }
            for (h, pool) in handles.iter_mut().zip(pools.iter_mut()) {
                h.catch_up(pool);
            }
        }
        Ok(handles)
    }
}

impl VirtioUserPair {
    /// This handle's queue pair (0-based).
    pub fn pair(&self) -> usize {
        self.pair
    }

    /// The port's queue pairs.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Which pair a frame whose first bytes are `head` goes out on to stay in order with
    /// the rest of its flow: its flow hash ([`crate::flow::flow_hash`]) over the port's
    /// pairs, the one fastpathd uses to pick the pair it sends a flow to. A sender with a
    /// thread per pair sends each flow from the thread of its pair.
    pub fn pair_of(&self, head: &[u8]) -> usize {
        pick(flow_hash(head), self.pairs)
    }

    /// Whether transmit offloads were negotiated (see [`VirtioUser::tx_offloads`]).
    pub fn tx_offloads(&self) -> bool {
        self.tx_features != 0
    }

    /// Whether the rings are packed.
    pub fn packed(&self) -> bool {
        self.rxq.packed()
    }

    /// Times the port went down (shared by its pairs; each pair's `resets` counts the
    /// times it reset its own rings).
    pub fn port_resets(&self) -> u64 {
        self.shared.ctl().resets
    }

    #[inline]
    fn check_pool(&mut self, pool: &PktPool) -> bool {
        self.own_pool.accepts(pool, &self.name, &mut self.counters)
    }

    /// Asks the backend for no calls on either ring (we poll).
    fn quiet(&self) {
        self.rxq.set_interrupts(false);
        self.txq.set_interrupts(false);
    }

    /// Catches up with the shared state and drives the control path when due; whether
    /// the pair is up.
    #[inline]
    fn tick(&mut self, pool: &mut PktPool) -> bool {
        if self.shared.state.load(Ordering::Acquire) != self.seen {
            self.catch_up(pool);
        }
        if self.seen & UP == 0 || self.cadence.due() {
            self.control(pool);
        }
        self.seen & UP != 0
    }

    /// Acts on a change of the shared state: the port went down since we last looked
    /// (our rings are stale: every frame in flight goes back to our pool, and we say so),
    /// or it came up (our receive ring gets its buffers).
    #[cold]
    fn catch_up(&mut self, pool: &mut PktPool) {
        let s = self.shared.state.load(Ordering::Acquire);
        if s >> 1 != self.seen >> 1 {
            if self.seen & UP != 0 {
                self.counters.resets += 1;
            }
            self.rxq.reset(pool);
            self.txq.reset(pool);
            self.quiet();
            self.seen &= !UP;
            self.shared.acks[self.pair].store(s >> 1, Ordering::Release);
            if s & UP == 0 {
                self.seen = s;
                return;
            }
            // Up in a generation we had not acknowledged cannot happen (its handshake
            // waited for us); if it did, we wait for the next one.
            self.seen = s & !UP;
            return;
        }
        if s & UP != 0 && self.seen & UP == 0 {
            let f = self.shared.features.load(Ordering::Relaxed);
            self.in_order = f & VIRTIO_F_IN_ORDER != 0;
            self.mrg_rxbuf = f & VIRTIO_NET_F_MRG_RXBUF != 0;
            self.tx_features = tx_offloads_of(f);
            self.quiet();
            self.rxq.refill_rx(pool);
            let _ = self.rxq.kick.write(1);
        }
        self.seen = s;
    }

    /// Drives the shared control path if no other handle is.
    fn control(&mut self, pool: &mut PktPool) {
        if let Ok(mut ctl) = self.shared.ctl.try_lock() {
            ctl.step(&self.shared);
        }
        if self.shared.state.load(Ordering::Acquire) != self.seen {
            self.catch_up(pool);
        }
    }

    /// The backend broke one of our rings: the port goes down (unless it already went
    /// down since), and our rings are reset.
    #[cold]
    fn fail(&mut self, pool: &mut PktPool, why: &str) {
        {
            let mut ctl = self.shared.ctl();
            if self.shared.state.load(Ordering::Acquire) == self.seen {
                ctl.go_down(&self.shared, &format!("pair {}: {why}", self.pair));
            }
        }
        self.catch_up(pool);
    }
}

impl Port for VirtioUserPair {
    fn rx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) || !self.tick(pool) {
            return 0;
        }
        let (got, fault) = self.rxq.rx_burst(pool, pkts, &mut self.counters, self.mrg_rxbuf);
        if let Some(f) = fault {
            self.fail(pool, &f);
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
                self.fail(pool, &f);
                0
            }
        }
    }

    fn link(&self) -> LinkState {
        // Up as this pair last saw it, and still so (it may not have caught up yet).
        if self.seen & UP != 0 && self.shared.state.load(Ordering::Acquire) == self.seen {
            LinkState::Up
        } else {
            LinkState::Down
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
            if !self.check_pool(pool) || !self.tick(pool) {
                return false;
            }
            if let Err(f) = self.txq.reclaim_tx(pool, self.in_order) {
                self.fail(pool, &f);
                return false;
            }
            if self.txq.all_free() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn wait_rx(&mut self, pool: &mut PktPool, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        if !self.check_pool(pool) {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return false;
        }
        self.control(pool);
        if self.seen & UP == 0 {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return false;
        }
        let q = &self.rxq;
        if q.arm_call() {
            return true;
        }
        // The connection is shared, and looked at when we wake (a backend gone is
        // noticed within the timeout).
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(q.call.as_fd(), PollFlags::POLLIN)];
        let woke = poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0;
        q.disarm_call();
        self.control(pool);
        woke
    }
}

impl Drop for VirtioUserPair {
    fn drop(&mut self) {
        self.shared.acks[self.pair].store(RETIRED, Ordering::Release);
        if self.shared.state.load(Ordering::Acquire) & UP != 0 {
            self.shared.ctl().disable(self.pair);
        }
    }
}

#[cfg(test)]
#[path = "pairs_tests.rs"]
mod tests;
