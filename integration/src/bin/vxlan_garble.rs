// vxlan_garble: sends VXLAN packets that are wrong on purpose, one kind after another,
// from a raw AF_PACKET socket on an interface, so the tests can check that a VTEP drops
// and counts each for its reason; then good ones, which must still get through.
//! A generator of bad VXLAN packets (written apart from fastpath's encapsulation).

use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Context, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use integration::GARBLE_CASES as CASES;
use nix::sys::socket::{
    recvfrom, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrStorage,
};

/// Where the packets go.
struct Target {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    vni: u32,
}

fn sum16(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for w in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A good VXLAN packet to `t`, carrying a 64-byte broadcast frame of EtherType 0x88b5.
fn good(t: &Target, vni: u32, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut inner = vec![0xff; 6];
    inner.extend_from_slice(&[0x02, 0x99, 0, 0, 0, 1, 0x88, 0xb5]);
    inner.resize(64, 0x5a);
    let udp_len = 8 + 8 + inner.len();
    let mut p = Vec::with_capacity(14 + 20 + udp_len);
    p.extend_from_slice(&t.dst_mac);
    p.extend_from_slice(&t.src_mac);
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0]);
    p[16..18].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    p.extend_from_slice(&t.src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&54321u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x08, 0, 0, 0]);
    p.extend_from_slice(&vni.to_be_bytes()[1..]);
    p.push(0);
    p.extend_from_slice(&inner);
    set_checksum(&mut p);
    p
}

fn set_checksum(p: &mut [u8]) {
    p[24..26].copy_from_slice(&[0, 0]);
    let c = sum16(&p[14..34]);
    p[24..26].copy_from_slice(&c.to_be_bytes());
}

/// The packet of case `c`.
fn packet(t: &Target, c: &str) -> Result<Vec<u8>> {
    let mut p = good(t, t.vni, t.dst, 4789);
    match c {
        "good" => {}
        "short" => p.truncate(40),
        "garbled" => {
            p[14] = 0x65; // IP version 6 in an IPv4 frame
            set_checksum(&mut p);
        }
        "bad-checksum" => p[24] ^= 0xa5,
        "fragment" => {
            p[20] = 0x20; // more fragments
            set_checksum(&mut p);
        }
        "not-ours" => {
            let mut o = t.dst.octets();
            o[3] = o[3].wrapping_add(100);
            p = good(t, t.vni, Ipv4Addr::from(o), 4789);
        }
        "not-4789" => p = good(t, t.vni, t.dst, 4790),
        "no-i-flag" => p[42] = 0,
        "wrong-vni" => p = good(t, t.vni ^ 1, t.dst, 4789),
        _ => bail!("no case '{c}' (cases: good and {})", CASES.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")),
    }
    Ok(p)
}

/// A raw socket that sends on `ifname`, and the interface's link address: taken from a
/// frame seen going out there, a datagram this sends to `peer` (on `ifname`'s subnet) or
/// the kernel's ARP request for it.
fn packet_socket(peer: Ipv4Addr) -> Result<(OwnedFd, SockaddrStorage)> {
    let fd = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_NONBLOCK, SockProtocol::EthAll)
        .context("AF_PACKET socket (needs CAP_NET_RAW)")?;
    let udp = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    let p = peer.octets();
    while Instant::now() < deadline {
        let _ = udp.send_to(b"vxlan_garble", (peer, 9));
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            match recvfrom::<SockaddrStorage>(fd.as_raw_fd(), &mut buf) {
                Ok((n, Some(l))) if n >= 42 => {
                    let f = &buf[..n];
                    let ours = f[12..14] == [8, 0] && f[30..34] == p && f[36..38] == [0, 9];
                    let arp = f[12..14] == [8, 6] && f[38..42] == p;
                    if ours || arp {
                        return Ok((fd, l));
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    bail!("no frame to {peer} seen within 5 s (to learn the interface's link address)")
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| anyhow!("'{s}' is not a MAC"))
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 9 {
        eprintln!("usage: vxlan_garble IFNAME DST_MAC SRC_IP DST_IP VNI COUNT CASE[,CASE...] GOOD_AFTER");
        eprintln!("cases: {}", CASES.iter().map(|c| format!("{} ({})", c.0, c.1)).collect::<Vec<_>>().join(", "));
        std::process::exit(2);
    }
    let ifname = &a[1];
    let (fd, link) = packet_socket(a[4].parse().context("DST_IP")?)?;
    let src_mac = parse_mac(
        std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
            .with_context(|| format!("no interface {ifname}"))?
            .trim(),
    )?;
    let t = Target {
        src_mac,
        dst_mac: parse_mac(&a[2])?,
        src: a[3].parse().context("SRC_IP")?,
        dst: a[4].parse().context("DST_IP")?,
        vni: a[5].parse().context("VNI")?,
    };
    let count: u64 = a[6].parse().context("COUNT")?;
    let good_after: u64 = a[8].parse().context("GOOD_AFTER")?;
    let mut sent = serde_json::Map::new();
    let cases: Vec<&str> = a[7].split(',').chain(std::iter::repeat_n("good", usize::from(good_after > 0))).collect();
    for c in cases {
        let p = packet(&t, c)?;
        let n = if c == "good" { good_after } else { count };
        for _ in 0..n {
            sendto(fd.as_raw_fd(), &p, &link, MsgFlags::empty())
                .with_context(|| format!("sending case {c} on {ifname}"))?;
        }
        sent.insert(c.into(), n.into());
    }
    println!("{}", serde_json::Value::Object(sent));
    Ok(())
}
