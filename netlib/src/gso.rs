// Software TCP segmentation of a GSO frame (TCP over IPv4 or IPv6, optionally one
// 802.1Q tag) for a destination that did not negotiate TSO, as Linux's tcp_gso_segment.
//! Software GSO.

use crate::csum;
use crate::vnet_hdr::{Gso, GsoKind, PartialCsum};

/// Most segments one GSO frame may ask for (64 KB in 64-byte segments).
pub const MAX_SEGMENTS: usize = 1024;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPV6_HDR_LEN: usize = 40;
const TCP_CSUM_OFFSET: u16 = 16;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a GSO frame cannot be segmented. Counted by the switch; the frame is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// The headers run past the frame's end.
    #[error("gso: frame of {0} bytes ends inside its headers")]
    Truncated(usize),
    /// The ethertype is not the one the GSO type names.
    #[error("gso: ethertype {ethertype:#06x} for {kind:?}")]
    Ethertype {
        /// The frame's ethertype (after one VLAN tag).
        ethertype: u16,
        /// The header's GSO type.
        kind: GsoKind,
    },
    /// An IPv4 header that is not one (version, IHL) or a fragment.
    #[error("gso: not an IPv4 header of 20 bytes or more, or a fragment")]
    Ipv4,
    /// An IPv6 header whose version is not 6.
    #[error("gso: bad IPv6 header (version {0})")]
    Ipv6(u8),
    /// The L4 protocol (IPv6: the first next header) is not TCP.
    #[error("gso: protocol {0} is not TCP")]
    NotTcp(u8),
    /// `csum_start`/`csum_offset` do not name the TCP checksum.
    #[error("gso: csum_start {start}/csum_offset {offset}, the TCP header is at {tcp}")]
    CsumPlace {
        /// The header's `csum_start`.
        start: u16,
        /// The header's `csum_offset`.
        offset: u16,
        /// Where the TCP header really is.
        tcp: usize,
    },
    /// A TCP data offset under 5 words.
    #[error("gso: TCP data offset {0}")]
    TcpOffset(u8),
    /// No payload, or more than [`MAX_SEGMENTS`] segments.
    #[error("gso: {payload} bytes of payload in segments of {size}")]
    Segments {
        /// Payload bytes.
        payload: usize,
        /// The header's `gso_size`.
        size: u16,
    },
}

/// A GSO frame checked and ready to be cut: [`Segments::write`] writes each segment,
/// with its headers fixed and checksums computed, straight into a destination buffer.
#[derive(Debug)]
pub struct Segments<'a> {
    frame: &'a [u8],
    ip: usize,
    tcp: usize,
    payload: usize,
    mss: usize,
    v6: bool,
    count: usize,
}

impl<'a> Segments<'a> {
    /// Checks `frame` against its header's GSO request and checksum place.
    pub fn new(frame: &'a [u8], gso: Gso, c: PartialCsum) -> Result<Self, GsoError> {
        let trunc = GsoError::Truncated(frame.len());
        let be16 = |at: usize| frame.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(trunc);
        let (mut ethertype, mut ip) = (be16(12)?, 14);
        if ethertype == ETHERTYPE_8021Q {
            (ethertype, ip) = (be16(16)?, 18);
        }
        let v6 = gso.kind == GsoKind::Tcp6;
        if ethertype != if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 } {
            return Err(GsoError::Ethertype { ethertype, kind: gso.kind });
        }
        let first = *frame.get(ip).ok_or(trunc)?;
        let tcp = if v6 {
            if first >> 4 != 6 {
                return Err(GsoError::Ipv6(first >> 4));
            }
            let next = *frame.get(ip + 6).ok_or(trunc)?;
            if next != IPPROTO_TCP {
                return Err(GsoError::NotTcp(next));
            }
            ip + IPV6_HDR_LEN
        } else {
            let ihl = usize::from(first & 0xf) * 4;
            if first >> 4 != 4 || ihl < 20 || be16(ip + 6)? & 0x3fff != 0 {
                return Err(GsoError::Ipv4);
            }
            let proto = *frame.get(ip + 9).ok_or(trunc)?;
            if proto != IPPROTO_TCP {
                return Err(GsoError::NotTcp(proto));
            }
            ip + ihl
        };
        if usize::from(c.start) != tcp || c.offset != TCP_CSUM_OFFSET {
            return Err(GsoError::CsumPlace { start: c.start, offset: c.offset, tcp });
        }
        let doff = *frame.get(tcp + 12).ok_or(trunc)? >> 4;
        if doff < 5 {
            return Err(GsoError::TcpOffset(doff));
        }
        let payload = tcp + usize::from(doff) * 4;
        let bytes = frame.len().checked_sub(payload).ok_or(trunc)?;
        let mss = usize::from(gso.size);
        let count = bytes.div_ceil(mss.max(1));
        if bytes == 0 || mss == 0 || count > MAX_SEGMENTS {
            return Err(GsoError::Segments { payload: bytes, size: gso.size });
        }
        Ok(Segments { frame, ip, tcp, payload, mss, v6, count })
    }

    /// How many segments the frame is cut into.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The length of segment `i` (headers included).
    pub fn len(&self, i: usize) -> usize {
        let left = (self.frame.len() - self.payload).saturating_sub(i.saturating_mul(self.mss));
        self.payload + self.mss.min(left)
    }

    /// Whether there are no segments (never, for a checked frame).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes segment `i` into `out` and returns its length, or None (writing nothing)
    /// if `i` is past the last segment or `out` is too small.
    pub fn write(&self, i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count {
            return None;
        }
        let (h, off) = (self.payload, i * self.mss);
        let len = self.len(i);
        let out = out.get_mut(..len)?;
        out[..h].copy_from_slice(&self.frame[..h]);
        out[h..].copy_from_slice(&self.frame[h + off..h + off + len - h]);
        let set16 = |out: &mut [u8], at: usize, v: u16| out[at..at + 2].copy_from_slice(&v.to_be_bytes());
        let ip = self.ip;
        let (src, dst) = if self.v6 {
            set16(out, ip + 4, (len - ip - IPV6_HDR_LEN) as u16);
            (ip + 8..ip + 24, ip + 24..ip + 40)
        } else {
            set16(out, ip + 2, (len - ip) as u16);
            let id = u16::from_be_bytes([out[ip + 4], out[ip + 5]]).wrapping_add(i as u16);
            set16(out, ip + 4, id);
            set16(out, ip + 10, 0);
            let sum = csum::complement(csum::add(&out[ip..self.tcp], 0));
            set16(out, ip + 10, sum);
            (ip + 12..ip + 16, ip + 16..ip + 20)
        };
        let tcp = self.tcp;
        let seq = u32::from_be_bytes([out[tcp + 4], out[tcp + 5], out[tcp + 6], out[tcp + 7]]).wrapping_add(off as u32);
        out[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < self.count {
            out[tcp + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            out[tcp + 13] &= !TCP_CWR;
        }
        set16(out, tcp + 16, 0);
        let l4 = (len - tcp) as u32;
        let sum = csum::complement(csum::add(&out[tcp..], csum::pseudo(&out[src], &out[dst], IPPROTO_TCP, l4)));
        set16(out, tcp + 16, sum);
        Some(len)
    }
}

#[cfg(test)]
pub(crate) mod tests;
