// Helpers for the tests of fastpath-hook with real runtimes (hook_*.rs, apps_containers.rs,
// soak.rs): what they need from the machine, a fixture with its own fastpathd, ledger and
// rootfs, bundles for runc/crun, podman command lines, clean-state checks, and what a process
// and the host hold (fds, mappings, mounts) with the difference of two such lists.
//! Hook test helpers (the `integration` crate and `fastpath-oci` do the generic parts).
#![allow(dead_code)] // each test binary uses a different subset

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fastpath_oci::{hook_stages, make_rootfs, require_static, which, write_bundle, HookConfig, Spec, BUSYBOX};
use integration::{
    bin_dir, fastpathctl_list_with, fastpathd_args, last_json_line, output_text, run_with_timeout, serial,
    skip_or_fail, spawn_piped, static_bin_dir, wait_for_socket, wait_output, wait_until, Proc, Serial, TestDir,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Frames sent from one container to the other.
pub const FRAMES: u64 = 20_000;
/// How long a container of an app test may run.
pub const RUN: Duration = Duration::from_secs(90);
/// Free 2 MiB hugepages a hook test needs (two containers of 64 MiB, and room for others').
const HUGEPAGES_NEEDED: u64 = 96;

/// Everything a hook test needs from the machine.
#[derive(Debug, Clone)]
pub struct Peers {
    /// fastpath-hook.
    pub hook: PathBuf,
    /// fastpathd.
    pub fastpathd: PathBuf,
    /// fastpathctl.
    pub fastpathctl: PathBuf,
    /// The static pktgen for the rootfs.
    pub pktgen: PathBuf,
    /// The static sink for the rootfs.
    pub sink: PathBuf,
    /// The OCI runtime the test asked for.
    pub runtime: Option<PathBuf>,
}

/// Checks the machine for a hook test under `runtime` (runc, crun, podman, or none); on a
/// missing piece, skips or fails ([`skip_or_fail`]) and returns `None`.
pub fn require(test: &str, runtime: Option<&str>) -> Option<Peers> {
    match find(runtime) {
        Ok(p) => Some(p),
        Err(reason) => {
            skip_or_fail(test, &reason);
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
    let stat = "cargo xtask test builds them: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release \
                --target x86_64-unknown-linux-gnu -p fastpath-examples --target-dir target/static";
    let p = Peers {
        hook: need(b.join("fastpath-hook"), release)?,
        fastpathd: need(b.join("fastpathd"), release)?,
        fastpathctl: need(b.join("fastpathctl"), release)?,
        pktgen: s.join("pktgen"),
        sink: s.join("sink"),
        runtime: match runtime {
            Some(r) => Some(which(r).ok_or_else(|| format!("{r} is not installed (apt-get install {r})"))?),
            None => None,
        },
    };
    require_static(Path::new(BUSYBOX), "apt-get install busybox-static").map_err(|e| e.to_string())?;
    for app in [&p.pktgen, &p.sink] {
        require_static(app, stat).map_err(|e| e.to_string())?;
    }
    let free = free_hugepages();
    if free < HUGEPAGES_NEEDED {
        return Err(format!(
            "fewer than {HUGEPAGES_NEEDED} free 2 MiB hugepages ({free}): echo 1024 > /proc/sys/vm/nr_hugepages"
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

/// The hook's files in a test directory: its hook.toml and what that names, and the rootfs
/// its containers share.
pub struct HookFiles {
    /// `<dir>/hook.toml`.
    pub config: PathBuf,
    /// The hook's state directory, `<dir>/s`.
    pub state: PathBuf,
    /// fastpathd's control socket, `<dir>/ctl.sock` (the test starts fastpathd).
    pub ctl: PathBuf,
    /// What `fastpath.io/inject` mounts, `<dir>/lib` (not created).
    pub lib: PathBuf,
    /// The busybox rootfs with the static pktgen and sink, `<dir>/rootfs`.
    pub rootfs: PathBuf,
}

impl HookFiles {
    /// Writes hook.toml (core pool `pool`) and builds the rootfs with `peers`' pktgen and sink.
    pub fn write(dir: &TestDir, peers: &Peers, pool: &str) -> Self {
        let f = Self {
            config: dir.join("hook.toml"),
            state: dir.join("s"),
            ctl: dir.join("ctl.sock"),
            lib: dir.join("lib"),
            rootfs: dir.join("rootfs"),
        };
        HookConfig { cores: pool, state_dir: &f.state, switch_socket: &f.ctl, lib_dir: Some(&f.lib) }
            .write(&f.config)
            .unwrap_or_else(|e| panic!("{e}"));
        make_rootfs(&f.rootfs, &[(&peers.pktgen, "pktgen"), (&peers.sink, "sink")]).unwrap_or_else(|e| panic!("{e}"));
        f
    }
}

/// `cmd` run to completion within `t`; panics (with its output so far) when it is late.
pub fn run_timeout(cmd: &mut Command, t: Duration) -> Output {
    run_with_timeout(cmd, t).unwrap_or_else(|e| panic!("{e}"))
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

/// Free 2 MiB hugepages on the host.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The runtimes under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    /// runc, with a bundle per container.
    Runc,
    /// crun, with a bundle per container.
    Crun,
    /// podman, with the hook installed in a hooks.d.
    Podman,
}

impl Rt {
    /// The runtime's command name.
    pub fn name(self) -> &'static str {
        match self {
            Rt::Runc => "runc",
            Rt::Crun => "crun",
            Rt::Podman => "podman",
        }
    }
}

/// One test's world: a directory, a rootfs, a hook.toml, a ledger, its own fastpathd. Holds
/// the machine-wide test lock while it lives.
pub struct Fixture {
    /// What the test found on the machine.
    pub peers: Peers,
    /// The runtime under test.
    pub rt: Rt,
    /// The root filesystem every container of the fixture shares.
    pub rootfs: PathBuf,
    /// The hook's hook.toml.
    pub config: PathBuf,
    /// The hook's state directory.
    pub state: PathBuf,
    /// fastpathd's control socket.
    pub ctl: PathBuf,
    /// The hooks.d podman is given.
    pub hooks_dir: PathBuf,
    /// The fixture's fastpathd (bridge br0).
    pub fastpathd: Option<Proc>,
    /// Container names this test started (deleted on drop).
    pub names: Vec<String>,
    /// The fixture's directory (removed last, on drop).
    pub dir: TestDir,
    /// The machine-wide test lock (none for a second host: its first one holds it).
    lock: Option<Serial>,
}

impl Fixture {
    /// A fixture whose hook pool is `pool`, with fastpathd running one bridge, br0.
    pub fn new(peers: &Peers, rt: Rt, pool: &str) -> Self {
        let mut fx = Self::without_switch(peers, rt, pool);
        fx.start_switch();
        fx
    }

    /// A fixture whose hook pool is `pool` and no fastpathd: the test starts one on
    /// [`Fixture::ctl`] (from the node image, say).
    pub fn without_switch(peers: &Peers, rt: Rt, pool: &str) -> Self {
        let lock = serial();
        // Short: the hook's socket path is <state>/sock/<64-char podman id>/br0.sock (< 108 bytes).
        let dir = TestDir::new("h");
        let host = HookFiles::write(&dir, peers, pool);
        // What fastpath.io/inject mounts: a stand-in for libfastpath_net.so and its header.
        std::fs::create_dir_all(&host.lib).unwrap();
        std::fs::write(host.lib.join("libfastpath_net.so"), "not really a library\n").unwrap();
        std::fs::write(host.lib.join("fastpath_net.h"), "/* header */\n").unwrap();
        let fx = Self::of(peers, rt, dir, host, Some(lock));
        if rt == Rt::Podman {
            let hooks_dir = fx.hooks_dir.clone();
            fx.install_hook(&fx.config, &hooks_dir);
        }
        fx
    }

    /// A second "host" beside this one, under its test lock: its own directory, rootfs,
    /// hook.toml (core pool `pool`), hook state directory and fastpathd control socket, and
    /// no fastpathd yet (the test starts it, e.g. in a network namespace).
    pub fn second_host(&self, pool: &str) -> Self {
        let dir = TestDir::new("h2");
        let host = HookFiles::write(&dir, &self.peers, pool);
        Self::of(&self.peers, self.rt, dir, host, None)
    }

    /// The fixture of `host`'s files in `dir`, no fastpathd started.
    fn of(peers: &Peers, rt: Rt, dir: TestDir, host: HookFiles, lock: Option<Serial>) -> Self {
        Fixture {
            peers: peers.clone(),
            rt,
            rootfs: host.rootfs,
            config: host.config,
            state: host.state,
            ctl: host.ctl,
            hooks_dir: dir.join("hooks.d"),
            fastpathd: None,
            names: vec![],
            dir,
            lock,
        }
    }

    /// The machine-wide test lock the fixture holds, for a caller that must keep it past the
    /// fixture's drop (to undo, under the lock, something the fixture's cleanup needs).
    pub fn take_lock(&mut self) -> Option<Serial> {
        self.lock.take()
    }

    /// `fastpath-hook --config CONFIG install --hooks-dir DIR`: podman's hooks.d for `config`.
    fn install_hook(&self, config: &Path, hooks_dir: &Path) {
        let o = run_timeout(
            Command::new(&self.peers.hook)
                .arg("--config")
                .arg(config)
                .args(["install", "--hooks-dir"])
                .arg(hooks_dir)
                .arg("--hook")
                .arg(&self.peers.hook),
            Duration::from_secs(10),
        );
        assert!(o.status.success(), "install: {}", output_text(&o));
    }

    /// Starts the fixture's fastpathd (bridge br0) and waits for its control socket.
    pub fn start_switch(&mut self) {
        let args = fastpathd_args(&self.ctl, &["br0"], &[]);
        let mut sw = Proc::spawn("fastpathd", &self.dir, &self.peers.fastpathd, &args, &[]);
        let up = wait_for_socket(&self.ctl, Duration::from_secs(10));
        assert!(up, "fastpathd did not create {}:\n{}", self.ctl.display(), sw.describe(20, 0));
        self.fastpathd = Some(sw);
    }

    /// Stops the fixture's fastpathd (SIGTERM, SIGKILL after 5 s).
    pub fn stop_switch(&mut self) {
        if let Some(mut sw) = self.fastpathd.take() {
            sw.stop(Signal::SIGTERM, Duration::from_secs(5));
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

    /// fastpathd's ports with their counters (`fastpathctl list --json`).
    pub fn list(&self) -> Vec<Value> {
        fastpathctl_list_with(&self.peers.fastpathctl, &self.ctl).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A hook.toml like the fixture's plus the line `line` (e.g. `port_security = "off"`).
    pub fn config_plus(&self, name: &str, line: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, format!("{}{line}\n", std::fs::read_to_string(&self.config).unwrap())).unwrap();
        p
    }

    /// The names of fastpathd's ports.
    pub fn ports(&self) -> Vec<String> {
        self.list().iter().filter_map(|p| p["name"].as_str().map(String::from)).collect()
    }

    /// Waits up to `t` until at least `n` of fastpathd's ports have their link up.
    pub fn wait_links_up(&self, n: usize, t: Duration) -> bool {
        wait_until(t, || {
            fastpathctl_list_with(&self.peers.fastpathctl, &self.ctl)
                .is_ok_and(|l| l.iter().filter(|p| p["stats"]["link_up"] == true).count() >= n)
        })
    }

    /// The hook's ledger (`{"containers": {}}` when there is none yet).
    pub fn ledger(&self) -> Value {
        std::fs::read_to_string(self.state.join("ledger.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({"containers": {}}))
    }

    /// The ledger's entries by container id.
    pub fn entries(&self) -> serde_json::Map<String, Value> {
        self.ledger()["containers"].as_object().cloned().unwrap_or_default()
    }

    /// The ledger entries whose status is "ready".
    pub fn ready_entries(&self) -> Vec<Value> {
        self.entries().values().filter(|e| e["status"] == "ready").cloned().collect()
    }

    /// Waits up to 20 s for the ledger to empty: poststop (or a delete) released every
    /// container of the fixture. Fails with what the ledger still holds.
    pub fn assert_released(&self) {
        let released = wait_until(Duration::from_secs(20), || self.entries().is_empty());
        assert!(released, "poststop did not release within 20 s: {}", self.ledger());
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

    /// The bundle (runc, crun) for a container running `sh -c script` with annotations `ann`
    /// and the hook at every stage, with the fixture's hook.toml or `config`.
    pub fn bundle(&self, name: &str, script: &str, ann: &[(&str, &str)], config: Option<&Path>) -> PathBuf {
        let hooks = hook_stages(&self.peers.hook, config.unwrap_or(&self.config));
        let args = ["sh", "-c", script];
        let spec = Spec { annotations: ann, hooks: Some(&hooks), ..Spec::new(name, &self.rootfs, &args) };
        write_bundle(&self.dir.join(&format!("b-{name}")), &spec).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The runtime's state directory (private to the fixture).
    pub fn rt_root(&self) -> PathBuf {
        self.dir.join(&format!("{}-root", self.rt.name()))
    }

    /// Podman's global flags: private storage, cgroupfs, `hooks_dir`.
    fn podman_flags(&self, hooks_dir: &Path) -> Vec<String> {
        vec![
            "--root".into(),
            self.dir.join("pm/root").display().to_string(),
            "--runroot".into(),
            self.dir.join("pm/run").display().to_string(),
            "--cgroup-manager=cgroupfs".into(),
            "--hooks-dir".into(),
            hooks_dir.display().to_string(),
            "--log-level=error".into(),
        ]
    }

    /// Podman's global flags: private storage, cgroupfs, the fixture's hooks.d.
    pub fn podman_global(&self) -> Vec<String> {
        self.podman_flags(&self.hooks_dir)
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
                        let d = self.dir.join(&format!("hooks-{name}"));
                        self.install_hook(cfg, &d);
                        d
                    }
                    None => self.hooks_dir.clone(),
                };
                c.args(self.podman_flags(&hooks_dir)).args(["run", "--rm", "--name", name]);
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
            .filter(|l| l.contains(self.dir.path().to_str().unwrap()) && !l.contains(pm.to_str().unwrap()))
            .collect();
        assert!(ours.is_empty(), "mounts left: {ours:?}");
        for c in cgroups {
            assert!(!c.exists(), "cgroup {} left", c.display());
        }
        if let Some(sw) = &self.fastpathd {
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", sw.pid())).unwrap_or_default();
            let huge: Vec<&str> = maps.lines().filter(|l| l.contains("hugepages")).collect();
            assert!(huge.is_empty(), "fastpathd still maps container memory: {huge:?}");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for n in self.names.clone() {
            self.force_delete(&n);
        }
        let _ = run_with_timeout(
            Command::new(&self.peers.hook).arg("--config").arg(&self.config).args(["gc", "--json"]),
            Duration::from_secs(20),
        );
        self.stop_switch();
        if self.rt == Rt::Podman {
            // A killed conmon never cleaned up: its container's state stays in the OCI
            // runtime's default root. Delete those whose bundle is ours, and only those.
            let ours = self.dir.path().display().to_string();
            for (rt, root) in [("crun", "/run/crun"), ("runc", "/run/runc")] {
                for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
                    let status = std::fs::read_to_string(e.path().join("status"))
                        .or_else(|_| std::fs::read_to_string(e.path().join("state.json")))
                        .unwrap_or_default();
                    if status.contains(&ours) {
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
            if let Some(podman) = &self.peers.runtime {
                let _ = Command::new(podman)
                    .args(self.podman_global())
                    .args(["system", "reset", "--force"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // Then the fields: the directory is removed (TestDir), the lock released (Serial).
    }
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

/// Formats a CPU list for comparison with Cpus_allowed_list.
pub fn cpu_list(cores: &Value) -> String {
    cores.as_array().map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

/// Waits until `n` switch ports are up; else stops the container `name` and fails with its output.
pub fn wait_ports_up(fx: &Fixture, n: usize, name: &str, child: &mut Option<Child>) {
    if !fx.wait_links_up(n, Duration::from_secs(40)) {
        let list = fx.list();
        let out = child.take().map(|c| finish(fx, name, c, Duration::ZERO));
        panic!(
            "expected {n} switch port(s) up within 40 s: {list:?}\n{name} container: {}\nhook log: {}",
            out.as_ref().map_or_else(String::new, output_text),
            fx.hook_log()
        );
    }
}

/// The socket a contract container's port has in the container.
pub const PORT_SOCK: &str = "vu:/run/fastpath/sock/br0.sock";
/// The apps' flags in a contract container (sharing 2 CPUs with fastpathd, JSON results).
pub const APP_FLAGS: &str = "--idle-sleep-us 20 --queue-size 4096 --json --quiet --link-timeout 30";

/// The demo flow through the fixture's switch: a sink container (`sink_first`, shell run
/// before it, and `sink_ann` on top of the contract's annotations) and a pktgen container
/// sending it [`FRAMES`] frames; fails unless both succeed and at least 99 % arrive, none bad
/// (the hook's log and `why()` are added to a failing sink's message). Returns the frames received.
pub fn pktgen_to_sink(fx: &mut Fixture, sink_first: &str, sink_ann: &[(&str, &str)], why: &dyn Fn() -> String) -> u64 {
    let sink = format!("{sink_first}exec sink --port {PORT_SOCK} --check --count {FRAMES} --idle-exit 3 {APP_FLAGS}");
    let mut ann = fastpath_oci::CONTRACT.to_vec();
    ann.extend_from_slice(sink_ann);
    let mut c = fx.run_cmd("fpsink", &sink, &ann, None);
    let mut sink_child = Some(spawn_piped(&mut c));
    wait_ports_up(fx, 1, "fpsink", &mut sink_child);
    let gen = format!("exec pktgen --port {PORT_SOCK} --count {FRAMES} --rate 50000 {APP_FLAGS}");
    let mut c = fx.run_cmd("fpgen", &gen, &fastpath_oci::CONTRACT, None);
    let gen_out = wait_output(spawn_piped(&mut c), RUN).unwrap_or_else(|e| panic!("pktgen container: {e}"));
    let sink_out = finish(fx, "fpsink", sink_child.take().unwrap(), RUN);
    assert!(gen_out.status.success(), "pktgen container: {}\nhook log: {}", output_text(&gen_out), fx.hook_log());
    assert!(
        sink_out.status.success(),
        "sink container: {}\nhook log: {}\n{}",
        output_text(&sink_out),
        fx.hook_log(),
        why()
    );
    let r = last_json_line(&String::from_utf8_lossy(&sink_out.stdout))
        .unwrap_or_else(|| panic!("no sink JSON: {}", output_text(&sink_out)));
    let got = r["received"].as_u64().unwrap_or(0);
    assert!(got >= FRAMES * 99 / 100 && r["bad"] == 0, "sink: {r}");
    got
}

/// Sends SIGTERM to a container's first process (runc kill).
pub fn term(fx: &Fixture, name: &str) {
    let rt = fx.peers.runtime.clone().expect("a runtime");
    let o = run_timeout(Command::new(rt).arg("--root").arg(fx.rt_root()).args(["kill", name, "TERM"]), RUN);
    eprintln!("runc kill {name} TERM: {}", o.status);
}

/// Waits for a container; if it is still running after `t`, stops it with SIGTERM first.
pub fn finish(fx: &Fixture, name: &str, child: Child, t: Duration) -> Output {
    let pid = child.id();
    let done = wait_until(t, || !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
    if !done {
        term(fx, name);
    }
    wait_output(child, RUN).unwrap_or_else(|e| panic!("container {name}: {e}"))
}

/// Whether process `pid` has exited and waits to be reaped.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

/// A count from the environment variable `var` (a test's cycles or rounds), `default`
/// when it is unset or empty; panics naming it when it is not a number.
pub fn env_count(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a whole number"))
        }
        _ => default,
    }
}

/// A field of /proc/PID/status in kB (`VmRSS:`), 0 when unreadable.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// A process's open fds: what each points at, sockets and pipes by kind alone
/// (`socket:[123]` → `socket`), so that two processes holding the same things compare equal.
pub fn fd_kinds(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let t = std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
                    match t.split_once(":[") {
                        Some((kind, _)) if kind == "socket" || kind == "pipe" => kind.to_string(),
                        _ => t,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A process's mappings: permissions and path (`[anon]` for none).
pub fn mappings(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5..).map(|p| p.join(" ")).filter(|p| !p.is_empty());
            format!("{} {}", f.get(1).unwrap_or(&"?"), path.unwrap_or_else(|| "[anon]".into()))
        })
        .collect()
}

/// The host's mounts: mount point, type, source.
pub fn mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let tail = l.split_once(" - ").map_or("", |(_, t)| t);
            let mut t = tail.split(' ');
            format!("{} {} {}", f.get(4).unwrap_or(&"?"), t.next().unwrap_or("?"), t.next().unwrap_or("?"))
        })
        .collect()
}

/// What is in `after` and not in `before` (as multisets), then what went away, counted.
pub fn diff(before: &[String], after: &[String]) -> String {
    let count = |v: &[String]| {
        let mut m = std::collections::BTreeMap::<String, i64>::new();
        for s in v {
            *m.entry(s.clone()).or_default() += 1;
        }
        m
    };
    let (b, a) = (count(before), count(after));
    let mut out = Vec::new();
    for k in b.keys().chain(a.keys()).collect::<std::collections::BTreeSet<_>>() {
        let d = a.get(k).copied().unwrap_or(0) - b.get(k).copied().unwrap_or(0);
        if d != 0 {
            out.push(format!("{d:+} {k}"));
        }
    }
    if out.len() > 30 {
        let more = out.len() - 30;
        out.truncate(30);
        out.push(format!("... and {more} more"));
    }
    out.join("; ")
}

/// Copies `src` to `root/dst_rel` (mode 0755).
pub fn install(src: &Path, root: &Path, dst_rel: &str) {
    let dst = root.join(dst_rel.trim_start_matches('/'));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    // Not through a busybox applet link (bin/ping -> busybox): that would overwrite busybox.
    let _ = std::fs::remove_file(&dst);
    std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Static Rust examples into the rootfs's /bin.
pub fn add_static(fx: &Fixture, names: &[&str]) -> Result<(), String> {
    for n in names {
        let p = static_bin_dir().join(n);
        if !p.is_file() {
            return Err(format!("{} is missing (cargo xtask test builds the static examples)", p.display()));
        }
        install(&p, &fx.rootfs, &format!("bin/{n}"));
    }
    Ok(())
}
