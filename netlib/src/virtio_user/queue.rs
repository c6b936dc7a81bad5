// The driver side of one virtqueue: our ring, the packets in flight behind its
// descriptors, its eventfds, and the burst work on it (post, receive, send, reclaim).
//! A virtio-user queue.

use std::collections::VecDeque;
use std::path::PathBuf;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::VirtioUserError;
use crate::pool::{Packet, PktPool, HEADROOM};
use crate::port::PortCounters;
use crate::ring::{Desc, DriverRing};
use crate::spec::{NET_HDR_LEN, NUM_BUFFERS_AT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY};

/// One driver-side queue with its packets in flight.
#[derive(Debug)]
pub(super) struct DriverQueue {
    pub(super) ring: DriverRing,
    /// Free descriptor ids, oldest first: with a backend that completes in order,
    /// ids cycle in avail order, so avail ring entries never change (no cache-line
    /// ping-pong on them).
    free: VecDeque<u16>,
    /// Packet behind each descriptor id in flight.
    slots: Vec<Option<Packet>>,
    avail_idx: u16,
    pub(super) last_used: u16,
    pub(super) kick: EventFd,
    pub(super) call: EventFd,
}

impl DriverQueue {
    pub(super) fn new(size: u16) -> Result<Self, VirtioUserError> {
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
    pub(super) fn reset(&mut self, pool: &mut PktPool) {
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

    /// Whether no descriptor is in flight.
    pub(super) fn all_free(&self) -> bool {
        self.free.len() == usize::from(self.ring.size())
    }

    /// Posts free receive descriptors with fresh buffers (the receive queue).
    pub(super) fn refill_rx(&mut self, pool: &mut PktPool) {
        let room = u32::from(pool.data_room());
        let mut n = 0u16;
        while let Some(&id) = self.free.front() {
            let Some(p) = pool.alloc() else { break };
            self.free.pop_front();
            self.ring.set_desc(
                id,
                Desc {
                    addr: pool.data_addr(&p) - NET_HDR_LEN as u64,
                    len: NET_HDR_LEN + room,
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
        let used = self.ring.used_idx();
        let mut pending = used.wrapping_sub(self.last_used);
        if pending > self.ring.size() {
            return (0, Some(format!("rx used index jumped to {used}")));
        }
        let room = pkts.capacity() - pkts.len();
        let max = u32::from(pool.data_room());
        let mut got = 0;
        let mut bytes = 0u64;
        while got < room && pending > 0 {
            pending -= 1;
            let mut p = match self.take_used(pool, max) {
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

    /// Takes the next used receive buffer, its data (after the header, at most `max`
    /// bytes) in place; `None` (the buffer freed) if its length is out of bounds.
    #[inline]
    fn take_used(&mut self, pool: &mut PktPool, max: u32) -> Result<Option<Packet>, String> {
        let (id, len) = self.ring.used_elem(self.last_used);
        self.last_used = self.last_used.wrapping_add(1);
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
        if n == 0 || n - 1 > *pending {
            return Ok(false);
        }
        let mut whole = true;
        for _ in 1..n {
            *pending -= 1;
            let (id, len) = self.ring.used_elem(self.last_used);
            self.last_used = self.last_used.wrapping_add(1);
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
        let used = self.ring.used_idx();
        let pending = used.wrapping_sub(self.last_used);
        if pending > self.ring.size() {
            return Err(format!("tx used index jumped from {} to {used}", self.last_used));
        }
        for _ in 0..pending {
            // In order, the k-th buffer used is the k-th we made available: its id is in
            // our own avail ring, and the used entry (a line the device's core wrote)
            // need not be read at all.
            let id = if in_order {
                u32::from(self.ring.avail_entry(self.last_used))
            } else {
                self.ring.used_elem(self.last_used).0
            };
            self.last_used = self.last_used.wrapping_add(1);
            match self.slots.get_mut(id as usize).and_then(Option::take) {
                Some(p) => {
                    pool.free(p);
                    self.free.push_back(id as u16);
                }
                None => return Err(format!("tx used id {id} is not in flight")),
            }
        }
        Ok(())
    }

    /// Makes packets from the front of `pkts` available to the backend (the transmit
    /// queue), as many as there are free descriptors, and kicks it unless it asked not
    /// to be. Returns how many it took, and their bytes.
    #[inline]
    pub(super) fn transmit(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> (usize, u64) {
        let n = pkts.len().min(self.free.len());
        let mut bytes = 0u64;
        for (k, p) in pkts.drain(..n).enumerate() {
            let id = self.free.pop_front().expect("counted");
            // num_buffers (the last two bytes) only means something on receive: left as
            // is, as DPDK's driver does, so a reflected buffer's header is not stored to.
            let hdr = pool.clear_header(&p, NET_HDR_LEN as u16, NET_HDR_LEN as u16 - 2);
            bytes += p.len() as u64;
            self.ring.set_desc(id, Desc { addr: hdr, len: NET_HDR_LEN + p.len() as u32, flags: 0, next: 0 });
            self.ring.set_avail(self.avail_idx.wrapping_add(k as u16), id);
            self.slots[id as usize] = Some(p);
        }
        if n > 0 {
            self.avail_idx = self.avail_idx.wrapping_add(n as u16);
            self.ring.publish_avail(self.avail_idx);
            // Order the avail store before the flag load (the device's fence pairs with it).
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if self.ring.used_flags() & VRING_USED_F_NO_NOTIFY == 0 {
                let _ = self.kick.write(1);
            }
        }
        (n, bytes)
    }
}
