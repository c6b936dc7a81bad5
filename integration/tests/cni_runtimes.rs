// fastpath-cni under real callers: podman's CNI backend (a private containers.conf pointing at
// a private plugin and conf directory) and containerd 1.6's `ctr run --cni` (a private containerd;
// ctr reads /etc/cni/net.d and /opt/cni/bin, given in a private mount namespace): two containers
// as uid 1000 without capabilities, pktgen -> sink --check through fastpathd; all released after.
//! CNI plugin under podman and ctr.

mod cni_common;
mod hook_common;

use std::process::Command;
use std::time::{Duration, Instant};

use cni_common::{files_under, plugin, Network};
use fastpath_oci::{config_json, which, Spec};
use hook_common::{require, Fixture, Rt};
use integration::{
    app_flags, check_sink, last_json_line, output_text, skip_or_fail, spawn_piped, wait_for_socket, wait_output,
    wait_until, Proc, RATE,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Frames pktgen sends to the sink.
const FRAMES: u64 = 20_000;
/// The apps' common flags (rings deep enough for a CPU shared with other pollers); the port
/// and MAC come from the app config fastpath-cni wrote.
fn app() -> String {
    app_flags().join(" ")
}
/// How long a container may run.
const RUN: Duration = Duration::from_secs(90);

/// The plugin fields of the tests' network: sockets for uid 1000.
fn extra() -> Value {
    json!({ "uid": 1000, "gid": 1000, "mtu": 1500 })
}

fn missing_plugin(test: &str) -> bool {
    let gone = !plugin().is_file();
    if gone {
        skip_or_fail(test, &format!("{} is missing (cargo build --release -p fastpath-cni)", plugin().display()));
    }
    gone
}

/// After both containers are gone: the ledger and fastpathd hold nothing of them and the
/// socket and device-info directories are empty (within 20 s: the runtime's DEL may lag).
fn assert_released(fx: &Fixture, net: &Network) {
    let clean = wait_until(Duration::from_secs(20), || {
        fx.entries().is_empty() && fx.ports().is_empty() && files_under(&net.socks).is_empty()
    });
    assert!(
        clean,
        "not released: ledger {:?}, ports {:?}, sockets {:?}",
        fx.entries(),
        fx.ports(),
        files_under(&net.socks)
    );
    assert!(files_under(&net.devinfo).is_empty(), "{:?}", files_under(&net.devinfo));
}

/// While both containers run: two ready CNI entries, each with its device-info file.
fn assert_attached(fx: &Fixture) {
    let ready = wait_until(Duration::from_secs(40), || {
        fx.entries().values().filter(|e| e["owner"] == "cni" && e["status"] == "ready").count() == 2
    });
    assert!(ready, "two CNI attachments expected: {:?}", fx.entries());
    for e in fx.entries().values() {
        let f = e["cni"]["device_info"].as_str().unwrap_or_default();
        let info: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap_or_default())
            .unwrap_or_else(|_| panic!("device-info file {f} of {e}"));
        assert_eq!(info["vhost-user"]["path"], e["ports"][0]["socket"], "{f}");
    }
}

/// The sink's and pktgen's outputs: both succeeded and every frame arrived intact.
fn assert_transfer(sink: &std::process::Output, gen: &std::process::Output) {
    assert!(gen.status.success(), "pktgen container: {}", output_text(gen));
    assert!(sink.status.success(), "sink container: {}", output_text(sink));
    let r = last_json_line(&String::from_utf8_lossy(&sink.stdout));
    check_sink(r.as_ref(), FRAMES).unwrap_or_else(|e| panic!("{e}\nsink: {}", output_text(sink)));
    for (who, o) in [("sink", sink), ("pktgen", gen)] {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("UID=1000") && out.contains("CAPEFF=0000000000000000"), "{who}: {}", output_text(o));
    }
}

/// What each container prints before its app: who it runs as, its capabilities.
const WHO: &str = "echo UID=$(id -u); echo CAPEFF=$(grep '^CapEff:' /proc/self/status | tr -d ' \\t' | cut -d: -f2)";

#[test]
fn podman_cni_backend_pktgen_to_sink() {
    const TEST: &str = "podman_cni_backend_pktgen_to_sink";
    let Some(peers) = require(TEST, Some("podman")) else { return };
    if missing_plugin(TEST) {
        return;
    }
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, Rt::Podman, "0-1");
    let net = Network::write(fx.dir.path(), &fx.config, &extra());
    // podman's CNI backend, without touching the host's podman configuration.
    let conf = fx.dir.join("containers.conf");
    let text = format!(
        "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n",
        net.bin.display(),
        net.conf_dir.display()
    );
    std::fs::write(&conf, text).unwrap();
    fx.names.extend(["fpcni-sink".into(), "fpcni-gen".into()]);
    let (rootfs, global) = (fx.rootfs.clone(), fx.podman_global());
    let run = |name: &str, app: &str| {
        let script = format!("{WHO}; {}; exec {app}", net.find_config("$(hostname)*"));
        let mut c = Command::new(peers.runtime.as_ref().expect("podman"));
        c.env("CONTAINERS_CONF", &conf).args(&global).args(["run", "--rm", "--name", name]);
        c.args(["--network", "fastpath-net", "--user", "1000:1000", "--cap-drop", "all"]);
        c.args([
            "--security-opt",
            "no-new-privileges",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=4096:4096",
        ]);
        c.args(["--env", "PATH=/bin", "--volume"]).arg(format!("{0}:{0}", net.socks.display()));
        c.arg("--rootfs").arg(&rootfs).args(["sh", "-c", &script]);
        spawn_piped(&mut c)
    };
    let sink = run("fpcni-sink", &format!("sink --check --count {FRAMES} --idle-exit 3 {}", app()));
    if !fx.wait_links_up(1, Duration::from_secs(40)) {
        let out = wait_output(sink, Duration::ZERO).map_or_else(|e| e, |o| output_text(&o));
        panic!(
            "the sink's port never came up: {:?} {:?}
sink container: {out}",
            fx.list(),
            fx.entries()
        );
    }
    let gen = run("fpcni-gen", &format!("pktgen --count {FRAMES} --rate {RATE} {}", app()));
    assert_attached(&fx);
    let gen = wait_output(gen, RUN).unwrap_or_else(|e| panic!("pktgen container: {e}"));
    let sink = wait_output(sink, RUN).unwrap_or_else(|e| panic!("sink container: {e}"));
    assert_transfer(&sink, &gen);
    assert_released(&fx, &net);
    eprintln!("{TEST}: ok, {FRAMES} frames, {:.1} s", t0.elapsed().as_secs_f64());
}

/// A containerd of the test's own: its root, state, socket and config under `dir`, the CRI
/// plugin off (it would read the host's CNI config); stopped when dropped.
struct Containerd {
    /// Its gRPC socket (`ctr --address`).
    address: PathBuf,
    _proc: Proc,
    /// Whether /run/containerd existed before (the shims make /run/containerd/s whatever the
    /// config says; an empty one made here is removed on drop).
    had_run_dir: bool,
}

impl Containerd {
    fn start(fx: &Fixture, containerd: &Path) -> Self {
        let d = fx.dir.join("ctd");
        std::fs::create_dir_all(&d).unwrap();
        let address = d.join("c.sock");
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            d.display(),
            address.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let had_run_dir = Path::new("/run/containerd").exists();
        let args = [String::from("--config"), d.join("config.toml").display().to_string()];
        let mut p = Proc::spawn("containerd", &fx.dir, containerd, &args, &[]);
        assert!(wait_for_socket(&address, Duration::from_secs(20)), "containerd: {}", p.describe(20, 0));
        Self { address, _proc: p, had_run_dir }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if !self.had_run_dir {
            for d in ["/run/containerd/s", "/run/containerd"] {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// containerd 1.6's `ctr run --cni` reads the CNI config from /etc/cni/net.d and plugins from
/// /opt/cni/bin (go-cni's defaults; ctr has no flags for them): ctr runs in a private mount
/// namespace where the test's directories are mounted over /etc/cni and /opt, so the host's
/// stay untouched. The containers run from a config.json (`--config`: uid 1000, no
/// capabilities, the socket directory bind-mounted), since `ctr run` has no `--user`.
#[test]
fn ctr_run_cni_pktgen_to_sink() {
    const TEST: &str = "ctr_run_cni_pktgen_to_sink";
    let Some(peers) = require(TEST, Some("runc")) else { return };
    if missing_plugin(TEST) {
        return;
    }
    let tools: Vec<Option<PathBuf>> = ["ctr", "containerd", "unshare"].iter().map(|t| which(t)).collect();
    let (Some(ctr), Some(containerd), Some(unshare)) = (tools[0].clone(), tools[1].clone(), tools[2].clone()) else {
        skip_or_fail(TEST, "ctr, containerd or unshare is missing (apt-get install containerd util-linux)");
        return;
    };
    for d in ["/etc/cni", "/opt"] {
        if !Path::new(d).is_dir() {
            skip_or_fail(TEST, &format!("{d} does not exist: ctr's CNI config is mounted over it"));
            return;
        }
    }
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    let net = Network::write(fx.dir.path(), &fx.config, &extra());
    // What ctr finds at /etc/cni/net.d and /opt/cni/bin.
    let (etc, opt) = (fx.dir.join("etc-cni"), fx.dir.join("opt"));
    std::fs::create_dir_all(etc.join("net.d")).unwrap();
    std::fs::create_dir_all(opt.join("cni")).unwrap();
    let list = net.conf_dir.join("10-fastpath-net.conflist");
    std::fs::copy(&list, etc.join("net.d/10-fastpath-net.conflist")).unwrap();
    std::os::unix::fs::symlink(&net.bin, opt.join("cni/bin")).unwrap();
    let ctd = Containerd::start(&fx, &containerd);
    fx.names.extend(["fpcni-ctr-sink".into(), "fpcni-ctr-gen".into()]);
    let run = |name: &str, app: &str| {
        // ctr names the attachment NAMESPACE-ID.
        let script = format!("{WHO}; {}; exec {app}", net.find_config(&format!("*-{name}")));
        let args = ["sh", "-c", script.as_str()];
        let mut spec = config_json(&Spec::new(name, &fx.rootfs, &args));
        let bind = json!({ "destination": net.socks, "type": "bind", "source": net.socks, "options": ["rbind", "rw"] });
        spec["mounts"].as_array_mut().expect("mounts").push(bind);
        let file = fx.dir.join(&format!("{name}.json"));
        std::fs::write(&file, spec.to_string()).unwrap();
        let inner = format!(
            "mount --make-rprivate / && mount --bind {etc} /etc/cni && mount --bind {opt} /opt && \
             exec {ctr} --address {addr} run --rm --cni --fifo-dir {fifo} --runc-root {root} --config {file} {name}",
            etc = etc.display(),
            opt = opt.display(),
            ctr = ctr.display(),
            addr = ctd.address.display(),
            fifo = fx.dir.join("ctr-fifo").display(),
            root = fx.dir.join("ctr-runc").display(),
            file = file.display(),
        );
        spawn_piped(Command::new(&unshare).args(["-m", "sh", "-c", &inner]))
    };
    let sink = run("fpcni-ctr-sink", &format!("sink --check --count {FRAMES} --idle-exit 3 {}", app()));
    if !fx.wait_links_up(1, Duration::from_secs(40)) {
        let out = wait_output(sink, Duration::ZERO).map_or_else(|e| e, |o| output_text(&o));
        panic!("the sink's port never came up: {:?} {:?}\nsink container: {out}", fx.list(), fx.entries());
    }
    let gen = run("fpcni-ctr-gen", &format!("pktgen --count {FRAMES} --rate {RATE} {}", app()));
    assert_attached(&fx);
    // ctr gives the network namespace as /proc/PID/ns/net.
    for e in fx.entries().values() {
        let ns = e["cni"]["netns"].as_str().unwrap_or_default();
        assert!(ns.starts_with("/proc/") && ns.ends_with("/ns/net"), "{e}");
    }
    let gen = wait_output(gen, RUN).unwrap_or_else(|e| panic!("pktgen container: {e}"));
    let sink = wait_output(sink, RUN).unwrap_or_else(|e| panic!("sink container: {e}"));
    assert_transfer(&sink, &gen);
    assert_released(&fx, &net);
    eprintln!("{TEST}: ok, {FRAMES} frames, {:.1} s", t0.elapsed().as_secs_f64());
}
