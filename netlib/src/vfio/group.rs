// An IOMMU group (/dev/vfio/N): opened, checked viable and attached to a container, which
// gets its IOMMU set when the first group joins it.
//! VFIO groups.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use super::container::Container;
use super::error::{ioctl_err, open_rw, VfioError};
use super::sys;

/// An IOMMU group (`/dev/vfio/N`) attached to a container.
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
    number: u32,
}

impl Group {
    /// Opens `/dev/vfio/<number>`, checks it is viable and attaches it to
    /// `container` (setting the container's IOMMU on the first group).
    pub fn open(number: u32, container: &mut Container) -> Result<Self, VfioError> {
        let path = PathBuf::from(format!("/dev/vfio/{number}"));
        let fd: OwnedFd = open_rw(&path, "opening the VFIO group (bound to vfio-pci? owned by us?)")?.into();
        let target = path.display().to_string();
        let flags = sys::group_flags(fd.as_fd()).map_err(ioctl_err(target.clone(), "VFIO_GROUP_GET_STATUS"))?;
        if flags & sys::GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::NotViable(number));
        }
        sys::group_set_container(fd.as_fd(), container.fd()).map_err(ioctl_err(target, "VFIO_GROUP_SET_CONTAINER"))?;
        container.set_iommu()?;
        Ok(Self { fd, number })
    }

    /// The group's fd.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The group number.
    pub fn number(&self) -> u32 {
        self.number
    }
}
