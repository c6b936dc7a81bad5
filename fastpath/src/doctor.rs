// `fastpathctl doctor`: checks of the host fastpath runs on (hugepages, cores, NUMA, IOMMU,
// RLIMIT_MEMLOCK, cgroups, runtimes and the hook, fastpathd), each ok / warn / fail with a fix.
//! Host readiness checks.
//!
//! Every check reads the host through a [`Host`]: a root directory that `/proc`, `/sys`,
//! `/etc`, `/dev` and `/usr` are found under (`/` on a real host, a fake tree in tests), the
//! hook's configuration, podman's hooks directory, fastpathd's control socket and the
//! directories runtimes are looked for in. [`run`] runs them all in order.

mod cgroups;
mod cores;
mod devices;
mod hugepages;
mod runtimes;
mod switch;
#[cfg(test)]
mod tree;

use std::path::{Path, PathBuf};

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ready.
    Ok,
    /// Works, but not as well as it could, or not for every feature.
    Warn,
    /// Something fastpath needs is missing.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `hugepages.mounted`.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found, and why it matters.
    pub detail: String,
    /// The command that fixes it (none when it is ok).
    pub fix: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status: Status::Ok, detail: detail.into(), fix: None }
    }

    /// A check that warns, with its fix.
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name: name.into(), status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }

    /// A check that failed, with its fix.
    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name: name.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }

    /// The one line `fastpathctl doctor` prints: `STATUS NAME: DETAIL[; fix: COMMAND]`.
    pub fn line(&self) -> String {
        let fix = self.fix.as_ref().map_or_else(String::new, |f| format!("; fix: {f}"));
        format!("{:<4} {}: {}{fix}", self.status.as_str(), self.name, self.detail)
    }
}

/// Where the checks look.
#[derive(Debug, Clone)]
pub struct Host {
    /// The directory `/proc`, `/sys`, `/etc`, `/dev`, `/usr` are under (`/`).
    pub root: PathBuf,
    /// The hook's configuration (`/etc/fastpath/hook.toml` under the root).
    pub hook_config: PathBuf,
    /// podman's (and CRI-O's) hooks directory.
    pub hooks_dir: PathBuf,
    /// fastpathd's control socket.
    pub ctl: PathBuf,
    /// The directories runtimes and the hook binary are looked for in ($PATH).
    pub path: Vec<PathBuf>,
}

impl Host {
    /// The host under `root`, with every path at its default place under it, and `path` as
    /// the directories to look for programs in (each under `root` too).
    pub fn at(root: impl Into<PathBuf>, path: &str) -> Self {
        let root = root.into();
        Self {
            hook_config: root.join("etc/fastpath/hook.toml"),
            hooks_dir: root.join("usr/share/containers/oci/hooks.d"),
            ctl: root.join("run/fastpath/fastpathd.sock"),
            path: std::env::split_paths(path).map(|d| under(&root, &d)).collect(),
            root,
        }
    }

    /// A host path (`/proc/meminfo`) under the root.
    pub fn file(&self, abs: &str) -> PathBuf {
        under(&self.root, Path::new(abs))
    }

    /// A host file's text, if it can be read.
    pub fn read(&self, abs: &str) -> Option<String> {
        std::fs::read_to_string(self.file(abs)).ok()
    }

    /// Where a program is on `path`, if anywhere.
    pub fn which(&self, prog: &str) -> Option<PathBuf> {
        self.path.iter().map(|d| d.join(prog)).find(|p| p.is_file())
    }

    /// The mounts of this process: (source, mount point, type, options).
    pub fn mounts(&self) -> Vec<Mount> {
        self.read("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4).then(|| Mount { point: f[1].into(), fstype: f[2].into(), options: f[3].into() })
            })
            .collect()
    }
}

/// One line of /proc/self/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
    /// Its file system type.
    pub fstype: String,
    /// Its options, comma-separated.
    pub options: String,
}

impl Mount {
    /// Whether `opt` is one of its options.
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.split(',').any(|o| o == opt)
    }
}

fn under(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

/// Runs every check, in the order they are printed.
pub fn run(host: &Host) -> Vec<Check> {
    let status = switch::status(host);
    let mut out = hugepages::checks(host);
    out.extend(cores::checks(host, status.as_ref().ok()));
    out.push(devices::numa(host));
    out.extend(devices::iommu(host));
    out.push(devices::memlock(host));
    out.extend(cgroups::checks(host));
    out.extend(runtimes::checks(host));
    out.push(switch::check(host, &status));
    out
}

/// Whether any check failed.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_status_name_detail_and_fix() {
        let c = Check::fail("hugepages.mounted", "no hugetlbfs", "mount -t hugetlbfs none /dev/hugepages");
        assert_eq!(c.line(), "fail hugepages.mounted: no hugetlbfs; fix: mount -t hugetlbfs none /dev/hugepages");
        assert_eq!(Check::ok("x", "fine").line(), "ok   x: fine");
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["status"], "fail");
        assert_eq!(j["fix"], "mount -t hugetlbfs none /dev/hugepages");
        assert!(any_failed(&[c]));
    }

    #[test]
    fn paths_are_under_the_root() {
        let h = Host::at("/tmp/fake", "/usr/bin:/bin");
        assert_eq!(h.file("/proc/meminfo"), Path::new("/tmp/fake/proc/meminfo"));
        assert_eq!(h.path, [PathBuf::from("/tmp/fake/usr/bin"), PathBuf::from("/tmp/fake/bin")]);
        assert_eq!(h.hooks_dir, Path::new("/tmp/fake/usr/share/containers/oci/hooks.d"));
    }
}
