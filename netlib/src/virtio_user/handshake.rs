// The vhost-user handshake of a fresh connection: features, protocol features, our
// memory regions and both rings, as requests the backend acknowledges.
//! virtio-user's handshake.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use super::queue::{DriverQueue, RingAddrs};
use super::{State, VirtioUser, VirtioUserError};
use crate::pool::PktPool;
use crate::spec::{
    PROTOCOL_F_CONFIGURE_MEM_SLOTS, PROTOCOL_F_REPLY_ACK, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER,
    VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF,
};
use crate::vhost_user::conn::RawMsg;
use crate::vhost_user::message::{encode, FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION};
use crate::vhost_user::{Conn, MemRegion, Request, VringAddr, VringState};

/// A fresh connection to a backend during the handshake, and the protocol features
/// negotiated on it so far. It borrows the connection (not the port), so that the
/// handshake can attach the port's own fds to a message without duplicating them.
pub(super) struct Channel<'a> {
    conn: &'a mut Conn,
    path: &'a Path,
    reply_timeout: Duration,
    /// The protocol features negotiated so far.
    pub(super) protocol: u64,
}

impl<'a> Channel<'a> {
    /// A channel over the fresh connection `conn` to the backend at `path`.
    pub(super) fn new(conn: &'a mut Conn, path: &'a Path, reply_timeout: Duration) -> Self {
        Self { conn, path, reply_timeout, protocol: 0 }
    }

    /// An error naming the backend's socket.
    pub(super) fn backend_err(&self, msg: String) -> VirtioUserError {
        VirtioUserError::Backend(msg, self.path.to_path_buf())
    }

    /// Sends a request; with REPLY_ACK negotiated and `ack`, waits for the ack.
    pub(super) fn request(
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

    /// Sends a request and returns the backend's u64 reply.
    pub(super) fn get_u64(&mut self, req: Request) -> Result<u64, VirtioUserError> {
        self.request(req, &[], &[], false)?;
        self.reply_u64(req)
    }
}

/// Regions a SET_MEM_TABLE carries at most (VHOST_MEMORY_BASELINE_NREGIONS).
pub(super) const MEM_TABLE_REGIONS: usize = 8;

/// Shares our memory regions with the backend: one ADD_MEM_REG each where it takes them,
/// else one SET_MEM_TABLE (of at most [`MEM_TABLE_REGIONS`]).
pub(super) fn send_memory(
    ch: &mut Channel<'_>,
    regions: &[(MemRegion, BorrowedFd<'_>)],
) -> Result<(), VirtioUserError> {
    if ch.protocol & PROTOCOL_F_CONFIGURE_MEM_SLOTS != 0 {
        let slots = ch.get_u64(Request::GetMaxMemSlots)?;
        if slots < regions.len() as u64 {
            return Err(ch.backend_err(format!("backend offers {slots} memory slots, we need {}", regions.len())));
        }
        for (r, fd) in regions {
            ch.request(Request::AddMemReg, &encode::one_region(r), &[*fd], true)?;
        }
    } else {
        if regions.len() > MEM_TABLE_REGIONS {
            return Err(ch.backend_err(format!(
                "we share {} memory regions, and a backend without CONFIGURE_MEM_SLOTS takes {MEM_TABLE_REGIONS}",
                regions.len()
            )));
        }
        let table: Vec<MemRegion> = regions.iter().map(|(r, _)| *r).collect();
        let fds: Vec<BorrowedFd<'_>> = regions.iter().map(|(_, f)| *f).collect();
        ch.request(Request::SetMemTable, &encode::mem_table(&table), &fds, true)?;
    }
    Ok(())
}

impl VirtioUser {
    /// Negotiates features with the backend on `conn`, shares our memory and sets up
    /// both rings; the port is up when it returns `Ok`.
    pub(super) fn handshake(&mut self, conn: &mut Conn, pool: &mut PktPool) -> Result<(), VirtioUserError> {
        let mut ch = Channel::new(conn, &self.path, self.opts.reply_timeout);
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
        // Packed rings when asked for and offered. IN_ORDER when offered: on a packed ring
        // the device may then mark a transmit batch used with one descriptor (see
        // DriverQueue::reclaim_tx); receive buffers are still used one by one (their
        // lengths differ), as our backend and DPDK's do.
        let packed = self.opts.packed && features & VIRTIO_F_RING_PACKED != 0;
        let ours = VIRTIO_F_VERSION_1
            | (features & (VHOST_USER_F_PROTOCOL_FEATURES | VIRTIO_NET_F_MRG_RXBUF))
            | features & VIRTIO_F_IN_ORDER
            | if packed { VIRTIO_F_RING_PACKED } else { 0 }
            | if self.opts.tx_offloads { tx_offloads_of(features) } else { 0 };
        self.in_order = ours & VIRTIO_F_IN_ORDER != 0;
        self.mrg_rxbuf = ours & VIRTIO_NET_F_MRG_RXBUF != 0;
        self.tx_features = tx_offloads_of(ours);
        ch.request(Request::SetFeatures, &encode::u64(ours), &[], true)?;
        self.rxq.set_layout(packed)?;
        self.txq.set_layout(packed)?;
        send_memory(&mut ch, &self.regions())?;
        // Receive buffers go in before the backend sees the ring.
        self.rxq.refill_rx(pool);
        self.rxq.set_interrupts(false);
        self.txq.set_interrupts(false);
        for (qi, q) in [(0u32, &self.rxq), (1, &self.txq)] {
            send_vring(&mut ch, &VringSetup::of(qi, q))?;
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
            "{}: up (features {ours:#x}, protocol {:#x}, {} entries per {} ring)",
            self.name,
            self.protocol,
            self.opts.queue_size,
            if packed { "packed" } else { "split" }
        );
        Ok(())
    }

    /// Our memory regions: the pool and the two rings, identity-mapped (VA as address).
    fn regions(&self) -> [(MemRegion, BorrowedFd<'_>); 3] {
        let ring = |q: &DriverQueue| {
            let m = q.region().map();
            identity_region(m.addr(), m.len() as u64)
        };
        [
            (identity_region(self.own_pool.addr(), self.pool_len), self.pool_fd.as_fd()),
            (ring(&self.rxq), self.rxq.region().fd()),
            (ring(&self.txq), self.txq.region().fd()),
        ]
    }
}

/// A region of ours as the backend sees it: identity-mapped (our VA as its address).
pub(super) fn identity_region(addr: u64, len: u64) -> MemRegion {
    MemRegion { guest_phys_addr: addr, memory_size: len, userspace_addr: addr, mmap_offset: 0 }
}

/// What the handshake tells the backend about one vring: where its ring is, where it
/// starts, and its eventfds.
pub(super) struct VringSetup<'a> {
    /// The vring's index (2p: pair p's receive queue, 2p + 1: its transmit queue).
    pub(super) index: u32,
    /// The ring's addresses and size.
    pub(super) addrs: RingAddrs,
    /// SET_VRING_BASE's value.
    pub(super) base: u32,
    /// The eventfd we kick the backend with.
    pub(super) kick: BorrowedFd<'a>,
    /// The eventfd the backend calls us with.
    pub(super) call: BorrowedFd<'a>,
}

impl<'a> VringSetup<'a> {
    /// Vring `index`, the ring of queue `q`.
    pub(super) fn of(index: u32, q: &'a DriverQueue) -> Self {
        Self { index, addrs: q.addrs(), base: q.base(), kick: q.kick.as_fd(), call: q.call.as_fd() }
    }
}

/// Sets up one vring on the backend: its size, base, addresses and eventfds.
pub(super) fn send_vring(ch: &mut Channel<'_>, v: &VringSetup<'_>) -> Result<(), VirtioUserError> {
    let qi = v.index;
    let l = v.addrs;
    let num = encode::state(VringState { index: qi, num: u32::from(l.size) });
    let base = encode::state(VringState { index: qi, num: v.base });
    let addr = encode::addr(VringAddr { index: qi, flags: 0, desc: l.desc, used: l.used, avail: l.avail, log: 0 });
    ch.request(Request::SetVringNum, &num, &[], true)?;
    ch.request(Request::SetVringBase, &base, &[], true)?;
    ch.request(Request::SetVringAddr, &addr, &[], true)?;
    ch.request(Request::SetVringKick, &encode::u64(u64::from(qi)), &[v.kick], true)?;
    ch.request(Request::SetVringCall, &encode::u64(u64::from(qi)), &[v.call], true)?;
    Ok(())
}

/// Of the features `f`, the transmit offloads we take: VIRTIO_NET_F_CSUM, and with it
/// HOST_TSO4 and HOST_TSO6 (TSO needs the checksum offload).
pub(super) fn tx_offloads_of(f: u64) -> u64 {
    use crate::vnet_hdr::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6};
    if f & VIRTIO_NET_F_CSUM == 0 {
        return 0;
    }
    f & (VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6)
}
