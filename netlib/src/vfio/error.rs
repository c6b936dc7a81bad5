// What can go wrong setting VFIO up and mapping memory for DMA, each error naming the file or
// device and the value; and the small helpers that build them.
//! VFIO errors.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::iova::MSI_WINDOW;
use super::CONTAINER_PATH;
use crate::pci::{BadPciAddress, IommuGroupError};

/// Errors of VFIO set-up and DMA mapping. Each names the file or PCI device and the value.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// A device node or sysfs file could not be opened or read.
    #[error("{path}: {what}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("{target}: {what}: {source}")]
    Ioctl {
        /// The fd's file or the PCI device.
        target: String,
        /// The request.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `/dev/vfio/vfio` speaks another API version.
    #[error("{CONTAINER_PATH}: VFIO API version {0}, this driver speaks version 0")]
    ApiVersion(i32),
    /// The kernel has no type1v2 IOMMU backend.
    #[error("{CONTAINER_PATH}: no VFIO_TYPE1v2_IOMMU support (is vfio_iommu_type1 loaded?)")]
    NoType1v2,
    /// A group whose devices are not all bound to vfio-pci (or to no driver).
    #[error("/dev/vfio/{0}: IOMMU group is not viable (bind every device of the group to vfio-pci)")]
    NotViable(u32),
    /// Not a PCI address.
    #[error(transparent)]
    BadPciAddress(#[from] BadPciAddress),
    /// The device's IOMMU group could not be read from sysfs.
    #[error(transparent)]
    IommuGroup(#[from] IommuGroupError),
    /// A region the driver needs is missing or unusable.
    #[error("{pci}: region {index}: {why}")]
    Region {
        /// The device.
        pci: String,
        /// The region index (0-5: BARs, 7: config).
        index: u32,
        /// What is wrong.
        why: String,
    },
    /// An interrupt the driver needs is missing or unusable.
    #[error("{pci}: interrupts: {why}")]
    Irq {
        /// The device.
        pci: String,
        /// What is wrong.
        why: String,
    },
    /// Memory that the IOMMU cannot map at IOVA == VA.
    #[error(
        "DMA range {start:#x}-{end:#x} ({len} bytes at VA == IOVA) is not inside one usable IOVA range of the IOMMU \
         (usable: {usable}; the MSI window {msi} is never usable)",
        end = start.saturating_add(len.saturating_sub(1)),
        msi = MSI_WINDOW
    )]
    NotInIovaWindow {
        /// First byte.
        start: u64,
        /// Length.
        len: u64,
        /// The usable ranges, written out.
        usable: String,
    },
    /// Pinning the memory would pass RLIMIT_MEMLOCK.
    #[error(
        "{CONTAINER_PATH}: VFIO_IOMMU_MAP_DMA {start:#x}+{len:#x}: out of locked memory: RLIMIT_MEMLOCK is {}, \
         {mapped} bytes are mapped already; raise it (ulimit -l, or the container's memlock) to at least {} bytes, \
         or run with CAP_IPC_LOCK",
        if *limit == u64::MAX { "unlimited".to_string() } else { format!("{limit} bytes") },
        mapped + len
    )]
    Memlock {
        /// First byte.
        start: u64,
        /// Length.
        len: u64,
        /// Bytes this container had mapped before.
        mapped: u64,
        /// The soft limit.
        limit: u64,
    },
    /// A config space access failed.
    #[error("{pci}: config space at {off:#x}: {source}")]
    Config {
        /// The device.
        pci: String,
        /// Offset in config space.
        off: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

pub(super) fn ioctl_err(
    target: impl Into<String>,
    what: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> VfioError {
    let (target, what) = (target.into(), what.into());
    move |source| VfioError::Ioctl { target, what, source }
}

pub(super) fn open_rw(path: &Path, what: &'static str) -> Result<File, VfioError> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|source| VfioError::Open {
        path: path.into(),
        what,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_error_says_what_to_raise() {
        let e =
            VfioError::Memlock { start: 0x7f00_0000_0000, len: 0x22_0000, mapped: 0x1000, limit: 1 << 20 }.to_string();
        assert!(e.contains("VFIO_IOMMU_MAP_DMA 0x7f0000000000+0x220000"), "{e}");
        assert!(e.contains("RLIMIT_MEMLOCK is 1048576 bytes, 4096 bytes are mapped already"), "{e}");
        assert!(e.contains("at least 2232320 bytes"), "{e}");
        assert!(crate::vfio::sys::memlock_limit() > 0);
    }
}
