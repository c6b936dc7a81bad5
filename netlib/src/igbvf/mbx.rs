// The VF side of the 82576 PF/VF mailbox: 16 words of shared memory and a
// control register whose PF-set status bits clear when read.
//! PF mailbox protocol: message encoding and the posted write/read handshake.
//!
//! `RSTD`, `PFSTS` and `PFACK` in `V2PMAILBOX` clear when the register is read,
//! so one read while waiting for an acknowledgement can swallow the "message
//! waiting" bit of the reply. As Linux igbvf does (`v2p_mailbox`), every read
//! ORs those bits into a software copy, and a check consumes only the bit it
//! asked about.

use std::time::{Duration, Instant};

use super::regs::{
    MB_ACK, MB_PFACK, MB_PFSTS, MB_R2C_BITS, MB_REQ, MB_RSTD, MB_RSTI, MB_VFU, V2PMAILBOX, VMBMEM, VMBMEM_WORDS,
};

/// VF asks the PF to reset it (and hand it its MAC).
pub const VF_RESET: u32 = 0x01;
/// VF asks for a unicast MAC.
pub const SET_MAC_ADDR: u32 = 0x02;
/// VF asks for multicast hash entries.
pub const SET_MULTICAST: u32 = 0x03;
/// VF asks for a largest frame size.
pub const SET_LPE: u32 = 0x05;
/// PF-initiated control message (a ping after a PF reset, link changes).
pub const PF_CONTROL_MSG: u32 = 0x0100;
/// Reply: request done.
pub const MSGTYPE_ACK: u32 = 0x8000_0000;
/// Reply: request refused.
pub const MSGTYPE_NACK: u32 = 0x4000_0000;
/// The PF considers the VF reset and talks to it ("clear to send").
pub const MSGTYPE_CTS: u32 = 0x2000_0000;
/// Shift of the message-info field (e.g. a multicast entry count).
pub const MSGINFO_SHIFT: u32 = 16;
/// Most multicast hashes one message carries.
pub const MAX_MULTICAST: usize = 30;
/// Words of the VF_RESET reply: type, then the MAC in two words.
pub const PERMADDR_MSG_LEN: usize = 3;

/// Register access the mailbox needs: the real BAR, or a simulated PF in tests.
pub trait MbxRegs {
    /// Reads a 32-bit register.
    fn read(&self, off: u32) -> u32;
    /// Writes a 32-bit register.
    fn write(&self, off: u32, v: u32);
}

impl MbxRegs for super::mmio::Mmio {
    fn read(&self, off: u32) -> u32 {
        super::mmio::Mmio::read(self, off)
    }
    fn write(&self, off: u32, v: u32) {
        super::mmio::Mmio::write(self, off, v);
    }
}

/// Mailbox failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MbxError {
    /// The PF did not answer in time (is the PF driver loaded and its netdev up?).
    #[error("PF mailbox: no {what} from the PF within {ms} ms (is the PF's driver loaded and its interface up?)")]
    Timeout {
        /// What we waited for.
        what: &'static str,
        /// How long.
        ms: u128,
    },
    /// The PF holds the mailbox.
    #[error("PF mailbox: the PF holds the mailbox")]
    Busy,
    /// The PF refused a request.
    #[error("PF mailbox: the PF refused {0}")]
    Nack(String),
    /// The reply is for another request.
    #[error("PF mailbox: reply {reply:#x} to request {request:#x}")]
    BadReply {
        /// Our request's first word.
        request: u32,
        /// The reply's first word.
        reply: u32,
    },
}

/// A request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Done.
    Ack,
    /// Refused.
    Nack,
}

/// Encodes `VF_RESET`.
pub fn msg_reset() -> [u32; 1] {
    [VF_RESET]
}

/// Encodes `SET_MAC_ADDR`: the six bytes follow the type word in memory order.
pub fn msg_set_mac(mac: [u8; 6]) -> [u32; 3] {
    let w1 = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let w2 = u32::from_le_bytes([mac[4], mac[5], 0, 0]);
    [SET_MAC_ADDR, w1, w2]
}

/// The MAC carried in words 1-2 of a message (the VF_RESET reply).
pub fn mac_of(words: &[u32]) -> Option<[u8; 6]> {
    let (a, b) = (words.get(1)?.to_le_bytes(), words.get(2)?.to_le_bytes());
    Some([a[0], a[1], a[2], a[3], b[0], b[1]])
}

/// Encodes `SET_LPE`: the largest frame the VF wants to receive (FCS included).
pub fn msg_set_lpe(max_frame: u32) -> [u32; 2] {
    [SET_LPE, max_frame]
}

/// The 12-bit multicast table hash of a MAC (82576: 128 registers of 32 bits,
/// filter type 0: bits 47:36 of the address).
pub fn mc_hash(mac: [u8; 6]) -> u16 {
    ((u16::from(mac[4]) >> 4) | (u16::from(mac[5]) << 4)) & 0x0fff
}

/// Encodes `SET_MULTICAST` for up to [`MAX_MULTICAST`] addresses (more are cut):
/// the count in the info field, then the 16-bit hashes packed two per word.
pub fn msg_set_multicast(macs: &[[u8; 6]]) -> ([u32; VMBMEM_WORDS], usize) {
    let n = macs.len().min(MAX_MULTICAST);
    let mut m = [0u32; VMBMEM_WORDS];
    m[0] = SET_MULTICAST | ((n as u32) << MSGINFO_SHIFT);
    for (i, mac) in macs[..n].iter().enumerate() {
        m[1 + i / 2] |= u32::from(mc_hash(*mac)) << (16 * (i % 2));
    }
    (m, 1 + n.div_ceil(2))
}

/// Classifies a reply to `request` (CTS ignored).
pub fn classify(request: u32, reply: u32) -> Result<Reply, MbxError> {
    let r = reply & !MSGTYPE_CTS;
    if r == request | MSGTYPE_ACK {
        Ok(Reply::Ack)
    } else if r == request | MSGTYPE_NACK {
        Ok(Reply::Nack)
    } else {
        Err(MbxError::BadReply { request, reply })
    }
}

/// The VF's mailbox state: the sticky copy of the read-to-clear bits.
#[derive(Debug, Clone)]
pub struct Mailbox {
    sticky: u32,
    timeout: Duration,
    delay: Duration,
}

impl Mailbox {
    /// A mailbox whose posted operations wait up to `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { sticky: 0, timeout, delay: Duration::from_micros(100) }
    }

    /// Forgets the sticky bits (after a VF reset).
    pub fn clear(&mut self) {
        self.sticky = 0;
    }

    fn read_v2p(&mut self, r: &impl MbxRegs) -> u32 {
        let v = r.read(V2PMAILBOX) | self.sticky;
        self.sticky |= v & MB_R2C_BITS;
        v
    }

    fn check_bit(&mut self, r: &impl MbxRegs, mask: u32) -> bool {
        let v = self.read_v2p(r);
        self.sticky &= !mask;
        v & mask != 0
    }

    /// Whether the PF wrote us a message (consumes the indication).
    pub fn check_for_msg(&mut self, r: &impl MbxRegs) -> bool {
        self.check_bit(r, MB_PFSTS)
    }

    /// Whether the PF acknowledged our message (consumes the indication).
    pub fn check_for_ack(&mut self, r: &impl MbxRegs) -> bool {
        self.check_bit(r, MB_PFACK)
    }

    /// Whether a reset happened: ours done (`RSTD`) or the PF's in progress (`RSTI`).
    pub fn check_for_rst(&mut self, r: &impl MbxRegs) -> bool {
        self.check_bit(r, MB_RSTD | MB_RSTI)
    }

    /// Whether the PF is resetting right now (`RSTI`, a level, not sticky).
    pub fn pf_resetting(&mut self, r: &impl MbxRegs) -> bool {
        self.read_v2p(r) & MB_RSTI != 0
    }

    fn lock(&mut self, r: &impl MbxRegs) -> Result<(), MbxError> {
        r.write(V2PMAILBOX, MB_VFU);
        if self.read_v2p(r) & MB_VFU != 0 {
            Ok(())
        } else {
            Err(MbxError::Busy)
        }
    }

    /// Writes `msg` and raises REQ (no wait).
    pub fn write(&mut self, r: &impl MbxRegs, msg: &[u32]) -> Result<(), MbxError> {
        assert!(!msg.is_empty() && msg.len() <= VMBMEM_WORDS);
        self.lock(r)?;
        // Stale indications would be taken for the answer to this message.
        self.check_for_ack(r);
        self.check_for_msg(r);
        for (i, w) in msg.iter().enumerate() {
            r.write(VMBMEM + 4 * i as u32, *w);
        }
        // Releases VFU and interrupts the PF.
        r.write(V2PMAILBOX, MB_REQ);
        Ok(())
    }

    /// Reads the PF's message into `out` (as many words as it holds) and acknowledges it.
    pub fn read(&mut self, r: &impl MbxRegs, out: &mut [u32]) -> Result<(), MbxError> {
        assert!(out.len() <= VMBMEM_WORDS);
        self.lock(r)?;
        for (i, w) in out.iter_mut().enumerate() {
            *w = r.read(VMBMEM + 4 * i as u32);
        }
        r.write(V2PMAILBOX, MB_ACK);
        Ok(())
    }

    /// Writes `msg` and waits for the PF's acknowledgement.
    pub fn write_posted(&mut self, r: &impl MbxRegs, msg: &[u32]) -> Result<(), MbxError> {
        self.write(r, msg)?;
        self.wait(r, "acknowledgement", Self::check_for_ack)
    }

    /// Waits for a PF message and reads it into `out`.
    pub fn read_posted(&mut self, r: &impl MbxRegs, out: &mut [u32]) -> Result<(), MbxError> {
        self.wait(r, "reply", Self::check_for_msg)?;
        self.read(r, out)
    }

    /// Polls `check` until it holds or the timeout passes.
    pub fn wait<R: MbxRegs>(
        &mut self,
        r: &R,
        what: &'static str,
        check: fn(&mut Self, &R) -> bool,
    ) -> Result<(), MbxError> {
        let start = Instant::now();
        loop {
            if check(self, r) {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                return Err(MbxError::Timeout { what, ms: self.timeout.as_millis() });
            }
            std::thread::sleep(self.delay);
        }
    }

    /// Sends `msg`, waits for the reply into `out` and classifies it.
    pub fn request(&mut self, r: &impl MbxRegs, msg: &[u32], out: &mut [u32]) -> Result<Reply, MbxError> {
        self.write_posted(r, msg)?;
        self.read_posted(r, out)?;
        classify(msg[0], out[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A PF that answers at once, with read-to-clear status bits like the hardware.
    struct FakePf {
        v2p: RefCell<u32>,
        mem: RefCell<[u32; VMBMEM_WORDS]>,
        seen: RefCell<Vec<Vec<u32>>>,
        mac: Option<[u8; 6]>,
    }

    impl FakePf {
        fn new(mac: Option<[u8; 6]>) -> Self {
            Self { v2p: RefCell::new(0), mem: RefCell::new([0; VMBMEM_WORDS]), seen: RefCell::default(), mac }
        }
        fn answer(&self) {
            let mem = *self.mem.borrow();
            let n = match mem[0] & 0xffff {
                SET_MULTICAST => 1 + ((mem[0] >> MSGINFO_SHIFT) as usize).div_ceil(2),
                SET_MAC_ADDR => 3,
                SET_LPE => 2,
                _ => 1,
            };
            self.seen.borrow_mut().push(mem[..n].to_vec());
            let mut reply = [0u32; VMBMEM_WORDS];
            reply[0] = mem[0] | MSGTYPE_CTS;
            match mem[0] {
                VF_RESET => match self.mac {
                    Some(mac) => {
                        let m = msg_set_mac(mac);
                        reply[0] |= MSGTYPE_ACK;
                        reply[1] = m[1];
                        reply[2] = m[2];
                    }
                    None => reply[0] |= MSGTYPE_NACK,
                },
                _ => reply[0] |= MSGTYPE_ACK,
            }
            *self.mem.borrow_mut() = reply;
            // PF read our message (PFACK) and wrote its reply (PFSTS) before we look.
            *self.v2p.borrow_mut() |= MB_PFACK | MB_PFSTS;
        }
    }

    impl MbxRegs for FakePf {
        fn read(&self, off: u32) -> u32 {
            if off == V2PMAILBOX {
                let v = *self.v2p.borrow();
                *self.v2p.borrow_mut() &= !MB_R2C_BITS;
                v
            } else {
                self.mem.borrow()[((off - VMBMEM) / 4) as usize]
            }
        }
        fn write(&self, off: u32, v: u32) {
            if off == V2PMAILBOX {
                let mut b = self.v2p.borrow_mut();
                *b = (*b & !(MB_VFU | MB_REQ | MB_ACK)) | (v & (MB_VFU | MB_REQ | MB_ACK));
                drop(b);
                if v & MB_REQ != 0 {
                    self.answer();
                }
            } else {
                self.mem.borrow_mut()[((off - VMBMEM) / 4) as usize] = v;
            }
        }
    }

    #[test]
    fn encodes_messages() {
        assert_eq!(msg_set_mac([0x02, 0, 0, 0x01, 0x10, 0x02]), [SET_MAC_ADDR, 0x0100_0002, 0x0000_0210]);
        assert_eq!(mac_of(&msg_set_mac([1, 2, 3, 4, 5, 6])), Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(msg_set_lpe(1522), [0x05, 1522]);
        assert_eq!(mc_hash([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]), 0xfb0);
        assert_eq!(mc_hash([0x33, 0x33, 0, 0, 0xf1, 0xff]), 0xfff);
        let (m, n) =
            msg_set_multicast(&[[1, 0, 0x5e, 0, 0, 0xfb], [0x33, 0x33, 0, 0, 0xf1, 0xff], [1, 0, 0x5e, 0, 0, 1]]);
        assert_eq!(n, 3);
        assert_eq!(m[0], SET_MULTICAST | (3 << 16));
        assert_eq!(m[1], 0x0fb0 | (0x0fff << 16));
        assert_eq!(m[2], 0x010);
        let many = vec![[1u8, 0, 0x5e, 0, 0, 1]; 40];
        let (m, n) = msg_set_multicast(&many);
        assert_eq!((m[0] >> 16, n), (30, 16));
    }

    #[test]
    fn classifies_replies() {
        assert_eq!(classify(VF_RESET, VF_RESET | MSGTYPE_ACK | MSGTYPE_CTS), Ok(Reply::Ack));
        assert_eq!(classify(VF_RESET, VF_RESET | MSGTYPE_NACK), Ok(Reply::Nack));
        let e = classify(SET_LPE, SET_MAC_ADDR | MSGTYPE_ACK).unwrap_err();
        assert_eq!(e.to_string(), "PF mailbox: reply 0x80000002 to request 0x5");
    }

    #[test]
    fn handshake_keeps_read_to_clear_bits() {
        // The reply's PFSTS is read (and cleared in hardware) while we wait for
        // PFACK: only the sticky copy lets read_posted see it.
        let pf = FakePf::new(None);
        let mut mb = Mailbox::new(Duration::from_millis(50));
        let mut out = [0u32; PERMADDR_MSG_LEN];
        assert_eq!(mb.request(&pf, &msg_reset(), &mut out), Ok(Reply::Nack));
        assert_eq!(mb.request(&pf, &msg_set_mac([2, 0, 0, 1, 0x10, 0]), &mut out), Ok(Reply::Ack));
        assert_eq!(mb.request(&pf, &msg_set_lpe(1522), &mut out[..1]), Ok(Reply::Ack));
        let seen = pf.seen.borrow();
        assert_eq!(seen[0], vec![VF_RESET]);
        assert_eq!(seen[1], msg_set_mac([2, 0, 0, 1, 0x10, 0]).to_vec());
        assert_eq!(seen[2], vec![SET_LPE, 1522]);
        // With an admin MAC the VF_RESET reply carries it.
        let pf = FakePf::new(Some([0x52, 0x54, 0, 1, 2, 3]));
        let mut mb = Mailbox::new(Duration::from_millis(50));
        assert_eq!(mb.request(&pf, &msg_reset(), &mut out), Ok(Reply::Ack));
        assert_eq!(mac_of(&out), Some([0x52, 0x54, 0, 1, 2, 3]));
    }

    #[test]
    fn times_out_and_sees_resets() {
        struct Silent(RefCell<u32>);
        impl MbxRegs for Silent {
            fn read(&self, _: u32) -> u32 {
                std::mem::take(&mut *self.0.borrow_mut())
            }
            fn write(&self, _: u32, _: u32) {}
        }
        let s = Silent(RefCell::new(0));
        let mut mb = Mailbox::new(Duration::from_millis(5));
        // VFU never reads back: the PF "holds" the mailbox.
        assert_eq!(mb.write_posted(&s, &msg_reset()), Err(MbxError::Busy));
        let e = mb.wait(&s, "reply", Mailbox::check_for_msg).unwrap_err();
        assert!(e.to_string().contains("no reply from the PF within 5 ms"), "{e}");
        *s.0.borrow_mut() = MB_RSTD;
        assert!(mb.check_for_rst(&s));
        assert!(!mb.check_for_rst(&s), "consumed");
        *s.0.borrow_mut() = MB_RSTD | MB_PFSTS;
        assert!(!mb.check_for_ack(&s));
        assert!(mb.check_for_msg(&s), "kept sticky");
        assert!(mb.check_for_rst(&s), "kept sticky");
    }
}
