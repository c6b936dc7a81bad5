// Podman in the guest, opt-in: the host's podman, conmon and crun with the shared libraries
// `ldd` lists for them, a minimal /etc/containers (vfs storage in the guest's tmpfs, cgroupfs,
// no network, no pivot_root: the initramfs is rootfs), and a tiny container root for `--rootfs`.
//! Podman, conmon and crun packed into the guest ([`require_podman`], [`Guest::podman`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Guest;
use crate::skip_or_fail;

/// The programs podman needs in the guest, at the paths the config names.
pub const PODMAN_BINS: [&str; 3] = ["/usr/bin/podman", "/usr/bin/conmon", "/usr/bin/crun"];

/// Where [`Guest::podman`] puts the container root for `podman run --rootfs`.
pub const CONTAINER_ROOT: &str = "/ctr";

/// The busybox applets the container root links (its `/bin/sh` and a few tools).
const CONTAINER_APPLETS: [&str; 12] =
    ["sh", "cat", "ls", "stat", "test", "echo", "grep", "id", "sleep", "tr", "head", "tail"];

/// `/etc/containers/containers.conf`: crun through conmon, cgroupfs, no events journal, no
/// network, no AppArmor profile to load, and no pivot_root (the guest's root is the
/// initramfs, which can't be pivoted away from).
pub const CONTAINERS_CONF: &str = r#"[containers]
netns = "none"
apparmor_profile = "unconfined"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "crun"
conmon_path = ["/usr/bin/conmon"]
no_pivot_root = true
tmp_dir = "/run/libpod"

[engine.runtimes]
crun = ["/usr/bin/crun"]

[network]
network_backend = "cni"
"#;

/// `/etc/containers/storage.conf`: the vfs driver in the guest's tmpfs (no image is pulled:
/// containers run from `--rootfs`).
pub const STORAGE_CONF: &str = r#"[storage]
driver = "vfs"
graphroot = "/var/lib/containers/storage"
runroot = "/run/containers/storage"
"#;

/// `/etc/containers/policy.json`: accept anything (nothing is pulled anyway).
pub const POLICY_JSON: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

/// Shell lines a body runs before podman: the cgroup2 hierarchy, devpts and the directories
/// podman writes to.
pub const PODMAN_SETUP: &str = r#"mkdir -p /sys/fs/cgroup /var/lib/containers /var/tmp /run/libpod /etc/cdi
mount -t cgroup2 none /sys/fs/cgroup || result podman-setup "mount cgroup2 failed"
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /dev/shm 2>/dev/null
"#;

/// The libraries `ldd` prints for a program: every absolute path (`lib => /path (addr)` and
/// the loader's `/path (addr)`), in order, without `linux-vdso`.
pub fn ldd_paths(ldd_output: &str) -> Vec<String> {
    ldd_output
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.split_once("=>").map_or(l, |(_, r)| r).trim();
            let path = rest.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// Podman, conmon, crun and their libraries, read from the host: guest path → contents.
#[derive(Debug, Clone)]
pub struct PodmanKit {
    files: BTreeMap<String, Vec<u8>>,
}

impl PodmanKit {
    /// Reads [`PODMAN_BINS`] and every library `ldd` lists for them; an error names what is missing.
    pub fn find() -> Result<Self, String> {
        let mut files = BTreeMap::new();
        for bin in PODMAN_BINS {
            let data = std::fs::read(bin).map_err(|e| format!("cannot read {bin}: {e} (apt-get install podman)"))?;
            files.insert(bin.to_string(), data);
            let out = std::process::Command::new("ldd").arg(bin).output().map_err(|e| format!("ldd {bin}: {e}"))?;
            if !out.status.success() {
                return Err(format!("ldd {bin}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            for lib in ldd_paths(&String::from_utf8_lossy(&out.stdout)) {
                if files.contains_key(&lib) {
                    continue;
                }
                let data = std::fs::read(&lib).map_err(|e| format!("cannot read {lib} (a library of {bin}): {e}"))?;
                files.insert(lib, data);
            }
        }
        Ok(Self { files })
    }

    /// The guest paths the kit holds.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

/// Finds podman, conmon, crun and their libraries ([`PodmanKit::find`]); when something is
/// missing: panics if `FASTPATH_REQUIRE_PEERS=1`, else prints a loud SKIPPED line and
/// returns `None`.
pub fn require_podman(test: &str) -> Option<PodmanKit> {
    match PodmanKit::find() {
        Ok(k) => Some(k),
        Err(e) => {
            skip_or_fail(test, &format!("podman can't be packed into the guest: {e}"));
            None
        }
    }
}

impl Guest {
    /// Packs `kit` (podman, conmon, crun, their libraries), `/etc/containers`, empty
    /// `/etc/hosts` and `/etc/resolv.conf`, and the container root [`CONTAINER_ROOT`]:
    /// busybox with a few applets, `/etc/passwd` and `/etc/group` with the user, and our
    /// static binaries `bins` in its `/bin`. Raises the guest's memory to at least 1 GB
    /// and turns AppArmor off (the Debian guest kernel enables it; nothing in the guest
    /// could load podman's profile). The body runs [`PODMAN_SETUP`] before podman.
    #[must_use]
    pub fn podman(mut self, kit: &PodmanKit, bins: &[&str]) -> Self {
        for (p, data) in &kit.files {
            self = self.file(p, data.clone(), 0o755);
        }
        self = self
            .file("etc/containers/containers.conf", CONTAINERS_CONF, 0o644)
            .file("etc/containers/storage.conf", STORAGE_CONF, 0o644)
            .file("etc/containers/policy.json", POLICY_JSON, 0o644)
            .file("etc/hosts", "127.0.0.1 localhost\n", 0o644)
            .file("etc/resolv.conf", "", 0o644)
            .kernel_arg("apparmor=0");
        self.memory_mb = self.memory_mb.max(1024);
        let root = CONTAINER_ROOT.trim_start_matches('/');
        let bb = std::fs::read(fastpath_oci::BUSYBOX).unwrap_or_default();
        self = self.file(&format!("{root}/bin/busybox"), bb, 0o755);
        for a in CONTAINER_APPLETS {
            self = self.symlink(&format!("{root}/bin/{a}"), "busybox");
        }
        for d in ["dev", "proc", "sys", "tmp", "run", "etc"] {
            self = self.dir(&format!("{root}/{d}"));
        }
        self = self
            .file(&format!("{root}/etc/passwd"), "root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n", 0o644)
            .file(&format!("{root}/etc/group"), "root:x:0:\nuser:x:1000:\n", 0o644);
        for b in bins {
            let p: PathBuf = self.peers.bin(b);
            self = self.container_bin(b, &p);
        }
        self
    }

    /// Puts the static executable `path` at `/bin/NAME` in the container root.
    fn container_bin(self, name: &str, path: &Path) -> Self {
        let data = std::fs::read(path).unwrap_or_default();
        let root = CONTAINER_ROOT.trim_start_matches('/');
        self.file(&format!("{root}/bin/{name}"), data, 0o755)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_takes_the_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ff35f1ff000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007ff35eeee000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007ff35f201000)\n\
                   \tlibgone.so.1 => not found\n";
        assert_eq!(ldd_paths(out), ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]);
    }

    #[test]
    fn the_config_parses_as_toml_and_json() {
        let conf: toml::Table = CONTAINERS_CONF.parse().unwrap();
        assert_eq!(conf["engine"]["cgroup_manager"].as_str(), Some("cgroupfs"));
        assert_eq!(conf["engine"]["no_pivot_root"].as_bool(), Some(true));
        let storage: toml::Table = STORAGE_CONF.parse().unwrap();
        assert_eq!(storage["storage"]["driver"].as_str(), Some("vfs"));
        let policy: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        assert_eq!(policy["default"][0]["type"], "insecureAcceptAnything");
    }
}
