// Shared pieces of the end-to-end interop tests, in modules that are all re-exported here
// (`integration::X`): `peers` (where the binaries and peers are, skip-or-fail when they are
// missing), `proc` (one lock so tests never overlap, a temp dir per test, child processes in
// their own process group that are killed when dropped or when the test thread dies), `wait`
// (waits with timeouts: a condition, a socket, a command), `verdict` (the JSON results of our
// binaries and the collected problems of a run), `apps` (pktgen and sink command lines, a
// transfer's check), `switch` (fastpathd and fastpathctl), `testpmd` (a DPDK testpmd launcher
// that returns testpmd's final forward statistics and removes its hugepage files), `netns` and
// `overlay` (namespaces, veth pairs, `ip`, VXLAN ports and their counters), `prometheus` (a
// Prometheus server scraping fastpathd's metrics, its query API, a plain HTTP GET); `guest`
// (public, `integration::guest::X`) is the QEMU guest harness. Containers (config.json,
// rootfs, hook.toml) are the `fastpath-oci` crate's, shared with xtask. This file: the constants.
//! Helpers for fastpath's end-to-end interop tests.

use std::time::Duration;

mod apps;
pub mod guest;
mod netns;
mod overlay;
mod peers;
mod proc;
mod prometheus;
mod switch;
mod testpmd;
mod verdict;
mod wait;

pub use apps::*;
pub use netns::*;
pub use overlay::*;
pub use peers::*;
pub use proc::*;
pub use prometheus::*;
pub use switch::*;
pub use testpmd::*;
pub use verdict::*;
pub use wait::*;

/// Frames each test sends.
pub const FRAMES: u64 = 50_000;
/// Frames per second pktgen sends (modest: 2 CPUs are shared by several pollers).
pub const RATE: u64 = 50_000;
/// Ring entries for our ports and testpmd's: the most our binaries take, so a
/// ring absorbs 80 ms of traffic while its consumer waits for a CPU that other
/// pollers (ours, or other people's benchmarks) are spinning on.
pub const QUEUE_SIZE: u32 = 4096;
/// Our binaries sleep this long when a loop iteration found no work.
pub const IDLE_SLEEP_US: u32 = 20;
/// How long to wait for a socket to appear or a link to come up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long pktgen may take to send everything (50 000 frames at 50 000/s take 1 s).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(12);
/// The sink exits after this many seconds without a frame (once one came).
pub const SINK_IDLE_EXIT_SECS: u32 = 3;
/// What netlib's virtio-user frontend logs (at info) when its link is up:
/// `vu:PATH: up (features ..., N entries per ring)`.
pub const VU_LINK_UP: &str = ": up (";
