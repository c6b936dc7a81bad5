// Temporary resources of one run: a private directory for sockets and databases, unique DPDK
// file prefixes, and the child processes; all removed or killed, in that reverse order, on drop.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::procs::{check_interrupt, Proc, Spawn};

/// Where hugetlbfs is mounted (DPDK puts its page files here).
pub const HUGEPAGES: &str = "/dev/hugepages";
/// Where DPDK keeps its per-prefix runtime directories.
pub const DPDK_RUNTIME: &str = "/var/run/dpdk";
/// The start of every DPDK file prefix we use.
pub const PREFIX_STEM: &str = "fp";

/// Counter making DPDK prefixes unique within this process.
static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

/// A directory made with mkdtemp, removed with its content on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/fastpath-<tag>.XXXXXX`.
    pub fn new(tag: &str) -> Result<Self> {
        let template = std::env::temp_dir().join(format!("fastpath-{tag}.XXXXXX"));
        let path = nix::unistd::mkdtemp(&template).with_context(|| format!("creating {}", template.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A fresh DPDK `--file-prefix` value, unique on this machine while we run.
fn new_prefix() -> String {
    let n = NEXT_PREFIX.fetch_add(1, Ordering::SeqCst);
    format!("{PREFIX_STEM}{}n{n}", std::process::id())
}

/// Removes DPDK's hugepage files and runtime directory of `prefix`; returns how many files.
pub fn remove_prefix_files(prefix: &str) -> usize {
    let mut removed = 0;
    let stem = format!("{prefix}map_");
    if let Ok(entries) = fs::read_dir(HUGEPAGES) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&stem) && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    let _ = fs::remove_dir_all(Path::new(DPDK_RUNTIME).join(prefix));
    removed
}

/// The paths under /dev/hugepages and the DPDK runtime directory that some process has
/// mapped or open (read from /proc/*/maps and /proc/*/fd).
fn dpdk_paths_in_use() -> HashSet<String> {
    let mut used = HashSet::new();
    let interesting = |p: &str| p.contains("/hugepages/") || p.contains("/dpdk/");
    let Ok(procs) = fs::read_dir("/proc") else {
        return used;
    };
    for p in procs.flatten() {
        let dir = p.path();
        if !p.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(maps) = fs::read_to_string(dir.join("maps")) {
            for line in maps.lines() {
                if let Some(i) = line.find('/') {
                    let path = line[i..].trim_end_matches(" (deleted)");
                    if interesting(path) {
                        used.insert(path.to_string());
                    }
                }
            }
        }
        if let Ok(fds) = fs::read_dir(dir.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = fs::read_link(fd.path()) {
                    let t = target.to_string_lossy();
                    if interesting(&t) {
                        used.insert(t.trim_end_matches(" (deleted)").to_string());
                    }
                }
            }
        }
    }
    used
}

/// What a sweep of stale DPDK files found.
pub struct Sweep {
    /// Files and directories removed.
    pub removed: usize,
    /// Prefixes left alone because a live process uses them.
    pub in_use: usize,
}

/// Removes hugepage files and runtime directories of our prefixes (`fp*`) left by earlier runs,
/// skipping any prefix a live process still maps or holds open.
pub fn sweep_stale_dpdk_files() -> Sweep {
    let used = dpdk_paths_in_use();
    let busy = |prefix: &str| {
        used.iter().any(|p| p.contains(&format!("/hugepages/{prefix}map_")) || p.contains(&format!("/dpdk/{prefix}/")))
    };
    let mut prefixes = HashSet::new();
    if let Ok(entries) = fs::read_dir(HUGEPAGES) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(i) = name.find("map_") {
                if name.starts_with(PREFIX_STEM) {
                    prefixes.insert(name[..i].to_string());
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(DPDK_RUNTIME) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX_STEM) {
                prefixes.insert(name);
            }
        }
    }
    let mut sweep = Sweep { removed: 0, in_use: 0 };
    for prefix in prefixes {
        if busy(&prefix) {
            sweep.in_use += 1;
        } else {
            let runtime = Path::new(DPDK_RUNTIME).join(&prefix).exists();
            sweep.removed += remove_prefix_files(&prefix) + usize::from(runtime);
        }
    }
    sweep
}

/// The index of a child inside a [`Sandbox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId(usize);

/// Everything one benchmark or demo run creates. On drop: children are stopped (last started
/// first), then the DPDK prefixes' hugepage files are removed, then the directory.
pub struct Sandbox {
    procs: Vec<Proc>,
    /// Children killed on purpose ([`Sandbox::kill`]): their exit is no failure.
    killed: Vec<ProcId>,
    prefixes: Vec<String>,
    dir: TempDir,
}

impl Sandbox {
    /// A sandbox with a new temporary directory named after `tag`.
    pub fn new(tag: &str) -> Result<Self> {
        Ok(Self { procs: Vec::new(), killed: Vec::new(), prefixes: Vec::new(), dir: TempDir::new(tag)? })
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the sandbox directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new unique DPDK file prefix whose files are removed when the sandbox drops.
    pub fn dpdk_prefix(&mut self) -> String {
        let p = new_prefix();
        self.prefixes.push(p.clone());
        p
    }

    /// Starts a child owned by the sandbox.
    pub fn spawn(&mut self, spawn: Spawn) -> Result<ProcId> {
        let p = spawn.spawn()?;
        self.procs.push(p);
        Ok(ProcId(self.procs.len() - 1))
    }

    /// The child `id`.
    pub fn proc(&mut self, id: ProcId) -> &mut Proc {
        &mut self.procs[id.0]
    }

    /// Fails (with its stderr tail) if any child of the sandbox has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            if !self.killed.contains(&ProcId(i)) && p.poll().is_some() {
                bail!("{}", p.failure());
            }
        }
        Ok(())
    }

    /// Waits until `path` exists, failing early if a child exits, or after `timeout`.
    pub fn wait_for_path(&mut self, path: &Path, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        while !path.exists() {
            check_interrupt()?;
            self.check_alive().with_context(|| format!("while waiting for {}", path.display()))?;
            if Instant::now() >= end {
                bail!("{} did not appear within {} s", path.display(), timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits until every child in `ids` has exited successfully. Fails as soon as one of them
    /// fails, or as soon as any other child (a server they need) exits, or after `timeout`.
    pub fn wait_all_success(&mut self, ids: &[ProcId], timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let mut running = Vec::new();
            for (i, p) in self.procs.iter_mut().enumerate() {
                let mine = ids.contains(&ProcId(i));
                match p.poll() {
                    Some(s) if mine && s.success() => {}
                    Some(_) if self.killed.contains(&ProcId(i)) => {}
                    Some(_) => bail!("{}", p.failure()),
                    None if mine => running.push(p.name().to_string()),
                    None => {}
                }
            }
            if running.is_empty() {
                return Ok(());
            }
            check_interrupt()?;
            if Instant::now() >= end {
                bail!("{} still running after {} s", running.join(", "), timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills child `id` and its process group with SIGKILL, as `kill -9` would, and reaps it;
    /// from then on its exit is expected, not a failure of the run.
    pub fn kill(&mut self, id: ProcId) {
        self.killed.push(id);
        self.proc(id).stop(Signal::SIGKILL, Duration::ZERO);
    }

    /// Stops child `id` with `signal` (then SIGKILL after `grace`).
    pub fn stop(&mut self, id: ProcId, signal: Signal, grace: Duration) {
        self.proc(id).stop(signal, grace);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        for prefix in self.prefixes.drain(..) {
            remove_prefix_files(&prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_killed_on_purpose_is_no_failure_but_another_exit_is() {
        let mut sb = Sandbox::new("scratch-test").unwrap();
        let victim = sb.spawn(Spawn::new("victim", "sleep").args(["30"])).unwrap();
        sb.spawn(Spawn::new("server", "sleep").args(["30"])).unwrap();
        sb.kill(victim);
        assert!(sb.proc(victim).poll().is_some(), "the killed child was not reaped");
        sb.check_alive().unwrap();
        let quick = sb.spawn(Spawn::new("quick", "true")).unwrap();
        sb.wait_all_success(&[quick], Duration::from_secs(10)).unwrap();
        // Any other exit still fails a wait.
        let mut sb = Sandbox::new("scratch-test").unwrap();
        let server = sb.spawn(Spawn::new("server", "sleep").args(["30"])).unwrap();
        sb.kill(server);
        let late = sb.spawn(Spawn::new("late", "false")).unwrap();
        let e = sb.wait_all_success(&[late], Duration::from_secs(10)).unwrap_err().to_string();
        assert!(e.starts_with("late exited"), "{e}");
    }
}
