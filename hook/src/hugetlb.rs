// Sizes ("64Mi"), hugepage sizes the host supports and has free, and the names the
// hugetlbfs mount options and the hugetlb cgroup files use for them.
//! Hugepages.

use crate::sys::Sys;
use std::path::{Path, PathBuf};

/// Parses a size: a number with an optional binary suffix `Ki`, `Mi`, `Gi`, `Ti` (or none: bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats bytes the way [`parse_size`] reads them, in the largest exact unit.
pub fn format_size(b: u64) -> String {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if b != 0 && b.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    b.to_string()
}

/// The hugetlb cgroup's name for a page size: `2MB`, `1GB`, `64KB`.
pub fn cgroup_name(page_size: u64) -> String {
    if page_size >= 1 << 30 {
        format!("{}GB", page_size >> 30)
    } else if page_size >= 1 << 20 {
        format!("{}MB", page_size >> 20)
    } else {
        format!("{}KB", page_size >> 10)
    }
}

/// The page size a hugetlb cgroup name stands for (`2MB`, `1GB`, `64KB`): the inverse of
/// [`cgroup_name`], and how OCI's `hugepageLimits` write page sizes.
pub fn parse_cgroup_name(name: &str) -> Option<u64> {
    let name = name.trim();
    let (num, shift) = if let Some(n) = name.strip_suffix("GB") {
        (n, 30)
    } else if let Some(n) = name.strip_suffix("MB") {
        (n, 20)
    } else {
        (name.strip_suffix("KB")?, 10)
    };
    num.parse::<u64>().ok().filter(|&n| n > 0)?.checked_mul(1 << shift)
}

/// The hugetlbfs `pagesize=` option for a page size: `2M`, `1G`.
pub fn mount_pagesize(page_size: u64) -> String {
    if page_size >= 1 << 30 {
        format!("{}G", page_size >> 30)
    } else if page_size >= 1 << 20 {
        format!("{}M", page_size >> 20)
    } else {
        format!("{}K", page_size >> 10)
    }
}

/// The sysfs directory of a page size's pool.
pub fn sysfs_dir(page_size: u64) -> PathBuf {
    PathBuf::from(format!("/sys/kernel/mm/hugepages/hugepages-{}kB", page_size >> 10))
}

/// Free pages of that size on the host, or `None` when the host has no such pool.
pub fn free_pages(sys: &dyn Sys, page_size: u64) -> Option<u64> {
    sys.read(&sysfs_dir(page_size).join("free_hugepages")).ok()?.trim().parse().ok()
}

/// The hugetlbfs mount options for the container's own mount.
pub fn mount_options(page_size: u64, bytes: u64, uid: u32, gid: u32) -> String {
    format!("pagesize={},size={bytes},uid={uid},gid={gid},mode=0700", mount_pagesize(page_size))
}

/// Whether the hugetlb cgroup limit file for `page_size` exists in `dir` (v1 or v2 name).
pub fn limit_files(dir: &Path, page_size: u64, v2: bool) -> Vec<PathBuf> {
    let n = cgroup_name(page_size);
    if v2 {
        vec![dir.join(format!("hugetlb.{n}.max")), dir.join(format!("hugetlb.{n}.rsvd.max"))]
    } else {
        vec![dir.join(format!("hugetlb.{n}.limit_in_bytes")), dir.join(format!("hugetlb.{n}.rsvd.limit_in_bytes"))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64Mi"), Some(64 << 20));
        assert_eq!(parse_size("1Gi"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64Mx"), None);
        assert_eq!(parse_size("64M"), None);
        assert_eq!(parse_size("Mi"), None);
        assert_eq!(parse_size("-1Mi"), None);
        assert_eq!(parse_size("99999999999Ti"), None);
        assert_eq!(format_size(64 << 20), "64Mi");
        assert_eq!(format_size(1536 << 20), "1536Mi");
        assert_eq!(format_size(100), "100");
    }

    #[test]
    fn names() {
        assert_eq!(cgroup_name(2 << 20), "2MB");
        assert_eq!(cgroup_name(1 << 30), "1GB");
        for ps in [64 << 10, 2 << 20, 1 << 30] {
            assert_eq!(parse_cgroup_name(&cgroup_name(ps)), Some(ps));
        }
        assert_eq!(parse_cgroup_name("2Mi"), None);
        assert_eq!(parse_cgroup_name("0MB"), None);
        assert_eq!(parse_cgroup_name("MB"), None);
        assert_eq!(mount_pagesize(2 << 20), "2M");
        assert_eq!(
            mount_options(2 << 20, 64 << 20, 1000, 1000),
            "pagesize=2M,size=67108864,uid=1000,gid=1000,mode=0700"
        );
        assert_eq!(sysfs_dir(2 << 20), PathBuf::from("/sys/kernel/mm/hugepages/hugepages-2048kB"));
    }
}
