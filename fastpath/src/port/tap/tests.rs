// A TAP port against the real kernel (root and /dev/net/tun, as fastpathd has):
// names are checked, the interface appears and comes up, and goes with the port.
//! TAP port tests.

use super::*;
use crate::port::test_frames::arp_request;

fn tun_available() -> bool {
    let ok = nix::unistd::geteuid().is_root() && std::path::Path::new("/dev/net/tun").exists();
    if !ok {
        eprintln!("SKIPPED: TAP tests need root and /dev/net/tun");
    }
    ok
}

#[test]
fn bad_interface_names_are_refused_with_the_name() {
    for bad in ["", "a-name-far-too-long-for-linux", "a/b", "a b"] {
        let e = TapPort::open(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("TAP interface {bad}:")), "{e}");
    }
}

#[test]
fn the_interface_appears_up_and_goes_with_the_port() {
    if !tun_available() {
        return;
    }
    let name = format!("fpt{}", std::process::id() % 100_000);
    let flags = std::path::PathBuf::from(format!("/sys/class/net/{name}/flags"));
    let mut port = TapPort::open(&name).unwrap();
    let f = std::fs::read_to_string(&flags).unwrap();
    let f = u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(f & libc::IFF_UP as u32, libc::IFF_UP as u32, "the interface is up");
    assert_eq!(port.ifname(), name);
    // Nothing to read yet, and reading never blocks.
    let _ = port.recv();
    port.release();
    drop(port);
    // The kernel unregisters the device a moment after its last fd closes.
    let t = std::time::Instant::now();
    while flags.exists() && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!flags.exists(), "a TAP device we created goes when its fd closes");
}

#[test]
fn the_hosts_stack_answers_a_container_through_the_switch() {
    use crate::port::loopback::Loopback;
    use crate::switch::{NewPort, Switch};
    if !tun_available() {
        return;
    }
    let name = format!("fpa{}", std::process::id() % 100_000);
    let tap = TapPort::open(&name).unwrap();
    // The host's side of the bridge: a link-local address on the TAP interface.
    let host_ip = [169, 254, 77, 1];
    let st = std::process::Command::new("ip").args(["addr", "add", "169.254.77.1/24", "dev", &name]).status();
    if !st.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: `ip addr add` on {name} failed (iproute2 missing?)");
        return;
    }
    let mut sw = Switch::new(&["br0".into()], 300);
    let (container, peer) = Loopback::new();
    let cfg = |n: &str| crate::config::PortConfig::new(n, "br0", format!("/none/{n}"));
    sw.add_port(NewPort::with(cfg("tap"), Box::new(tap))).unwrap();
    sw.add_port(NewPort::with(cfg("c"), Box::new(container))).unwrap();
    let me = [2, 0, 0, 0, 0x77, 2];
    peer.send(&arp_request(me, [169, 254, 77, 2], host_ip));
    // The kernel answers (after the IPv6 chatter a new interface sends, which floods too).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut reply = None;
    while reply.is_none() && std::time::Instant::now() < deadline {
        sw.poll_once();
        reply = peer.take_delivered().into_iter().find(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[21] == 2);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let reply = reply.expect("an ARP reply from the host's stack through the TAP port");
    assert_eq!(&reply[..6], &me, "addressed to the container");
    assert_eq!(&reply[28..32], &host_ip, "from the TAP's address");
    let listed = sw.list();
    let t = &listed.iter().find(|p| p.name == "tap").unwrap().stats.counters;
    assert!(t.rx_packets >= 1 && t.tx_packets >= 1, "{t:?}");
}
