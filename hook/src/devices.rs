// SR-IOV VFs for fastpath.io/vf: checks a VF is bound to vfio-pci, finds its IOMMU group and
// the /dev/vfio nodes the container needs, and picks a free one from a named pool.
//! VF devices.

use crate::annotations::{is_pci_address, VF};
use crate::hostconfig::HostConfig;
use crate::ledger::VfAlloc;
use crate::sys::Sys;
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `/dev/vfio/vfio`, the VFIO container device (char 10:196).
pub const VFIO_CONTAINER: (u64, u64) = (10, 196);

/// Checks one VF and returns what the container needs of it.
pub fn probe(sys: &dyn Sys, pci: &str, value: &str) -> Result<VfAlloc> {
    let dev = PathBuf::from("/sys/bus/pci/devices").join(pci);
    if !sys.exists(&dev) {
        return Err(Error::annotation(VF, value, format!("{pci}: no such PCI device on this host")));
    }
    let driver =
        sys.read_link(&dev.join("driver")).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if driver.as_deref() != Some("vfio-pci") {
        return Err(Error::annotation(
            VF,
            value,
            format!(
                "{pci} is bound to {}, not vfio-pci (bind it: driverctl set-override {pci} vfio-pci)",
                driver.as_deref().unwrap_or("no driver")
            ),
        ));
    }
    let group: u32 = sys
        .read_link(&dev.join("iommu_group"))
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()))
        .ok_or_else(|| Error::annotation(VF, value, format!("{pci} has no IOMMU group (is the IOMMU on?)")))?;
    let node = Path::new("/dev/vfio").join(group.to_string());
    let dev = sys
        .device_number(&node)
        .map_err(|e| Error::annotation(VF, value, format!("{pci}: {}: {e}", node.display())))?;
    Ok(VfAlloc { pci: pci.into(), group, dev })
}

/// Resolves the requested VFs (addresses or pool names) to free, usable VFs; `held` are the
/// PCI addresses other containers hold.
pub fn pick(
    sys: &dyn Sys,
    cfg: &HostConfig,
    requested: &[String],
    value: &str,
    held: &BTreeSet<String>,
) -> Result<Vec<VfAlloc>> {
    let mut out: Vec<VfAlloc> = Vec::new();
    for r in requested {
        let taken = |pci: &str| held.contains(pci) || out.iter().any(|v| v.pci == pci);
        if is_pci_address(r) {
            if taken(r) {
                return Err(Error::annotation(VF, value, format!("{r} is held by another container")));
            }
            out.push(probe(sys, r, value)?);
        } else {
            let pool = &cfg.vf_pools[r];
            let free = pool.iter().find(|p| !taken(p)).ok_or_else(|| {
                Error::annotation(VF, value, format!("VF pool '{r}' ({}) has no free VF", pool.join(", ")))
            })?;
            out.push(probe(sys, free, value)?);
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    fn host() -> FakeSys {
        let s = FakeSys::default();
        s.dir("/sys/bus/pci/devices/0000:81:10.0").dir("/sys/bus/pci/devices/0000:81:10.2");
        {
            let mut st = s.st.borrow_mut();
            st.links.insert("/sys/bus/pci/devices/0000:81:10.0/driver".into(), "../../bus/pci/drivers/vfio-pci".into());
            st.links
                .insert("/sys/bus/pci/devices/0000:81:10.0/iommu_group".into(), "../../kernel/iommu_groups/42".into());
            st.links.insert("/sys/bus/pci/devices/0000:81:10.2/driver".into(), "../../bus/pci/drivers/igbvf".into());
            st.nodes.insert("/dev/vfio/42".into(), (243, 0, 0o600, 0, 0));
        }
        s
    }

    #[test]
    fn probe_and_pool() {
        let s = host();
        let cfg = HostConfig::parse("[vf_pools]\nfast = [\"0000:81:10.0\"]\n", None, "0-1").unwrap();
        let v = pick(&s, &cfg, &["fast".into()], "fast", &BTreeSet::new()).unwrap();
        assert_eq!(v, vec![VfAlloc { pci: "0000:81:10.0".into(), group: 42, dev: (243, 0) }]);
        assert_eq!(
            nodes(&v),
            vec![(PathBuf::from("/dev/vfio/vfio"), 10, 196), (PathBuf::from("/dev/vfio/42"), 243, 0)]
        );
        let held: BTreeSet<String> = ["0000:81:10.0".to_string()].into();
        let e = pick(&s, &cfg, &["fast".into()], "fast", &held).unwrap_err().to_string();
        assert!(e.starts_with("annotation fastpath.io/vf: 'fast' VF pool 'fast' (0000:81:10.0) has no free VF"), "{e}");
        let e = probe(&s, "0000:81:10.2", "0000:81:10.2").unwrap_err().to_string();
        assert!(e.contains("bound to igbvf, not vfio-pci"), "{e}");
        let e = probe(&s, "0000:81:11.0", "0000:81:11.0").unwrap_err().to_string();
        assert!(e.contains("no such PCI device"), "{e}");
    }
}
