// Booting the guest: QEMU's command line, `Guest::start`/`Guest::run` (with one more boot
// on QEMU's known TCG abort), and `RunningGuest` (the QEMU process, its serial log, the
// waits for markers, and the end of the run).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{vnic_args, Guest, GuestRun, HostPeer, DONE, PF_MAC, QEMU_KNOWN_ABORT, READY};
use crate::{stamp, Proc, TestDir};

// ---------------------------------------------------------------------------
// Starting QEMU, and the running guest.

impl Guest {
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
        let mut args: Vec<String> = [
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
        .to_vec();
        args.extend(vnic_args(&self.vnics, self.memory_mb));
        args
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
        let qemu = Proc::spawn(name, dir, self.peers.qemu(), &args, &[]);
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

    /// QEMU's pid.
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// Kills QEMU (SIGKILL, as `kill -9` would) and returns the run so far.
    pub fn kill(mut self) -> GuestRun {
        self.qemu.kill();
        self.wait()
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
