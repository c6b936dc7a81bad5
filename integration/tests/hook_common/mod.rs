// Helpers for the fastpath-hook end-to-end tests: binaries, skip-or-fail, a fixture with its own
// fastpathd, ledger and rootfs, bundles for runc/crun, podman command lines, and clean-state checks.
//! Hook test helpers (used by `hook_*.rs` only).
#![allow(dead_code, missing_docs)]

use integration::fastpathd_args;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The contract's annotations.
pub const CONTRACT: [(&str, &str); 3] =
    [("fastpath.io/cores", "1"), ("fastpath.io/hugepages", "64Mi"), ("fastpath.io/vhost-user", "br0")];
/// Frames sent from one container to the other.
pub const FRAMES: u64 = 20_000;

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `$FASTPATH_BIN_DIR`, else `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_dir().join("target/release"),
    }
}

/// Statically linked apps for the busybox rootfs: `$FASTPATH_STATIC_BIN_DIR`, else
/// `<workspace>/target/static/x86_64-unknown-linux-gnu/release`.
pub fn static_bin_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_STATIC_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_dir().join("target/static/x86_64-unknown-linux-gnu/release"),
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_static(p: &Path) -> bool {
    // A static executable has no PT_INTERP: look for the loader's name in the file.
    std::fs::read(p).is_ok_and(|b| !b.windows(15).any(|w| w == b"/ld-linux-x86-6"))
}

/// Everything a hook test needs from the machine.
#[derive(Debug, Clone)]
pub struct Peers {
    pub hook: PathBuf,
    pub fastpathd: PathBuf,
    pub pktgen: PathBuf,
    pub sink: PathBuf,
    pub busybox: PathBuf,
    pub runtime: Option<PathBuf>,
}

/// Checks the machine; on a missing piece prints `SKIPPED: reason` and returns `None`, or
/// panics when `FASTPATH_REQUIRE_PEERS=1` (CI).
pub fn require(test: &str, runtime: Option<&str>) -> Option<Peers> {
    match find(runtime) {
        Ok(p) => Some(p),
        Err(reason) => {
            assert!(
                std::env::var("FASTPATH_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{test}: FASTPATH_REQUIRE_PEERS=1 but {reason}"
            );
            eprintln!("SKIPPED: {test}: {reason}");
            None
        }
    }
}

fn find(runtime: Option<&str>) -> Result<Peers, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root (the hook mounts, writes cgroups and runs runtimes)".into());
    }
    let b = bin_dir();
    let s = static_bin_dir();
    let need =
        |p: PathBuf, how: &str| if p.is_file() { Ok(p) } else { Err(format!("{} is missing ({how})", p.display())) };
    let release = "cargo build --release -p fastpath-hook -p fastpath";
    let stat = "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu -p fastpath-examples --target-dir target/static";
    let p = Peers {
        hook: need(b.join("fastpath-hook"), release)?,
        fastpathd: need(b.join("fastpathd"), release)?,
        pktgen: need(s.join("pktgen"), stat)?,
        sink: need(s.join("sink"), stat)?,
        busybox: need(PathBuf::from("/bin/busybox"), "apt-get install busybox-static")?,
        runtime: match runtime {
            Some(r) => Some(which(r).ok_or_else(|| format!("{r} is not installed (apt-get install {r})"))?),
            None => None,
        },
    };
    if !is_static(&p.busybox) {
        return Err("/bin/busybox is not static (apt-get install busybox-static)".into());
    }
    if !is_static(&p.pktgen) || !is_static(&p.sink) {
        return Err(format!("pktgen/sink in {} are not static ({stat})", s.display()));
    }
    let free = std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").unwrap_or_default();
    if free.trim().parse::<u64>().unwrap_or(0) < 96 {
        return Err(format!(
            "fewer than 96 free 2 MiB hugepages ({}): echo 1024 > /proc/sys/vm/nr_hugepages",
            free.trim()
        ));
    }
    crun_hybrid_fix()?;
    Ok(p)
}

/// On a hybrid cgroup host, binds the hugetlb controller to a v1 hierarchy (crun refuses
/// hybrid mode otherwise; see shared/notes/oci-runtimes.md). Idempotent.
pub fn crun_hybrid_fix() -> Result<(), String> {
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let Ok(ctrls) = std::fs::read_to_string(unified) else { return Ok(()) };
    if !ctrls.split_whitespace().any(|c| c == "hugetlb") {
        return Ok(());
    }
    let out = Command::new("sh")
        .args(["-c", "mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("binding hugetlb to a v1 hierarchy failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Writes the hook's config `path`: core pool `pool`, state dir `state`, fastpathd's control
/// socket `ctl`, the hook's library dir `lib`.
pub fn write_hook_config(path: &Path, pool: &str, state: &Path, ctl: &Path, lib: &Path) {
    std::fs::write(
        path,
        format!(
            "cores = \"{pool}\"\nstate_dir = \"{}\"\nswitch_socket = \"{}\"\nlib_dir = \"{}\"\n",
            state.display(),
            ctl.display(),
            lib.display()
        ),
    )
    .unwrap();
}

/// Serialises against every other integration test (they share 2 CPUs).
pub fn serial() -> Flock<File> {
    let f = File::options().create(true).truncate(false).write(true).open("/tmp/fastpath-integration.lock").unwrap();
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap()
}

pub fn wait_until(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + t;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes that map hugetlbfs files now (pid, command): who holds hugepages.
pub fn hugepage_holders() -> Vec<String> {
    let Ok(d) = std::fs::read_dir("/proc") else { return vec![] };
    d.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let smaps = std::fs::read_to_string(e.path().join("smaps")).ok()?;
            let huge = smaps.lines().any(|l| l.starts_with("KernelPageSize:") && !l.contains(" 4 kB"));
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            huge.then(|| format!("{pid} {}", comm.trim()))
        })
        .collect()
}

/// HugePages_Free comes back to `before` (other people's tests share the pool: on failure
/// the message names who maps hugepages now).
pub fn assert_hugepages_back(before: u64) {
    let back = wait_until(Duration::from_secs(30), || free_hugepages() >= before);
    assert!(
        back,
        "HugePages_Free {} < {before} before; processes mapping hugepages now: {:?}",
        free_hugepages(),
        hugepage_holders()
    );
}

pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs a command to completion with a deadline; kills it when late.
pub fn run_timeout(cmd: &mut Command, t: Duration) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_output(child, t)
}

/// Waits for a spawned child (stdout/stderr piped) with a deadline; kills it when late. The
/// pipes are read on threads and given up on shortly after the child exits, so a grandchild
/// that inherited them (a created container) cannot hang the test.
pub fn wait_output(mut child: Child, t: Duration) -> Output {
    use std::io::Read;
    fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            let _ = tx.send(v);
        });
        rx
    }
    let (out, err) = (reader(child.stdout.take()), reader(child.stderr.take()));
    let end = Instant::now() + t;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let grace = Duration::from_secs(3);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = err.recv_timeout(grace).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "command timed out after {t:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output { status, stdout, stderr }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The runtimes under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    Runc,
    Crun,
    Podman,
}

impl Rt {
    pub fn name(self) -> &'static str {
        match self {
            Rt::Runc => "runc",
            Rt::Crun => "crun",
            Rt::Podman => "podman",
        }
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One test's world: a directory, a rootfs, a hook.toml, a ledger, its own fastpathd.
pub struct Fixture {
    pub peers: Peers,
    pub rt: Rt,
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    pub ctl: PathBuf,
    pub hooks_dir: PathBuf,
    pub fastpathd: Option<Child>,
    /// Container names this test started (deleted on drop).
    pub names: Vec<String>,
    /// Runtime processes still to reap on drop.
    pub children: Vec<Child>,
    _lock: Flock<File>,
}

impl Fixture {
    /// A fixture whose hook pool is `pool`, with fastpathd running one bridge, br0.
    pub fn new(peers: &Peers, rt: Rt, pool: &str) -> Self {
        let lock = serial();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        // Short: the hook's socket path is <state>/sock/<64-char podman id>/br0.sock (< 108 bytes).
        let dir = PathBuf::from(format!("/tmp/fph{}.{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("s");
        let ctl = dir.join("ctl.sock");
        let config = dir.join("hook.toml");
        write_hook_config(&config, pool, &state, &ctl, &dir.join("lib"));
        // What fastpath.io/inject mounts: a stand-in for libfastpath_net.so and its header.
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(dir.join("lib/libfastpath_net.so"), "not really a library\n").unwrap();
        std::fs::write(dir.join("lib/fastpath_net.h"), "/* header */\n").unwrap();
        let rootfs = dir.join("rootfs");
        make_rootfs(peers, &rootfs);
        let mut fx = Fixture {
            peers: peers.clone(),
            rt,
            dir: dir.clone(),
            rootfs,
            config,
            state,
            ctl,
            hooks_dir: dir.join("hooks.d"),
            fastpathd: None,
            names: vec![],
            children: vec![],
            _lock: lock,
        };
        fx.start_switch();
        if rt == Rt::Podman {
            let o = run_timeout(
                Command::new(&peers.hook)
                    .args(["--config"])
                    .arg(&fx.config)
                    .args(["install", "--hooks-dir"])
                    .arg(&fx.hooks_dir)
                    .arg("--hook")
                    .arg(&peers.hook),
                Duration::from_secs(10),
            );
            assert!(o.status.success(), "install: {}", text(&o));
        }
        fx
    }

    pub fn start_switch(&mut self) {
        let log = File::create(self.dir.join("fastpathd.log")).unwrap();
        let child = Command::new(&self.peers.fastpathd)
            .args(fastpathd_args(&self.ctl, &["br0"], &[]))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.fastpathd = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || self.ctl.exists()),
            "fastpathd did not create {}",
            self.ctl.display()
        );
    }

    pub fn stop_switch(&mut self) {
        if let Some(mut c) = self.fastpathd.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            if !wait_until(Duration::from_secs(5), || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// A hook.toml like the fixture's, but with another switch socket (for "fastpathd not running").
    pub fn config_with_switch(&self, sock: &Path) -> PathBuf {
        let p = self.dir.join("hook-noswitch.toml");
        let t = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace(&self.ctl.display().to_string(), &sock.display().to_string());
        std::fs::write(&p, t).unwrap();
        p
    }

    /// A request to fastpathd.
    pub fn ctl(&self, req: &Value) -> Value {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.ctl).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        writeln!(s, "{req}").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    pub fn ports(&self) -> Vec<String> {
        self.ctl(&json!({"cmd": "list"}))["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    pub fn ledger(&self) -> Value {
        std::fs::read_to_string(self.state.join("ledger.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({"containers": {}}))
    }

    pub fn entries(&self) -> serde_json::Map<String, Value> {
        self.ledger()["containers"].as_object().cloned().unwrap_or_default()
    }

    pub fn ready_entries(&self) -> Vec<Value> {
        self.entries().values().filter(|e| e["status"] == "ready").cloned().collect()
    }

    /// The hook's failure log (`<state>/hook.log`): crun drops a hook's stderr.
    pub fn hook_log(&self) -> String {
        std::fs::read_to_string(self.state.join("hook.log")).unwrap_or_default()
    }

    /// Runs `fastpath-hook gc` with the fixture's config.
    pub fn gc(&self) -> Output {
        run_timeout(
            Command::new(&self.peers.hook).arg("--config").arg(&self.config).args(["gc", "--json"]),
            Duration::from_secs(20),
        )
    }

    /// The bundle (runc, crun) for a container.
    pub fn bundle(&self, name: &str, script: &str, ann: &[(&str, &str)], config: Option<&Path>) -> PathBuf {
        let b = self.dir.join(format!("b-{name}"));
        std::fs::create_dir_all(&b).unwrap();
        let cfg = config.unwrap_or(&self.config);
        let hooks: serde_json::Map<String, Value> = ["createRuntime", "createContainer", "poststop"]
            .iter()
            .map(|s| {
                (
                    (*s).to_string(),
                    json!([{"path": self.peers.hook, "args": ["fastpath-hook", "--config", cfg, s], "timeout": 30}]),
                )
            })
            .collect();
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 1000, "gid": 1000},
                "args": ["sh", "-c", script],
                "env": ["PATH=/bin", "HOME=/tmp"],
                "cwd": "/",
                "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": self.rootfs, "readonly": false},
            "hostname": name,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
            ],
            "annotations": ann.iter().map(|(k, v)| ((*k).to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "hooks": hooks,
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        std::fs::write(b.join("config.json"), serde_json::to_string_pretty(&spec).unwrap()).unwrap();
        b
    }

    /// The runtime's state directory (private to the fixture).
    pub fn rt_root(&self) -> PathBuf {
        self.dir.join(format!("{}-root", self.rt.name()))
    }

    /// Podman's global flags: private storage, cgroupfs, the fixture's hooks.d.
    pub fn podman_global(&self) -> Vec<String> {
        vec![
            "--root".into(),
            self.dir.join("pm/root").display().to_string(),
            "--runroot".into(),
            self.dir.join("pm/run").display().to_string(),
            "--cgroup-manager=cgroupfs".into(),
            "--hooks-dir".into(),
            self.hooks_dir.display().to_string(),
            "--log-level=error".into(),
        ]
    }

    /// The command that runs a container in the foreground (stdout = the container's).
    pub fn run_cmd(&mut self, name: &str, script: &str, ann: &[(&str, &str)], config: Option<&Path>) -> Command {
        self.names.push(name.into());
        let rt = self.peers.runtime.clone().expect("a runtime");
        let mut c = Command::new(&rt);
        match self.rt {
            Rt::Runc | Rt::Crun => {
                let b = self.bundle(name, script, ann, config);
                c.arg("--root").arg(self.rt_root()).args(["run", "--bundle"]).arg(&b).arg(name);
            }
            Rt::Podman => {
                let hooks_dir = match config {
                    Some(cfg) => {
                        // A second hooks.d pointing at the other config.
                        let d = self.dir.join(format!("hooks-{name}"));
                        let o = run_timeout(
                            Command::new(&self.peers.hook)
                                .arg("--config")
                                .arg(cfg)
                                .args(["install", "--hooks-dir"])
                                .arg(&d)
                                .arg("--hook")
                                .arg(&self.peers.hook),
                            Duration::from_secs(10),
                        );
                        assert!(o.status.success(), "{}", text(&o));
                        d
                    }
                    None => self.hooks_dir.clone(),
                };
                let mut g = self.podman_global();
                g[6] = hooks_dir.display().to_string();
                c.args(g).args(["run", "--rm", "--name", name]);
                c.args([
                    "--user",
                    "1000:1000",
                    "--cap-drop",
                    "all",
                    "--network",
                    "none",
                    "--security-opt",
                    "no-new-privileges",
                ]);
                c.args(["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096", "--env", "PATH=/bin"]);
                for (k, v) in ann {
                    c.arg("--annotation").arg(format!("{k}={v}"));
                }
                // --rootfs is a switch: the first positional is the rootfs, the rest the command.
                c.arg("--rootfs").arg(&self.rootfs).args(["sh", "-c", script]);
            }
        }
        c
    }

    /// Removes a container's runtime state whatever it is doing.
    pub fn force_delete(&self, name: &str) {
        let Some(rt) = &self.peers.runtime else { return };
        let mut c = Command::new(rt);
        match self.rt {
            Rt::Runc | Rt::Crun => {
                c.arg("--root").arg(self.rt_root()).args(["delete", "--force", name]);
            }
            Rt::Podman => {
                c.args(self.podman_global()).args(["rm", "--force", "--time", "0", name]);
            }
        }
        let _ = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }

    /// The host has nothing left of the fixture's containers: no ledger entry, no switch
    /// port, no socket directory, no mount, none of the `cgroups` directories.
    pub fn assert_clean(&self, cgroups: &[PathBuf]) {
        let entries = self.entries();
        assert!(entries.is_empty(), "ledger entries left: {entries:?}");
        let ports = self.ports();
        assert!(ports.is_empty(), "switch ports left: {ports:?}");
        let socks: Vec<_> = std::fs::read_dir(self.state.join("sock"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(socks.is_empty(), "socket directories left: {socks:?}");
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // podman's own storage (pm/) is podman's business; the hook mounts nothing on the host.
        let pm = self.dir.join("pm");
        let ours: Vec<&str> = mi
            .lines()
            .filter(|l| l.contains(self.dir.to_str().unwrap()) && !l.contains(pm.to_str().unwrap()))
            .collect();
        assert!(ours.is_empty(), "mounts left: {ours:?}");
        for c in cgroups {
            assert!(!c.exists(), "cgroup {} left", c.display());
        }
        if let Some(c) = &self.fastpathd {
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", c.id())).unwrap_or_default();
            let huge: Vec<&str> = maps.lines().filter(|l| l.contains("hugepages")).collect();
            assert!(huge.is_empty(), "fastpathd still maps container memory: {huge:?}");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.names.clone() {
            self.force_delete(&n);
        }
        let _ = self.gc();
        self.stop_switch();
        if self.rt == Rt::Podman {
            // A killed conmon never cleaned up: its container's state stays in the OCI
            // runtime's default root. Delete those whose bundle is ours, and only those.
            for (rt, root) in [("crun", "/run/crun"), ("runc", "/run/runc")] {
                for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
                    let status = std::fs::read_to_string(e.path().join("status"))
                        .or_else(|_| std::fs::read_to_string(e.path().join("state.json")))
                        .unwrap_or_default();
                    if status.contains(self.dir.to_str().unwrap()) {
                        let _ = Command::new(rt)
                            .args(["delete", "--force"])
                            .arg(e.file_name())
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
            // podman's private storage may hold overlay mounts; it unmounts them itself.
            let _ = Command::new(self.peers.runtime.as_ref().unwrap())
                .args(self.podman_global())
                .args(["system", "reset", "--force"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// busybox (with its applet links), pktgen and sink.
pub fn make_rootfs(p: &Peers, root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "run", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&p.busybox, bin.join("busybox")).unwrap();
    let list = Command::new(&p.busybox).arg("--list").output().unwrap();
    for a in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(a));
    }
    for (src, name) in [(&p.pktgen, "pktgen"), (&p.sink, "sink")] {
        std::fs::copy(src, bin.join(name)).unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
}

/// The checks each contract container runs before its app; prints KEY=VALUE lines.
pub const CHECKS: &str = r#"
echo "UID=$(id -u)"
echo "CAPEFF=$(grep '^CapEff:' /proc/self/status | tr -d ' \t' | cut -d: -f2)"
echo "CPUS=$(grep '^Cpus_allowed_list:' /proc/self/status | tr -d ' \t' | cut -d: -f2)"
echo "HUGEMOUNT=$(grep ' /dev/hugepages ' /proc/self/mountinfo | head -1)"
if fallocate -l 64M /dev/hugepages/fill; then echo FILL=ok; else echo FILL=fail; fi
if fallocate -l 2M /dev/hugepages/over 2>/dev/null; then echo OVER=allowed; else echo OVER=refused; fi
rm -f /dev/hugepages/fill /dev/hugepages/over
echo "CONFIG=$(tr -d '\n ' < /run/fastpath/config.json)"
echo "SOCKET=$(ls /run/fastpath/sock)"
"#;

/// Parses `KEY=VALUE` lines.
pub fn kv(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The last line of `out` that is a JSON object.
pub fn last_json(out: &str) -> Option<Value> {
    out.lines().rev().find_map(|l| serde_json::from_str::<Value>(l.trim()).ok().filter(Value::is_object))
}

/// Formats a CPU list for comparison with Cpus_allowed_list.
pub fn cpu_list(cores: &Value) -> String {
    cores.as_array().map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")).unwrap_or_default()
}
