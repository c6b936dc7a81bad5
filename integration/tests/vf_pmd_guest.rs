// End-to-end tests of netlib's igbvf poll-mode driver in the QEMU guest (integration::guest):
// an emulated 82576-class igb NIC with SR-IOV behind an emulated Intel IOMMU. Everything the
// issue asks for happens inside the guest: the hook's VF code (`fastpathctl vf bind --owner`)
// binds two VFs to vfio-pci and gives their nodes to uid 1000; then, as that user without
// capabilities, pktgen on VF 0 sends to the wire (64- and 1518-byte frames: the host peer
// checks every one), sink on VF 0 receives what the host sends (both sizes), pktgen on VF 0
// sends to VF 1 through the NIC's internal switch (sink on VF 1 receives them, the wire sees
// none), and a probe posts a descriptor at a never-mapped address, which the IOMMU must refuse
// (a DMAR fault in the guest's dmesg).
// The wire boot also runs fastpathd in the guest with VF 0 as its uplink (`vf` port kind) and
// vhost ports to a sink and a pktgen (wire → switch → sink, pktgen → switch → wire, counted
// and checked both ways), then an idle `sink --interrupt` on VF 1, whose CPU time over a few
// seconds must be almost nothing (it sleeps on the VF's MSI-X interrupt) and which then
// wakes on frames from the wire.
// Two boots: the wire (both directions, the switch, the interrupt), then VF to VF and the
// fault (last: it leaves VF 0 in an unknown state). A third test checks the static binaries
// never name /proc/self/pagemap.
//! QEMU guest: fastpath's igbvf PMD on SR-IOV VFs, as an unprivileged user, behind the IOMMU.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use fastpath_examples::frame::{self, Check, Template};
use fastpath_oci::is_static;
use integration::guest::{fmt_mac, parse_mac, require_guest, Frame, Guest, GuestRun, RunningGuest, GUEST_UID, VF_PCI};
use integration::{check_sink, serial, skip_or_fail, stamp, static_bin_dir, TestDir, Verdict};
use netlib::igbvf::mac_for_pci;
use serde_json::Value;

/// Frames per scenario (less than a sink's receive ring: 2047 descriptors).
const N: u64 = 2000;
/// Frame size (bytes, no FCS), as pktgen's default.
const SIZE: usize = 64;
/// The largest frame (no FCS): its buffer crosses a 4 KiB page of the pool more often than not.
const BIG: usize = 1518;
/// pktgen's rate in the guest (TCG moves ~76k frames/s; modest, so that a sink sharing the
/// guest's one vCPU keeps up).
const GUEST_PPS: u64 = 20_000;
/// The host's rate towards the guest's sink.
const HOST_PPS: u64 = 5_000;
/// The MAC outside the guest that pktgen sends to (nobody in the guest has it).
const OUT_MAC: &str = "02:00:00:00:00:99";
/// Where pktgen sends its largest frames.
const OUT_MAC_BIG: &str = "02:00:00:00:00:9a";
/// The host's source MAC for the frames it sends in.
const HOST_MAC: &str = "02:00:00:00:00:fe";
/// How long the fault probe waits for its descriptor (ms), and the guest's hard limit on it (s).
const FAULT_WAIT_MS: u64 = 500;
const FAULT_KILL_SECS: u64 = 20;
/// The static binaries the guest needs.
const BINS: [&str; 4] = ["fastpathctl", "pktgen", "sink", "vf_fault"];
/// ... and the wire boot, which also runs the switch.
const WIRE_BINS: [&str; 5] = ["fastpathctl", "pktgen", "sink", "vf_fault", "fastpathd"];
/// The wire boot's limits: its body does more than the other's.
const WIRE_BODY_TIMEOUT: Duration = Duration::from_secs(90);
const WIRE_TIMEOUT: Duration = Duration::from_secs(150);
/// What the pktgen behind the guest's switch sends to (through VF 0, the switch's uplink).
const OUT_MAC_UPLINK: &str = "02:00:00:00:00:9b";
/// Frames the idle interrupt-mode sink on VF 1 waits for.
const M: u64 = 200;
/// Seconds the idle interrupt-mode sink's CPU time is measured over.
const IDLE_SECS: u32 = 3;
/// Most of one CPU the idle interrupt-mode sink may use (a polling sink uses all of it; one
/// that naps 1 ms between runs of polls a good part).
const IDLE_CPU_MAX: f64 = 0.05;
/// Most times a second the idle interrupt-mode sink may wake: it sleeps on the interrupt for
/// up to 100 ms at a time (a sink that naps 1 ms instead wakes about 1000 times a second).
const IDLE_WAKES_PER_SEC: f64 = 25.0;

/// The start of every body: helpers, then both VFs bound by the hook's code for uid 1000.
const BIND_BODY: &str = r#"
export NO_COLOR=1
VF0={VF0}
VF1={VF1}
APP="--json --quiet"
# pktgen's ring; a sink's ring holds more than N frames, so that a sink whose vCPU the host
# does not run for a while still loses nothing (the NIC drops what finds no descriptor).
TX="--nbufs 1024 --queue-size 256"
RX="--nbufs 8192 --queue-size 2048"
# ids PID: the uid/gid lines and capability sets of a process, on one line.
ids() { grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapAmb):' /proc/$1/status | tr -s '\t\n' '  '; }
# mac_of FILE: the MAC in igbvf's "vf:PCI: up, MAC m, ..." log line.
mac_of() { sed -n 's/.*: up, MAC \([0-9a-f:]*\).*/\1/p' "$1" | head -n 1; }
# as_user_ids TAG CMD...: CMD as the user; the process records its own ids in /tmp/ids-TAG
# right before it execs CMD (same process, same credentials).
as_user_ids() {
    t=$1
    shift
    as_user sh -c 'grep -E "^(Uid|Gid|CapInh|CapPrm|CapEff|CapAmb):" /proc/$$/status | tr -s "\t\n" "  " > /tmp/ids-$0; exec "$@"' "$t" "$@"
}
# tail_of FILE: its last lines on one line.
tail_of() { tail -n 6 "$1" | tr '\n' '|'; }
# reap NAME PID OUT ERR: waits for PID, then reports its status (NAME-rc), the last line of
# its OUT (NAME) and the end of its ERR (NAME-err).
reap() { wait "$2"; result "$1-rc" "$?"; result "$1" "$(tail -n 1 "$3")"; result "$1-err" "$(tail_of "$4")"; }
for vf in $VF0 $VF1; do
    fastpathctl vf bind $vf --owner 1000:1000 > /tmp/bind.out 2>&1
    result "bind-rc-$vf" "$?"
    result "bind-out-$vf" "$(tail_of /tmp/bind.out)"
    result "driver-$vf" "$(basename "$(readlink /sys/bus/pci/devices/$vf/driver)")"
    result "node-$vf" "$(stat -c '%u:%g %a' /dev/vfio/$(iommu_group $vf))"
done
result container-node "$(stat -c '%a' /dev/vfio/vfio)"
"#;

/// Boot 1, the wire: host → sink on VF 0 (frames of both sizes), then pktgen on VF 0 → host,
/// smallest frames, then largest.
const WIRE_BODY: &str = r#"
as_user sink --port vf:$VF0 --count {N} --check --secs 15 --idle-exit 3 $APP $RX > /tmp/s0.out 2> /tmp/s0.err &
spid=$!
if wait_file /tmp/s0.err ': up' 20; then
    p=$(pidof sink)
    result sink0-proc "$(readlink /proc/$p/exe) $(ids $p)"
    VF0_MAC=$(mac_of /tmp/s0.err)
    result vf0-mac "$VF0_MAC"
    ready sink0
else
    result sink0-up "no ': up' in its log after 20 s"
fi
reap sink0 $spid /tmp/s0.out /tmp/s0.err
as_user_ids pktgen0 pktgen --port vf:$VF0 --count {N} --rate {PPS} --dst-mac {OUT_MAC} --src-mac "${VF0_MAC:-{VF0_MAC}}" $APP $TX > /tmp/p0.out 2> /tmp/p0.err
result pktgen0-rc "$?"
result pktgen0 "$(tail -n 1 /tmp/p0.out)"
result pktgen0-ids "$(cat /tmp/ids-pktgen0)"
result pktgen0-mac "$(mac_of /tmp/p0.err)"
result pktgen0-err "$(tail_of /tmp/p0.err)"
as_user_ids pktgen0big pktgen --port vf:$VF0 --count {N} --rate {PPS} --size {BIG} --dst-mac {OUT_MAC_BIG} --src-mac "${VF0_MAC:-{VF0_MAC}}" $APP $TX > /tmp/p0b.out 2> /tmp/p0b.err
result pktgen0big-rc "$?"
result pktgen0big "$(tail -n 1 /tmp/p0b.out)"
result pktgen0big-ids "$(cat /tmp/ids-pktgen0big)"
result pktgen0big-mac "$(mac_of /tmp/p0b.err)"
result pktgen0big-err "$(tail_of /tmp/p0b.err)"
# link_up NAME SECS: waits until the guest's switch says port NAME's link is up.
link_up() { i=0; until fastpathctl --ctl /tmp/fp.sock list --json 2>/dev/null | tr -d ' \n' | grep -q "\"name\":\"$1\"[^}]*\"link_up\":true"; do i=$((i + 1)); [ "$i" -gt $(($2 * 10)) ] && return 1; usleep 100000; done; }
# The switch in the guest: VF 0 its uplink, vhost ports c (a sink) and p (a pktgen).
mkdir -p /tmp/fps
fastpathd --interrupt --ctl /tmp/fp.sock --state-dir /tmp/fps --port br0:up:vf:$VF0 --port br0:c:vhost:/tmp/c.sock --port br0:p:vhost:/tmp/p.sock > /tmp/fpd.out 2> /tmp/fpd.err &
fpid=$!
wait_path /tmp/c.sock 20
sink --port vu:/tmp/c.sock --count {N} --check --secs 20 --idle-exit 3 --interrupt $APP > /tmp/sc.out 2> /tmp/sc.err &
scpid=$!
if link_up up 20 && link_up c 20; then
    UP_MAC=$(mac_of /tmp/fpd.err)
    result up-mac "$UP_MAC"
    ready uplink
else
    result uplink-up "$(fastpathctl --ctl /tmp/fp.sock list --json 2>&1 | tr -d ' \n')"
fi
reap sinkc $scpid /tmp/sc.out /tmp/sc.err
pktgen --port vu:/tmp/p.sock --count {N} --rate {UPLINK_PPS} --dst-mac {OUT_MAC_UPLINK} --src-mac "${UP_MAC:-{VF0_MAC}}" $APP > /tmp/pp.out 2> /tmp/pp.err
result pktgenp-rc "$?"
result pktgenp "$(tail -n 1 /tmp/pp.out)"
result pktgenp-err "$(tail_of /tmp/pp.err)"
sleep 1
result fpd-list "$(fastpathctl --ctl /tmp/fp.sock list --json 2>&1 | tr -d ' \n')"
kill $fpid
wait $fpid
result fpd-err "$(grep -v ' INFO ' /tmp/fpd.err | tail -n 6 | tr '\n' '|')"
result fpd-irq "$(grep -c 'receive interrupt on MSI-X vector' /tmp/fpd.err)"
# An idle sink in interrupt mode on VF 1: its CPU time (utime + stime, in ticks of 1/100 s)
# and its voluntary context switches (how often it woke) over IDLE_SECS, then frames from the
# wire wake it.
# wakes PID: its voluntary context switches.
wakes() { sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' /proc/$1/status; }
as_user sink --port vf:$VF1 --interrupt --count {M} --check --secs 40 --idle-exit 3 $APP $RX > /tmp/si.out 2> /tmp/si.err &
sipid=$!
if wait_file /tmp/si.err ': up' 20; then
    p=$(pidof sink)
    result vf1i-mac "$(mac_of /tmp/si.err)"
    sleep 1
    a=$(cut -d' ' -f14,15 /proc/$p/stat)
    u0=$(cut -d' ' -f1 /proc/uptime)
    w0=$(wakes $p)
    sleep {IDLE_SECS}
    b=$(cut -d' ' -f14,15 /proc/$p/stat)
    u1=$(cut -d' ' -f1 /proc/uptime)
    w1=$(wakes $p)
    result isink-idle "$a $b $u0 $u1"
    result isink-wakes "$w0 $w1"
    ready isink
else
    result isink-up "no ': up' in its log after 20 s"
fi
reap isink $sipid /tmp/si.out /tmp/si.err
result isink-irq "$(grep -c 'receive interrupt on MSI-X vector' /tmp/si.err)"
"#;

/// Boot 2: pktgen on VF 0 → VF 1's MAC, switched in the NIC, sink on VF 1 (a second process);
/// then the fault probe on VF 0, with a hard limit.
const SWITCH_FAULT_BODY: &str = r#"
as_user sink --port vf:$VF1 --count {N} --check --secs 15 --idle-exit 3 --idle-sleep-us 100 $APP $RX > /tmp/s1.out 2> /tmp/s1.err &
spid=$!
if wait_file /tmp/s1.err ': up' 20; then
    p=$(pidof sink)
    result sink1-proc "$(readlink /proc/$p/exe) $(ids $p)"
    VF1_MAC=$(mac_of /tmp/s1.err)
    result vf1-mac "$VF1_MAC"
    as_user_ids pktgen01 pktgen --port vf:$VF0 --count {N} --rate {PPS} --dst-mac "$VF1_MAC" --src-mac {VF0_MAC} $APP $TX > /tmp/p.out 2> /tmp/p.err
    result pktgen01-rc "$?"
    result pktgen01 "$(tail -n 1 /tmp/p.out)"
    result pktgen01-ids "$(cat /tmp/ids-pktgen01)"
    result pktgen01-mac "$(mac_of /tmp/p.err)"
    result pktgen01-err "$(tail_of /tmp/p.err)"
else
    result sink1-up "no ': up' in its log after 20 s"
fi
reap sink1 $spid /tmp/s1.out /tmp/s1.err
t0=$(cut -d' ' -f1 /proc/uptime)
timeout -s KILL {FAULT_KILL_SECS} su -s /bin/sh -c 'exec "$0" "$@"' -- user vf_fault --pci $VF0 --wait-ms {FAULT_WAIT_MS} > /tmp/f.out 2> /tmp/f.err
result fault-rc "$?"
result fault-secs "$t0 $(cut -d' ' -f1 /proc/uptime)"
result fault "$(tail -n 1 /tmp/f.out)"
result fault-err "$(tail_of /tmp/f.err)"
"#;

/// Fills in the placeholders of a body.
fn fill(body: &str, vf0_mac: &str) -> String {
    format!("{BIND_BODY}\n{body}")
        .replace("{VF0}", VF_PCI[0])
        .replace("{VF1}", VF_PCI[1])
        .replace("{N}", &N.to_string())
        .replace("{PPS}", &GUEST_PPS.to_string())
        .replace("{OUT_MAC}", OUT_MAC)
        .replace("{OUT_MAC_BIG}", OUT_MAC_BIG)
        .replace("{BIG}", &BIG.to_string())
        .replace("{VF0_MAC}", vf0_mac)
        .replace("{FAULT_WAIT_MS}", &FAULT_WAIT_MS.to_string())
        .replace("{FAULT_KILL_SECS}", &FAULT_KILL_SECS.to_string())
        .replace("{UPLINK_PPS}", &HOST_PPS.to_string())
        .replace("{OUT_MAC_UPLINK}", OUT_MAC_UPLINK)
        .replace("{M}", &M.to_string())
        .replace("{IDLE_SECS}", &IDLE_SECS.to_string())
}

/// The MAC the PMD gives VF 0 when the PF has none for it (igbvf docs: derived from the PCI address).
fn vf0_mac() -> String {
    fmt_mac(&mac_for_pci(VF_PCI[0]).expect("VF_PCI[0] is a PCI address"))
}

/// A result the guest printed so far (while it runs: from the serial log).
fn serial_result(log: &str, name: &str) -> Option<String> {
    let marker = format!("FASTPATH-RESULT {name} ");
    log.lines().rev().find_map(|l| l.find(&marker).map(|i| l[i + marker.len()..].trim_end().to_string()))
}

fn describe(r: Option<&str>) -> String {
    r.map_or_else(|| "no FASTPATH-RESULT line".to_string(), |g| format!("{g:?}"))
}

/// Checks one result against the expected value.
fn expect(v: &mut Verdict, run: &GuestRun, name: &str, want: &str) {
    let got = run.result(name);
    v.check(got == Some(want), || format!("guest result {name}: expected {want:?}, got {}", describe(got)));
}

/// Checks the binding by `fastpathctl vf bind --owner 1000:1000`: both VFs on vfio-pci, their
/// group nodes owned by the user (0660), the container node open to all (0666).
fn check_bind(v: &mut Verdict, run: &GuestRun) {
    for vf in VF_PCI {
        let out = run.result(&format!("bind-out-{vf}")).unwrap_or("").to_string();
        let rc = run.result(&format!("bind-rc-{vf}"));
        v.check(rc == Some("0"), || {
            format!(
                "guest: expected `fastpathctl vf bind {vf} --owner 1000:1000` to exit 0, got {}; it said {out:?}",
                describe(rc)
            )
        });
        v.check(out.contains("bound to vfio-pci"), || {
            format!("guest: expected fastpathctl to say \"{vf}: bound to vfio-pci (was igbvf)\", it said {out:?}")
        });
        expect(v, run, &format!("driver-{vf}"), "vfio-pci");
        expect(v, run, &format!("node-{vf}"), &format!("{GUEST_UID}:{GUEST_UID} 660"));
    }
    expect(v, run, "container-node", "666");
}

/// Checks an `ids` line (`Uid: r e s f Gid: r e s f CapInh: x CapPrm: x CapEff: x CapAmb: x`):
/// every uid and gid is [`GUEST_UID`], every capability set empty.
fn check_ids(v: &mut Verdict, what: &str, line: Option<&str>) {
    let Some(line) = line else {
        return v.fail(format!("guest: expected the uid and capabilities of {what}, got no FASTPATH-RESULT line"));
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str, n: usize| -> Vec<&str> {
        words
            .iter()
            .position(|w| *w == key)
            .map_or_else(Vec::new, |i| words.iter().skip(i + 1).take(n).copied().collect())
    };
    let uid = GUEST_UID.to_string();
    for key in ["Uid:", "Gid:"] {
        let ids = after(key, 4);
        v.check(ids.len() == 4 && ids.iter().all(|x| *x == uid), || {
            format!(
                "guest: expected {what} to run with {key} {uid} (real, effective, saved, fs), got {ids:?} in {line:?}"
            )
        });
    }
    for key in ["CapEff:", "CapPrm:", "CapAmb:"] {
        let caps = after(key, 1);
        let zero = caps.first().and_then(|c| u64::from_str_radix(c, 16).ok()) == Some(0);
        v.check(zero, || format!("guest: expected {what} to have {key} 0 (no capabilities), got {caps:?} in {line:?}"));
    }
}

/// Checks a process line from the guest (`EXE ids...`): the program is `exe` and the ids are the user's.
fn check_proc(v: &mut Verdict, run: &GuestRun, name: &str, exe: &str) {
    let line = run.result(name);
    let got_exe = line.and_then(|l| l.split_whitespace().next());
    v.check(got_exe == Some(exe), || {
        format!("guest result {name}: expected the running process to be {exe}, got {}", describe(line))
    });
    check_ids(v, &format!("the running {exe} ({name})"), line);
}

/// Checks a guest program's exit status and JSON result.
fn json_result(v: &mut Verdict, run: &GuestRun, name: &str) -> Option<Value> {
    let rc = run.result(&format!("{name}-rc"));
    let err = run.result(&format!("{name}-err")).unwrap_or("");
    v.check(rc == Some("0"), || {
        format!("guest: expected {name} to exit 0, got {}; its stderr ends {err:?}", describe(rc))
    });
    let j = run.result_json(name);
    v.check(j.is_some(), || {
        format!("guest: expected {name}'s JSON result, got {}; its stderr ends {err:?}", describe(run.result(name)))
    });
    j
}

/// Checks pktgen's result: it sent `N`, from `mac` (its own MAC as igbvf logged it).
fn check_pktgen(v: &mut Verdict, run: &GuestRun, name: &str, mac: &str) {
    let j = json_result(v, run, name);
    let sent = j.as_ref().and_then(|j| j["sent"].as_u64());
    v.check(j.is_none() || sent == Some(N), || format!("guest: expected {name} to report sent={N}, got {sent:?}"));
    expect(v, run, &format!("{name}-mac"), mac);
    check_ids(v, name, run.result(&format!("{name}-ids")));
}

/// What the host saw of pktgen's frames to `dst`: `Ok` if exactly `n`, each `size` bytes from
/// `src`, intact (FPG1 magic, checksum) with sequence numbers 0..n in order.
fn check_wire(frames: &[Frame], dst: [u8; 6], src: [u8; 6], n: u64, size: usize) -> Result<(), String> {
    let ours: Vec<&Frame> = frames.iter().filter(|f| f.dst() == dst).collect();
    let (mut good, mut damaged, mut foreign, mut wrong_src, mut wrong_len) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_out_of_order = None;
    for (i, f) in ours.iter().enumerate() {
        wrong_src += u64::from(f.src() != src);
        wrong_len += u64::from(f.data.len() != size);
        match frame::check(&f.data) {
            Check::Good(s) => {
                good += 1;
                if s != i as u64 && first_out_of_order.is_none() {
                    first_out_of_order = Some((i, s));
                }
            }
            Check::Damaged => damaged += 1,
            Check::Foreign => foreign += 1,
        }
    }
    let count = ours.len() as u64;
    if count == n && good == n && wrong_src == 0 && wrong_len == 0 && first_out_of_order.is_none() {
        return Ok(());
    }
    let mut s = format!(
        "host peer: expected {n} frames to {} from {}, {size} bytes each, intact (FPG1, checksum), sequence 0..{n} in \
         order; got {count} (of {} frames in all): {good} intact, {damaged} damaged, {foreign} not FPG1, {wrong_src} \
         from another MAC, {wrong_len} of another length",
        fmt_mac(&dst),
        fmt_mac(&src),
        frames.len()
    );
    if let Some((i, seq)) = first_out_of_order {
        let _ = write!(s, "; frame {i} has sequence {seq}");
    }
    if let Some(f) = ours.first() {
        let _ = write!(s, "; first: {:02x?}", &f.data[..f.data.len().min(40)]);
    }
    Err(s)
}

/// Checks a sink's result (every frame intact, in order) and its process.
fn check_sink_result(v: &mut Verdict, run: &GuestRun, name: &str) {
    let j = json_result(v, run, name);
    if j.is_some() {
        v.check_result(check_sink(j.as_ref(), N).map_err(|e| format!("guest {name}: {e}")));
    }
    check_proc(v, run, &format!("{name}-proc"), "/bin/sink");
}

/// Waits for the guest's `ready` marker, reads the MAC it reported as result `mac_result`,
/// and sends it `n` numbered frames from the host at [`HOST_PPS`], their sizes cycling
/// through `sizes`; returns how many went out.
fn send_when_ready(
    g: &mut RunningGuest,
    v: &mut Verdict,
    ready: &str,
    mac_result: &str,
    n: u64,
    sizes: &[usize],
) -> u64 {
    let host = parse_mac(HOST_MAC).expect("HOST_MAC is a MAC");
    if let Err(e) = g.wait_ready(ready, Duration::from_mins(1)) {
        v.fail(e);
        return 0;
    }
    let mac = serial_result(&g.serial_log(), mac_result).unwrap_or_default();
    let Some(dst) = parse_mac(&mac) else {
        v.fail(format!("guest: expected a MAC (result {mac_result}), got {mac:?}"));
        return 0;
    };
    let tpl: Vec<Template> = sizes.iter().map(|&s| Template::new(s, dst, host).expect("a valid template")).collect();
    match g.peer().send_at_rate(n, HOST_PPS, |i| {
        let tpl = &tpl[(i % tpl.len() as u64) as usize];
        let mut f = vec![0u8; tpl.len()];
        tpl.write(&mut f, i);
        f
    }) {
        Ok(sent) => sent,
        Err(e) => {
            v.fail(e);
            0
        }
    }
}

/// A port's counters in the guest switch's `fastpathctl list --json`.
fn port_counter(list: &Value, port: &str, counter: &str) -> Option<u64> {
    list.as_array()?.iter().find(|p| p["name"] == port)?["stats"][counter].as_u64()
}

/// Checks the guest's switch: the sink behind it got every frame from the wire, intact and in
/// order; the wire got every frame of the pktgen behind it, from the uplink's MAC; the switch
/// counted them on both ports.
fn check_uplink(v: &mut Verdict, run: &GuestRun) {
    let j = json_result(v, run, "sinkc");
    if j.is_some() {
        v.check_result(check_sink(j.as_ref(), N).map_err(|e| format!("guest sinkc (behind the switch): {e}")));
    }
    let p = json_result(v, run, "pktgenp");
    let sent = p.as_ref().and_then(|j| j["sent"].as_u64());
    v.check(sent == Some(N), || {
        format!("guest: expected pktgenp (behind the switch) to report sent={N}, got {sent:?}")
    });
    let up = run.result("up-mac").unwrap_or_default().to_string();
    let (Some(src), Some(out)) = (parse_mac(&up), parse_mac(OUT_MAC_UPLINK)) else {
        return v.fail(format!(
            "guest: expected the uplink's MAC (result up-mac), got {up:?}; the switch said {:?}",
            run.result("uplink-up")
        ));
    };
    v.check_result(check_wire(run.frames(), out, src, N, SIZE).map_err(|e| format!("through the switch: {e}")));
    let list = run.result_json("fpd-list").unwrap_or(Value::Null);
    let c = |port, counter| port_counter(&list, port, counter);
    let fpd = run.result("fpd-err").unwrap_or("");
    v.check(c("up", "rx_packets").is_some_and(|n| n >= N) && c("c", "tx_packets").is_some_and(|n| n >= N), || {
        format!("guest switch: expected ≥ {N} frames in on port up and out on port c, got {list}; its log: {fpd:?}")
    });
    v.check(c("p", "rx_packets") == Some(N) && c("up", "tx_packets") == Some(N), || {
        format!("guest switch: expected {N} frames in on port p and out on port up, got {list}; its log: {fpd:?}")
    });
}

/// Checks the idle interrupt-mode sink on VF 1: it used at most [`IDLE_CPU_MAX`] of a CPU
/// while idle, armed the VF's receive interrupt, and then got every frame from the wire.
/// Returns its idle CPU share, written out.
fn check_interrupt_sink(v: &mut Verdict, run: &GuestRun) -> String {
    let j = json_result(v, run, "isink");
    if j.is_some() {
        v.check_result(check_sink(j.as_ref(), M).map_err(|e| format!("guest isink (interrupt mode, VF 1): {e}")));
    }
    expect(v, run, "isink-irq", "1");
    let raw = run.result("isink-idle").unwrap_or_default();
    let f: Vec<f64> = raw.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let Some(&[ut0, st0, ut1, st1, up0, up1]) = f.get(..6) else {
        v.fail(format!("guest: expected the idle sink's CPU ticks and uptimes (result isink-idle), got {raw:?}"));
        return "-".into();
    };
    let share = (ut1 + st1 - ut0 - st0) / 100.0 / (up1 - up0).max(0.001);
    v.check(share <= IDLE_CPU_MAX, || {
        format!(
            "guest: expected the idle sink --interrupt on VF 1 to use at most {:.0} % of a CPU, it used {:.1} % ({raw}); \
             its stderr ends {:?}",
            IDLE_CPU_MAX * 100.0,
            share * 100.0,
            run.result("isink-err")
        )
    });
    let w = run.result("isink-wakes").unwrap_or_default();
    let wakes: Vec<f64> = w.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let per_sec = match wakes[..] {
        [w0, w1] => (w1 - w0) / (up1 - up0).max(0.001),
        _ => f64::NAN,
    };
    v.check(per_sec <= IDLE_WAKES_PER_SEC, || {
        format!(
            "guest: expected the idle sink --interrupt on VF 1 to wake at most {IDLE_WAKES_PER_SEC} times a second (it \
             sleeps on the VF's receive interrupt), it woke {per_sec:.1} times ({w:?} voluntary context switches)"
        )
    });
    format!("{:.1} % CPU, {per_sec:.1} wake-ups/s", share * 100.0)
}

/// The guest's DMA remapping faults in its dmesg.
fn dmar_faults(run: &GuestRun) -> Vec<&str> {
    run.dmesg_matching("DMAR: [DMA")
}

#[test]
fn vf_pmd_guest_wire_both_ways() {
    const TEST: &str = "vf_pmd_guest_wire_both_ways";
    let Some(peers) = require_guest(TEST, &WIRE_BINS) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("gpmdw");
    let mut v = Verdict::new(TEST);
    let out = parse_mac(OUT_MAC).expect("OUT_MAC is a MAC");
    let out_big = parse_mac(OUT_MAC_BIG).expect("OUT_MAC_BIG is a MAC");
    let body = fill(WIRE_BODY, &vf0_mac());
    let guest = WIRE_BINS.iter().fold(Guest::new(&peers), |g, b| g.static_bin(b));
    let mut g = match guest.body(&body).memory_mb(384).body_timeout(WIRE_BODY_TIMEOUT).timeout(WIRE_TIMEOUT).start(&dir)
    {
        Ok(g) => g,
        Err(e) => v.abort(e, &mut []),
    };
    // Host → sink on VF 0: once it is up, N frames (the sizes alternating) to the MAC it logged.
    let t = Instant::now();
    let sent_in = send_when_ready(&mut g, &mut v, "sink0", "vf0-mac", N, &[SIZE, BIG]);
    let send_secs = t.elapsed().as_secs_f64();
    // Host → the guest's switch through its uplink (VF 0) → the sink on its port c.
    let sent_uplink = send_when_ready(&mut g, &mut v, "uplink", "up-mac", N, &[SIZE]);
    // Host → the idle interrupt-mode sink on VF 1.
    let sent_isink = send_when_ready(&mut g, &mut v, "isink", "vf1i-mac", M, &[SIZE]);
    let mut run = g.wait();
    run.check(&mut v);
    check_bind(&mut v, &run);
    // Scenario 2: every frame from the host reached the sink on VF 0.
    v.check(sent_in == N, || format!("host peer: expected to send {N} frames to VF 0, sent {sent_in}"));
    check_sink_result(&mut v, &run, "sink0");
    // Scenario 1: pktgen on VF 0, as the user, to the outside MAC; the host counts them all.
    let vf0 = run.result("vf0-mac").unwrap_or_default().to_string();
    check_pktgen(&mut v, &run, "pktgen0", &vf0);
    check_pktgen(&mut v, &run, "pktgen0big", &vf0);
    match parse_mac(&vf0) {
        Some(src) => {
            v.check_result(check_wire(run.frames(), out, src, N, SIZE));
            v.check_result(check_wire(run.frames(), out_big, src, N, BIG));
        }
        None => v.fail(format!("guest: expected VF 0's MAC (result vf0-mac), got {vf0:?}")),
    }
    // The switch: wire → VF 0 (its uplink) → sink on port c, pktgen on port p → VF 0 → wire.
    v.check(sent_uplink == N, || {
        format!("host peer: expected to send {N} frames to the switch's uplink, sent {sent_uplink}")
    });
    check_uplink(&mut v, &run);
    expect(&mut v, &run, "fpd-irq", "1");
    // The idle interrupt-mode sink on VF 1: almost no CPU, then woken by the wire's frames.
    v.check(sent_isink == M, || format!("host peer: expected to send {M} frames to VF 1, sent {sent_isink}"));
    let idle = check_interrupt_sink(&mut v, &run);
    let dmar = dmar_faults(&run);
    v.check(dmar.is_empty(), || {
        format!("guest dmesg: expected no DMA remapping fault with normal traffic, got {dmar:?}")
    });
    eprintln!(
        "[{}] {TEST}: VF 0 MAC {vf0}; host sent {sent_in} frames in {send_secs:.2} s; sink0 {}; pktgen0 {}; pktgen0big {}; \
         switch: sinkc {}, pktgenp {}; interrupt sink: {idle} idle, {}; {} frames on the wire; {}; test {:.2} s",
        stamp(),
        run.result("sink0").unwrap_or("-"),
        run.result("pktgen0").unwrap_or("-"),
        run.result("pktgen0big").unwrap_or("-"),
        run.result("sinkc").unwrap_or("-"),
        run.result("pktgenp").unwrap_or("-"),
        run.result("isink").unwrap_or("-"),
        run.frames().len(),
        run.timings(),
        t0.elapsed().as_secs_f64()
    );
    run.finish(v);
}

#[test]
fn vf_pmd_guest_vf_to_vf_and_iommu_fault() {
    const TEST: &str = "vf_pmd_guest_vf_to_vf_and_iommu_fault";
    let Some(peers) = require_guest(TEST, &BINS) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("gpmds");
    let mut v = Verdict::new(TEST);
    let vf0 = vf0_mac();
    let body = fill(SWITCH_FAULT_BODY, &vf0);
    let mut run = match BINS.iter().fold(Guest::new(&peers), |g, b| g.static_bin(b)).body(&body).run(&dir) {
        Ok(r) => r,
        Err(e) => v.abort(e, &mut []),
    };
    run.check(&mut v);
    check_bind(&mut v, &run);
    // Scenario 3: VF 0 → VF 1 inside the NIC; the sink on VF 1 got all, the wire none.
    let vf1 = run.result("vf1-mac").unwrap_or_default().to_string();
    check_pktgen(&mut v, &run, "pktgen01", &vf0);
    check_sink_result(&mut v, &run, "sink1");
    match parse_mac(&vf1) {
        Some(m) => {
            let leaked = run.frames().iter().filter(|f| f.dst() == m).count();
            v.check(leaked == 0, || {
                format!(
                    "host peer: expected none of the VF 0 → VF 1 frames on the wire (the NIC switches them), got {leaked} \
                     frames to {vf1}"
                )
            });
        }
        None => v.fail(format!("guest: expected VF 1's MAC (result vf1-mac) from the sink's log, got {vf1:?}")),
    }
    let fpg = run.frames().iter().filter(|f| f.ethertype() == frame::ETHERTYPE).count();
    v.check(fpg == 0, || format!("host peer: expected no test frame (0x88b5) on the wire in this run, got {fpg}"));
    // Scenario 4: the probe's descriptor at a never-mapped IOVA: a DMAR fault for VF 0 at that
    // address, and the probe reported (within its limit) instead of hanging.
    let fault = json_result(&mut v, &run, "fault");
    let iova = fault.as_ref().and_then(|j| j["unmapped_iova"].as_str()).unwrap_or_default().to_string();
    let iova_n = u64::from_str_radix(iova.trim_start_matches("0x"), 16).ok();
    v.check(iova_n.is_some(), || format!("guest: expected the probe's unmapped_iova (hex), got {iova:?}"));
    if let Some(j) = &fault {
        v.check(j["pci"].as_str() == Some(VF_PCI[0]), || {
            format!("guest: expected the probe on {}, got {j}", VF_PCI[0])
        });
        v.check(j["foreign_pool_taken"].as_u64() == Some(0), || {
            format!("guest: expected the PMD to refuse a packet of an unmapped pool (foreign_pool_taken 0), got {j}")
        });
        let waited = j["waited_us"].as_u64();
        v.check(waited.is_some_and(|w| w <= (FAULT_WAIT_MS + 1000) * 1000), || {
            format!("guest: expected the probe to wait at most ~{FAULT_WAIT_MS} ms for the descriptor, got waited_us {waited:?}")
        });
    }
    let secs = run.result("fault-secs").and_then(|s| {
        let t: Vec<f64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        (t.len() == 2).then(|| t[1] - t[0])
    });
    v.check(secs.is_some_and(|s| s < FAULT_KILL_SECS as f64), || {
        format!("guest: expected the probe to finish within its {FAULT_KILL_SECS} s limit, took {secs:?} s")
    });
    // What the probe's memory holds (vf_fault fills it with 0x5a): had the read gone through,
    // the NIC would have sent it (QEMU's igb sends what it read; a refused read gives zeros).
    let probe_data =
        run.frames().iter().filter(|f| f.data.iter().take(60).filter(|b| **b == 0x5a).count() >= 32).count();
    v.check(probe_data == 0, || {
        format!("host peer: expected no frame carrying the probe's unmapped memory (0x5a bytes), got {probe_data}")
    });
    let dmar = dmar_faults(&run);
    let device = format!("Request device [{}]", &VF_PCI[0][5..]);
    let at = |l: &str| -> Option<u64> {
        let a = l.split("fault addr ").nth(1)?.split_whitespace().next()?;
        u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()
    };
    let page = iova_n.map(|a| a & !0xfff);
    let ours: Vec<&&str> = dmar
        .iter()
        .filter(|l| l.contains("[DMA Read") && l.contains(&device) && at(l) == page && page.is_some())
        .collect();
    v.check(!ours.is_empty(), || {
        format!(
            "guest dmesg: expected a DMAR fault \"DMAR: [DMA Read NO_PASID] {device} fault addr {iova} ...\" (the IOMMU \
             refusing the probe's descriptor); got DMAR lines {dmar:?}"
        )
    });
    let others: Vec<&&str> = dmar.iter().filter(|l| at(l) != page).collect();
    v.check(others.is_empty(), || {
        format!("guest dmesg: expected no DMAR fault but the probe's (at {iova}); got {others:?}")
    });
    eprintln!(
        "[{}] {TEST}: VF 0 {vf0}, VF 1 {vf1}; pktgen01 {}; sink1 {}; probe {} in {:.2} s; DMAR {:?}; {} frames on the \
         wire; {}; test {:.2} s",
        stamp(),
        run.result("pktgen01").unwrap_or("-"),
        run.result("sink1").unwrap_or("-"),
        run.result("fault").unwrap_or("-"),
        secs.unwrap_or(f64::NAN),
        ours.first(),
        run.frames().len(),
        run.timings(),
        t0.elapsed().as_secs_f64()
    );
    run.finish(v);
}

/// No binary the guest runs names `/proc/self/pagemap` (the PMD maps DMA at IOVA == VA
/// through VFIO; it never needs physical addresses).
#[test]
fn vf_pmd_static_binaries_never_open_pagemap() {
    const TEST: &str = "vf_pmd_static_binaries_never_open_pagemap";
    let dir = static_bin_dir();
    let mut missing = Vec::new();
    let mut v = Verdict::new(TEST);
    for b in BINS {
        let p = dir.join(b);
        if !matches!(is_static(&p), Ok(true)) {
            missing.push(p.display().to_string());
            continue;
        }
        let data = std::fs::read(&p).unwrap_or_default();
        let hits = data.windows(7).filter(|w| *w == b"pagemap").count();
        v.check(hits == 0, || format!("{}: expected no \"pagemap\" in the binary, found it {hits} times", p.display()));
    }
    if !missing.is_empty() {
        let why = format!("static binaries missing: {} (cargo xtask test builds them)", missing.join(", "));
        skip_or_fail(TEST, &why);
        return;
    }
    v.finish(&mut []);
}
