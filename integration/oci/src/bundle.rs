// A container's config.json, written once for the tests, the bench and the demo: `Spec` says
// what varies (name, rootfs, argv, environment, annotations, hooks, mounts), the rest is fixed.
//! OCI bundles: `config.json` from a [`Spec`], and the `hooks` object for fastpath-hook.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::{Error, APP_UID};

/// The OCI hook stages fastpath-hook runs at, in the order a runtime calls them.
pub const HOOK_STAGES: [&str; 3] = ["createRuntime", "createContainer", "poststop"];

/// How long a runtime lets one hook stage run, in seconds.
pub const HOOK_TIMEOUT_SECS: u64 = 30;

/// Which filesystems a container gets mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounts {
    /// /proc, a tmpfs /dev with /dev/pts and /dev/shm, /sys read-only, a tmpfs /tmp: what a
    /// shell script with busybox applets expects.
    Standard,
    /// /proc, a tmpfs /dev and a tmpfs /tmp only: enough for one static app run without a
    /// shell, and fewer mounts to make and tear down per container (the soak's 1000 cycles).
    Minimal,
}

/// What goes into one container's config.json. Build it with [`Spec::new`] and struct
/// update syntax: `Spec { annotations: &CONTRACT, ..Spec::new(name, rootfs, args) }`.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Container name, also its hostname.
    pub name: &'a str,
    /// Its root filesystem (used read-write, and possibly shared by several containers).
    pub rootfs: &'a Path,
    /// The process's argv.
    pub args: &'a [&'a str],
    /// Environment beyond `PATH=/bin` and `HOME=/tmp` (`KEY=VALUE` each).
    pub env: &'a [&'a str],
    /// Annotations (none for a container without fastpath).
    pub annotations: &'a [(&'a str, &'a str)],
    /// The `hooks` object, if any (see [`hook_stages`]).
    pub hooks: Option<&'a Value>,
    /// Its mounts.
    pub mounts: Mounts,
}

impl<'a> Spec<'a> {
    /// A container `name` running `args` in `rootfs`: no extra environment, no annotations,
    /// no hooks, the standard mounts.
    pub fn new(name: &'a str, rootfs: &'a Path, args: &'a [&'a str]) -> Self {
        Self { name, rootfs, args, env: &[], annotations: &[], hooks: None, mounts: Mounts::Standard }
    }
}

fn mounts(m: Mounts) -> Value {
    let proc = json!({"destination": "/proc", "type": "proc", "source": "proc"});
    let dev = json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]});
    let tmp =
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]});
    match m {
        Mounts::Minimal => json!([proc, dev, tmp]),
        Mounts::Standard => json!([
            proc,
            dev,
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            tmp
        ]),
    }
}

/// The config.json of `spec`: uid/gid [`APP_UID`], no capabilities, no new privileges, at most
/// 1024 open files, its own pid, network, ipc, uts and mount namespaces, the usual masked and
/// read-only paths of /proc and /sys.
pub fn config_json(spec: &Spec) -> Value {
    let mut env = vec!["PATH=/bin", "HOME=/tmp"];
    env.extend_from_slice(spec.env);
    let mut cfg = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": APP_UID, "gid": APP_UID},
            "args": spec.args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": spec.rootfs, "readonly": false},
        "hostname": spec.name,
        "mounts": mounts(spec.mounts),
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if !spec.annotations.is_empty() {
        let ann: Map<String, Value> =
            spec.annotations.iter().map(|(k, v)| ((*k).to_string(), Value::from(*v))).collect();
        cfg["annotations"] = Value::Object(ann);
    }
    if let Some(h) = spec.hooks {
        cfg["hooks"] = h.clone();
    }
    cfg
}

/// Writes `<dir>/config.json` for `spec` (see [`config_json`]), creating `dir`. Returns `dir`:
/// the bundle to give the runtime.
pub fn write_bundle(dir: &Path, spec: &Spec) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating bundle", dir))?;
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config_json(spec)).expect("a serde_json::Value serializes");
    std::fs::write(&path, text + "\n").map_err(Error::io("writing", &path))?;
    Ok(dir.to_path_buf())
}

/// The config.json `hooks` object that runs `hook` (fastpath-hook, or a wrapper taking the
/// same arguments) as `fastpath-hook --config CONFIG STAGE` at each of [`HOOK_STAGES`], with a
/// [`HOOK_TIMEOUT_SECS`] timeout: what `fastpath-hook install` prints for runc and crun.
pub fn hook_stages(hook: &Path, config: &Path) -> Value {
    let stages: Map<String, Value> = HOOK_STAGES
        .iter()
        .map(|s| {
            let args = json!(["fastpath-hook", "--config", config, s]);
            ((*s).to_string(), json!([{"path": hook, "args": args, "timeout": HOOK_TIMEOUT_SECS}]))
        })
        .collect();
    Value::Object(stages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CONTRACT;

    #[test]
    fn spec_without_fastpath_has_no_annotations_or_hooks() {
        let c = config_json(&Spec::new("plain", Path::new("/r"), &["/bin/true"]));
        assert!(c.get("annotations").is_none() && c.get("hooks").is_none(), "{c}");
        assert_eq!(c["process"]["args"], json!(["/bin/true"]));
        assert_eq!(c["process"]["user"], json!({"uid": 1000, "gid": 1000}));
        assert_eq!(c["process"]["env"], json!(["PATH=/bin", "HOME=/tmp"]));
        assert_eq!(c["hostname"], "plain");
        assert_eq!(c["root"]["path"], "/r");
        assert_eq!(c["mounts"].as_array().map(Vec::len), Some(6));
    }

    #[test]
    fn spec_with_contract_hooks_env_and_minimal_mounts() {
        let hooks = hook_stages(Path::new("/bin/fastpath-hook"), Path::new("/etc/hook.toml"));
        let spec = Spec {
            env: &["RUST_LOG=warn"],
            annotations: &CONTRACT,
            hooks: Some(&hooks),
            mounts: Mounts::Minimal,
            ..Spec::new("c", Path::new("/r"), &["sh", "-c", "true"])
        };
        let c = config_json(&spec);
        assert_eq!(c["annotations"]["fastpath.io/hugepages"], "64Mi");
        assert_eq!(c["process"]["env"], json!(["PATH=/bin", "HOME=/tmp", "RUST_LOG=warn"]));
        let dests: Vec<&str> =
            c["mounts"].as_array().unwrap().iter().filter_map(|m| m["destination"].as_str()).collect();
        assert_eq!(dests, ["/proc", "/dev", "/tmp"]);
        for s in HOOK_STAGES {
            assert_eq!(c["hooks"][s][0]["path"], "/bin/fastpath-hook");
            assert_eq!(c["hooks"][s][0]["args"], json!(["fastpath-hook", "--config", "/etc/hook.toml", s]));
            assert_eq!(c["hooks"][s][0]["timeout"], 30);
        }
    }

    #[test]
    fn writes_config_json_into_the_bundle() {
        let dir = std::env::temp_dir().join(format!("fastpath-oci-test-{}", std::process::id()));
        let b = write_bundle(&dir.join("b"), &Spec::new("w", Path::new("/r"), &["x"])).unwrap();
        let text = std::fs::read_to_string(b.join("config.json")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(text.ends_with("}\n"));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["hostname"], "w");
    }
}
