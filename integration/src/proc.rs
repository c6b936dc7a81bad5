// Process control: the machine-wide test lock (`serial`), a temp dir per test (`TestDir`),
// child processes in their own process group killed on drop (`Proc`) and failure-message
// helpers (`stamp`, `strip_ansi`, `machine_note`, `dump`).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::last_json_line;

// ---------------------------------------------------------------------------
// One test at a time (threads of one test binary, and concurrent `cargo test`s).

/// Holds the lock that serialises the interop tests; released on drop.
#[derive(Debug)]
pub struct Serial {
    _lock: Flock<File>,
}

/// Waits for the machine-wide test lock (`/tmp/fastpath-integration.lock`). The
/// tests share 2 CPUs between several polling processes: they must not overlap.
pub fn serial() -> Serial {
    let path = Path::new("/tmp/fastpath-integration.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open the test lock {}: {e}", path.display()));
    let lock = Flock::lock(f, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()));
    Serial { _lock: lock }
}

// ---------------------------------------------------------------------------
// A temp dir per test.

/// A counter for unique names: temp dirs here, testpmd's file prefixes.
pub(crate) static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under /tmp, removed (with its sockets) on drop.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `/tmp/fpit-TAG-PID-N` (short: unix socket paths are limited to 107 bytes).
    pub fn new(tag: &str) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = Path::new("/tmp").join(format!("fpit-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var("FASTPATH_KEEP_TMP").is_ok_and(|v| v == "1") {
            eprintln!("keeping {} (FASTPATH_KEEP_TMP=1)", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Child processes.

/// A child process in its own process group, with stdout and stderr in files of
/// the test dir. Dropping it kills the whole group (SIGKILL) and reaps it; the
/// child also gets SIGKILL if the thread that started it dies.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
    started: Instant,
    ended: Option<Instant>,
}

impl Proc {
    /// Starts `program args` as `name` (also the stem of its output files in
    /// `dir`), with `NO_COLOR=1`, `RUST_LOG=info` and then `env`.
    pub fn spawn<S: AsRef<OsStr>>(name: &str, dir: &TestDir, program: &Path, args: &[S], env: &[(&str, &str)]) -> Self {
        let out = dir.join(&format!("{name}.out"));
        let err = dir.join(&format!("{name}.err"));
        let fo = File::create(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        let fe = File::create(&err).unwrap_or_else(|e| panic!("create {}: {e}", err.display()));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fo)
            .stderr(fe)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl, which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        eprintln!("[{}] started {name} (pid {}): {}", stamp(), child.id(), show_cmd(program, args));
        Self { name: name.to_owned(), child, out, err, status: None, started: Instant::now(), ended: None }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                self.ended = Some(Instant::now());
            }
        }
        self.status
    }

    /// Seconds from start to exit (or to now).
    pub fn runtime(&self) -> f64 {
        self.ended.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64()
    }

    /// Waits up to `t` for it to exit.
    pub fn wait_timeout(&mut self, t: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + t;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig` to its process group (if it is still running).
    pub fn signal(&mut self, sig: Signal) {
        if self.try_status().is_none() {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), sig);
        }
    }

    /// Sends `sig`, waits up to `grace`, then SIGKILLs; returns the exit status.
    pub fn stop(&mut self, sig: Signal, grace: Duration) -> ExitStatus {
        self.signal(sig);
        if let Some(s) = self.wait_timeout(grace) {
            return s;
        }
        eprintln!("[{}] {} ignored {sig} for {grace:?}: SIGKILL", stamp(), self.name);
        self.kill()
    }

    /// SIGKILLs the group and reaps the child.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let s = self.child.wait().expect("wait for a child we started");
        self.status = Some(s);
        self.ended = Some(Instant::now());
        s
    }

    /// Everything it wrote on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Everything it wrote on stderr so far (ANSI colours removed).
    pub fn stderr(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&std::fs::read(&self.err).unwrap_or_default()))
    }

    /// The last JSON object line of its stdout (our binaries' `--json` result).
    pub fn last_json(&self) -> Option<Value> {
        last_json_line(&self.stdout())
    }

    /// Waits up to `t` for `needle` on its stderr; false if it exits first or time runs out.
    pub fn wait_for_stderr(&mut self, needle: &str, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if self.try_status().is_some() || Instant::now() >= deadline {
                return self.stderr().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Name, pid, state, and the tails of stderr and stdout, for failure messages.
    pub fn describe(&mut self, err_lines: usize, out_lines: usize) -> String {
        let state = match self.try_status() {
            Some(s) => format!("exited after {:.2} s: {s}", self.runtime()),
            None => format!("still running after {:.2} s", self.runtime()),
        };
        let mut s = format!("--- {} (pid {}, {state})\n", self.name, self.pid());
        let _ = writeln!(s, "    stderr, last {err_lines} lines:");
        for l in tail(&self.stderr(), err_lines) {
            let _ = writeln!(s, "    | {l}");
        }
        let _ = writeln!(s, "    stdout, last {out_lines} lines:");
        for l in tail(&self.stdout(), out_lines) {
            let _ = writeln!(s, "    | {l}");
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // netlib unlinks its hugetlbfs files at once; a kill in between would leave one.
        remove_matching(Path::new("/dev/hugepages"), &format!("fastpath-{}-", self.pid()));
    }
}

fn show_cmd<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Seconds since the first call, for log lines.
pub fn stamp() -> String {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    format!("{:8.3}", T0.get_or_init(Instant::now).elapsed().as_secs_f64())
}

fn tail(s: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn remove_matching(dir: &Path, prefix: &str) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The load average and how many testpmd/fastpathd processes run on the
/// machine (ours and other people's), for failure messages: our pollers share
/// 2 CPUs with them.
pub fn machine_note() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
                let comm = comm.trim();
                if ["dpdk-testpmd", "fastpathd", "pktgen", "sink", "ovs-vswitchd", "qemu-system-x86"].contains(&comm) {
                    *counts.entry(comm.to_owned()).or_default() += 1;
                }
            }
        }
    }
    format!("machine: load average {}; running now: {counts:?}", load.trim())
}

/// `describe` of every process, for failure messages.
pub fn dump(procs: &mut [&mut Proc]) -> String {
    let mut s = String::new();
    for p in procs.iter_mut() {
        s.push_str(&p.describe(20, 6));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi() {
        assert_eq!(strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"), "2026  INFO x");
    }
}
