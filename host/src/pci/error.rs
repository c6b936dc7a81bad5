// Why a PCI sysfs operation failed: every message names the device, the file and the value,
// and for the usual causes (no root, VFs in use, no IOMMU) what to do.
//! PCI errors.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use netlib::pci::{BadPciAddress, IommuGroupError};

/// Why a PCI operation failed; every message names the device, the file and the value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a PCI address.
    #[error(transparent)]
    BadAddress(#[from] BadPciAddress),
    /// No such device in sysfs.
    #[error("{pci}: no such PCI device ({} does not exist)", path.display())]
    NoDevice {
        /// The address.
        pci: String,
        /// Its sysfs directory.
        path: PathBuf,
    },
    /// The device's IOMMU group could not be read.
    #[error(transparent)]
    IommuGroup(#[from] IommuGroupError),
    /// The vfio-pci driver is not there and could not be loaded.
    #[error("VFIO is not available: {} does not exist and {detail} (does this kernel have CONFIG_VFIO_PCI?)", path.display())]
    NoVfio {
        /// The missing driver directory.
        path: PathBuf,
        /// What loading it said.
        detail: String,
    },
    /// A device that is not an SR-IOV physical function.
    #[error("{pci} is not an SR-IOV PF ({} does not exist)", path.display())]
    NotPf {
        /// The address.
        pci: String,
        /// The missing file.
        path: PathBuf,
    },
    /// More VFs than the PF supports.
    #[error("{pci} supports at most {total} VFs ({}), not {wanted}", path.display())]
    TooManyVfs {
        /// The PF.
        pci: String,
        /// The limit file.
        path: PathBuf,
        /// The limit.
        total: u32,
        /// What was asked.
        wanted: u32,
    },
    /// Writing a sysfs file failed.
    #[error("{pci}: writing '{value}' to {}: {source}{hint}", path.display())]
    Write {
        /// The device.
        pci: String,
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
        /// What to check, when there is a likely cause.
        hint: String,
    },
    /// Reading a sysfs file failed, or it held something unexpected.
    #[error("{pci}: reading {}: {msg}", path.display())]
    Read {
        /// The device.
        pci: String,
        /// The file.
        path: PathBuf,
        /// What happened.
        msg: String,
    },
    /// The kernel did not do what was asked in time.
    #[error("{pci}: {} is {got} after {waited:?}, waiting for {want}", path.display())]
    Timeout {
        /// The device.
        pci: String,
        /// The file or link watched.
        path: PathBuf,
        /// What it should have become.
        want: String,
        /// What it is.
        got: String,
        /// How long was waited.
        waited: Duration,
    },
    /// A device node could not be created or given away.
    #[error("{}: {what}: {source}", path.display())]
    Node {
        /// The node.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to check when writing sysfs file `file` failed with `e`, when there is a likely cause.
pub(super) fn io_hint(e: &io::Error, file: &str) -> String {
    match (e.raw_os_error(), file) {
        (Some(13 | 1), _) => " (needs root)".into(),
        (Some(16), "sriov_numvfs") => " (VFs in use: set 0 first, or stop what uses them)".into(),
        (Some(2 | 95), "sriov_numvfs") => " (is the PF's driver loaded and its link up?)".into(),
        (Some(19), "bind") => " (the driver does not take this device)".into(),
        _ => String::new(),
    }
}
