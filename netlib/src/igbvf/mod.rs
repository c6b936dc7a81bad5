// The igbvf poll-mode driver: an Intel 82576 virtual function (8086:10ca, also
// QEMU's `igb` VFs) driven from user space through VFIO, one rx and one tx queue.
//! igbvf: a poll-mode driver for 82576 SR-IOV virtual functions.
//!
//! [`IgbVf::open`] opens the VF through [`crate::vfio`], maps the packet pool and
//! the descriptor rings for the device at IOVA == VA, resets the VF, does the
//! PF mailbox handshake (VF_RESET, SET_MAC_ADDR, SET_LPE), and sets up one
//! receive and one transmit queue with advanced descriptors and 2 KiB buffers.
//! The device is only ever given addresses inside those mappings: `tx_burst`
//! refuses packets of any other pool.
//!
//! The hot path (`rx_burst`/`tx_burst`) allocates nothing, makes no syscall and
//! writes each tail register once per burst. Every few thousand calls it reads
//! the mailbox register to notice a PF reset, after which it resets and sets up
//! the VF again.
//!
//! A frame whose buffer crosses a page boundary of the pool (4 KiB for a plain
//! memfd, else 2 MiB) goes out in two data descriptors, split at the boundary.
//! Real NICs do not care, since the IOVA range is contiguous; QEMU's igb does:
//! it maps each descriptor's buffer in one piece and silently drops the frame
//! (still setting DD) when the guest-physical pages behind it are not adjacent.
//!
//! Tested under QEMU's emulated igb with TCG: there, every register access is a
//! trap into the emulator, so performance measured under TCG means nothing.
//!
//! The port, its options and its [`Port`] face are here; `setup` brings the VF up (and
//! again after a PF reset), `burst` moves frames, `irq` is interrupt mode (the receive
//! queue's MSI-X vector to an eventfd, so that [`Port::wait_rx`] sleeps), `probe` is
//! the fault test's raw descriptor. `unsafe` lives in [`mmio`] (BAR0 registers) and [`desc`] (ring memory).

mod burst;
pub mod desc;
mod irq;
pub mod mbx;
pub mod mmio;
mod probe;
pub mod regs;
mod setup;

pub use irq::RX_VECTOR;
#[doc(hidden)]
pub use probe::RawTxResult;

use std::time::{Duration, Instant};

use crate::cadence::Cadence;
use crate::mem::MemError;
use crate::pool::{Packet, PktPool};
use crate::port::{LinkState, PoolCheck, Port, PortCounters};
use crate::vfio::{DmaMapping, VfioError, VfioPci};
use desc::DescRing;
use mbx::{Mailbox, MbxError};
use mmio::Mmio;

/// Options for an igbvf port.
#[derive(Debug, Clone)]
pub struct IgbVfOptions {
    /// Descriptors per ring (power of two, 8..=4096).
    pub queue_size: u16,
    /// The MAC to ask the PF for. `None`: the one the PF gives on VF_RESET, or,
    /// when the PF has none for us, a locally administered MAC derived from the
    /// PCI address ([`mac_for_pci`]).
    pub mac: Option<[u8; 6]>,
    /// Largest frame to receive, FCS and one VLAN tag included.
    pub max_frame: u32,
    /// How long each mailbox exchange waits for the PF.
    pub mbx_timeout: Duration,
    /// hugetlbfs directory for the ring memory (falls back to memfd).
    pub hugedir: Option<std::path::PathBuf>,
}

impl Default for IgbVfOptions {
    fn default() -> Self {
        Self { queue_size: 256, mac: None, max_frame: 1522, mbx_timeout: Duration::from_secs(2), hugedir: None }
    }
}

/// Errors of the igbvf port; each names the PCI device.
#[derive(Debug, thiserror::Error)]
pub enum IgbVfError {
    /// Bad options.
    #[error("igbvf {pci}: {msg}")]
    Options {
        /// The device.
        pci: String,
        /// What is wrong.
        msg: String,
    },
    /// VFIO set-up or DMA mapping (the error names the device or file).
    #[error(transparent)]
    Vfio(#[from] VfioError),
    /// Ring memory.
    #[error("igbvf {pci}: ring memory: {source}")]
    Mem {
        /// The device.
        pci: String,
        /// Cause.
        source: MemError,
    },
    /// The PF mailbox.
    #[error("igbvf {pci}: {what}: {source}")]
    Mailbox {
        /// The device.
        pci: String,
        /// The step.
        what: &'static str,
        /// Cause.
        source: MbxError,
    },
    /// The PF stayed in reset.
    #[error("igbvf {pci}: the PF is still resetting (RSTI) after {ms} ms (is the PF's interface up?)")]
    ResetTimeout {
        /// The device.
        pci: String,
        /// How long we waited.
        ms: u128,
    },
    /// The PF refused our MAC.
    #[error(
        "igbvf {pci}: the PF refused MAC {mac} (an administrator set another one on the PF: use it, or `ip link set <pf> vf N mac {mac}`)"
    )]
    MacRefused {
        /// The device.
        pci: String,
        /// The MAC asked for.
        mac: MacFmt,
    },
    /// A queue did not enable.
    #[error("igbvf {pci}: {what} did not read back enabled")]
    QueueEnable {
        /// The device.
        pci: String,
        /// Which register.
        what: &'static str,
    },
}

/// A MAC address written the usual way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacFmt(pub [u8; 6]);

impl std::fmt::Display for MacFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// A locally administered unicast MAC made from a PCI address `DDDD:BB:DD.F`:
/// `02:DD:DD:BB:DD:0F` (domain in bytes 1-2). Stable across runs, distinct per VF.
pub fn mac_for_pci(pci: &str) -> Option<[u8; 6]> {
    if !crate::vfio::is_pci_address(pci) {
        return None;
    }
    let dom = u16::from_str_radix(&pci[0..4], 16).ok()?;
    let bus = u8::from_str_radix(&pci[5..7], 16).ok()?;
    let dev = u8::from_str_radix(&pci[8..10], 16).ok()?;
    let func = u8::from_str_radix(&pci[11..12], 16).ok()?;
    let d = dom.to_be_bytes();
    Some([0x02, d[0], d[1], bus, dev, func])
}

fn valid_unicast(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

/// The VF's own hardware counters (32-bit, wrapping, since the VF was reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HwStats {
    /// Good packets received (VFGPRC).
    pub rx_packets: u32,
    /// Good packets transmitted (VFGPTC).
    pub tx_packets: u32,
    /// Good octets received (VFGORC).
    pub rx_bytes: u32,
    /// Good octets transmitted (VFGOTC).
    pub tx_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// A reset was seen; set up again once the PF is out of reset.
    NeedReset,
}

/// An 82576 VF port. Drop stops the device before unmapping its memory.
#[derive(Debug)]
pub struct IgbVf {
    name: String,
    pci: String,
    opts: IgbVfOptions,
    mac: [u8; 6],
    mmio: Mmio,
    mbx: Mailbox,
    n: u16,
    rx_slots: Vec<Option<Packet>>,
    /// Next descriptor to look at for a received frame.
    rx_next: u16,
    /// Next descriptor to give a buffer (the value of RDT).
    rx_tail: u16,
    rx_posted: u16,
    tx_slots: Vec<Option<Packet>>,
    /// Next descriptor to fill (the value of TDT).
    tx_tail: u16,
    /// Oldest descriptor in flight.
    tx_clean: u16,
    tx_inflight: u16,
    own_pool: PoolCheck,
    /// Transmit buffers are split at multiples of this (the pool's page size).
    split: u64,
    state: State,
    counters: PortCounters,
    cadence: Cadence,
    /// The receive interrupt (interrupt mode).
    irq: irq::RxIrq,
    /// DMA mappings: pool, then rings. Dropped before the rings and the container.
    maps: Vec<DmaMapping>,
    rings: DescRing,
    vfio: VfioPci,
}

impl IgbVf {
    /// Opens VF `pci` (bound to vfio-pci), maps `pool` for it and brings it up.
    pub fn open(pci: &str, pool: &mut PktPool, opts: IgbVfOptions) -> Result<Self, IgbVfError> {
        let n = opts.queue_size;
        if !n.is_power_of_two() || !(8..=4096).contains(&n) {
            return Err(IgbVfError::Options {
                pci: pci.into(),
                msg: format!("queue size {n} must be a power of two in 8..=4096"),
            });
        }
        if let Some(m) = opts.mac.filter(|m| !valid_unicast(*m)) {
            return Err(IgbVfError::Options {
                pci: pci.into(),
                msg: format!("MAC {} is not a unicast address", MacFmt(m)),
            });
        }
        let vfio = VfioPci::open(pci)?;
        let bar = vfio.device.map_bar(0)?;
        if bar.len() < regs::BAR0_SIZE {
            return Err(VfioError::Region {
                pci: pci.into(),
                index: 0,
                why: format!("BAR0 is {:#x} bytes, an 82576 VF has {:#x}", bar.len(), regs::BAR0_SIZE),
            }
            .into());
        }
        let mmio = Mmio::new(bar);
        let rings = DescRing::new(opts.hugedir.as_deref(), n, n)
            .map_err(|source| IgbVfError::Mem { pci: pci.into(), source })?;
        let pool_map = pool.region().map();
        let mut maps = vec![vfio.container.map_dma(pool_map.addr(), pool_map.len() as u64)?];
        let rm = rings.region().map();
        maps.push(vfio.container.map_dma(rm.addr(), rm.len() as u64)?);
        vfio.device.enable_bus_master()?;
        let mut me = Self {
            name: format!("vf:{pci}"),
            pci: pci.into(),
            mac: [0; 6],
            mmio,
            mbx: Mailbox::new(opts.mbx_timeout),
            n,
            rx_slots: (0..n).map(|_| None).collect(),
            rx_next: 0,
            rx_tail: 0,
            rx_posted: 0,
            tx_slots: (0..n).map(|_| None).collect(),
            tx_tail: 0,
            tx_clean: 0,
            tx_inflight: 0,
            own_pool: PoolCheck::new(pool),
            split: match pool.region().backing() {
                crate::mem::Backing::Memfd => 4096,
                _ => 2 << 20,
            },
            state: State::NeedReset,
            counters: PortCounters::default(),
            cadence: Cadence::default(),
            irq: irq::RxIrq::default(),
            maps,
            rings,
            vfio,
            opts,
        };
        me.init(pool)?;
        tracing::info!(
            "{}: up, MAC {}, {} rx/{} tx descriptors, IOMMU group {}, link {}",
            me.name,
            MacFmt(me.mac),
            n,
            n,
            me.vfio.group.number(),
            if me.link() == LinkState::Up { "up" } else { "down" }
        );
        Ok(me)
    }

    /// The MAC the VF receives on.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The PCI address.
    pub fn pci(&self) -> &str {
        &self.pci
    }

    /// The VF's hardware counters.
    pub fn hw_stats(&self) -> HwStats {
        HwStats {
            rx_packets: self.mmio.read(regs::VFGPRC),
            tx_packets: self.mmio.read(regs::VFGPTC),
            rx_bytes: self.mmio.read(regs::VFGORC),
            tx_bytes: self.mmio.read(regs::VFGOTC),
        }
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

impl Port for IgbVf {
    fn rx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) || !self.tick(pool) {
            return 0;
        }
        self.receive(pool, pkts)
    }

    fn tx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) {
            self.counters.tx_dropped += pkts.len() as u64;
            return 0;
        }
        if !self.tick(pool) {
            return 0;
        }
        self.transmit(pool, pkts)
    }

    fn link(&self) -> LinkState {
        if self.state == State::Up && self.mmio.read(regs::STATUS) & regs::STATUS_LU != 0 {
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
        if !self.check_pool(pool) {
            return false;
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.reclaim_tx(pool);
            if self.tx_inflight == 0 {
                return true;
            }
            if self.state != State::Up || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Sleeps on the VF's receive interrupt (MSI-X through VFIO, set up on first use;
    /// see [`IgbVf::arm_rx_interrupt`]); naps where VFIO gives none.
    fn wait_rx(&mut self, pool: &mut PktPool, timeout: Duration) -> bool {
        if !self.check_pool(pool) {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return false;
        }
        self.sleep_rx(pool, timeout)
    }
}

impl Drop for IgbVf {
    fn drop(&mut self) {
        let hw = self.hw_stats();
        tracing::info!(
            "{}: closing; VF counters: rx {} packets {} bytes, tx {} packets {} bytes",
            self.name,
            hw.rx_packets,
            hw.rx_bytes,
            hw.tx_packets,
            hw.tx_bytes
        );
        // Stop DMA before the mappings go: interrupt off, queues off (reset), then bus
        // master off.
        self.release_rx_irq();
        self.mmio.write(regs::CTRL, regs::CTRL_RST);
        if let Err(e) = self.vfio.device.disable_bus_master() {
            tracing::warn!("{}: {e}", self.name);
        }
        self.maps.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs() {
        assert_eq!(mac_for_pci("0000:01:10.2"), Some([0x02, 0, 0, 0x01, 0x10, 0x02]));
        assert_eq!(mac_for_pci("abcd:81:1f.7"), Some([0x02, 0xab, 0xcd, 0x81, 0x1f, 0x07]));
        assert_eq!(mac_for_pci("nope"), None);
        let m = mac_for_pci("0000:01:10.0").unwrap();
        assert!(valid_unicast(m) && m[0] & 2 != 0, "locally administered unicast");
        assert_eq!(MacFmt(m).to_string(), "02:00:00:01:10:00");
        assert!(!valid_unicast([1, 0, 0x5e, 0, 0, 1]));
        assert!(!valid_unicast([0; 6]));
    }

    #[test]
    fn registers_fit_bar0() {
        for r in regs::ALL {
            assert!((*r as usize) + 4 <= regs::BAR0_SIZE && r.is_multiple_of(4), "{r:#x}");
        }
    }

    #[test]
    fn error_messages_name_the_device() {
        let mut pool =
            PktPool::new(&crate::pool::PoolOptions { nbufs: 8, hugedir: None, ..Default::default() }).unwrap();
        let e = IgbVf::open("0000:01:10.0", &mut pool, IgbVfOptions { queue_size: 100, ..Default::default() })
            .unwrap_err()
            .to_string();
        assert_eq!(e, "igbvf 0000:01:10.0: queue size 100 must be a power of two in 8..=4096");
        let e = IgbVf::open(
            "0000:01:10.0",
            &mut pool,
            IgbVfOptions { mac: Some([1, 0, 0, 0, 0, 1]), ..Default::default() },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("MAC 01:00:00:00:00:01 is not a unicast"), "{e}");
        // No VFIO on a build machine: the error names the device and sysfs file.
        let e = IgbVf::open("0000:99:1f.7", &mut pool, IgbVfOptions::default()).unwrap_err().to_string();
        assert!(e.contains("0000:99:1f.7"), "{e}");
        let e = IgbVfError::MacRefused { pci: "0000:01:10.0".into(), mac: MacFmt([2, 0, 0, 1, 0x10, 0]) }.to_string();
        assert!(e.contains("refused MAC 02:00:00:01:10:00"), "{e}");
    }
}
