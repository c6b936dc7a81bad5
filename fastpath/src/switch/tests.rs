// The switch's data plane without sockets: loopback ports on its bridges, frames
// injected by hand. Learning, flooding, ageing, full rings, faults, 64 ports, VLANs,
// captures and mirrors.
//! Switch tests.

use super::*;
use crate::port::loopback::{Loopback, LoopbackPeer};

fn cfg(name: &str, bridge: &str) -> PortConfig {
    PortConfig::new(name, bridge, format!("/loopback/{name}"))
}

/// A switch with bridges br0 and br1, and loopback ports `names` on br0.
fn switch_with(names: &[&str]) -> (Switch, Vec<LoopbackPeer>) {
    let mut sw = Switch::new(&["br0".into(), "br1".into()], 300);
    let peers = names.iter().map(|n| add(&mut sw, n, "br0")).collect();
    (sw, peers)
}

fn add(sw: &mut Switch, name: &str, bridge: &str) -> LoopbackPeer {
    let (port, peer) = Loopback::new();
    sw.add_port(NewPort::with(cfg(name, bridge), Box::new(port))).unwrap();
    peer
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// An Ethernet frame from MAC `src` to `dst`, `len` bytes, tagged with `tag` after the header.
fn frame(dst: [u8; 6], src: [u8; 6], tag: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14] = tag;
    f
}

const BCAST: [u8; 6] = [0xff; 6];

fn run(sw: &mut Switch) {
    for _ in 0..8 {
        sw.poll_once();
    }
}

fn stats(sw: &Switch, name: &str) -> netlib::PortCounters {
    sw.list().into_iter().find(|p| p.name == name).expect("port listed").stats.counters
}

#[test]
fn unknown_destination_floods_then_learned_one_goes_to_its_port_alone() {
    let (mut sw, p) = switch_with(&["a", "b", "c"]);
    p[0].send(&frame(mac(2), mac(1), 1, 60));
    run(&mut sw);
    assert!(p[0].take_delivered().is_empty(), "a frame never goes back to its sender");
    assert_eq!(p[1].take_delivered(), vec![frame(mac(2), mac(1), 1, 60)]);
    assert_eq!(p[2].take_delivered(), vec![frame(mac(2), mac(1), 1, 60)]);
    // b answers: a was learned, so only a gets it; now b is learned too.
    p[1].send(&frame(mac(1), mac(2), 2, 60));
    run(&mut sw);
    assert_eq!(p[0].take_delivered(), vec![frame(mac(1), mac(2), 2, 60)]);
    assert!(p[2].take_delivered().is_empty());
    p[0].send(&frame(mac(2), mac(1), 3, 100));
    run(&mut sw);
    assert_eq!(p[1].take_delivered(), vec![frame(mac(2), mac(1), 3, 100)]);
    assert!(p[2].take_delivered().is_empty());
    let a = stats(&sw, "a");
    assert_eq!((a.rx_packets, a.rx_bytes, a.tx_packets), (2, 160, 1));
    let listed = sw.list();
    let a_macs = &listed.iter().find(|p| p.name == "a").unwrap().macs;
    assert_eq!(a_macs, &vec!["02:00:00:00:00:01".to_string()]);
}

#[test]
fn broadcast_reaches_every_other_member_and_no_other_bridge() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    let other = add(&mut sw, "x", "br1");
    p[0].send(&frame(BCAST, mac(1), 1, 60));
    run(&mut sw);
    assert_eq!(p[1].take_delivered().len(), 1);
    assert!(p[0].take_delivered().is_empty());
    assert!(other.take_delivered().is_empty(), "bridges are separate");
}

#[test]
fn frames_keep_their_order_and_bursts_larger_than_one_are_whole() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    p[1].send(&frame(mac(1), mac(2), 0, 60));
    run(&mut sw);
    for i in 0..100u8 {
        p[0].send(&frame(mac(2), mac(1), i, 60 + usize::from(i)));
    }
    run(&mut sw);
    let got = p[1].take_delivered();
    assert_eq!(got.len(), 100);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(mac(2), mac(1), i as u8, 60 + i), "frame {i}");
    }
}

#[test]
fn a_destination_on_the_same_port_is_filtered_and_counted() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    p[0].send(&frame(BCAST, mac(1), 0, 60));
    p[0].send(&frame(BCAST, mac(3), 0, 60));
    run(&mut sw);
    p[1].take_delivered();
    // mac(3) lives behind a too: a frame from a to it stays there.
    p[0].send(&frame(mac(3), mac(1), 1, 60));
    run(&mut sw);
    assert!(p[1].take_delivered().is_empty());
    assert_eq!(stats(&sw, "a").drop_filtered, 1);
}

#[test]
fn runt_frames_are_errors_not_forwarded() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    p[0].send(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    run(&mut sw);
    assert!(p[1].take_delivered().is_empty());
    let a = stats(&sw, "a");
    assert_eq!((a.rx_errors, a.rx_packets), (1, 0));
}

#[test]
fn entries_age_out_and_the_destination_is_flooded_again() {
    let mut sw = Switch::new(&["br0".into()], 5);
    let p: Vec<_> = ["a", "b", "c"].iter().map(|n| add(&mut sw, n, "br0")).collect();
    p[1].send(&frame(mac(1), mac(2), 0, 60));
    run(&mut sw);
    p[0].take_delivered();
    p[2].take_delivered();
    p[0].send(&frame(mac(2), mac(1), 1, 60));
    run(&mut sw);
    assert!(p[2].take_delivered().is_empty(), "b is known");
    for _ in 0..6 {
        sw.tick_second();
    }
    p[0].send(&frame(mac(2), mac(1), 2, 60));
    run(&mut sw);
    assert_eq!(p[2].take_delivered().len(), 1, "b aged out: flooded again");
    assert_eq!(p[1].take_delivered().len(), 2);
}

#[test]
fn a_full_destination_drops_and_counts_on_its_own_port_only() {
    let (mut sw, p) = switch_with(&["a", "b", "c"]);
    for (i, peer) in p.iter().enumerate() {
        peer.send(&frame(BCAST, mac(i as u8 + 1), 0, 60));
    }
    run(&mut sw);
    for peer in &p {
        peer.take_delivered();
    }
    p[1].set_room(3);
    for i in 0..10 {
        p[0].send(&frame(mac(2), mac(1), i, 60));
        p[0].send(&frame(mac(3), mac(1), i, 60));
    }
    run(&mut sw);
    assert_eq!(p[1].take_delivered().len(), 3);
    assert_eq!(p[2].take_delivered().len(), 10, "c is not held back by b");
    let b = stats(&sw, "b");
    // b took the two announcements earlier, then 3 of a's 10.
    assert_eq!((b.drop_ring_full, b.tx_dropped, b.tx_packets), (7, 7, 5));
    assert_eq!(stats(&sw, "c").tx_dropped, 0);
}

#[test]
fn a_frame_too_big_for_the_destination_is_dropped_and_counted() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    p[1].set_max_frame(100);
    p[0].send(&frame(BCAST, mac(1), 0, 101));
    p[0].send(&frame(BCAST, mac(1), 1, 100));
    run(&mut sw);
    assert_eq!(p[1].take_delivered(), vec![frame(BCAST, mac(1), 1, 100)]);
    assert_eq!(stats(&sw, "b").drop_too_big, 1);
}

#[test]
fn a_faulting_port_resets_alone_its_macs_are_forgotten_and_it_comes_back() {
    let (mut sw, p) = switch_with(&["a", "b", "c"]);
    for (i, peer) in p.iter().enumerate() {
        peer.send(&frame(BCAST, mac(i as u8 + 1), 0, 60));
    }
    run(&mut sw);
    for peer in &p {
        peer.take_delivered();
    }
    p[1].inject_fault("descriptor outside memory");
    p[1].send(&frame(mac(1), mac(2), 9, 60));
    run(&mut sw);
    let listed = sw.list();
    let b = listed.iter().find(|p| p.name == "b").unwrap();
    assert!(!b.stats.link_up);
    assert_eq!(b.stats.counters.resets, 1);
    assert_eq!(b.last_fault.as_deref(), Some("descriptor outside memory"));
    assert!(b.macs.is_empty(), "the bridge forgot b's MAC");
    // a and c still talk.
    p[0].send(&frame(mac(3), mac(1), 1, 60));
    run(&mut sw);
    assert_eq!(p[2].take_delivered().len(), 1);
    // b's MAC is unknown now: a frame to it floods (to c; b is down and drops it).
    p[0].send(&frame(mac(2), mac(1), 2, 60));
    run(&mut sw);
    assert_eq!(p[2].take_delivered().len(), 1);
    assert!(p[1].take_delivered().is_empty());
    // b's peer comes back: traffic resumes.
    p[1].set_link(true);
    run(&mut sw);
    p[0].send(&frame(mac(2), mac(1), 3, 60));
    run(&mut sw);
    assert_eq!(p[1].take_delivered(), vec![frame(mac(2), mac(1), 3, 60)]);
}

#[test]
fn sixty_four_ports_each_reach_every_other() {
    let names: Vec<String> = (0..MAX_PORTS).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut sw, p) = switch_with(&refs);
    let err = sw.check_new(&cfg("one-more", "br0")).unwrap_err();
    assert_eq!(err, SwitchError::Full(MAX_PORTS));
    // Everyone announces itself (a broadcast reaches the 63 others), then sends one
    // frame to each other port by MAC.
    for (i, peer) in p.iter().enumerate() {
        peer.send(&frame(BCAST, mac(i as u8), 0, 60));
    }
    run(&mut sw);
    for peer in &p {
        assert_eq!(peer.take_delivered().len(), MAX_PORTS - 1);
    }
    for (i, peer) in p.iter().enumerate() {
        for j in 0..MAX_PORTS {
            if j != i {
                peer.send(&frame(mac(j as u8), mac(i as u8), i as u8, 64));
            }
        }
    }
    for _ in 0..8 {
        run(&mut sw);
    }
    for (j, peer) in p.iter().enumerate() {
        let got = peer.take_delivered();
        assert_eq!(got.len(), MAX_PORTS - 1, "port {j}");
        let mut from: Vec<u8> = got.iter().map(|f| f[14]).collect();
        from.sort_unstable();
        let want: Vec<u8> = (0..MAX_PORTS as u8).filter(|&i| usize::from(i) != j).collect();
        assert_eq!(from, want, "port {j} got one frame from each other port");
    }
}

#[test]
fn ports_are_added_checked_and_removed_by_name() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    assert_eq!(sw.check_new(&cfg("a", "br0")).unwrap_err(), SwitchError::PortExists("a".into()));
    let e = sw.check_new(&cfg("z", "nope")).unwrap_err();
    assert!(matches!(e, SwitchError::NoSuchBridge { ref bridge, .. } if bridge == "nope"), "{e}");
    let mut same_socket = cfg("z", "br0");
    same_socket.socket = "/loopback/a".into();
    assert!(matches!(sw.check_new(&same_socket), Err(SwitchError::SocketInUse { .. })));
    p[0].send(&frame(BCAST, mac(1), 0, 60));
    run(&mut sw);
    sw.del_port("a").unwrap();
    assert_eq!(sw.del_port("a").unwrap_err(), SwitchError::NoSuchPort("a".into()));
    assert_eq!(sw.list().len(), 1);
    // The slot is reused, and a's MAC was forgotten with it.
    let c = add(&mut sw, "c", "br0");
    p[1].send(&frame(mac(1), mac(2), 1, 60));
    run(&mut sw);
    assert_eq!(c.take_delivered().len(), 1, "a's MAC flooded, not sent to its old slot");
}

#[test]
fn a_port_that_spoofs_a_neighbours_mac_diverts_nothing_and_is_counted() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    let (port, evil) = Loopback::new();
    let guard = crate::security::Guard::new(crate::security::PortSecurity::Mac, Some(mac(9)), None).unwrap();
    sw.add_port(NewPort::with(cfg("evil", "br0"), Box::new(port)).guarded(guard)).unwrap();
    // a and b know each other.
    p[0].send(&frame(BCAST, mac(1), 0, 60));
    p[1].send(&frame(BCAST, mac(2), 0, 60));
    run(&mut sw);
    for peer in [&p[0], &p[1], &evil] {
        peer.take_delivered();
    }
    // evil claims to be a; b's frames to a must still reach a.
    for i in 0..10 {
        evil.send(&frame(BCAST, mac(1), i, 60));
    }
    run(&mut sw);
    for i in 0..10 {
        p[1].send(&frame(mac(1), mac(2), i, 60));
    }
    run(&mut sw);
    assert_eq!(p[0].take_delivered().len(), 10, "b's 10 frames all reached a");
    assert!(evil.take_delivered().iter().all(|f| f[..6] == BCAST), "evil got none of b's frames to a");
    let e = stats(&sw, "evil");
    assert_eq!((e.drop_spoofed, e.rx_packets), (10, 0));
    // As itself, evil is forwarded.
    evil.send(&frame(mac(2), mac(9), 0, 60));
    run(&mut sw);
    assert_eq!(p[1].take_delivered().len(), 1);
}

/// Adds a loopback port on br0 on access VLAN `vlan`, or trunk `trunk`.
fn add_vlan(sw: &mut Switch, name: &str, vlan: Option<u16>, trunk: Option<&[u16]>) -> LoopbackPeer {
    let (port, peer) = Loopback::new();
    let c = PortConfig { vlan, trunk: trunk.map(<[u16]>::to_vec), ..cfg(name, "br0") };
    sw.add_port(NewPort::with(c, Box::new(port))).unwrap();
    peer
}

/// `f` with an 802.1Q tag of VLAN `vid` after its MACs.
fn tagged(vid: u16, f: &[u8]) -> Vec<u8> {
    [&f[..12], &[0x81, 0x00], &vid.to_be_bytes()[..], &f[12..]].concat()
}

#[test]
fn access_ports_of_two_vlans_never_see_each_others_frames() {
    let mut sw = Switch::new(&["br0".into()], 300);
    let a = add_vlan(&mut sw, "a", Some(100), None);
    let b = add_vlan(&mut sw, "b", Some(100), None);
    let c = add_vlan(&mut sw, "c", Some(200), None);
    let d200 = add_vlan(&mut sw, "d", Some(200), None);
    let u = add(&mut sw, "u", "br0");
    // Broadcasts stay in their VLAN (and the port with no VLAN keeps to VLAN 0).
    for (i, p) in [&a, &b, &c, &d200, &u].iter().enumerate() {
        p.send(&frame(BCAST, mac(i as u8 + 1), 0, 60));
    }
    run(&mut sw);
    let got = |p: &LoopbackPeer| p.take_delivered().iter().map(|f| f[11]).collect::<Vec<_>>();
    assert_eq!((got(&a), got(&b), got(&c), got(&d200), got(&u)), (vec![2], vec![1], vec![4], vec![3], vec![]));
    // Unicast to a MAC learned on the other VLAN is unknown here: it floods this VLAN only.
    a.send(&frame(mac(3), mac(1), 1, 60));
    u.send(&frame(mac(1), mac(5), 2, 60));
    run(&mut sw);
    assert_eq!(b.take_delivered(), vec![frame(mac(3), mac(1), 1, 60)]);
    assert!(c.take_delivered().is_empty() && d200.take_delivered().is_empty() && u.take_delivered().is_empty());
    assert!(a.take_delivered().is_empty(), "a's MAC is not on VLAN 0");
    // Unicast within a VLAN goes to the port alone.
    c.send(&frame(mac(4), mac(3), 3, 60));
    run(&mut sw);
    assert_eq!(d200.take_delivered(), vec![frame(mac(4), mac(3), 3, 60)]);
    assert!(a.take_delivered().is_empty() && b.take_delivered().is_empty());
    let tx: Vec<u64> = ["a", "b", "c", "d", "u"].iter().map(|n| stats(&sw, n).tx_packets).collect();
    assert_eq!(tx, [1, 2, 1, 2, 0]);
}

#[test]
fn a_trunk_carries_its_vlans_tagged_and_access_ports_get_them_untagged() {
    let mut sw = Switch::new(&["br0".into()], 300);
    let a = add_vlan(&mut sw, "a", Some(100), None);
    let c = add_vlan(&mut sw, "c", Some(200), None);
    let t = add_vlan(&mut sw, "t", None, Some(&[100, 200]));
    let t100 = add_vlan(&mut sw, "t100", None, Some(&[100]));
    // Out of an access port, into the trunks: tagged with the port's VLAN.
    a.send(&frame(BCAST, mac(1), 1, 60));
    c.send(&frame(BCAST, mac(3), 2, 60));
    run(&mut sw);
    assert_eq!(
        t.take_delivered(),
        vec![tagged(100, &frame(BCAST, mac(1), 1, 60)), tagged(200, &frame(BCAST, mac(3), 2, 60))]
    );
    assert_eq!(t100.take_delivered(), vec![tagged(100, &frame(BCAST, mac(1), 1, 60))], "t100 does not carry 200");
    // From the trunk, one burst of both VLANs: each frame to its VLAN's port, untagged;
    // to another trunk carrying the VLAN, as it is.
    t.send(&tagged(100, &frame(mac(1), mac(7), 3, 60)));
    t.send(&tagged(200, &frame(mac(3), mac(8), 4, 60)));
    t.send(&tagged(100, &frame(BCAST, mac(7), 5, 60)));
    run(&mut sw);
    assert_eq!(a.take_delivered(), vec![frame(mac(1), mac(7), 3, 60), frame(BCAST, mac(7), 5, 60)]);
    assert_eq!(c.take_delivered(), vec![frame(mac(3), mac(8), 4, 60)]);
    assert_eq!(t100.take_delivered(), vec![tagged(100, &frame(BCAST, mac(7), 5, 60))]);
    // The trunk's MACs were learned on their VLANs: answers go back to it, tagged.
    a.send(&frame(mac(7), mac(1), 6, 60));
    c.send(&frame(mac(8), mac(3), 7, 60));
    run(&mut sw);
    assert_eq!(
        t.take_delivered(),
        vec![tagged(100, &frame(mac(7), mac(1), 6, 60)), tagged(200, &frame(mac(8), mac(3), 7, 60))]
    );
    assert!(t100.take_delivered().is_empty());
    let (ts, cs) = (stats(&sw, "t"), stats(&sw, "c"));
    assert_eq!((ts.rx_packets, ts.rx_bytes, ts.tx_packets, ts.tx_bytes), (3, 3 * 64, 4, 4 * 64));
    assert_eq!((cs.tx_packets, cs.tx_bytes, cs.drop_vlan), (1, 60, 0));
}

#[test]
fn frames_outside_a_ports_vlans_are_dropped_and_counted() {
    let mut sw = Switch::new(&["br0".into()], 300);
    let a = add_vlan(&mut sw, "a", Some(100), None);
    let t = add_vlan(&mut sw, "t", None, Some(&[100]));
    let u = add(&mut sw, "u", "br0");
    t.send(&frame(BCAST, mac(7), 1, 60)); // untagged on a trunk
    t.send(&tagged(300, &frame(BCAST, mac(7), 2, 60))); // a VLAN the trunk does not carry
    t.send(&tagged(100, &frame(BCAST, mac(7), 3, 60))[..14]); // a tag cut short
    a.send(&tagged(100, &frame(BCAST, mac(1), 4, 60))); // tagged on an access port
    run(&mut sw);
    for p in [&a, &t, &u] {
        assert!(p.take_delivered().is_empty());
    }
    let (ts, as_) = (stats(&sw, "t"), stats(&sw, "a"));
    assert_eq!((ts.drop_vlan, ts.rx_packets, as_.drop_vlan, as_.rx_packets), (3, 0, 1, 0));
    assert!(sw.list().iter().all(|p| p.macs.is_empty()), "nothing learned from dropped frames");
    // The port with no VLAN takes tagged frames as they are, on VLAN 0, as without VLANs.
    let v = add(&mut sw, "v", "br0");
    u.send(&tagged(100, &frame(BCAST, mac(5), 5, 60)));
    run(&mut sw);
    assert_eq!(v.take_delivered(), vec![tagged(100, &frame(BCAST, mac(5), 5, 60))]);
    assert!(a.take_delivered().is_empty() && t.take_delivered().is_empty());
    assert_eq!(stats(&sw, "u").drop_vlan, 0);
}

#[test]
fn one_mac_is_learned_on_two_vlans_behind_two_ports() {
    let mut sw = Switch::new(&["br0".into()], 300);
    let a = add_vlan(&mut sw, "a", Some(100), None);
    let c = add_vlan(&mut sw, "c", Some(200), None);
    let trunk = add_vlan(&mut sw, "t", None, Some(&[100, 200]));
    // One MAC (a VM with a leg in each VLAN) behind a and behind c.
    a.send(&frame(BCAST, mac(9), 1, 60));
    c.send(&frame(BCAST, mac(9), 2, 60));
    run(&mut sw);
    trunk.take_delivered();
    trunk.send(&tagged(200, &frame(mac(9), mac(7), 3, 60)));
    trunk.send(&tagged(100, &frame(mac(9), mac(7), 4, 60)));
    run(&mut sw);
    assert_eq!(a.take_delivered(), vec![frame(mac(9), mac(7), 4, 60)]);
    assert_eq!(c.take_delivered(), vec![frame(mac(9), mac(7), 3, 60)]);
    let listed = sw.list();
    let macs = |n: &str| listed.iter().find(|p| p.name == n).unwrap().macs.clone();
    assert_eq!(macs("a"), ["02:00:00:00:00:09 vlan 100"]);
    assert_eq!(macs("c"), ["02:00:00:00:00:09 vlan 200"]);
    let mut on_t = macs("t");
    on_t.sort();
    assert_eq!(on_t, ["02:00:00:00:00:07 vlan 100", "02:00:00:00:00:07 vlan 200"]);
    let t_info = listed.iter().find(|p| p.name == "t").unwrap();
    assert_eq!((t_info.vlan, t_info.trunk.as_deref()), (None, Some(&[100, 200][..])));
    // Removing the VLAN ports leaves a bridge without VLANs: it forwards everything again.
    for n in ["a", "c", "t"] {
        sw.del_port(n).unwrap();
    }
    let (x, y) = (add(&mut sw, "x", "br0"), add(&mut sw, "y", "br0"));
    x.send(&tagged(300, &frame(BCAST, mac(1), 5, 60)));
    run(&mut sw);
    assert_eq!(y.take_delivered().len(), 1);
}

#[test]
fn the_snapshot_counts_the_load_the_bursts_and_the_learning() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    for i in 0..3 {
        p[0].send(&frame(mac(2), mac(1), i, 60));
    }
    p[1].send(&frame(mac(1), mac(2), 9, 60));
    run(&mut sw);
    let s = sw.snapshot();
    assert_eq!(
        s.ports.iter().map(|p| (p.port.as_str(), p.counters.rx_packets)).collect::<Vec<_>>(),
        [("a", 3), ("b", 1)]
    );
    assert_eq!(
        (s.ports[0].bridge.as_str(), s.ports[0].kind, s.ports[0].container_id.as_deref()),
        ("br0", "vhost", None)
    );
    let br0 = &s.bridges[0];
    assert_eq!((br0.bridge.as_str(), br0.ports, br0.mac_entries, br0.mac_learned), ("br0", 2, 2, 2));
    assert_eq!((s.bridges[1].ports, s.bridges[1].mac_entries), (0, 0));
    assert_eq!(s.loads[0].busy_polls + s.loads[0].idle_polls, 8, "one count per pass");
    assert!(s.loads[0].busy_polls >= 1 && s.loads[0].idle_polls >= 6, "{:?}", s.loads[0]);
    assert_eq!(
        s.loads[0].bursts.iter().enumerate().map(|(n, k)| n as u64 * k).sum::<u64>(),
        4,
        "every frame in a burst"
    );
}

/// A capture of port `port` in `direction` with a ring of `slots`, and the reader's end.
fn capture(
    sw: &mut Switch,
    id: u64,
    port: &str,
    direction: fastpath_host::proto::Direction,
    slots: u32,
) -> crate::capture::ring::Ring {
    use crate::capture::ring::Ring;
    let ring = Ring::create(slots, 64).unwrap();
    let reader = Ring::open(std::os::fd::OwnedFd::from(ring.fd().try_clone().unwrap())).unwrap();
    let spec = fastpath_host::proto::CaptureSpec { port: port.into(), direction, snaplen: 64, slots };
    sw.capture(CaptureTap::new(id, spec, ring, None)).unwrap();
    reader
}

fn drain(r: &crate::capture::ring::Ring) -> Vec<(crate::capture::pcapng::Direction, Vec<u8>)> {
    std::iter::from_fn(|| r.pop().unwrap()).map(|c| (c.direction, c.data)).collect()
}

#[test]
fn a_capture_gets_the_ports_frames_each_way_and_a_full_ring_drops_and_counts() {
    use crate::capture::pcapng::Direction::{Inbound, Outbound};
    use fastpath_host::proto::Direction;
    let (mut sw, p) = switch_with(&["a", "b", "c"]);
    assert!(!sw.watch.on, "nothing watched: the burst's one flag is off");
    let both = capture(&mut sw, 1, "b", Direction::Both, 64);
    let rx = capture(&mut sw, 2, "b", Direction::Rx, 64);
    assert!(sw.watch.on);
    p[0].send(&frame(mac(2), mac(1), 1, 60));
    run(&mut sw);
    p[1].send(&frame(mac(1), mac(2), 2, 70));
    run(&mut sw);
    // Cut to the snaplen (64).
    let back = frame(mac(1), mac(2), 2, 70)[..64].to_vec();
    assert_eq!(drain(&both), [(Outbound, frame(mac(2), mac(1), 1, 60)), (Inbound, back.clone())]);
    assert_eq!(drain(&rx), [(Inbound, back)]);
    // A ring of 2 for 5 frames: 2 kept, 3 dropped and counted; forwarding goes on.
    let small = capture(&mut sw, 3, "a", Direction::Rx, 2);
    for i in 0..5 {
        p[0].send(&frame(mac(2), mac(1), i, 60));
    }
    run(&mut sw);
    assert_eq!((drain(&small).len(), small.dropped()), (2, 3));
    assert_eq!(p[1].take_delivered().len(), 6);
    assert!(sw.uncapture(3) && sw.uncapture(2) && !sw.uncapture(2));
    // Removing the port ends its captures: nothing is watched any more.
    sw.del_port("b").unwrap();
    assert!(!sw.watch.on);
    let err = sw.capture(CaptureTap::new(
        4,
        fastpath_host::proto::CaptureSpec { port: "zz".into(), direction: Direction::Both, snaplen: 64, slots: 2 },
        crate::capture::ring::Ring::create(2, 64).unwrap(),
        None,
    ));
    assert_eq!(err, Err(SwitchError::NoSuchPort("zz".into())));
}

#[test]
fn a_mirror_copies_a_ports_frames_and_drops_what_the_mirror_port_has_no_room_for() {
    use fastpath_host::proto::{Direction, MirrorConfig};
    let (mut sw, p) = switch_with(&["a", "b"]);
    let ids = add(&mut sw, "ids", "br1");
    let m = |from: &str, to: &str, direction| MirrorConfig { from: from.into(), to: to.into(), direction };
    sw.add_mirror(m("b", "ids", Direction::Tx)).unwrap();
    assert_eq!(
        sw.add_mirror(m("b", "ids", Direction::Rx)),
        Err(SwitchError::MirrorExists { from: "b".into(), to: "ids".into() })
    );
    assert_eq!(sw.add_mirror(m("b", "b", Direction::Rx)), Err(SwitchError::MirrorToItself("b".into())));
    // A mirror waits for its ports.
    sw.add_mirror(m("ghost", "ids", Direction::Both)).unwrap();
    for i in 0..4 {
        p[0].send(&frame(mac(2), mac(1), i, 60));
    }
    run(&mut sw);
    let got = p[1].take_delivered();
    assert_eq!(got.len(), 4);
    assert_eq!(ids.take_delivered(), got, "the IDS sees what b was sent");
    ids.set_room(1);
    for i in 0..3 {
        p[0].send(&frame(mac(2), mac(1), i, 60));
    }
    run(&mut sw);
    assert_eq!((p[1].take_delivered().len(), ids.take_delivered().len()), (3, 1), "b is not held back by the IDS");
    let list = sw.mirrors();
    assert_eq!((list[0].active, list[0].sent, list[0].dropped), (true, 5, 2));
    assert!(!list[1].active);
    assert_eq!(stats(&sw, "b").tx_dropped, 0);
    sw.del_mirror("b", "ids").unwrap();
    sw.del_mirror("ghost", "ids").unwrap();
    assert!(!sw.watch.on);
    assert!(sw.del_mirror("b", "ids").is_err());
}

#[test]
fn a_frame_longer_than_a_destinations_mtu_is_dropped_and_counted_there() {
    let (mut sw, p) = switch_with(&["a", "b"]);
    let (port, small) = Loopback::new();
    sw.add_port(NewPort::with(PortConfig { mtu: Some(100), ..cfg("m", "br0") }, Box::new(port))).unwrap();
    // Flooded: b (no MTU) takes both, m (MTU 100: frames up to 118 bytes) the short one.
    let (long, fits) = (frame(BCAST, mac(1), 1, 119), frame(BCAST, mac(1), 2, 118));
    p[0].send(&long);
    p[0].send(&fits);
    run(&mut sw);
    assert_eq!(p[1].take_delivered().iter().map(Vec::len).collect::<Vec<_>>(), [119, 118]);
    assert!(small.take_delivered() == vec![fits], "m gets the 118-byte frame alone");
    let m = stats(&sw, "m");
    assert_eq!((m.tx_packets, m.tx_dropped, m.drop_too_big), (1, 1, 1));
}

#[test]
fn a_single_switch_refuses_a_port_for_a_second_worker() {
    let (mut sw, _) = switch_with(&[]);
    let (port, _peer) = Loopback::new();
    let second = PortConfig { worker: Some(1), ..cfg("a", "br0") };
    let e = sw.add_port(NewPort::with(second, Box::new(port))).unwrap_err();
    assert_eq!(e.to_string(), "port 'a': worker 1: this switch runs 1 worker (0 to 0; fastpathd --cores)");
    let (port, _peer) = Loopback::new();
    sw.add_port(NewPort::with(PortConfig { worker: Some(0), ..cfg("a", "br0") }, Box::new(port))).unwrap();
}
