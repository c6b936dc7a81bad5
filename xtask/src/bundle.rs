// OCI containers with fastpath-hook for bench and demo: the hook's host side (hook.toml, ledger,
// private fastpathd) and runc/crun calls; the rootfs and config.json come from fastpath-oci.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fastpath_oci::HookConfig;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::procs::{Spawn, Stream};
use crate::scratch::{ProcId, Sandbox};

pub use fastpath_oci::{write_bundle, Spec, BRIDGE, CONTRACT};

/// How long fastpathd gets to create its control socket.
const SWITCH_WAIT: Duration = Duration::from_secs(20);
/// How long one runtime or hook command (kill, delete, list, gc, install) may take.
const COMMAND_WAIT: Duration = Duration::from_secs(60);

/// Fails unless `p` is a file, saying how to get it.
pub fn require_file(p: &Path, how: &str) -> Result<()> {
    if p.is_file() {
        Ok(())
    } else {
        bail!("{} is missing ({how})", p.display())
    }
}

/// The host's online CPUs.
pub fn online_cpus() -> Vec<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into());
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let num = |s: &str| s.trim().parse::<usize>().ok();
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Some(a), Some(b)) = (num(a), num(b)) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(num(part)),
        }
    }
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// A core pool (kernel CPU list) with room for `want` containers: the online CPUs but CPU 0
/// (fastpathd's) when that leaves enough, else all of them.
pub fn core_pool(want: usize) -> String {
    let all = online_cpus();
    let rest: Vec<usize> = all.iter().copied().filter(|&c| c != 0).collect();
    let pick = if rest.len() >= want { rest } else { all };
    pick.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Builds a container root at `root`: busybox-static with its applet links and the static
/// programs `apps` (host file, name in /bin); see [`fastpath_oci::make_rootfs`].
pub fn make_rootfs(root: &Path, apps: &[(&Path, &str)]) -> Result<()> {
    fastpath_oci::make_rootfs(root, apps).with_context(|| format!("building the container root {}", root.display()))
}

/// Runs `cmd` (stdin /dev/null, output captured) to completion within `timeout`, in its own
/// process group; returns its output and how long it took. Ignores Ctrl-C, so that cleanup
/// can use it after one.
pub fn run_command(mut cmd: Command, timeout: Duration) -> Result<(Output, Duration)> {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let t0 = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {line}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((Instant::now(), out));
    });
    match rx.recv_timeout(timeout) {
        Ok((t1, out)) => Ok((out.with_context(|| format!("waiting for {line}"))?, t1 - t0)),
        Err(RecvTimeoutError::Timeout) => {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            bail!("{line} did not finish within {} s (killed)", timeout.as_secs())
        }
        Err(RecvTimeoutError::Disconnected) => bail!("lost track of {line}"),
    }
}

/// The output of a failed command, for messages.
pub fn output_text(o: &Output) -> String {
    let mut s = format!("{}", o.status);
    for (name, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let t = String::from_utf8_lossy(bytes);
        if !t.trim().is_empty() {
            let _ = write!(s, "; {name}:\n    | {}", t.trim_end().replace('\n', "\n    | "));
        }
    }
    s
}

/// The host side of fastpath-hook for one run: its hook.toml (core pool, private state
/// directory, the private fastpathd's control socket). On drop, releases whatever the ledger
/// still holds (`fastpath-hook gc`).
pub struct HookHost {
    /// The `fastpath-hook` binary.
    pub hook: PathBuf,
    /// The hook.toml written.
    pub config: PathBuf,
    /// The hook's state directory (ledger, socket directories, hook.log).
    pub state: PathBuf,
    /// Whether [`HookHost::state`] is on tmpfs (as /run is on a normal host).
    pub state_on_tmpfs: bool,
    /// fastpathd's control socket.
    pub ctl: PathBuf,
    /// A state directory we made outside `dir`, removed on drop.
    own_state: Option<PathBuf>,
}

/// Where the hook's state goes when it can be tmpfs like the default /run/fastpath.
const SHM: &str = "/dev/shm";

/// Whether `p` is on tmpfs.
fn is_tmpfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

impl HookHost {
    /// Writes `<dir>/hook.toml` giving containers cores from `pool`, fastpathd at
    /// `<dir>/ctl.sock` and a state directory on tmpfs, as the default /run/fastpath is on a
    /// normal host (the ledger is fsynced and renamed at every stage): a new directory in
    /// /dev/shm when that is tmpfs, else `<dir>/s`.
    pub fn new(dir: &Path, hook: &Path, pool: &str) -> Result<Self> {
        require_file(hook, "cargo build --release -p fastpath-hook")?;
        let (config, ctl) = (dir.join("hook.toml"), dir.join("ctl.sock"));
        let own_state = if is_tmpfs(Path::new(SHM)) {
            let template = Path::new(SHM).join("fastpath-state.XXXXXX");
            Some(nix::unistd::mkdtemp(&template).with_context(|| format!("creating {}", template.display()))?)
        } else {
            None
        };
        let state = own_state.clone().unwrap_or_else(|| dir.join("s"));
        let host = Self {
            hook: hook.to_path_buf(),
            config,
            state_on_tmpfs: is_tmpfs(dir) || own_state.is_some(),
            state,
            ctl,
            own_state,
        };
        HookConfig { cores: pool, state_dir: &host.state, switch_socket: &host.ctl, lib_dir: None }
            .write(&host.config)?;
        Ok(host)
    }

    /// Starts `fastpathd` (bridge br0, worker polling on CPU 0, control socket
    /// [`HookHost::ctl`]) in `sb` and waits for its control socket.
    pub fn start_switch(&self, sb: &mut Sandbox, fastpathd: &Path, show: Stream) -> Result<ProcId> {
        require_file(fastpathd, "cargo build --release -p fastpath")?;
        let spawn = Spawn::new("fastpathd", fastpathd)
            .args([OsStr::new("--ctl"), self.ctl.as_os_str()])
            .args(["--core", "0", "--bridge", BRIDGE])
            .stdout(show)
            .stderr(show);
        let id = sb.spawn(spawn)?;
        sb.wait_for_path(&self.ctl, SWITCH_WAIT).context("starting fastpathd")?;
        Ok(id)
    }

    /// The config.json `hooks` object as `fastpath-hook install` prints it for runc and crun,
    /// with `path` as the program the runtime runs (the hook itself, or a wrapper) and
    /// `config` as its hook.toml.
    pub fn oci_hooks(&self, path: &Path, config: &Path) -> Result<Value> {
        let mut cmd = Command::new(&self.hook);
        cmd.arg("--config").arg(config).args(["install", "--print-only", "--hooks-dir"]);
        cmd.arg(self.state.join("unused-hooks.d")).arg("--hook").arg(path);
        let (o, _) = run_command(cmd, COMMAND_WAIT)?;
        if !o.status.success() {
            bail!("fastpath-hook install --print-only failed: {}", output_text(&o));
        }
        let text = String::from_utf8_lossy(&o.stdout);
        let marker = "# runc / crun: add to the bundle's config.json:";
        let block = text
            .split_once(marker)
            .map(|(_, b)| b)
            .ok_or_else(|| anyhow!("fastpath-hook install printed no '{marker}' block:\n{text}"))?;
        let v: Value = serde_json::from_str(block.trim())
            .with_context(|| format!("parsing the hooks block fastpath-hook install printed:\n{block}"))?;
        v.get("hooks").cloned().ok_or_else(|| anyhow!("no \"hooks\" in what fastpath-hook install printed: {v}"))
    }

    /// One request to fastpathd's control socket; its one-line JSON answer.
    pub fn ctl(&self, req: &Value) -> Result<Value> {
        let what = || format!("fastpathd control socket {}", self.ctl.display());
        let mut s = std::os::unix::net::UnixStream::connect(&self.ctl).with_context(what)?;
        s.set_read_timeout(Some(Duration::from_secs(5))).with_context(what)?;
        writeln!(s, "{req}").with_context(what)?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).with_context(what)?;
        serde_json::from_str(&line).with_context(|| format!("{}: answer to {req} is not JSON: {line}", what()))
    }

    /// fastpathd's ports (`list`).
    pub fn ports(&self) -> Result<Vec<Value>> {
        let v = self.ctl(&json!({"cmd": "list"}))?;
        v.get("ports")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| anyhow!("fastpathd's list answer has no ports: {v}"))
    }

    /// The hook's ledger entries by container id (empty when there is no ledger yet).
    pub fn ledger(&self) -> serde_json::Map<String, Value> {
        std::fs::read_to_string(self.state.join("ledger.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("containers").and_then(Value::as_object).cloned())
            .unwrap_or_default()
    }

    /// The hook's failure log (runtimes may drop a hook's stderr), for messages.
    pub fn hook_log(&self) -> String {
        std::fs::read_to_string(self.state.join("hook.log")).unwrap_or_default()
    }

    /// Runs `fastpath-hook gc --json`: releases what containers that no longer exist hold.
    pub fn gc(&self) -> Result<Value> {
        let mut cmd = Command::new(&self.hook);
        cmd.arg("--config").arg(&self.config).args(["gc", "--json"]);
        let (o, _) = run_command(cmd, COMMAND_WAIT)?;
        if !o.status.success() {
            bail!("fastpath-hook gc failed: {}", output_text(&o));
        }
        serde_json::from_slice(&o.stdout)
            .with_context(|| format!("fastpath-hook gc printed no JSON: {}", output_text(&o)))
    }
}

impl Drop for HookHost {
    fn drop(&mut self) {
        if !self.ledger().is_empty() {
            let _ = self.gc();
        }
        if let Some(d) = &self.own_state {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// An OCI runtime (runc or crun) with a private state root. On drop, every container still in
/// that root is deleted with `delete --force` (which runs its poststop hooks).
pub struct Runtime {
    /// "runc" or "crun".
    pub name: String,
    bin: PathBuf,
    root: PathBuf,
}

impl Runtime {
    /// The runtime `name` (runc or crun) from `$PATH`, keeping its state in `root`.
    pub fn find(name: &str, root: PathBuf) -> Result<Self> {
        if !matches!(name, "runc" | "crun") {
            bail!("runtime {name:?}: only runc and crun take a bundle's config.json hooks as they are");
        }
        let bin =
            fastpath_oci::which(name).ok_or_else(|| anyhow!("{name} is not installed (apt-get install {name})"))?;
        Ok(Self { name: name.to_string(), bin, root })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c
    }

    /// `RUNTIME --root ROOT run --bundle BUNDLE ID`, to start as a long-running child.
    pub fn run(&self, proc_name: &str, bundle: &Path, id: &str) -> Spawn {
        Spawn::new(proc_name, &self.bin)
            .args([OsStr::new("--root"), self.root.as_os_str(), OsStr::new("run"), OsStr::new("--bundle")])
            .args([bundle.as_os_str(), OsStr::new(id)])
    }

    /// Runs container `id` from `bundle` to its exit (`run` also deletes it, running the
    /// poststop hooks); returns the wall time from starting the runtime to its exit.
    pub fn run_timed(&self, bundle: &Path, id: &str, timeout: Duration) -> Result<Duration> {
        let mut c = self.command();
        c.args(["run", "--bundle"]).arg(bundle).arg(id);
        let r = run_command(c, timeout);
        let (o, took) = match r {
            Ok(x) => x,
            Err(e) => {
                let _ = self.delete_force(id);
                return Err(e.context(format!("container {id} under {}", self.name)));
            }
        };
        if !o.status.success() {
            let _ = self.delete_force(id);
            bail!("{} run {id} (bundle {}) failed: {}", self.name, bundle.display(), output_text(&o));
        }
        Ok(took)
    }

    /// Sends `signal` ("TERM", "INT", "KILL") to container `id`'s init process.
    pub fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let mut c = self.command();
        c.args(["kill", id, signal]);
        let (o, _) = run_command(c, COMMAND_WAIT)?;
        if !o.status.success() {
            bail!("{} kill {id} {signal} failed: {}", self.name, output_text(&o));
        }
        Ok(())
    }

    /// Whether container `id` exists (`state ID` succeeds).
    pub fn exists(&self, id: &str) -> bool {
        let mut c = self.command();
        c.args(["state", id]);
        run_command(c, COMMAND_WAIT).is_ok_and(|(o, _)| o.status.success())
    }

    /// `delete --force` of container `id`; `Ok(false)` when it did not exist before.
    pub fn delete_force(&self, id: &str) -> Result<bool> {
        let existed = self.exists(id);
        let mut c = self.command();
        c.args(["delete", "--force", id]);
        let (o, _) = run_command(c, COMMAND_WAIT)?;
        // runc and crun succeed on a container that is gone; say which it was.
        if o.status.success() {
            return Ok(existed);
        }
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        if !existed && (err.contains("does not exist") || err.contains("not found") || err.contains("no such")) {
            return Ok(false);
        }
        bail!("{} delete --force {id} failed: {}", self.name, output_text(&o))
    }

    /// The containers in this runtime's root.
    pub fn list(&self) -> Vec<String> {
        if !self.root.exists() {
            return Vec::new();
        }
        let mut c = self.command();
        c.args(["list", "-q"]);
        match run_command(c, COMMAND_WAIT) {
            Ok((o, _)) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.list() {
            let _ = self.delete_force(&id);
        }
    }
}
