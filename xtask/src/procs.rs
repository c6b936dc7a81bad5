// Child processes: each runs in its own process group, its output is captured line by line
// (optionally echoed), and the whole group is killed when its handle drops; plus the Ctrl-C flag.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How many interrupt signals (SIGINT, SIGTERM, SIGHUP) arrived.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Whether every captured stream is also echoed, prefixed (`--verbose`).
static ECHO_ALL: AtomicBool = AtomicBool::new(false);

/// Lines kept per captured stream; older lines are dropped.
const KEEP_LINES: usize = 50_000;

/// The error returned by waits once Ctrl-C was pressed; `main` maps it to exit code 130.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

extern "C" fn on_interrupt(_signal: libc::c_int) {
    let before = INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    if before >= 2 {
        // SAFETY: _exit is async-signal-safe; the third Ctrl-C means "stop cleaning up, now".
        // Children die with us through PR_SET_PDEATHSIG.
        unsafe { libc::_exit(130) };
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP set the interrupt flag instead of killing us, so that
/// waits return [`Interrupted`] and the drop guards clean up. A third signal exits at once.
pub fn install_interrupt_handler() -> Result<()> {
    let action = SigAction::new(SigHandler::Handler(on_interrupt), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only updates an atomic and may call _exit, both async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("installing the {signal} handler"))?;
    }
    Ok(())
}

/// Makes every child started from now on echo its captured output, prefixed with its name.
pub fn echo_everything() {
    ECHO_ALL.store(true, Ordering::SeqCst);
}

/// Whether Ctrl-C (or SIGTERM/SIGHUP) was received.
pub fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// Fails with [`Interrupted`] once Ctrl-C was received.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Whether captured lines are also shown on our terminal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Captured only.
    Off,
    /// Copied as they are (stdout lines to our stdout, stderr lines to our stderr).
    Plain,
    /// Copied to our stderr, each line prefixed with the process name.
    Prefixed,
}

/// What to do with one output stream of a child.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Shared with ours (the child writes to our terminal directly; nothing is captured).
    Inherit,
    /// Piped, read line by line into a buffer, and echoed as chosen.
    Capture(Echo),
}

/// A child process to start: a `Command` plus how its output is handled.
pub struct Spawn {
    name: String,
    cmd: Command,
    stdout: Stream,
    stderr: Stream,
}

impl Spawn {
    /// A command named `name` (used in messages and prefixes) running `program`.
    pub fn new(name: impl Into<String>, program: impl AsRef<OsStr>) -> Self {
        Self {
            name: name.into(),
            cmd: Command::new(program),
            stdout: Stream::Capture(Echo::Off),
            stderr: Stream::Capture(Echo::Off),
        }
    }

    /// Appends arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable for the child.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Sets the child's working directory.
    #[must_use]
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Chooses how stdout is handled (default: captured, not echoed).
    #[must_use]
    pub fn stdout(mut self, s: Stream) -> Self {
        self.stdout = s;
        self
    }

    /// Chooses how stderr is handled (default: captured, not echoed).
    #[must_use]
    pub fn stderr(mut self, s: Stream) -> Self {
        self.stderr = s;
        self
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        let mut s = self.cmd.get_program().to_string_lossy().into_owned();
        for a in self.cmd.get_args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Starts the child in a new process group, with stdin at /dev/null, dying with us.
    pub fn spawn(mut self) -> Result<Proc> {
        check_interrupt()?;
        let line = self.display();
        if ECHO_ALL.load(Ordering::SeqCst) {
            for s in [&mut self.stdout, &mut self.stderr] {
                if *s == Stream::Capture(Echo::Off) {
                    *s = Stream::Capture(Echo::Prefixed);
                }
            }
            eprintln!("xtask: starting {line}");
        }
        self.cmd.stdin(Stdio::null()).process_group(0);
        self.cmd.stdout(match self.stdout {
            Stream::Inherit => Stdio::inherit(),
            Stream::Capture(_) => Stdio::piped(),
        });
        self.cmd.stderr(match self.stderr {
            Stream::Inherit => Stdio::inherit(),
            Stream::Capture(_) => Stdio::piped(),
        });
        // SAFETY: the closure runs between fork and exec and only calls prctl, which is
        // async-signal-safe and touches no memory shared with the parent.
        unsafe {
            self.cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = self.cmd.spawn().with_context(|| format!("starting {line}"))?;
        let pid = Pid::from_raw(child.id() as i32);
        let out = Output::default();
        let err = Output::default();
        let mut readers = Vec::new();
        if let (Stream::Capture(echo), Some(pipe)) = (self.stdout, child.stdout.take()) {
            readers.push(read_lines(pipe, out.clone(), echo, true, &self.name));
        }
        if let (Stream::Capture(echo), Some(pipe)) = (self.stderr, child.stderr.take()) {
            readers.push(read_lines(pipe, err.clone(), echo, false, &self.name));
        }
        Ok(Proc { name: self.name, child, pid, status: None, out, err, readers })
    }
}

/// A bounded buffer of captured lines; positions count all lines ever pushed.
#[derive(Default)]
struct Lines {
    lines: VecDeque<String>,
    dropped: usize,
}

/// Captured lines of one stream, shared with its reader thread.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Lines>>);

impl Output {
    fn with<T>(&self, f: impl FnOnce(&mut Lines) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    fn push(&self, line: String) {
        self.with(|l| {
            l.lines.push_back(line);
            if l.lines.len() > KEEP_LINES {
                l.lines.pop_front();
                l.dropped += 1;
            }
        });
    }

    fn since(&self, pos: usize) -> (Vec<String>, usize) {
        self.with(|l| {
            let skip = pos.saturating_sub(l.dropped);
            let lines = l.lines.iter().skip(skip).cloned().collect();
            (lines, l.dropped + l.lines.len())
        })
    }

    fn tail(&self, n: usize) -> Vec<String> {
        self.with(|l| {
            let skip = l.lines.len().saturating_sub(n);
            l.lines.iter().skip(skip).cloned().collect()
        })
    }
}

/// Starts the thread that reads `pipe` line by line into `out`; the flag turns true at EOF.
fn read_lines(
    pipe: impl Read + Send + 'static,
    out: Output,
    echo: Echo,
    is_stdout: bool,
    name: &str,
) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let prefix = format!("{name:>9} | ");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
            match echo {
                Echo::Off => {}
                Echo::Plain if is_stdout => {
                    let mut o = std::io::stdout().lock();
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                }
                Echo::Plain => eprintln!("{line}"),
                Echo::Prefixed => eprintln!("{prefix}{line}"),
            }
            out.push(line);
        }
        flag.store(true, Ordering::SeqCst);
    });
    done
}

/// A running (or finished) child. Dropping it kills its whole process group and reaps it.
pub struct Proc {
    name: String,
    child: Child,
    pid: Pid,
    status: Option<ExitStatus>,
    out: Output,
    err: Output,
    readers: Vec<Arc<AtomicBool>>,
}

impl Proc {
    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the child has exited (then it is reaped, its group killed and its
    /// output fully read), `None` while it runs.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pid), flags) {
            Ok(WaitStatus::StillAlive) => None,
            // Exited (a zombie, so its group id cannot be reused yet), or not waitable.
            _ => Some(self.reap()),
        }
    }

    /// Kills what is left of the group, reaps the leader and lets the readers reach EOF.
    fn reap(&mut self) -> ExitStatus {
        let _ = killpg(self.pid, Signal::SIGKILL);
        let status = loop {
            match self.child.wait() {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Cannot happen for a child we own; report it as killed.
                Err(_) => break std::os::unix::process::ExitStatusExt::from_raw(9),
            }
        };
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end && !self.readers.iter().all(|d| d.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.status = Some(status);
        status
    }

    /// Waits up to `timeout` for the child to exit; `Ok(None)` on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.poll() {
                return Ok(Some(s));
            }
            check_interrupt()?;
            if Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a successful exit; fails with the stderr tail otherwise, or on timeout.
    pub fn wait_success(&mut self, timeout: Duration) -> Result<()> {
        match self.wait_timeout(timeout)? {
            Some(s) if s.success() => Ok(()),
            Some(_) => bail!("{}", self.failure()),
            None => bail!("{} did not finish within {} s{}", self.name, timeout.as_secs(), self.stderr_excerpt()),
        }
    }

    /// Sends `signal` to the child's process group (nothing if it was reaped).
    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            let _ = killpg(self.pid, signal);
        }
    }

    /// Sends `first` to the group, waits up to `grace`, then SIGKILLs the group and reaps.
    pub fn stop(&mut self, first: Signal, grace: Duration) -> ExitStatus {
        if let Some(s) = self.poll() {
            return s;
        }
        self.signal(first);
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Some(s) = self.poll() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap()
    }

    /// Captured stdout lines from position `pos` on, and the position after them.
    pub fn stdout_since(&self, pos: usize) -> (Vec<String>, usize) {
        self.out.since(pos)
    }

    /// All captured stdout lines still kept.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.out.since(0).0
    }

    /// The last stderr lines (or stdout lines if stderr was empty), indented, for messages.
    pub fn stderr_excerpt(&self) -> String {
        let mut tail = self.err.tail(15);
        let mut which = "stderr";
        if tail.is_empty() {
            tail = self.out.tail(15);
            which = "stdout";
        }
        if tail.is_empty() {
            return String::new();
        }
        let mut s = format!("; last {which} lines of {}:", self.name);
        for l in tail {
            s.push_str("\n    | ");
            s.push_str(&l);
        }
        s
    }

    /// "NAME exited with STATUS; last stderr lines: ..." for a child that failed.
    pub fn failure(&self) -> String {
        let status = self.status.map_or_else(|| "is still running".to_string(), |s| format!("exited ({s})"));
        format!("{} {status}{}", self.name, self.stderr_excerpt())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Signal::SIGTERM, Duration::from_secs(3));
    }
}

/// Runs `spawn` to completion within `timeout`, failing with its stderr tail if it fails.
pub fn run(spawn: Spawn, timeout: Duration) -> Result<Proc> {
    let line = spawn.display();
    let mut p = spawn.spawn()?;
    p.wait_success(timeout).with_context(|| format!("running {line}"))?;
    Ok(p)
}
