// A VXLAN port's remote VTEPs: the configured ones (head-end replication's list) and
// those traffic came from, each with its outer next-hop MAC; and inner MAC → VTEP, aged.
//! Remote VTEPs and the MACs behind them.

use std::net::Ipv4Addr;

use crate::mactable::{is_multicast, Mac, MacTable};

/// Most remote VTEPs a port knows (configured and learned).
pub const MAX_VTEPS: usize = 256;
/// Most configured remote VTEPs (each BUM frame is sent to every one).
pub const MAX_REMOTES: usize = 64;
/// Inner MACs a port remembers.
const MAC_CAPACITY: usize = 4096;
/// Seconds between two ARP requests for one unresolved VTEP.
const ASK_EVERY: u32 = 1;
/// Seconds after which a resolved next hop is asked again (still used meanwhile).
const REFRESH_AFTER: u32 = 60;

/// One remote VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    /// Its address.
    pub ip: Ipv4Addr,
    /// The outer next hop's MAC, once known.
    pub hop: Option<Mac>,
    /// When it was last asked for (0: never).
    asked: u32,
    /// When its MAC was last heard.
    heard: u32,
    /// Whether a frame waited for its MAC since it was last asked.
    wanted: bool,
}

/// The remote VTEPs and which inner MAC is behind which.
#[derive(Debug)]
pub struct Vteps {
    list: Vec<Vtep>,
    /// The first `configured` of `list` are the configured remotes.
    configured: usize,
    macs: MacTable,
    /// A static next-hop MAC for every VTEP.
    static_hop: Option<Mac>,
}

impl Vteps {
    /// The configured `remotes` (at most [`MAX_REMOTES`]), reached through `static_hop` if
    /// given (else each through the MAC ARP finds); inner MACs age after `age` seconds.
    pub fn new(remotes: &[Ipv4Addr], static_hop: Option<Mac>, age: u32) -> Self {
        let mut list = Vec::with_capacity(MAX_VTEPS);
        for &ip in remotes.iter().take(MAX_REMOTES) {
            list.push(Vtep { ip, hop: static_hop, asked: 0, heard: 0, wanted: false });
        }
        Self { configured: list.len(), list, macs: MacTable::new(MAC_CAPACITY, age), static_hop }
    }

    /// The VTEP at `i`.
    #[inline]
    pub fn get(&self, i: u16) -> Option<&Vtep> {
        self.list.get(usize::from(i))
    }

    /// The configured VTEPs' positions: where broadcast, unknown unicast and multicast go.
    #[inline]
    pub fn flood(&self) -> std::ops::Range<u16> {
        0..self.configured as u16
    }

    /// Where the frame for `dst` goes: one VTEP, or (`None`) every configured one.
    #[inline]
    pub fn lookup(&self, dst: &Mac, now: u32) -> Option<u16> {
        if is_multicast(dst) {
            return None;
        }
        // One VNI is one L2 segment: inner MACs are learned per VTEP without a VLAN key.
        self.macs.lookup(0, dst, now)
    }

    fn position(&self, ip: Ipv4Addr) -> Option<usize> {
        self.list.iter().position(|v| v.ip == ip)
    }

    /// `src` (an inner source MAC) came from the VTEP `ip`, whose packet came from the
    /// outer MAC `from`: learned, and `from` is its next hop until ARP says otherwise.
    /// False if the VTEP is new and there is no room for it.
    #[inline]
    pub fn learn(&mut self, src: &Mac, ip: Ipv4Addr, from: &Mac, now: u32) -> bool {
        let i = match self.position(ip) {
            Some(i) => i,
            None if self.list.len() < MAX_VTEPS => {
                self.list.push(Vtep { ip, hop: self.static_hop, asked: 0, heard: 0, wanted: false });
                self.list.len() - 1
            }
            None => return false,
        };
        let v = &mut self.list[i];
        if v.hop.is_none() {
            v.hop = Some(*from);
            v.heard = now;
        }
        if !is_multicast(src) {
            self.macs.learn(0, src, i as u16, now);
        }
        true
    }

    /// ARP said `ip` is at `mac`: the next hop of that VTEP (unless a static one is set).
    pub fn heard(&mut self, ip: Ipv4Addr, mac: Mac, now: u32) {
        if self.static_hop.is_some() {
            return;
        }
        if let Some(i) = self.position(ip) {
            let v = &mut self.list[i];
            v.hop = Some(mac);
            v.heard = now;
        }
    }

    /// Forgets every next hop ARP or traffic gave (the uplink was reset).
    pub fn forget_hops(&mut self) {
        for v in &mut self.list {
            v.hop = self.static_hop;
            v.asked = 0;
        }
    }

    /// A frame for the VTEP at `i` found no next hop: it will be asked for.
    #[inline]
    pub fn want(&mut self, i: u16) {
        if let Some(v) = self.list.get_mut(usize::from(i)) {
            v.wanted = true;
        }
    }

    /// Calls `ask` with every VTEP to ask ARP for at `now` (unresolved ones that are
    /// configured or wanted, once a second; resolved ones every minute), and marks them asked.
    pub fn ask_due(&mut self, now: u32, mut ask: impl FnMut(Ipv4Addr)) {
        if self.static_hop.is_some() {
            return;
        }
        for (i, v) in self.list.iter_mut().enumerate() {
            let due = match v.hop {
                None => (i < self.configured || v.wanted) && now.wrapping_sub(v.asked) >= ASK_EVERY,
                Some(_) => now.wrapping_sub(v.heard) >= REFRESH_AFTER && now.wrapping_sub(v.asked) >= REFRESH_AFTER,
            };
            if due {
                v.asked = now;
                v.wanted = false;
                ask(v.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
    const M1: Mac = [2, 0, 0, 0, 0, 1];
    const HOP: Mac = [2, 0, 0, 0, 0, 0xee];

    #[test]
    fn inner_macs_are_learned_per_vtep_and_age_out() {
        let mut v = Vteps::new(&[A, B], None, 300);
        assert_eq!(v.lookup(&M1, 1), None, "unknown: flooded");
        assert_eq!(v.flood(), 0..2);
        assert!(v.learn(&M1, B, &HOP, 10));
        assert_eq!(v.lookup(&M1, 10), Some(1));
        assert_eq!(v.get(1).unwrap().hop, Some(HOP), "the outer source is B's next hop for now");
        assert_eq!(v.lookup(&M1, 310), Some(1));
        assert_eq!(v.lookup(&M1, 311), None, "aged out: flooded again");
        // A VTEP not configured is learned too, but not flooded to.
        assert!(v.learn(&M1, C, &HOP, 400));
        assert_eq!(v.lookup(&M1, 400), Some(2));
        assert_eq!(v.flood(), 0..2);
        assert_eq!(v.lookup(&[0xff; 6], 400), None, "broadcast floods");
        assert_eq!(v.lookup(&[0x01, 0, 0x5e, 0, 0, 1], 400), None, "multicast floods");
    }

    #[test]
    fn next_hops_are_asked_for_heard_and_refreshed_unless_static() {
        let mut v = Vteps::new(&[A, B], None, 300);
        let asked = |v: &mut Vteps, now| {
            let mut out = Vec::new();
            v.ask_due(now, |ip| out.push(ip));
            out
        };
        assert_eq!(asked(&mut v, 1), [A, B]);
        assert!(asked(&mut v, 1).is_empty(), "once a second");
        v.heard(A, HOP, 1);
        assert_eq!(asked(&mut v, 2), [B], "A is resolved");
        assert_eq!(v.get(0).unwrap().hop, Some(HOP));
        v.heard(B, M1, 2);
        assert!(asked(&mut v, 30).is_empty());
        assert_eq!(asked(&mut v, 62), [A, B], "refreshed after a minute");
        v.forget_hops();
        assert_eq!(v.get(0).unwrap().hop, None, "forgotten when the uplink resets");
        assert_eq!(asked(&mut v, 63), [A, B], "and asked again at once");
        let mut s = Vteps::new(&[A], Some(HOP), 300);
        assert!(asked(&mut s, 1).is_empty(), "a static next hop needs no ARP");
        assert_eq!(s.get(0).unwrap().hop, Some(HOP));
        s.heard(A, M1, 1);
        assert_eq!(s.get(0).unwrap().hop, Some(HOP), "ARP does not override the static next hop");
    }

    #[test]
    fn the_list_is_bounded() {
        let many: Vec<Ipv4Addr> = (0..100u8).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        let mut v = Vteps::new(&many, None, 300);
        assert_eq!(v.flood().len(), MAX_REMOTES);
        for i in 0..=255u8 {
            v.learn(&M1, Ipv4Addr::new(10, 2, 0, i), &HOP, 1);
        }
        assert!(!v.learn(&M1, Ipv4Addr::new(10, 3, 0, 1), &HOP, 1), "no room");
    }
}
