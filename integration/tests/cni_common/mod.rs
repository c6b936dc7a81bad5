// Helpers for the tests of fastpath-cni (cni_conformance.rs, cni_runtimes.rs): the plugin run
// as a runtime runs it (CNI_* variables, the network config on stdin), the fastpath-net network
// config and conflist, and what a fixture holds (ports, ledger entries, files) for baselines.
//! CNI test helpers.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration::{bin_dir, wait_output};
use serde_json::{json, Value};

/// The network's name in every test.
pub const NETWORK: &str = "fastpath-net";

/// The fastpath-cni binary.
pub fn plugin() -> PathBuf {
    bin_dir().join("fastpath-cni")
}

/// The fastpath-net network config (one plugin) for a fixture: its bridge, socket and
/// device-info directories and hook.toml, plus `extra` fields.
pub fn net_conf(version: &str, bridge: &str, socket_dir: &Path, devinfo: &Path, hook: &Path, extra: &Value) -> Value {
    let mut c = json!({
        "cniVersion": version, "name": NETWORK, "type": "fastpath-cni",
        "bridge": bridge, "socketDir": socket_dir, "deviceInfoDir": devinfo, "hookConfig": hook,
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    c
}

/// A conflist of the one plugin config `conf` (what podman and ctr read from a conf dir).
pub fn conflist(conf: &Value) -> Value {
    let mut plugin = conf.clone();
    if let Some(p) = plugin.as_object_mut() {
        for k in ["cniVersion", "name"] {
            p.remove(k);
        }
    }
    json!({ "cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": [plugin] })
}

/// What one call of the plugin did.
#[derive(Debug)]
pub struct Call {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its stdout as JSON (`Null`: none).
    pub out: Value,
    /// Its stdout and stderr, for messages.
    pub text: String,
}

impl Call {
    /// The error object's code (panics with the output when it is not an error).
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure: {}", self.text);
        self.out["code"].as_u64().unwrap_or_else(|| panic!("no error object: {}", self.text))
    }

    /// The error object's message.
    pub fn msg(&self) -> String {
        self.out["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// Runs the plugin as a runtime does: `env` (the `CNI_*` variables), `stdin` the config.
pub fn call(env: &[(&str, &str)], stdin: &str) -> Call {
    let mut c = Command::new(plugin());
    c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child =
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("fastpath-cni runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("writing the config");
    let o = wait_output(child, Duration::from_secs(30)).unwrap_or_else(|e| panic!("fastpath-cni: {e}"));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let text = format!("exit {}; stdout: {stdout}; stderr: {}", o.status, String::from_utf8_lossy(&o.stderr));
    let out = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    };
    Call { ok: o.status.success(), out, text }
}

/// `CNI_COMMAND=cmd` for the attachment (`id`, `ifname`) in `netns`, with `CNI_PATH`.
pub fn attach_env<'a>(cmd: &'a str, id: &'a str, ifname: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", ifname),
        ("CNI_NETNS", netns),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=conf;K8S_POD_NAME=pod1"),
        ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
    ]
}

/// The files under `dir`, recursively (sorted; none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A fastpath-net network for a runtime: the plugin in a plugin directory of its own, the
/// conflist in a conf directory of its own, the per-pod socket and device-info directories.
pub struct Network {
    /// The directory holding fastpath-cni (a copy: the runtime looks plugins up by type).
    pub bin: PathBuf,
    /// The directory holding `fastpath-net.conflist`.
    pub conf_dir: PathBuf,
    /// `socketDir`: the pods mount it at the same path.
    pub socks: PathBuf,
    /// `deviceInfoDir`.
    pub devinfo: PathBuf,
}

impl Network {
    /// The network in `dir` for the hook config `hook` (bridge br0), with `extra` plugin fields.
    pub fn write(dir: &Path, hook: &Path, extra: &Value) -> Self {
        let n = Self {
            bin: dir.join("cni-bin"),
            conf_dir: dir.join("net.d"),
            socks: dir.join("cni"),
            devinfo: dir.join("devinfo"),
        };
        for d in [&n.bin, &n.conf_dir, &n.socks] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy(plugin(), n.bin.join("fastpath-cni")).unwrap();
        let conf = net_conf("1.0.0", "br0", &n.socks, &n.devinfo, hook, extra);
        std::fs::write(n.conf_dir.join("10-fastpath-net.conflist"), conflist(&conf).to_string()).unwrap();
        n
    }

    /// A shell line that waits (up to 20 s) for the container's app config in its pod
    /// directory `pod_glob` (under `socketDir`, a glob) and exports `FASTPATH_CONFIG` with it.
    pub fn find_config(&self, pod_glob: &str) -> String {
        format!(
            "i=0; while [ ! -f {s}/{pod_glob}/eth0.json ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
             export FASTPATH_CONFIG=$(ls {s}/{pod_glob}/eth0.json); echo CONFIG=$FASTPATH_CONFIG",
            s = self.socks.display()
        )
    }
}
