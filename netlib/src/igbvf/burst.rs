// The VF's data path: receive descriptors written back by the NIC, transmit descriptors
// for each frame (two where it crosses a page), and the rings' refill and reclaim.
//! igbvf bursts.

use super::desc::{self, RxWb, Which};
use super::{regs, IgbVf};
use crate::pool::{Packet, PktPool, DATA_ROOM, HEADROOM};

/// Reclaim transmitted descriptors when fewer than this many are free.
const TX_RECLAIM_BELOW: u16 = 32;

impl IgbVf {
    /// Takes the frames the NIC wrote back into `pkts`, as many as it has room for, and
    /// gives the ring fresh buffers.
    #[inline]
    pub(super) fn receive(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        let room = pkts.capacity() - pkts.len();
        let mut got = 0;
        let mut bytes = 0u64;
        let mut seen = 0;
        while seen < room && self.rx_posted > 0 {
            let i = self.rx_next;
            let wb = RxWb::from_hi(self.rings.read_hi(Which::Rx, i));
            if !wb.done() {
                break;
            }
            seen += 1;
            self.rx_next = (i + 1) & (self.n - 1);
            self.rx_posted -= 1;
            let Some(mut p) = self.rx_slots[usize::from(i)].take() else {
                self.counters.rx_errors += 1;
                continue;
            };
            if !wb.good() || wb.len > DATA_ROOM {
                self.counters.rx_errors += 1;
                pool.free(p);
                continue;
            }
            PktPool::reshape(&mut p, HEADROOM, wb.len);
            bytes += u64::from(wb.len);
            pkts.push(p);
            got += 1;
        }
        self.counters.rx_packets += got as u64;
        self.counters.rx_bytes += bytes;
        // Also after an empty poll: a pool that ran dry may have buffers again.
        if self.rx_posted < self.n - 1 {
            self.refill_rx(pool);
        }
        got
    }

    /// Gives the NIC frames from the front of `pkts`, as many as the ring has room for;
    /// returns how many it took (frames outside the pool's DMA mapping, or empty, are
    /// taken, freed and counted as dropped).
    #[inline]
    pub(super) fn transmit(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        // A frame takes one descriptor, two when it crosses a page (see `split`).
        if self.tx_free() < TX_RECLAIM_BELOW.max(2 * pkts.len() as u16) {
            self.reclaim_tx(pool);
        }
        let n = pkts.len().min(usize::from(self.tx_free() / 2));
        let pool_map = &self.maps[0];
        let mut used = 0u16;
        let mut sent = 0u64;
        let mut bytes = 0u64;
        for p in pkts.drain(..n) {
            let addr = pool.data_addr(&p);
            let len = p.len() as u64;
            // Never give the NIC an address it was not mapped: refuse (and count)
            // anything outside the pool's DMA mapping, and empty frames.
            if len == 0 || !pool_map.contains(addr, len) {
                self.counters.tx_dropped += 1;
                pool.free(p);
                continue;
            }
            let len = len as u16;
            let first = desc::tx_first_segment(addr, len, self.split);
            let (last_addr, last_len) = if first < len {
                let i = self.tx_tail;
                self.rings.write(Which::Tx, i, desc::tx_segment(addr, first, len, false));
                self.tx_slots[usize::from(i)] = None;
                self.tx_tail = (i + 1) & (self.n - 1);
                used += 1;
                (addr + u64::from(first), len - first)
            } else {
                (addr, len)
            };
            let i = self.tx_tail;
            self.rings.write(Which::Tx, i, desc::tx_segment(last_addr, last_len, len, true));
            self.tx_slots[usize::from(i)] = Some(p);
            self.tx_tail = (i + 1) & (self.n - 1);
            used += 1;
            sent += 1;
            bytes += u64::from(len);
        }
        if used > 0 {
            self.tx_inflight += used;
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            self.mmio.write(regs::TDT, u32::from(self.tx_tail));
        }
        self.counters.tx_packets += sent;
        self.counters.tx_bytes += bytes;
        n
    }

    /// Gives free receive descriptors fresh buffers; one RDT write.
    #[inline]
    pub(super) fn refill_rx(&mut self, pool: &mut PktPool) {
        let mut added = 0;
        while self.rx_posted < self.n - 1 {
            let Some(p) = pool.alloc() else { break };
            let i = self.rx_tail;
            self.rings.write(Which::Rx, i, desc::rx_read(pool.data_addr(&p)));
            self.rx_slots[usize::from(i)] = Some(p);
            self.rx_tail = (i + 1) & (self.n - 1);
            self.rx_posted += 1;
            added += 1;
        }
        if added > 0 {
            // Descriptors are in memory before the NIC learns of them.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            self.mmio.write(regs::RDT, u32::from(self.rx_tail));
        }
    }

    /// Frees transmitted packets (those whose descriptor has DD).
    #[inline]
    pub(super) fn reclaim_tx(&mut self, pool: &mut PktPool) {
        while self.tx_inflight > 0 {
            let i = self.tx_clean;
            if !desc::tx_done(self.rings.read_hi(Which::Tx, i)) {
                break;
            }
            if let Some(p) = self.tx_slots[usize::from(i)].take() {
                pool.free(p);
            }
            self.tx_clean = (i + 1) & (self.n - 1);
            self.tx_inflight -= 1;
        }
    }

    /// Transmit descriptors free (one always stays empty: a full ring would look empty).
    #[inline]
    pub(super) fn tx_free(&self) -> u16 {
        self.n - 1 - self.tx_inflight
    }
}
