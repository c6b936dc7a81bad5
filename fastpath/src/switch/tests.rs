// The switch's data plane without sockets: loopback ports on its bridges, frames
// injected by hand. Learning, flooding, ageing, full rings, faults, 64 ports.
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
