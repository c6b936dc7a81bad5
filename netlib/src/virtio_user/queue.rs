// The driver side of one virtqueue: our ring (split or packed), the packets in flight
// behind its descriptors, its eventfds, and the burst work on it (post, receive, send,
// reclaim).
//! A virtio-user queue.

use std::collections::VecDeque;
use std::path::PathBuf;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::VirtioUserError;
use crate::pool::{Packet, PktPool, HEADROOM};
use crate::port::PortCounters;
use crate::ring::{Desc, DriverRing, PackedDriverRing};
use crate::spec::{
    NET_HDR_LEN, NUM_BUFFERS_AT, PACKED_BASE_WRAP, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_WRITE, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
    VRING_USED_F_NO_NOTIFY,
};

/// A position in a packed ring: the slot and the wrap counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    at: u16,
    wrap: bool,
}

impl Pos {
    const START: Self = Self { at: 0, wrap: true };

    #[inline]
    fn next(self, size: u16) -> Self {
        if self.at + 1 == size {
            Self { at: 0, wrap: !self.wrap }
        } else {
            Self { at: self.at + 1, wrap: self.wrap }
        }
    }
}

/// A packed ring and where we are in it: the next slot we make available, and the next
/// one the device marks used.
#[derive(Debug)]
pub(super) struct Packed {
    ring: PackedDriverRing,
    avail: Pos,
    used: Pos,
}

impl Packed {
    /// The flags that make a descriptor available in this lap (plus `extra`).
    #[inline]
    fn avail_flags(&self, extra: u16) -> u16 {
        let (a, u) = if self.avail.wrap { (VRING_PACKED_DESC_F_AVAIL, 0) } else { (0, VRING_PACKED_DESC_F_USED) };
        a | u | extra
    }

    /// Whether the device marked the next slot used: both bits equal our used wrap counter.
    #[inline]
    fn next_is_used(&self) -> bool {
        self.is_used(self.used)
    }

    #[inline]
    fn is_used(&self, at: Pos) -> bool {
        let f = self.ring.flags(at.at);
        let bit = |m: u16| f & m != 0;
        bit(VRING_PACKED_DESC_F_AVAIL) == at.wrap && bit(VRING_PACKED_DESC_F_USED) == at.wrap
    }

    /// Whether the next `k` slots (at most the ring's size) are all used.
    fn used_ahead(&self, k: u16) -> bool {
        if k > self.ring.size() {
            return false;
        }
        let mut at = self.used;
        (0..k).all(|_| {
            let used = self.is_used(at);
            at = at.next(self.ring.size());
            used
        })
    }
}

/// The ring of a queue, in either layout.
#[derive(Debug)]
pub(super) enum Ring {
    /// Split: descriptors, avail ring, used ring.
    Split(DriverRing),
    /// Packed: one descriptor ring both sides write (VIRTIO_F_RING_PACKED).
    Packed(Packed),
}

/// What SET_VRING_ADDR carries for a ring, and its size.
#[derive(Debug, Clone, Copy)]
pub(super) struct RingAddrs {
    pub(super) size: u16,
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
}

/// One driver-side queue with its packets in flight.
#[derive(Debug)]
pub(super) struct DriverQueue {
    pub(super) ring: Ring,
    /// Free descriptor ids, oldest first: with a backend that completes in order,
    /// ids cycle in avail order, so avail ring entries never change (no cache-line
    /// ping-pong on them).
    free: VecDeque<u16>,
    /// Packet behind each descriptor id in flight.
    slots: Vec<Option<Packet>>,
    /// On a packed ring, the id posted at each slot: a device in order marks a batch
    /// used with one descriptor, and the ids it skips are read back from here.
    posted: Vec<u16>,
    /// The packets sent last carried their sender's headers (transmit offloads): each
    /// one's header is zeroed when it comes back, so that a buffer's next use asks for
    /// nothing unless its sender says so.
    own_headers: bool,
    avail_idx: u16,
    pub(super) last_used: u16,
    pub(super) kick: EventFd,
    pub(super) call: EventFd,
}

impl DriverQueue {
    pub(super) fn new(size: u16) -> Result<Self, VirtioUserError> {
        let ring = Ring::Split(DriverRing::new(size, None)?);
        let ev =
            || {
                EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(|e| VirtioUserError::Socket { path: PathBuf::new(), what: "eventfd", source: e.into() })
            };
        Ok(Self {
            ring,
            free: (0..size).collect(),
            slots: (0..size).map(|_| None).collect(),
            posted: vec![0; usize::from(size)],
            own_headers: false,
            avail_idx: 0,
            last_used: 0,
            kick: ev()?,
            call: ev()?,
        })
    }

    /// Entries of the ring.
    pub(super) fn size(&self) -> u16 {
        match &self.ring {
            Ring::Split(r) => r.size(),
            Ring::Packed(p) => p.ring.size(),
        }
    }

    /// Whether the ring is packed.
    pub(super) fn packed(&self) -> bool {
        matches!(self.ring, Ring::Packed(_))
    }

    /// Gives the queue a ring of the layout negotiated (`packed` or split), the same size;
    /// a new one only if the layout changes. Call while nothing is in flight (after
    /// [`Self::reset`]).
    pub(super) fn set_layout(&mut self, packed: bool) -> Result<(), VirtioUserError> {
        if packed == self.packed() {
            return Ok(());
        }
        let size = self.size();
        self.ring = if packed {
            Ring::Packed(Packed { ring: PackedDriverRing::new(size, None)?, avail: Pos::START, used: Pos::START })
        } else {
            Ring::Split(DriverRing::new(size, None)?)
        };
        Ok(())
    }

    /// The ring's addresses for SET_VRING_ADDR (a packed ring's driver and device event
    /// areas go where a split ring's avail and used rings do).
    pub(super) fn addrs(&self) -> RingAddrs {
        match &self.ring {
            Ring::Split(r) => {
                let l = r.layout();
                RingAddrs { size: l.size, desc: l.desc, avail: l.avail, used: l.used }
            }
            Ring::Packed(p) => {
                let (desc, avail, used) = p.ring.areas();
                RingAddrs { size: p.ring.size(), desc, avail, used }
            }
        }
    }

    /// SET_VRING_BASE's value for a fresh ring: index 0, and for a packed ring the wrap
    /// counters (1) of both the avail (bit 15) and the used (bit 31) position.
    pub(super) fn base(&self) -> u32 {
        if self.packed() {
            PACKED_BASE_WRAP | PACKED_BASE_WRAP << 16
        } else {
            0
        }
    }

    /// The region holding the ring.
    pub(super) fn region(&self) -> &crate::mem::Region {
        match &self.ring {
            Ring::Split(r) => r.region(),
            Ring::Packed(p) => p.ring.region(),
        }
    }

    /// Asks the backend to signal the call fd when it uses buffers (`true`), or not.
    pub(super) fn set_interrupts(&self, on: bool) {
        match &self.ring {
            Ring::Split(r) => r.set_avail_flags(if on { 0 } else { VRING_AVAIL_F_NO_INTERRUPT }),
            Ring::Packed(p) => {
                p.ring.set_driver_event_flags(if on { RING_EVENT_FLAGS_ENABLE } else { RING_EVENT_FLAGS_DISABLE });
            }
        }
    }

    /// Whether the backend has used a buffer we have not taken yet.
    pub(super) fn has_used(&self) -> bool {
        match &self.ring {
            Ring::Split(r) => r.used_idx() != self.last_used,
            Ring::Packed(p) => p.next_is_used(),
        }
    }

    /// Returns every packet in flight to the pool and zeroes the ring.
    pub(super) fn reset(&mut self, pool: &mut PktPool) {
        for s in &mut self.slots {
            if let Some(p) = s.take() {
                free_sent(pool, p, self.own_headers);
            }
        }
        self.free.clear();
        self.free.extend(0..self.size());
        self.avail_idx = 0;
        self.last_used = 0;
        match &mut self.ring {
            Ring::Split(r) => r.reset(),
            Ring::Packed(p) => {
                p.ring.reset();
                p.avail = Pos::START;
                p.used = Pos::START;
            }
        }
    }

    /// Descriptors free to post.
    #[inline]
    pub(super) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Whether no descriptor is in flight.
    pub(super) fn all_free(&self) -> bool {
        self.free.len() == usize::from(self.size())
    }

    /// Makes buffer `id` (at `addr`, `len` bytes, `write`: the device writes it) the
    /// `k`-th of a batch available; a split ring needs [`Self::publish`] after the batch.
    #[inline]
    fn post(&mut self, k: u16, id: u16, addr: u64, len: u32, write: bool) {
        match &mut self.ring {
            Ring::Split(r) => {
                let flags = if write { VRING_DESC_F_WRITE } else { 0 };
                r.set_desc(id, Desc { addr, len, flags, next: 0 });
                r.set_avail(self.avail_idx.wrapping_add(k), id);
            }
            Ring::Packed(p) => {
                let flags = p.avail_flags(if write { VRING_DESC_F_WRITE } else { 0 });
                p.ring.set_desc(p.avail.at, addr, len, id, flags);
                if let Some(slot) = self.posted.get_mut(usize::from(p.avail.at)) {
                    *slot = id;
                }
                p.avail = p.avail.next(p.ring.size());
            }
        }
    }

    /// Publishes a batch of `n` buffers posted (a split ring's avail index; a packed ring's
    /// descriptors are the device's as each one's flags are stored).
    #[inline]
    fn publish(&mut self, n: u16) {
        self.avail_idx = self.avail_idx.wrapping_add(n);
        if let Ring::Split(r) = &self.ring {
            r.publish_avail(self.avail_idx);
        }
    }

    /// Takes the next used buffer's (id, length), if the device has used one. On a split
    /// ring the caller has counted that it has (from the used index).
    #[inline]
    fn pop_used(&mut self) -> Option<(u32, u32)> {
        match &mut self.ring {
            Ring::Split(r) => {
                let e = r.used_elem(self.last_used);
                self.last_used = self.last_used.wrapping_add(1);
                Some(e)
            }
            Ring::Packed(p) => {
                if !p.next_is_used() {
                    return None;
                }
                let (id, len) = p.ring.used(p.used.at);
                p.used = p.used.next(p.ring.size());
                Some((u32::from(id), len))
            }
        }
    }

    /// How many used buffers a split ring holds that we have not taken (an error if the
    /// device's index lies); a packed ring's are found one by one ([`Self::pop_used`]).
    #[inline]
    fn used_pending(&self, what: &str) -> Result<u16, String> {
        match &self.ring {
            Ring::Split(r) => {
                let used = r.used_idx();
                let pending = used.wrapping_sub(self.last_used);
                if pending > r.size() {
                    return Err(format!("{what} used index jumped from {} to {used}", self.last_used));
                }
                Ok(pending)
            }
            Ring::Packed(p) => Ok(p.ring.size()),
        }
    }

    /// Posts free receive descriptors with fresh buffers (the receive queue).
    pub(super) fn refill_rx(&mut self, pool: &mut PktPool) {
        let room = u32::from(pool.data_room());
        let mut n = 0u16;
        while let Some(&id) = self.free.front() {
            let Some(p) = pool.alloc() else { break };
            self.free.pop_front();
            self.post(n, id, pool.data_addr(&p) - NET_HDR_LEN as u64, NET_HDR_LEN + room, true);
            self.slots[id as usize] = Some(p);
            n += 1;
        }
        if n > 0 {
            self.publish(n);
        }
    }

    /// Takes the buffers the backend filled (the receive queue) into `pkts`, as many as
    /// it has room for, counting them in `counters`. `merged`: VIRTIO_NET_F_MRG_RXBUF was
    /// negotiated, and a frame may span several buffers (see [`Self::merge`]). Returns
    /// how many it took, and the fault, if the backend broke the ring (the port must then
    /// go down).
    #[inline]
    pub(super) fn receive(
        &mut self,
        pool: &mut PktPool,
        pkts: &mut Vec<Packet>,
        counters: &mut PortCounters,
        merged: bool,
    ) -> (usize, Option<String>) {
        let mut pending = match self.used_pending("rx") {
            Ok(n) => n,
            Err(f) => return (0, Some(f)),
        };
        let room = pkts.capacity() - pkts.len();
        let max = u32::from(pool.data_room());
        let mut got = 0;
        let mut bytes = 0u64;
        while got < room && pending > 0 {
            pending -= 1;
            let Some((id, len)) = self.pop_used() else { break };
            let mut p = match self.take_used(pool, id, len, max) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    counters.rx_errors += 1;
                    continue;
                }
                Err(f) => return (got, Some(f)),
            };
            if merged {
                match self.merge(pool, &mut p, &mut pending, max) {
                    Ok(true) => {}
                    Ok(false) => {
                        counters.rx_errors += 1;
                        pool.free(p);
                        continue;
                    }
                    Err(f) => {
                        pool.free(p);
                        return (got, Some(f));
                    }
                }
            }
            bytes += p.len() as u64;
            pkts.push(p);
            got += 1;
        }
        counters.rx_packets += got as u64;
        counters.rx_bytes += bytes;
        (got, None)
    }

    /// Takes the used receive buffer `id` (`len` bytes written), its data (after the
    /// header, at most `max` bytes) in place; `None` (the buffer freed) if its length is
    /// out of bounds.
    #[inline]
    fn take_used(&mut self, pool: &mut PktPool, id: u32, len: u32, max: u32) -> Result<Option<Packet>, String> {
        let Some(mut p) = self.slots.get_mut(id as usize).and_then(Option::take) else {
            return Err(format!("rx used id {id} is not in flight"));
        };
        self.free.push_back(id as u16);
        let data_len = len.wrapping_sub(NET_HDR_LEN);
        if len < NET_HDR_LEN || data_len > max {
            pool.free(p);
            return Ok(None);
        }
        PktPool::reshape(&mut p, HEADROOM, data_len as u16);
        Ok(Some(p))
    }

    /// Appends to `p` (a frame's first buffer) the other buffers its header's
    /// `num_buffers` says the frame spans, each taken from the used ring (`pending` of
    /// them are there) and freed. The count is the backend's word, so it is bounded: a
    /// count of 0, more buffers than are used, or a frame past `p`'s room make the frame
    /// bad (false), with every buffer it had taken freed.
    #[inline]
    fn merge(&mut self, pool: &mut PktPool, p: &mut Packet, pending: &mut u16, max: u32) -> Result<bool, String> {
        let hdr = pool.header(p, NET_HDR_LEN as u16);
        let n = u16::from_le_bytes([hdr[NUM_BUFFERS_AT], hdr[NUM_BUFFERS_AT + 1]]);
        if n == 1 {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
        }
        let enough = match &self.ring {
            Ring::Split(_) => n - 1 <= *pending,
            Ring::Packed(p) => p.used_ahead(n - 1),
        };
        if !enough {
            return Ok(false);
        }
        let mut whole = true;
        for k in 1..n {
            *pending = pending.saturating_sub(1);
            // A packed ring's device marks a frame's buffers used together (the first last).
            let Some((id, len)) = self.pop_used() else {
                return Err(format!("rx frame of {n} buffers: buffer {k} not used"));
            };
            let Some(mut q) = self.slots.get_mut(id as usize).and_then(Option::take) else {
                return Err(format!("rx used id {id} is not in flight"));
            };
            self.free.push_back(id as u16);
            // A buffer after the first holds data from its start (where a header would be).
            whole &= len <= max + NET_HDR_LEN && {
                PktPool::reshape(&mut q, HEADROOM - NET_HDR_LEN as u16, len as u16);
                pool.append(p, &q)
            };
            pool.free(q);
        }
        Ok(whole)
    }

    /// Frees transmitted packets (the transmit queue); an error if the backend returned a
    /// bad id. `in_order`: VIRTIO_F_IN_ORDER was negotiated.
    #[inline]
    pub(super) fn reclaim_tx(&mut self, pool: &mut PktPool, in_order: bool) -> Result<(), String> {
        if in_order && self.packed() {
            return self.reclaim_tx_packed_in_order(pool);
        }
        let pending = self.used_pending("tx")?;
        for _ in 0..pending {
            let id = match &self.ring {
                // In order, the k-th buffer used is the k-th we made available: its id is
                // in our own avail ring, and the used entry (a line the device's core
                // wrote) need not be read at all.
                Ring::Split(r) if in_order => {
                    let id = r.avail_entry(self.last_used);
                    self.last_used = self.last_used.wrapping_add(1);
                    u32::from(id)
                }
                _ => match self.pop_used() {
                    Some((id, _)) => id,
                    None => break,
                },
            };
            match self.slots.get_mut(id as usize).and_then(Option::take) {
                Some(p) => {
                    free_sent(pool, p, self.own_headers);
                    self.free.push_back(id as u16);
                }
                None => return Err(format!("tx used id {id} is not in flight")),
            }
        }
        Ok(())
    }

    /// [`Self::reclaim_tx`] on a packed ring in order: each used descriptor the device
    /// wrote may stand for a batch, the buffers posted from its slot up to the one whose id
    /// it carries. The id is the device's word: one that is not among the buffers in
    /// flight, in the order they were posted, is an error.
    fn reclaim_tx_packed_in_order(&mut self, pool: &mut PktPool) -> Result<(), String> {
        let Ring::Packed(p) = &mut self.ring else { return Ok(()) };
        let size = p.ring.size();
        loop {
            let in_flight = usize::from(size) - self.free.len();
            if in_flight == 0 || !p.next_is_used() {
                return Ok(());
            }
            let (last, _) = p.ring.used(p.used.at);
            let mut end = p.used;
            let mut found = false;
            for _ in 0..in_flight {
                let id = self.posted.get(usize::from(end.at)).copied();
                end = end.next(size);
                if id == Some(last) {
                    found = true;
                    break;
                }
            }
            if !found {
                return Err(format!("tx used id {last} is not in flight (in order, from slot {})", p.used.at));
            }
            while p.used != end {
                let id = self.posted.get(usize::from(p.used.at)).copied().unwrap_or(u16::MAX);
                p.used = p.used.next(size);
                match self.slots.get_mut(usize::from(id)).and_then(Option::take) {
                    Some(pkt) => {
                        free_sent(pool, pkt, self.own_headers);
                        self.free.push_back(id);
                    }
                    None => return Err(format!("tx used id {id} is not in flight")),
                }
            }
        }
    }

    /// Makes packets from the front of `pkts` available to the backend (the transmit
    /// queue), as many as there are free descriptors, and kicks it unless it asked not
    /// to be; `own_headers`: each packet's virtio-net header is its sender's, sent as it
    /// is (else zeroed). Returns how many it took, and their bytes.
    #[inline]
    pub(super) fn transmit(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>, own_headers: bool) -> (usize, u64) {
        let n = pkts.len().min(self.free.len());
        let mut bytes = 0u64;
        self.own_headers = own_headers;
        for (k, p) in pkts.drain(..n).enumerate() {
            let id = self.free.pop_front().expect("counted");
            // num_buffers (the last two bytes) only means something on receive: left as
            // is, as DPDK's driver does, so a reflected buffer's header is not stored to.
            // With transmit offloads the header is the sender's (PktPool::set_net_hdr).
            let hdr = if own_headers {
                pool.header_addr(&p, NET_HDR_LEN as u16)
            } else {
                pool.clear_header(&p, NET_HDR_LEN as u16, NET_HDR_LEN as u16 - 2)
            };
            bytes += p.len() as u64;
            self.post(k as u16, id, hdr, NET_HDR_LEN + p.len() as u32, false);
            self.slots[id as usize] = Some(p);
        }
        if n > 0 {
            self.publish(n as u16);
            // Order the avail store before the flag load (the device's fence pairs with it).
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            let wants_kick = match &self.ring {
                Ring::Split(r) => r.used_flags() & VRING_USED_F_NO_NOTIFY == 0,
                Ring::Packed(p) => p.ring.device_event_flags() != RING_EVENT_FLAGS_DISABLE,
            };
            if wants_kick {
                let _ = self.kick.write(1);
            }
        }
        (n, bytes)
    }
}

impl DriverQueue {
    /// A receive burst (the receive queue): [`Self::receive`], then fresh buffers for
    /// those taken. The fault, if any, is the caller's to act on (the port goes down).
    #[inline]
    pub(super) fn rx_burst(
        &mut self,
        pool: &mut PktPool,
        pkts: &mut Vec<Packet>,
        counters: &mut PortCounters,
        merged: bool,
    ) -> (usize, Option<String>) {
        let (got, fault) = self.receive(pool, pkts, counters, merged);
        if fault.is_none() && got > 0 {
            self.refill_rx(pool);
        }
        (got, fault)
    }

    /// A transmit burst (the transmit queue): what the backend finished with is freed,
    /// then [`Self::transmit`], counted in `counters`. A packed ring's used descriptors
    /// are read one by one, in lines the backend's core is still writing: they are
    /// reclaimed once a quarter of the ring is left, in bulk. An error if the backend
    /// broke the ring (the port must then go down).
    #[inline]
    pub(super) fn tx_burst(
        &mut self,
        pool: &mut PktPool,
        pkts: &mut Vec<Packet>,
        counters: &mut PortCounters,
        in_order: bool,
        own_headers: bool,
    ) -> Result<usize, String> {
        if !self.packed() || self.free_count() < usize::from(self.size()) / 4 {
            self.reclaim_tx(pool, in_order)?;
        }
        let (n, bytes) = self.transmit(pool, pkts, own_headers);
        counters.tx_packets += n as u64;
        counters.tx_bytes += bytes;
        Ok(n)
    }

    /// Before sleeping on the call eventfd (the receive queue): asks for a call, then
    /// looks once more, as frames may have come in between. True if some did (no call
    /// asked for then).
    pub(super) fn arm_call(&self) -> bool {
        self.set_interrupts(true);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.has_used() {
            self.set_interrupts(false);
            return true;
        }
        false
    }

    /// After sleeping on the call eventfd: takes the call and asks for no more.
    pub(super) fn disarm_call(&self) {
        let _ = self.call.read();
        self.set_interrupts(false);
    }
}

/// Frees a packet the device is done with; `own_header`: its header was its sender's
/// (transmit offloads), zeroed first (stored to only if it is not zero already).
#[inline]
fn free_sent(pool: &mut PktPool, p: Packet, own_header: bool) {
    if own_header {
        pool.clear_header(&p, NET_HDR_LEN as u16, crate::vnet_hdr::HDR_FIELDS_LEN as u16);
    }
    pool.free(p);
}
