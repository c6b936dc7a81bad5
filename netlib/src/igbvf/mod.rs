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
//! `unsafe` lives in [`mmio`] (BAR0 registers) and [`desc`] (ring memory).

pub mod desc;
pub mod mbx;
pub mod mmio;
pub mod regs;

use std::time::{Duration, Instant};

use crate::cadence::Cadence;
use crate::mem::MemError;
use crate::pool::{Packet, PktPool, DATA_ROOM, HEADROOM};
use crate::port::{LinkState, PoolCheck, Port, PortCounters};
use crate::vfio::{DmaMapping, VfioError, VfioPci};
use desc::{DescRing, RxWb, Which};
use mbx::{Mailbox, MbxError, Reply};
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

/// What the device did with a raw descriptor posted by [`IgbVf::post_raw_tx`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTxResult {
    /// Whether the descriptor's DD came back.
    pub dd: bool,
    /// TDH after the wait.
    pub tdh: u32,
    /// TDT we wrote.
    pub tdt: u32,
    /// How long until DD (or the timeout).
    pub waited: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// A reset was seen; set up again once the PF is out of reset.
    NeedReset,
}

/// How long to wait for RSTD after CTRL.RST while the PF is not resetting.
const RSTD_GRACE: Duration = Duration::from_millis(20);
/// Reclaim transmitted descriptors when fewer than this many are free.
const TX_RECLAIM_BELOW: u16 = 32;

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

    /// Asks the PF to accept these multicast groups (up to 30; more are cut).
    pub fn set_multicast(&mut self, macs: &[[u8; 6]]) -> Result<(), IgbVfError> {
        let (msg, len) = mbx::msg_set_multicast(macs);
        let mut out = [0u32; 1];
        match self.mbx.request(&self.mmio, &msg[..len], &mut out) {
            Ok(Reply::Ack) => Ok(()),
            Ok(Reply::Nack) => Err(self.mbx_err("SET_MULTICAST", MbxError::Nack("the multicast list".into()))),
            Err(e) => Err(self.mbx_err("SET_MULTICAST", e)),
        }
    }

    fn mbx_err(&self, what: &'static str, source: MbxError) -> IgbVfError {
        IgbVfError::Mailbox { pci: self.pci.clone(), what, source }
    }

    /// Resets the VF and sets everything up: mailbox handshake, MAC, rings.
    fn init(&mut self, pool: &mut PktPool) -> Result<(), IgbVfError> {
        self.state = State::NeedReset;
        // Interrupts stay masked: this driver polls.
        self.mmio.write(regs::EIMC, 0xffff_ffff);
        self.mmio.write(regs::CTRL, regs::CTRL_RST);
        // The reset disabled both queues: nothing of ours is in use by the NIC now.
        self.drop_in_flight(pool);
        self.mbx.clear();
        self.wait_reset_done()?;
        let mut out = [0u32; mbx::PERMADDR_MSG_LEN];
        let pf_mac = match self.mbx.request(&self.mmio, &mbx::msg_reset(), &mut out) {
            Ok(Reply::Ack) => mbx::mac_of(&out).filter(|m| valid_unicast(*m)),
            Ok(Reply::Nack) => None,
            Err(e) => return Err(self.mbx_err("VF_RESET", e)),
        };
        let mac = self.opts.mac.or(pf_mac).or_else(|| mac_for_pci(&self.pci)).ok_or_else(|| IgbVfError::Options {
            pci: self.pci.clone(),
            msg: "the PF gave no MAC and none derives from this PCI address: set one (IgbVfOptions::mac)".into(),
        })?;
        if pf_mac != Some(mac) {
            let mut out = [0u32; 1];
            match self.mbx.request(&self.mmio, &mbx::msg_set_mac(mac), &mut out) {
                Ok(Reply::Ack) => {}
                Ok(Reply::Nack) => return Err(IgbVfError::MacRefused { pci: self.pci.clone(), mac: MacFmt(mac) }),
                Err(e) => return Err(self.mbx_err("SET_MAC_ADDR", e)),
            }
        }
        self.mac = mac;
        let mut out = [0u32; 1];
        match self.mbx.request(&self.mmio, &mbx::msg_set_lpe(self.opts.max_frame), &mut out) {
            Ok(Reply::Ack) => {}
            Ok(Reply::Nack) => tracing::warn!("{}: PF refused max frame {}", self.name, self.opts.max_frame),
            Err(e) => return Err(self.mbx_err("SET_LPE", e)),
        }
        self.setup_rings(pool)?;
        self.state = State::Up;
        Ok(())
    }

    /// Waits for the end of the VF reset before talking to the PF. Hardware
    /// sets RSTD within microseconds of CTRL.RST; QEMU's igb sets it only when
    /// the PF finishes its own reset (CTRL_EXT.PFRSTD), so after a short wait
    /// with no RSTD we go on as long as the PF is not resetting (RSTI clear):
    /// the VF_RESET message is what the PF acts on.
    fn wait_reset_done(&mut self) -> Result<(), IgbVfError> {
        let start = Instant::now();
        let limit = self.opts.mbx_timeout;
        loop {
            let resetting = self.mbx.pf_resetting(&self.mmio);
            if self.mbx.check_for_rst(&self.mmio) && !resetting {
                return Ok(());
            }
            if !resetting && start.elapsed() >= RSTD_GRACE {
                tracing::debug!("{}: no RSTD after CTRL.RST and the PF is not resetting: going on", self.name);
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(IgbVfError::ResetTimeout { pci: self.pci.clone(), ms: limit.as_millis() });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Returns every packet the rings hold to the pool (the NIC must be stopped).
    fn drop_in_flight(&mut self, pool: &mut PktPool) {
        for s in self.rx_slots.iter_mut().chain(self.tx_slots.iter_mut()) {
            if let Some(p) = s.take() {
                pool.free(p);
            }
        }
        self.rx_next = 0;
        self.rx_tail = 0;
        self.rx_posted = 0;
        self.tx_tail = 0;
        self.tx_clean = 0;
        self.tx_inflight = 0;
    }

    fn setup_rings(&mut self, pool: &mut PktPool) -> Result<(), IgbVfError> {
        let m = &self.mmio;
        self.rings.zero();
        m.write(regs::RXDCTL, 0);
        m.write(regs::TXDCTL, 0);
        let rx = self.rings.base(Which::Rx);
        m.write(regs::RDBAL, rx as u32);
        m.write(regs::RDBAH, (rx >> 32) as u32);
        m.write(regs::RDLEN, self.rings.len_bytes(Which::Rx));
        // 2 KiB packet buffers: exactly a pool buffer's room after the headroom.
        let bsize = u32::from(DATA_ROOM) >> regs::SRRCTL_BSIZEPKT_SHIFT;
        m.write(regs::SRRCTL, bsize | regs::SRRCTL_DESCTYPE_ADV_ONEBUF | regs::SRRCTL_DROP_EN);
        m.write(regs::RDH, 0);
        m.write(regs::RDT, 0);
        let tx = self.rings.base(Which::Tx);
        m.write(regs::TDBAL, tx as u32);
        m.write(regs::TDBAH, (tx >> 32) as u32);
        m.write(regs::TDLEN, self.rings.len_bytes(Which::Tx));
        m.write(regs::TDH, 0);
        m.write(regs::TDT, 0);
        m.write(regs::TDWBAL, 0);
        m.write(regs::TDWBAH, 0);
        m.write(regs::TXDCTL, regs::DCTL_QUEUE_ENABLE);
        m.write(regs::RXDCTL, regs::DCTL_QUEUE_ENABLE);
        for (reg, what) in [(regs::RXDCTL, "RXDCTL.ENABLE"), (regs::TXDCTL, "TXDCTL.ENABLE")] {
            let start = Instant::now();
            while self.mmio.read(reg) & regs::DCTL_QUEUE_ENABLE == 0 {
                if start.elapsed() > Duration::from_millis(100) {
                    return Err(IgbVfError::QueueEnable { pci: self.pci.clone(), what });
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        self.refill_rx(pool);
        Ok(())
    }

    /// Gives free receive descriptors fresh buffers; one RDT write.
    #[inline]
    fn refill_rx(&mut self, pool: &mut PktPool) {
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
    fn reclaim_tx(&mut self, pool: &mut PktPool) {
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

    #[inline]
    fn tx_free(&self) -> u16 {
        self.n - 1 - self.tx_inflight
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

    /// Checks the mailbox for a reset or a PF message; sets the VF up again after a reset.
    fn control(&mut self, pool: &mut PktPool) {
        if self.state == State::Up {
            if self.mbx.check_for_rst(&self.mmio) {
                tracing::warn!("{}: reset indicated by the PF (RSTI/RSTD)", self.name);
                self.state = State::NeedReset;
            } else if self.mbx.check_for_msg(&self.mmio) {
                let mut msg = [0u32; 1];
                if self.mbx.read(&self.mmio, &mut msg).is_ok() && msg[0] & mbx::MSGTYPE_CTS == 0 {
                    tracing::warn!("{}: PF message {:#x} without CTS: the PF forgot us", self.name, msg[0]);
                    self.state = State::NeedReset;
                }
            }
        }
        if self.state == State::NeedReset && !self.mbx.pf_resetting(&self.mmio) {
            match self.init(pool) {
                Ok(()) => {
                    self.counters.resets += 1;
                    tracing::info!("{}: set up again after a reset, MAC {}", self.name, MacFmt(self.mac));
                }
                Err(e) => tracing::warn!("{}: setting up after a reset: {e}", self.name),
            }
        }
    }

    /// Test-only: posts one transmit descriptor pointing at `iova` (which need
    /// not be mapped: this is how the fault test makes the IOMMU refuse a DMA),
    /// waits up to `wait` for DD and reports what the device did. The PMD's
    /// own paths never do this.
    #[doc(hidden)]
    pub fn post_raw_tx(&mut self, pool: &mut PktPool, iova: u64, len: u16, wait: Duration) -> RawTxResult {
        self.reclaim_tx(pool);
        assert!(self.tx_free() > 0, "post_raw_tx: transmit ring full");
        let i = self.tx_tail;
        self.rings.write(Which::Tx, i, desc::tx_data(iova, len));
        self.tx_slots[usize::from(i)] = None;
        self.tx_tail = (i + 1) & (self.n - 1);
        self.tx_inflight += 1;
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.mmio.write(regs::TDT, u32::from(self.tx_tail));
        let start = Instant::now();
        let mut dd = false;
        while start.elapsed() < wait {
            if desc::tx_done(self.rings.read_hi(Which::Tx, i)) {
                dd = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let waited = start.elapsed();
        self.reclaim_tx(pool);
        RawTxResult { dd, tdh: self.mmio.read(regs::TDH), tdt: u32::from(self.tx_tail), waited }
    }
}

impl Port for IgbVf {
    fn rx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) || !self.tick(pool) {
            return 0;
        }
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

    fn tx_burst(&mut self, pool: &mut PktPool, pkts: &mut Vec<Packet>) -> usize {
        if !self.check_pool(pool) {
            self.counters.tx_dropped += pkts.len() as u64;
            return 0;
        }
        if !self.tick(pool) {
            return 0;
        }
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
        // Stop DMA before the mappings go: queues off (reset), then bus master off.
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
        let mut pool = PktPool::new(&crate::pool::PoolOptions { nbufs: 8, hugedir: None }).unwrap();
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
