// The TAP port kind: a kernel TAP interface on a bridge, so that the host's own
// stack (ping, curl, ssh, management traffic) reaches the containers. One read or
// write per frame, never blocking: the device is non-blocking.
//! TAP ports.

mod sys;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};

use netlib::pool::BURST;
use netlib::vhost::{FrameBuf, Frames};
use netlib::{LinkState, PortCounters};

use super::SwitchPort;

pub use sys::MAX_IFNAME;

/// Largest frame a TAP port takes from the kernel: a 9000-byte MTU with Ethernet
/// and VLAN headers, and room.
pub const TAP_MAX_FRAME: usize = 9216;

/// Errors opening a TAP port.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The device could not be opened or created.
    #[error("TAP interface {name}: {source} (fastpathd needs CAP_NET_ADMIN and /dev/net/tun)")]
    Open {
        /// Interface name.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
    /// It could not be brought up.
    #[error("TAP interface {name}: setting it up: {source}")]
    Up {
        /// Interface name.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A TAP interface as a switch port: what the kernel sends out of the interface
/// comes into the switch, and what the switch sends goes into the kernel's stack.
#[derive(Debug)]
pub struct TapPort {
    name: String,
    dev: File,
    bufs: Vec<FrameBuf>,
    n: usize,
    /// One frame being written (a frame in a frontend's memory is gathered here).
    out: Vec<u8>,
    counters: PortCounters,
    last_fault: Option<String>,
}

impl TapPort {
    /// Opens (creating if absent) the TAP interface `ifname` and sets it up.
    pub fn open(ifname: &str) -> Result<Self, TapError> {
        let dev = sys::open_tap(ifname).map_err(|source| TapError::Open { name: ifname.into(), source })?;
        sys::set_up(ifname).map_err(|source| TapError::Up { name: ifname.into(), source })?;
        tracing::info!("TAP interface {ifname} open and up");
        Ok(Self {
            name: ifname.to_string(),
            dev,
            bufs: (0..BURST).map(|_| FrameBuf::with_capacity(TAP_MAX_FRAME)).collect(),
            n: 0,
            out: vec![0; TAP_MAX_FRAME],
            counters: PortCounters::default(),
            last_fault: None,
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.name
    }

    fn fault(&mut self, what: &str, e: &std::io::Error) {
        let msg = format!("TAP {}: {what}: {e}", self.name);
        if self.last_fault.as_deref() != Some(msg.as_str()) {
            tracing::warn!("{msg}");
        }
        self.last_fault = Some(msg);
    }
}

impl TapPort {
    /// Writes `n` frames to the device, each written by `write(k, buf)` into the
    /// port's frame buffer first; returns how many went out.
    fn transmit(&mut self, n: usize, mut write: impl FnMut(usize, &mut [u8]) -> Result<usize, super::Unsent>) -> usize {
        let mut sent = 0;
        for k in 0..n {
            let len = match write(k, &mut self.out) {
                Ok(len) => len,
                Err(why) => {
                    why.count(&mut self.counters);
                    continue;
                }
            };
            match self.dev.write(&self.out[..len]) {
                Ok(_) => {
                    sent += 1;
                    self.counters.tx_packets += 1;
                    self.counters.tx_bytes += len as u64;
                }
                // The kernel's queue is full (or the interface is down): dropped here.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.counters.tx_dropped += 1;
                    self.counters.drop_ring_full += 1;
                }
                Err(e) => {
                    self.counters.tx_dropped += 1;
                    let e = std::io::Error::new(e.kind(), e.to_string());
                    self.fault("write", &e);
                }
            }
        }
        sent
    }
}

impl SwitchPort for TapPort {
    fn poll(&mut self) -> bool {
        true
    }

    fn recv(&mut self) -> usize {
        self.n = 0;
        while self.n < BURST {
            let b = &mut self.bufs[self.n];
            match self.dev.read(b.room_mut()) {
                Ok(0) => break,
                Ok(len) => {
                    b.set_len(len);
                    self.n += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => break,
                Err(e) => {
                    self.counters.rx_errors += 1;
                    self.fault("read", &e);
                    break;
                }
            }
        }
        self.n
    }

    fn frames(&self) -> Frames<'_> {
        Frames::Local(&self.bufs[..self.n])
    }

    fn release(&mut self) {
        self.n = 0;
    }

    fn send(&mut self, src: &Frames<'_>, picks: &[u8]) {
        self.transmit(picks.len(), |k, buf| super::copy_pick(src, picks, k, buf));
    }

    fn send_built(&mut self, n: usize, build: &mut dyn FnMut(usize, &mut [u8]) -> usize) -> usize {
        self.transmit(n, |k, buf| super::built(build(k, buf)))
    }

    fn counters(&self) -> PortCounters {
        self.counters
    }

    fn counters_mut(&mut self) -> &mut PortCounters {
        &mut self.counters
    }

    fn link(&self) -> LinkState {
        LinkState::Up
    }

    fn last_fault(&self) -> Option<&str> {
        self.last_fault.as_deref()
    }
}

#[cfg(test)]
mod tests;
