// An AF_XDP port against the real kernel (root, as fastpathd runs): on one end of a
// veth pair whose other end is in a network namespace with an address, the far side's
// ARP answer comes back through the switch; a busy interface is refused by name; a
// deleted and re-created interface faults the port and it comes back.
//! AF_XDP port tests.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::port::loopback::Loopback;
use crate::port::test_frames::arp_request;
use crate::switch::{NewPort, Switch};

fn sh(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

/// A veth pair `a` (here, up) and `b` (in namespace `ns`, with 169.254.88.2/24, up).
struct Veth {
    a: String,
    ns: String,
}

impl Veth {
    fn new(tag: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: AF_XDP tests need root");
            return None;
        }
        let id = std::process::id() % 10_000;
        let (a, b, ns) = (format!("fx{tag}{id}a"), format!("fx{tag}{id}b"), format!("fx{tag}{id}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let ok = sh(&["netns", "add", &ns])
            && sh(&["link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &ns])
            && sh(&["link", "set", &a, "up"])
            && sh(&["-n", &ns, "addr", "add", "169.254.88.2/24", "dev", &b])
            && sh(&["-n", &ns, "link", "set", &b, "up"]);
        if !ok {
            eprintln!("SKIPPED: could not make a veth pair and a namespace with `ip`");
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            return None;
        }
        Some(Self { a, ns })
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.a]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Polls `sw` until `peer` got an ARP reply, or 5 s pass.
fn arp_reply(sw: &mut Switch, peer: &crate::port::loopback::LoopbackPeer) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        sw.poll_once();
        if let Some(f) = peer.take_delivered().into_iter().find(|f| f.len() >= 42 && f[12..14] == [8, 6] && f[21] == 2)
        {
            return Some(f);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn switch_with(port: AfxdpPort) -> (Switch, crate::port::loopback::LoopbackPeer) {
    let mut sw = Switch::new(&["br0".into()], 300);
    let (c, peer) = Loopback::new();
    sw.add_port(NewPort::with(crate::config::PortConfig::new("up", "br0", "/x/up"), Box::new(port))).unwrap();
    sw.add_port(NewPort::with(crate::config::PortConfig::new("c", "br0", "/x/c"), Box::new(c))).unwrap();
    (sw, peer)
}

#[test]
fn the_far_end_of_a_veth_answers_through_the_switch_and_a_recreated_interface_comes_back() {
    let Some(v) = Veth::new("r") else { return };
    let port = AfxdpPort::open(&v.a, 0).unwrap();
    assert_eq!(port.mode(), Some(BindMode::Copy), "veth has no zero-copy");
    let (mut sw, peer) = switch_with(port);
    let me = [2, 0, 0, 0, 0x88, 1];
    peer.send(&arp_request(me, [169, 254, 88, 1], [169, 254, 88, 2]));
    let r = arp_reply(&mut sw, &peer).expect("the namespace's ARP reply, through AF_XDP and the switch");
    assert_eq!(&r[..6], &me);
    assert_eq!(&r[28..32], &[169, 254, 88, 2]);
    // The interface goes (with its peer and namespace) and comes back: the port follows.
    drop(v);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && sw.list()[0].stats.link_up {
        sw.poll_once();
    }
    let listed = sw.list();
    assert!(!listed[0].stats.link_up, "the port is down while its interface is gone");
    assert!(listed[0].last_fault.as_deref().unwrap_or_default().contains("went away"), "{:?}", listed[0].last_fault);
    let Some(_v2) = Veth::new("r") else { return };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !sw.list()[0].stats.link_up {
        sw.poll_once();
    }
    assert!(sw.list()[0].stats.link_up, "the port came back with its interface");
    peer.send(&arp_request(me, [169, 254, 88, 1], [169, 254, 88, 2]));
    let r = arp_reply(&mut sw, &peer).expect("traffic again once the interface is back");
    assert_eq!(&r[28..32], &[169, 254, 88, 2]);
}

#[test]
fn an_interface_that_already_has_an_xdp_program_is_refused_with_its_name() {
    let Some(v) = Veth::new("b") else { return };
    let first = AfxdpPort::open(&v.a, 0).unwrap();
    let e = AfxdpPort::open(&v.a, 0).unwrap_err().to_string();
    assert!(e.contains(&v.a) && e.contains("already has an XDP program") && e.contains("fastpath_xsk"), "{e}");
    drop(first);
    // Its program went with it: the interface is free again (the kernel releases the
    // queue from the old socket a moment after it closes).
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        match AfxdpPort::open(&v.a, 0) {
            Ok(p) => break Ok(p),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break Err(e),
        }
    };
    drop(again.unwrap());
}

#[test]
fn a_missing_interface_is_an_error_that_names_it() {
    let e = AfxdpPort::open("fx-no-such-if", 0).unwrap_err().to_string();
    assert!(e.contains("fx-no-such-if") && e.contains("no such interface"), "{e}");
}

/// Packets the interface `dev` in namespace `ns` counted received.
fn rx_packets(ns: &str, dev: &str) -> u64 {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{dev}/statistics/rx_packets"))
        .output();
    o.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(0)
}

#[test]
fn every_frame_a_send_took_leaves_the_tx_ring() {
    let Some(v) = Veth::new("t") else { return };
    // The far end: the same name ending in b.
    let b = format!("{}b", &v.a[..v.a.len() - 1]);
    let before = rx_packets(&v.ns, &b);
    let mut port = AfxdpPort::open(&v.a, 0).unwrap();
    // More than the ring holds, a burst at a time, with no poll in between.
    let frame = arp_request([2, 0, 0, 0, 0x88, 3], [169, 254, 88, 9], [169, 254, 88, 10]);
    let mut taken = 0;
    for _ in 0..(2 * RING_SIZE as usize) / 32 {
        taken += port.send_built(32, &mut |_, buf| {
            buf[..frame.len()].copy_from_slice(&frame);
            frame.len()
        });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && port.live.as_ref().is_some_and(|l| l.xsk.tx_pending() > 0) {
        port.poll();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(port.live.as_ref().map(|l| l.xsk.tx_pending()), Some(0), "descriptors left in the TX ring");
    assert_eq!(port.counters().tx_packets, taken as u64);
    let wait = Instant::now() + Duration::from_secs(2);
    while Instant::now() < wait && rx_packets(&v.ns, &b) < before + taken as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The kernel may send a few frames of its own on the freshly raised veth (IPv6 router
    // solicitations, MLD reports): the far end counts at least every frame the port took,
    // and no more than a handful besides.
    let got = rx_packets(&v.ns, &b) - before;
    assert!((taken as u64..=taken as u64 + 16).contains(&got), "the far end got {got} frames, the port took {taken}");
}
