// The Port trait every driver implements, its link state and counters: the seam
// between drivers and applications (the specs that open a port are in port_spec.rs).
//! The `Port` seam between drivers and applications.

use crate::pool::{Packet, PktPool};

/// Link state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected or not ready yet.
    Down,
    /// Rings are set up: packets move.
    Up,
}

/// Per-port counters, from the point of view of the port's owner: `rx` is what
/// the port took from its peer, `tx` what it handed to its peer. `tx_dropped`
/// counts every packet the owner asked to send that was not taken; the `drop_*`
/// fields say why, where the port knows. The C ABI hands out the first seven
/// fields as `struct fp_counters` (netlib-ffi's own `#[repr(C)]` copy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive faults (malformed buffers from the peer).
    pub rx_errors: u64,
    /// Packets refused on transmit (ring full, link down, too big).
    pub tx_dropped: u64,
    /// Times the port was reset after a fault or a peer disconnect.
    pub resets: u64,
    /// Of `tx_dropped`: the peer's receive ring had no buffer.
    pub drop_ring_full: u64,
    /// Of `tx_dropped`: the peer's buffer was too small for the frame.
    pub drop_too_big: u64,
    /// Received packets with nowhere to go (a switch's destination is the port itself).
    pub drop_filtered: u64,
    /// Received packets whose source addresses are not the port's own (port security).
    pub drop_spoofed: u64,
    /// Received packets outside the port's VLANs (a switch's trunk port: untagged, or a
    /// tag it does not carry; an access port: tagged).
    pub drop_vlan: u64,
    /// Calls refused because they passed a pool other than the one the port was
    /// opened with (a bug in the caller; the port logs the first one).
    pub wrong_pool: u64,
    /// Of `tx_dropped`: no peer was connected to take them (a switch's vhost-user port
    /// whose frontend is away, or has no receive ring live, gets flooded frames all the
    /// same).
    pub drop_no_peer: u64,
}

impl std::ops::AddAssign for PortCounters {
    /// Adds `o`'s counts to these (e.g. the pairs of one port, for its totals).
    fn add_assign(&mut self, o: Self) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_errors += o.rx_errors;
        self.tx_dropped += o.tx_dropped;
        self.resets += o.resets;
        self.drop_ring_full += o.drop_ring_full;
        self.drop_too_big += o.drop_too_big;
        self.drop_filtered += o.drop_filtered;
        self.drop_spoofed += o.drop_spoofed;
        self.drop_vlan += o.drop_vlan;
        self.wrong_pool += o.wrong_pool;
        self.drop_no_peer += o.drop_no_peer;
    }
}

/// A packet port: bursts in, bursts out.
///
/// `rx_burst` appends up to `pkts`' spare capacity packets from `pool`;
/// `tx_burst` takes packets from the front of `pkts` and returns how many it
/// took (those now belong to the port); the rest stay in `pkts` for the caller to
/// retry or free. Neither allocates, locks, or (in polling mode) makes a syscall,
/// except for the periodic control check a port does every few hundred calls.
///
/// A port that shares its pool's memory with its peer (virtio-user, a VF) must be
/// given the pool it was opened with on every call: it refuses a call with another
/// (0 packets, `false`), logs the first such call naming the port and both pools, and
/// counts each in [`PortCounters::wrong_pool`].
pub trait Port: Send {
    /// Receives into `pkts` from buffers of `pool`; returns how many were added.
    fn rx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize;
    /// Sends from the front of `pkts`; returns how many were taken.
    fn tx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize;
    /// Link state.
    fn link(&self) -> LinkState;
    /// Counters.
    fn counters(&self) -> PortCounters;
    /// Drives the control path (connection, handshake, peer messages) now.
    fn poll_control(&mut self, pool: &mut PktPool);
    /// A name for logs.
    fn name(&self) -> &str;
    /// Waits (up to `timeout`) until the peer has taken every packet this port
    /// handed to it, so that closing the port loses nothing; returns whether it did.
    fn flush_tx(&mut self, pool: &mut PktPool, timeout: std::time::Duration) -> bool {
        let _ = (pool, timeout);
        true
    }
    /// Interrupt mode: sleeps until the peer signals that packets arrived, or
    /// `timeout` passes; returns whether it was woken. Call it only after
    /// `rx_burst` found nothing for a while. Ports without notifications just
    /// nap briefly.
    fn wait_rx(&mut self, pool: &mut PktPool, timeout: std::time::Duration) -> bool {
        let _ = pool;
        std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
        false
    }
}

/// The pool a port was opened with, for a port that shares that pool's memory with
/// its peer: packets of any other pool are at addresses the peer cannot reach.
#[derive(Debug)]
pub(crate) struct PoolCheck {
    addr: u64,
    warned: bool,
}

impl PoolCheck {
    /// Remembers `pool` as the port's own.
    pub(crate) fn new(pool: &PktPool) -> Self {
        Self { addr: pool.region().map().addr(), warned: false }
    }

    /// Where the port's own pool is mapped.
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }

    /// Whether `pool` is the port's own. When it is not, counts the call in `counters`
    /// and logs the first time, naming `port`.
    #[inline]
    pub(crate) fn accepts(&mut self, pool: &PktPool, port: &str, counters: &mut PortCounters) -> bool {
        if pool.region().map().addr() == self.addr {
            return true;
        }
        self.refuse(pool, port, counters);
        false
    }

    #[cold]
    fn refuse(&mut self, pool: &PktPool, port: &str, counters: &mut PortCounters) {
        counters.wrong_pool += 1;
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                "{port}: called with a pool that is not the one it was opened with (pool at {:#x}, the port's at {:#x}): \
                 refused, and counted in wrong_pool",
                pool.region().map().addr(),
                self.addr
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolOptions;

    #[test]
    fn pool_check_refuses_and_counts_another_pool() {
        let opts = PoolOptions { nbufs: 8, hugedir: None, ..Default::default() };
        let (own, other) = (PktPool::new(&opts).unwrap(), PktPool::new(&opts).unwrap());
        let mut check = PoolCheck::new(&own);
        let mut c = PortCounters::default();
        assert_eq!(check.addr(), own.region().map().addr());
        assert!(check.accepts(&own, "p", &mut c));
        assert_eq!(c.wrong_pool, 0);
        assert!(!check.accepts(&other, "p", &mut c));
        assert!(!check.accepts(&other, "p", &mut c));
        assert_eq!(c, PortCounters { wrong_pool: 2, ..PortCounters::default() });
        assert!(check.accepts(&own, "p", &mut c));
    }
}
