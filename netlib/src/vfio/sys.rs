// The kernel's VFIO interface as we use it: the few ioctl structs (from
// include/uapi/linux/vfio.h), the ioctls themselves and the BAR mmap.
//! Raw VFIO calls. The only `unsafe` of [`crate::vfio`] lives here: the generic ioctl
//! helpers are private, and each request the rest needs has a small safe function that
//! pairs it with the argument the kernel expects, visible to [`crate::vfio`] only.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// `VFIO_TYPE` (`';'`) and `VFIO_BASE`: every VFIO ioctl is `_IO(';', 100 + n)`.
const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}

/// `VFIO_GET_API_VERSION`.
const GET_API_VERSION: u64 = vfio_io(0);
/// `VFIO_CHECK_EXTENSION`.
const CHECK_EXTENSION: u64 = vfio_io(1);
/// `VFIO_SET_IOMMU`.
const SET_IOMMU: u64 = vfio_io(2);
/// `VFIO_GROUP_GET_STATUS`.
const GROUP_GET_STATUS: u64 = vfio_io(3);
/// `VFIO_GROUP_SET_CONTAINER`.
const GROUP_SET_CONTAINER: u64 = vfio_io(4);
/// `VFIO_GROUP_GET_DEVICE_FD`.
const GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
/// `VFIO_DEVICE_GET_INFO`.
const DEVICE_GET_INFO: u64 = vfio_io(7);
/// `VFIO_DEVICE_GET_REGION_INFO`.
const DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
/// `VFIO_DEVICE_GET_IRQ_INFO`.
const DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
/// `VFIO_DEVICE_SET_IRQS`.
const DEVICE_SET_IRQS: u64 = vfio_io(10);
/// `VFIO_DEVICE_RESET`.
const DEVICE_RESET: u64 = vfio_io(11);
/// `VFIO_IOMMU_GET_INFO`.
const IOMMU_GET_INFO: u64 = vfio_io(12);
/// `VFIO_IOMMU_MAP_DMA`.
const IOMMU_MAP_DMA: u64 = vfio_io(13);
/// `VFIO_IOMMU_UNMAP_DMA`.
const IOMMU_UNMAP_DMA: u64 = vfio_io(14);

/// `VFIO_API_VERSION`.
pub const API_VERSION: i32 = 0;
/// `VFIO_TYPE1v2_IOMMU`.
pub const TYPE1V2_IOMMU: u64 = 3;
/// `VFIO_GROUP_FLAGS_VIABLE`.
pub const GROUP_FLAGS_VIABLE: u32 = 1;
/// `VFIO_DEVICE_FLAGS_RESET`.
pub const DEVICE_FLAGS_RESET: u32 = 1;
/// `VFIO_DEVICE_FLAGS_PCI`.
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;
/// `VFIO_REGION_INFO_FLAG_READ`.
pub const REGION_FLAG_READ: u32 = 1;
/// `VFIO_REGION_INFO_FLAG_WRITE`.
pub const REGION_FLAG_WRITE: u32 = 1 << 1;
/// `VFIO_REGION_INFO_FLAG_MMAP`.
pub const REGION_FLAG_MMAP: u32 = 1 << 2;
/// `VFIO_PCI_CONFIG_REGION_INDEX`.
pub const PCI_CONFIG_REGION_INDEX: u32 = 7;
/// `VFIO_PCI_MSIX_IRQ_INDEX`.
pub const PCI_MSIX_IRQ_INDEX: u32 = 2;
/// `VFIO_IRQ_INFO_EVENTFD`: the interrupt can signal an eventfd.
pub const IRQ_INFO_EVENTFD: u32 = 1;
/// `VFIO_IRQ_SET_DATA_NONE`.
pub const IRQ_SET_DATA_NONE: u32 = 1;
/// `VFIO_IRQ_SET_DATA_EVENTFD`.
pub const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
/// `VFIO_IRQ_SET_ACTION_TRIGGER`.
pub const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
/// `VFIO_IOMMU_INFO_PGSIZES`.
pub const IOMMU_INFO_PGSIZES: u32 = 1;
/// `VFIO_IOMMU_INFO_CAPS`.
pub const IOMMU_INFO_CAPS: u32 = 1 << 1;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`.
pub const CAP_IOVA_RANGE: u16 = 1;
/// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`.
pub const CAP_DMA_AVAIL: u16 = 3;
/// `VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE`.
pub const DMA_MAP_READ_WRITE: u32 = 3;

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GroupStatus {
    /// Size of this struct.
    pub argsz: u32,
    /// `VFIO_GROUP_FLAGS_*`.
    pub flags: u32,
}

/// `struct vfio_device_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceInfo {
    /// Size of this struct.
    pub argsz: u32,
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Regions (BARs, ROM, config...).
    pub num_regions: u32,
    /// Interrupt types.
    pub num_irqs: u32,
    /// First capability.
    pub cap_offset: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RegionInfo {
    /// Size of this struct.
    pub argsz: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Region index.
    pub index: u32,
    /// First capability.
    pub cap_offset: u32,
    /// Region size in bytes.
    pub size: u64,
    /// Offset of the region in the device fd.
    pub offset: u64,
}

/// `struct vfio_irq_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IrqInfo {
    /// Size of this struct.
    pub argsz: u32,
    /// `VFIO_IRQ_INFO_*`.
    pub flags: u32,
    /// Interrupt index (`VFIO_PCI_*_IRQ_INDEX`).
    pub index: u32,
    /// Vectors of that index.
    pub count: u32,
}

/// `struct vfio_irq_set` with room for one eventfd in its `data[]`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IrqSetOne {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    fd: i32,
}

/// The size of `struct vfio_irq_set` without its data.
const IRQ_SET_HEADER: u32 = 20;

/// `struct vfio_iommu_type1_info` (followed by its capability chain).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuInfo {
    /// Size of the buffer.
    pub argsz: u32,
    /// `VFIO_IOMMU_INFO_*`.
    pub flags: u32,
    /// Bitmap of supported page sizes.
    pub iova_pgsizes: u64,
    /// Offset of the first capability from the struct's start.
    pub cap_offset: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaMap {
    /// Size of this struct.
    pub argsz: u32,
    /// `VFIO_DMA_MAP_FLAG_*`.
    pub flags: u32,
    /// Process virtual address.
    pub vaddr: u64,
    /// Device address.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaUnmap {
    /// Size of this struct.
    pub argsz: u32,
    /// Flags (none used).
    pub flags: u32,
    /// Device address.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
}

/// An ioctl without argument (or with an integer argument); returns its result or the OS error.
/// Private: only the requests wrapped below, which take an integer, go through it.
fn ioctl_val(fd: BorrowedFd<'_>, req: u64, arg: libc::c_ulong) -> std::io::Result<i32> {
    // SAFETY: every caller below passes a VFIO request that takes an integer (or nothing)
    // and touches no memory of ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Marks the `#[repr(C)]` argument structs above: plain data the kernel may read
/// and write in place.
///
/// # Safety
/// Implementors must be `#[repr(C)]` plain-old-data matching the kernel's layout.
unsafe trait IoctlArg {}
// SAFETY: all of these are #[repr(C)] copies of the uapi structs, only integers.
unsafe impl IoctlArg for GroupStatus {}
// SAFETY: as above.
unsafe impl IoctlArg for DeviceInfo {}
// SAFETY: as above.
unsafe impl IoctlArg for RegionInfo {}
// SAFETY: as above.
unsafe impl IoctlArg for DmaMap {}
// SAFETY: as above.
unsafe impl IoctlArg for DmaUnmap {}
// SAFETY: as above.
unsafe impl IoctlArg for IrqInfo {}
// SAFETY: as above (the header, then one i32: no padding).
unsafe impl IoctlArg for IrqSetOne {}
// SAFETY: a plain fd number (GROUP_SET_CONTAINER takes a pointer to an int).
unsafe impl IoctlArg for i32 {}

/// An ioctl whose argument is a pointer to `arg`, which the kernel may fill in. Private:
/// only the requests wrapped below, each with the struct it expects, go through it.
fn ioctl_ptr<T: IoctlArg>(fd: BorrowedFd<'_>, req: u64, arg: &mut T) -> std::io::Result<i32> {
    // SAFETY: `arg` is a live, exclusive, correctly laid out struct the request expects
    // (IoctlArg, and each wrapper below pairs a request with its struct); the kernel
    // writes at most size_of::<T>() bytes, as argsz says.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, std::ptr::from_mut(arg)) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The size of a uapi struct, for its `argsz` field.
fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// `VFIO_GET_API_VERSION` on the container.
pub(super) fn get_api_version(container: BorrowedFd<'_>) -> std::io::Result<i32> {
    ioctl_val(container, GET_API_VERSION, 0)
}

/// `VFIO_CHECK_EXTENSION`: whether the container supports IOMMU type `ext` (> 0: yes).
pub(super) fn check_extension(container: BorrowedFd<'_>, ext: u64) -> std::io::Result<i32> {
    ioctl_val(container, CHECK_EXTENSION, ext as libc::c_ulong)
}

/// `VFIO_SET_IOMMU`: gives the container an IOMMU of type `kind` (after a group joined it).
pub(super) fn set_iommu(container: BorrowedFd<'_>, kind: u64) -> std::io::Result<()> {
    ioctl_val(container, SET_IOMMU, kind as libc::c_ulong).map(drop)
}

/// `VFIO_IOMMU_MAP_DMA`.
pub(super) fn map_dma(container: BorrowedFd<'_>, flags: u32, vaddr: u64, iova: u64, size: u64) -> std::io::Result<()> {
    let mut m = DmaMap { argsz: argsz::<DmaMap>(), flags, vaddr, iova, size };
    ioctl_ptr(container, IOMMU_MAP_DMA, &mut m).map(drop)
}

/// `VFIO_IOMMU_UNMAP_DMA`.
pub(super) fn unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> std::io::Result<()> {
    let mut u = DmaUnmap { argsz: argsz::<DmaUnmap>(), flags: 0, iova, size };
    ioctl_ptr(container, IOMMU_UNMAP_DMA, &mut u).map(drop)
}

/// `VFIO_GROUP_GET_STATUS`: the group's `VFIO_GROUP_FLAGS_*`.
pub(super) fn group_flags(group: BorrowedFd<'_>) -> std::io::Result<u32> {
    let mut st = GroupStatus { argsz: argsz::<GroupStatus>(), flags: 0 };
    ioctl_ptr(group, GROUP_GET_STATUS, &mut st)?;
    Ok(st.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`: attaches the group to the container.
pub(super) fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut cfd = container.as_raw_fd();
    ioctl_ptr(group, GROUP_SET_CONTAINER, &mut cfd).map(drop)
}

/// `VFIO_DEVICE_GET_INFO`.
pub(super) fn device_info(device: BorrowedFd<'_>) -> std::io::Result<DeviceInfo> {
    let mut info = DeviceInfo { argsz: argsz::<DeviceInfo>(), ..Default::default() };
    ioctl_ptr(device, DEVICE_GET_INFO, &mut info)?;
    Ok(info)
}

/// `VFIO_DEVICE_GET_REGION_INFO` for region `index`.
pub(super) fn region_info(device: BorrowedFd<'_>, index: u32) -> std::io::Result<RegionInfo> {
    let mut r = RegionInfo { argsz: argsz::<RegionInfo>(), index, ..Default::default() };
    ioctl_ptr(device, DEVICE_GET_REGION_INFO, &mut r)?;
    Ok(r)
}

/// `VFIO_DEVICE_GET_IRQ_INFO` for interrupt index `index`.
pub(super) fn irq_info(device: BorrowedFd<'_>, index: u32) -> std::io::Result<IrqInfo> {
    let mut i = IrqInfo { argsz: argsz::<IrqInfo>(), index, ..Default::default() };
    ioctl_ptr(device, DEVICE_GET_IRQ_INFO, &mut i)?;
    Ok(i)
}

/// `VFIO_DEVICE_SET_IRQS`: vector `vector` of interrupt index `index` signals `fd`
/// (`DATA_EVENTFD | ACTION_TRIGGER`; for MSI-X this enables vectors 0..=vector).
pub(super) fn set_irq_eventfd(
    device: BorrowedFd<'_>,
    index: u32,
    vector: u32,
    fd: BorrowedFd<'_>,
) -> std::io::Result<()> {
    let mut s = IrqSetOne {
        argsz: argsz::<IrqSetOne>(),
        flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        index,
        start: vector,
        count: 1,
        fd: fd.as_raw_fd(),
    };
    ioctl_ptr(device, DEVICE_SET_IRQS, &mut s).map(drop)
}

/// `VFIO_DEVICE_SET_IRQS` with `DATA_NONE | ACTION_TRIGGER` and no vector: every vector
/// of interrupt index `index` off (for MSI-X: MSI-X disabled).
pub(super) fn disable_irqs(device: BorrowedFd<'_>, index: u32) -> std::io::Result<()> {
    let mut s = IrqSetOne {
        argsz: IRQ_SET_HEADER,
        flags: IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
        index,
        ..Default::default()
    };
    ioctl_ptr(device, DEVICE_SET_IRQS, &mut s).map(drop)
}

/// `VFIO_DEVICE_RESET`.
pub(super) fn device_reset(device: BorrowedFd<'_>) -> std::io::Result<()> {
    ioctl_val(device, DEVICE_RESET, 0).map(drop)
}

/// `VFIO_IOMMU_GET_INFO` into `buf`, a `vfio_iommu_type1_info` followed by room for its
/// capability chain; the caller writes the buffer's byte length as `argsz` first.
pub(super) fn iommu_get_info(container: BorrowedFd<'_>, buf: &mut [u64]) -> std::io::Result<()> {
    let argsz = buf.first().map_or(0, |w| *w as u32 as usize);
    if buf.len() * 8 < std::mem::size_of::<IommuInfo>() || argsz > buf.len() * 8 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: buf is exclusive, 8-byte aligned and at least argsz bytes long (checked
    // above); the kernel writes no more than argsz.
    let r = unsafe { libc::ioctl(container.as_raw_fd(), IOMMU_GET_INFO as _, buf.as_mut_ptr()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `VFIO_GROUP_GET_DEVICE_FD`: the argument is the device's name as a C string.
pub(super) fn get_device_fd(group: BorrowedFd<'_>, name: &std::ffi::CStr) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: name is a valid NUL-terminated string the kernel only reads.
    let r = unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD as _, name.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success the ioctl returns a new descriptor that we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r) })
}

/// The soft RLIMIT_MEMLOCK in bytes (`u64::MAX`: unlimited), which bounds the
/// memory VFIO may pin for an unprivileged process.
pub fn memlock_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct, which `r` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, std::ptr::from_mut(&mut r)) } != 0 {
        return 0;
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur
    }
}

/// A device region (a BAR) mapped into our address space; unmapped on drop.
#[derive(Debug)]
pub struct BarMap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is device memory with no thread affinity; access goes
// through volatile reads and writes of the owner.
unsafe impl Send for BarMap {}

impl BarMap {
    /// Maps `len` bytes of `fd` at `offset` (a region's offset from
    /// `VFIO_DEVICE_GET_REGION_INFO`), shared, read-write.
    pub fn map(fd: BorrowedFd<'_>, offset: u64, len: usize) -> std::io::Result<Self> {
        if len == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { base: NonNull::new(p.cast()).expect("mmap returned null"), len })
    }

    /// First byte of the mapping.
    pub fn ptr(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty, by construction.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for BarMap {
    fn drop(&mut self) {
        // SAFETY: base/len are our own mmap; the owner holds no pointer past drop.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_structs_have_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<IrqInfo>(), 16);
        assert_eq!(std::mem::size_of::<IrqSetOne>(), IRQ_SET_HEADER as usize + 4);
        assert_eq!(std::mem::offset_of!(IrqSetOne, fd), IRQ_SET_HEADER as usize);
        assert_eq!((DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS), (0x3b6d, 0x3b6e));
    }
}
