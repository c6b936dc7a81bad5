// Bringing the VF up: reset, the PF mailbox handshake (VF_RESET, SET_MAC_ADDR, SET_LPE),
// both descriptor rings; and the same again when the PF resets or forgets the VF.
//! igbvf set-up and reset recovery.

use std::time::{Duration, Instant};

use super::mbx::{self, MbxError, Reply};
use super::{desc::Which, mac_for_pci, regs, valid_unicast, IgbVf, IgbVfError, MacFmt, State};
use crate::pool::{PktPool, DATA_ROOM};

/// How long to wait for RSTD after CTRL.RST while the PF is not resetting.
const RSTD_GRACE: Duration = Duration::from_millis(20);

impl IgbVf {
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
    pub(super) fn init(&mut self, pool: &mut PktPool) -> Result<(), IgbVfError> {
        self.state = State::NeedReset;
        // Interrupts stay masked: this driver polls (interrupt mode unmasks the receive
        // vector only while its owner sleeps: `irq`).
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
        if matches!(self.irq, super::irq::RxIrq::On(_)) {
            self.route_rx_irq();
        }
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

    /// Checks the mailbox for a reset or a PF message; sets the VF up again after a reset.
    pub(super) fn control(&mut self, pool: &mut PktPool) {
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
}
