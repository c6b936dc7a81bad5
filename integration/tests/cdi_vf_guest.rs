// CDI VFs under podman in the QEMU guest (integration::guest with Guest::podman): the guest's
// `fastpath-hook cdi generate` writes /etc/cdi specs for VF 0, and `podman run --device
// fastpath.io/vf=PCI --user 1000:1000 --cap-drop=all --rootfs DIR` gets the VF: its vfio group
// node opens in the container, pktgen drives the VF with netlib's PMD to the host peer, the
// hook's ledger holds the VF while the container runs and gives it back at poststop. The VF
// is bound to vfio-pci first (`fastpathctl vf bind`; podman looks the node up before any hook
// runs), and its device cgroup rule is the one podman wrote from the CDI spec (cgroup v2).
//! QEMU guest: `podman run --device fastpath.io/vf=NAME`.

use std::time::{Duration, Instant};

use integration::guest::{fmt_mac, parse_mac, require_guest, require_podman, Guest, GuestRun, PODMAN_SETUP, VF_PCI};
use integration::{serial, stamp, TestDir, Verdict};
use netlib::igbvf::mac_for_pci;

/// Frames pktgen sends from the container.
const N: u64 = 500;
/// Where they go (nobody in the guest has it): the host peer counts them.
const OUT_MAC: &str = "02:00:00:00:00:97";
/// Our static binaries: in the guest, and (pktgen) in the container root.
const BINS: [&str; 3] = ["fastpath-hook", "fastpathctl", "pktgen"];
/// The boot's limits: podman under TCG is slow to start.
const BODY_TIMEOUT: Duration = Duration::from_secs(150);
const TIMEOUT: Duration = Duration::from_mins(4);

/// The body: hook.toml with VF 0 in a pool, the CDI specs, then podman.
const BODY: &str = r#"
VF0={VF0}
tail_of() { tail -n 8 "$1" | tr '\n' '|'; }
{SETUP}
mkdir -p /etc/fastpath
printf '[vf_pools]\nfast = ["%s"]\n' $VF0 > /etc/fastpath/hook.toml
fastpath-hook cdi generate --bridge br0 --output /etc/cdi/fastpath.io.yaml > /tmp/gen.out 2>&1
result gen-rc "$?"
result gen-out "$(tail_of /tmp/gen.out)"
result cdi-vf "$(tr -d ' \n' < /etc/cdi/fastpath.io-vf.yaml)"
G=$(iommu_group $VF0)
result group "$G"
result driver-before "$(basename "$(readlink /sys/bus/pci/devices/$VF0/driver)")"
# podman resolves a CDI device node on the host when it applies the spec, before any hook
# runs: the group node must exist, so first try with VF 0 on igbvf (recorded), then bound.
podman run --rm --network none --device fastpath.io/vf=$VF0 --rootfs /ctr /bin/true > /tmp/pre.out 2>&1
result unbound-rc "$?"
result unbound-out "$(tail_of /tmp/pre.out)"
fastpathctl vf bind $VF0 > /tmp/bind.out 2>&1
result bind-rc "$?"
result driver-bound "$(basename "$(readlink /sys/bus/pci/devices/$VF0/driver)")"
podman run --rm --network none --device fastpath.io/vf=$VF0 --user 1000:1000 --cap-drop=all --rootfs /ctr \
    /bin/sh -c 'echo "CTR id $(id -u):$(id -g)"; echo "CTR caps $(grep CapEff /proc/self/status | tr -d "\t")"; echo "CTR node $(stat -c "%t:%T %u:%g %a" /dev/vfio/$0)"; if (exec 3<>/dev/vfio/$0); then echo "CTR open ok"; else echo "CTR open failed"; fi; sleep 2; pktgen --port vf:$1 --count {N} --rate 20000 --dst-mac {OUT_MAC} --src-mac {VF0_MAC} --json --quiet; echo "CTR pktgen-rc $?"' "$G" "$VF0" > /tmp/ctr.out 2> /tmp/ctr.err &
ppid=$!
if wait_file /run/fastpath/ledger.json "$VF0" 90; then
    result ledger-during "$(tr -d ' \n' < /run/fastpath/ledger.json)"
else
    result ledger-during "no $VF0 in /run/fastpath/ledger.json after 90 s"
fi
wait $ppid
result podman-rc "$?"
for k in id caps node open pktgen-rc; do result "ctr-$k" "$(sed -n "s/^CTR $k //p" /tmp/ctr.out)"; done
result ctr-pktgen "$(grep '^{' /tmp/ctr.out | tail -n 1)"
result ctr-err "$(tail_of /tmp/ctr.err)"
result ledger-after "$(tr -d ' \n' < /run/fastpath/ledger.json 2>/dev/null)"
result driver-after "$(basename "$(readlink /sys/bus/pci/devices/$VF0/driver)")"
"#;

/// Checks one result against the expected value.
fn expect(v: &mut Verdict, run: &GuestRun, name: &str, want: &str) {
    let got = run.result(name);
    v.check(got == Some(want), || format!("guest result {name}: expected {want:?}, got {got:?}"));
}

#[test]
fn cdi_vf_guest_podman_device() {
    const TEST: &str = "cdi_vf_guest_podman_device";
    let Some(peers) = require_guest(TEST, &BINS) else { return };
    let Some(kit) = require_podman(TEST) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("gcdivf");
    let mut v = Verdict::new(TEST);
    let vf0_mac = fmt_mac(&mac_for_pci(VF_PCI[0]).expect("VF_PCI[0] is a PCI address"));
    let body = BODY
        .replace("{SETUP}", PODMAN_SETUP)
        .replace("{VF0}", VF_PCI[0])
        .replace("{N}", &N.to_string())
        .replace("{OUT_MAC}", OUT_MAC)
        .replace("{VF0_MAC}", &vf0_mac);
    let mut g = Guest::new(&peers);
    for b in BINS {
        g = g.static_bin(b);
    }
    let guest = g.podman(&kit, &["pktgen"]).body_timeout(BODY_TIMEOUT).timeout(TIMEOUT).body(&body);
    let mut run = match guest.run(&dir) {
        Ok(r) => r,
        Err(e) => v.abort(e, &mut []),
    };
    run.check(&mut v);
    expect(&mut v, &run, "gen-rc", "0");
    // VF 0 is on igbvf when the spec is written: generate says it must be bound first, and
    // podman, which looks the node up before any hook runs, refuses the device until it is.
    let gen = run.result("gen-out").unwrap_or("");
    v.check(gen.contains("not vfio-pci") && gen.contains("fastpathctl vf bind"), || {
        format!("cdi generate: expected a warning that VF 0 is not on vfio-pci yet, got {gen:?}")
    });
    let unbound = run.result("unbound-out").unwrap_or("");
    v.check(run.result("unbound-rc") != Some("0") && unbound.contains("/dev/vfio/"), || {
        format!("podman with VF 0 unbound: expected it to refuse the missing /dev/vfio node, got {unbound:?}")
    });
    let spec = run.result("cdi-vf").unwrap_or("");
    v.check(spec.contains(&format!("\"name\":\"{}\"", VF_PCI[0])), || {
        format!("guest: expected a fastpath.io/vf device named {} in the CDI spec, got {spec:?}", VF_PCI[0])
    });
    expect(&mut v, &run, "driver-before", "igbvf");
    expect(&mut v, &run, "bind-rc", "0");
    expect(&mut v, &run, "driver-bound", "vfio-pci");
    expect(&mut v, &run, "podman-rc", "0");
    expect(&mut v, &run, "ctr-id", "1000:1000");
    expect(&mut v, &run, "ctr-caps", "CapEff:0000000000000000");
    expect(&mut v, &run, "ctr-open", "ok");
    let node = run.result("ctr-node").unwrap_or("");
    v.check(node.ends_with(" 1000:1000 600"), || {
        format!("container: expected /dev/vfio/GROUP owned by 1000:1000, mode 600, got {node:?}")
    });
    expect(&mut v, &run, "ctr-pktgen-rc", "0");
    let sent = run.result_json("ctr-pktgen").and_then(|j| j["sent"].as_u64());
    v.check(sent == Some(N), || {
        format!(
            "container: expected pktgen to send {N}, got {:?} (stderr {:?})",
            run.result("ctr-pktgen"),
            run.result("ctr-err")
        )
    });
    let dst = parse_mac(OUT_MAC).expect("OUT_MAC is a MAC");
    let got = run.frames().iter().filter(|f| f.dst() == dst).count() as u64;
    v.check(got == N, || format!("host peer: expected {N} frames to {OUT_MAC} from the container's VF, got {got}"));
    let during = run.result("ledger-during").unwrap_or("");
    v.check(during.contains(&format!("\"{}\"", VF_PCI[0])), || {
        format!("guest: expected the hook's ledger to hold {} while the container ran, got {during:?}", VF_PCI[0])
    });
    let after = run.result("ledger-after").unwrap_or("");
    v.check(!after.contains(VF_PCI[0]), || {
        format!("guest: expected the ledger without {} after the container (poststop), got {after:?}", VF_PCI[0])
    });
    // The VF was on vfio-pci before the container (bound by fastpathctl): the hook leaves it there.
    expect(&mut v, &run, "driver-after", "vfio-pci");
    eprintln!(
        "[{}] {TEST}: unbound run rc {:?}: {:?}; pktgen {:?}; {got} frames on the wire; {}; test {:.2} s",
        stamp(),
        run.result("unbound-rc"),
        run.result("unbound-out"),
        run.result("ctr-pktgen"),
        run.timings(),
        t0.elapsed().as_secs_f64()
    );
    run.finish(v);
}
