// The vhost-user backend's protocol state machine: features, memory table,
// vring setup. Takes decoded messages, answers them, never trusts a field.
//! Backend protocol state for one virtio-net device (one or several queue pairs).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::mem::GuestMemory;
use crate::ring::{DeviceRing, PackedDeviceRing};
use crate::spec::{
    MAX_QUEUE_SIZE, PROTOCOL_F_CONFIGURE_MEM_SLOTS, PROTOCOL_F_MQ, PROTOCOL_F_NET_MTU, PROTOCOL_F_REPLY_ACK,
    RING_EVENT_FLAGS_DISABLE, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED,
    VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_RING_F_INDIRECT_DESC,
    VRING_USED_F_NO_NOTIFY,
};
use crate::vhost_user::conn::RawMsg;
use crate::vhost_user::message::encode;
use crate::vhost_user::{MemRegion, Msg, MsgError, Request, VringAddr, VringState};
use crate::vnet_hdr::{OFFLOAD_FEATURES, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6};

use super::lane::{Held, Lane};
use super::packed::PackedQueue;
use super::queue::{DeviceQueue, DEFAULT_MAX_FRAME};
use super::virtq::VirtQueue;

/// Features we offer. Our rings are always consumed in order (every queue pops
/// chains and returns them in avail order), so IN_ORDER costs us nothing and lets a
/// driver skip reading the used entries of its transmit ring. MRG_RXBUF: a frame
/// longer than one receive chain is written across several. INDIRECT_DESC: a chain may
/// sit in an indirect table, walked with the same bounds as any chain. RING_PACKED: the
/// packed ring layout, when the frontend takes it (a port may withhold it, see
/// [`DeviceLimits::packed`]).
pub const OFFERED_FEATURES: u64 = VIRTIO_F_VERSION_1
    | VHOST_USER_F_PROTOCOL_FEATURES
    | VIRTIO_F_IN_ORDER
    | VIRTIO_NET_F_MRG_RXBUF
    | VIRTIO_NET_F_MTU
    | VIRTIO_RING_F_INDIRECT_DESC
    | VIRTIO_F_RING_PACKED;
/// Protocol features we offer. NET_MTU: a frontend tells the MTU its driver set
/// (checked against the port's). MQ: GET_QUEUE_NUM tells how many queue pairs the port
/// takes (QEMU asks before it opens a `queues=N` netdev).
pub const OFFERED_PROTOCOL: u64 =
    PROTOCOL_F_REPLY_ACK | PROTOCOL_F_CONFIGURE_MEM_SLOTS | PROTOCOL_F_NET_MTU | PROTOCOL_F_MQ;
/// Memory slots we offer with CONFIGURE_MEM_SLOTS.
pub const MAX_MEM_SLOTS: u64 = 32;
/// The longest frame a frontend that negotiated TSO may send: a 64 KiB IP packet with
/// an Ethernet header and a VLAN tag.
pub const GSO_MAX_FRAME: u32 = 65_535 + 18;
/// The MTU a frame of [`DEFAULT_MAX_FRAME`] bytes carries (an Ethernet header and a
/// VLAN tag taken off): the most a port without an MTU of its own takes.
pub const MAX_FRAME_MTU: u16 = (DEFAULT_MAX_FRAME - 18) as u16;
/// Most queue pairs a port takes (a port's `queues` may lower it).
pub const MAX_QUEUE_PAIRS: u16 = 8;
/// Vrings of a device with [`MAX_QUEUE_PAIRS`] pairs: pair `p` has receive vring `2p` and
/// transmit vring `2p + 1`.
pub const MAX_VRINGS: usize = 2 * MAX_QUEUE_PAIRS as usize;

/// Why a message was refused: the connection is closed after any of these.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolFault {
    /// Malformed message.
    #[error("bad message: {0}")]
    Msg(#[from] MsgError),
    /// A vring index we don't have.
    #[error("vring index {0}: this port takes {1} queue pair(s), vrings 0..{vrings}", vrings = 2 * u32::from(*.1))]
    BadVring(u32, u16),
    /// Features we did not offer.
    #[error("frontend set features {0:#x} that were not offered ({1:#x})")]
    BadFeatures(u64, u64),
    /// A memory region that can't be mapped.
    #[error("memory region {region:?}: {why}")]
    BadRegion {
        /// The region.
        region: MemRegion,
        /// Why.
        why: String,
    },
    /// More memory than the port allows.
    #[error("the frontend registers {asked} bytes of memory, over this port's cap of {cap}")]
    MemoryOverCap {
        /// Bytes asked for, all regions together.
        asked: u64,
        /// The cap.
        cap: u64,
    },
    /// A kick or call fd that is not an eventfd.
    #[error("vring {index}: the {what} fd is not an eventfd ({kind})")]
    NotEventFd {
        /// Vring.
        index: u32,
        /// "kick" or "call".
        what: &'static str,
        /// What it is instead.
        kind: String,
    },
    /// More memory slots than offered.
    #[error("more than {MAX_MEM_SLOTS} memory regions")]
    TooManyRegions,
    /// The memory table is still held elsewhere, so it can't change (a bug of ours,
    /// reported rather than followed).
    #[error("the memory table is in use and can't change")]
    TableInUse,
    /// An MTU over the port's.
    #[error("the frontend set MTU {asked}, over this port's MTU of {mtu}")]
    MtuOverPort {
        /// The MTU the frontend set.
        asked: u64,
        /// The port's.
        mtu: u16,
    },
    /// Ring setup refused.
    #[error("vring {index}: {why}")]
    Ring {
        /// Vring.
        index: u32,
        /// Why.
        why: String,
    },
}

/// Setup state of one vring.
#[derive(Debug, Default)]
struct Vring {
    size: u32,
    /// SET_VRING_BASE's value: a split ring's avail index (16 bits), or a packed ring's
    /// avail position and wrap counter (bits 0-15) and used ones (bits 16-31).
    base: u32,
    /// The base is our own (a live queue's, kept across a memory table change), not the
    /// frontend's: a packed ring then resumes exactly there, without looking at its flags.
    own_base: bool,
    addr: Option<VringAddr>,
    kick: Option<OwnedFd>,
    kicked: bool,
    call: Option<OwnedFd>,
    enabled: bool,
    queue: Held,
}

/// What a port allows its frontend: every frontend is a tenant that may be hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most bytes of memory it may register, all regions together.
    pub max_memory: u64,
    /// Refuse memory whose file could shrink under our mapping (anything not sealed
    /// with `F_SEAL_SHRINK`: hugetlbfs files, unsealed memfds). Without this, such
    /// memory is taken, and a shrink resets the port (see [`crate::mem::sigbus`]).
    pub require_sealed: bool,
    /// Largest frame it may send, in bytes after the virtio-net header: a longer
    /// chain is a fault of its port, whatever its descriptors say.
    pub max_frame: u32,
    /// The port's MTU, if it has one: a frontend's VHOST_USER_NET_SET_MTU over it is
    /// refused (QEMU's `host_mtu` is what its guest is told, VIRTIO_NET_F_MTU).
    pub mtu: Option<u16>,
    /// Offer the checksum and TSO offloads ([`crate::vnet_hdr::OFFLOAD_FEATURES`]): the
    /// frontend may then send frames with a partial checksum or GSO, and take them.
    pub offloads: bool,
    /// Whether VIRTIO_F_RING_PACKED is offered (a frontend that takes it gets a packed
    /// ring; one that does not, a split one).
    pub packed: bool,
    /// Queue pairs the frontend may use, 1..=[`MAX_QUEUE_PAIRS`] (VIRTIO_NET_F_MQ is
    /// offered when it is more than one; GET_QUEUE_NUM answers it).
    pub queue_pairs: u16,
}

/// Memory a port takes unless told otherwise: 64 GiB (mapped lazily, so a cap on
/// address space, not on what the switch holds).
pub const DEFAULT_MAX_MEMORY: u64 = 64 << 30;

impl Default for DeviceLimits {
    fn default() -> Self {
        Self {
            max_memory: DEFAULT_MAX_MEMORY,
            require_sealed: false,
            max_frame: DEFAULT_MAX_FRAME,
            mtu: None,
            offloads: false,
            packed: true,
            queue_pairs: MAX_QUEUE_PAIRS,
        }
    }
}

/// The backend's view of one frontend: negotiated state, memory, vrings.
#[derive(Debug, Default)]
pub struct VhostDevice {
    features: u64,
    protocol: u64,
    mem: Arc<GuestMemory>,
    vrings: [Vring; MAX_VRINGS],
    /// Queue pairs up to the last one with a live vring (0 when none is live): what the
    /// data path looks at.
    pairs: usize,
    /// The queue pairs whose receive vring is live, in order (the first `rx_live` of them).
    rx_pairs: [u8; MAX_QUEUE_PAIRS as usize],
    rx_live: usize,
    limits: DeviceLimits,
    /// Lanes the transmit rings of some queue pairs are lent to (polled by other threads).
    lanes: [Option<Lane>; MAX_QUEUE_PAIRS as usize],
}

/// What to send back for a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing.
    None,
    /// A payload (for GET_* requests).
    Payload(Vec<u8>),
}

impl VhostDevice {
    /// A device for a new frontend, held to `limits`.
    pub fn new(limits: DeviceLimits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// The device with the transmit ring of each pair `lanes` names lent to that lane
    /// whenever it is live (pair 0's is always the device's own).
    #[must_use]
    pub fn with_lanes(mut self, lanes: &[Option<Lane>]) -> Self {
        for (i, l) in lanes.iter().enumerate().take(self.lanes.len()).skip(1) {
            self.lanes[i].clone_from(l);
        }
        self
    }

    /// Whether the frontend negotiated REPLY_ACK.
    pub fn reply_ack(&self) -> bool {
        self.protocol & PROTOCOL_F_REPLY_ACK != 0
    }

    /// The features this device offers: [`OFFERED_FEATURES`] and the offloads if its
    /// limits enable them, MQ if they allow more than one queue pair, less RING_PACKED
    /// when its port withholds it.
    pub fn offered(&self) -> u64 {
        let offloads = if self.limits.offloads { OFFLOAD_FEATURES } else { 0 };
        let mq = if self.queue_pairs() > 1 { VIRTIO_NET_F_MQ } else { 0 };
        let packed = if self.limits.packed { 0 } else { VIRTIO_F_RING_PACKED };
        (OFFERED_FEATURES | offloads | mq) & !packed
    }

    /// Queue pairs this device takes (its limits', within 1..=[`MAX_QUEUE_PAIRS`]).
    pub fn queue_pairs(&self) -> u16 {
        self.limits.queue_pairs.clamp(1, MAX_QUEUE_PAIRS)
    }

    /// Queue pairs up to the last one with a live vring: the data path looks at pairs
    /// `0..pairs()` (1 for a frontend with one queue pair, 0 before any ring is live).
    #[inline]
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// The queue pairs whose receive vring is live, in order: where frames for the
    /// frontend may go (empty for a frontend that only sends).
    #[inline]
    pub fn rx_pairs(&self) -> &[u8] {
        &self.rx_pairs[..self.rx_live]
    }

    /// Recounts [`Self::pairs`] and [`Self::rx_pairs`] after vrings started or stopped.
    fn count_pairs(&mut self) {
        self.pairs = self.vrings.iter().rposition(|v| v.queue.is_live()).map_or(0, |i| i / 2 + 1);
        self.rx_live = 0;
        for (pair, rx) in self.vrings.iter().step_by(2).enumerate() {
            if rx.queue.is_live() {
                self.rx_pairs[self.rx_live] = pair as u8;
                self.rx_live += 1;
            }
        }
    }

    /// The offload features the frontend negotiated (a subset of
    /// [`crate::vnet_hdr::OFFLOAD_FEATURES`]): what frames it sends may ask for, and
    /// what it takes as they are.
    #[inline]
    pub fn offloads(&self) -> u64 {
        self.features & OFFLOAD_FEATURES
    }

    /// Whether the frontend merges receive buffers (VIRTIO_NET_F_MRG_RXBUF): a frame
    /// may span several of its receive chains.
    #[inline]
    pub fn mrg_rxbuf(&self) -> bool {
        self.features & VIRTIO_NET_F_MRG_RXBUF != 0
    }

    /// The features the frontend set.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Whether the frontend negotiated the packed ring layout (VIRTIO_F_RING_PACKED).
    pub fn packed(&self) -> bool {
        self.features & VIRTIO_F_RING_PACKED != 0
    }

    /// The frontend's memory.
    pub fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    /// Queue `i` if it is live (set up, kicked and enabled).
    #[inline]
    pub fn queue(&mut self, i: usize) -> Option<&mut VirtQueue> {
        self.vrings.get_mut(i)?.queue.here_mut()
    }

    /// Both the memory and one live queue (borrowed apart).
    #[inline]
    pub fn mem_and_queue(&mut self, i: usize) -> (&GuestMemory, Option<&mut VirtQueue>) {
        (&self.mem, self.vrings.get_mut(i).and_then(|v| v.queue.here_mut()))
    }

    /// The call eventfd of vring `i`, if the frontend wants interrupts there.
    pub fn call_fd(&self, i: usize) -> Option<&OwnedFd> {
        self.vrings.get(i)?.call.as_ref()
    }

    /// The kick eventfd of vring `i`, if the frontend gave one.
    pub fn kick_fd(&self, i: usize) -> Option<&OwnedFd> {
        self.vrings.get(i)?.kick.as_ref()
    }

    /// Signals vring `i`'s call eventfd if the frontend cleared NO_INTERRUPT
    /// (it sleeps). The fence orders our used-index store before the flag load,
    /// pairing with the frontend's fence between its flag store and used-index load.
    #[inline]
    pub fn notify(&mut self, i: usize) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let Some(v) = self.vrings.get(i) else { return };
        if v.queue.here().is_some_and(VirtQueue::wants_signal) {
            if let Some(fd) = &v.call {
                let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
            }
        }
    }

    /// Asks the frontend to kick vring `i` when it adds buffers (`true`, before
    /// sleeping) or not to (`false`, polling).
    pub fn set_kicks(&mut self, i: usize, on: bool) {
        if let Some(q) = self.vrings.get(i).and_then(|v| v.queue.here()) {
            q.set_kicks(on);
        }
    }

    /// Whether any vring is live (a receive-only frontend may never start its
    /// transmit ring).
    pub fn ready(&self) -> bool {
        self.vrings.iter().any(|v| v.queue.is_live())
    }

    /// Whether every vring is started: both of the first queue pair, and every other
    /// one the frontend set up and enabled (else the control path looks for first kicks).
    pub fn all_started(&self) -> bool {
        self.first_pair_started()
            && self.vrings[2..].iter().all(|v| v.queue.is_live() || v.addr.is_none() || !v.enabled)
    }

    /// Whether the handshake is over: both vrings of the first queue pair are live. A
    /// guest may leave the transmit ring of another pair unkicked until it sends on it;
    /// such a ring is started at the control path's usual pace, not a fast one.
    pub fn first_pair_started(&self) -> bool {
        self.vrings[..2].iter().all(|v| v.queue.is_live())
    }

    /// Starts the vrings whose kick fd has become readable (their first kick).
    pub fn poll_kicks(&mut self) -> Result<(), ProtocolFault> {
        let res = self.poll_kicks_inner();
        self.count_pairs();
        res
    }

    fn poll_kicks_inner(&mut self) -> Result<(), ProtocolFault> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        for i in 0..2 * usize::from(self.queue_pairs()) {
            let v = &self.vrings[i];
            if v.kicked || v.addr.is_none() {
                continue;
            }
            let Some(fd) = v.kick.as_ref() else { continue };
            let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let readable = poll(&mut pfd, PollTimeout::ZERO).unwrap_or(0) > 0
                && pfd[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            if readable {
                let mut b = [0u8; 8];
                let _ = nix::unistd::read(fd.as_raw_fd(), &mut b);
                self.vrings[i].kicked = true;
                self.try_start(i)?;
            }
        }
        Ok(())
    }

    /// Handles one received message.
    pub fn handle(&mut self, raw: RawMsg) -> Result<Reply, ProtocolFault> {
        let res = self.handle_inner(raw);
        self.count_pairs();
        res
    }

    fn handle_inner(&mut self, raw: RawMsg) -> Result<Reply, ProtocolFault> {
        let msg = Msg::decode(&raw.header, &raw.payload, raw.fds.len())?;
        let mut fds = raw.fds.into_iter();
        Ok(match msg {
            Msg::GetFeatures => Reply::Payload(encode::u64(self.offered())),
            Msg::SetFeatures(f) => self.set_features(f)?,
            Msg::GetProtocolFeatures => Reply::Payload(encode::u64(OFFERED_PROTOCOL)),
            Msg::SetProtocolFeatures(p) => {
                self.protocol = p & OFFERED_PROTOCOL;
                Reply::None
            }
            Msg::SetOwner | Msg::Ignored(_) | Msg::SetStatus(_) => Reply::None,
            Msg::NetSetMtu(asked) => {
                let mtu = self.limits.mtu.unwrap_or(MAX_FRAME_MTU);
                if asked > u64::from(mtu) {
                    return Err(ProtocolFault::MtuOverPort { asked, mtu });
                }
                Reply::None
            }
            Msg::ResetOwner => {
                *self = Self::new(self.limits).with_lanes(&self.lanes);
                Reply::None
            }
            Msg::GetQueueNum => Reply::Payload(encode::u64(u64::from(self.queue_pairs()))),
            Msg::GetStatus => Reply::Payload(encode::u64(0)),
            Msg::GetMaxMemSlots => Reply::Payload(encode::u64(MAX_MEM_SLOTS)),
            Msg::SetMemTable(regions) => self.set_mem_table(&regions, fds)?,
            Msg::AddMemReg(r) => self.add_mem_reg(&r, fds.next())?,
            Msg::RemMemReg(r) => {
                self.replace_mem(|m| {
                    m.remove_region(r.guest_phys_addr, r.memory_size);
                    Ok(())
                })?;
                Reply::None
            }
            Msg::SetVringNum(s) => self.set_vring_num(s)?,
            Msg::SetVringBase(s) => self.set_vring_base(s)?,
            Msg::SetVringAddr(a) => {
                self.vring(a.index)?.addr = Some(a);
                self.vrings[a.index as usize].queue.clear();
                self.try_start(a.index as usize)?;
                Reply::None
            }
            Msg::GetVringBase(s) => self.get_vring_base(s)?,
            Msg::SetVringKick { index, has_fd } => {
                let kick = if has_fd { Some(nonblocking_eventfd(fds.next(), index, "kick")?) } else { None };
                let v = self.vring(index)?;
                v.kick = kick;
                // The spec: a ring starts on its first kick (the fd turning readable),
                // not on this message; without an fd (polling) it starts now. DPDK's
                // driver relies on this: it flushes its receive ring, then kicks.
                v.kicked = !has_fd;
                self.try_start(index as usize)?;
                Reply::None
            }
            Msg::SetVringCall { index, has_fd } => {
                let call = if has_fd { Some(nonblocking_eventfd(fds.next(), index, "call")?) } else { None };
                let v = self.vring(index)?;
                v.call = call;
                v.queue.call_changed(v.call.as_ref());
                Reply::None
            }
            Msg::SetVringErr { index, .. } => {
                self.vring(index)?;
                Reply::None
            }
            Msg::SetVringEnable(s) => {
                self.vring(s.index)?.enabled = s.num != 0;
                if s.num == 0 {
                    self.vrings[s.index as usize].queue.clear();
                } else {
                    self.try_start(s.index as usize)?;
                }
                Reply::None
            }
        })
    }

    fn set_features(&mut self, f: u64) -> Result<Reply, ProtocolFault> {
        let offered = self.offered();
        if f & !offered != 0 {
            return Err(ProtocolFault::BadFeatures(f, offered));
        }
        self.features = f;
        if f & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            // Without protocol features, rings are enabled when started.
            for v in &mut self.vrings {
                v.enabled = true;
            }
        }
        Ok(Reply::None)
    }

    fn set_mem_table(
        &mut self,
        regions: &[MemRegion],
        fds: impl Iterator<Item = OwnedFd>,
    ) -> Result<Reply, ProtocolFault> {
        let total = regions.iter().fold(0u64, |t, r| t.saturating_add(r.memory_size));
        self.check_memory(total)?;
        let mut mem = GuestMemory::default();
        for (r, fd) in regions.iter().zip(fds) {
            self.map_region(&mut mem, r, &fd)?;
        }
        self.replace_mem(|m| {
            *m = mem;
            Ok(())
        })?;
        Ok(Reply::None)
    }

    fn add_mem_reg(&mut self, r: &MemRegion, fd: Option<OwnedFd>) -> Result<Reply, ProtocolFault> {
        let fd = fd.ok_or(ProtocolFault::Msg(MsgError::BadFdCount { req: Request::AddMemReg, got: 0, want: 1 }))?;
        if self.mem.len() as u64 >= MAX_MEM_SLOTS {
            return Err(ProtocolFault::TooManyRegions);
        }
        self.check_memory(self.mem.total_len().saturating_add(r.memory_size))?;
        let limits = self.limits;
        self.replace_mem(|m| map_region(m, r, &fd, limits))?;
        Ok(Reply::None)
    }

    fn set_vring_num(&mut self, s: VringState) -> Result<Reply, ProtocolFault> {
        let v = self.vring(s.index)?;
        if s.num == 0 || s.num > u32::from(MAX_QUEUE_SIZE) || !s.num.is_power_of_two() {
            return Err(ProtocolFault::Ring {
                index: s.index,
                why: format!("size {} is not a power of two in 1..={MAX_QUEUE_SIZE}", s.num),
            });
        }
        v.size = s.num;
        v.queue.clear();
        Ok(Reply::None)
    }

    fn set_vring_base(&mut self, s: VringState) -> Result<Reply, ProtocolFault> {
        // A packed ring's base has its used position and wrap counter in the upper half
        // (QEMU sends both; PackedQueue::new checks them).
        let packed = self.packed();
        let v = self.vring(s.index)?;
        if !packed && s.num > u32::from(u16::MAX) {
            return Err(ProtocolFault::Ring { index: s.index, why: format!("base {} is past 65535", s.num) });
        }
        v.base = s.num;
        v.own_base = false;
        v.queue.clear();
        Ok(Reply::None)
    }

    fn get_vring_base(&mut self, s: VringState) -> Result<Reply, ProtocolFault> {
        let v = self.vring(s.index)?;
        if let Some(q) = v.queue.take() {
            v.base = q.base();
            v.own_base = true;
        }
        v.kicked = false;
        let base = v.base;
        Ok(Reply::Payload(encode::state(VringState { index: s.index, num: base })))
    }

    /// Refuses a memory table of `total` bytes over the port's cap.
    fn check_memory(&self, total: u64) -> Result<(), ProtocolFault> {
        if total > self.limits.max_memory {
            return Err(ProtocolFault::MemoryOverCap { asked: total, cap: self.limits.max_memory });
        }
        Ok(())
    }

    fn map_region(&self, mem: &mut GuestMemory, r: &MemRegion, fd: &OwnedFd) -> Result<(), ProtocolFault> {
        map_region(mem, r, fd, self.limits)
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring, ProtocolFault> {
        let pairs = self.queue_pairs();
        if index >= 2 * u32::from(pairs) {
            return Err(ProtocolFault::BadVring(index, pairs));
        }
        Ok(&mut self.vrings[index as usize])
    }

    /// Drops the rings (which hold the old table), changes the table, restarts the rings.
    fn replace_mem(
        &mut self,
        f: impl FnOnce(&mut GuestMemory) -> Result<(), ProtocolFault>,
    ) -> Result<(), ProtocolFault> {
        let bases: Vec<Option<u32>> = self.vrings.iter_mut().map(|v| v.queue.take().map(|q| q.base())).collect();
        for (v, b) in self.vrings.iter_mut().zip(&bases) {
            if let Some(b) = b {
                v.base = *b;
                v.own_base = true;
            }
        }
        // The rings were the table's only other holders.
        let res = match Arc::get_mut(&mut self.mem) {
            Some(mem) => f(mem),
            None => Err(ProtocolFault::TableInUse),
        };
        for (i, b) in bases.iter().enumerate() {
            if b.is_some() {
                self.try_start(i)?;
            }
        }
        res
    }

    /// Starts vring `i` if it has everything it needs.
    fn try_start(&mut self, i: usize) -> Result<(), ProtocolFault> {
        let v = &mut self.vrings[i];
        let Some(a) = v.addr else { return Ok(()) };
        if !v.kicked || !v.enabled || v.size == 0 || self.mem.is_empty() {
            return Ok(());
        }
        let fault = |why: String| ProtocolFault::Ring { index: i as u32, why };
        // A frontend that sends GSO frames sends up to a 64 KiB IP packet in one.
        let tso = self.features & (VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6) != 0;
        let max_frame = if tso { self.limits.max_frame.max(GSO_MAX_FRAME) } else { self.limits.max_frame };
        let max_read = max_frame.saturating_add(crate::spec::NET_HDR_LEN);
        let indirect = self.features & VIRTIO_RING_F_INDIRECT_DESC != 0;
        let queue = if self.features & VIRTIO_F_RING_PACKED != 0 {
            let ring =
                PackedDeviceRing::new(&self.mem, v.size, a.desc, a.avail, a.used).map_err(|e| fault(e.to_string()))?;
            ring.set_device_event_flags(RING_EVENT_FLAGS_DISABLE);
            let mut q = PackedQueue::new(ring, v.base, max_read)
                .ok_or_else(|| fault(format!("packed base {:#x} is past the ring of {}", v.base, v.size)))?;
            // The frontend's base may be stale (QEMU's, after the previous backend died);
            // ours never is, and the driver may be posting meanwhile.
            let resumed = if v.own_base { None } else { q.resume_where_the_ring_says() };
            if let Some(at) = resumed {
                tracing::info!(
                    "vring {i}: packed ring resumed at {:#x} where its descriptors say, not at the base {:#x} \
                     (a frontend that lost track when the previous backend went away)",
                    at,
                    v.base
                );
            }
            // In order, a transmit ring (odd index: the device reads it) gets one used
            // descriptor per batch.
            let batched = self.features & VIRTIO_F_IN_ORDER != 0 && i % 2 == 1;
            VirtQueue::Packed(q.with_indirect(indirect).with_batched_used(batched))
        } else {
            let ring = DeviceRing::new(&self.mem, v.size, a.desc, a.avail, a.used).map_err(|e| fault(e.to_string()))?;
            ring.set_used_flags(VRING_USED_F_NO_NOTIFY);
            // Checked to fit 16 bits when it was set (the ring was split then too).
            let base = v.base as u16;
            VirtQueue::Split(DeviceQueue::with_max_read(ring, base, max_read).with_indirect(indirect))
        };
        let lane = if i % 2 == 1 { self.lanes[i / 2].as_ref() } else { None };
        v.queue.set(queue, lane, &self.mem, v.call.as_ref(), self.features & OFFLOAD_FEATURES);
        Ok(())
    }
}

/// Checks that `fd` is an eventfd and makes it non-blocking: the worker writes a
/// call fd and reads a kick fd, and neither may ever block it (a saturated eventfd
/// then refuses the write, and the notification is dropped: the peer is signalled
/// already). Anything else (a pipe, a socket, a file) is refused.
fn nonblocking_eventfd(fd: Option<OwnedFd>, index: u32, what: &'static str) -> Result<OwnedFd, ProtocolFault> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fd = fd.ok_or(ProtocolFault::NotEventFd { index, what, kind: "missing".into() })?;
    let kind = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_or_else(|e| format!("unknown: {e}"), |p| p.display().to_string());
    if kind != "anon_inode:[eventfd]" {
        return Err(ProtocolFault::NotEventFd { index, what, kind });
    }
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| ProtocolFault::NotEventFd {
        index,
        what,
        kind: format!("F_GETFL: {e}"),
    })?;
    let nonblocking = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(nonblocking)).map_err(|e| ProtocolFault::NotEventFd {
        index,
        what,
        kind: format!("F_SETFL: {e}"),
    })?;
    Ok(fd)
}

/// Maps one region into `mem`, refusing an unsealed one when `limits` ask for seals.
fn map_region(mem: &mut GuestMemory, r: &MemRegion, fd: &OwnedFd, limits: DeviceLimits) -> Result<(), ProtocolFault> {
    mem.add_region(fd.as_fd(), r.guest_phys_addr, r.userspace_addr, r.memory_size, r.mmap_offset)
        .map_err(|e| ProtocolFault::BadRegion { region: *r, why: e.to_string() })?;
    if limits.require_sealed && mem.unsealed() > 0 {
        mem.remove_region(r.guest_phys_addr, r.memory_size);
        return Err(ProtocolFault::BadRegion {
            region: *r,
            why: "its file is not sealed against shrinking (F_SEAL_SHRINK), and this port requires it".into(),
        });
    }
    Ok(())
}
