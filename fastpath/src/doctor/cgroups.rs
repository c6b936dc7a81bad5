// The doctor's cgroup checks: which hierarchy the host runs (v1, v2 or hybrid) and, on a hybrid
// host, the fix crun needs (hugetlb bound to a v1 hierarchy, as `cargo xtask setup` does).
//! cgroup checks.

use super::{Check, Host};

/// Where the crun fix binds the hugetlb controller.
const HUGETLB_V1: &str = "/sys/fs/cgroup/hugetlb";

/// cgroup.mode and cgroup.crun-hugetlb.
pub fn checks(host: &Host) -> Vec<Check> {
    let mounts = host.mounts();
    let v2 = mounts.iter().find(|m| m.fstype == "cgroup2");
    let v1 = mounts.iter().any(|m| m.fstype == "cgroup");
    let fix = format!("mkdir -p {HUGETLB_V1} && mount -t cgroup -o hugetlb cgroup {HUGETLB_V1}");
    match (v1, v2) {
        (false, None) => vec![Check::fail(
            "cgroup.mode",
            "no cgroup file system mounted: runtimes cannot start containers",
            "mount -t cgroup2 none /sys/fs/cgroup",
        )],
        (false, Some(m)) => vec![
            Check::ok("cgroup.mode", format!("v2 (unified at {})", m.point)),
            Check::ok("cgroup.crun-hugetlb", "not needed on a cgroup v2 host"),
        ],
        (true, None) => {
            vec![Check::ok("cgroup.mode", "v1"), Check::ok("cgroup.crun-hugetlb", "not needed on a cgroup v1 host")]
        }
        (true, Some(m)) => {
            let ctl = host.read(&format!("{}/cgroup.controllers", m.point)).unwrap_or_default();
            let mode = Check::ok("cgroup.mode", format!("hybrid (v1, and v2 at {})", m.point));
            let crun = if !ctl.split_whitespace().any(|w| w == "hugetlb") {
                Check::ok(
                    "cgroup.crun-hugetlb",
                    format!("hugetlb is not listed on {} (bound to a v1 hierarchy): crun runs", m.point),
                )
            } else if host.which("crun").is_some() {
                Check::fail(
                    "cgroup.crun-hugetlb",
                    format!("hugetlb is bound to no v1 hierarchy, so it shows on {}: crun refuses every container (\"cgroups in hybrid mode not supported\")", m.point),
                    fix,
                )
            } else {
                Check::warn(
                    "cgroup.crun-hugetlb",
                    "hugetlb is bound to no v1 hierarchy (crun, not installed, would refuse to run)",
                    fix,
                )
            };
            vec![mode, crun]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::Tree;
    use super::super::Status;
    use super::*;

    const HYBRID: &str = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";

    #[test]
    fn v2_v1_and_none() {
        let t = Tree::new("cg-modes");
        t.write("/proc/self/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        let c = checks(&t.host());
        assert_eq!(c[0].detail, "v2 (unified at /sys/fs/cgroup)");
        assert_eq!(c[1].status, Status::Ok);
        t.write("/proc/self/mounts", "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n");
        assert_eq!(checks(&t.host())[0].detail, "v1");
        t.write("/proc/self/mounts", "");
        let c = checks(&t.host());
        assert_eq!((c.len(), c[0].status), (1, Status::Fail));
    }

    #[test]
    fn hybrid_with_hugetlb_on_cgroup2_fails_when_crun_is_there() {
        let t = Tree::new("cg-hybrid");
        t.write("/proc/self/mounts", HYBRID).write("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
        let c = checks(&t.host());
        assert_eq!(c[0].detail, "hybrid (v1, and v2 at /sys/fs/cgroup/unified)");
        assert_eq!(c[1].status, Status::Warn);
        t.write("/usr/bin/crun", "");
        let c = checks(&t.host());
        assert_eq!(c[1].status, Status::Fail);
        assert_eq!(
            c[1].fix.as_deref(),
            Some("mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb")
        );
        t.write("/sys/fs/cgroup/unified/cgroup.controllers", "\n");
        assert_eq!(checks(&t.host())[1].status, Status::Ok);
    }
}
