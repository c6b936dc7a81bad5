// Tests of software GSO: hand-built TCP frames cut and checked against an independent
// checksum and against what Linux's tcp_gso_segment makes of them.
//! Software GSO tests.

use super::*;

/// RFC 1071 word by word, folding at each step: the reference the tests trust.
fn ones(data: &[u8]) -> u32 {
    let mut s: u32 = 0;
    for pair in data.chunks(2) {
        s += u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

const SEQ: u32 = 0xffff_f000;
const FLAGS: u8 = 0x10 | TCP_PSH | TCP_FIN | TCP_CWR;

/// A GSO frame as Linux hands one to virtio-net: headers of the whole frame, the TCP
/// checksum field holding the pseudo-header's folded sum. Returns it with its header.
pub(crate) fn gso_frame(v6: bool, vlan: bool, payload: usize, mss: u16) -> (Vec<u8>, Gso, PartialCsum) {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    let ip = f.len() + 2;
    let tcp_len = 32 + payload;
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        f.extend_from_slice(&[IPPROTO_TCP, 64]);
        f.extend((0..32).map(|i: u8| 0xfd_u8.wrapping_add(i)));
    } else {
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, IPPROTO_TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    let tcp = f.len();
    f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x88]);
    f.extend_from_slice(&SEQ.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 9, 0x80, FLAGS, 0x01, 0xf5, 0, 0, 0, 0]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..payload).map(|i| (i * 31 + i / 251) as u8));
    let (src, dst) = if v6 { (ip + 8..ip + 24, ip + 24..ip + 40) } else { (ip + 12..ip + 16, ip + 16..ip + 20) };
    let pseudo = crate::csum::fold(crate::csum::pseudo(&f[src], &f[dst], IPPROTO_TCP, tcp_len as u32));
    f[tcp + 16..tcp + 18].copy_from_slice(&pseudo.to_be_bytes());
    let kind = if v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 };
    (f, Gso { kind, size: mss, hdr_len: (tcp + 32) as u16, ecn: false }, PartialCsum { start: tcp as u16, offset: 16 })
}

/// Cuts `f` and checks every segment as a receiver would, returning the payload.
fn cut_and_check(f: &[u8], gso: Gso, c: PartialCsum) -> Vec<Vec<u8>> {
    let s = Segments::new(f, gso, c).unwrap();
    let (tcp, mss) = (usize::from(c.start), usize::from(gso.size));
    let ip = if gso.kind == GsoKind::Tcp6 { tcp - 40 } else { tcp - 20 };
    let hdrs = tcp + 32;
    assert_eq!(s.count(), (f.len() - hdrs).div_ceil(mss));
    let mut out = vec![0u8; 70_000];
    let mut segs = Vec::new();
    for i in 0..s.count() {
        let len = s.write(i, &mut out).unwrap();
        assert_eq!(len, s.len(i));
        let g = &out[..len];
        let last = i + 1 == s.count();
        assert!(len - hdrs <= mss && (last || len - hdrs == mss), "segment {i}: {len}");
        assert_eq!(g[..ip], f[..ip], "MACs and tags unchanged");
        let (src, dst) = if gso.kind == GsoKind::Tcp6 {
            assert_eq!(usize::from(be16(g, ip + 4)), len - ip - 40);
            (ip + 8..ip + 24, ip + 24..ip + 40)
        } else {
            assert_eq!(usize::from(be16(g, ip + 2)), len - ip);
            assert_eq!(be16(g, ip + 4), 0x1234 + i as u16, "Linux increments the IP id");
            assert_eq!(ones(&g[ip..tcp]), 0xffff, "IPv4 header checksum of segment {i}");
            (ip + 12..ip + 16, ip + 16..ip + 20)
        };
        assert_eq!(be32(g, tcp + 4), SEQ.wrapping_add((i * mss) as u32));
        let want = if last { FLAGS & !TCP_CWR } else { FLAGS & !(TCP_FIN | TCP_PSH | TCP_CWR) };
        assert_eq!(g[tcp + 13], if i == 0 { want | (FLAGS & TCP_CWR) } else { want }, "flags of segment {i}");
        let mut pseudo = g[src].to_vec();
        pseudo.extend_from_slice(&g[dst]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&((len - tcp) as u32).to_be_bytes()[2..]);
        pseudo.extend_from_slice(&g[tcp..]);
        assert_eq!(ones(&pseudo), 0xffff, "TCP checksum of segment {i}");
        for r in [tcp + 8..tcp + 13, tcp + 14..tcp + 16, tcp + 18..hdrs] {
            assert_eq!(g[r.clone()], f[r], "ack, data offset, window, urgent pointer, options");
        }
        segs.push(g[hdrs..].to_vec());
    }
    assert_eq!(segs.concat(), f[hdrs..]);
    segs
}

#[test]
fn tcp4_64k_is_cut_like_linux() {
    let (f, gso, c) = gso_frame(false, false, 65_000, 1448);
    assert_eq!(cut_and_check(&f, gso, c).len(), 45);
}

#[test]
fn tcp6_behind_a_vlan_tag_is_cut() {
    let (f, gso, c) = gso_frame(true, true, 30_001, 1428);
    assert_eq!(cut_and_check(&f, gso, c).len(), 22);
}

#[test]
fn payload_in_one_segment_is_just_checksummed() {
    for (v6, payload) in [(false, 1), (false, 1000), (true, 1448)] {
        let (f, gso, c) = gso_frame(v6, false, payload, 1448);
        assert_eq!(cut_and_check(&f, gso, c).len(), 1);
    }
}

#[test]
fn finish_gives_the_checksum_the_segmenter_computes() {
    let (mut f, gso, c) = gso_frame(false, false, 1000, 1448);
    let mut out = vec![0u8; 2000];
    let n = Segments::new(&f, gso, c).unwrap().write(0, &mut out).unwrap();
    assert!(crate::csum::finish(&mut f, c));
    assert_eq!(f.len(), n);
    assert_eq!(f[34..], out[34..n], "the TCP segment (the frame's IPv4 checksum was left 0)");
}

#[test]
fn hostile_frames_are_refused() {
    let (f, gso, c) = gso_frame(false, false, 4000, 1000);
    for len in 0..f.len() {
        let r = Segments::new(&f[..len], gso, c);
        assert!(r.is_err() || len > 66, "{len}");
    }
    let with = |at: usize, v: u8| {
        let mut g = f.clone();
        g[at] = v;
        Segments::new(&g, gso, c).map(|s| s.count())
    };
    assert_eq!(with(12, 0x86), Err(GsoError::Ethertype { ethertype: 0x8600, kind: GsoKind::Tcp4 }));
    assert_eq!(with(14, 0x65), Err(GsoError::Ipv4));
    assert_eq!(with(14, 0x44), Err(GsoError::Ipv4));
    assert_eq!(with(20, 0x20), Err(GsoError::Ipv4), "more fragments");
    assert_eq!(with(23, 17), Err(GsoError::NotTcp(17)));
    assert_eq!(with(46, 0x40), Err(GsoError::TcpOffset(4)));
    assert_eq!(with(46, 0xf0).unwrap(), 4, "a longer TCP header is read as one");
    let moved = PartialCsum { start: c.start + 1, offset: 16 };
    assert_eq!(Segments::new(&f, gso, moved).unwrap_err(), GsoError::CsumPlace { start: 35, offset: 16, tcp: 34 });
    let v6 = Gso { kind: GsoKind::Tcp6, ..gso };
    assert!(matches!(Segments::new(&f, v6, c), Err(GsoError::Ethertype { .. })));
    let tiny = Gso { size: 1, ..gso };
    assert_eq!(Segments::new(&f, tiny, c).unwrap_err(), GsoError::Segments { payload: 4000, size: 1 });
    let zero = Gso { size: 0, ..gso };
    assert!(Segments::new(&f, zero, c).is_err());
    let (bare, _, _) = gso_frame(false, false, 0, 1000);
    assert_eq!(Segments::new(&bare, gso, c).unwrap_err(), GsoError::Segments { payload: 0, size: 1000 });
    // Too small an output buffer, or a segment past the last, writes nothing.
    let s = Segments::new(&f, gso, c).unwrap();
    let mut out = vec![0u8; s.len(0) - 1];
    assert_eq!(s.write(0, &mut out), None);
    assert_eq!(s.write(4, &mut vec![0u8; 2000]), None);
    assert_eq!(s.len(usize::MAX), 66);
    // Any byte of the headers changed to anything: an error or segments, never a panic.
    let mut out = vec![0u8; 2000];
    for at in 0..66 {
        for v in [0u8, 1, 0x0f, 0x45, 0x60, 0x86, 0xf0, 0xff] {
            let mut g = f.clone();
            g[at] = v;
            for kind in [GsoKind::Tcp4, GsoKind::Tcp6] {
                if let Ok(s) = Segments::new(&g, Gso { kind, ..gso }, c) {
                    for i in 0..s.count() {
                        assert!(s.write(i, &mut out).is_some());
                    }
                }
            }
        }
    }
}
