// Any of netlib's poll-mode drivers (a `netlib::Port` and the packet pool it receives
// into) as a switch port; the `vf` port kind is this over the igbvf PMD.
//! Poll-mode driver ports.
//!
//! [`PmdPort`] drives a [`netlib::Port`] with a [`PktPool`] of its own. Frames the
//! driver received are handed to the switch where they lie, as spans of the pool's
//! memory ([`Frames::Spans`]); frames the switch sends are copied once into packets of
//! the pool and given to the driver's `tx_burst`. [`vf`] opens the `vf` kind: an 82576
//! virtual function through VFIO ([`netlib::igbvf`]).

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use netlib::igbvf::{IgbVf, IgbVfError, IgbVfOptions};
use netlib::pool::{PoolError, PoolOptions, BURST, DATA_ROOM};
use netlib::vhost::Frames;
use netlib::{LinkState, Packet, PktPool, Port, PortCounters};

use super::{SwitchPort, WakeFds};

/// Buffers of a VF port's pool: its receive ring (255), its transmit ring (255) and
/// bursts in hand, with room to spare.
pub const VF_POOL_BUFFERS: u32 = 2048;
/// How often a port whose driver is down drives its control path (a reset, the link).
const DOWN_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Calls between two looks at the driver's link while it is up.
const LINK_EVERY: u32 = 4096;

/// Interrupt mode for a driver: how the switch sleeps until it receives.
pub trait Wakeup {
    /// Asks the device to signal when a frame arrives; returns whether frames are
    /// already waiting (checked after asking, so none is missed).
    fn arm(&mut self) -> bool {
        false
    }
    /// The fd the device signals.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Back to polling; `woken` says whether the fd was readable.
    fn disarm(&mut self, woken: bool) {
        let _ = woken;
    }
}

impl Wakeup for netlib::vhost::VhostBackend {}

/// The VF's receive interrupt: MSI-X through VFIO to an eventfd, unmasked while the
/// switch sleeps.
impl Wakeup for IgbVf {
    fn arm(&mut self) -> bool {
        self.arm_rx_interrupt()
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.rx_interrupt_fd()
    }

    fn disarm(&mut self, woken: bool) {
        self.disarm_rx_interrupt(woken);
    }
}

/// Errors opening a VF port.
#[derive(Debug, thiserror::Error)]
pub enum VfPortError {
    /// The packet pool could not be had.
    #[error("vf {pci}: {source}")]
    Pool {
        /// The VF.
        pci: String,
        /// Cause.
        source: PoolError,
    },
    /// The driver could not open the VF.
    #[error("{source} (fastpathd needs the VF bound to vfio-pci: `fastpathctl vf bind {pci}`)")]
    Open {
        /// The VF.
        pci: String,
        /// Cause.
        source: IgbVfError,
    },
}

/// Opens the VF at `pci` (bound to vfio-pci) as a switch port: a pool of
/// [`VF_POOL_BUFFERS`] in hugepages (else memfd), DMA-mapped for the VF.
pub fn vf(pci: &str) -> Result<PmdPort<IgbVf>, VfPortError> {
    let hugedir = Some(std::path::PathBuf::from("/dev/hugepages"));
    let mut pool =
        PktPool::new(&PoolOptions { nbufs: VF_POOL_BUFFERS, hugedir: hugedir.clone(), ..Default::default() })
            .map_err(|source| VfPortError::Pool { pci: pci.into(), source })?;
    let hugedir = pool.region().backing().hugetlbfs_dir().map(std::path::Path::to_path_buf);
    let opts = IgbVfOptions { hugedir, ..IgbVfOptions::default() };
    let dev = IgbVf::open(pci, &mut pool, opts).map_err(|source| VfPortError::Open { pci: pci.into(), source })?;
    Ok(PmdPort::new(dev, pool))
}

/// A poll-mode driver as a switch port. The driver drops before its pool (it unmaps
/// the pool from its device).
#[derive(Debug)]
pub struct PmdPort<P: Port + Wakeup> {
    dev: P,
    pool: PktPool,
    /// The burst received.
    rx: Vec<Packet>,
    /// Where each frame of `rx` is in the pool's memory.
    spans: [(u32, u32); BURST],
    /// Frames being sent.
    tx: Vec<Packet>,
    counters: PortCounters,
    last_fault: Option<String>,
    up: bool,
    calls: u32,
    next_check: Instant,
    seen_resets: u64,
}

impl<P: Port + Wakeup + std::fmt::Debug> PmdPort<P> {
    /// Wraps driver `dev`, which receives into `pool` (the pool it was opened with).
    pub fn new(dev: P, pool: PktPool) -> Self {
        let up = dev.link() == LinkState::Up;
        let seen_resets = dev.counters().resets;
        Self {
            dev,
            pool,
            rx: Vec::with_capacity(BURST),
            spans: [(0, 0); BURST],
            tx: Vec::with_capacity(BURST),
            counters: PortCounters::default(),
            last_fault: None,
            up,
            calls: 0,
            next_check: Instant::now() + DOWN_CHECK_EVERY,
            seen_resets,
        }
    }

    /// The driver.
    pub fn device(&self) -> &P {
        &self.dev
    }

    /// Looks at the driver's link and resets; notes why it is down.
    fn check(&mut self) {
        if !self.up {
            self.dev.poll_control(&mut self.pool);
        }
        let up = self.dev.link() == LinkState::Up;
        let resets = self.dev.counters().resets;
        if resets != self.seen_resets {
            self.seen_resets = resets;
            self.note(format!("{}: reset by its PF, set up again", self.dev.name()));
        }
        if self.up && !up {
            self.note(format!("{}: link down", self.dev.name()));
        } else if !self.up && up {
            tracing::info!("{}: link up", self.dev.name());
        }
        self.up = up;
    }

    fn note(&mut self, why: String) {
        tracing::warn!("{why}");
        self.last_fault = Some(why);
    }
}

impl<P: Port + Wakeup + std::fmt::Debug> SwitchPort for PmdPort<P> {
    #[inline]
    fn poll(&mut self) -> bool {
        self.calls = self.calls.wrapping_add(1);
        if self.up {
            if self.calls.is_multiple_of(LINK_EVERY) {
                self.check();
            }
        } else {
            let now = Instant::now();
            if now >= self.next_check {
                self.next_check = now + DOWN_CHECK_EVERY;
                self.check();
            }
        }
        self.up
    }

    #[inline]
    fn recv(&mut self) -> usize {
        self.pool.free_all(&mut self.rx);
        let n = self.dev.rx_burst(&mut self.pool, &mut self.rx);
        let base = self.pool.region().map().addr();
        for (span, p) in self.spans.iter_mut().zip(&self.rx) {
            *span = ((self.pool.data_addr(p) - base) as u32, p.len() as u32);
        }
        n
    }

    #[inline]
    fn frames(&self) -> Frames<'_> {
        let map = self.pool.region().map();
        Frames::Spans { base: map.slice(0, map.len()).unwrap_or_default(), spans: &self.spans[..self.rx.len()] }
    }

    #[inline]
    fn release(&mut self) {
        self.pool.free_all(&mut self.rx);
    }

    #[inline]
    fn send(&mut self, src: &Frames<'_>, picks: &[u8]) {
        let c = &mut self.counters;
        let mut bytes = [0u16; BURST];
        for &i in picks {
            let f = src.get(i as usize);
            let len = f.len() as usize;
            if len > usize::from(DATA_ROOM) {
                c.tx_dropped += 1;
                c.drop_too_big += 1;
                continue;
            }
            if self.tx.len() == self.tx.capacity() {
                c.tx_dropped += 1;
                c.drop_ring_full += 1;
                continue;
            }
            let Some(mut p) = self.pool.alloc() else {
                c.tx_dropped += 1;
                c.drop_ring_full += 1;
                continue;
            };
            if !f.read_all(self.pool.set_len(&mut p, len)) {
                self.pool.free(p);
                c.tx_dropped += 1;
                continue;
            }
            bytes[self.tx.len()] = len as u16;
            self.tx.push(p);
        }
        let taken = self.dev.tx_burst(&mut self.pool, &mut self.tx);
        c.tx_packets += taken as u64;
        c.tx_bytes += bytes[..taken].iter().map(|&b| u64::from(b)).sum::<u64>();
        let left = self.tx.len() as u64;
        c.tx_dropped += left;
        c.drop_ring_full += left;
        self.pool.free_all(&mut self.tx);
    }

    fn counters(&self) -> PortCounters {
        let d = self.dev.counters();
        PortCounters {
            rx_errors: self.counters.rx_errors + d.rx_errors,
            resets: d.resets,
            wrong_pool: d.wrong_pool,
            ..self.counters
        }
    }

    fn counters_mut(&mut self) -> &mut PortCounters {
        &mut self.counters
    }

    fn link(&self) -> LinkState {
        if self.up {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn last_fault(&self) -> Option<&str> {
        self.last_fault.as_deref()
    }

    fn arm_wakeup(&mut self) -> bool {
        self.dev.arm()
    }

    fn wake_fds(&self) -> WakeFds<'_> {
        WakeFds { control: None, data: self.dev.fd().into_iter().collect() }
    }

    fn disarm_wakeup(&mut self, woken: bool) {
        self.dev.disarm(woken);
    }
}

#[cfg(test)]
mod tests;
