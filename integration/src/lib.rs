// Shared pieces of the end-to-end interop tests: where the binaries and peers
// are, skip-or-fail when they are missing, one lock so tests never overlap, a
// temp dir per test, child processes in their own process group that are killed
// when dropped (or when the test thread dies), waits with timeouts, the JSON
// results of our binaries, fastpathctl queries, and a DPDK testpmd launcher that
// returns testpmd's final forward statistics and removes its hugepage files.
//! Helpers for fastpath's end-to-end interop tests.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub mod guest;

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

// ---------------------------------------------------------------------------
// Locating the binaries and the peers.

/// The workspace root (parent of this crate's manifest dir).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the integration crate lives in the workspace").to_path_buf()
}

/// Where our binaries are: `$FASTPATH_BIN_DIR`, else `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_dir().join("target").join("release"),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

/// The binaries and peers a test found.
#[derive(Debug, Clone)]
pub struct Peers {
    bins: PathBuf,
    testpmd: Option<PathBuf>,
}

impl Peers {
    /// Path of one of our binaries.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// Path of `dpdk-testpmd` (the test asked for it).
    pub fn testpmd(&self) -> &Path {
        self.testpmd.as_deref().expect("the test did not ask for testpmd in require()")
    }
}

/// Whether a missing peer is a failure (`FASTPATH_REQUIRE_PEERS=1`) or a skip.
pub fn peers_required() -> bool {
    std::env::var("FASTPATH_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Finds our binaries `bins` and (if `testpmd`) `dpdk-testpmd` (`$FASTPATH_TESTPMD`
/// or `PATH`). When something is missing: panics if `FASTPATH_REQUIRE_PEERS=1`,
/// else prints a loud SKIPPED line on stderr and returns `None`.
pub fn require(test: &str, bins: &[&str], testpmd: bool) -> Option<Peers> {
    let dir = bin_dir();
    let mut missing = Vec::new();
    let absent: Vec<&str> = bins.iter().copied().filter(|b| !is_executable(&dir.join(b))).collect();
    if !absent.is_empty() {
        missing.push(format!(
            "{} not found in {} (build with `cargo build --release --workspace`, or set FASTPATH_BIN_DIR)",
            absent.join(", "),
            dir.display()
        ));
    }
    let tp = if testpmd {
        let found = match std::env::var_os("FASTPATH_TESTPMD") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)).filter(|p| is_executable(p)),
            _ => find_in_path("dpdk-testpmd"),
        };
        if found.is_none() {
            missing.push("dpdk-testpmd not found in PATH or $FASTPATH_TESTPMD (apt-get install dpdk-dev)".into());
        }
        found
    } else {
        None
    };
    if missing.is_empty() {
        return Some(Peers { bins: dir, testpmd: tp });
    }
    let reason = missing.join("; ");
    assert!(!peers_required(), "{test}: FASTPATH_REQUIRE_PEERS=1 but a peer is missing: {reason}");
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a skip must be seen.
    let stars = "*".repeat(72);
    let msg = format!("\n{stars}\nSKIPPED: {test}: {reason}\n{stars}\n");
    let _ = std::io::stderr().write_all(msg.as_bytes());
    None
}

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

static SEQ: AtomicU32 = AtomicU32::new(0);

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

fn remove_matching(dir: &Path, prefix: &str) {
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

// ---------------------------------------------------------------------------
// Waits.

/// Polls `f` every 10 ms until it is true or `t` passes; returns the last result.
pub fn wait_until(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + t;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `p` is a unix socket.
pub fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Waits up to `t` for the unix socket `p` to exist.
pub fn wait_for_socket(p: &Path, t: Duration) -> bool {
    wait_until(t, || is_socket(p))
}

/// Runs `cmd` to completion (stdout and stderr captured), killing it after `t`.
pub fn run_with_timeout(cmd: &mut Command, t: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let ro = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let re = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let deadline = Instant::now() + t;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| format!("wait for {what}: {e}"))? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not finish within {t:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output { status, stdout: ro.join().unwrap_or_default(), stderr: re.join().unwrap_or_default() })
}

// ---------------------------------------------------------------------------
// Results.

/// The last line of `s` that parses as a JSON object.
pub fn last_json_line(s: &str) -> Option<Value> {
    s.lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(Value::is_object))
}

/// A `u64` field of a JSON object (missing or not a number: `None`).
pub fn field(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Checks the sink's result: every one of `n` frames arrived intact and in order
/// (received == n, bad == 0, lost == 0, reordered == 0, next_seq == n).
pub fn check_sink(sink: Option<&Value>, n: u64) -> Result<(), String> {
    let Some(v) = sink else {
        return Err(format!(
            "sink: expected a JSON result with received={n} bad=0 lost=0 reordered=0 next_seq={n}; got no JSON line on its stdout"
        ));
    };
    let f = |k| field(v, k).map_or_else(|| "?".to_string(), |x| x.to_string());
    let ok = field(v, "received") == Some(n)
        && field(v, "bad") == Some(0)
        && field(v, "lost") == Some(0)
        && field(v, "reordered") == Some(0)
        && field(v, "next_seq") == Some(n);
    if ok {
        return Ok(());
    }
    Err(format!(
        "sink: expected every frame intact and in order: received={n} bad=0 lost=0 reordered=0 next_seq={n}; \
         got received={} bad={} foreign={} lost={} reordered={} next_seq={}",
        f("received"),
        f("bad"),
        f("foreign"),
        f("lost"),
        f("reordered"),
        f("next_seq")
    ))
}

/// Collects the problems of a run, then fails with all of them and every process's output.
#[derive(Debug)]
pub struct Verdict {
    test: String,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl Verdict {
    /// An empty verdict for `test`.
    pub fn new(test: &str) -> Self {
        Self { test: test.to_owned(), problems: Vec::new(), notes: Vec::new() }
    }

    /// Records a problem unless `ok`.
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }

    /// Records the error of `r`, if any.
    pub fn check_result(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.problems.push(e);
        }
    }

    /// Records a problem.
    pub fn fail(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// Context printed with the problems (e.g. counters).
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Whether there is no problem so far.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Panics with every problem, note and process output if there was a problem.
    pub fn finish(self, procs: &mut [&mut Proc]) {
        if self.problems.is_empty() {
            return;
        }
        let mut s = format!("{} FAILED:\n", self.test);
        for p in &self.problems {
            let _ = writeln!(s, "  * {p}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "  {n}");
        }
        let _ = writeln!(s, "  {}", machine_note());
        s.push_str(&dump(procs));
        panic!("{s}");
    }

    /// Fails now (setup went wrong) with the problem and every process's output.
    pub fn abort(mut self, problem: impl Into<String>, procs: &mut [&mut Proc]) -> ! {
        self.problems.push(problem.into());
        self.finish(procs);
        unreachable!("finish panics when there are problems")
    }
}

// ---------------------------------------------------------------------------
// Our binaries' command lines.

/// Flags every one of our packet programs gets in these tests.
pub fn app_flags() -> Vec<String> {
    vec![
        "--queue-size".into(),
        QUEUE_SIZE.to_string(),
        // More buffers than a full receive ring plus a full transmit ring: with
        // the default 8192 and 4096-entry rings, pktgen's pool runs dry when its
        // peer stalls and pktgen never calls tx_burst (which reclaims) again.
        "--nbufs".into(),
        (4 * QUEUE_SIZE).to_string(),
        "--idle-sleep-us".into(),
        IDLE_SLEEP_US.to_string(),
        "--link-timeout".into(),
        SETUP_TIMEOUT.as_secs().to_string(),
        "--json".into(),
        "--quiet".into(),
    ]
}

/// `pktgen` arguments: `n` 64-byte frames at `RATE` on `port`.
pub fn pktgen_args(port: &str, n: u64) -> Vec<String> {
    let mut v: Vec<String> = ["--port", port, "--size", "64", "--count"].map(String::from).to_vec();
    v.push(n.to_string());
    v.push("--rate".into());
    v.push(RATE.to_string());
    v.extend(app_flags());
    v
}

/// `sink --check` arguments: stop after `n` frames or `SINK_IDLE_EXIT_SECS` of silence.
pub fn sink_args(port: &str, n: u64) -> Vec<String> {
    let mut v: Vec<String> = ["--port", port, "--check", "--count"].map(String::from).to_vec();
    v.push(n.to_string());
    v.push("--idle-exit".into());
    v.push(SINK_IDLE_EXIT_SECS.to_string());
    v.extend(app_flags());
    v
}

/// Waits for pktgen to finish, then for the sink (asking it to stop with
/// SIGINT, so it still prints its result, if it is still waiting for frames
/// that will never come); checks pktgen sent `n` and the sink got all `n` intact
/// and in order. Returns the sink's JSON.
pub fn finish_transfer(v: &mut Verdict, pktgen: &mut Proc, sink: &mut Proc, n: u64) -> Option<Value> {
    match pktgen.wait_timeout(RUN_TIMEOUT) {
        None => {
            v.fail(format!(
                "pktgen: expected it to send {n} frames and exit within {RUN_TIMEOUT:?}; it was still running"
            ));
            pktgen.stop(Signal::SIGINT, Duration::from_secs(3));
        }
        Some(s) if !s.success() => v.fail(format!("pktgen: expected exit status 0, got {s}")),
        Some(_) => {}
    }
    let pj = pktgen.last_json();
    v.check(pj.as_ref().and_then(|j| field(j, "sent")) == Some(n), || {
        format!(
            "pktgen: expected \"sent\":{n} in its JSON result, got {}",
            pj.as_ref().map_or("no JSON line".into(), Value::to_string)
        )
    });
    // The sink exits at n frames; if some were lost it waits SINK_IDLE_EXIT_SECS of silence.
    if sink.wait_timeout(Duration::from_secs(u64::from(SINK_IDLE_EXIT_SECS) + 3)).is_none() {
        v.fail(format!(
            "sink: expected it to exit after {n} frames or {SINK_IDLE_EXIT_SECS} s of silence; it was still running \
             (stopped with SIGINT)"
        ));
        sink.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    if let Some(s) = sink.try_status().filter(|s| !s.success()) {
        v.fail(format!("sink: expected exit status 0, got {s}"));
    }
    let sj = sink.last_json();
    v.check_result(check_sink(sj.as_ref(), n));
    if let Some(j) = &sj {
        let next = field(j, "next_seq").unwrap_or(n);
        let tail_only = next < n
            && field(j, "received") == Some(next)
            && field(j, "lost") == Some(0)
            && field(j, "reordered") == Some(0)
            && field(j, "bad") == Some(0);
        if tail_only {
            v.note(format!(
                "hint: exactly the last {} frames are missing (sequence {next}..{n}): pktgen exits as soon as its \
                 last tx_burst returns, without waiting for its peer to take the frames still in its TX ring; \
                 they are lost when the connection closes (more likely when the peer's CPU is busy)",
                n - next
            ));
        }
    }
    eprintln!(
        "[{}] pktgen: {}\n[{}] sink: {}",
        stamp(),
        pj.map_or("-".into(), |j| j.to_string()),
        stamp(),
        sj.as_ref().map_or("-".into(), Value::to_string)
    );
    sj
}

// ---------------------------------------------------------------------------
// fastpathd and fastpathctl.

/// `fastpathctl --ctl CTL list --json`: the ports with their counters.
pub fn fastpathctl_list(peers: &Peers, ctl: &Path) -> Result<Vec<Value>, String> {
    let out = run_with_timeout(
        Command::new(peers.bin("fastpathctl")).arg("--ctl").arg(ctl).args(["list", "--json"]),
        Duration::from_secs(5),
    )?;
    if !out.status.success() {
        return Err(format!(
            "fastpathctl list --json: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(other) => Err(format!("fastpathctl list --json: expected a JSON array, got {other}")),
        Err(e) => Err(format!("fastpathctl list --json: not JSON ({e}): {text}")),
    }
}

/// The entry of port `name` in a `list`.
pub fn port_entry<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

/// A counter of port `name` (`stats.KEY`) in a `list`.
pub fn port_stat(list: &[Value], name: &str, key: &str) -> Option<u64> {
    port_entry(list, name).and_then(|p| p.get("stats")).and_then(|s| field(s, key))
}

fn port_up(list: &[Value], name: &str) -> bool {
    port_entry(list, name).and_then(|p| p.get("stats")).and_then(|s| s.get("link_up")).and_then(Value::as_bool)
        == Some(true)
}

/// Waits until fastpathd reports link up on every port of `names`.
pub fn wait_ports_up(peers: &Peers, ctl: &Path, names: &[&str], t: Duration) -> Result<(), String> {
    let deadline = Instant::now() + t;
    loop {
        let list = fastpathctl_list(peers, ctl);
        if let Ok(l) = &list {
            if names.iter().all(|n| port_up(l, n)) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let shown = match list {
                Ok(l) => serde_json::to_string(&l).unwrap_or_default(),
                Err(e) => e,
            };
            return Err(format!("fastpathd: expected link up on ports {names:?} within {t:?}; last list: {shown}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line per port with its counters, for notes.
pub fn show_ports(list: &[Value]) -> String {
    let mut s = String::from("fastpathd ports:");
    for p in list {
        let _ = write!(
            s,
            "\n    {} ({}): {}",
            p.get("name").and_then(Value::as_str).unwrap_or("?"),
            p.get("bridge").and_then(Value::as_str).unwrap_or("?"),
            p.get("stats").map_or_else(String::new, Value::to_string)
        );
        if let Some(f) = p.get("last_fault").and_then(Value::as_str) {
            let _ = write!(s, " last_fault={f}");
        }
    }
    s
}

/// Checks the switch's counters for a one-way transfer of `n` frames:
/// `counters` lists (port, key, expected); also no drops on any port.
pub fn check_switch_counters(v: &mut Verdict, list: &[Value], counters: &[(&str, &str, u64)]) {
    for &(port, key, want) in counters {
        let got = port_stat(list, port, key);
        v.check(got == Some(want), || {
            format!(
                "fastpathd port {port}: expected {key} == {want}, got {}",
                got.map_or_else(|| "no such port/counter".into(), |g| g.to_string())
            )
        });
    }
    for p in list {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
        for key in ["drop_ring_full", "drop_too_big", "rx_errors"] {
            let got = p.get("stats").and_then(|s| field(s, key));
            v.check(got == Some(0), || {
                format!(
                    "fastpathd port {name}: expected {key} == 0, got {}",
                    got.map_or_else(|| "?".into(), |g| g.to_string())
                )
            });
        }
    }
}

// ---------------------------------------------------------------------------
// DPDK testpmd.

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
        let mut tp = Self::spawn(peers, dir, "testpmd", vdevs, single_file_segments);
        if !tp.wait_forwarding(SETUP_TIMEOUT) && tp.proc.stderr().contains("Cannot init EAL") {
            eprintln!("[{}] testpmd: EAL init failed; starting it once more:\n{}", stamp(), tp.proc.describe(6, 0));
            drop(tp);
            tp = Self::spawn(peers, dir, "testpmd-retry", vdevs, single_file_segments);
            tp.wait_forwarding(SETUP_TIMEOUT);
        }
        tp
    }

    fn spawn(peers: &Peers, dir: &TestDir, name: &str, vdevs: &[String], single_file_segments: bool) -> Self {
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

    #[test]
    fn finds_last_json_and_checks_sink() {
        let out = "noise\n{\"event\":\"first_packet\"}\n{\"role\":\"sink\",\"received\":5,\"bad\":0,\"foreign\":0,\"lost\":0,\"reordered\":0,\"next_seq\":5}\n";
        let j = last_json_line(out).unwrap();
        assert!(check_sink(Some(&j), 5).is_ok());
        let e = check_sink(Some(&j), 6).unwrap_err();
        assert!(e.contains("received=6") && e.contains("got received=5"), "{e}");
        assert!(check_sink(None, 5).is_err());
    }

    #[test]
    fn strips_ansi() {
        assert_eq!(strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"), "2026  INFO x");
    }
}
