// The QEMU guest harness against a real guest kernel: an emulated igb NIC with SR-IOV
// behind an emulated Intel IOMMU (TCG). First its VFs (two, each alone in an IOMMU group,
// bound to vfio-pci with their /dev/vfio nodes), then the PF's wire to the host peer in
// both directions (the guest's ARP request reaches the host; the host's broadcast ARP
// requests reach the PF, which counts them and answers each).
//! QEMU guest: SR-IOV VFs behind the IOMMU, vfio-pci, and the host peer on the PF's wire.

use std::time::{Duration, Instant};

use integration::guest::{
    arp_request, fmt_mac, parse_mac, require_guest, Frame, Guest, GuestRun, BROADCAST, ETHERTYPE_ARP, GUEST_UID,
    PF_MAC, VF_ID, VF_PCI,
};
use integration::{serial, stamp, TestDir, Verdict};

/// The VF body: identity, IOMMU group and driver of each VF, then bound to vfio-pci.
const VF_BODY: &str = r#"
result pf_if "$PF_IF"
result vfs "$VFS"
result totalvfs "$(cat /sys/bus/pci/devices/$PF/sriov_totalvfs)"
for vf in $VFS; do
    d=/sys/bus/pci/devices/$vf
    result "id-$vf" "$(sed 's/^0x//' $d/vendor):$(sed 's/^0x//' $d/device)"
    result "driver-before-$vf" "$(basename "$(readlink $d/driver)")"
    g=$(iommu_group $vf)
    result "group-$vf" "$g"
    result "group-members-$vf" "$(ls /sys/kernel/iommu_groups/$g/devices | tr '\n' ' ')"
    vf_to_vfio $vf
    result "bind-$vf" "$?"
    result "driver-$vf" "$(basename "$(readlink $d/driver)")"
    if [ -c /dev/vfio/$g ]; then result "devnode-$vf" "/dev/vfio/$g"; else result "devnode-$vf" none; fi
done
result vfio-nodes "$(ls /dev/vfio | tr '\n' ' ')"
result user "$(as_user id -u):$(as_user id -g)"
result user-memlock "$(as_user sh -c 'ulimit -l')"
"#;

/// Checks one result against the expected value.
fn expect(v: &mut Verdict, run: &GuestRun, name: &str, want: &str) {
    let got = run.result(name);
    v.check(got == Some(want), || {
        format!(
            "guest result {name}: expected {want:?}, got {}",
            got.map_or_else(|| "no FASTPATH-RESULT line".to_string(), |g| format!("{g:?}"))
        )
    });
}

#[test]
fn vf_guest_vfs_bind_to_vfio() {
    const TEST: &str = "vf_guest_vfs_bind_to_vfio";
    let Some(peers) = require_guest(TEST, &[]) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("gvf");
    let mut v = Verdict::new(TEST);
    let mut run = match Guest::new(&peers).body(VF_BODY).run(&dir) {
        Ok(r) => r,
        Err(e) => v.abort(e, &mut []),
    };
    run.check(&mut v);
    expect(&mut v, &run, "vfs", &VF_PCI.join(" "));
    expect(&mut v, &run, "totalvfs", "7");
    let mut groups = Vec::new();
    for vf in VF_PCI {
        expect(&mut v, &run, &format!("id-{vf}"), VF_ID);
        expect(&mut v, &run, &format!("driver-before-{vf}"), "igbvf");
        expect(&mut v, &run, &format!("group-members-{vf}"), vf);
        expect(&mut v, &run, &format!("bind-{vf}"), "0");
        expect(&mut v, &run, &format!("driver-{vf}"), "vfio-pci");
        let g = run.result(&format!("group-{vf}")).unwrap_or("?").to_string();
        v.check(g.parse::<u32>().is_ok(), || format!("guest: expected an IOMMU group number for {vf}, got {g:?}"));
        expect(&mut v, &run, &format!("devnode-{vf}"), &format!("/dev/vfio/{g}"));
        groups.push(g);
    }
    v.check(groups[0] != groups[1], || format!("guest: expected the VFs in different IOMMU groups, got {groups:?}"));
    let nodes = run.result("vfio-nodes").unwrap_or("");
    v.check(nodes.split_whitespace().any(|n| n == "vfio"), || {
        format!("guest: expected /dev/vfio/vfio, got /dev/vfio: {nodes:?}")
    });
    expect(&mut v, &run, "user", &format!("{GUEST_UID}:{GUEST_UID}"));
    expect(&mut v, &run, "user-memlock", "unlimited");
    let dmar = run.dmesg_matching("DMAR: [DMA");
    v.check(dmar.is_empty(), || format!("guest dmesg: expected no DMA remapping fault, got {dmar:?}"));
    v.check(!run.dmesg_matching("Enabled IRQ remapping").is_empty(), || {
        "guest dmesg: expected \"DMAR-IR: Enabled IRQ remapping\" (intremap=on; VFIO needs it)".into()
    });
    eprintln!("[{}] {TEST}: groups {groups:?}; {}; test {:.2} s", stamp(), run.timings(), t0.elapsed().as_secs_f64());
    run.finish(v);
}

/// Frames the host injects (broadcast ARP requests for the PF's address).
const INJECT: u64 = 5;
/// The host's MAC and address on the wire, and the guest PF's address.
const HOST_MAC: &str = "02:00:00:00:00:01";
const HOST_IP: [u8; 4] = [10, 0, 0, 2];
const GUEST_IP: [u8; 4] = [10, 0, 0, 1];

/// The wire body: PF address, carrier, an ARP request out, then counts what the host sends in
/// and waits (up to 2 s) for the host in the PF's neighbour table before it reports the table.
const WIRE_BODY: &str = r#"
ip addr add 10.0.0.1/24 dev "$PF_IF"
st=/sys/class/net/$PF_IF/statistics
i=0
while [ "$(cat /sys/class/net/$PF_IF/operstate)" != up ] && [ $i -lt 1000 ]; do usleep 10000; i=$((i + 1)); done
result operstate "$(cat /sys/class/net/$PF_IF/operstate)"
arping -c 1 -w 1 -I "$PF_IF" 10.0.0.2 > /dev/null
rx0=$(cat $st/rx_packets)
result rx-before "$rx0"
ready wire
i=0
while [ "$(cat $st/rx_packets)" -lt $((rx0 + {INJECT})) ] && [ $i -lt 1500 ]; do usleep 10000; i=$((i + 1)); done
result rx-after "$(cat $st/rx_packets)"
i=0
until ip neigh show dev "$PF_IF" | grep -q '{HOST_MAC}' || [ $i -ge 200 ]; do usleep 10000; i=$((i + 1)); done
result neigh "$(ip neigh show dev "$PF_IF" | tr '\n' ' ')"
"#;

fn is_arp(f: &Frame, op: u16, sender_ip: [u8; 4], target_ip: [u8; 4]) -> bool {
    let d = &f.data;
    f.ethertype() == ETHERTYPE_ARP
        && d.len() >= 42
        && d[20..22] == op.to_be_bytes()
        && d[28..32] == sender_ip
        && d[38..42] == target_ip
}

#[test]
fn vf_guest_pf_wire_host_peer() {
    const TEST: &str = "vf_guest_pf_wire_host_peer";
    let Some(peers) = require_guest(TEST, &[]) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("gwire");
    let mut v = Verdict::new(TEST);
    let pf = parse_mac(PF_MAC).expect("PF_MAC is a MAC");
    let host = parse_mac(HOST_MAC).expect("HOST_MAC is a MAC");
    let body = WIRE_BODY.replace("{INJECT}", &INJECT.to_string()).replace("{HOST_MAC}", HOST_MAC);
    let mut g = match Guest::new(&peers).num_vfs(0).body(&body).start(&dir) {
        Ok(g) => g,
        Err(e) => v.abort(e, &mut []),
    };
    // Guest → host: the PF's ARP request for the host's address.
    let ready = g.wait_ready("wire", Duration::from_secs(45));
    let mut injected = 0;
    match ready {
        Ok(_) => {
            let got = g.peer().wait_frames(1, Duration::from_secs(2), |f| {
                f.src() == pf && f.dst() == BROADCAST && is_arp(f, 1, GUEST_IP, HOST_IP)
            });
            v.check(got == 1, || {
                format!(
                    "host peer: expected the guest's ARP request (who has 10.0.0.2, from {PF_MAC}, broadcast); \
                     got {got} among {} frames",
                    g.peer().count()
                )
            });
            // Host → guest: broadcast ARP requests for the PF's address; the PF counts each and answers each.
            let t = Instant::now();
            match g.peer().send_at_rate(INJECT, 50, |_| arp_request(host, HOST_IP, GUEST_IP)) {
                Ok(n) => injected = n,
                Err(e) => v.fail(e),
            }
            let replies = g.peer().wait_frames(INJECT as usize, Duration::from_secs(10), |f| {
                f.src() == pf && f.dst() == host && is_arp(f, 2, GUEST_IP, HOST_IP)
            });
            eprintln!(
                "[{}] host peer: sent {injected} ARP requests, {replies} ARP replies back in {:.2} s",
                stamp(),
                t.elapsed().as_secs_f64()
            );
            v.check(replies == INJECT as usize, || {
                format!("host peer: expected {INJECT} ARP replies from the PF to {HOST_MAC}, got {replies}")
            });
        }
        Err(e) => v.fail(e),
    }
    let mut run = g.wait();
    run.check(&mut v);
    expect(&mut v, &run, "operstate", "up");
    let rx = |k| run.result(k).and_then(|x| x.parse::<u64>().ok());
    match (rx("rx-before"), rx("rx-after")) {
        (Some(a), Some(b)) => v.check(b - a == injected && injected == INJECT, || {
            format!("guest PF {PF_MAC}: expected rx_packets +{INJECT} (injected {injected}), got {a} -> {b}")
        }),
        (a, b) => v.fail(format!("guest: expected rx-before and rx-after results, got {a:?} and {b:?}")),
    }
    let neigh = run.result("neigh").unwrap_or("");
    v.check(neigh.contains(HOST_MAC), || {
        format!("guest: expected the host {HOST_MAC} in the PF's neighbour table, got {neigh:?}")
    });
    let frames = run.frames();
    let arp_out = frames.iter().filter(|f| f.ethertype() == ETHERTYPE_ARP).count();
    eprintln!(
        "[{}] {TEST}: host peer got {} frames ({arp_out} ARP) from {}; {}; test {:.2} s",
        stamp(),
        frames.len(),
        fmt_mac(&pf),
        run.timings(),
        t0.elapsed().as_secs_f64()
    );
    run.finish(v);
}

/// The static-binaries body: VFs left without a driver, our binaries run as the user,
/// hugetlbfs usable by the user.
const BINS_BODY: &str = r#"
drivers=
for vf in $VFS; do
    if [ -e /sys/bus/pci/devices/$vf/driver ]; then d=$(basename "$(readlink /sys/bus/pci/devices/$vf/driver)"); else d=none; fi
    drivers="$drivers${drivers:+ }$d"
done
result vf-drivers "$drivers"
result fastpathctl "$(as_user fastpathctl --version)"
result pktgen "$(as_user pktgen --version)"
result nr-hugepages "$(cat /proc/sys/vm/nr_hugepages)"
result hugetlbfs-owner "$(as_user sh -c 'touch /dev/hugepages/t && stat -c %u /dev/hugepages/t')"
"#;

#[test]
fn vf_guest_static_binaries() {
    const TEST: &str = "vf_guest_static_binaries";
    let Some(peers) = require_guest(TEST, &["fastpathctl", "pktgen"]) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("gbin");
    let mut v = Verdict::new(TEST);
    let version = |b: &str| {
        let out = std::process::Command::new(peers.bin(b)).arg("--version").output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    };
    let want = [("fastpathctl", version("fastpathctl")), ("pktgen", version("pktgen"))];
    let mut run = match Guest::new(&peers)
        .static_bin("fastpathctl")
        .static_bin("pktgen")
        .vf_autoprobe(false)
        .hugepages(8)
        .body(BINS_BODY)
        .run(&dir)
    {
        Ok(r) => r,
        Err(e) => v.abort(e, &mut []),
    };
    run.check(&mut v);
    expect(&mut v, &run, "vf-drivers", "none none");
    for (b, w) in &want {
        expect(&mut v, &run, b, w);
    }
    expect(&mut v, &run, "nr-hugepages", "8");
    expect(&mut v, &run, "hugetlbfs-owner", &GUEST_UID.to_string());
    eprintln!("[{}] {TEST}: {}; test {:.2} s", stamp(), run.timings(), t0.elapsed().as_secs_f64());
    run.finish(v);
}

#[test]
fn vf_guest_timeouts() {
    const TEST: &str = "vf_guest_timeouts";
    let Some(peers) = require_guest(TEST, &[]) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let mut v = Verdict::new(TEST);
    // The body's timeout: the body is killed, the guest still prints dmesg and powers off.
    let dir = TestDir::new("gtmo");
    let body = "result started 1\nsleep 30\nresult slept 1";
    let mut run = match Guest::new(&peers).num_vfs(0).body_timeout(Duration::from_secs(2)).body(body).run(&dir) {
        Ok(r) => r,
        Err(e) => v.abort(e, &mut []),
    };
    expect(&mut v, &run, "started", "1");
    v.check(run.result("slept").is_none(), || "guest: expected the body killed before `result slept`".into());
    v.check(run.body_status() == Some(137), || {
        format!("guest: expected body exit status 137 (SIGKILL at its timeout), got {:?}", run.body_status())
    });
    v.check(run.done() && !run.timed_out(), || {
        "guest: expected FASTPATH-DONE and a poweroff after the body timeout".into()
    });
    v.check(!run.dmesg_matching("Linux version").is_empty(), || "guest: expected dmesg after the body timeout".into());
    if !v.ok() {
        return run.finish(v);
    }
    // The hard timeout: waits end at it, QEMU is killed.
    let dir = TestDir::new("gkill");
    let hard = Duration::from_secs(5);
    let mut g = match Guest::new(&peers).num_vfs(0).timeout(hard).body("sleep 60").start(&dir) {
        Ok(g) => g,
        Err(e) => v.abort(e, &mut []),
    };
    let t = Instant::now();
    let waited = g.wait_for_serial("FASTPATH-NEVER", Duration::from_secs(30));
    v.check(waited.is_err() && t.elapsed() < hard + Duration::from_secs(1), || {
        format!(
            "guest: expected wait_for_serial to fail at the hard timeout {hard:?}, got {waited:?} after {:?}",
            t.elapsed()
        )
    });
    let mut run = g.wait();
    v.check(run.timed_out() && run.wall() < hard + Duration::from_secs(1), || {
        format!("guest: expected QEMU killed at the hard timeout {hard:?}; {}", run.timings())
    });
    let mut probe = Verdict::new("probe");
    run.check(&mut probe);
    v.check(!probe.ok(), || "guest: expected GuestRun::check to fail a run killed at the hard timeout".into());
    eprintln!("[{}] {TEST}: {}; test {:.2} s", stamp(), run.timings(), t0.elapsed().as_secs_f64());
    run.finish(v);
}
