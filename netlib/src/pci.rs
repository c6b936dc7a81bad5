// PCI addresses, parsed by one rule for the whole workspace (VFIO, port specs, the hook's
// annotations, fastpathctl), and the one reader of a device's IOMMU group in sysfs.
//! PCI addresses and IOMMU groups.
//!
//! An address is `DDDD:BB:DD.F` (domain, bus, device up to 0x1f, function up to 7, in hex
//! of either case), as sysfs names a device; people may leave the domain out (`BB:DD.F`
//! means domain 0000). [`PciAddress`] parses both and always writes the full lower-case
//! form, so that whatever a user typed becomes the name sysfs and VFIO know.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A PCI function's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    domain: u16,
    bus: u8,
    device: u8,
    function: u8,
}

/// Text that is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a PCI address ({})", if *full_only {
    "write it in full, e.g. 0000:01:10.0"
} else {
    "write it as 0000:01:10.0, or 01:10.0 for domain 0000"
})]
pub struct BadPciAddress {
    /// The text given.
    pub value: String,
    /// Only the full form was accepted ([`PciAddress::parse_full`]).
    pub full_only: bool,
}

/// Largest device number on a bus.
const MAX_DEVICE: u8 = 0x1f;
/// Largest function number of a device.
const MAX_FUNCTION: u8 = 7;

impl PciAddress {
    /// The address `domain:bus:device.function`; `None` when the device is above 0x1f or
    /// the function above 7.
    pub fn new(domain: u16, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device <= MAX_DEVICE && function <= MAX_FUNCTION).then_some(Self { domain, bus, device, function })
    }

    /// Parses the full form `DDDD:BB:DD.F` only: for APIs that take a device's name as sysfs
    /// and VFIO give it, where the short form would be a different name.
    pub fn parse_full(s: &str) -> Result<Self, BadPciAddress> {
        let bad = || BadPciAddress { value: s.into(), full_only: true };
        match s.split(':').count() {
            3 => s.parse().map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// The PCI domain (segment).
    pub fn domain(&self) -> u16 {
        self.domain
    }

    /// The bus.
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// The device on the bus (0-0x1f).
    pub fn device(&self) -> u8 {
        self.device
    }

    /// The function of the device (0-7).
    pub fn function(&self) -> u8 {
        self.function
    }
}

/// `digits` hex digits exactly, as a number.
fn hex_field(s: &str, digits: usize) -> Option<u16> {
    if s.len() != digits || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

impl FromStr for PciAddress {
    type Err = BadPciAddress;

    /// `DDDD:BB:DD.F` or `BB:DD.F` (domain 0000), hex digits of either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPciAddress { value: s.into(), full_only: false };
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let fields: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match fields[..] {
            [d, b, v] => (hex_field(d, 4), b, v),
            [b, v] => (Some(0), b, v),
            _ => return Err(bad()),
        };
        let parts = (domain, hex_field(bus, 2), hex_field(device, 2), hex_field(function, 1));
        let (Some(domain), Some(bus), Some(device), Some(function)) = parts else { return Err(bad()) };
        Self::new(domain, bus as u8, device as u8, function as u8).ok_or_else(bad)
    }
}

impl fmt::Display for PciAddress {
    /// The full lower-case form, `0000:01:10.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

/// Whether `s` is a PCI address in the full form `DDDD:BB:DD.F` ([`PciAddress::parse_full`]).
pub fn is_pci_address(s: &str) -> bool {
    PciAddress::parse_full(s).is_ok()
}

/// Why a device's IOMMU group could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IommuGroupError {
    /// No such device in sysfs.
    #[error("{pci}: no such PCI device ({} does not exist)", path.display())]
    NoDevice {
        /// The address.
        pci: PciAddress,
        /// Its sysfs directory.
        path: PathBuf,
    },
    /// The device is in no IOMMU group: VFIO cannot give it to userspace.
    #[error("{pci} has no IOMMU group ({} does not exist): turn the IOMMU on (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d/AMD-Vi in the firmware)", path.display())]
    NoGroup {
        /// The address.
        pci: PciAddress,
        /// The missing link.
        path: PathBuf,
    },
    /// The link is there but names no group number.
    #[error("{pci}: {} points at '{target}', which does not end in an IOMMU group number", path.display())]
    BadLink {
        /// The address.
        pci: PciAddress,
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: String,
    },
}

/// `<sysfs_root>/bus/pci/devices/<pci>`, a device's directory in sysfs (`sysfs_root` is
/// normally `/sys`).
pub fn device_dir(sysfs_root: &Path, pci: &PciAddress) -> PathBuf {
    sysfs_root.join("bus/pci/devices").join(pci.to_string())
}

/// The IOMMU group number of device `pci`: where its `iommu_group` link in sysfs points.
pub fn iommu_group(sysfs_root: &Path, pci: &PciAddress) -> Result<u32, IommuGroupError> {
    let dir = device_dir(sysfs_root, pci);
    let link = dir.join("iommu_group");
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(_) if !dir.exists() => return Err(IommuGroupError::NoDevice { pci: *pci, path: dir }),
        Err(_) => return Err(IommuGroupError::NoGroup { pci: *pci, path: link }),
    };
    target.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).ok_or_else(|| IommuGroupError::BadLink {
        pci: *pci,
        path: link,
        target: target.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn parses_full_and_short_forms_and_writes_the_full_one() {
        assert_eq!(a("0000:01:10.0").to_string(), "0000:01:10.0");
        assert_eq!(a("01:10.2").to_string(), "0000:01:10.2");
        assert_eq!(a("0000:81:0A.1").to_string(), "0000:81:0a.1");
        assert_eq!(a("abcd:81:1f.7"), PciAddress::new(0xabcd, 0x81, 0x1f, 7).unwrap());
        let x = a("ABCD:ff:1F.7");
        assert_eq!((x.domain(), x.bus(), x.device(), x.function()), (0xabcd, 0xff, 0x1f, 7));
        assert_eq!(PciAddress::new(0, 1, 0x20, 0), None);
        assert_eq!(PciAddress::new(0, 1, 0x10, 8), None);
    }

    #[test]
    fn refuses_what_is_not_an_address_naming_it() {
        for bad in [
            "",
            "0000:01:10",
            "0000-01:10.0",
            "000g:01:10.0",
            "0000:01:10.8",
            "0000:01:20.0",
            "eth0",
            "00000:01:10.0",
            "0000:001:10.0",
            "0000:01:10.00",
            " 0000:01:10.0",
            "0:0000:01:10.0",
            "+000:01:10.0",
        ] {
            let e = bad.parse::<PciAddress>().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("'{bad}' is not a PCI address (write it as 0000:01:10.0, or 01:10.0 for domain 0000)")
            );
        }
    }

    #[test]
    fn full_form_only() {
        assert_eq!(PciAddress::parse_full("0000:81:1F.7").unwrap().to_string(), "0000:81:1f.7");
        let e = PciAddress::parse_full("01:10.0").unwrap_err().to_string();
        assert_eq!(e, "'01:10.0' is not a PCI address (write it in full, e.g. 0000:01:10.0)");
        assert!(is_pci_address("0000:01:10.0"));
        assert!(is_pci_address("0000:81:1f.7"));
        for bad in ["0000:01:10", "01:10.0", "0000:01:20.0", "0000:01:10.8", "000g:01:10.0", "0000-01:10.0"] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn reads_iommu_groups_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("netlib-pci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let devs = dir.join("bus/pci/devices");
        for d in ["0000:01:10.0", "0000:01:10.2", "0000:01:10.4"] {
            std::fs::create_dir_all(devs.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("../../../kernel/iommu_groups/42", devs.join("0000:01:10.0/iommu_group")).unwrap();
        std::os::unix::fs::symlink("../../../kernel/iommu_groups/x", devs.join("0000:01:10.4/iommu_group")).unwrap();
        assert_eq!(iommu_group(&dir, &a("01:10.0")).unwrap(), 42);
        let e = iommu_group(&dir, &a("0000:01:10.2")).unwrap_err().to_string();
        let link = devs.join("0000:01:10.2/iommu_group");
        assert!(e.starts_with("0000:01:10.2 has no IOMMU group") && e.contains("intel_iommu=on"), "{e}");
        assert!(e.contains(&link.display().to_string()), "{e}");
        let e = iommu_group(&dir, &a("0000:01:10.4")).unwrap_err().to_string();
        assert!(e.contains("points at '../../../kernel/iommu_groups/x'"), "{e}");
        let e = iommu_group(Path::new("/nonexistent"), &a("0000:01:10.0")).unwrap_err().to_string();
        assert_eq!(e, "0000:01:10.0: no such PCI device (/nonexistent/bus/pci/devices/0000:01:10.0 does not exist)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
