// A VXLAN port in a switch, over an in-process uplink: decapsulation to a local port,
// learning and ageing, unicast and head-end replication, every bad input counted, the
// MTU, ARP for the next hop and for the local VTEP.
//! VXLAN port tests.

use super::*;
use crate::config::PortConfig;
use crate::port::loopback::{Loopback, LoopbackPeer};
use crate::switch::{NewPort, Switch};

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const R1: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const R2: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);
const OUR_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const R1_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const HOP: Mac = [0x02, 0, 0, 0, 0, 0xee];
const LOCAL_APP: Mac = [0x02, 0xaa, 0, 0, 0, 1];
const REMOTE_APP: Mac = [0x02, 0xbb, 0, 0, 0, 1];

struct Bench {
    sw: Switch,
    wire: LoopbackPeer,
    app: LoopbackPeer,
}

fn settings(next_hop_mac: Option<Mac>, mtu: usize) -> VxlanSettings {
    VxlanSettings { vni: 42, local: LOCAL, remotes: vec![R1, R2], next_hop_mac, mac: OUR_MAC, mtu }
}

/// A switch with a vxlan port (over an in-process wire) and a local app port.
fn bench(s: VxlanSettings) -> Bench {
    let mut sw = Switch::new(&["br0".into()], 300);
    let (up, wire) = Loopback::new();
    let (c, app) = Loopback::new();
    let vx = VxlanPort::over(Box::new(up), s);
    sw.add_port(NewPort::with(PortConfig::new("vx", "br0", "/x/vx"), Box::new(vx))).unwrap();
    sw.add_port(NewPort::with(PortConfig::new("c", "br0", "/x/c"), Box::new(c))).unwrap();
    Bench { sw, wire, app }
}

fn inner(dst: Mac, src: Mac, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// `inner` encapsulated by the VTEP `from` (MAC `from_mac`) for `to`, VNI `vni`.
fn outer(inner: &[u8], from: Ipv4Addr, from_mac: Mac, to: Ipv4Addr, vni: u32) -> Vec<u8> {
    let mut h = [0u8; ENCAP_LEN];
    Outer { mac: from_mac, local: from, vni }.write(&mut h, &OUR_MAC, to, inner.len(), 1, 50000);
    let mut p = h.to_vec();
    p.extend_from_slice(inner);
    p
}

fn counter(sw: &Switch, name: &str) -> u64 {
    let info = sw.list().into_iter().find(|p| p.name == "vx").unwrap();
    info.kind_counters.iter().find(|(n, _)| n == name).map_or_else(|| panic!("no counter {name}"), |(_, v)| *v)
}

fn vx_counters(sw: &Switch) -> PortCounters {
    sw.list().into_iter().find(|p| p.name == "vx").unwrap().stats.counters
}

#[test]
fn decapsulated_frames_reach_the_bridge_and_answers_go_back_to_the_learned_vtep() {
    let mut b = bench(settings(None, 1500));
    let from_r1 = inner(LOCAL_APP, REMOTE_APP, 100);
    b.wire.send(&outer(&from_r1, R1, R1_MAC, LOCAL, 42));
    b.sw.poll_once();
    assert_eq!(b.app.take_delivered(), [from_r1], "the inner frame, intact");
    // The answer goes to R1 only, through the MAC R1's packet came from.
    let back = inner(REMOTE_APP, LOCAL_APP, 200);
    b.app.send(&back);
    b.sw.poll_once();
    let mut out = b.wire.take_delivered();
    let asked = out.len();
    out.retain(|f| f[12..14] != [0x08, 0x06]);
    assert_eq!(asked - out.len(), 2, "at its first poll the port asked ARP for both remotes");
    assert_eq!(out.len(), 1, "unicast to the learned VTEP");
    let d = header::decap(&out[0], R1, 42).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(&out[0][d.offset..d.offset + d.len], &back[..]);
    assert_eq!((&out[0][0..6], &out[0][6..12]), (&R1_MAC[..], &OUR_MAC[..]));
    assert_eq!(d.vtep, LOCAL);
    let c = vx_counters(&b.sw);
    assert_eq!((c.rx_packets, c.tx_packets, c.tx_bytes), (1, 1, 200));
}

#[test]
fn broadcast_and_unknown_unicast_go_to_every_remote_vtep() {
    let mut b = bench(settings(Some(HOP), 1500));
    b.app.send(&inner([0xff; 6], LOCAL_APP, 60));
    b.app.send(&inner(REMOTE_APP, LOCAL_APP, 60));
    b.sw.poll_once();
    let out = b.wire.take_delivered();
    let to: Vec<Ipv4Addr> = out.iter().map(|p| Ipv4Addr::new(p[30], p[31], p[32], p[33])).collect();
    assert_eq!(to, [R1, R2, R1, R2], "head-end replication, in order");
    assert!(out.iter().all(|p| p[0..6] == HOP), "the static next hop");
    assert_eq!(vx_counters(&b.sw).tx_packets, 4);
}

/// A vxlan port alone over an in-process wire, driven by hand.
fn port(s: VxlanSettings) -> (VxlanPort, LoopbackPeer) {
    let (up, wire) = Loopback::new();
    (VxlanPort::over(Box::new(up), s), wire)
}

/// Sends `frames` out of `p` (as the switch would, from a local port).
fn send(p: &mut VxlanPort, frames: &[Vec<u8>]) {
    let bufs: Vec<FrameBuf> = frames
        .iter()
        .map(|f| {
            let mut b = FrameBuf::with_capacity(f.len());
            b.fill_from(f);
            b
        })
        .collect();
    let picks: Vec<u8> = (0..frames.len() as u8).collect();
    p.send(&Frames::Local(&bufs), &picks);
}

/// Takes what came in from the wire through `p`.
fn receive(p: &mut VxlanPort) -> Vec<Vec<u8>> {
    p.poll();
    let n = p.recv();
    let f = p.frames();
    let out = (0..n)
        .map(|i| {
            let mut v = vec![0; f.get(i).len() as usize];
            f.get(i).read_all(&mut v);
            v
        })
        .collect();
    if n > 0 {
        p.release();
    }
    out
}

#[test]
fn remote_macs_age_out_and_are_flooded_again() {
    let (mut p, wire) = port(settings(Some(HOP), 1500));
    wire.send(&outer(&inner(LOCAL_APP, REMOTE_APP, 64), R2, R1_MAC, LOCAL, 42));
    assert_eq!(receive(&mut p).len(), 1);
    let to_remote = vec![inner(REMOTE_APP, LOCAL_APP, 64)];
    send(&mut p, &to_remote);
    assert_eq!(wire.take_delivered().len(), 1, "learned: R2 only");
    p.advance(REMOTE_MAC_AGE);
    send(&mut p, &to_remote);
    assert_eq!(wire.take_delivered().len(), 1, "still fresh at the age");
    p.advance(1);
    send(&mut p, &to_remote);
    assert_eq!(wire.take_delivered().len(), 2, "aged out: to every remote again");
}

#[test]
fn every_bad_packet_is_dropped_and_counted_for_its_reason_and_traffic_goes_on() {
    let mut b = bench(settings(Some(HOP), 1500));
    let good = outer(&inner(LOCAL_APP, REMOTE_APP, 80), R1, R1_MAC, LOCAL, 42);
    let fix = |p: &mut Vec<u8>| {
        p[24..26].copy_from_slice(&[0, 0]);
        let c = header::checksum(&p[14..34]);
        p[24..26].copy_from_slice(&c.to_be_bytes());
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("rx_short", good[..10].to_vec()),
        ("rx_short", good[..40].to_vec()),
        ("rx_garbled", {
            let mut p = good.clone();
            p[14] = 0x46 - 0x10;
            fix(&mut p);
            p
        }),
        ("rx_bad_checksum", {
            let mut p = good.clone();
            p[25] ^= 0x5a;
            p
        }),
        ("rx_fragment", {
            let mut p = good.clone();
            p[20] = 0x20;
            fix(&mut p);
            p
        }),
        ("rx_not_our_vtep", outer(&inner(LOCAL_APP, REMOTE_APP, 80), R1, R1_MAC, R2, 42)),
        ("rx_not_udp_4789", {
            let mut p = good.clone();
            p[36..38].copy_from_slice(&8472u16.to_be_bytes());
            p
        }),
        ("rx_no_i_flag", {
            let mut p = good.clone();
            p[42] = 0;
            p
        }),
        ("rx_wrong_vni", outer(&inner(LOCAL_APP, REMOTE_APP, 80), R1, R1_MAC, LOCAL, 43)),
        ("rx_not_ipv4", {
            let mut p = good.clone();
            p[12..14].copy_from_slice(&[0x86, 0xdd]);
            p
        }),
    ];
    for (_, p) in &bad {
        b.wire.send(p);
    }
    b.wire.send(&good);
    b.sw.poll_once();
    assert_eq!(b.app.take_delivered().len(), 1, "only the good one, after all the bad ones");
    for reason in Reject::ALL {
        let want = bad.iter().filter(|(n, _)| *n == reason.label()).count() as u64;
        assert_eq!(counter(&b.sw, reason.label()), want, "{}", reason.label());
    }
    assert_eq!(vx_counters(&b.sw).rx_packets, 1);
}

#[test]
fn a_frame_too_big_once_encapsulated_is_dropped_and_counted() {
    let mut b = bench(settings(Some(HOP), 1500));
    b.app.send(&inner([0xff; 6], LOCAL_APP, 1464)); // 1464 + 36 = 1500: fits
    b.app.send(&inner([0xff; 6], LOCAL_APP, 1465)); // 1501 > 1500
    b.sw.poll_once();
    let out = b.wire.take_delivered();
    assert_eq!(out.len(), 2, "the one that fits, to both remotes");
    assert!(out.iter().all(|p| p.len() == 1464 + ENCAP_LEN));
    assert_eq!(counter(&b.sw, "tx_too_big"), 1);
    let c = vx_counters(&b.sw);
    assert_eq!((c.drop_too_big, c.tx_dropped), (1, 1));
}

#[test]
fn the_next_hop_is_asked_with_arp_and_the_local_vtep_answers_arp() {
    let (mut p, wire) = port(settings(None, 1500));
    // At the first poll, every remote is asked for.
    p.poll();
    let asked = wire.take_delivered();
    assert_eq!(asked.len(), 2, "an ARP request per remote VTEP");
    p.poll();
    assert!(wire.take_delivered().is_empty(), "once a second only");
    // Nothing known yet: the frame is dropped, and counted.
    send(&mut p, &[inner([0xff; 6], LOCAL_APP, 60)]);
    assert!(wire.take_delivered().is_empty());
    assert_eq!(p.vxlan_counters().tx_no_next_hop, 2);
    let a = arp::parse(&asked[0]).unwrap();
    assert_eq!((a.request, a.spa, a.tpa, a.sha), (true, LOCAL, R1, OUR_MAC));
    p.every_second();
    assert_eq!(wire.take_delivered().len(), 2, "asked again a second later");
    p.advance(1);
    p.poll();
    assert_eq!(wire.take_delivered().len(), 2, "and at once when a frame wanted them");
    // R1 answers; R2 asks who has our address (and so is heard too).
    let mut reply = [0u8; 64];
    let n = arp::write(&mut reply, &R1_MAC, R1, Some(OUR_MAC), LOCAL);
    wire.send(&reply[..n]);
    let mut req = [0u8; 64];
    let n = arp::write(&mut req, &HOP, R2, None, LOCAL);
    wire.send(&req[..n]);
    assert!(receive(&mut p).is_empty(), "ARP is the port's, not the bridge's");
    let answer = wire.take_delivered();
    assert_eq!(answer.len(), 1, "R2's request answered");
    let a = arp::parse(&answer[0]).unwrap();
    assert_eq!((a.request, a.sha, a.spa, a.tpa), (false, OUR_MAC, LOCAL, R2));
    assert_eq!(&answer[0][0..6], &HOP);
    let c = p.vxlan_counters();
    assert_eq!((c.arp_in, c.arp_replies, c.arp_requests), (2, 1, 6));
    send(&mut p, &[inner([0xff; 6], LOCAL_APP, 60)]);
    let out = wire.take_delivered();
    assert_eq!(out.iter().map(|p| p[0..6].to_vec()).collect::<Vec<_>>(), [R1_MAC.to_vec(), HOP.to_vec()]);
    p.every_second();
    assert!(wire.take_delivered().is_empty(), "resolved: no more requests");
}
