// ARP on a VXLAN port's uplink: answering for the local VTEP address, and asking for
// each remote VTEP's MAC (the outer next hop) when no static next-hop MAC is configured.
//! ARP for the outer next hop.

use std::net::Ipv4Addr;

use crate::mactable::Mac;

use super::header::ETH_ARP;

/// Bytes of an ARP frame as sent (padded to Ethernet's 60-byte minimum).
pub const ARP_FRAME: usize = 60;

/// ARP operations.
const REQUEST: u16 = 1;
const REPLY: u16 = 2;

/// An IPv4-over-Ethernet ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Whether it is a request (else a reply).
    pub request: bool,
    /// Sender's MAC.
    pub sha: Mac,
    /// Sender's address.
    pub spa: Ipv4Addr,
    /// Target's address.
    pub tpa: Ipv4Addr,
}

/// Reads an ARP frame (`f` from its Ethernet header); `None` if it is not IPv4 over
/// Ethernet ARP, or too short.
pub fn parse(f: &[u8]) -> Option<Arp> {
    let a = f.get(14..42)?;
    if a[0..6] != [0, 1, 0x08, 0, 6, 4] {
        return None;
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    if op != REQUEST && op != REPLY {
        return None;
    }
    Some(Arp {
        request: op == REQUEST,
        sha: a[8..14].try_into().ok()?,
        spa: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        tpa: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    })
}

/// Writes an ARP message into `buf` (at least [`ARP_FRAME`] bytes); returns its length.
/// A request (`to` = None) is broadcast; a reply goes to `to`'s MAC.
pub fn write(buf: &mut [u8], mac: &Mac, ip: Ipv4Addr, to: Option<Mac>, target: Ipv4Addr) -> usize {
    let Some(f) = buf.get_mut(..ARP_FRAME) else { return 0 };
    f.fill(0);
    let (op, dst, tha) = match to {
        None => (REQUEST, [0xff; 6], [0; 6]),
        Some(m) => (REPLY, m, m),
    };
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
    f[14..20].copy_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&tha);
    f[38..42].copy_from_slice(&target.octets());
    ARP_FRAME
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::test_frames::arp_request;

    #[test]
    fn requests_and_replies_round_trip() {
        let me = [2, 0, 0, 0, 0, 1];
        let mut buf = [0u8; 64];
        assert_eq!(write(&mut buf, &me, Ipv4Addr::new(10, 0, 0, 1), None, Ipv4Addr::new(10, 0, 0, 2)), ARP_FRAME);
        assert_eq!(&buf[..ARP_FRAME], &arp_request(me, [10, 0, 0, 1], [10, 0, 0, 2])[..], "as the kernel tests send");
        let a = parse(&buf).unwrap();
        assert_eq!(
            (a.request, a.sha, a.spa, a.tpa),
            (true, me, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        );
        let them = [2, 0, 0, 0, 0, 9];
        write(&mut buf, &me, Ipv4Addr::new(10, 0, 0, 1), Some(them), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(&buf[0..6], &them);
        let r = parse(&buf).unwrap();
        assert!(!r.request);
        assert_eq!(r.tpa, Ipv4Addr::new(10, 0, 0, 9));
        assert!(parse(&buf[..30]).is_none(), "short");
        assert_eq!(write(&mut [0u8; 20], &me, Ipv4Addr::LOCALHOST, None, Ipv4Addr::LOCALHOST), 0);
    }
}
