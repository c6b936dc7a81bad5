// The Internet checksum (RFC 1071) as TCP, UDP and IPv4 use it: sums, pseudo-headers,
// and finishing a partial checksum a virtio-net header asked for (NEEDS_CSUM).
//! Internet checksums.

use crate::vnet_hdr::PartialCsum;

/// Where UDP's checksum sits in its header: a UDP checksum that comes out 0 is sent
/// as 0xffff (0 means "none").
const UDP_CSUM_OFFSET: u16 = 6;

/// Adds `data`, as big-endian 16-bit words (an odd last byte padded with zero), to
/// the running sum `acc`. Split a region only at even lengths.
///
/// The words are summed in the machine's byte order, 8 bytes at a time, and the folded
/// sum turned to big-endian at the end: the ones' complement sum does not depend on the
/// byte order but for a swap of its two bytes (RFC 1071, 2(B)). Folded, the result is the
/// same as a big-endian word-by-word sum's.
#[inline]
pub fn add(data: &[u8], acc: u64) -> u64 {
    let mut sum = 0u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // Two 32-bit halves: 2^32 is 1 modulo 0xffff, like 2^16. Under 2^33 a step, so
        // no slice shorter than 2^33 bytes can carry out of the 64 bits.
        sum += (x & 0xffff_ffff) + (x >> 32);
    }
    let rest = words.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let x = u64::from_ne_bytes(tail);
    sum += (x & 0xffff_ffff) + (x >> 32);
    let folded = fold(sum);
    let big_endian = if cfg!(target_endian = "little") { folded.swap_bytes() } else { folded };
    acc + u64::from(big_endian)
}

/// Folds a running sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The running sum of an IPv4 or IPv6 pseudo-header (the addresses `src` and `dst`,
/// 4 or 16 bytes) for `len` bytes of protocol (next header) `proto`.
#[inline]
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u64 {
    add(dst, add(src, 0)) + u64::from(proto) + u64::from(len)
}

/// The checksum to store for a region whose running sum (checksum field zero) is `acc`.
#[inline]
pub fn complement(acc: u64) -> u16 {
    !fold(acc)
}

/// Finishes a partial checksum in place: the field at `c.start + c.offset` holds the
/// pseudo-header's folded sum (as Linux leaves it); the sum of everything from
/// `c.start` to the end goes there, complemented. Returns false, touching nothing,
/// when the field is not inside `frame`.
pub fn finish(frame: &mut [u8], c: PartialCsum) -> bool {
    let (start, at) = (usize::from(c.start), usize::from(c.start) + usize::from(c.offset));
    if at + 2 > frame.len() {
        return false;
    }
    let mut sum = complement(add(&frame[start..], 0));
    if sum == 0 && c.offset == UDP_CSUM_OFFSET {
        sum = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The big-endian word-by-word sum, as RFC 1071 writes it.
    fn add_by_words(data: &[u8], mut acc: u64) -> u64 {
        for w in data.chunks(2) {
            acc += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        acc
    }

    #[test]
    fn the_wide_sum_folds_to_the_word_by_word_sum() {
        let mut x = 0x9e37_79b9_u32;
        for len in (0..200).chain([1499, 1500, 9000, 65_000]) {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            for acc in [0u64, 1, 0xffff, 0x1_2345_6789] {
                assert_eq!(fold(add(&data, acc)), fold(add_by_words(&data, acc)), "len {len} acc {acc:#x}");
            }
        }
        assert_eq!(add(&[], 7), 7);
        assert_eq!(fold(add(&[0xff; 64], 0)), 0xffff);
    }

    /// RFC 1071 word by word, folding at each step: the reference the tests trust.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let w = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
            s += w;
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn sums_match_the_reference() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 7, 20, 63, 64, 1499, 2000] {
            assert_eq!(complement(add(&data[..len], 0)), reference(&data[..len]), "{len}");
        }
        assert_eq!(complement(add(&[0xff; 4096], 0)), reference(&[0xff; 4096]));
        // RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(fold(add(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)), 0xddf2);
    }

    #[test]
    fn a_known_ipv4_header_checks() {
        // The IPv4 header of Wikipedia's checksum example: checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00,
            0xc7,
        ];
        assert_eq!(complement(add(&h, 0)), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(complement(add(&h, 0)), 0);
    }

    #[test]
    fn finish_fills_a_partial_udp_checksum() {
        // 20-byte IPv4 header, then UDP 10.0.0.1:1000 -> 10.0.0.2:2000 with 5 bytes.
        let mut f = vec![0u8; 20];
        f[12..16].copy_from_slice(&[10, 0, 0, 1]);
        f[16..20].copy_from_slice(&[10, 0, 0, 2]);
        f.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0d, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        let pseudo = fold(pseudo(&f[12..16], &f[16..20], 17, 13));
        f[26..28].copy_from_slice(&pseudo.to_be_bytes());
        assert!(finish(&mut f, PartialCsum { start: 20, offset: 6 }));
        let mut check = f[12..20].to_vec();
        check.extend_from_slice(&[0, 17, 0, 13]);
        check.extend_from_slice(&f[20..]);
        assert_eq!(reference(&check), 0, "{f:02x?}");
        assert!(!finish(&mut f, PartialCsum { start: 30, offset: 2 }));
        assert!(!finish(&mut f, PartialCsum { start: u16::MAX, offset: u16::MAX }));
    }
}
