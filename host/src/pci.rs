// PCI devices through sysfs for the hook's VF path and `fastpathctl vf`: the tree (its roots
// configurable, so tests run on a fake one) and the file helpers the modules below share.
//! PCI sysfs: SR-IOV VFs, vfio-pci binding and restoring.
//!
//! The kernel interface used (Documentation/ABI/testing/sysfs-bus-pci):
//! `bus/pci/devices/<addr>/{vendor,device,class,driver,driver_override,iommu_group,
//! sriov_numvfs,sriov_totalvfs,virtfn<N>,physfn,net/}`, `bus/pci/drivers/<name>/{bind,unbind}`,
//! `bus/pci/drivers_probe` and `class/vfio/<group>/dev`.
//!
//! Binding to vfio-pci: write `vfio-pci` to `driver_override`, unbind from the current
//! driver, write the address to `drivers_probe`, wait until `driver` points at vfio-pci.
//! Restoring: clear `driver_override`, unbind from vfio-pci, bind the previous driver
//! (or let `drivers_probe` pick the device's own driver).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod device;
mod error;
/// A fake sysfs tree in a directory, with a small emulated kernel, for tests of this module,
/// the hook and `fastpathctl` (the `test-utils` feature, for dev-dependencies only).
#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
mod nodes;
mod sriov;
mod vfio_bind;

pub use device::{Device, Role};
pub use error::{Error, Result};
pub use netlib::pci::{BadPciAddress, IommuGroupError, PciAddress};
pub use nodes::Node;
pub use vfio_bind::Binding;

use error::io_hint;

/// The driver userspace drivers need.
pub const VFIO_PCI: &str = "vfio-pci";
/// (major, minor) of `/dev/vfio/vfio`, the VFIO container device (misc 10:196).
pub const VFIO_CONTAINER_DEV: (u64, u64) = (10, 196);

/// Called after every sysfs write with the resolved path and the value: the kernel of a
/// fake tree, in tests.
pub type Emulator = Arc<dyn Fn(&Path, &str) + Send + Sync>;

/// Access to PCI devices through a sysfs tree.
#[derive(Clone)]
pub struct Pci {
    root: PathBuf,
    dev: PathBuf,
    modprobe: Option<PathBuf>,
    timeout: Duration,
    emulate: Option<Emulator>,
}

impl std::fmt::Debug for Pci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pci").field("root", &self.root).field("dev", &self.dev).finish_non_exhaustive()
    }
}

impl Default for Pci {
    fn default() -> Self {
        Self::new()
    }
}

impl Pci {
    /// The host's `/sys` and `/dev`.
    pub fn new() -> Self {
        Self::at("/sys")
    }

    /// A sysfs tree at `root` (the `/sys` of a fake tree in tests); device nodes in `/dev`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            dev: "/dev".into(),
            modprobe: Some("modprobe".into()),
            timeout: Duration::from_secs(5),
            emulate: None,
        }
    }

    /// Device nodes under `dev` instead of `/dev`.
    #[must_use]
    pub fn with_dev_dir(mut self, dev: impl Into<PathBuf>) -> Self {
        self.dev = dev.into();
        self
    }

    /// The program run to load vfio-pci when its driver directory is missing (`None`: never).
    #[must_use]
    pub fn with_modprobe(mut self, modprobe: Option<PathBuf>) -> Self {
        self.modprobe = modprobe;
        self
    }

    /// How long to wait for the kernel to bind or create devices.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs `f` after every write (a fake tree's kernel).
    #[must_use]
    pub fn with_emulator(mut self, f: Emulator) -> Self {
        self.emulate = Some(f);
        self
    }

    /// The sysfs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `bus/pci/devices/<pci>`.
    pub fn dev_path(&self, pci: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci)
    }

    fn driver_dir(&self, name: &str) -> PathBuf {
        self.root.join("bus/pci/drivers").join(name)
    }

    /// `/dev/vfio/<group>` (under the configured /dev).
    pub fn group_node(&self, group: u32) -> PathBuf {
        self.dev.join("vfio").join(group.to_string())
    }

    /// `/dev/vfio/vfio` (under the configured /dev).
    pub fn container_node(&self) -> PathBuf {
        self.dev.join("vfio/vfio")
    }

    fn existing(&self, pci: &str) -> Result<PathBuf> {
        let p = self.dev_path(pci);
        if p.exists() {
            Ok(p)
        } else {
            Err(Error::NoDevice { pci: pci.into(), path: p })
        }
    }

    fn link_name(p: &Path) -> Option<String> {
        std::fs::read_link(p).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    fn read_trim(p: &Path) -> Option<String> {
        std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
    }

    fn read_num<T: std::str::FromStr>(pci: &str, p: &Path) -> Result<T> {
        let t = std::fs::read_to_string(p).map_err(|e| Error::Read {
            pci: pci.into(),
            path: p.into(),
            msg: e.to_string(),
        })?;
        t.trim().parse().map_err(|_| Error::Read {
            pci: pci.into(),
            path: p.into(),
            msg: format!("'{}' is not a number", t.trim()),
        })
    }

    fn write(&self, pci: &str, path: &Path, value: &str) -> Result<()> {
        // sysfs wants the whole value in one write(2), into the existing file.
        let r = std::fs::OpenOptions::new().write(true).open(path).and_then(|mut f| {
            use std::io::Write;
            f.write_all(value.as_bytes())
        });
        r.map_err(|e| {
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Error::Write {
                pci: pci.into(),
                path: path.into(),
                value: value.trim_end().into(),
                hint: io_hint(&e, &file),
                source: e,
            }
        })?;
        if let Some(f) = &self.emulate {
            f(&std::fs::canonicalize(path).unwrap_or_else(|_| path.into()), value);
        }
        Ok(())
    }

    fn wait(&self, mut done: impl FnMut() -> bool) -> bool {
        let t0 = Instant::now();
        loop {
            if done() {
                return true;
            }
            if t0.elapsed() >= self.timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests;
