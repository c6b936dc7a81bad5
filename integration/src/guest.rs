// A QEMU guest (TCG, q35, emulated Intel IOMMU with interrupt remapping, an emulated igb
// SR-IOV NIC on a PCIe root port) booted from an initramfs built here (static busybox, the
// guest kernel's modules, static test binaries, a generated /init), for the VF tests. The
// NIC's wire is a pair of unix datagram sockets: a host-side peer thread records every frame
// the guest sends out and can send frames in. The guest reports on its serial console with
// marker lines (`FASTPATH-RESULT name value`, `FASTPATH-READY name`, `FASTPATH-DONE`), which
// are parsed here. See notes/vm-sriov.md for the measurements behind the command line.
//! A QEMU guest with an SR-IOV NIC behind an IOMMU, and a host peer on its wire.
//!
//! [`require_guest`] finds QEMU, the guest kernel (`cargo xtask setup`), static busybox and
//! the static binaries a test needs (skip, or fail with `FASTPATH_REQUIRE_PEERS=1`).
//! [`Guest`] builds the initramfs and boots it; [`Guest::run`] waits for the poweroff and
//! returns a [`GuestRun`] (results, dmesg, serial log, frames the guest sent, timings);
//! [`Guest::start`] returns a [`RunningGuest`] to talk to meanwhile: wait for a marker
//! ([`RunningGuest::wait_ready`], [`RunningGuest::wait_for_serial`]), then send frames in
//! through its [`HostPeer`].
//!
//! ```no_run
//! use std::time::Duration;
//! use integration::guest::{eth_frame, parse_mac, require_guest, Guest, BROADCAST};
//! use integration::TestDir;
//! let Some(peers) = require_guest("my_test", &["pktgen", "sink", "fastpathctl"]) else { return };
//! let dir = TestDir::new("g");
//! // Guest → host: pktgen on VF 0, as uid 1000, counted by the host peer.
//! let run = Guest::new(&peers)
//!     .static_bin("pktgen")
//!     .static_bin("fastpathctl")
//!     .body(
//!         "fastpathctl vf bind 0000:01:10.0 --owner 1000:1000\n\
//!          as_user pktgen --port vf:0000:01:10.0 --count 1000 --json --dst-mac 02:00:00:00:00:99 > /tmp/p.out\n\
//!          result pktgen \"$(tail -n 1 /tmp/p.out)\"",
//!     )
//!     .run(&dir)
//!     .unwrap();
//! let dst = parse_mac("02:00:00:00:00:99").unwrap();
//! let got = run.frames().iter().filter(|f| f.dst() == dst).count();
//! let sent = run.result_json("pktgen").and_then(|j| j["sent"].as_u64());
//! // Host → guest: start the sink, wait for its marker, then send 1000 frames at 5000/s.
//! let mut g = Guest::new(&peers)
//!     .static_bin("sink")
//!     .static_bin("fastpathctl")
//!     .body(
//!         "fastpathctl vf bind 0000:01:10.0 --owner 1000:1000\n\
//!          as_user sink --port vf:0000:01:10.0 --count 1000 --json > /tmp/s.out 2> /tmp/s.err &\n\
//!          wait_file /tmp/s.err ': up' 20 && ready sink\n\
//!          wait $!\n\
//!          result sink \"$(tail -n 1 /tmp/s.out)\"",
//!     )
//!     .start(&dir)
//!     .unwrap();
//! g.wait_ready("sink", Duration::from_secs(40)).unwrap();
//! let src = parse_mac("02:00:00:00:00:01").unwrap();
//! g.peer().send_at_rate(1000, 5000, |i| eth_frame(BROADCAST, src, 0x88b5, &i.to_be_bytes())).unwrap();
//! let run = g.wait();
//! let sink = run.result_json("sink");
//! ```
//!
//! The body is `sh` (busybox) run as root after the prelude (modules, PF up, VFs created,
//! `ulimit -l unlimited`, hugetlbfs at `/dev/hugepages`), killed after its timeout, with
//! these helpers and variables (see [`BODY_HELPERS`]): `result NAME VALUE...`, `ready NAME`,
//! `as_user CMD ARGS...` (uid/gid [`GUEST_UID`], environment and rlimits kept),
//! `vf_to_vfio PCI` (driver_override binding), `iommu_group PCI`, `wait_path PATH SECS`,
//! `wait_file FILE TEXT SECS`; `$PF` (PCI address), `$PF_IF` (its netdev), `$VFS` (the
//! VFs' PCI addresses, space-separated). Its output goes to the serial console; kernel
//! messages do not (they are printed as a block with `dmesg` after the body:
//! [`GuestRun::dmesg`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{peers_required, stamp, workspace_dir, Proc, TestDir, Verdict};

/// The PF's PCI address in the guest (the igb NIC on root port 1).
pub const PF_PCI: &str = "0000:01:00.0";
/// The first two VFs' PCI addresses in the guest (stride 2: VF n is at `01:10.(2n)`).
pub const VF_PCI: [&str; 2] = ["0000:01:10.0", "0000:01:10.2"];
/// The VFs' PCI vendor:device.
pub const VF_ID: &str = "8086:10ca";
/// The PF's MAC address (QEMU `-device igb,mac=`).
pub const PF_MAC: &str = "52:54:00:12:34:56";
/// The unprivileged user of the guest (`user`, uid = gid = 1000).
pub const GUEST_UID: u32 = 1000;
/// Marker of a result line: `FASTPATH-RESULT <name> <value>` (value: text or JSON, rest of the line).
pub const RESULT: &str = "FASTPATH-RESULT";
/// Marker the body prints (`ready NAME`) when something is up: `FASTPATH-READY <name>`.
pub const READY: &str = "FASTPATH-READY";
/// Marker of the end of the run: `FASTPATH-DONE <guest uptime>`.
pub const DONE: &str = "FASTPATH-DONE";
/// Marker of a prelude step that failed: `FASTPATH-PRELUDE-ERROR <what>`.
pub const PRELUDE_ERROR: &str = "FASTPATH-PRELUDE-ERROR";
/// The hard limit on one guest run (QEMU start to exit); QEMU is killed after it.
pub const GUEST_TIMEOUT: Duration = Duration::from_mins(1);
/// The default limit on the body inside the guest (then it is killed, and dmesg still printed).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(40);
/// Where `cargo xtask setup` links the ready guest kernel folder.
pub const DEFAULT_KERNEL_DIR: &str = "/var/cache/fastpath/guest/kernel";
/// The static busybox (`busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";
/// The QEMU binary (from `PATH`, or `$FASTPATH_QEMU`).
pub const QEMU: &str = "qemu-system-x86_64";

/// The default `-smp`: 1 boots ~15 % faster than 2 on a loaded 2-core host (11-16 s vs
/// 13-16 s wall per cycle); give scenarios with two pollers in the guest `.smp(2)`.
pub const DEFAULT_SMP: &str = "1";
/// The default `-accel` (KVM does not work on the project machines).
pub const DEFAULT_ACCEL: &str = "tcg,tb-size=64";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// What QEMU 10.0.2 (TCG) printed when it aborted during the guest's PCI enumeration, once
/// in 24 boots with `-smp 2` (none in ~30 with 1): [`Guest::run`] then boots once more.
pub const QEMU_KNOWN_ABORT: &str = "iotlb_to_section: Assertion";

const INIT_MARK: &str = "FASTPATH-INIT";
const PRELUDE_DONE: &str = "FASTPATH-PRELUDE-DONE";
const EXIT_MARK: &str = "FASTPATH-EXIT";
const DMESG_BEGIN: &str = "FASTPATH-DMESG-BEGIN";
const DMESG_END: &str = "FASTPATH-DMESG-END";

// ---------------------------------------------------------------------------
// Finding QEMU, the kernel, busybox and the static binaries.

/// The guest kernel folder: `$FASTPATH_GUEST_KERNEL_DIR`, else [`DEFAULT_KERNEL_DIR`]. It
/// holds `vmlinuz`, `modules/NAME.ko` and `load-order` (module names, dependencies first).
pub fn kernel_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_GUEST_KERNEL_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_KERNEL_DIR),
    }
}

/// Where the static binaries are: `$FASTPATH_STATIC_BIN_DIR`, else where
/// `cargo xtask test` builds them (`<workspace>/target/static/x86_64-unknown-linux-gnu/release`).
pub fn static_bin_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_STATIC_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_dir().join("target/static/x86_64-unknown-linux-gnu/release"),
    }
}

fn qemu_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FASTPATH_QEMU").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(QEMU)).find(|p| p.is_file())
}

/// `QEMU --version` as (major, minor).
fn qemu_version(qemu: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(qemu).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut n = v.split('.').map(|x| x.parse::<u32>().ok());
    Some((n.next()??, n.next()??))
}

/// Whether `p` is an x86-64 ELF executable without a program interpreter (static).
/// `Err` if it is not an ELF file at all.
pub fn is_static_elf(p: &Path) -> Result<bool, String> {
    let b = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return Err(format!("{} is not a 64-bit ELF file", p.display()));
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let Some(t) = b.get(o..o + 4) else { break };
        if u32::from_le_bytes(t.try_into().expect("4 bytes")) == 3 {
            return Ok(false); // PT_INTERP: dynamically linked
        }
    }
    Ok(true)
}

/// What a guest test found: QEMU, the guest kernel folder, busybox and the static binaries.
#[derive(Debug, Clone)]
pub struct GuestPeers {
    qemu: PathBuf,
    kernel: PathBuf,
    bins: PathBuf,
}

impl GuestPeers {
    /// Path of one of our static binaries.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// The guest kernel folder.
    pub fn kernel_dir(&self) -> &Path {
        &self.kernel
    }

    /// The QEMU binary.
    pub fn qemu(&self) -> &Path {
        &self.qemu
    }
}

/// Finds QEMU (>= 8.0, for igb SR-IOV), the guest kernel ([`kernel_dir`]), static busybox
/// and our static binaries `bins` (in [`static_bin_dir`]). When something is missing: panics
/// if `FASTPATH_REQUIRE_PEERS=1`, else prints a loud SKIPPED line and returns `None`.
pub fn require_guest(test: &str, bins: &[&str]) -> Option<GuestPeers> {
    let mut missing = Vec::new();
    let qemu = qemu_path();
    match &qemu {
        None => missing.push(format!("{QEMU} not found in PATH or $FASTPATH_QEMU (cargo xtask setup)")),
        Some(q) => match qemu_version(q) {
            Some(v) if v >= (8, 0) => {}
            v => missing.push(format!(
                "{} is version {}, igb SR-IOV needs >= 8.0 (cargo xtask setup: bookworm-backports)",
                q.display(),
                v.map_or_else(|| "unknown".to_string(), |(a, b)| format!("{a}.{b}"))
            )),
        },
    }
    let kernel = kernel_dir();
    for f in ["vmlinuz", "load-order"] {
        if !kernel.join(f).is_file() {
            missing.push(format!(
                "guest kernel: no {} (cargo xtask setup, or set FASTPATH_GUEST_KERNEL_DIR)",
                kernel.join(f).display()
            ));
        }
    }
    match is_static_elf(Path::new(BUSYBOX)) {
        Ok(true) => {}
        Ok(false) => missing.push(format!("{BUSYBOX} is not static (apt-get install busybox-static)")),
        Err(e) => missing.push(format!("{e} (apt-get install busybox-static)")),
    }
    let dir = static_bin_dir();
    for b in bins {
        let p = dir.join(b);
        match is_static_elf(&p) {
            Ok(true) => {}
            Ok(false) => missing.push(format!("{} is not a static executable", p.display())),
            Err(_) => missing.push(format!(
                "static {b} not found in {} (cargo xtask test builds it; or RUSTFLAGS=\"-C target-feature=+crt-static\" \
                 cargo build --release --target x86_64-unknown-linux-gnu --target-dir target/static, and set \
                 FASTPATH_STATIC_BIN_DIR)",
                dir.display()
            )),
        }
    }
    if let (true, Some(qemu)) = (missing.is_empty(), qemu) {
        return Some(GuestPeers { qemu, kernel, bins: dir });
    }
    let reason = missing.join("; ");
    assert!(!peers_required(), "{test}: FASTPATH_REQUIRE_PEERS=1 but a peer is missing: {reason}");
    let stars = "*".repeat(72);
    let msg = format!("\n{stars}\nSKIPPED: {test}: {reason}\n{stars}\n");
    let _ = std::io::stderr().write_all(msg.as_bytes());
    None
}

// ---------------------------------------------------------------------------
// The initramfs (cpio "newc", uncompressed: the kernel unpacks it faster than it would
// inflate it under TCG).

/// Writes a cpio newc archive; parent directories are added before their entries.
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn new() -> Self {
        Self { buf: Vec::new(), ino: 1, dirs: BTreeSet::new() }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170_000 == 0o040_000 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            let _ = write!(self.buf, "{f:08x}");
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn dir(&mut self, path: &str) {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, data: &[u8], perm: u32) {
        self.entry(path, 0o100_000 | (perm & 0o7777), (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, 0o120_777, (0, 0), target.as_bytes());
    }

    fn chardev(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, 0o020_600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

/// Shell helpers and variables every body gets (sourced before the body; see the module docs).
pub const BODY_HELPERS: &str = r#"# fastpath guest body helpers (integration::guest)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# result NAME VALUE...: one result line for the host (value: text or JSON, one line).
result() { n="$1"; shift; echo "FASTPATH-RESULT $n $*"; }
# ready NAME: tells the host something is up (RunningGuest::wait_ready).
ready() { echo "FASTPATH-READY $1"; }
# as_user CMD ARGS...: runs CMD as user (uid/gid 1000), keeping the environment and rlimits.
as_user() { su -s /bin/sh -c 'exec "$0" "$@"' -- user "$@"; }
# iommu_group PCI: the IOMMU group number of a PCI device.
iommu_group() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
# wait_path PATH SECS: waits (10 ms steps) until PATH exists; status 1 if it does not in time.
wait_path() { i=0; while [ ! -e "$1" ]; do i=$((i + 1)); [ "$i" -gt $(($2 * 100)) ] && return 1; usleep 10000; done; }
# wait_file FILE TEXT SECS: waits until FILE contains TEXT (e.g. a program's "up" log line).
wait_file() { i=0; until grep -q -- "$2" "$1" 2>/dev/null; do i=$((i + 1)); [ "$i" -gt $(($3 * 100)) ] && return 1; usleep 10000; done; }
# vf_to_vfio PCI: binds a VF to vfio-pci through driver_override (stand-in for fastpathctl vf bind).
vf_to_vfio() {
    echo vfio-pci > "/sys/bus/pci/devices/$1/driver_override" || return 1
    if [ -e "/sys/bus/pci/devices/$1/driver" ]; then echo "$1" > "/sys/bus/pci/devices/$1/driver/unbind" || return 1; fi
    echo "$1" > /sys/bus/pci/drivers_probe || return 1
    wait_path "/dev/vfio/$(iommu_group "$1")" 5
}
"#;

/// The `/init` prelude (mounts, modules, PF up, VFs, users), the body, then dmesg and poweroff.
/// `{NUM_VFS}`, `{AUTOPROBE}` and `{BODY_SECS}` are filled in.
const INIT: &str = r#"#!/bin/sh
# fastpath guest /init (integration::guest): prelude, body, dmesg, poweroff.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/hugepages /tmp /run
mount -t hugetlbfs -o mode=1777 none /dev/hugepages
# Kernel messages stay out of the console from now on (they are printed with dmesg at the end),
# so that marker lines are never interleaved with them.
echo 1 > /proc/sys/kernel/printk
up() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "FASTPATH-PRELUDE-ERROR $*"; }
echo "FASTPATH-INIT $(up)"
for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
ip link set lo up
export PF=0000:01:00.0
i=0
while [ ! -d /sys/bus/pci/devices/$PF/net ] && [ $i -lt 500 ]; do i=$((i + 1)); usleep 10000; done
export PF_IF=$(ls /sys/bus/pci/devices/$PF/net 2>/dev/null | head -n 1)
[ -n "$PF_IF" ] || fail "no netdev for the PF $PF (igb)"
# The PF driver must be up: it answers the VFs' mailbox.
ip link set "$PF_IF" up || fail "ip link set $PF_IF up"
echo {AUTOPROBE} > /sys/bus/pci/devices/$PF/sriov_drivers_autoprobe || fail "sriov_drivers_autoprobe"
if [ {NUM_VFS} -gt 0 ]; then
    echo {NUM_VFS} > /sys/bus/pci/devices/$PF/sriov_numvfs || fail "echo {NUM_VFS} > sriov_numvfs"
fi
VFS=
n=0
while [ $n -lt {NUM_VFS} ]; do
    i=0
    while [ ! -e /sys/bus/pci/devices/$PF/virtfn$n ] && [ $i -lt 1000 ]; do i=$((i + 1)); usleep 10000; done
    vf=$(basename "$(readlink /sys/bus/pci/devices/$PF/virtfn$n)")
    [ -e /sys/bus/pci/devices/$PF/virtfn$n ] || fail "VF $n did not appear"
    VFS="$VFS${VFS:+ }$vf"
    n=$((n + 1))
done
export VFS
# Unprivileged users may lock memory (netlib's DMA buffers): rlimits are inherited by as_user.
ulimit -l unlimited || fail "ulimit -l unlimited"
chmod 1777 /tmp
chown -R 1000:1000 /home/user
echo "FASTPATH-PRELUDE-DONE $(up)"
timeout -s KILL {BODY_SECS} /bin/sh /lib/fastpath/body.sh
echo "FASTPATH-EXIT $?"
echo "FASTPATH-DMESG-BEGIN"
dmesg
echo "FASTPATH-DMESG-END"
echo "FASTPATH-DONE $(up)"
poweroff -f
"#;

// ---------------------------------------------------------------------------
// The guest.

/// A guest to boot: the builder. See the module docs for the body's helpers.
#[derive(Debug, Clone)]
pub struct Guest {
    peers: GuestPeers,
    bins: Vec<(String, PathBuf)>,
    files: Vec<(String, Vec<u8>, u32)>,
    body: String,
    num_vfs: u32,
    vf_autoprobe: bool,
    memory_mb: u32,
    timeout: Duration,
    body_timeout: Duration,
    kernel_args: Vec<String>,
    smp: u32,
    accel: String,
    hugepages: u32,
}

impl Guest {
    /// A guest with 2 VFs (autoprobed by igbvf, as on a host), 256 MB, an empty body,
    /// [`GUEST_TIMEOUT`] and [`BODY_TIMEOUT`].
    pub fn new(peers: &GuestPeers) -> Self {
        Self {
            peers: peers.clone(),
            bins: Vec::new(),
            files: Vec::new(),
            body: String::new(),
            num_vfs: 2,
            vf_autoprobe: true,
            memory_mb: 256,
            timeout: GUEST_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            kernel_args: Vec::new(),
            smp: env_or("FASTPATH_GUEST_SMP", DEFAULT_SMP).parse().unwrap_or(1),
            accel: env_or("FASTPATH_GUEST_ACCEL", DEFAULT_ACCEL),
            hugepages: 0,
        }
    }

    /// Puts our static binary `name` (from [`static_bin_dir`]) at `/bin/NAME` in the guest.
    #[must_use]
    pub fn static_bin(self, name: &str) -> Self {
        let p = self.peers.bin(name);
        self.bin_from(name, &p)
    }

    /// Puts the static executable `path` at `/bin/NAME` in the guest.
    #[must_use]
    pub fn bin_from(mut self, name: &str, path: &Path) -> Self {
        self.bins.push((name.to_string(), path.to_path_buf()));
        self
    }

    /// Puts a file with `contents` and permission bits `mode` at `guest_path`.
    #[must_use]
    pub fn file(mut self, guest_path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((guest_path.to_string(), contents.into(), mode));
        self
    }

    /// The test body: `sh` run as root after the prelude, with [`BODY_HELPERS`].
    #[must_use]
    pub fn body(mut self, script: &str) -> Self {
        script.clone_into(&mut self.body);
        self
    }

    /// How many VFs the prelude creates (`sriov_numvfs`; 0 to leave SR-IOV off; max 7).
    #[must_use]
    pub fn num_vfs(mut self, n: u32) -> Self {
        self.num_vfs = n;
        self
    }

    /// Whether new VFs are probed by a driver (igbvf) at once (`sriov_drivers_autoprobe`).
    #[must_use]
    pub fn vf_autoprobe(mut self, on: bool) -> Self {
        self.vf_autoprobe = on;
        self
    }

    /// Guest memory in MB (`-m`).
    #[must_use]
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// The hard limit on the whole run (QEMU is killed after it).
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The limit on the body inside the guest (it is killed after it; dmesg is still printed).
    #[must_use]
    pub fn body_timeout(mut self, t: Duration) -> Self {
        self.body_timeout = t;
        self
    }

    /// Virtual CPUs (`-smp`; default [`DEFAULT_SMP`] or `$FASTPATH_GUEST_SMP`).
    #[must_use]
    pub fn smp(mut self, n: u32) -> Self {
        self.smp = n;
        self
    }

    /// QEMU's `-accel` (default [`DEFAULT_ACCEL`] or `$FASTPATH_GUEST_ACCEL`).
    #[must_use]
    pub fn accel(mut self, accel: &str) -> Self {
        accel.clone_into(&mut self.accel);
        self
    }

    /// Reserves `n` 2 MB hugepages at boot (`hugepages=N`); hugetlbfs is always mounted at
    /// `/dev/hugepages` (mode 1777, so `as_user` programs can use it).
    #[must_use]
    pub fn hugepages(mut self, n: u32) -> Self {
        self.hugepages = n;
        self
    }

    /// Adds a kernel command-line argument.
    #[must_use]
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        self.kernel_args.push(arg.to_string());
        self
    }

    /// The generated `/init`.
    pub fn init_script(&self) -> String {
        INIT.replace("{NUM_VFS}", &self.num_vfs.to_string())
            .replace("{AUTOPROBE}", if self.vf_autoprobe { "1" } else { "0" })
            .replace("{BODY_SECS}", &self.body_timeout.as_secs().max(1).to_string())
    }

    /// Builds the initramfs (uncompressed cpio): busybox and its applet links, the kernel
    /// modules, `/etc` with `root` and `user`, our binaries (debug info stripped into `dir`
    /// when `strip` is there), the files, `/init` and the body.
    pub fn initramfs(&self, dir: &TestDir) -> Result<Vec<u8>, String> {
        let mut c = Cpio::new();
        for d in ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc", "lib"] {
            c.dir(d);
        }
        c.dir("home/user");
        c.chardev("dev/console", 5, 1);
        c.chardev("dev/null", 1, 3);
        let bb = std::fs::read(BUSYBOX).map_err(|e| format!("cannot read {BUSYBOX}: {e}"))?;
        c.file("bin/busybox", &bb, 0o755);
        let list = std::process::Command::new(BUSYBOX)
            .arg("--list-full")
            .output()
            .map_err(|e| format!("{BUSYBOX} --list-full: {e}"))?;
        let ours: BTreeSet<&str> = self.bins.iter().map(|(n, _)| n.as_str()).collect();
        for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|l| !l.is_empty()) {
            let name = applet.rsplit('/').next().unwrap_or(applet);
            if applet != "bin/busybox" && !ours.contains(name) {
                c.symlink(applet, "/bin/busybox");
            }
        }
        let kdir = self.peers.kernel_dir();
        let order = std::fs::read_to_string(kdir.join("load-order"))
            .map_err(|e| format!("cannot read {}: {e}", kdir.join("load-order").display()))?;
        c.file("lib/modules/load-order", order.as_bytes(), 0o644);
        for m in order.lines().map(str::trim).filter(|m| !m.is_empty()) {
            let p = kdir.join("modules").join(format!("{m}.ko"));
            let data = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            c.file(&format!("lib/modules/{m}.ko"), &data, 0o644);
        }
        c.file(
            "etc/passwd",
            format!("root:x:0:0:root:/root:/bin/sh\nuser:x:{GUEST_UID}:{GUEST_UID}:user:/home/user:/bin/sh\n")
                .as_bytes(),
            0o644,
        );
        c.file("etc/group", format!("root:x:0:\nuser:x:{GUEST_UID}:\n").as_bytes(), 0o644);
        c.file("etc/shells", b"/bin/sh\n", 0o644);
        for (name, path) in &self.bins {
            let data = stripped(path, &dir.join(&format!("strip-{name}")))?;
            c.file(&format!("bin/{name}"), &data, 0o755);
        }
        for (p, data, mode) in &self.files {
            c.file(p, data, *mode);
        }
        c.file("init", self.init_script().as_bytes(), 0o755);
        c.file("lib/fastpath/body.sh", format!("{BODY_HELPERS}\n{}\n", self.body).as_bytes(), 0o755);
        Ok(c.finish())
    }

    /// The QEMU arguments (notes/vm-sriov.md), with its files in `dir`.
    fn qemu_args(&self, dir: &TestDir, initrd: &Path) -> Vec<String> {
        let d = |n: &str| dir.join(n).display().to_string();
        let mut append = "console=ttyS0 intel_iommu=on iommu=pt panic=-1".to_string();
        if self.hugepages > 0 {
            let _ = write!(append, " hugepages={}", self.hugepages);
        }
        for a in &self.kernel_args {
            append.push(' ');
            append.push_str(a);
        }
        [
            "-machine",
            "q35",
            "-accel",
            &self.accel,
            "-cpu",
            "max",
            "-smp",
            &self.smp.to_string(),
            "-m",
            &format!("{}M", self.memory_mb),
            "-device",
            "intel-iommu,intremap=on,caching-mode=on",
            "-device",
            "pcie-root-port,id=rp1,slot=1,chassis=1",
            "-netdev",
            &format!(
                "dgram,id=n1,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                d("qemu.sock"),
                d("host.sock")
            ),
            "-device",
            &format!("igb,netdev=n1,bus=rp1,mac={PF_MAC}"),
            "-object",
            &format!("filter-dump,id=d1,netdev=n1,file={}", d("n1.pcap")),
            "-kernel",
            &self.peers.kernel_dir().join("vmlinuz").display().to_string(),
            "-initrd",
            &initrd.display().to_string(),
            "-append",
            &append,
            "-nographic",
            "-serial",
            &format!("file:{}", d("serial.log")),
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Builds the initramfs in `dir`, binds the host peer (`dir/host.sock`) and starts QEMU.
    pub fn start(self, dir: &TestDir) -> Result<RunningGuest, String> {
        self.start_as("qemu", dir)
    }

    /// [`start`](Self::start) with QEMU's output files named `NAME.out`/`NAME.err`.
    fn start_as(self, name: &str, dir: &TestDir) -> Result<RunningGuest, String> {
        let t = Instant::now();
        let image = self.initramfs(dir)?;
        let initrd = dir.join("initramfs.cpio");
        std::fs::write(&initrd, &image).map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
        let build = t.elapsed();
        for f in ["serial.log", "qemu.sock", "n1.pcap"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let started = Instant::now();
        let peer = HostPeer::bind(&dir.join("host.sock"), &dir.join("qemu.sock"), started)?;
        let args = self.qemu_args(dir, &initrd);
        let qemu = Proc::spawn(name, dir, &self.peers.qemu, &args, &[]);
        eprintln!(
            "[{}] guest: initramfs {:.1} MB built in {:.2} s; QEMU started (TCG, hard timeout {:?})",
            stamp(),
            image.len() as f64 / 1e6,
            build.as_secs_f64(),
            self.timeout
        );
        Ok(RunningGuest {
            qemu,
            serial: dir.join("serial.log"),
            peer,
            started,
            deadline: started + self.timeout,
            timeout: self.timeout,
            seen: Vec::new(),
        })
    }

    /// [`start`](Self::start), then [`RunningGuest::wait`]. If QEMU aborts on its known TCG
    /// race ([`QEMU_KNOWN_ABORT`]) before the guest is done, the guest is booted once more
    /// (said loudly on stderr, and in [`GuestRun::timings`]).
    pub fn run(self, dir: &TestDir) -> Result<GuestRun, String> {
        let again = self.clone();
        let first = self.start(dir)?.wait();
        if !first.hit_known_qemu_abort() {
            return Ok(first);
        }
        let why = first.qemu_stderr().lines().find(|l| l.contains(QEMU_KNOWN_ABORT)).unwrap_or_default().to_string();
        let stars = "*".repeat(72);
        let msg = format!("\n{stars}\nguest: QEMU aborted ({why}): booting the guest once more\n{stars}\n");
        let _ = std::io::stderr().write_all(msg.as_bytes());
        let mut second = again.start_as("qemu-retry", dir)?.wait();
        second.retried = Some(why);
        Ok(second)
    }
}

/// `path`'s bytes without debug info (`strip --strip-debug` into `tmp`), or as they are
/// when `strip` fails or is missing.
fn stripped(path: &Path, tmp: &Path) -> Result<Vec<u8>, String> {
    let ok = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(tmp)
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let src = if ok { tmp } else { path };
    let data = std::fs::read(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    let _ = std::fs::remove_file(tmp);
    Ok(data)
}

/// A booted guest: QEMU (killed on drop) and the host peer on its wire.
#[derive(Debug)]
pub struct RunningGuest {
    qemu: Proc,
    serial: PathBuf,
    peer: HostPeer,
    started: Instant,
    deadline: Instant,
    timeout: Duration,
    seen: Vec<(String, Duration)>,
}

impl RunningGuest {
    /// The serial console so far (`\r` removed).
    pub fn serial_log(&self) -> String {
        read_serial(&self.serial)
    }

    /// The host peer (frames the guest sent; send frames in).
    pub fn peer(&self) -> &HostPeer {
        &self.peer
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        self.qemu.try_status().is_none()
    }

    /// Waits up to `t` (and never past the hard timeout) until a serial line contains
    /// `needle`; returns the time since QEMU started. `Err` if QEMU exits or time runs out.
    pub fn wait_for_serial(&mut self, needle: &str, t: Duration) -> Result<Duration, String> {
        let until = (Instant::now() + t).min(self.deadline);
        loop {
            if self.serial_log().lines().any(|l| l.contains(needle)) {
                let at = self.started.elapsed();
                self.seen.push((needle.to_string(), at));
                eprintln!("[{}] guest: {needle:?} on serial {:.2} s after QEMU started", stamp(), at.as_secs_f64());
                return Ok(at);
            }
            if let Some(s) = self.qemu.try_status() {
                return Err(format!(
                    "guest: expected {needle:?} on the serial console; QEMU exited first ({s}) after {:.2} s",
                    self.started.elapsed().as_secs_f64()
                ));
            }
            if Instant::now() >= until {
                return Err(format!(
                    "guest: expected {needle:?} on the serial console within {t:?} (hard timeout {:?}); not seen after \
                     {:.2} s",
                    self.timeout,
                    self.started.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `FASTPATH-READY NAME` (the body ran `ready NAME`).
    pub fn wait_ready(&mut self, name: &str, t: Duration) -> Result<Duration, String> {
        self.wait_for_serial(&format!("{READY} {name}"), t)
    }

    /// Waits for QEMU to exit (the guest powers off after the body), killing it at the hard
    /// timeout; returns the run's results. The host peer stops recording.
    pub fn wait(mut self) -> GuestRun {
        let mut done_at = None;
        let timed_out = loop {
            if done_at.is_none() && self.serial_log().contains(DONE) {
                done_at = Some(self.started.elapsed());
            }
            if self.qemu.try_status().is_some() {
                break false;
            }
            if Instant::now() >= self.deadline {
                eprintln!("[{}] guest: hard timeout {:?} reached: killing QEMU", stamp(), self.timeout);
                self.qemu.kill();
                break true;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let wall = self.started.elapsed();
        // Frames QEMU sent just before it exited.
        std::thread::sleep(Duration::from_millis(50));
        self.peer.stop();
        let status = self.qemu.try_status();
        let run = GuestRun {
            serial: self.serial_log(),
            qemu: self.qemu,
            status,
            timed_out,
            wall,
            done_at,
            seen: self.seen,
            frames: self.peer.frames(),
            retried: None,
        };
        eprintln!("[{}] guest: {}", stamp(), run.timings());
        run
    }
}

fn read_serial(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).replace('\r', "")
}

// ---------------------------------------------------------------------------
// The results.

/// A finished guest run: the serial log and what it says, QEMU's exit, the captured frames.
#[derive(Debug)]
pub struct GuestRun {
    serial: String,
    qemu: Proc,
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    wall: Duration,
    done_at: Option<Duration>,
    seen: Vec<(String, Duration)>,
    frames: Vec<Frame>,
    retried: Option<String>,
}

/// The text after `marker ` on the first line that contains `marker` (markers may follow
/// other output on the same console line).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let i = line.find(marker)?;
    let rest = &line[i + marker.len()..];
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix(' ')
}

impl GuestRun {
    /// The whole serial console (kernel boot messages, then the init's output; `\r` removed).
    pub fn serial_log(&self) -> &str {
        &self.serial
    }

    /// Every `FASTPATH-RESULT name value` line, in order, as (name, value).
    pub fn results(&self) -> Vec<(&str, &str)> {
        self.serial
            .lines()
            .filter_map(|l| after(l, RESULT))
            .map(|r| r.split_once(' ').map_or((r, ""), |(n, v)| (n, v.trim_end())))
            .collect()
    }

    /// The value of the last result `name`.
    pub fn result(&self, name: &str) -> Option<&str> {
        self.results().into_iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The last result `name` parsed as JSON.
    pub fn result_json(&self, name: &str) -> Option<Value> {
        self.result(name).and_then(|v| serde_json::from_str(v).ok())
    }

    /// Whether the guest reached `FASTPATH-DONE` (the body ended and dmesg was printed).
    pub fn done(&self) -> bool {
        self.serial.lines().any(|l| after(l, DONE).is_some())
    }

    /// The body's exit status (`FASTPATH-EXIT`; 137 when it hit the body timeout).
    pub fn body_status(&self) -> Option<i32> {
        self.serial.lines().find_map(|l| after(l, EXIT_MARK)).and_then(|v| v.trim().parse().ok())
    }

    /// The prelude steps that failed (`FASTPATH-PRELUDE-ERROR what`).
    pub fn prelude_errors(&self) -> Vec<&str> {
        self.serial.lines().filter_map(|l| after(l, PRELUDE_ERROR)).collect()
    }

    /// The guest's kernel log (its `dmesg` after the body), one entry per line.
    pub fn dmesg(&self) -> Vec<&str> {
        self.serial
            .lines()
            .skip_while(|l| !l.contains(DMESG_BEGIN))
            .skip(1)
            .take_while(|l| !l.contains(DMESG_END))
            .collect()
    }

    /// The dmesg lines containing `needle`.
    pub fn dmesg_matching(&self, needle: &str) -> Vec<&str> {
        self.dmesg().into_iter().filter(|l| l.contains(needle)).collect()
    }

    /// Every frame the guest sent out on its NIC, in order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The guest's uptime (s) printed with a marker (`FASTPATH-INIT`, `FASTPATH-PRELUDE-DONE`, `FASTPATH-DONE`).
    fn uptime_at(&self, marker: &str) -> Option<f64> {
        self.serial.lines().find_map(|l| after(l, marker)).and_then(|v| v.trim().parse().ok())
    }

    /// Wall time from QEMU's start to its exit (or kill).
    pub fn wall(&self) -> Duration {
        self.wall
    }

    /// Whether QEMU was killed at the hard timeout.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Whether QEMU aborted on its known TCG race ([`QEMU_KNOWN_ABORT`]) before `FASTPATH-DONE`.
    pub fn hit_known_qemu_abort(&self) -> bool {
        !self.timed_out && !self.done() && self.qemu_stderr().contains(QEMU_KNOWN_ABORT)
    }

    /// QEMU's stderr (e.g. `vtd_iommu_translate: detected translation failure`).
    pub fn qemu_stderr(&self) -> String {
        self.qemu.stderr()
    }

    /// One line of timings: wall, and the guest's uptime at init, after the prelude, at the end.
    pub fn timings(&self) -> String {
        let up = |m| self.uptime_at(m).map_or_else(|| "-".to_string(), |s| format!("{s:.2} s"));
        let mut s = format!(
            "wall {:.2} s (QEMU start to exit{}); guest uptime: /init {}, prelude done {}, done {}",
            self.wall.as_secs_f64(),
            if self.timed_out { ", KILLED at the hard timeout" } else { "" },
            up(INIT_MARK),
            up(PRELUDE_DONE),
            up(DONE)
        );
        if let Some(d) = self.done_at {
            let _ = write!(s, "; FASTPATH-DONE seen at wall {:.2} s", d.as_secs_f64());
        }
        for (m, at) in &self.seen {
            let _ = write!(s, "; {m:?} at wall {:.2} s", at.as_secs_f64());
        }
        if let Some(why) = &self.retried {
            let _ = write!(s, "; second boot: QEMU aborted the first ({why})");
        }
        s
    }

    /// Checks the run itself: QEMU exited on its own with status 0, the prelude had no error,
    /// the body exited 0 and the guest reached `FASTPATH-DONE`.
    pub fn check(&self, v: &mut Verdict) {
        v.check(!self.timed_out, || {
            format!(
                "guest: expected it to power off on its own; QEMU was killed after {:.1} s",
                self.wall.as_secs_f64()
            )
        });
        if let Some(s) = self.status.filter(|_| !self.timed_out) {
            v.check(s.success(), || format!("guest: expected QEMU to exit with status 0 at poweroff, got {s}"));
        }
        v.check(self.serial.contains(INIT_MARK), || {
            "guest: expected the kernel to run /init (FASTPATH-INIT on serial); it did not (see the serial log)".into()
        });
        for e in self.prelude_errors() {
            v.fail(format!("guest prelude: {e}"));
        }
        let rc = self.body_status();
        v.check(rc == Some(0), || {
            format!(
                "guest: expected the body to exit 0, got {}",
                rc.map_or_else(|| "no FASTPATH-EXIT line".into(), |r| r.to_string())
            )
        });
        v.check(self.done(), || "guest: expected FASTPATH-DONE on serial".into());
    }

    /// The last `n` lines of the serial console (without the dmesg block) and QEMU's
    /// stderr, for failure notes.
    pub fn describe(&self, n: usize) -> String {
        let lines: Vec<&str> = self.serial.lines().collect();
        let mut s = format!("guest serial console, last {n} lines ({}):\n", self.timings());
        for l in &lines[lines.len().saturating_sub(n)..] {
            let _ = writeln!(s, "    | {l}");
        }
        let err = self.qemu_stderr();
        if !err.trim().is_empty() {
            let _ = writeln!(s, "  QEMU stderr:");
            for l in err.lines().take(20) {
                let _ = writeln!(s, "    | {l}");
            }
        }
        s
    }

    /// Finishes `v`: on failure, the serial tail is added as a note and QEMU's output dumped.
    pub fn finish(&mut self, mut v: Verdict) {
        if !v.ok() {
            v.note(self.describe(60));
        }
        v.finish(&mut [&mut self.qemu]);
    }
}

// ---------------------------------------------------------------------------
// The host side of the guest NIC's wire.

/// One Ethernet frame the guest sent (one datagram from QEMU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// When it arrived, since QEMU started.
    pub at: Duration,
    /// The frame, from the destination MAC on (no FCS).
    pub data: Vec<u8>,
}

impl Frame {
    /// Destination MAC (zeros if the frame is shorter).
    pub fn dst(&self) -> [u8; 6] {
        self.data.get(..6).and_then(|b| b.try_into().ok()).unwrap_or_default()
    }

    /// Source MAC.
    pub fn src(&self) -> [u8; 6] {
        self.data.get(6..12).and_then(|b| b.try_into().ok()).unwrap_or_default()
    }

    /// EtherType (0 if the frame is shorter).
    pub fn ethertype(&self) -> u16 {
        self.data.get(12..14).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// The host peer: a thread records every frame QEMU sends to `host.sock`; frames sent to
/// `qemu.sock` arrive at the guest's NIC. Stops on drop.
#[derive(Debug)]
pub struct HostPeer {
    sock: Arc<UnixDatagram>,
    qemu_sock: PathBuf,
    frames: Arc<Mutex<Vec<Frame>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostPeer {
    fn bind(host_sock: &Path, qemu_sock: &Path, t0: Instant) -> Result<Self, String> {
        let _ = std::fs::remove_file(host_sock);
        let sock = UnixDatagram::bind(host_sock).map_err(|e| format!("cannot bind {}: {e}", host_sock.display()))?;
        sock.set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| format!("set_read_timeout: {e}"))?;
        // A send blocks while QEMU's socket is full (the guest NIC has no free RX buffer):
        // bounded, so that a stuck guest fails the test instead of hanging it.
        sock.set_write_timeout(Some(Duration::from_secs(2))).map_err(|e| format!("set_write_timeout: {e}"))?;
        let sock = Arc::new(sock);
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sock, frames, stop) = (Arc::clone(&sock), Arc::clone(&frames), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("guest-host-peer".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = sock.recv(&mut buf) {
                            let f = Frame { at: t0.elapsed(), data: buf[..n].to_vec() };
                            frames.lock().unwrap_or_else(PoisonError::into_inner).push(f);
                        }
                    }
                })
                .map_err(|e| format!("cannot start the host peer thread: {e}"))?
        };
        Ok(Self { sock, qemu_sock: qemu_sock.to_path_buf(), frames, stop, thread: Some(thread) })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Every frame received so far, in order.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many frames were received so far.
    pub fn count(&self) -> usize {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// How many frames received so far satisfy `f`.
    pub fn count_where(&self, f: impl Fn(&Frame) -> bool) -> usize {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|x| f(x)).count()
    }

    /// Waits up to `t` until `n` received frames satisfy `f`; returns how many do.
    pub fn wait_frames(&self, n: usize, t: Duration, f: impl Fn(&Frame) -> bool) -> usize {
        let deadline = Instant::now() + t;
        loop {
            let c = self.count_where(&f);
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one frame to the guest's NIC (QEMU must be running: its socket exists).
    pub fn send(&self, frame: &[u8]) -> Result<(), String> {
        self.sock.send_to(frame, &self.qemu_sock).map(|_| ()).map_err(|e| {
            format!("host peer: cannot send a {}-byte frame to {}: {e}", frame.len(), self.qemu_sock.display())
        })
    }

    /// Sends `n` frames, frame `i` made by `make(i)`, paced at `pps` frames per second
    /// (0: as fast as QEMU takes them); returns how many were sent before an error.
    pub fn send_at_rate(&self, n: u64, pps: u64, mut make: impl FnMut(u64) -> Vec<u8>) -> Result<u64, String> {
        let t0 = Instant::now();
        for i in 0..n {
            if pps > 0 {
                let due = t0 + Duration::from_secs_f64(i as f64 / pps as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            self.send(&make(i)).map_err(|e| format!("{e} (after {i} of {n} frames)"))?;
        }
        Ok(n)
    }
}

impl Drop for HostPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Frames.

/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// An Ethernet frame, padded to the 60-byte minimum.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// A broadcast ARP request "who has `target_ip`? tell `src_ip`" from `src_mac`.
pub fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&src_ip);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target_ip);
    eth_frame(BROADCAST, src_mac, ETHERTYPE_ARP, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_parents_first() {
        let mut c = Cpio::new();
        c.file("a/b/c", b"hello", 0o644);
        c.symlink("bin/sh", "/bin/busybox");
        let b = c.finish();
        assert_eq!(b.len() % 512, 0);
        let s = String::from_utf8_lossy(&b);
        let (a, ab, abc) = (s.find("a\0").unwrap(), s.find("a/b\0").unwrap(), s.find("a/b/c\0").unwrap());
        assert!(a < ab && ab < abc, "{s}");
        assert!(s.contains("TRAILER!!!"));
        // Header of the first entry: magic, ino 1, directory mode.
        assert!(s.starts_with("07070100000001000041ed"), "{}", &s[..30]);
    }

    #[test]
    fn parses_markers() {
        let serial = "[    1.0] boot\nFASTPATH-INIT 2.10\nxFASTPATH-RESULT a 1\nFASTPATH-RESULT j {\"k\":2}\n\
                      FASTPATH-EXIT 0\nFASTPATH-DMESG-BEGIN\n[0.1] k1\n[0.2] k2\nFASTPATH-DMESG-END\nFASTPATH-DONE 6.5\n";
        let dir = TestDir::new("gunit");
        let qemu = Proc::spawn("true", &dir, Path::new("/bin/true"), &[] as &[&str], &[]);
        let run = GuestRun {
            serial: serial.into(),
            qemu,
            status: None,
            timed_out: false,
            wall: Duration::from_secs(8),
            done_at: None,
            seen: Vec::new(),
            frames: Vec::new(),
            retried: None,
        };
        assert_eq!(run.result("a"), Some("1"));
        assert_eq!(run.result_json("j").and_then(|v| v["k"].as_u64()), Some(2));
        assert_eq!(run.body_status(), Some(0));
        assert_eq!(run.dmesg(), vec!["[0.1] k1", "[0.2] k2"]);
        assert!(run.done());
        assert!(run.timings().contains("/init 2.10 s"), "{}", run.timings());
    }

    #[test]
    fn frames_and_macs() {
        let m = parse_mac(PF_MAC).unwrap();
        assert_eq!(fmt_mac(&m), PF_MAC);
        assert!(parse_mac("52:54:00:12:34").is_none());
        let f = Frame { at: Duration::ZERO, data: arp_request(m, [10, 0, 0, 1], [10, 0, 0, 2]) };
        assert_eq!((f.dst(), f.src(), f.ethertype(), f.data.len()), (BROADCAST, m, ETHERTYPE_ARP, 60));
    }
}
