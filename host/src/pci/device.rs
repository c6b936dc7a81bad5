// What sysfs says about PCI devices: one device (ids, driver, IOMMU group, network interfaces,
// its SR-IOV role), the VFs of a PF, the devices of an IOMMU group, and the listing.
//! PCI devices as sysfs shows them.

use serde::Serialize;

use super::{Error, Pci, PciAddress, Result};

/// A device's place in SR-IOV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Role {
    /// A physical function.
    Pf {
        /// VFs enabled now (`sriov_numvfs`).
        numvfs: u32,
        /// Most VFs it can have (`sriov_totalvfs`).
        totalvfs: u32,
        /// The VFs' addresses, in VF index order (`virtfn<N>`).
        vfs: Vec<String>,
    },
    /// A virtual function.
    Vf {
        /// Its PF (`physfn`).
        pf: String,
        /// Its index among the PF's VFs, when the PF lists it.
        index: Option<u32>,
    },
    /// Neither.
    None,
}

/// One PCI device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Address, `0000:01:10.0`.
    pub pci: String,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (`0x020000` is Ethernet).
    pub class: u32,
    /// The bound driver, if any.
    pub driver: Option<String>,
    /// `driver_override`, if set.
    pub driver_override: Option<String>,
    /// IOMMU group, if the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// Network interfaces (while a kernel network driver holds it).
    pub net: Vec<String>,
    /// PF, VF or neither.
    pub role: Role,
}

impl Device {
    /// `vendor:device` as lspci writes it (`8086:10ca`).
    pub fn id(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }
}

impl Pci {
    /// The driver bound to a device (`None`: none).
    pub fn driver(&self, pci: &str) -> Option<String> {
        Self::link_name(&self.dev_path(pci).join("driver"))
    }

    /// A device's IOMMU group.
    pub fn iommu_group(&self, pci: &str) -> Result<u32> {
        self.existing(pci)?;
        Ok(netlib::pci::iommu_group(&self.root, &pci.parse::<PciAddress>()?)?)
    }

    /// Whether a device is an SR-IOV VF (has `physfn`).
    pub fn is_vf(&self, pci: &str) -> bool {
        self.dev_path(pci).join("physfn").exists()
    }

    /// The devices in an IOMMU group (`kernel/iommu_groups/<group>/devices`), sorted; all of
    /// them must be on vfio-pci (or on no driver) for VFIO to give the group out.
    pub fn group_devices(&self, group: u32) -> Vec<String> {
        let d = self.root.join("kernel/iommu_groups").join(group.to_string()).join("devices");
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// One device.
    pub fn device(&self, pci: &str) -> Result<Device> {
        let d = self.existing(pci)?;
        let hex = |f: &str| -> Result<u32> {
            let p = d.join(f);
            let t = Self::read_trim(&p).ok_or_else(|| Error::Read {
                pci: pci.into(),
                path: p.clone(),
                msg: "missing".into(),
            })?;
            u32::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|_| Error::Read {
                pci: pci.into(),
                path: p,
                msg: format!("'{t}' is not hexadecimal"),
            })
        };
        let role = if let Some(pf) = Self::link_name(&d.join("physfn")) {
            let index = self.vfs_of(&pf).iter().position(|v| v == pci).map(|i| i as u32);
            Role::Vf { pf, index }
        } else if d.join("sriov_totalvfs").exists() {
            Role::Pf {
                numvfs: Self::read_num(pci, &d.join("sriov_numvfs")).unwrap_or(0),
                totalvfs: Self::read_num(pci, &d.join("sriov_totalvfs"))?,
                vfs: self.vfs_of(pci),
            }
        } else {
            Role::None
        };
        let mut net: Vec<String> = std::fs::read_dir(d.join("net"))
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
            .unwrap_or_default();
        net.sort();
        Ok(Device {
            pci: pci.into(),
            vendor: hex("vendor")? as u16,
            device: hex("device")? as u16,
            class: hex("class").unwrap_or(0),
            driver: self.driver(pci),
            driver_override: Self::read_trim(&d.join("driver_override")).filter(|s| !s.is_empty() && s != "(null)"),
            iommu_group: self.iommu_group(pci).ok(),
            net,
            role,
        })
    }

    /// The VFs of a PF in index order (`virtfn0`, `virtfn1`, ...); empty for anything else.
    pub fn vfs_of(&self, pf: &str) -> Vec<String> {
        let d = self.dev_path(pf);
        let mut v: Vec<(u32, String)> = std::fs::read_dir(&d)
            .map(|r| {
                r.filter_map(|e| {
                    let name = e.ok()?.file_name().to_string_lossy().into_owned();
                    let i: u32 = name.strip_prefix("virtfn")?.parse().ok()?;
                    Some((i, Self::link_name(&d.join(&name))?))
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, a)| a).collect()
    }

    /// The PCI devices, sorted by address: only SR-IOV PFs and VFs, or all with `all`.
    pub fn list(&self, all: bool) -> Result<Vec<Device>> {
        let dir = self.root.join("bus/pci/devices");
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::Read {
            pci: "*".into(),
            path: dir.clone(),
            msg: e.to_string(),
        })?;
        let mut names: Vec<String> =
            rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let d = self.device(&n)?;
            if all || d.role != Role::None {
                out.push(d);
            }
        }
        Ok(out)
    }
}
