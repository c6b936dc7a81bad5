// VFIO for a user-space driver: a type1v2 container, the PCI device's group,
// the device itself (regions, config space, reset) and DMA maps with IOVA == VA.
//! VFIO: giving one PCI device to this process.
//!
//! A [`Container`] holds the IOMMU context, a [`Group`] is the device's IOMMU
//! group (`/dev/vfio/N`, found from `/sys/bus/pci/devices/<pci>/iommu_group`),
//! a [`Device`] is the device fd (its regions, config space and reset).
//! [`Container::map_dma`] maps our own memory for the device with the IOVA equal
//! to the virtual address, after checking that the whole range lies inside one
//! of the usable IOVA ranges the IOMMU reports ([`IommuInfo`]): on x86 the MSI
//! window `0xfee00000-0xfeefffff` is a hole, and a buffer there could never be
//! given to the device. Mappings are undone when their [`DmaMapping`] drops.
//!
//! The raw ioctls and the BAR mmap are in [`sys`], the only `unsafe` here.

mod container;
mod device;
mod error;
mod group;
mod iova;
pub mod sys;

use std::path::Path;

pub use crate::pci::is_pci_address;
pub use container::{Container, DmaMapping};
pub use device::{Device, RegionInfo, PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY};
pub use error::VfioError;
pub use group::Group;
pub use iova::{IommuInfo, IovaRange, MSI_WINDOW};
pub use sys::BarMap;

use crate::pci::PciAddress;

/// `/dev/vfio/vfio`.
pub const CONTAINER_PATH: &str = "/dev/vfio/vfio";

/// A PCI device opened for a user-space driver: its container (own IOMMU
/// context), group and device fd. Drop order: device, group, container.
#[derive(Debug)]
pub struct VfioPci {
    /// The device.
    pub device: Device,
    /// Its group.
    pub group: Group,
    /// The container.
    pub container: Container,
}

impl VfioPci {
    /// Opens PCI device `pci` (`DDDD:BB:DD.F`): a new container, its group (from sysfs)
    /// and the device.
    pub fn open(pci: &str) -> Result<Self, VfioError> {
        let addr = PciAddress::parse_full(pci)?;
        let number = crate::pci::iommu_group(Path::new("/sys"), &addr)?;
        let mut container = Container::open()?;
        let group = Group::open(number, &mut container)?;
        let device = Device::open(&group, pci)?;
        Ok(Self { device, group, container })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_a_bad_address_or_a_missing_device_naming_it() {
        let e = VfioPci::open("bogus").unwrap_err().to_string();
        assert!(e.contains("'bogus' is not a PCI address"), "{e}");
        let e = VfioPci::open("01:10.0").unwrap_err().to_string();
        assert!(e.contains("'01:10.0' is not a PCI address (write it in full"), "{e}");
        let e = VfioPci::open("0000:ff:1f.7").unwrap_err().to_string();
        assert!(
            e.starts_with("0000:ff:1f.7: no such PCI device (/sys/bus/pci/devices/0000:ff:1f.7 does not exist)"),
            "{e}"
        );
    }
}
