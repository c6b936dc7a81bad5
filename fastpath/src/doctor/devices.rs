// The doctor's checks of the machine's devices and limits: the NUMA node of each core of the
// pool, each SR-IOV VF and each hugepage pool; IOMMU groups and vfio-pci; RLIMIT_MEMLOCK.
//! NUMA, IOMMU and memlock checks.

use std::collections::{BTreeMap, BTreeSet};

use fastpath_hook::cores::{format_list, parse_list};

use super::{cores::hook_config, Check, Host};

/// The machine's NUMA nodes: node number, its CPUs and its hugepages (all sizes).
fn nodes(host: &Host) -> BTreeMap<usize, (BTreeSet<usize>, u64)> {
    let dir = host.file("/sys/devices/system/node");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("node").and_then(|n| n.parse::<usize>().ok()) else { continue };
        let cpus = std::fs::read_to_string(e.path().join("cpulist")).ok().and_then(|s| parse_list(s.trim()).ok());
        let pages = std::fs::read_dir(e.path().join("hugepages"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|s| std::fs::read_to_string(s.path().join("nr_hugepages")).ok()?.trim().parse::<u64>().ok())
            .sum();
        out.insert(n, (cpus.unwrap_or_default(), pages));
    }
    out
}

/// The SR-IOV VFs (devices with a `physfn`) and their NUMA node (`None`: the firmware says none).
fn vfs(host: &Host) -> Vec<(String, Option<usize>)> {
    let dir = host.file("/sys/bus/pci/devices");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("physfn").exists())
        .map(|e| {
            let node = std::fs::read_to_string(e.path().join("numa_node")).ok().and_then(|s| s.trim().parse().ok());
            (e.file_name().to_string_lossy().into_owned(), node)
        })
        .collect();
    out.sort();
    out
}

/// numa: the pool's cores, the VFs and the hugepages on one node.
pub fn numa(host: &Host) -> Check {
    let nodes = nodes(host);
    let pool = hook_config(host).map(|c| c.cores).unwrap_or_default();
    let vfs = vfs(host);
    if nodes.len() <= 1 {
        let n = nodes.keys().next().map_or_else(|| "no node directory".into(), |n| format!("node{n}"));
        return Check::ok("numa", format!("one NUMA node ({n}): cores, {} VFs and hugepages are all local", vfs.len()));
    }
    let pool_nodes: BTreeSet<usize> =
        nodes.iter().filter(|(_, (cpus, _))| !cpus.is_disjoint(&pool)).map(|(n, _)| *n).collect();
    let mut problems = Vec::new();
    if pool_nodes.len() > 1 {
        problems.push(format!("the core pool ({}) spans nodes {pool_nodes:?}", format_list(&pool)));
    }
    for (pci, node) in &vfs {
        if let Some(n) = node.filter(|n| !pool_nodes.contains(n)) {
            problems.push(format!("VF {pci} is on node {n}, no core of the pool is"));
        }
    }
    let remote: Vec<usize> = pool_nodes.iter().copied().filter(|n| nodes[n].1 == 0).collect();
    if !remote.is_empty() {
        problems.push(format!("node(s) {remote:?} of the pool have no hugepages: their containers' pools are remote"));
    }
    let home = vfs.iter().find_map(|(_, n)| *n).or_else(|| pool_nodes.iter().next().copied()).unwrap_or(0);
    if problems.is_empty() {
        Check::ok("numa", format!("the core pool, {} VFs and their hugepages are on node(s) {pool_nodes:?}", vfs.len()))
    } else {
        Check::warn(
            "numa",
            problems.join("; "),
            format!(
                "set 'cores' in hook.toml to node{home}'s CPUs ({}) and echo 1024 > /sys/devices/system/node/node{home}/hugepages/hugepages-2048kB/nr_hugepages",
                format_list(&nodes.get(&home).map(|n| n.0.clone()).unwrap_or_default())
            ),
        )
    }
}

/// iommu.groups and iommu.vfio-pci: what `fastpath.io/vf` and VF ports need.
pub fn iommu(host: &Host) -> Vec<Check> {
    let groups = std::fs::read_dir(host.file("/sys/kernel/iommu_groups")).map_or(0, Iterator::count);
    let g = if groups == 0 {
        Check::warn(
            "iommu.groups",
            "no IOMMU groups: the IOMMU is off, so VFs cannot be given to containers or to fastpathd (vfio-pci)",
            "add 'intel_iommu=on iommu=pt' (AMD: 'amd_iommu=on') to GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub && reboot",
        )
    } else {
        Check::ok("iommu.groups", format!("{groups} IOMMU groups"))
    };
    let v = if host.file("/sys/bus/pci/drivers/vfio-pci").is_dir() {
        Check::ok("iommu.vfio-pci", "the vfio-pci driver is loaded")
    } else {
        Check::warn(
            "iommu.vfio-pci",
            "the vfio-pci driver is not loaded: VFs cannot be bound for user-space drivers",
            "modprobe vfio-pci",
        )
    };
    vec![g, v]
}

/// (soft, hard) RLIMIT_MEMLOCK from /proc/self/limits; `None` is unlimited.
fn memlock_limits(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    let l = text.lines().find(|l| l.starts_with("Max locked memory"))?;
    let mut f = l["Max locked memory".len()..].split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()?, f.next()?))
}

fn kib(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".into(), |b| format!("{} KiB", b / 1024))
}

/// memlock: whether the hook can raise a VF container's RLIMIT_MEMLOCK (the hard limit).
pub fn memlock(host: &Host) -> Check {
    let want = hook_config(host).map_or(64 << 20, |c| c.vf_memlock);
    let fix = "raise the hard limit of the runtime's service: LimitMEMLOCK=infinity (systemd), or 'ulimit -l unlimited' as root in the shell that starts the runtime";
    match host.read("/proc/self/limits").as_deref().and_then(memlock_limits) {
        None => Check::warn("memlock", "RLIMIT_MEMLOCK is not known (/proc/self/limits)", fix),
        Some((soft, hard)) if hard.is_some_and(|h| h < want) => Check::warn(
            "memlock",
            format!(
                "RLIMIT_MEMLOCK is {} (hard {}): below vf_memlock ({} KiB), so a VF container's limit cannot be raised to cover its DMA memory",
                kib(soft),
                kib(hard),
                want / 1024
            ),
            fix,
        ),
        Some((soft, hard)) => Check::ok("memlock", format!("RLIMIT_MEMLOCK {} (hard {})", kib(soft), kib(hard))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::Tree;
    use super::super::Status;
    use super::*;

    fn two_nodes(t: &Tree) {
        t.write("/sys/devices/system/cpu/online", "0-3\n")
            .write("/sys/devices/system/node/node0/cpulist", "0-1\n")
            .write("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", "512\n")
            .write("/sys/devices/system/node/node1/cpulist", "2-3\n")
            .write("/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
            .write("/sys/bus/pci/devices/0000:01:10.0/numa_node", "0\n")
            .dir("/sys/bus/pci/devices/0000:01:10.0/physfn");
    }

    #[test]
    fn one_node_is_ok() {
        let t = Tree::new("numa-one");
        t.write("/sys/devices/system/node/node0/cpulist", "0-1\n");
        let c = numa(&t.host());
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("one NUMA node (node0)"), "{}", c.detail);
    }

    #[test]
    fn a_pool_on_the_vfs_node_with_hugepages_is_ok_and_across_nodes_warns() {
        let t = Tree::new("numa-two");
        two_nodes(&t);
        t.write("/etc/fastpath/hook.toml", "cores = \"1\"\n");
        assert_eq!(numa(&t.host()).status, Status::Ok, "{:?}", numa(&t.host()));
        t.write("/etc/fastpath/hook.toml", "cores = \"1-3\"\n");
        let c = numa(&t.host());
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("spans nodes {0, 1}"), "{}", c.detail);
        assert!(c.detail.contains("[1] of the pool have no hugepages"), "{}", c.detail);
        assert!(c.fix.as_deref().unwrap().contains("node0's CPUs (0-1)"), "{:?}", c.fix);
        t.write("/etc/fastpath/hook.toml", "cores = \"2-3\"\n");
        assert!(numa(&t.host()).detail.contains("VF 0000:01:10.0 is on node 0"));
    }

    #[test]
    fn iommu_groups_and_vfio() {
        let t = Tree::new("iommu");
        let c = iommu(&t.host());
        assert_eq!((c[0].status, c[1].status), (Status::Warn, Status::Warn));
        assert_eq!(c[1].fix.as_deref(), Some("modprobe vfio-pci"));
        t.dir("/sys/kernel/iommu_groups/7").dir("/sys/bus/pci/drivers/vfio-pci");
        let c = iommu(&t.host());
        assert_eq!((c[0].status, c[1].status), (Status::Ok, Status::Ok));
        assert_eq!(c[0].detail, "1 IOMMU groups");
    }

    #[test]
    fn memlock_below_vf_memlock_warns() {
        let t = Tree::new("memlock");
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              8388608              bytes\n";
        t.write("/proc/self/limits", limits);
        let c = memlock(&t.host());
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("8192 KiB (hard 8192 KiB)"), "{}", c.detail);
        t.write("/proc/self/limits", "Max locked memory         8388608              unlimited            bytes\n");
        assert_eq!(memlock(&t.host()).status, Status::Ok);
        t.write("/proc/self/limits", "");
        assert_eq!(memlock(&t.host()).status, Status::Warn);
    }
}
