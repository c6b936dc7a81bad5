// DPDK testpmd: the launcher (`Testpmd`: io forwarding between two vdevs, hugepage and
// runtime files removed on drop), its final forward statistics (`parse_fwd_stats`,
// `FwdStats`) and their check (`check_testpmd_forwarded`).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::proc::{remove_matching, SEQ};
use crate::{stamp, wait_until, Peers, Proc, TestDir, Verdict, QUEUE_SIZE, SETUP_TIMEOUT};

/// Hugepages free now (default size), from /proc/meminfo.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// testpmd's memory, in MB.
pub const TESTPMD_MEM_MB: u64 = 128;
/// Free 2 MB hugepages below which testpmd runs with `--no-huge` (its 128 MB,
/// plus ~12 pages for each of our processes, on a machine others share).
pub const TESTPMD_MIN_FREE_HUGEPAGES: u64 = 128;

/// What testpmd prints (stdout) once it forwards: `io packet forwarding - ports=2 - cores=1 ...`.
pub const TESTPMD_FORWARDING: &str = "packet forwarding - ports=";

/// testpmd's final forward statistics for one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FwdStats {
    /// Port number.
    pub port: u32,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets that could not be sent (peer ring full or not ready).
    pub tx_dropped: u64,
}

impl std::fmt::Display for FwdStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "port {}: RX-packets {} RX-dropped {} TX-packets {} TX-dropped {}",
            self.port, self.rx_packets, self.rx_dropped, self.tx_packets, self.tx_dropped
        )
    }
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// Parses the "Forward statistics for port N" blocks testpmd prints when it stops.
pub fn parse_fwd_stats(out: &str) -> Vec<FwdStats> {
    let mut v: Vec<FwdStats> = Vec::new();
    let mut cur: Option<FwdStats> = None;
    for line in out.lines() {
        if let Some(rest) = line.split("Forward statistics for port").nth(1) {
            if let Some(c) = cur.take() {
                v.push(c);
            }
            cur = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .map(|port| FwdStats { port, ..FwdStats::default() });
        } else if let Some(c) = cur.as_mut() {
            if let Some(x) = number_after(line, "RX-packets:") {
                c.rx_packets = x;
                c.rx_dropped = number_after(line, "RX-dropped:").unwrap_or(0);
            } else if let Some(x) = number_after(line, "TX-packets:") {
                c.tx_packets = x;
                c.tx_dropped = number_after(line, "TX-dropped:").unwrap_or(0);
                v.push(cur.take().expect("some"));
            }
        }
    }
    if let Some(c) = cur {
        v.push(c);
    }
    v
}

/// A running `dpdk-testpmd` in io forward mode (port 0 → port 1, port 1 → port 0),
/// its forwarding core on CPU 1, auto-started, printing stats every second.
/// Dropping it kills it and removes its hugepage and runtime files.
#[derive(Debug)]
pub struct Testpmd {
    proc: Proc,
    prefix: String,
}

impl Testpmd {
    /// Starts testpmd with these `--vdev`s (`single_file_segments` for virtio_user:
    /// without it DPDK needs more than 8 memory regions) and waits until it
    /// forwards (or exits). If its EAL fails to initialise (e.g. a concurrent
    /// sweep of `/var/run/dpdk/fp*` by another tool removed its runtime
    /// directory while it started), it is started once more with a new prefix.
    pub fn start(peers: &Peers, dir: &TestDir, vdevs: &[String], single_file_segments: bool) -> Self {
        Self::start_with(peers, dir, vdevs, single_file_segments, &[])
    }

    /// [`Testpmd::start`] with more of testpmd's own arguments (after `--`), e.g.
    /// `--max-pkt-len=9018 --enable-scatter` for jumbo frames.
    pub fn start_with(
        peers: &Peers,
        dir: &TestDir,
        vdevs: &[String],
        single_file_segments: bool,
        app_args: &[String],
    ) -> Self {
        let mut tp = Self::spawn(peers, dir, "testpmd", vdevs, single_file_segments, app_args);
        if !tp.wait_forwarding(SETUP_TIMEOUT) && tp.proc.stderr().contains("Cannot init EAL") {
            eprintln!("[{}] testpmd: EAL init failed; starting it once more:\n{}", stamp(), tp.proc.describe(6, 0));
            drop(tp);
            tp = Self::spawn(peers, dir, "testpmd-retry", vdevs, single_file_segments, app_args);
            tp.wait_forwarding(SETUP_TIMEOUT);
        }
        tp
    }

    fn spawn(
        peers: &Peers,
        dir: &TestDir,
        name: &str,
        vdevs: &[String],
        single_file_segments: bool,
        app_args: &[String],
    ) -> Self {
        let prefix = format!("fpit{}{:03}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let mut args: Vec<String> = vec![
            "-l".into(),
            "0,1".into(),
            "--main-lcore".into(),
            "0".into(),
            "--no-pci".into(),
            "--no-telemetry".into(),
            format!("--file-prefix={prefix}"),
        ];
        let free = free_hugepages();
        let no_huge =
            std::env::var("FASTPATH_IT_DPDK_NO_HUGE").is_ok_and(|v| v == "1") || free < TESTPMD_MIN_FREE_HUGEPAGES;
        if no_huge {
            eprintln!(
                "[{}] testpmd: {free} free hugepages (< {TESTPMD_MIN_FREE_HUGEPAGES}) or FASTPATH_IT_DPDK_NO_HUGE=1: using --no-huge",
                stamp()
            );
            args.push("--no-huge".into());
        } else {
            args.push("--in-memory".into());
        }
        args.push("-m".into());
        args.push(TESTPMD_MEM_MB.to_string());
        if single_file_segments {
            args.push("--single-file-segments".into());
        }
        for v in vdevs {
            args.push("--vdev".into());
            args.push(v.clone());
        }
        // --no-flush-rx: testpmd would otherwise drain and discard its receive
        // queues just before it starts forwarding.
        args.extend(
            [
                "--",
                "--nb-cores=1",
                "--forward-mode=io",
                "--stats-period",
                "1",
                "-a",
                "--no-flush-rx",
                // Two receive rings full, two transmit rings in flight, caches.
                "--total-num-mbufs=20480",
            ]
            .map(String::from),
        );
        args.push(format!("--rxd={QUEUE_SIZE}"));
        args.push(format!("--txd={QUEUE_SIZE}"));
        args.extend(app_args.iter().cloned());
        let proc = Proc::spawn(name, dir, peers.testpmd(), &args, &[]);
        Self { proc, prefix }
    }

    /// Waits up to `t` until testpmd says it started forwarding; false if it
    /// exited or time ran out.
    pub fn wait_forwarding(&mut self, t: Duration) -> bool {
        let p = &mut self.proc;
        wait_until(t, || p.stdout().contains(TESTPMD_FORWARDING) || p.try_status().is_some()) && self.forwarding()
    }

    /// Whether it has started forwarding.
    pub fn forwarding(&self) -> bool {
        self.proc.stdout().contains(TESTPMD_FORWARDING)
    }

    /// The process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Stops it with SIGINT and returns the forward statistics it printed.
    pub fn stop(&mut self) -> Result<Vec<FwdStats>, String> {
        let s = self.proc.stop(Signal::SIGINT, Duration::from_secs(10));
        let stats = parse_fwd_stats(&self.proc.stdout());
        if stats.is_empty() {
            return Err(format!(
                "testpmd: expected forward statistics on its stdout after SIGINT; found none (it exited: {s})"
            ));
        }
        Ok(stats)
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.proc.kill();
        remove_matching(Path::new("/dev/hugepages"), &format!("{}map_", self.prefix));
        for run in ["/var/run/dpdk", "/run/dpdk"] {
            let _ = std::fs::remove_dir_all(Path::new(run).join(&self.prefix));
        }
    }
}

/// Checks testpmd's io forwarding of a one-way transfer of `n` frames from
/// port `from` to port `to`: all received, all sent, nothing dropped.
pub fn check_testpmd_forwarded(v: &mut Verdict, stats: &Result<Vec<FwdStats>, String>, from: u32, to: u32, n: u64) {
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            v.fail(e.clone());
            return;
        }
    };
    v.note(format!(
        "testpmd forward statistics: {}",
        stats.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    ));
    let get = |p: u32| stats.iter().find(|s| s.port == p).copied();
    match (get(from), get(to)) {
        (Some(f), Some(t)) => {
            v.check(f.rx_packets == n && f.rx_dropped == 0, || {
                format!(
                    "testpmd port {from}: expected RX-packets {n} RX-dropped 0, got RX-packets {} RX-dropped {}",
                    f.rx_packets, f.rx_dropped
                )
            });
            v.check(t.tx_packets == n && t.tx_dropped == 0, || {
                format!(
                    "testpmd port {to}: expected TX-packets {n} TX-dropped 0, got TX-packets {} TX-dropped {}",
                    t.tx_packets, t.tx_dropped
                )
            });
        }
        _ => v.fail(format!("testpmd: expected forward statistics for ports {from} and {to}; got {stats:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_testpmd_forward_stats() {
        let out = "\
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 49938          RX-dropped: 0             RX-total: 49938
  TX-packets: 0              TX-dropped: 0             TX-total: 0
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 49518          TX-dropped: 420           TX-total: 49938
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 49938          RX-dropped: 0             RX-total: 49938
  TX-packets: 49518          TX-dropped: 420           TX-total: 49938
";
        let s = parse_fwd_stats(out);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0], FwdStats { port: 0, rx_packets: 49938, rx_dropped: 0, tx_packets: 0, tx_dropped: 0 });
        assert_eq!(s[1], FwdStats { port: 1, rx_packets: 0, rx_dropped: 0, tx_packets: 49518, tx_dropped: 420 });
    }
}
