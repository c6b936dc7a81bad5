// Finds a container's cgroup directory for a controller (cgroup v1, v2 and hybrid hosts) from
// /proc/PID/cgroup and the host's mountinfo, and writes the cpuset, hugetlb and device limits.
//! Cgroups.

use crate::hugetlb;
use crate::sys::Sys;
use crate::{error::io, Error, Result};
use std::path::{Path, PathBuf};

/// A container's directory in one controller's hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The directory.
    pub path: PathBuf,
    /// Whether it is in the unified (v2) hierarchy.
    pub v2: bool,
}

struct MountRow {
    root: String,
    point: PathBuf,
    fstype: String,
    superopts: String,
}

fn mount_rows(text: &str) -> Vec<MountRow> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountRow {
                root: (*pre.get(3)?).to_string(),
                point: PathBuf::from(pre.get(4)?.replace("\\040", " ")),
                fstype: (*post.first()?).to_string(),
                superopts: (*post.get(2)?).to_string(),
            })
        })
        .collect()
}

fn join(base: &Path, rel: &str) -> PathBuf {
    base.join(rel.trim_start_matches('/'))
}

/// The container's cgroup directory for `controller` (`cpuset`, `hugetlb`, `devices`), or
/// `None` when the host has that controller in no hierarchy. Refuses when the process sits
/// in the root cgroup (a limit there would bind the whole host).
pub fn locate(sys: &dyn Sys, pid: i32, controller: &str) -> Result<Option<CgroupDir>> {
    let mounts = sys.read(Path::new("/proc/self/mountinfo")).map_err(io("reading /proc/self/mountinfo"))?;
    let cg_path = format!("/proc/{pid}/cgroup");
    let cg = sys.read(Path::new(&cg_path)).map_err(io(format!("reading {cg_path}")))?;
    let rows = mount_rows(&mounts);
    let found = |dir: PathBuf, rel: &str, v2: bool| {
        if rel == "/" {
            Err(Error::Refused(format!(
                "the container (pid {pid}) is in the root {controller} cgroup: the runtime must give it its own (linux.cgroupsPath)"
            )))
        } else {
            Ok(Some(CgroupDir { path: dir, v2 }))
        }
    };
    // v1: a hierarchy with this controller bound.
    if let Some(m) = rows.iter().find(|m| m.fstype == "cgroup" && m.superopts.split(',').any(|o| o == controller)) {
        let line = cg.lines().find(|l| {
            let mut f = l.splitn(3, ':');
            f.next().is_some() && f.next().is_some_and(|c| c.split(',').any(|c| c == controller))
        });
        let Some(rel) = line.and_then(|l| l.splitn(3, ':').nth(2)) else {
            return Ok(None);
        };
        let inside = rel.strip_prefix(m.root.as_str()).filter(|_| m.root != "/").unwrap_or(rel);
        return found(join(&m.point, inside), rel, false);
    }
    // v2: the unified hierarchy, if it offers the controller.
    for m in rows.iter().filter(|m| m.fstype == "cgroup2") {
        let ctrls = sys.read(&m.point.join("cgroup.controllers")).unwrap_or_default();
        if !ctrls.split_whitespace().any(|c| c == controller) {
            continue;
        }
        if let Some(rel) = cg.lines().find_map(|l| l.strip_prefix("0::")) {
            let inside = rel.strip_prefix(m.root.as_str()).filter(|_| m.root != "/").unwrap_or(rel);
            return found(join(&m.point, inside), rel, true);
        }
    }
    Ok(None)
}

/// Sets the cpuset's CPUs (`cpuset.cpus`, the same name in v1 and v2).
pub fn set_cpus(sys: &dyn Sys, dir: &CgroupDir, cpus: &str) -> Result<()> {
    let f = dir.path.join("cpuset.cpus");
    sys.write(&f, cpus).map_err(io(format!("writing '{cpus}' to {}", f.display())))
}

/// Limits hugepages of `page_size` to `bytes` (the usage limit and, where the kernel has it,
/// the reservation limit).
pub fn set_hugetlb(sys: &dyn Sys, dir: &CgroupDir, page_size: u64, bytes: u64) -> Result<()> {
    let files = hugetlb::limit_files(&dir.path, page_size, dir.v2);
    if !sys.exists(&files[0]) {
        return Err(Error::Refused(format!(
            "{} does not exist: the kernel's hugetlb cgroup has no {} pages",
            files[0].display(),
            hugetlb::format_size(page_size)
        )));
    }
    for f in files.iter().filter(|f| sys.exists(f)) {
        sys.write(f, &bytes.to_string()).map_err(io(format!("writing {bytes} to {}", f.display())))?;
    }
    Ok(())
}

/// Allows a character device (read, write, mknod) in a v1 devices cgroup. On v2 device
/// access is an eBPF program the runtime owns: the rule must come from config.json.
pub fn allow_char_device(sys: &dyn Sys, dir: &CgroupDir, major: u64, minor: u64) -> Result<()> {
    if dir.v2 {
        return Err(Error::Refused(format!(
            "cgroup v2: the hook cannot add a device rule for c {major}:{minor}; put it in linux.resources.devices (the docker shim does)"
        )));
    }
    let f = dir.path.join("devices.allow");
    let rule = format!("c {major}:{minor} rwm");
    sys.write(&f, &rule).map_err(io(format!("writing '{rule}' to {}", f.display())))
}

/// Whether a cgroup directory has no processes left (and can be removed).
pub fn is_empty(sys: &dyn Sys, dir: &Path) -> bool {
    ["cgroup.procs", "tasks"].iter().find_map(|f| sys.read(&dir.join(f)).ok()).is_some_and(|t| t.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    pub(crate) const HYBRID_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset
32 25 0:28 / /sys/fs/cgroup/hugetlb rw,nosuid - cgroup cgroup rw,hugetlb
33 25 0:29 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
";

    #[test]
    fn hybrid_host_uses_v1_paths() {
        let s = FakeSys::default();
        s.file("/proc/self/mountinfo", HYBRID_MOUNTINFO)
            .file("/sys/fs/cgroup/unified/cgroup.controllers", "")
            .file("/proc/7/cgroup", "10:hugetlb:/c1\n3:cpuset:/c1\n4:devices:/c1\n0::/c1\n");
        let d = locate(&s, 7, "cpuset").unwrap().unwrap();
        assert_eq!(d, CgroupDir { path: "/sys/fs/cgroup/cpuset/c1".into(), v2: false });
        assert_eq!(locate(&s, 7, "hugetlb").unwrap().unwrap().path, PathBuf::from("/sys/fs/cgroup/hugetlb/c1"));
        assert_eq!(locate(&s, 7, "rdma").unwrap(), None);
        s.file("/proc/8/cgroup", "3:cpuset:/\n");
        assert!(locate(&s, 8, "cpuset").unwrap_err().to_string().contains("root cpuset cgroup"));
    }

    #[test]
    fn unified_host_uses_v2_paths_and_names() {
        let s = FakeSys::default();
        s.file("/proc/self/mountinfo", "25 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
            .file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu memory hugetlb pids")
            .file("/proc/7/cgroup", "0::/machine.slice/libpod-c1.scope\n")
            .file("/sys/fs/cgroup/machine.slice/libpod-c1.scope/hugetlb.2MB.max", "max")
            .file("/sys/fs/cgroup/machine.slice/libpod-c1.scope/hugetlb.2MB.rsvd.max", "max");
        let d = locate(&s, 7, "hugetlb").unwrap().unwrap();
        assert!(d.v2);
        set_hugetlb(&s, &d, 2 << 20, 64 << 20).unwrap();
        assert_eq!(s.get("/sys/fs/cgroup/machine.slice/libpod-c1.scope/hugetlb.2MB.max").unwrap(), "67108864");
        assert_eq!(s.get("/sys/fs/cgroup/machine.slice/libpod-c1.scope/hugetlb.2MB.rsvd.max").unwrap(), "67108864");
        assert!(set_hugetlb(&s, &d, 1 << 30, 1 << 30).unwrap_err().to_string().contains("no 1Gi pages"));
        assert!(allow_char_device(&s, &d, 10, 196).unwrap_err().to_string().contains("linux.resources.devices"));
    }
}
