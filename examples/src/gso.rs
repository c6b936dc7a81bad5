// GSO test frames: one TCP/IPv4 frame of up to 64 KiB with the virtio-net header that
// asks whoever takes it to cut it into MSS-sized segments and checksum each one.
//! TCP/IPv4 GSO frames for a sender with transmit offloads.

use std::net::Ipv4Addr;

use netlib::vnet_hdr::{Gso, GsoKind, PartialCsum, VnetHdr};

/// Bytes of the frame's Ethernet, IPv4 and TCP headers.
pub const HEADERS: usize = 14 + 20 + 20;
/// Largest GSO frame we make (its IPv4 packet within 64 KiB, the frame in a pool's
/// largest buffer).
pub const MAX_GSO_FRAME: usize = 65400;
/// Most payload bytes per segment we ask for (a 9000-byte MTU's).
pub const MAX_MSS: u16 = 8960;

/// A GSO frame and the header that goes with it.
#[derive(Debug, Clone)]
pub struct GsoFrame {
    /// The whole frame: Ethernet, IPv4, TCP headers and the payload.
    pub bytes: Vec<u8>,
    /// Its virtio-net header: TCPv4 GSO of `mss`, the TCP checksum left to finish.
    pub hdr: VnetHdr,
}

impl GsoFrame {
    /// A frame of `size` bytes from `src` to `dst` (MACs), TCP from `ips.0` port 5001 to
    /// `ips.1` port 5001, cut into segments of `mss` payload bytes by whoever takes it.
    /// An error names the value that does not fit.
    pub fn new(size: usize, mss: u16, dst: [u8; 6], src: [u8; 6], ips: (Ipv4Addr, Ipv4Addr)) -> Result<Self, String> {
        if !(1..=MAX_MSS).contains(&mss) {
            return Err(format!("--gso-mss {mss} must be in 1..={MAX_MSS}"));
        }
        let min = HEADERS + usize::from(mss) + 1;
        if !(min..=MAX_GSO_FRAME).contains(&size) {
            return Err(format!(
                "--size {size} must be in {min}..={MAX_GSO_FRAME} for a GSO frame of more than one {mss}-byte segment"
            ));
        }
        let mut b = vec![0u8; size];
        b[0..6].copy_from_slice(&dst);
        b[6..12].copy_from_slice(&src);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((size - 14) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6; // TCP
        ip[12..16].copy_from_slice(&ips.0.octets());
        ip[16..20].copy_from_slice(&ips.1.octets());
        let sum = netlib::csum::complement(netlib::csum::add(&b[14..34], 0));
        b[24..26].copy_from_slice(&sum.to_be_bytes());
        let tcp = &mut b[34..54];
        tcp[0..2].copy_from_slice(&5001u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5001u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18; // PSH, ACK
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
        for (i, x) in b[HEADERS..].iter_mut().enumerate() {
            *x = i as u8;
        }
        let hdr = VnetHdr {
            csum: Some(PartialCsum { start: 34, offset: 16 }),
            data_valid: false,
            gso: Some(Gso { kind: GsoKind::Tcp4, size: mss, hdr_len: HEADERS as u16, ecn: false }),
        };
        Ok(Self { bytes: b, hdr })
    }

    /// How many segments the frame is cut into.
    pub fn segments(&self) -> usize {
        (self.bytes.len() - HEADERS).div_ceil(usize::from(self.hdr.gso.map_or(1, |g| g.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gso_frame_is_cut_by_netlib_into_checksummed_segments() {
        let ips = (Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 1));
        let f = GsoFrame::new(20_054, 1448, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], ips).unwrap();
        assert_eq!(&f.bytes[26..34], &[10, 0, 0, 9, 10, 0, 0, 1]);
        assert_eq!(f.segments(), 14);
        let (g, c) = (f.hdr.gso.unwrap(), f.hdr.csum.unwrap());
        let segs = netlib::gso::Segments::new(&f.bytes, g, c).unwrap();
        assert_eq!(segs.count(), 14);
        let mut out = vec![0u8; 2000];
        let n = segs.write(0, &mut out).unwrap();
        assert_eq!(n, HEADERS + 1448);
        // The IPv4 header checksum of the segment adds up to 0xffff (complemented 0).
        assert_eq!(netlib::csum::complement(netlib::csum::add(&out[14..34], 0)), 0);
    }

    #[test]
    fn bad_sizes_name_the_flag_and_the_value() {
        let ips = (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
        let e = GsoFrame::new(100, 1448, [0; 6], [0; 6], ips).unwrap_err();
        assert!(e.contains("--size 100"), "{e}");
        let e = GsoFrame::new(70_000, 1448, [0; 6], [0; 6], ips).unwrap_err();
        assert!(e.contains("--size 70000"), "{e}");
        let e = GsoFrame::new(2000, 0, [0; 6], [0; 6], ips).unwrap_err();
        assert!(e.contains("--gso-mss 0"), "{e}");
    }
}
