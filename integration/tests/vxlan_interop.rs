// fastpathd's VXLAN against the Linux kernel's: a veth pair, fastpathd's vxlan port (over
// an afxdp uplink) on one end, and in a network namespace on the other a kernel `vxlan`
// device with an address. Kernel sockets there talk to smoltcp apps on fastpathd's vhost
// ports, both ways; then bad VXLAN packets from a raw socket there are each dropped and
// counted for their reason, and traffic goes on.
//! Interop: the kernel's VXLAN ↔ fastpathd's vxlan port.

use std::path::Path;
use std::time::{Duration, Instant};

use integration::{
    check_udp_rr, fastpathctl_list, fastpathd_port, kind_counter, output_text, port_stat, require, serial, show_ports,
    smol_app_args, spawn_fastpathd, stamp, vxlan_port_flag, wait_for_socket, wait_ports_up, wait_until, Netns, Proc,
    TestDir, Verdict, Veth, RR_TIMEOUT, SETUP_TIMEOUT,
};
use nix::sys::signal::Signal;

const VNI: u32 = 4242;
/// The VTEPs, on the veth's subnet: fastpathd's (no kernel address) and the kernel's.
const OUR_VTEP: &str = "10.201.0.1";
const KERNEL_VTEP: &str = "10.201.0.2";
/// The overlay: smoltcp's echo, the kernel's vxlan device, smoltcp's udp_rr.
const ECHO_IP: &str = "192.168.201.1";
const KERNEL_IP: &str = "192.168.201.2";
const RR_IP: &str = "192.168.201.3";
const TRANSACTIONS: u64 = 500;
/// Bad packets of each kind, then good ones.
const BAD_EACH: u64 = 20;

#[test]
fn the_kernels_vxlan_and_fastpathd_talk_both_ways_and_bad_packets_are_counted() {
    const TEST: &str = "the_kernels_vxlan_and_fastpathd_talk_both_ways_and_bad_packets_are_counted";
    let Some(peers) = require(TEST, &["fastpathd", "fastpathctl", "udp_echo", "udp_rr", "vxlan_garble"], false) else {
        return;
    };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vxlan-interop");
    let ctl = dir.join("ctl.sock");
    let (echo_sock, rr_sock) = (dir.join("echo.sock"), dir.join("rr.sock"));
    let mut v = Verdict::new(TEST);
    let id = std::process::id() % 100_000;
    // The kernel's side: the veth's far end in a namespace, under a vxlan device.
    let ns = match Netns::new(&format!("fvx{id}")) {
        Ok(n) => n,
        Err(e) => v.abort(e, &mut []),
    };
    let veth = match Veth::new(&format!("fvx{id}a"), &format!("fvx{id}b")) {
        Ok(x) => x,
        Err(e) => v.abort(e, &mut []),
    };
    let b = veth.b.as_str();
    let setup = integration::ip(&["link", "set", b, "netns", &ns.0])
        .and_then(|_| ns.ip(&["addr", "add", &format!("{KERNEL_VTEP}/24"), "dev", b]))
        .and_then(|_| ns.ip(&["link", "set", b, "up"]))
        .and_then(|_| ns.ip(&["link", "set", "lo", "up"]))
        // Whole checksums on the wire: with TX checksum offload on, the kernel leaves the
        // inner UDP checksum for a NIC to finish, and a veth has none.
        .and_then(|_| {
            ns.exec(&["ethtool", "-K", b, "tx", "off"], Duration::from_secs(10)).and_then(|o| {
                if o.status.success() {
                    Ok(output_text(&o))
                } else {
                    Err(format!("ethtool -K {b} tx off: {}", output_text(&o)))
                }
            })
        })
        .and_then(|_| {
            ns.ip(&[
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                &VNI.to_string(),
                "dstport",
                "4789",
                "local",
                KERNEL_VTEP,
                "remote",
                OUR_VTEP,
                "dev",
                b,
            ])
        })
        .and_then(|_| ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", "vx0"]))
        .and_then(|_| ns.ip(&["link", "set", "vx0", "up"]));
    if let Err(e) = setup {
        v.abort(format!("the kernel's VXLAN side: {e}"), &mut []);
    }
    let ports = [
        vxlan_port_flag("vx", &veth.a, VNI, OUR_VTEP, &[KERNEL_VTEP]),
        fastpathd_port("br0", "echo", "vhost", &echo_sock),
        fastpathd_port("br0", "rr", "vhost", &rr_sock),
    ];
    let mut fpd = spawn_fastpathd("fastpathd", &peers, &dir, &ctl, &["br0"], &ports);
    if !wait_for_socket(&rr_sock, SETUP_TIMEOUT) {
        v.abort(format!("fastpathd: expected {} within {SETUP_TIMEOUT:?}", rr_sock.display()), &mut [&mut fpd]);
    }
    let mut echo = Proc::spawn(
        "udp_echo",
        &dir,
        &peers.bin("udp_echo"),
        &smol_app_args(&echo_sock, ECHO_IP, "02:00:00:c9:00:01", &[]),
        &[],
    );
    if let Err(e) = wait_ports_up(&peers, &ctl, &["vx", "echo"], SETUP_TIMEOUT) {
        v.abort(e, &mut [&mut fpd, &mut echo]);
    }
    // Kernel → fastpathd: the kernel's ping and a kernel UDP socket against smoltcp.
    match ns.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", ECHO_IP], Duration::from_secs(20)) {
        Ok(o) => {
            let text = output_text(&o);
            v.check(o.status.success() && text.contains(" 0% packet loss"), || {
                format!("ping {ECHO_IP} over the kernel's vxlan: {text}")
            });
        }
        Err(e) => v.fail(format!("ping: {e}")),
    }
    let rr_bin = peers.bin("udp_rr").display().to_string();
    let server = format!("{ECHO_IP}:7");
    let n = TRANSACTIONS.to_string();
    let kernel_rr = |count: &str| {
        ns.exec(&[&rr_bin, "--kernel", "--server", &server, "--count", count, "--json", "--quiet"], RR_TIMEOUT)
    };
    check_udp_rr(&mut v, "kernel udp_rr → kernel vxlan → fastpathd → smoltcp udp_echo", kernel_rr(&n), TRANSACTIONS);
    // fastpathd → kernel: smoltcp's udp_rr against a kernel UDP echo behind the kernel's vxlan.
    let echo_bin = peers.bin("udp_echo").display().to_string();
    let mut kecho = Proc::spawn(
        "kernel-udp_echo",
        &dir,
        Path::new("ip"),
        &["netns", "exec", &ns.0, &echo_bin, "--kernel", "--bind", &format!("{KERNEL_IP}:7")],
        &[],
    );
    if !kecho.wait_for_stderr("kernel socket on", SETUP_TIMEOUT) {
        v.fail("kernel udp_echo: expected it to bind");
    }
    let rr_args =
        smol_app_args(&rr_sock, RR_IP, "02:00:00:c9:00:03", &["--server", &format!("{KERNEL_IP}:7"), "--count", &n]);
    let out = integration::run_with_timeout(std::process::Command::new(peers.bin("udp_rr")).args(&rr_args), RR_TIMEOUT);
    check_udp_rr(&mut v, "smoltcp udp_rr → fastpathd → kernel vxlan → kernel udp_echo", out, TRANSACTIONS);
    // Bad input: each kind BAD_EACH times from a raw socket by the kernel's VTEP, then good ones.
    let before = fastpathctl_list(&peers, &ctl).unwrap_or_default();
    let rx_before = port_stat(&before, "vx", "rx_packets").unwrap_or(0);
    let our_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.a)).unwrap_or_default();
    let cases = integration::GARBLE_CASES;
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let each = BAD_EACH.to_string();
    let garble = ns.exec(
        &[
            &peers.bin("vxlan_garble").display().to_string(),
            b,
            our_mac.trim(),
            KERNEL_VTEP,
            OUR_VTEP,
            &VNI.to_string(),
            &each,
            &names.join(","),
            &each,
        ],
        Duration::from_secs(20),
    );
    match garble {
        Ok(o) if o.status.success() => v.note(format!("vxlan_garble sent {}", output_text(&o).trim())),
        Ok(o) => v.fail(format!("vxlan_garble: {}", output_text(&o))),
        Err(e) => v.fail(format!("vxlan_garble: {e}")),
    }
    let mut after = Vec::new();
    let counted = wait_until(Duration::from_secs(5), || {
        after = fastpathctl_list(&peers, &ctl).unwrap_or_default();
        cases.iter().all(|(_, c)| {
            kind_counter(&after, "vx", c).unwrap_or(0) >= kind_counter(&before, "vx", c).unwrap_or(0) + BAD_EACH
        }) && port_stat(&after, "vx", "rx_packets").unwrap_or(0) >= rx_before + BAD_EACH
    });
    v.check(counted, || {
        let show: Vec<String> = cases
            .iter()
            .map(|(_, c)| {
                format!(
                    "{c} {} -> {}",
                    kind_counter(&before, "vx", c).unwrap_or(0),
                    kind_counter(&after, "vx", c).unwrap_or(0)
                )
            })
            .collect();
        format!(
            "expected each bad kind counted {BAD_EACH} times for its reason and the good ones delivered: {}; rx_packets {rx_before} -> {}",
            show.join(", "),
            port_stat(&after, "vx", "rx_packets").unwrap_or(0)
        )
    });
    check_udp_rr(&mut v, "after the bad packets: kernel udp_rr", kernel_rr("100"), 100);
    match fastpathctl_list(&peers, &ctl) {
        Ok(list) => v.note(show_ports(&list)),
        Err(e) => v.fail(e),
    }
    kecho.stop(Signal::SIGINT, Duration::from_secs(3));
    echo.stop(Signal::SIGINT, Duration::from_secs(3));
    let st = fpd.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("fastpathd: expected exit status 0 after SIGTERM, got {st}"));
    v.note(format!("{} {TEST}: {:.1} s", stamp(), t0.elapsed().as_secs_f64()));
    v.finish(&mut [&mut fpd, &mut echo, &mut kecho]);
}
