// Binding a device to vfio-pci through driver_override (loading vfio-pci if need be), and
// giving it back to its previous driver.
//! vfio-pci binding and restoring.

use serde::Serialize;

use super::{Error, Pci, Result, VFIO_PCI};

/// What [`Pci::bind_vfio`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The device.
    pub pci: String,
    /// The driver it had before (`None`: none, or it was on vfio-pci already).
    pub previous_driver: Option<String>,
    /// Its IOMMU group (`/dev/vfio/<group>`).
    pub group: u32,
    /// Whether this call changed the binding (false: it was on vfio-pci already).
    pub changed: bool,
}

impl Pci {
    /// Makes sure the vfio-pci driver is there, loading it with modprobe if need be.
    pub fn ensure_vfio(&self) -> Result<()> {
        let d = self.driver_dir(VFIO_PCI);
        if d.exists() {
            return Ok(());
        }
        let detail = match &self.modprobe {
            None => "loading it is not allowed here".to_string(),
            Some(m) => match std::process::Command::new(m).arg(VFIO_PCI).output() {
                Ok(o) if o.status.success() => {
                    if self.wait(|| d.exists()) {
                        return Ok(());
                    }
                    format!("`{} {VFIO_PCI}` succeeded but the driver did not appear", m.display())
                }
                Ok(o) => format!(
                    "`{} {VFIO_PCI}` failed ({}): {}",
                    m.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => format!("running `{} {VFIO_PCI}` failed: {e}", m.display()),
            },
        };
        Err(Error::NoVfio { path: d, detail })
    }

    /// Binds a device to vfio-pci: `driver_override`, unbind, `drivers_probe`, then waits for
    /// `driver` to point at vfio-pci. A device already there is left alone (`changed` false).
    /// On failure after the first write the device is given back to its driver.
    pub fn bind_vfio(&self, pci: &str) -> Result<Binding> {
        let d = self.existing(pci)?;
        let group = self.iommu_group(pci)?;
        let previous = self.driver(pci);
        if previous.as_deref() == Some(VFIO_PCI) {
            return Ok(Binding { pci: pci.into(), previous_driver: None, group, changed: false });
        }
        self.ensure_vfio()?;
        let r = (|| {
            self.write(pci, &d.join("driver_override"), VFIO_PCI)?;
            if previous.is_some() {
                self.write(pci, &d.join("driver/unbind"), pci)?;
            }
            if self.write(pci, &self.root.join("bus/pci/drivers_probe"), pci).is_err() || self.driver(pci).is_none() {
                // drivers_probe refuses a device no driver claims at once; ask vfio-pci directly.
                let _ = self.write(pci, &self.driver_dir(VFIO_PCI).join("bind"), pci);
            }
            if !self.wait(|| self.driver(pci).as_deref() == Some(VFIO_PCI)) {
                return Err(Error::Timeout {
                    pci: pci.into(),
                    path: d.join("driver"),
                    want: VFIO_PCI.into(),
                    got: self.driver(pci).unwrap_or_else(|| "no driver".into()),
                    waited: self.timeout,
                });
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(Binding { pci: pci.into(), previous_driver: previous, group, changed: true }),
            Err(e) => {
                let _ = self.restore(pci, previous.as_deref());
                Err(e)
            }
        }
    }

    /// Gives a device back: clears `driver_override`, unbinds it from vfio-pci, and binds
    /// `previous` (or, when `None`, lets `drivers_probe` pick the device's own driver).
    /// Returns the driver bound afterwards. Idempotent; a device on another driver than
    /// vfio-pci is not unbound.
    pub fn restore(&self, pci: &str, previous: Option<&str>) -> Result<Option<String>> {
        let d = self.existing(pci)?;
        let ov = d.join("driver_override");
        if Self::read_trim(&ov).is_some_and(|s| !s.is_empty() && s != "(null)") {
            self.write(pci, &ov, "\n")?;
        }
        match self.driver(pci) {
            Some(cur) if cur == VFIO_PCI => self.write(pci, &d.join("driver/unbind"), pci)?,
            Some(cur) => return Ok(Some(cur)),
            None => {}
        }
        let probe = || self.write(pci, &self.root.join("bus/pci/drivers_probe"), pci);
        match previous.filter(|p| *p != VFIO_PCI) {
            Some(p) if self.driver_dir(p).exists() => {
                if self.write(pci, &self.driver_dir(p).join("bind"), pci).is_err() {
                    probe()?;
                }
            }
            _ => probe()?,
        }
        if let Some(p) = previous {
            self.wait(|| self.driver(pci).as_deref() == Some(p));
        }
        Ok(self.driver(pci))
    }
}
