// The flow hash that spreads frames over queue pairs: the addresses and ports of a
// frame's IPv4 or IPv6 header (TCP, UDP, SCTP; the addresses alone for a fragment or
// another protocol), its MAC addresses when it carries no IP. Frames of one flow always
// hash alike, so they stay in order on one queue.
//! Flow hashing for multiqueue.

/// Bytes of a frame's head the hash looks at: an Ethernet header, two VLAN tags, an
/// IPv6 header and the ports.
pub const FLOW_HEAD: usize = 14 + 2 * 4 + 40 + 4;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// Mixes 32-bit words into a hash.
#[derive(Clone, Copy)]
struct Mix(u32);

impl Mix {
    #[inline]
    fn word(self, w: u32) -> Self {
        Self((self.0 ^ w).wrapping_mul(0x9e37_79b1).rotate_left(15))
    }

    #[inline]
    fn bytes(mut self, b: &[u8]) -> Self {
        let mut chunks = b.chunks_exact(4);
        for c in &mut chunks {
            self = self.word(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 4];
            w[..rest.len()].copy_from_slice(rest);
            self = self.word(u32::from_ne_bytes(w));
        }
        self
    }

    /// The final avalanche (MurmurHash3's fmix32), so that the high bits [`pick`] uses
    /// depend on every input bit.
    #[inline]
    fn finish(self) -> u32 {
        let mut h = self.0;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The flow hash of a frame whose first bytes are `head` (at most [`FLOW_HEAD`] are
/// read; a shorter head hashes what it has). Never fails: a frame it cannot parse hashes
/// by its MAC addresses, or by nothing at all.
pub fn flow_hash(head: &[u8]) -> u32 {
    let mut at = 12;
    let mut ethertype = be16(head, at).unwrap_or(0);
    while matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD) {
        at += 4;
        ethertype = be16(head, at).unwrap_or(0);
    }
    let l3 = at + 2;
    let mix = Mix(u32::from(ethertype));
    let hashed = match ethertype {
        ETH_P_IPV4 => ipv4(mix, head.get(l3..).unwrap_or_default()),
        ETH_P_IPV6 => ipv6(mix, head.get(l3..).unwrap_or_default()),
        _ => None,
    };
    hashed.unwrap_or_else(|| mix.bytes(head.get(..12).unwrap_or(head))).finish()
}

fn ports_of(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

fn ipv4(mix: Mix, ip: &[u8]) -> Option<Mix> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let proto = *ip.get(9)?;
    let mix = mix.word(u32::from(proto)).bytes(ip.get(12..20)?);
    // A fragment (more to come, or an offset) has its ports in the first one only.
    let fragment = be16(ip, 6)? & 0x3fff != 0;
    if fragment || !ports_of(proto) || ihl < 20 {
        return Some(mix);
    }
    Some(ip.get(ihl..ihl + 4).map_or(mix, |p| mix.bytes(p)))
}

fn ipv6(mix: Mix, ip: &[u8]) -> Option<Mix> {
    let next = *ip.get(6)?;
    let mix = mix.word(u32::from(next)).bytes(ip.get(8..40)?);
    if !ports_of(next) {
        return Some(mix);
    }
    Some(ip.get(40..44).map_or(mix, |p| mix.bytes(p)))
}

/// Which of `n` queues (n ≥ 1) the hash `h` goes to: its high bits scaled, no division.
#[inline]
pub fn pick(h: u32, n: usize) -> usize {
    ((u64::from(h) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src_port: u16, dst_port: u16, frag: u16, vlan: bool) -> Vec<u8> {
        let mut f = vec![0xaa; 6];
        f.extend([0xbb; 6]);
        if vlan {
            f.extend([0x81, 0x00, 0x00, 0x07]);
        }
        f.extend([0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        f.extend(ip);
        f.extend(src_port.to_be_bytes());
        f.extend(dst_port.to_be_bytes());
        f.extend([0u8; 20]);
        f
    }

    #[test]
    fn one_flow_hashes_alike_and_flows_spread_over_the_queues() {
        assert_eq!(flow_hash(&udp4(1000, 53, 0, false)), flow_hash(&udp4(1000, 53, 0, false)));
        // The payload is not part of it.
        let (mut a, b) = (udp4(1000, 53, 0, false), udp4(1000, 53, 0, false));
        a[50] = 0x55;
        assert_eq!(flow_hash(&a), flow_hash(&b));
        let mut per_queue = [0u32; 4];
        for port in 0..4000u16 {
            per_queue[pick(flow_hash(&udp4(10_000 + port, 53, 0, false)), 4)] += 1;
        }
        assert!(per_queue.iter().all(|&n| (800..1200).contains(&n)), "{per_queue:?}");
    }

    #[test]
    fn ports_count_except_in_fragments_and_vlan_tags_are_skipped() {
        assert_ne!(flow_hash(&udp4(1000, 53, 0, false)), flow_hash(&udp4(1001, 53, 0, false)));
        // Every fragment of a datagram goes where its first one did not necessarily, but
        // all of them alike: ports are not looked at.
        assert_eq!(flow_hash(&udp4(1000, 53, 0x2000, false)), flow_hash(&udp4(7, 9, 0x0010, false)));
        // A tagged frame of a flow hashes like the untagged one's addresses and ports.
        let tagged = flow_hash(&udp4(1000, 53, 0, true));
        assert_eq!(tagged, flow_hash(&udp4(1000, 53, 0, true)));
        assert_ne!(tagged, flow_hash(&udp4(1001, 53, 0, true)));
    }

    #[test]
    fn short_and_odd_frames_hash_without_panicking() {
        let f = udp4(1, 2, 0, true);
        for n in 0..=f.len() {
            let _ = flow_hash(&f[..n]);
        }
        let _ = flow_hash(&[0x81, 0x00]);
        let mut v6 = vec![0u8; 12];
        v6.extend([0x86, 0xdd]);
        v6.extend([0x60, 0, 0, 0, 0, 8, IPPROTO_TCP, 64]);
        v6.extend([1u8; 32]);
        v6.extend([0x12, 0x34, 0x00, 0x50]);
        assert_ne!(flow_hash(&v6), 0);
        assert!(pick(u32::MAX, 3) < 3 && pick(0, 1) == 0);
    }
}
