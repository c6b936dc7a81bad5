// A QEMU guest (TCG, q35, emulated Intel IOMMU with interrupt remapping, an emulated igb
// SR-IOV NIC on a PCIe root port) booted from an initramfs built here (static busybox, the
// guest kernel's modules, static test binaries, a generated /init), for the VF tests. The
// NIC's wire is a pair of unix datagram sockets: a host-side peer thread records every frame
// the guest sends out and can send frames in. The guest reports on its serial console with
// marker lines (`FASTPATH-RESULT name value`, `FASTPATH-READY name`, `FASTPATH-DONE`), which
// are parsed here. See notes/vm-sriov.md for the measurements behind the command line.
// This file: the module docs, the constants and the `Guest` builder; the submodules, all
// re-exported here: `require` (finding QEMU, the kernel, busybox, the static binaries),
// `initramfs` (cpio writer, body helpers, /init), `podman` (opt-in podman, conmon, crun,
// their libraries and config), `qemu` (command line, boot, the running
// guest and its serial log), `run` (the results of a run), `peer` (the host side of the
// wire, frames and MACs), `vnic` (virtio-net NICs on vhost-user, e.g. on a fastpathd port).
//! A QEMU guest with an SR-IOV NIC behind an IOMMU, and a host peer on its wire.
//!
//! [`require_guest`] finds QEMU, the guest kernel (`cargo xtask setup`), static busybox and
//! the static binaries a test needs (skip, or fail with `FASTPATH_REQUIRE_PEERS=1`).
//! [`require_podman`] finds podman, conmon, crun and their libraries, which
//! [`Guest::podman`] packs with their config (see the `podman` submodule).
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
//! VFs' PCI addresses, space-separated), `$VNET_IF0`, `$VNET_IF1`... (the netdevs, up, of
//! the virtio-net NICs added with [`Guest::vhost_user_nic`]). Its output goes to the serial console; kernel
//! messages do not (they are printed as a block with `dmesg` after the body:
//! [`GuestRun::dmesg`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

mod initramfs;
mod peer;
mod podman;
mod qemu;
mod require;
mod run;
mod vnic;

pub use initramfs::*;
pub use peer::*;
pub use podman::*;
pub use qemu::*;
pub use require::*;
pub use run::*;
pub use vnic::*;

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
// The guest.

/// A guest to boot: the builder. See the module docs for the body's helpers.
#[derive(Debug, Clone)]
pub struct Guest {
    peers: GuestPeers,
    bins: Vec<(String, PathBuf)>,
    files: Vec<(String, Vec<u8>, u32)>,
    links: Vec<(String, String)>,
    dirs: Vec<String>,
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
    vnics: Vec<VhostUserNic>,
}

impl Guest {
    /// A guest with 2 VFs (autoprobed by igbvf, as on a host), 256 MB, an empty body,
    /// [`GUEST_TIMEOUT`] and [`BODY_TIMEOUT`].
    pub fn new(peers: &GuestPeers) -> Self {
        Self {
            peers: peers.clone(),
            bins: Vec::new(),
            files: Vec::new(),
            links: Vec::new(),
            dirs: Vec::new(),
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
            vnics: Vec::new(),
        }
    }

    /// Puts our static binary `name` (from [`crate::static_bin_dir`]) at `/bin/NAME` in the guest.
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

    /// Puts a symbolic link at `guest_path` pointing to `target`.
    #[must_use]
    pub fn symlink(mut self, guest_path: &str, target: &str) -> Self {
        self.links.push((guest_path.to_string(), target.to_string()));
        self
    }

    /// Puts an empty directory (mode 0755) at `guest_path`.
    #[must_use]
    pub fn dir(mut self, guest_path: &str) -> Self {
        self.dirs.push(guest_path.to_string());
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

    /// Adds a `virtio-net-pci` NIC on `-netdev vhost-user` (guest memory then lives in a
    /// shared memfd); the body finds its netdev, up, in `$VNET_IFn` (n: the order of the calls).
    #[must_use]
    pub fn vhost_user_nic(mut self, nic: VhostUserNic) -> Self {
        self.vnics.push(nic);
        self
    }

    /// Adds a kernel command-line argument.
    #[must_use]
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        self.kernel_args.push(arg.to_string());
        self
    }
}
