// The virtio-net header's offload fields (virtio 1.2 §5.1.6): the feature bits that
// enable them, and a parsed header that a peer's lying lengths cannot get past.
//! Parsed, validated virtio-net headers.

/// Feature bit: the device takes frames with a partial checksum (NEEDS_CSUM) from the driver.
pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
/// Feature bit: the driver takes frames with a partial checksum (NEEDS_CSUM) and DATA_VALID.
pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
/// Feature bit: the driver takes TCP over IPv4 GSO frames.
pub const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
/// Feature bit: the driver takes TCP over IPv6 GSO frames.
pub const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
/// Feature bit: the device takes TCP over IPv4 GSO frames from the driver.
pub const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
/// Feature bit: the device takes TCP over IPv6 GSO frames from the driver.
pub const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
/// Every offload feature a fastpath backend offers when a port's offloads are on.
pub const OFFLOAD_FEATURES: u64 = VIRTIO_NET_F_CSUM
    | VIRTIO_NET_F_GUEST_CSUM
    | VIRTIO_NET_F_GUEST_TSO4
    | VIRTIO_NET_F_GUEST_TSO6
    | VIRTIO_NET_F_HOST_TSO4
    | VIRTIO_NET_F_HOST_TSO6;

/// Header flag: the checksum at `csum_start + csum_offset` is to be finished.
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// Header flag: the frame's checksums were checked (receive side only).
pub const HDR_F_DATA_VALID: u8 = 2;
/// Header flag: RSC coalescing info in the `csum_*` fields (receive side only).
pub const HDR_F_RSC_INFO: u8 = 4;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (not supported here).
pub const GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation offload (not supported here).
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP frame has ECN's CWR set (only the first segment keeps it).
pub const GSO_ECN: u8 = 0x80;

/// Bytes of the header without `num_buffers`.
pub const HDR_FIELDS_LEN: usize = 10;

/// The kind of segmentation a GSO frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4.
    Tcp4,
    /// TCP over IPv6.
    Tcp6,
}

/// A GSO request: split the frame's TCP payload into `size`-byte segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// TCP over IPv4 or IPv6.
    pub kind: GsoKind,
    /// Payload bytes per segment (the MSS), at least 1.
    pub size: u16,
    /// The header's `hdr_len`: bytes of headers before the payload, as the sender says
    /// (advisory; the segmenter reads the real one from the frame).
    pub hdr_len: u16,
    /// The ECN bit was set in `gso_type`.
    pub ecn: bool,
}

/// A partial checksum to finish: the ones' complement sum of the frame from `start`
/// to its end goes, complemented, in the 16 bits at `start + offset` (which hold the
/// pseudo-header's sum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialCsum {
    /// Where the checksummed bytes start (the L4 header).
    pub start: u16,
    /// Where the checksum field is, from `start`.
    pub offset: u16,
}

/// A validated virtio-net header: what a frame's offloads ask of whoever takes it.
/// The default asks for nothing (the 64-byte fast path carries only this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// NEEDS_CSUM: the L4 checksum is left to finish.
    pub csum: Option<PartialCsum>,
    /// DATA_VALID: the sender checked the checksums.
    pub data_valid: bool,
    /// A GSO request (always with `csum`).
    pub gso: Option<Gso>,
}

/// Why a virtio-net header was refused. Each is counted by the port that read it; the
/// frame is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HdrError {
    /// Flags other than NEEDS_CSUM and DATA_VALID.
    #[error("virtio-net header: flags {0:#04x} has unknown bits")]
    Flags(u8),
    /// A `gso_type` this switch does not know or does not segment (UDP).
    #[error("virtio-net header: gso_type {0:#04x} is not supported")]
    GsoType(u8),
    /// A GSO frame without NEEDS_CSUM.
    #[error("virtio-net header: gso_type {0:#04x} without NEEDS_CSUM")]
    GsoWithoutCsum(u8),
    /// `gso_size` 0, or not smaller than the frame's payload could be.
    #[error("virtio-net header: gso_size {size} for a {frame_len}-byte frame")]
    GsoSize {
        /// The header's `gso_size`.
        size: u16,
        /// The frame's length.
        frame_len: usize,
    },
    /// `hdr_len` past the frame's end.
    #[error("virtio-net header: hdr_len {hdr_len} past the {frame_len}-byte frame")]
    HdrLen {
        /// The header's `hdr_len`.
        hdr_len: u16,
        /// The frame's length.
        frame_len: usize,
    },
    /// The checksum field (`csum_start + csum_offset`, 2 bytes) past the frame's end.
    #[error("virtio-net header: csum_start {start} + csum_offset {offset} past the {frame_len}-byte frame")]
    CsumPlace {
        /// The header's `csum_start`.
        start: u16,
        /// The header's `csum_offset`.
        offset: u16,
        /// The frame's length.
        frame_len: usize,
    },
}

impl VnetHdr {
    /// Whether the header asks for nothing: the frame goes anywhere as it is.
    #[inline]
    pub fn is_plain(&self) -> bool {
        self.csum.is_none() && self.gso.is_none()
    }

    /// Reads and checks the first ten bytes of a virtio-net header (`num_buffers`, if
    /// any, is the caller's) against the `frame_len` bytes of frame that follow it.
    /// All-zero headers (the common case) return at the first test.
    pub fn parse(raw: &[u8; HDR_FIELDS_LEN], frame_len: usize) -> Result<VnetHdr, HdrError> {
        if *raw == [0; HDR_FIELDS_LEN] {
            return Ok(VnetHdr::default());
        }
        let [flags, gso_type, ..] = *raw;
        let field = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let (hdr_len, gso_size, csum_start, csum_offset) = (field(2), field(4), field(6), field(8));
        if flags & !(HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID) != 0 {
            return Err(HdrError::Flags(flags));
        }
        let csum = if flags & HDR_F_NEEDS_CSUM != 0 {
            if usize::from(csum_start) + usize::from(csum_offset) + 2 > frame_len {
                return Err(HdrError::CsumPlace { start: csum_start, offset: csum_offset, frame_len });
            }
            Some(PartialCsum { start: csum_start, offset: csum_offset })
        } else {
            None
        };
        let kind = match gso_type & !GSO_ECN {
            GSO_NONE if gso_type == GSO_NONE => None,
            GSO_TCPV4 => Some(GsoKind::Tcp4),
            GSO_TCPV6 => Some(GsoKind::Tcp6),
            _ => return Err(HdrError::GsoType(gso_type)),
        };
        let gso = match kind {
            None => None,
            Some(kind) => {
                if csum.is_none() {
                    return Err(HdrError::GsoWithoutCsum(gso_type));
                }
                if usize::from(hdr_len) > frame_len {
                    return Err(HdrError::HdrLen { hdr_len, frame_len });
                }
                if gso_size == 0 || usize::from(gso_size) >= frame_len {
                    return Err(HdrError::GsoSize { size: gso_size, frame_len });
                }
                Some(Gso { kind, size: gso_size, hdr_len, ecn: gso_type & GSO_ECN != 0 })
            }
        };
        Ok(VnetHdr { csum, data_valid: flags & HDR_F_DATA_VALID != 0, gso })
    }

    /// The ten bytes of header that say this (`num_buffers` is the caller's).
    pub fn to_bytes(&self) -> [u8; HDR_FIELDS_LEN] {
        let mut flags = 0;
        let (mut start, mut offset) = (0, 0);
        if let Some(c) = self.csum {
            flags |= HDR_F_NEEDS_CSUM;
            (start, offset) = (c.start, c.offset);
        }
        if self.data_valid {
            flags |= HDR_F_DATA_VALID;
        }
        let (gso_type, hdr_len, size) = match self.gso {
            None => (GSO_NONE, 0, 0),
            Some(g) => {
                let t = match g.kind {
                    GsoKind::Tcp4 => GSO_TCPV4,
                    GsoKind::Tcp6 => GSO_TCPV6,
                };
                (t | if g.ecn { GSO_ECN } else { 0 }, g.hdr_len, g.size)
            }
        };
        encode(flags, gso_type, [hdr_len, size, start, offset])
    }

    /// What a destination that negotiated `features` must do with this frame before
    /// it can take it.
    #[inline]
    pub fn action_for(&self, features: u64) -> Action {
        if self.is_plain() {
            return Action::AsIs;
        }
        let need = match self.gso.map(|g| g.kind) {
            Some(GsoKind::Tcp4) => VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_CSUM,
            Some(GsoKind::Tcp6) => VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_CSUM,
            None => VIRTIO_NET_F_GUEST_CSUM,
        };
        if features & need == need {
            Action::AsIs
        } else if self.gso.is_some() {
            Action::Segment
        } else {
            Action::FinishCsum
        }
    }

    /// This header for the frame after an 802.1Q tag was pushed (`delta` 4) or popped
    /// (`delta` -4) after its MACs: its offsets move with the headers they point at.
    /// `None` when one would leave the frame's start.
    #[must_use]
    pub fn shifted(self, delta: i16) -> Option<Self> {
        let by = |v: u16| v.checked_add_signed(delta);
        let csum = match self.csum {
            Some(c) => Some(PartialCsum { start: by(c.start)?, ..c }),
            None => None,
        };
        let gso = match self.gso {
            Some(g) => Some(Gso { hdr_len: by(g.hdr_len)?, ..g }),
            None => None,
        };
        Some(Self { csum, gso, ..self })
    }
}

/// A header's ten bytes: `flags`, `gso_type`, then `hdr_len`, `gso_size`, `csum_start`
/// and `csum_offset` little-endian.
fn encode(flags: u8, gso_type: u8, fields: [u16; 4]) -> [u8; HDR_FIELDS_LEN] {
    let mut b = [0u8; HDR_FIELDS_LEN];
    b[0] = flags;
    b[1] = gso_type;
    for (i, v) in fields.iter().enumerate() {
        b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// What the switch does with a frame for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The frame goes as it is, with its header.
    AsIs,
    /// The L4 checksum is finished in software; the destination gets a plain frame.
    FinishCsum,
    /// The frame is segmented in software into checksummed frames.
    Segment,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, start: u16, offset: u16) -> [u8; 10] {
        encode(flags, gso_type, [hdr_len, gso_size, start, offset])
    }

    #[test]
    fn a_tag_edit_moves_the_offsets_with_the_headers() {
        let h = VnetHdr::parse(&raw(HDR_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16), 65_000).unwrap();
        let pushed = h.shifted(4).unwrap();
        assert_eq!((pushed.csum.unwrap().start, pushed.gso.unwrap().hdr_len), (38, 58));
        assert_eq!(pushed.shifted(-4), Some(h));
        assert_eq!(VnetHdr::default().shifted(-4), Some(VnetHdr::default()));
        let c = VnetHdr { csum: Some(PartialCsum { start: 2, offset: 6 }), ..VnetHdr::default() };
        assert_eq!(c.shifted(-4), None, "before the frame's start");
    }

    #[test]
    fn zero_header_is_plain() {
        let h = VnetHdr::parse(&[0; 10], 64).unwrap();
        assert!(h.is_plain());
        assert_eq!(h.to_bytes(), [0; 10]);
        assert_eq!(h.action_for(0), Action::AsIs);
    }

    #[test]
    fn tso4_round_trips_and_picks_an_action() {
        let b = raw(HDR_F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 54, 1448, 34, 16);
        let h = VnetHdr::parse(&b, 65_000).unwrap();
        assert_eq!(h.gso, Some(Gso { kind: GsoKind::Tcp4, size: 1448, hdr_len: 54, ecn: true }));
        assert_eq!(h.csum, Some(PartialCsum { start: 34, offset: 16 }));
        assert_eq!(h.to_bytes(), b);
        assert_eq!(h.action_for(0), Action::Segment);
        assert_eq!(h.action_for(VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_CSUM), Action::Segment);
        assert_eq!(h.action_for(VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_CSUM), Action::AsIs);
        let c = VnetHdr::parse(&raw(HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6), 100).unwrap();
        assert_eq!(c.action_for(VIRTIO_NET_F_GUEST_TSO4), Action::FinishCsum);
        assert_eq!(c.action_for(VIRTIO_NET_F_GUEST_CSUM), Action::AsIs);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let n = HDR_F_NEEDS_CSUM;
        let cases = [
            (raw(0x80, 0, 0, 0, 0, 0), HdrError::Flags(0x80)),
            (raw(HDR_F_RSC_INFO, 0, 0, 0, 0, 0), HdrError::Flags(HDR_F_RSC_INFO)),
            (raw(n, 0, 0, 0, 99, 0), HdrError::CsumPlace { start: 99, offset: 0, frame_len: 100 }),
            (raw(n, 0, 0, 0, 90, 9), HdrError::CsumPlace { start: 90, offset: 9, frame_len: 100 }),
            (
                raw(n, 0, 0, 0, u16::MAX, u16::MAX),
                HdrError::CsumPlace { start: u16::MAX, offset: u16::MAX, frame_len: 100 },
            ),
            (raw(n, GSO_UDP, 42, 8, 34, 6), HdrError::GsoType(GSO_UDP)),
            (raw(n, GSO_UDP_L4, 42, 8, 34, 6), HdrError::GsoType(GSO_UDP_L4)),
            (raw(n, 0x42, 42, 8, 34, 6), HdrError::GsoType(0x42)),
            (raw(n, GSO_ECN, 0, 0, 34, 6), HdrError::GsoType(GSO_ECN)),
            (raw(0, GSO_TCPV4, 54, 8, 34, 16), HdrError::GsoWithoutCsum(GSO_TCPV4)),
            (raw(n, GSO_TCPV4, 54, 0, 34, 16), HdrError::GsoSize { size: 0, frame_len: 100 }),
            (raw(n, GSO_TCPV6, 74, 100, 54, 16), HdrError::GsoSize { size: 100, frame_len: 100 }),
            (raw(n, GSO_TCPV4, 101, 8, 34, 16), HdrError::HdrLen { hdr_len: 101, frame_len: 100 }),
        ];
        for (b, want) in cases {
            assert_eq!(VnetHdr::parse(&b, 100), Err(want), "{b:?}");
            assert!(!want.to_string().is_empty());
        }
        // Every header, whatever its bytes, parses or fails without a panic.
        for seed in 0u32..20_000 {
            let mut b = [0u8; 10];
            let mut x = seed.wrapping_mul(2_654_435_761);
            for v in &mut b {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *v = x as u8;
            }
            let _ = VnetHdr::parse(&b, (seed % 200) as usize);
        }
    }
}
