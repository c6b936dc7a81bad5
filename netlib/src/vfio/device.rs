// A VFIO device fd: its regions, BAR mappings, config space (bus mastering), MSI-X
// interrupts to an eventfd, and reset.
//! VFIO devices.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use super::error::{ioctl_err, VfioError};
use super::group::Group;
use super::sys::{self, BarMap};
use crate::pci::PciAddress;

/// PCI config space: the command register.
pub const PCI_COMMAND: u64 = 0x04;
/// PCI command: memory space enable.
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
/// PCI command: bus master enable (the device may DMA).
pub const PCI_COMMAND_MASTER: u16 = 0x4;

/// Information on one device region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Size in bytes.
    pub size: u64,
    /// Offset in the device fd.
    pub offset: u64,
}

/// A device of a group: its fd.
#[derive(Debug)]
pub struct Device {
    file: File,
    pci: String,
    flags: u32,
    num_regions: u32,
}

impl Device {
    /// Gets the fd of PCI device `pci` from `group`. Opening it makes vfio-pci
    /// reset the function (FLR), when the device supports it.
    pub fn open(group: &Group, pci: &str) -> Result<Self, VfioError> {
        let pci = PciAddress::parse_full(pci)?.to_string();
        let name = CString::new(pci.as_str()).expect("a PCI address has no NUL");
        let fd = sys::get_device_fd(group.fd(), &name)
            .map_err(ioctl_err(format!("/dev/vfio/{} {pci}", group.number()), "VFIO_GROUP_GET_DEVICE_FD"))?;
        let info = sys::device_info(fd.as_fd()).map_err(ioctl_err(pci.as_str(), "VFIO_DEVICE_GET_INFO"))?;
        if info.flags & sys::DEVICE_FLAGS_PCI == 0 {
            return Err(VfioError::Region { pci, index: 0, why: "not a PCI device".into() });
        }
        Ok(Self { file: fd.into(), pci, flags: info.flags, num_regions: info.num_regions })
    }

    /// The PCI address.
    pub fn pci(&self) -> &str {
        &self.pci
    }

    /// Region `index`'s information.
    pub fn region(&self, index: u32) -> Result<RegionInfo, VfioError> {
        if index >= self.num_regions {
            return Err(VfioError::Region {
                pci: self.pci.clone(),
                index,
                why: format!("the device has {} regions", self.num_regions),
            });
        }
        let r = sys::region_info(self.file.as_fd(), index)
            .map_err(ioctl_err(self.pci.clone(), format!("VFIO_DEVICE_GET_REGION_INFO({index})")))?;
        Ok(RegionInfo { index, flags: r.flags, size: r.size, offset: r.offset })
    }

    /// Maps BAR `index` (must be mmap-able, read-write).
    pub fn map_bar(&self, index: u32) -> Result<BarMap, VfioError> {
        let r = self.region(index)?;
        let need = sys::REGION_FLAG_READ | sys::REGION_FLAG_WRITE | sys::REGION_FLAG_MMAP;
        if r.flags & need != need || r.size == 0 {
            return Err(VfioError::Region {
                pci: self.pci.clone(),
                index,
                why: format!("flags {:#x} size {:#x}: not a mappable read-write BAR", r.flags, r.size),
            });
        }
        BarMap::map(self.file.as_fd(), r.offset, r.size as usize)
            .map_err(ioctl_err(self.pci.clone(), format!("mmap of BAR{index} ({:#x} bytes)", r.size)))
    }

    fn config_off(&self) -> Result<u64, VfioError> {
        Ok(self.region(sys::PCI_CONFIG_REGION_INDEX)?.offset)
    }

    /// Reads a 16-bit config space register.
    pub fn config_read_u16(&self, off: u64) -> Result<u16, VfioError> {
        let base = self.config_off()?;
        let mut b = [0u8; 2];
        self.file.read_exact_at(&mut b, base + off).map_err(|source| VfioError::Config {
            pci: self.pci.clone(),
            off,
            source,
        })?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a 16-bit config space register.
    pub fn config_write_u16(&self, off: u64, v: u16) -> Result<(), VfioError> {
        let base = self.config_off()?;
        self.file.write_all_at(&v.to_le_bytes(), base + off).map_err(|source| VfioError::Config {
            pci: self.pci.clone(),
            off,
            source,
        })
    }

    /// Turns on memory decoding and bus mastering (the device may then DMA).
    pub fn enable_bus_master(&self) -> Result<(), VfioError> {
        let cmd = self.config_read_u16(PCI_COMMAND)?;
        self.config_write_u16(PCI_COMMAND, cmd | PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY)
    }

    /// Turns bus mastering off (no more DMA from the device).
    pub fn disable_bus_master(&self) -> Result<(), VfioError> {
        let cmd = self.config_read_u16(PCI_COMMAND)?;
        self.config_write_u16(PCI_COMMAND, cmd & !PCI_COMMAND_MASTER)
    }

    /// Has vector `vector` of the device's MSI-X signal `fd` (an eventfd), enabling MSI-X
    /// with vectors `0..=vector` (`VFIO_DEVICE_SET_IRQS`, `DATA_EVENTFD | ACTION_TRIGGER`).
    /// The device then interrupts through the IOMMU's interrupt remapping into `fd`.
    pub fn enable_msix(&self, vector: u32, fd: BorrowedFd<'_>) -> Result<(), VfioError> {
        let info = sys::irq_info(self.file.as_fd(), sys::PCI_MSIX_IRQ_INDEX)
            .map_err(ioctl_err(self.pci.clone(), "VFIO_DEVICE_GET_IRQ_INFO(MSI-X)"))?;
        if info.flags & sys::IRQ_INFO_EVENTFD == 0 || vector >= info.count {
            return Err(VfioError::Irq {
                pci: self.pci.clone(),
                why: format!(
                    "MSI-X vector {vector} wanted, the device has {} (flags {:#x}{})",
                    info.count,
                    info.flags,
                    if info.flags & sys::IRQ_INFO_EVENTFD == 0 { ", no eventfd" } else { "" }
                ),
            });
        }
        sys::set_irq_eventfd(self.file.as_fd(), sys::PCI_MSIX_IRQ_INDEX, vector, fd)
            .map_err(ioctl_err(self.pci.clone(), format!("VFIO_DEVICE_SET_IRQS(MSI-X vector {vector} to an eventfd)")))
    }

    /// Disables MSI-X (no vector signals anything any more).
    pub fn disable_msix(&self) -> Result<(), VfioError> {
        sys::disable_irqs(self.file.as_fd(), sys::PCI_MSIX_IRQ_INDEX)
            .map_err(ioctl_err(self.pci.clone(), "VFIO_DEVICE_SET_IRQS(MSI-X off)"))
    }

    /// Resets the function (`VFIO_DEVICE_RESET`), when the device can.
    pub fn reset(&self) -> Result<(), VfioError> {
        if self.flags & sys::DEVICE_FLAGS_RESET == 0 {
            return Err(VfioError::Region {
                pci: self.pci.clone(),
                index: 0,
                why: "the device cannot be reset".into(),
            });
        }
        sys::device_reset(self.file.as_fd()).map_err(ioctl_err(self.pci.clone(), "VFIO_DEVICE_RESET"))
    }
}
