// A fake sysfs/dev tree in a temp directory with a small emulated kernel, for tests of the
// PCI module here and in the crates that use it.
use super::{Emulator, Pci, VFIO_PCI};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The VF addresses a fake PF creates, and their driver.
pub type VfSlots = (Vec<String>, String);

/// A fake `/sys` (and `/dev`) under `dir`: PFs, VFs, drivers, IOMMU groups.
#[derive(Debug, Clone)]
pub struct FakeTree {
    /// The top directory (removed on drop by tests that want).
    pub dir: PathBuf,
    /// `<dir>/sys`.
    pub sys: PathBuf,
    /// The driver each device takes by itself (what `drivers_probe` binds without override).
    pub native: Arc<Mutex<BTreeMap<String, String>>>,
    /// The IOMMU group each device gets.
    pub groups: Arc<Mutex<BTreeMap<String, u32>>>,
    /// VFs a PF creates: PF address -> (VF addresses, VF driver).
    pub vf_slots: Arc<Mutex<BTreeMap<String, VfSlots>>>,
}

fn symlink(target: &str, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn file(p: &Path, data: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

impl FakeTree {
    /// An empty tree in a fresh directory `<tmp>/fastpath-pci-<name>-<pid>`, with the
    /// drivers igb, igbvf and (unless `vfio` is false) vfio-pci.
    pub fn new(name: &str, vfio: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("fastpath-pci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sys = dir.join("sys");
        let drivers: &[&str] = if vfio { &["igb", "igbvf", VFIO_PCI] } else { &["igb", "igbvf"] };
        for d in drivers {
            Self::add_driver_at(&sys, d);
        }
        file(&sys.join("bus/pci/drivers_probe"), "");
        std::fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
        std::fs::create_dir_all(dir.join("dev/vfio")).unwrap();
        Self { dir, sys, native: Arc::default(), groups: Arc::default(), vf_slots: Arc::default() }
    }

    fn add_driver_at(sys: &Path, name: &str) {
        let d = sys.join("bus/pci/drivers").join(name);
        file(&d.join("bind"), "");
        file(&d.join("unbind"), "");
    }

    /// Adds a driver directory (as loading its module would).
    pub fn add_driver(&self, name: &str) {
        Self::add_driver_at(&self.sys, name);
    }

    /// Adds a device bound to `driver`, in IOMMU `group` (`None`: IOMMU off).
    pub fn device(&self, pci: &str, id: (u16, u16), driver: Option<&str>, group: Option<u32>) -> &Self {
        let d = self.sys.join("bus/pci/devices").join(pci);
        file(&d.join("vendor"), &format!("0x{:04x}\n", id.0));
        file(&d.join("device"), &format!("0x{:04x}\n", id.1));
        file(&d.join("class"), "0x020000\n");
        file(&d.join("driver_override"), "(null)\n");
        if let Some(drv) = driver {
            symlink(&format!("../../drivers/{drv}"), &d.join("driver"));
            self.native.lock().unwrap().insert(pci.into(), drv.into());
            if drv != "igb" && drv != VFIO_PCI {
                file(&d.join(format!("net/{}", pci.replace([':', '.'], "_"))).join("ifindex"), "1");
            }
        }
        if let Some(g) = group {
            symlink(&format!("../../../kernel/iommu_groups/{g}"), &d.join("iommu_group"));
            self.groups.lock().unwrap().insert(pci.into(), g);
            if driver == Some(VFIO_PCI) {
                file(&self.sys.join(format!("class/vfio/{g}/dev")), &format!("243:{g}\n"));
            }
        }
        self
    }

    /// Adds an SR-IOV PF on igb that can create up to `total` VFs at `vfs` (which get
    /// IOMMU groups from `first_group` on, and the igbvf driver).
    pub fn pf(&self, pci: &str, total: u32, vfs: &[&str], first_group: u32) -> &Self {
        self.device(pci, (0x8086, 0x10c9), Some("igb"), Some(first_group - 1));
        let d = self.sys.join("bus/pci/devices").join(pci);
        file(&d.join("sriov_totalvfs"), &format!("{total}\n"));
        file(&d.join("sriov_numvfs"), "0\n");
        file(&d.join("net/eth0/ifindex"), "2");
        let mut g = self.groups.lock().unwrap();
        for (i, v) in vfs.iter().enumerate() {
            g.insert((*v).into(), first_group + i as u32);
        }
        self.vf_slots
            .lock()
            .unwrap()
            .insert(pci.into(), (vfs.iter().map(|s| (*s).to_string()).collect(), "igbvf".into()));
        self
    }

    /// A [`Pci`] on this tree whose writes the emulated kernel answers; no modprobe, short timeouts.
    pub fn pci(&self) -> Pci {
        let me = self.clone();
        let emu: Emulator = Arc::new(move |path: &Path, value: &str| me.kernel(path, value));
        Pci::at(&self.sys)
            .with_dev_dir(self.dir.join("dev"))
            .with_modprobe(None)
            .with_timeout(std::time::Duration::from_millis(200))
            .with_emulator(emu)
    }

    fn dev(&self, pci: &str) -> PathBuf {
        self.sys.join("bus/pci/devices").join(pci)
    }

    fn bind(&self, pci: &str, drv: &str) {
        let d = self.dev(pci);
        symlink(&format!("../../drivers/{drv}"), &d.join("driver"));
        let group = self.groups.lock().unwrap().get(pci).copied();
        if drv == VFIO_PCI {
            let _ = std::fs::remove_dir_all(d.join("net"));
            if let Some(g) = group {
                file(&self.sys.join(format!("class/vfio/{g}/dev")), &format!("243:{g}\n"));
            }
        } else if drv != "igb" {
            file(&d.join(format!("net/{}/ifindex", pci.replace([':', '.'], "_"))), "1");
        }
    }

    fn unbind(&self, pci: &str) {
        let d = self.dev(pci);
        if let Some(g) = self.groups.lock().unwrap().get(pci) {
            let _ = std::fs::remove_dir_all(self.sys.join(format!("class/vfio/{g}")));
        }
        let _ = std::fs::remove_file(d.join("driver"));
        let _ = std::fs::remove_dir_all(d.join("net"));
    }

    /// What the kernel does on a write of `value` to `path`.
    fn kernel(&self, path: &Path, value: &str) {
        let v = value.trim();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = path.parent().unwrap_or(Path::new("/"));
        let drivers = self.sys.join("bus/pci/drivers");
        let driver_exists = |d: &str| drivers.join(d).exists();
        match name {
            "unbind" => self.unbind(v),
            "bind" => {
                let drv = parent.file_name().unwrap().to_string_lossy().into_owned();
                if !self.dev(v).join("driver").exists() {
                    self.bind(v, &drv);
                }
            }
            "drivers_probe" => {
                if self.dev(v).join("driver").exists() {
                    return;
                }
                let ov = std::fs::read_to_string(self.dev(v).join("driver_override")).unwrap_or_default();
                let ov = ov.trim();
                let drv = if ov.is_empty() || ov == "(null)" {
                    self.native.lock().unwrap().get(v).cloned()
                } else {
                    Some(ov.to_string())
                };
                if let Some(d) = drv.filter(|d| driver_exists(d)) {
                    self.bind(v, &d);
                }
            }
            "driver_override" if v.is_empty() => std::fs::write(path, "(null)\n").unwrap(),
            "sriov_numvfs" => {
                let pf = parent.file_name().unwrap().to_string_lossy().into_owned();
                let n: usize = v.parse().unwrap();
                let (slots, drv) = self.vf_slots.lock().unwrap().get(&pf).cloned().unwrap_or_default();
                for (i, slot) in slots.iter().enumerate() {
                    let link = parent.join(format!("virtfn{i}"));
                    if i < n {
                        self.device(slot, (0x8086, 0x10ca), None, None);
                        let d = self.dev(slot);
                        symlink(&format!("../{pf}"), &d.join("physfn"));
                        let g = self.groups.lock().unwrap().get(slot).copied();
                        if let Some(g) = g {
                            symlink(&format!("../../../kernel/iommu_groups/{g}"), &d.join("iommu_group"));
                        }
                        self.native.lock().unwrap().insert(slot.clone(), drv.clone());
                        self.bind(slot, &drv);
                        symlink(&format!("../{slot}"), &link);
                    } else {
                        let _ = std::fs::remove_file(&link);
                        let _ = std::fs::remove_dir_all(self.dev(slot));
                    }
                }
            }
            _ => {}
        }
    }

    /// The contents of a device's file, trimmed.
    pub fn read(&self, pci: &str, f: &str) -> String {
        std::fs::read_to_string(self.dev(pci).join(f)).unwrap_or_default().trim().to_string()
    }
}
