// The doctor's hugepage checks: pages reserved and free (/proc/meminfo), a hugetlbfs mounted,
// and a hugetlb cgroup controller the hook can limit a container's pages with.
//! Hugepage checks.

use super::{Check, Host};

/// Where `cargo xtask setup` mounts hugetlbfs, and the hook expects it.
pub const MOUNT_POINT: &str = "/dev/hugepages";
/// What setup reserves.
const RESERVE: u64 = 1024;

/// A number from /proc/meminfo.
fn meminfo(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// hugepages.reserved, .free, .mounted, .cgroup.
pub fn checks(host: &Host) -> Vec<Check> {
    let info = host.read("/proc/meminfo").unwrap_or_default();
    let total = meminfo(&info, "HugePages_Total").unwrap_or(0);
    let free = meminfo(&info, "HugePages_Free").unwrap_or(0);
    let size_kb = meminfo(&info, "Hugepagesize").unwrap_or(2048);
    let reserve = format!("echo {RESERVE} > /proc/sys/vm/nr_hugepages");
    let mut out = vec![if total == 0 {
        Check::fail(
            "hugepages.reserved",
            format!("no {size_kb} kB hugepages reserved: containers' packet pools fall back to plain memory"),
            reserve.clone(),
        )
    } else {
        Check::ok("hugepages.reserved", format!("{total} x {size_kb} kB"))
    }];
    out.push(if total > 0 && free == 0 {
        Check::warn("hugepages.free", format!("all {total} hugepages are in use: a new container gets none"), reserve)
    } else {
        Check::ok("hugepages.free", format!("{free} of {total} free"))
    });
    let mounts = host.mounts();
    let huge: Vec<&str> = mounts.iter().filter(|m| m.fstype == "hugetlbfs").map(|m| m.point.as_str()).collect();
    out.push(if huge.is_empty() {
        Check::fail(
            "hugepages.mounted",
            "no hugetlbfs mounted: fastpathd and DPDK peers cannot map hugepages",
            format!("mkdir -p {MOUNT_POINT} && mount -t hugetlbfs none {MOUNT_POINT}"),
        )
    } else {
        Check::ok("hugepages.mounted", format!("hugetlbfs at {}", huge.join(", ")))
    });
    let v1 = mounts.iter().find(|m| m.fstype == "cgroup" && m.has_option("hugetlb"));
    let v2 = mounts.iter().find(|m| m.fstype == "cgroup2").and_then(|m| {
        let c = host.read(&format!("{}/cgroup.controllers", m.point))?;
        c.split_whitespace().any(|w| w == "hugetlb").then(|| m.point.clone())
    });
    out.push(match (v1, v2) {
        (Some(m), _) => Check::ok("hugepages.cgroup", format!("hugetlb controller (cgroup v1) at {}", m.point)),
        (None, Some(p)) => Check::ok("hugepages.cgroup", format!("hugetlb controller (cgroup v2) at {p}")),
        (None, None) => Check::warn(
            "hugepages.cgroup",
            "no hugetlb cgroup controller: the hook cannot limit a container's hugepages",
            "mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb",
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::super::tree::Tree;
    use super::super::Status;
    use super::*;

    fn statuses(t: &Tree) -> Vec<Status> {
        checks(&t.host()).iter().map(|c| c.status).collect()
    }

    const MEMINFO: &str = "HugePages_Total:    1024\nHugePages_Free:     1016\nHugepagesize:       2048 kB\n";

    #[test]
    fn all_ok_with_pages_a_mount_and_a_v1_controller() {
        let t = Tree::new("huge-ok");
        t.write("/proc/meminfo", MEMINFO).write(
            "/proc/self/mounts",
            "none /dev/hugepages hugetlbfs rw 0 0\ncgroup /sys/fs/cgroup/hugetlb cgroup rw,relatime,hugetlb 0 0\n",
        );
        let c = checks(&t.host());
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
        assert_eq!(c[0].detail, "1024 x 2048 kB");
        assert_eq!(c[2].detail, "hugetlbfs at /dev/hugepages");
    }

    #[test]
    fn a_v2_controller_counts() {
        let t = Tree::new("huge-v2");
        t.write("/proc/meminfo", MEMINFO)
            .write("/proc/self/mounts", "none /dev/hugepages hugetlbfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
            .write("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu memory hugetlb pids\n");
        let c = checks(&t.host());
        assert_eq!(c[3].detail, "hugetlb controller (cgroup v2) at /sys/fs/cgroup");
    }

    #[test]
    fn none_reserved_none_free_none_mounted_no_controller() {
        let t = Tree::new("huge-bad");
        t.write("/proc/meminfo", "HugePages_Total: 0\nHugePages_Free: 0\n").write("/proc/self/mounts", "");
        assert_eq!(statuses(&t), [Status::Fail, Status::Ok, Status::Fail, Status::Warn]);
        let c = checks(&t.host());
        assert_eq!(c[0].fix.as_deref(), Some("echo 1024 > /proc/sys/vm/nr_hugepages"));
        assert_eq!(c[2].fix.as_deref(), Some("mkdir -p /dev/hugepages && mount -t hugetlbfs none /dev/hugepages"));
        assert!(c[3].fix.as_deref().unwrap().contains("mount -t cgroup -o hugetlb"));
        t.write("/proc/meminfo", "HugePages_Total: 8\nHugePages_Free: 0\n");
        assert_eq!(statuses(&t)[..2], [Status::Ok, Status::Warn]);
    }
}
