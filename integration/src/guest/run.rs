// The results of a finished guest run (`GuestRun`): the marker lines of the serial log
// (results, body status, prelude errors, dmesg, timings), QEMU's exit, the frames the
// guest sent, and the checks of the run itself.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::{
    Frame, DMESG_BEGIN, DMESG_END, DONE, EXIT_MARK, INIT_MARK, PRELUDE_DONE, PRELUDE_ERROR, QEMU_KNOWN_ABORT, RESULT,
};
use crate::{Proc, Verdict};

// ---------------------------------------------------------------------------
// The results.

/// A finished guest run: the serial log and what it says, QEMU's exit, the captured frames.
#[derive(Debug)]
pub struct GuestRun {
    pub(super) serial: String,
    pub(super) qemu: Proc,
    pub(super) status: Option<std::process::ExitStatus>,
    pub(super) timed_out: bool,
    pub(super) wall: Duration,
    pub(super) done_at: Option<Duration>,
    pub(super) seen: Vec<(String, Duration)>,
    pub(super) frames: Vec<Frame>,
    pub(super) retried: Option<String>,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::TestDir;

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
}
