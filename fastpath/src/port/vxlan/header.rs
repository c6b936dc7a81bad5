// VXLAN's outer headers (RFC 7348): Ethernet, IPv4 (checksum computed), UDP (source
// port a flow hash of the inner frame, checksum 0) and VXLAN (I flag, VNI); and their checks.
//! Building and checking VXLAN encapsulation.

use std::net::Ipv4Addr;

use crate::mactable::Mac;

/// VXLAN's UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// Bytes of outer headers before the inner frame: Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
pub const ENCAP_LEN: usize = 50;
/// Of those, the bytes an MTU counts (the outer IPv4 packet's, past the Ethernet header):
/// an inner frame of `n` bytes makes an outer IPv4 packet of `n + 36`.
pub const IP_OVERHEAD: usize = ENCAP_LEN - ETH_LEN;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Bytes of an Ethernet header.
pub const ETH_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETH_ARP: u16 = 0x0806;
/// The VXLAN header's I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;
/// Lowest UDP source port the flow hash picks (RFC 7348: 49152..65535).
const SPORT_BASE: u16 = 49152;
const IP_UDP: u8 = 17;
const IP_TCP: u8 = 6;
/// The IPv4 flags-and-offset field's offset bits.
const FRAGMENT_OFFSET: u16 = 0x1fff;

/// Why a frame from the uplink was not decapsulated: each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than its headers say (or than any header at all).
    Short,
    /// An IPv4 header that is not one (version, header length, total length).
    Garbled,
    /// The outer IPv4 header checksum is wrong.
    BadChecksum,
    /// An outer IPv4 fragment (VXLAN packets must not be fragmented).
    Fragment,
    /// Not to our VTEP address.
    NotOurs,
    /// Not UDP to port 4789.
    NotVxlan,
    /// The VXLAN I flag is not set.
    NoIFlag,
    /// Another VNI.
    WrongVni,
    /// Not IPv4 (nor ARP): other traffic on the uplink.
    NotIpv4,
}

impl Reject {
    /// Every reason, in the order counters are shown.
    pub const ALL: [Reject; 9] = [
        Reject::Short,
        Reject::Garbled,
        Reject::BadChecksum,
        Reject::Fragment,
        Reject::NotOurs,
        Reject::NotVxlan,
        Reject::NoIFlag,
        Reject::WrongVni,
        Reject::NotIpv4,
    ];

    /// The counter's name in `fastpathctl stats` and `list --json`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Short => "rx_short",
            Reject::Garbled => "rx_garbled",
            Reject::BadChecksum => "rx_bad_checksum",
            Reject::Fragment => "rx_fragment",
            Reject::NotOurs => "rx_not_our_vtep",
            Reject::NotVxlan => "rx_not_udp_4789",
            Reject::NoIFlag => "rx_no_i_flag",
            Reject::WrongVni => "rx_wrong_vni",
            Reject::NotIpv4 => "rx_not_ipv4",
        }
    }
}

/// A decapsulated packet: where its inner frame is in the outer one, and who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decap {
    /// Offset of the inner frame.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// The remote VTEP (outer source address).
    pub vtep: Ipv4Addr,
    /// The outer source MAC (the remote VTEP's, or its router's).
    pub from_mac: Mac,
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The Internet checksum of `b` (an even number of bytes).
#[inline]
pub fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b.chunks_exact(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checks an outer frame from the uplink (`f`, its first bytes ETH_IPV4) addressed to
/// the VTEP `local` for `vni`; returns where its inner frame is.
pub fn decap(f: &[u8], local: Ipv4Addr, vni: u32) -> Result<Decap, Reject> {
    if f.len() < ETH_LEN + 20 {
        return Err(Reject::Short);
    }
    let ip = &f[ETH_LEN..];
    if ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
        return Err(Reject::Garbled);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    if total < ihl {
        return Err(Reject::Garbled);
    }
    if ip.len() < ihl || ip.len() < total {
        return Err(Reject::Short);
    }
    if checksum(&ip[..ihl]) != 0 {
        return Err(Reject::BadChecksum);
    }
    // More fragments, or an offset: a fragment (DF is fine).
    if be16(ip, 6) & 0x3fff != 0 {
        return Err(Reject::Fragment);
    }
    if ip[16..20] != local.octets() {
        return Err(Reject::NotOurs);
    }
    if ip[9] != IP_UDP {
        return Err(Reject::NotVxlan);
    }
    let udp = &ip[ihl..total];
    if udp.len() < 8 {
        return Err(Reject::Short);
    }
    if be16(udp, 2) != VXLAN_PORT {
        return Err(Reject::NotVxlan);
    }
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < 8 || udp_len > udp.len() {
        return Err(Reject::Garbled);
    }
    if udp_len < 16 + ETH_LEN {
        return Err(Reject::Short);
    }
    let vx = &udp[8..16];
    if vx[0] & FLAG_I == 0 {
        return Err(Reject::NoIFlag);
    }
    if u32::from_be_bytes([0, vx[4], vx[5], vx[6]]) != vni {
        return Err(Reject::WrongVni);
    }
    let offset = ETH_LEN + ihl + 16;
    Ok(Decap {
        offset,
        len: udp_len - 16,
        vtep: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        from_mac: f[6..12].try_into().unwrap_or_default(),
    })
}

/// A flow hash of an inner frame's first bytes (`head`: at least its Ethernet header,
/// up to 38 bytes): its MACs and EtherType, and for IPv4 its addresses, protocol and
/// (TCP, UDP) ports; one flow always gets one UDP source port, in 49152..=65535.
#[inline]
pub fn flow_port(head: &[u8]) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    mix(&head[..head.len().min(ETH_LEN)]);
    if head.len() >= ETH_LEN + 20 && be16(head, 12) == ETH_IPV4 {
        let ip = &head[ETH_LEN..];
        mix(&ip[9..10]);
        mix(&ip[12..20]);
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let first_fragment = be16(ip, 6) & FRAGMENT_OFFSET == 0;
        if (ip[9] == IP_UDP || ip[9] == IP_TCP) && first_fragment {
            if let Some(ports) = ip.get(ihl..ihl + 4) {
                mix(ports);
            }
        }
    }
    SPORT_BASE | ((h ^ (h >> 32)) as u16 & 0x3fff)
}

/// What every packet of one port's encapsulation has in common.
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    /// The uplink's (our VTEP's) MAC.
    pub mac: Mac,
    /// Our VTEP address.
    pub local: Ipv4Addr,
    /// The VNI.
    pub vni: u32,
}

impl Outer {
    /// Writes the 50 bytes of outer headers into `h` for an inner frame of `inner_len`
    /// bytes to the VTEP `vtep` through `next_hop`, with IPv4 id `id` and UDP source
    /// port `sport`.
    #[inline]
    pub fn write(
        &self,
        h: &mut [u8; ENCAP_LEN],
        next_hop: &Mac,
        vtep: Ipv4Addr,
        inner_len: usize,
        id: u16,
        sport: u16,
    ) {
        h[0..6].copy_from_slice(next_hop);
        h[6..12].copy_from_slice(&self.mac);
        h[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
        let ip_len = (inner_len + IP_OVERHEAD) as u16;
        let ip = &mut h[ETH_LEN..ETH_LEN + 20];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[6..8].copy_from_slice(&[0, 0]);
        ip[8] = 64;
        ip[9] = IP_UDP;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&self.local.octets());
        ip[16..20].copy_from_slice(&vtep.octets());
        let c = checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp = &mut h[34..42];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        let vni = self.vni.to_be_bytes();
        h[42..50].copy_from_slice(&[FLAG_I, 0, 0, 0, vni[1], vni[2], vni[3], 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    fn inner() -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 168, 7, 1, 192, 168, 7, 2]);
        f.extend_from_slice(&[0x30, 0x39, 0x1f, 0x90, 0, 8, 0, 0]);
        f
    }

    /// An outer packet from REMOTE to LOCAL, VNI 42, around `inner()`.
    fn packet() -> Vec<u8> {
        let i = inner();
        let mut h = [0u8; ENCAP_LEN];
        let outer = Outer { mac: [0x02, 0, 0, 0, 0, 0xbb], local: REMOTE, vni: 42 };
        outer.write(&mut h, &[0x02, 0, 0, 0, 0, 0xaa], LOCAL, i.len(), 7, flow_port(&i));
        let mut p = h.to_vec();
        p.extend_from_slice(&i);
        p
    }

    /// Sets the IPv4 checksum of `p` right after a change.
    fn fix_checksum(p: &mut [u8]) {
        p[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&p[14..34]);
        p[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn a_packet_built_is_decapsulated_back_to_its_inner_frame() {
        let p = packet();
        let d = decap(&p, LOCAL, 42).unwrap();
        assert_eq!(&p[d.offset..d.offset + d.len], &inner()[..]);
        assert_eq!((d.vtep, d.from_mac), (REMOTE, [0x02, 0, 0, 0, 0, 0xbb]));
        // The fields another implementation reads.
        assert_eq!(checksum(&p[14..34]), 0, "the IPv4 checksum verifies");
        assert_eq!(u16::from_be_bytes([p[16], p[17]]) as usize, 36 + inner().len());
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), VXLAN_PORT);
        assert_eq!(u16::from_be_bytes([p[38], p[39]]) as usize, 16 + inner().len());
        assert_eq!(&p[40..42], &[0, 0], "UDP checksum 0");
        assert_eq!(&p[42..50], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
        let sport = u16::from_be_bytes([p[34], p[35]]);
        assert!(sport >= 49152, "{sport}");
    }

    #[test]
    fn the_source_port_follows_the_flow() {
        let a = inner();
        let mut b = inner();
        b[34] ^= 1; // another UDP source port
        assert_eq!(flow_port(&a), flow_port(&inner()));
        assert_ne!(flow_port(&a), flow_port(&b));
        assert!(flow_port(&a[..14]) >= 49152, "a bare Ethernet header hashes too");
    }

    #[test]
    fn every_bad_input_is_rejected_for_its_reason() {
        let good = packet();
        let case = |f: &dyn Fn(&mut Vec<u8>), fix: bool| {
            let mut p = good.clone();
            f(&mut p);
            if fix {
                fix_checksum(&mut p);
            }
            decap(&p, LOCAL, 42).unwrap_err()
        };
        assert_eq!(case(&|p| p.truncate(20), false), Reject::Short);
        assert_eq!(case(&|p| p.truncate(60), false), Reject::Short, "cut inside the inner frame");
        assert_eq!(case(&|p| p[14] = 0x65, true), Reject::Garbled, "IP version 6 in an IPv4 frame");
        assert_eq!(case(&|p| p[14] = 0x44, true), Reject::Garbled, "header length 16");
        assert_eq!(case(&|p| p[16..18].copy_from_slice(&[0, 10]), true), Reject::Garbled, "total < header");
        assert_eq!(case(&|p| p[24] ^= 0xff, false), Reject::BadChecksum);
        assert_eq!(case(&|p| p[20] = 0x20, true), Reject::Fragment, "more fragments");
        assert_eq!(case(&|p| p[21] = 8, true), Reject::Fragment, "an offset");
        assert_eq!(case(&|p| p[33] = 9, true), Reject::NotOurs);
        assert_eq!(case(&|p| p[23] = 6, true), Reject::NotVxlan, "TCP");
        assert_eq!(case(&|p| p[37] = 0x12, false), Reject::NotVxlan, "port 4754");
        assert_eq!(case(&|p| p[38..40].copy_from_slice(&[0xff, 0]), false), Reject::Garbled, "UDP length");
        assert_eq!(case(&|p| p[38..40].copy_from_slice(&[0, 20]), false), Reject::Short, "no inner frame");
        assert_eq!(case(&|p| p[42] = 0, false), Reject::NoIFlag);
        assert_eq!(case(&|p| p[48] = 43, false), Reject::WrongVni);
        // DF set and reserved bits set are fine.
        let mut df = good.clone();
        df[20] = 0x40;
        fix_checksum(&mut df);
        df[43] = 0xff;
        assert!(decap(&df, LOCAL, 42).is_ok());
        assert_eq!(
            Reject::ALL.len(),
            Reject::ALL.iter().map(|r| r.label()).collect::<std::collections::HashSet<_>>().len()
        );
    }
}
