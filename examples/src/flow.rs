// Ethernet/IPv4/TCP|UDP headers for the VNFs: parsing a frame into its 5-tuple,
// Internet checksums (full and incremental), and building IPv4 flow frames for tests and flowgen.
//! IPv4 5-tuples: parsing, checksums, and flow frames.

use std::net::Ipv4Addr;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Bytes of an Ethernet header (no VLAN tag).
pub const ETH_LEN: usize = 14;
/// Bytes of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// Bytes of a UDP header.
pub const UDP_LEN: usize = 8;
/// Bytes of a TCP header without options.
pub const TCP_LEN: usize = 20;

/// The 5-tuple of an IPv4 packet. Ports are 0 when the packet carries no
/// TCP/UDP header we can read (other protocols, non-first fragments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FiveTuple {
    /// Source address (host order).
    pub src: u32,
    /// Destination address (host order).
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl FiveTuple {
    /// A 64-bit hash of the tuple (a murmur3-style finaliser over its 104 bits):
    /// cheap, and good enough to spread flows over backends.
    #[inline]
    pub fn hash(&self) -> u64 {
        let a = (u64::from(self.src) << 32) | u64::from(self.dst);
        let b = (u64::from(self.sport) << 24) | (u64::from(self.dport) << 8) | u64::from(self.proto);
        mix64(a ^ mix64(b ^ 0x9e37_79b9_7f4a_7c15))
    }
}

impl std::fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "proto {} {}:{} -> {}:{}",
            self.proto,
            Ipv4Addr::from(self.src),
            self.sport,
            Ipv4Addr::from(self.dst),
            self.dport
        )
    }
}

/// The murmur3 64-bit finaliser: every input bit affects every output bit.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Where the headers of a parsed IPv4 frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The flow.
    pub tuple: FiveTuple,
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the TCP/UDP header, when there is one we can read.
    pub l4: Option<usize>,
}

#[inline]
fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

#[inline]
fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Parses an Ethernet frame carrying IPv4. `None` for anything else, or for a
/// header that does not fit the frame (never reads past `f`).
#[inline]
pub fn parse(f: &[u8]) -> Option<Parsed> {
    if f.len() < ETH_LEN + IPV4_LEN || be16(f, 12) != ETHERTYPE_IPV4 {
        return None;
    }
    let l3 = ETH_LEN;
    let vihl = f[l3];
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_LEN || f.len() < l3 + ihl {
        return None;
    }
    let total = usize::from(be16(f, l3 + 2));
    if total < ihl || f.len() < l3 + total {
        return None;
    }
    let proto = f[l3 + 9];
    let mut tuple = FiveTuple { src: be32(f, l3 + 12), dst: be32(f, l3 + 16), sport: 0, dport: 0, proto };
    // Only the first fragment (offset 0) holds the ports.
    let frag_off = be16(f, l3 + 6) & 0x1fff;
    let l4_off = l3 + ihl;
    let l4_min = match proto {
        PROTO_UDP => UDP_LEN,
        PROTO_TCP => TCP_LEN,
        _ => usize::MAX,
    };
    let l4 = if frag_off == 0 && l4_min != usize::MAX && total - ihl >= l4_min {
        tuple.sport = be16(f, l4_off);
        tuple.dport = be16(f, l4_off + 2);
        Some(l4_off)
    } else {
        None
    };
    Some(Parsed { tuple, l3, l4 })
}

/// Ones'-complement sum of `b` (odd last byte padded with zero), not folded.
#[inline]
pub fn sum16(b: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [x] = chunks.remainder() {
        s += u32::from(*x) << 8;
    }
    s
}

/// Folds a 32-bit sum to 16 bits and complements it: the Internet checksum.
#[inline]
pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Updates a checksum field for one 16-bit word changing from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline]
pub fn csum_update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    fold(s)
}

/// Updates a checksum field for a 32-bit value (an address) changing from `old` to `new`.
#[inline]
pub fn csum_update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = csum_update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    csum_update16(c, old as u16, new as u16)
}

/// Checks the IPv4 header checksum of a parsed frame.
pub fn ipv4_csum_ok(f: &[u8], p: &Parsed) -> bool {
    let ihl = usize::from(f[p.l3] & 0x0f) * 4;
    fold(sum16(&f[p.l3..p.l3 + ihl])) == 0
}

/// The pseudo-header sum of an IPv4 TCP/UDP segment of `l4_len` bytes.
fn pseudo_sum(t: &FiveTuple, l4_len: usize) -> u32 {
    (t.src >> 16) + (t.src & 0xffff) + (t.dst >> 16) + (t.dst & 0xffff) + u32::from(t.proto) + l4_len as u32
}

/// Checks the TCP/UDP checksum of a parsed frame (a UDP checksum of 0 means
/// "none" and passes). False when there is no L4 header.
pub fn l4_csum_ok(f: &[u8], p: &Parsed) -> bool {
    let Some(l4) = p.l4 else { return false };
    let total = usize::from(be16(f, p.l3 + 2));
    let end = p.l3 + total;
    if p.tuple.proto == PROTO_UDP && be16(f, l4 + 6) == 0 {
        return true;
    }
    fold(pseudo_sum(&p.tuple, end - l4) + sum16(&f[l4..end])) == 0
}

/// Offset of the checksum field inside the L4 header.
fn l4_csum_off(proto: u8) -> Option<usize> {
    match proto {
        PROTO_UDP => Some(6),
        PROTO_TCP => Some(16),
        _ => None,
    }
}

/// Rewrites the destination IPv4 address of a parsed frame, keeping the IPv4
/// and TCP/UDP checksums right (incrementally). A UDP checksum of 0 stays 0;
/// a non-first fragment's L4 checksum is not ours to touch.
#[inline]
pub fn set_dst_ip(f: &mut [u8], p: &Parsed, new: u32) {
    let old = p.tuple.dst;
    if old == new {
        return;
    }
    f[p.l3 + 16..p.l3 + 20].copy_from_slice(&new.to_be_bytes());
    let c = csum_update32(be16(f, p.l3 + 10), old, new);
    f[p.l3 + 10..p.l3 + 12].copy_from_slice(&c.to_be_bytes());
    if let (Some(l4), Some(co)) = (p.l4, l4_csum_off(p.tuple.proto)) {
        let at = l4 + co;
        let cur = be16(f, at);
        if p.tuple.proto == PROTO_UDP && cur == 0 {
            return;
        }
        let mut c = csum_update32(cur, old, new);
        // UDP sends a computed 0 as 0xffff (0 means "no checksum").
        if p.tuple.proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// What a flow frame carries, to build one.
#[derive(Debug, Clone, Copy)]
pub struct FrameSpec {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// The flow (proto must be UDP or TCP).
    pub tuple: FiveTuple,
    /// Total frame length (at least the headers; padded with a pattern).
    pub len: usize,
}

/// Writes an Ethernet/IPv4/UDP|TCP frame of `s.len` bytes into `out` (which
/// must be at least that long) with correct checksums; the payload is `payload`
/// followed by a byte pattern. Returns the payload's offset. `None` if the
/// protocol is not TCP/UDP or the frame cannot hold the headers and payload.
pub fn build(out: &mut [u8], s: &FrameSpec, payload: &[u8]) -> Option<usize> {
    let l4_len = match s.tuple.proto {
        PROTO_UDP => UDP_LEN,
        PROTO_TCP => TCP_LEN,
        _ => return None,
    };
    let hdrs = ETH_LEN + IPV4_LEN + l4_len;
    if s.len < hdrs + payload.len() || out.len() < s.len || s.len - ETH_LEN > usize::from(u16::MAX) {
        return None;
    }
    let f = &mut out[..s.len];
    f[0..6].copy_from_slice(&s.dst_mac);
    f[6..12].copy_from_slice(&s.src_mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip_total = (s.len - ETH_LEN) as u16;
    let ip = &mut f[ETH_LEN..ETH_LEN + IPV4_LEN];
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, s.tuple.proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
    ip[12..16].copy_from_slice(&s.tuple.src.to_be_bytes());
    ip[16..20].copy_from_slice(&s.tuple.dst.to_be_bytes());
    let c = fold(sum16(ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let l4 = ETH_LEN + IPV4_LEN;
    let pay = l4 + l4_len;
    f[pay..pay + payload.len()].copy_from_slice(payload);
    for (i, x) in f[pay + payload.len()..].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(13).wrapping_add(5);
    }
    let seg_len = s.len - l4;
    let h = &mut f[l4..pay];
    h.fill(0);
    h[0..2].copy_from_slice(&s.tuple.sport.to_be_bytes());
    h[2..4].copy_from_slice(&s.tuple.dport.to_be_bytes());
    if s.tuple.proto == PROTO_UDP {
        h[4..6].copy_from_slice(&(seg_len as u16).to_be_bytes());
    } else {
        h[12] = 5 << 4; // data offset: 5 words
        h[13] = 0x10; // ACK
        h[14..16].copy_from_slice(&0xffffu16.to_be_bytes()); // window
    }
    let co = l4 + l4_csum_off(s.tuple.proto)?;
    let mut c = fold(pseudo_sum(&s.tuple, seg_len) + sum16(&f[l4..]));
    if s.tuple.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    f[co..co + 2].copy_from_slice(&c.to_be_bytes());
    Some(pay)
}

/// Parses `a.b.c.d`.
pub fn parse_ip(s: &str) -> Result<u32, String> {
    s.parse::<Ipv4Addr>().map(u32::from).map_err(|_| format!("'{s}' is not an IPv4 address like 10.0.0.1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(proto: u8) -> FiveTuple {
        FiveTuple {
            src: parse_ip("10.0.0.1").unwrap(),
            dst: parse_ip("192.168.1.10").unwrap(),
            sport: 1234,
            dport: 53,
            proto,
        }
    }

    fn frame(proto: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        let s = FrameSpec { dst_mac: [2, 0, 0, 0, 0, 2], src_mac: [2, 0, 0, 0, 0, 1], tuple: tuple(proto), len };
        build(&mut f, &s, b"hello").unwrap();
        f
    }

    #[test]
    fn builds_and_parses_udp_and_tcp() {
        for (proto, len) in [(PROTO_UDP, 64), (PROTO_TCP, 70), (PROTO_UDP, 1514)] {
            let f = frame(proto, len);
            let p = parse(&f).unwrap();
            assert_eq!(p.tuple, tuple(proto));
            assert_eq!(p.l4, Some(34));
            assert!(ipv4_csum_ok(&f, &p));
            assert!(l4_csum_ok(&f, &p), "proto {proto} len {len}");
        }
    }

    #[test]
    fn rejects_what_is_not_ipv4_or_is_short() {
        let f = frame(PROTO_UDP, 64);
        assert!(parse(&f[..30]).is_none(), "truncated IP header");
        let mut g = f.clone();
        g[12] = 0x86; // IPv6 ethertype
        assert!(parse(&g).is_none());
        let mut g = f.clone();
        g[14] = 0x44; // IHL 4 words
        assert!(parse(&g).is_none());
        let mut g = f.clone();
        g[16..18].copy_from_slice(&200u16.to_be_bytes()); // total length past the frame
        assert!(parse(&g).is_none());
        let mut g = f.clone();
        g[16..18].copy_from_slice(&24u16.to_be_bytes()); // too short for a UDP header
        let p = parse(&g).unwrap();
        assert_eq!((p.l4, p.tuple.sport), (None, 0));
        assert!(parse(&[]).is_none());
    }

    #[test]
    fn fragments_have_no_ports() {
        let mut f = frame(PROTO_UDP, 64);
        f[20..22].copy_from_slice(&0x0010u16.to_be_bytes()); // fragment offset 16
        let p = parse(&f).unwrap();
        assert_eq!(p.l4, None);
        assert_eq!((p.tuple.sport, p.tuple.dport), (0, 0));
    }

    #[test]
    fn dst_rewrite_keeps_checksums() {
        for proto in [PROTO_UDP, PROTO_TCP] {
            let mut f = frame(proto, 80);
            let p = parse(&f).unwrap();
            let new = parse_ip("172.16.5.77").unwrap();
            set_dst_ip(&mut f, &p, new);
            let q = parse(&f).unwrap();
            assert_eq!(q.tuple.dst, new);
            assert!(ipv4_csum_ok(&f, &q));
            assert!(l4_csum_ok(&f, &q));
        }
        // No UDP checksum stays none.
        let mut f = frame(PROTO_UDP, 64);
        f[40..42].fill(0);
        let p = parse(&f).unwrap();
        set_dst_ip(&mut f, &p, 1);
        assert_eq!(&f[40..42], &[0, 0]);
    }

    #[test]
    fn incremental_matches_full() {
        let mut f = frame(PROTO_UDP, 64);
        let p = parse(&f).unwrap();
        for new in [0u32, 1, 0xffff_ffff, 0x0a00_0001, 0xc0a8_0101] {
            set_dst_ip(&mut f, &p, new);
            let q = parse(&f).unwrap();
            assert!(ipv4_csum_ok(&f, &q), "{new:#x}");
            assert!(l4_csum_ok(&f, &q), "{new:#x}");
            // Put it back so p stays the parse of f.
            set_dst_ip(&mut f, &q, p.tuple.dst);
        }
    }

    #[test]
    fn hash_spreads() {
        let mut t = tuple(PROTO_UDP);
        let a = t.hash();
        t.sport += 1;
        assert_ne!(a, t.hash());
        assert_eq!(parse_ip("1.2.3.4").unwrap(), 0x0102_0304);
        assert!(parse_ip("1.2.3").unwrap_err().contains("'1.2.3'"));
    }
}
