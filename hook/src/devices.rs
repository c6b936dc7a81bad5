// SR-IOV VFs for fastpath.io/vf: checks a VF (exists, IOMMU group, driver), decides whether the
// hook binds it to vfio-pci itself, picks a free one from a named pool, binds the chosen VFs
// at createRuntime and gives them back to their drivers at release.
//! VF devices.

use crate::annotations::{is_pci_address, VF};
use crate::hostconfig::{HostConfig, VfBind};
use crate::ledger::VfAlloc;
use crate::pci::{self, Pci, VFIO_PCI};
use crate::{Error, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `/dev/vfio/vfio`, the VFIO container device (char 10:196).
pub const VFIO_CONTAINER: (u64, u64) = pci::VFIO_CONTAINER_DEV;

/// Checks one VF and returns what the container needs of it. A VF not on vfio-pci yet is
/// returned with `hook_bound` and its current driver (bound later, by [`bind`]) when the
/// host's `vf_bind` policy lets the hook bind it; `in_pool`: it was named through a pool.
pub fn probe(pci: &Pci, cfg: &HostConfig, addr: &str, value: &str, in_pool: bool) -> Result<VfAlloc> {
    let bad = |why: String| Error::annotation(VF, value, why);
    let dev = pci.dev_path(addr);
    if !dev.exists() {
        return Err(bad(format!("{addr}: no such PCI device on this host ({} does not exist)", dev.display())));
    }
    let group = pci.iommu_group(addr).map_err(|e| bad(e.to_string()))?;
    let driver = pci.driver(addr);
    if driver.as_deref() == Some(VFIO_PCI) {
        let dev = pci.group_dev(group).map_err(|e| bad(format!("{addr}: {e}")))?;
        return Ok(VfAlloc { pci: addr.into(), group, dev, hook_bound: false, previous_driver: None });
    }
    let shown = driver.as_deref().unwrap_or("no driver");
    let refuse = |why: &str| {
        bad(format!("{addr} is bound to {shown}, not vfio-pci, and {why} (bind it: fastpathctl vf bind {addr})"))
    };
    let listed = in_pool || cfg.vf_pools.values().any(|p| p.iter().any(|a| a == addr));
    match cfg.vf_bind {
        VfBind::None => {
            return Err(refuse(&format!("the hook binds no device itself (vf_bind = \"none\" in {})", cfg.shown())))
        }
        VfBind::Pools if !listed => {
            return Err(refuse(&format!(
                "the hook binds only VFs of vf_pools (vf_bind = \"pools\" in {})",
                cfg.shown()
            )))
        }
        _ => {}
    }
    if !pci.is_vf(addr) {
        return Err(refuse("it is not an SR-IOV VF (no physfn): the hook binds only VFs"));
    }
    pci.ensure_vfio().map_err(|e| bad(e.to_string()))?;
    Ok(VfAlloc { pci: addr.into(), group, dev: (0, 0), hook_bound: true, previous_driver: driver })
}

/// Resolves the requested VFs (addresses or pool names) to free, usable VFs; `held` maps
/// the PCI addresses other containers hold to a description of the holder.
pub fn pick(
    pci: &Pci,
    cfg: &HostConfig,
    requested: &[String],
    value: &str,
    held: &BTreeMap<String, String>,
) -> Result<Vec<VfAlloc>> {
    let mut out: Vec<VfAlloc> = Vec::new();
    for r in requested {
        let taken = |a: &str, out: &[VfAlloc]| {
            held.get(a).cloned().or_else(|| out.iter().any(|v| v.pci == a).then(|| "this container".to_string()))
        };
        if is_pci_address(r) {
            if let Some(who) = taken(r, &out) {
                return Err(Error::annotation(VF, value, format!("VF {r} is held by {who}")));
            }
            out.push(probe(pci, cfg, r, value, false)?);
        } else {
            let pool = &cfg.vf_pools[r];
            let mut last = None;
            let mut got = None;
            for a in pool.iter().filter(|a| taken(a, &out).is_none()) {
                match probe(pci, cfg, a, value, true) {
                    Ok(v) => {
                        got = Some(v);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match (got, last) {
                (Some(v), _) => out.push(v),
                (None, Some(e)) => return Err(e),
                (None, None) => {
                    let holders: Vec<String> =
                        pool.iter().filter_map(|a| taken(a, &out).map(|w| format!("{a} held by {w}"))).collect();
                    return Err(Error::annotation(
                        VF,
                        value,
                        format!(
                            "VF pool '{r}' ({}) has no free VF{}",
                            pool.join(", "),
                            if holders.is_empty() { String::new() } else { format!(": {}", holders.join(", ")) }
                        ),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Binds the VFs the hook is to bind (`hook_bound`) to vfio-pci and fills in every VF's
/// `/dev/vfio/<group>` device number.
pub fn bind(pci: &Pci, vfs: &mut [VfAlloc]) -> Result<()> {
    for v in vfs.iter_mut() {
        let bad = |why: String| Error::annotation(VF, &v.pci, why);
        if v.hook_bound {
            let b = pci.bind_vfio(&v.pci).map_err(|e| bad(format!("binding to vfio-pci: {e}")))?;
            if b.group != v.group {
                return Err(bad(format!("IOMMU group changed from {} to {} while binding", v.group, b.group)));
            }
        }
        v.dev = pci.group_dev(v.group).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// Gives the VFs the hook bound back to their previous drivers; returns what could not be.
pub fn release(pci: &Pci, vfs: &[VfAlloc]) -> Vec<String> {
    let mut warnings = Vec::new();
    for v in vfs.iter().filter(|v| v.hook_bound) {
        match pci.restore(&v.pci, v.previous_driver.as_deref()) {
            Ok(now) if now == v.previous_driver || v.previous_driver.is_none() => {}
            Ok(now) => warnings.push(format!(
                "VF {}: unbound from vfio-pci but bound to {} instead of {}",
                v.pci,
                now.as_deref().unwrap_or("no driver"),
                v.previous_driver.as_deref().unwrap_or("no driver")
            )),
            Err(e) => warnings.push(format!(
                "VF {}: giving it back to {}: {e}",
                v.pci,
                v.previous_driver.as_deref().unwrap_or("its driver")
            )),
        }
    }
    warnings
}

/// The device nodes (container path, major, minor) for a set of VFs.
pub fn nodes(vfs: &[VfAlloc]) -> Vec<(PathBuf, u64, u64)> {
    if vfs.is_empty() {
        return vec![];
    }
    let mut v = vec![(PathBuf::from("/dev/vfio/vfio"), VFIO_CONTAINER.0, VFIO_CONTAINER.1)];
    for f in vfs {
        let p = PathBuf::from(format!("/dev/vfio/{}", f.group));
        if !v.iter().any(|(q, _, _)| *q == p) {
            v.push((p, f.dev.0, f.dev.1));
        }
    }
    v
}

/// Whether the runtime put VFIO device nodes in the container itself (`linux.devices` holds
/// a `/dev/vfio/` path), as podman and containerd do for a CDI device's `deviceNodes`: the
/// device cgroup rules are then the runtime's (see [`runtime_allows`]), not the hook's.
pub fn runtime_has_vfio_nodes(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .is_some_and(|d| d.iter().any(|n| n.path().starts_with("/dev/vfio/")))
}

/// The runtime's device rules (`linux.resources.devices`).
pub fn runtime_rules(spec: &Spec) -> Vec<LinuxDeviceCgroup> {
    spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.devices().clone()).unwrap_or_default()
}

/// Whether device `rules` (applied in order over "deny all", the last rule that matches
/// deciding, as runtimes do) let the container read and write the character device
/// `major:minor`.
pub fn runtime_allows(rules: &[LinuxDeviceCgroup], major: u64, minor: u64) -> bool {
    let matches = |want: Option<i64>, have: u64| want.is_none_or(|w| w < 0 || u64::try_from(w) == Ok(have));
    let mut allowed = false;
    for r in rules {
        let typ_ok = matches!(r.typ(), None | Some(LinuxDeviceType::A | LinuxDeviceType::C | LinuxDeviceType::U));
        if !(typ_ok && matches(r.major(), major) && matches(r.minor(), minor)) {
            continue;
        }
        let access = r.access().as_deref().unwrap_or("rwm");
        if r.allow() {
            if access.contains('r') && access.contains('w') {
                allowed = true;
            }
        } else if access.contains('r') || access.contains('w') {
            allowed = false;
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_matching_runtime_rule_decides() {
        let rule = |allow: bool, major: Option<i64>, minor: Option<i64>, access: &str| {
            let mut b = oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .typ(LinuxDeviceType::C)
                .access(access.to_string());
            if let Some(m) = major {
                b = b.major(m);
            }
            if let Some(m) = minor {
                b = b.minor(m);
            }
            b.build().unwrap()
        };
        let deny_all = oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm".to_string())
            .build()
            .unwrap();
        // What podman writes for a CDI device node: deny all, then the node's rule.
        let cdi = vec![deny_all.clone(), rule(true, Some(10), Some(196), "rwm"), rule(true, Some(242), Some(5), "rwm")];
        assert!(runtime_allows(&cdi, 10, 196));
        assert!(runtime_allows(&cdi, 242, 5));
        assert!(!runtime_allows(&cdi, 242, 6), "another group");
        assert!(!runtime_allows(&[], 242, 5), "no rules: denied");
        assert!(!runtime_allows(&[rule(true, Some(242), Some(5), "m")], 242, 5), "mknod alone");
        let revoked = vec![rule(true, Some(242), None, "rwm"), rule(false, Some(242), Some(5), "rw")];
        assert!(!runtime_allows(&revoked, 242, 5) && runtime_allows(&revoked, 242, 7));
        assert!(runtime_allows(&[deny_all, rule(true, None, None, "rwm")], 242, 5), "a wildcard");
    }
    use crate::pci::fake::FakeTree;

    struct T(FakeTree);
    impl Drop for T {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0.dir);
        }
    }

    /// PF 0000:81:00.0 with VFs 81:10.0 (group 42, on vfio-pci) and 81:10.2 (group 43, igbvf).
    fn host(name: &str) -> T {
        let t = FakeTree::new(name, true);
        t.pf("0000:81:00.0", 7, &["0000:81:10.0", "0000:81:10.2"], 42);
        t.pci().set_numvfs("0000:81:00.0", 2).unwrap();
        t.pci().bind_vfio("0000:81:10.0").unwrap();
        T(t)
    }

    fn cfg(extra: &str) -> HostConfig {
        HostConfig::parse(&format!("{extra}\n[vf_pools]\nfast = [\"0000:81:10.0\", \"0000:81:10.2\"]\n"), None, "0-1")
            .unwrap()
    }

    #[test]
    fn probe_and_pool() {
        let t = host("pool");
        let pci = t.0.pci();
        let cfg = cfg("");
        let v = pick(&pci, &cfg, &["fast".into()], "fast", &BTreeMap::new()).unwrap();
        assert_eq!(
            v,
            vec![VfAlloc {
                pci: "0000:81:10.0".into(),
                group: 42,
                dev: (243, 42),
                hook_bound: false,
                previous_driver: None
            }]
        );
        assert_eq!(
            nodes(&v),
            vec![(PathBuf::from("/dev/vfio/vfio"), 10, 196), (PathBuf::from("/dev/vfio/42"), 243, 42)]
        );
        // The pool picks the free VF; that one is on igbvf, so the hook will bind it.
        let held: BTreeMap<String, String> = [("0000:81:10.0".into(), "container a (pid 7)".into())].into();
        let mut v = pick(&pci, &cfg, &["fast".into()], "fast", &held).unwrap();
        assert_eq!(
            v,
            vec![VfAlloc {
                pci: "0000:81:10.2".into(),
                group: 43,
                dev: (0, 0),
                hook_bound: true,
                previous_driver: Some("igbvf".into())
            }]
        );
        bind(&pci, &mut v).unwrap();
        assert_eq!((pci.driver("0000:81:10.2").as_deref(), v[0].dev), (Some(VFIO_PCI), (243, 43)));
        assert!(release(&pci, &v).is_empty());
        assert_eq!(pci.driver("0000:81:10.2").as_deref(), Some("igbvf"));
        assert_eq!(t.0.read("0000:81:10.2", "driver_override"), "(null)");
        // Both held: the message names them and their holders.
        let mut held = held;
        held.insert("0000:81:10.2".into(), "container b (pid 8)".into());
        let e = pick(&pci, &cfg, &["fast".into()], "fast", &held).unwrap_err().to_string();
        assert_eq!(
            e,
            "annotation fastpath.io/vf: 'fast' VF pool 'fast' (0000:81:10.0, 0000:81:10.2) has no free VF: 0000:81:10.0 held by container a (pid 7), 0000:81:10.2 held by container b (pid 8)"
        );
    }

    #[test]
    fn a_held_vf_is_refused_naming_it_and_its_holder() {
        let t = host("held");
        let held: BTreeMap<String, String> = [("0000:81:10.0".into(), "container a (pid 7)".into())].into();
        let e = pick(&t.0.pci(), &cfg(""), &["0000:81:10.0".into()], "0000:81:10.0", &held).unwrap_err().to_string();
        assert_eq!(e, "annotation fastpath.io/vf: '0000:81:10.0' VF 0000:81:10.0 is held by container a (pid 7)");
        let two = ["0000:81:10.2".to_string(), "0000:81:10.2".to_string()];
        let e = pick(&t.0.pci(), &cfg(""), &two, "x", &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("VF 0000:81:10.2 is held by this container"), "{e}");
    }

    #[test]
    fn policy_and_refusals() {
        let t = host("policy");
        t.0.device("0000:05:00.0", (0x8086, 0x1533), Some("igb"), Some(3));
        let pci = t.0.pci();
        let e = probe(&pci, &cfg(""), "0000:05:00.0", "v", false).unwrap_err().to_string();
        assert!(e.contains("0000:05:00.0 is bound to igb, not vfio-pci, and it is not an SR-IOV VF"), "{e}");
        let e = probe(&pci, &cfg("vf_bind = \"none\""), "0000:81:10.2", "v", false).unwrap_err().to_string();
        assert!(e.contains("bound to igbvf, not vfio-pci") && e.contains("vf_bind = \"none\""), "{e}");
        assert!(probe(&pci, &cfg("vf_bind = \"pools\""), "0000:81:10.2", "v", false).unwrap().hook_bound);
        let nopools = HostConfig::parse("vf_bind = \"pools\"", None, "0-1").unwrap();
        let e = probe(&pci, &nopools, "0000:81:10.2", "v", false).unwrap_err().to_string();
        assert!(e.contains("binds only VFs of vf_pools"), "{e}");
        let e = probe(&pci, &cfg(""), "0000:81:11.0", "v", false).unwrap_err().to_string();
        assert!(e.contains("0000:81:11.0: no such PCI device"), "{e}");
        t.0.device("0000:06:00.0", (0x8086, 0x10ca), Some("igbvf"), None);
        let e = probe(&pci, &cfg(""), "0000:06:00.0", "v", false).unwrap_err().to_string();
        assert!(e.contains("0000:06:00.0 has no IOMMU group"), "{e}");
    }
}
