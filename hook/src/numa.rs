// NUMA topology from sysfs (which CPUs each node has, a PCI device's node, free hugepages per
// node), the choice of pool cores on one node, and the note when a container spans nodes.
//! NUMA placement.

use crate::cores::format_list;
use crate::hugetlb::format_size;
use crate::sys::Sys;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The host's NUMA nodes and their CPUs (empty: sysfs says nothing about nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// CPUs by node number.
    pub nodes: BTreeMap<u32, BTreeSet<usize>>,
    /// The sysfs root it was read from (`/sys` on a host).
    pub root: PathBuf,
}

/// Where a container's cores, hugepages and VFs ended up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The one node they are all on, when there is one.
    pub node: Option<u32>,
    /// Why they could not be put on one node.
    pub note: Option<String>,
}

impl Topology {
    /// Reads `<root>/devices/system/node/node*/cpulist`; nodes that can't be read are left out.
    pub fn read(sys: &dyn Sys, root: &Path) -> Self {
        let dir = root.join("devices/system/node");
        let mut nodes = BTreeMap::new();
        for name in sys.list_dir(&dir).unwrap_or_default() {
            let Some(n) = name.strip_prefix("node").and_then(|n| n.parse::<u32>().ok()) else { continue };
            let cpus = sys.read(&dir.join(&name).join("cpulist")).ok().and_then(|t| crate::cores::parse_list(&t).ok());
            if let Some(cpus) = cpus {
                nodes.insert(n, cpus);
            }
        }
        Self { nodes, root: root.to_path_buf() }
    }

    /// The nodes `cpus` are on (CPUs no node lists are left out).
    pub fn nodes_of<'a>(&self, cpus: impl IntoIterator<Item = &'a usize>) -> BTreeSet<u32> {
        let cpus: BTreeSet<usize> = cpus.into_iter().copied().collect();
        self.nodes.iter().filter(|(_, c)| !c.is_disjoint(&cpus)).map(|(n, _)| *n).collect()
    }

    /// The node of PCI device `pci` (`<root>/bus/pci/devices/<pci>/numa_node`; -1 or
    /// unreadable: `None`).
    pub fn device_node(&self, sys: &dyn Sys, pci: &str) -> Option<u32> {
        let t = sys.read(&self.root.join("bus/pci/devices").join(pci).join("numa_node")).ok()?;
        t.trim().parse::<u32>().ok()
    }

    /// Free hugepages of `page_size` on `node` (`None`: sysfs doesn't say).
    pub fn free_hugepages(&self, sys: &dyn Sys, node: u32, page_size: u64) -> Option<u64> {
        let p = self
            .root
            .join(format!("devices/system/node/node{node}/hugepages/hugepages-{}kB/free_hugepages", page_size >> 10));
        sys.read(&p).ok()?.trim().parse().ok()
    }

    /// `n` of the `free` cores all on one node, or `None` when no node has `n` of them (or
    /// the host has fewer than two nodes: nothing to prefer). Nodes are tried `want` first,
    /// then in order; a node where `fits` (its hugepages suffice) comes before one where not.
    pub fn pick_on_one_node(
        &self,
        free: &[usize],
        n: usize,
        want: Option<u32>,
        fits: impl Fn(u32) -> bool,
    ) -> Option<Vec<usize>> {
        if self.nodes.len() < 2 || n == 0 {
            return None;
        }
        let order: Vec<u32> = want.into_iter().chain(self.nodes.keys().copied().filter(|k| Some(*k) != want)).collect();
        let on = |node: u32| -> Option<Vec<usize>> {
            let cpus = self.nodes.get(&node)?;
            let v: Vec<usize> = free.iter().copied().filter(|c| cpus.contains(c)).take(n).collect();
            (v.len() == n).then_some(v)
        };
        order.iter().filter(|&&k| fits(k)).find_map(|&k| on(k)).or_else(|| order.iter().find_map(|&k| on(k)))
    }

    /// Where `cores`, VFs on `vf_nodes` (PCI address, node) and `huge` (page size, pages)
    /// ended up, with a note when they are not all on one node or the node lacks the free
    /// hugepages. A host with fewer than two nodes, or a container with no cores and no VF,
    /// gets no note.
    pub fn assess(
        &self,
        sys: &dyn Sys,
        cores: &[usize],
        vf_nodes: &[(String, Option<u32>)],
        huge: Option<(u64, u64)>,
    ) -> Placement {
        if cores.is_empty() && vf_nodes.is_empty() {
            return Placement::default();
        }
        if self.nodes.len() < 2 {
            return Placement { node: self.nodes.keys().next().copied(), note: None };
        }
        let core_nodes = self.nodes_of(cores);
        let mut all = core_nodes.clone();
        all.extend(vf_nodes.iter().filter_map(|(_, n)| *n));
        let show = |s: &BTreeSet<u32>| s.iter().map(u32::to_string).collect::<Vec<_>>().join(" and ");
        match all.len() {
            0 => Placement::default(),
            1 => {
                let node = all.into_iter().next();
                let note = node.zip(huge).and_then(|(k, (ps, pages))| {
                    let free = self.free_hugepages(sys, k, ps)?;
                    (free < pages).then(|| {
                        format!(
                            "NUMA node {k} has {free} free {} hugepages, {pages} wanted: some will come from another node",
                            format_size(ps)
                        )
                    })
                });
                Placement { node, note }
            }
            _ => {
                let mut parts = Vec::new();
                if !cores.is_empty() {
                    parts.push(format!("cores {} on node {}", format_list(cores), show(&core_nodes)));
                }
                for (pci, n) in vf_nodes {
                    if let Some(n) = n {
                        parts.push(format!("VF {pci} on node {n}"));
                    }
                }
                Placement { node: None, note: Some(format!("not on one NUMA node: {}", parts.join(", "))) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::RealSys;

    /// A sysfs tree of two nodes (CPUs 0-3 and 4-7), 2Mi hugepages free (node 0: 10,
    /// node 1: 100), and a VF on node 1.
    fn two_nodes(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("fastpath-numa-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (n, cpus, free) in [(0, "0-3", 10), (1, "4-7", 100)] {
            let d = root.join(format!("devices/system/node/node{n}"));
            std::fs::create_dir_all(d.join("hugepages/hugepages-2048kB")).unwrap();
            std::fs::write(d.join("cpulist"), format!("{cpus}\n")).unwrap();
            std::fs::write(d.join("hugepages/hugepages-2048kB/free_hugepages"), format!("{free}\n")).unwrap();
        }
        std::fs::create_dir_all(root.join("devices/system/node/possible")).unwrap();
        let vf = root.join("bus/pci/devices/0000:81:10.0");
        std::fs::create_dir_all(&vf).unwrap();
        std::fs::write(vf.join("numa_node"), "1\n").unwrap();
        let none = root.join("bus/pci/devices/0000:00:03.0");
        std::fs::create_dir_all(&none).unwrap();
        std::fs::write(none.join("numa_node"), "-1\n").unwrap();
        root
    }

    #[test]
    fn reads_a_two_node_tree() {
        let root = two_nodes("read");
        let t = Topology::read(&RealSys, &root);
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.nodes[&1], (4..=7).collect());
        assert_eq!(t.nodes_of(&[1, 5]), [0, 1].into());
        assert_eq!(t.device_node(&RealSys, "0000:81:10.0"), Some(1));
        assert_eq!(t.device_node(&RealSys, "0000:00:03.0"), None);
        assert_eq!(t.device_node(&RealSys, "0000:00:04.0"), None);
        assert_eq!(t.free_hugepages(&RealSys, 0, 2 << 20), Some(10));
        assert_eq!(t.free_hugepages(&RealSys, 0, 1 << 30), None);
        assert_eq!(Topology::read(&RealSys, &root.join("absent")).nodes.len(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn picks_one_node_preferring_the_vfs_and_the_hugepages() {
        let root = two_nodes("pick");
        let t = Topology::read(&RealSys, &root);
        let free = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(t.pick_on_one_node(&free, 2, None, |_| true), Some(vec![1, 2]));
        assert_eq!(t.pick_on_one_node(&free, 2, Some(1), |_| true), Some(vec![4, 5]));
        // Node 0 lacks the hugepages: node 1, though the lowest cores are on node 0.
        assert_eq!(t.pick_on_one_node(&free, 2, None, |n| n == 1), Some(vec![4, 5]));
        // No node has the hugepages: still one node, the first with the cores.
        assert_eq!(t.pick_on_one_node(&free, 3, None, |_| false), Some(vec![1, 2, 3]));
        // Node 0 has only 3 free: node 1 even when node 0 is wanted.
        assert_eq!(t.pick_on_one_node(&free, 4, Some(0), |_| true), Some(vec![4, 5, 6, 7]));
        assert_eq!(t.pick_on_one_node(&[3, 4], 2, None, |_| true), None);
        let one = Topology { nodes: [(0, (0..4).collect())].into(), root: root.clone() };
        assert_eq!(one.pick_on_one_node(&free, 2, None, |_| true), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn assess_says_when_one_node_was_impossible() {
        let root = two_nodes("assess");
        let t = Topology::read(&RealSys, &root);
        let vf = |n| vec![("0000:81:10.0".to_string(), n)];
        let p = t.assess(&RealSys, &[4, 5], &vf(Some(1)), Some((2 << 20, 32)));
        assert_eq!(p, Placement { node: Some(1), note: None });
        let p = t.assess(&RealSys, &[1, 2], &vf(Some(1)), None);
        assert_eq!(p.node, None);
        assert_eq!(p.note.as_deref(), Some("not on one NUMA node: cores 1-2 on node 0, VF 0000:81:10.0 on node 1"));
        let p = t.assess(&RealSys, &[3, 4], &[], None);
        assert_eq!(p.note.as_deref(), Some("not on one NUMA node: cores 3-4 on node 0 and 1"));
        let p = t.assess(&RealSys, &[1], &vf(None), Some((2 << 20, 32)));
        assert_eq!(p.node, Some(0));
        assert_eq!(
            p.note.as_deref(),
            Some("NUMA node 0 has 10 free 2Mi hugepages, 32 wanted: some will come from another node")
        );
        assert_eq!(t.assess(&RealSys, &[], &[], Some((2 << 20, 1))), Placement::default());
        let one = Topology { nodes: [(0, (0..4).collect())].into(), root: root.clone() };
        assert_eq!(one.assess(&RealSys, &[1, 2], &vf(Some(0)), None), Placement { node: Some(0), note: None });
        std::fs::remove_dir_all(&root).unwrap();
    }
}
