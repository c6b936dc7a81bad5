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

pub mod sys;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use sys::BarMap;

/// `/dev/vfio/vfio`.
pub const CONTAINER_PATH: &str = "/dev/vfio/vfio";
/// PCI config space: the command register.
pub const PCI_COMMAND: u64 = 0x04;
/// PCI command: memory space enable.
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
/// PCI command: bus master enable (the device may DMA).
pub const PCI_COMMAND_MASTER: u16 = 0x4;
/// The x86 MSI window: never usable as IOVA.
pub const MSI_WINDOW: IovaRange = IovaRange { start: 0xfee0_0000, end: 0xfeef_ffff };

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
    #[error("'{0}' is not a PCI address (expected DDDD:BB:DD.F, e.g. 0000:01:10.0)")]
    BadPciAddress(String),
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

fn ioctl_err(target: impl Into<String>, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VfioError {
    let (target, what) = (target.into(), what.into());
    move |source| VfioError::Ioctl { target, what, source }
}

fn open_rw(path: &Path, what: &'static str) -> Result<File, VfioError> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|source| VfioError::Open {
        path: path.into(),
        what,
        source,
    })
}

/// Whether `s` is a full PCI address `DDDD:BB:DD.F` (hex digits; device ≤ 0x1f, function ≤ 7).
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 12 || b[4] != b':' || b[7] != b':' || b[10] != b'.' {
        return false;
    }
    let hex = |r: std::ops::Range<usize>| s[r].chars().all(|c| c.is_ascii_hexdigit());
    if !(hex(0..4) && hex(5..7) && hex(8..10)) {
        return false;
    }
    let dev = u8::from_str_radix(&s[8..10], 16).unwrap_or(0xff);
    matches!(b[11], b'0'..=b'7') && dev <= 0x1f
}

/// The IOMMU group number of PCI device `pci` (from sysfs under `sysfs_root`,
/// normally `/sys`).
pub fn iommu_group_of(sysfs_root: &Path, pci: &str) -> Result<u32, VfioError> {
    if !is_pci_address(pci) {
        return Err(VfioError::BadPciAddress(pci.into()));
    }
    let link = sysfs_root.join("bus/pci/devices").join(pci).join("iommu_group");
    let target = std::fs::read_link(&link).map_err(|source| VfioError::Open {
        path: link.clone(),
        what: "reading the IOMMU group link (no such device, or no IOMMU: boot with intel_iommu=on)",
        source,
    })?;
    target.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).ok_or_else(|| VfioError::Open {
        path: link,
        what: "the link does not end in a group number",
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })
}

/// One usable IOVA range, both ends inclusive (as VFIO reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA.
    pub end: u64,
}

impl std::fmt::Display for IovaRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end)
    }
}

/// What the type1 IOMMU told us: page sizes, usable IOVA ranges and how many
/// more mappings it takes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IommuInfo {
    /// Bitmap of page sizes the IOMMU supports.
    pub pgsizes: u64,
    /// Usable IOVA ranges (empty: the kernel did not say, and every address is tried).
    pub ranges: Vec<IovaRange>,
    /// DMA mappings still available, when the kernel says.
    pub dma_avail: Option<u32>,
}

fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

impl IommuInfo {
    /// Parses a `vfio_iommu_type1_info` buffer with its capability chain. Bad
    /// chains (offsets out of the buffer, loops) end the walk; what was read stays.
    pub fn parse(buf: &[u8]) -> Self {
        let mut info = IommuInfo::default();
        let flags = rd_u32(buf, 4).unwrap_or(0);
        if flags & sys::IOMMU_INFO_PGSIZES != 0 {
            info.pgsizes = rd_u64(buf, 8).unwrap_or(0);
        }
        if flags & sys::IOMMU_INFO_CAPS == 0 {
            return info;
        }
        let mut off = rd_u32(buf, 16).unwrap_or(0) as usize;
        let mut hops = 0;
        while off != 0 && hops < 16 {
            hops += 1;
            let (Some(id), Some(next)) = (rd_u16(buf, off), rd_u32(buf, off + 4)) else { break };
            match id {
                sys::CAP_IOVA_RANGE => {
                    let n = rd_u32(buf, off + 8).unwrap_or(0) as usize;
                    for i in 0..n.min(256) {
                        let at = off + 16 + i * 16;
                        match (rd_u64(buf, at), rd_u64(buf, at + 8)) {
                            (Some(start), Some(end)) if start <= end => info.ranges.push(IovaRange { start, end }),
                            _ => break,
                        }
                    }
                }
                sys::CAP_DMA_AVAIL => info.dma_avail = rd_u32(buf, off + 8),
                _ => {}
            }
            if next as usize <= off {
                break;
            }
            off = next as usize;
        }
        info
    }

    /// Checks that `[start, start+len)` lies inside one usable range.
    pub fn check(&self, start: u64, len: u64) -> Result<(), VfioError> {
        let bad = || VfioError::NotInIovaWindow { start, len, usable: self.describe() };
        if len == 0 {
            return Err(bad());
        }
        let last = start.checked_add(len - 1).ok_or_else(bad)?;
        let in_msi = start <= MSI_WINDOW.end && last >= MSI_WINDOW.start;
        if in_msi {
            return Err(bad());
        }
        if self.ranges.is_empty() || self.ranges.iter().any(|r| r.start <= start && last <= r.end) {
            Ok(())
        } else {
            Err(bad())
        }
    }

    fn describe(&self) -> String {
        if self.ranges.is_empty() {
            return "not reported".into();
        }
        self.ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug)]
struct ContainerFd {
    fd: OwnedFd,
    /// Bytes mapped through this container (for the RLIMIT_MEMLOCK message).
    mapped: AtomicU64,
}

/// A VFIO container (`/dev/vfio/vfio`): one IOMMU context.
#[derive(Debug)]
pub struct Container {
    inner: Arc<ContainerFd>,
    iommu_set: bool,
    info: IommuInfo,
}

impl Container {
    /// Opens `/dev/vfio/vfio` and checks the API version and type1v2 support.
    pub fn open() -> Result<Self, VfioError> {
        let f = open_rw(Path::new(CONTAINER_PATH), "opening the VFIO container")?;
        let fd: OwnedFd = f.into();
        let v = sys::ioctl_val(fd.as_fd(), sys::GET_API_VERSION, 0)
            .map_err(ioctl_err(CONTAINER_PATH, "VFIO_GET_API_VERSION"))?;
        if v != sys::API_VERSION {
            return Err(VfioError::ApiVersion(v));
        }
        let ok = sys::ioctl_val(fd.as_fd(), sys::CHECK_EXTENSION, sys::TYPE1V2_IOMMU as libc::c_ulong)
            .map_err(ioctl_err(CONTAINER_PATH, "VFIO_CHECK_EXTENSION(TYPE1v2)"))?;
        if ok <= 0 {
            return Err(VfioError::NoType1v2);
        }
        Ok(Self {
            inner: Arc::new(ContainerFd { fd, mapped: AtomicU64::new(0) }),
            iommu_set: false,
            info: IommuInfo::default(),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// Sets the type1v2 IOMMU (after a group was attached) and reads its info.
    fn set_iommu(&mut self) -> Result<(), VfioError> {
        if self.iommu_set {
            return Ok(());
        }
        sys::ioctl_val(self.fd(), sys::SET_IOMMU, sys::TYPE1V2_IOMMU as libc::c_ulong).map_err(ioctl_err(
            CONTAINER_PATH,
            "VFIO_SET_IOMMU(TYPE1v2) (EPERM: no interrupt remapping; boot the IOMMU with interrupt remapping on)",
        ))?;
        self.iommu_set = true;
        self.info = self.read_info()?;
        tracing::info!(
            "vfio: IOMMU page sizes {:#x}, usable IOVA {}, {} mappings available",
            self.info.pgsizes,
            self.info.describe(),
            self.info.dma_avail.map_or_else(|| "?".into(), |n| n.to_string())
        );
        Ok(())
    }

    fn read_info(&self) -> Result<IommuInfo, VfioError> {
        let mut words = 8usize; // 64 bytes: the fixed part and room for a short chain
        for _ in 0..4 {
            let mut buf = vec![0u64; words];
            buf[0] = (words * 8) as u64; // argsz (low half), flags 0
            sys::ioctl_buf(self.fd(), sys::IOMMU_GET_INFO, &mut buf)
                .map_err(ioctl_err(CONTAINER_PATH, "VFIO_IOMMU_GET_INFO"))?;
            let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
            let need = rd_u32(&bytes, 0).unwrap_or(0) as usize;
            if need <= words * 8 {
                return Ok(IommuInfo::parse(&bytes));
            }
            words = need.div_ceil(8);
        }
        Ok(IommuInfo::default())
    }

    /// What the IOMMU reported (after a group was attached).
    pub fn iommu_info(&self) -> &IommuInfo {
        &self.info
    }

    /// Maps `[va, va+len)` of our memory for device DMA, readable and writable by
    /// the device, at IOVA == VA. Refuses memory outside the usable IOVA ranges.
    /// The caller keeps the memory mapped for as long as the returned mapping lives.
    pub fn map_dma(&self, va: u64, len: u64) -> Result<DmaMapping, VfioError> {
        self.info.check(va, len)?;
        let mut m = sys::DmaMap {
            argsz: std::mem::size_of::<sys::DmaMap>() as u32,
            flags: sys::DMA_MAP_READ_WRITE,
            vaddr: va,
            iova: va,
            size: len,
        };
        if let Err(e) = sys::ioctl_ptr(self.fd(), sys::IOMMU_MAP_DMA, &mut m) {
            let mapped = self.inner.mapped.load(Ordering::Relaxed);
            return Err(if e.raw_os_error() == Some(libc::ENOMEM) {
                VfioError::Memlock { start: va, len, mapped, limit: sys::memlock_limit() }
            } else {
                ioctl_err(CONTAINER_PATH, format!("VFIO_IOMMU_MAP_DMA {va:#x}+{len:#x}"))(e)
            });
        }
        self.inner.mapped.fetch_add(len, Ordering::Relaxed);
        tracing::debug!("vfio: mapped {va:#x}+{len:#x} at IOVA == VA");
        Ok(DmaMapping { container: Arc::clone(&self.inner), iova: va, len })
    }
}

/// One DMA mapping; unmapped on drop.
#[derive(Debug)]
pub struct DmaMapping {
    container: Arc<ContainerFd>,
    iova: u64,
    len: u64,
}

impl DmaMapping {
    /// First IOVA (== VA).
    pub fn iova(&self) -> u64 {
        self.iova
    }
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether `[addr, addr+len)` is inside this mapping.
    #[inline]
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.iova && addr.checked_add(len).is_some_and(|e| e <= self.iova + self.len)
    }
}

impl Drop for DmaMapping {
    fn drop(&mut self) {
        let mut u = sys::DmaUnmap {
            argsz: std::mem::size_of::<sys::DmaUnmap>() as u32,
            flags: 0,
            iova: self.iova,
            size: self.len,
        };
        match sys::ioctl_ptr(self.container.fd.as_fd(), sys::IOMMU_UNMAP_DMA, &mut u) {
            Ok(_) => {
                self.container.mapped.fetch_sub(self.len, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("vfio: unmapping {:#x}+{:#x}: {e}", self.iova, self.len),
        }
    }
}

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
        let mut st = sys::GroupStatus { argsz: std::mem::size_of::<sys::GroupStatus>() as u32, flags: 0 };
        sys::ioctl_ptr(fd.as_fd(), sys::GROUP_GET_STATUS, &mut st)
            .map_err(ioctl_err(target.clone(), "VFIO_GROUP_GET_STATUS"))?;
        if st.flags & sys::GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::NotViable(number));
        }
        let mut cfd = std::os::fd::AsRawFd::as_raw_fd(&container.inner.fd);
        sys::ioctl_ptr(fd.as_fd(), sys::GROUP_SET_CONTAINER, &mut cfd)
            .map_err(ioctl_err(target, "VFIO_GROUP_SET_CONTAINER"))?;
        container.set_iommu()?;
        Ok(Self { fd, number })
    }

    /// The group number.
    pub fn number(&self) -> u32 {
        self.number
    }
}

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
        if !is_pci_address(pci) {
            return Err(VfioError::BadPciAddress(pci.into()));
        }
        let name = CString::new(pci).expect("checked: no NUL");
        let fd = sys::get_device_fd(group.fd.as_fd(), &name)
            .map_err(ioctl_err(format!("/dev/vfio/{} {pci}", group.number), "VFIO_GROUP_GET_DEVICE_FD"))?;
        let mut info = sys::DeviceInfo { argsz: std::mem::size_of::<sys::DeviceInfo>() as u32, ..Default::default() };
        sys::ioctl_ptr(fd.as_fd(), sys::DEVICE_GET_INFO, &mut info).map_err(ioctl_err(pci, "VFIO_DEVICE_GET_INFO"))?;
        if info.flags & sys::DEVICE_FLAGS_PCI == 0 {
            return Err(VfioError::Region { pci: pci.into(), index: 0, why: "not a PCI device".into() });
        }
        Ok(Self { file: fd.into(), pci: pci.into(), flags: info.flags, num_regions: info.num_regions })
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
        let mut r =
            sys::RegionInfo { argsz: std::mem::size_of::<sys::RegionInfo>() as u32, index, ..Default::default() };
        sys::ioctl_ptr(self.file.as_fd(), sys::DEVICE_GET_REGION_INFO, &mut r)
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

    /// Resets the function (`VFIO_DEVICE_RESET`), when the device can.
    pub fn reset(&self) -> Result<(), VfioError> {
        if self.flags & sys::DEVICE_FLAGS_RESET == 0 {
            return Err(VfioError::Region {
                pci: self.pci.clone(),
                index: 0,
                why: "the device cannot be reset".into(),
            });
        }
        sys::ioctl_val(self.file.as_fd(), sys::DEVICE_RESET, 0)
            .map_err(ioctl_err(self.pci.clone(), "VFIO_DEVICE_RESET"))?;
        Ok(())
    }
}

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
    /// Opens PCI device `pci`: a new container, its group (from sysfs) and the device.
    pub fn open(pci: &str) -> Result<Self, VfioError> {
        let number = iommu_group_of(Path::new("/sys"), pci)?;
        let mut container = Container::open()?;
        let group = Group::open(number, &mut container)?;
        let device = Device::open(&group, pci)?;
        Ok(Self { device, group, container })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> IommuInfo {
        IommuInfo {
            pgsizes: 0x4020_1000,
            ranges: vec![
                IovaRange { start: 0, end: 0xfedf_ffff },
                IovaRange { start: 0xfef0_0000, end: 0xffff_ffff_ffff },
            ],
            dma_avail: Some(65535),
        }
    }

    #[test]
    fn iova_check_accepts_usable_and_refuses_holes() {
        let i = ranges();
        i.check(0x7f00_0000_0000, 1 << 21).unwrap();
        i.check(0x4c_9000, 4096).unwrap();
        // Ends exactly at the last usable byte.
        i.check(0xffff_ffff_f000, 0x1000).unwrap();
        // One byte too far.
        assert!(i.check(0xffff_ffff_f000, 0x1001).is_err());
        // Inside, straddling and touching the MSI window.
        assert!(i.check(0xfee0_1000, 4096).is_err());
        assert!(i.check(0xfedf_f000, 0x2000).is_err());
        assert!(i.check(0xfeef_f000, 0x1000).is_err());
        i.check(0xfef0_0000, 0x1000).unwrap();
        assert!(i.check(0x1000, 0).is_err());
        assert!(i.check(u64::MAX - 10, 100).is_err());
        // Nothing reported: everything but the MSI window is tried.
        let none = IommuInfo::default();
        none.check(0x1000, 0x1000).unwrap();
        assert!(none.check(0xfee0_0000, 4).is_err());
    }

    #[test]
    fn iova_error_names_range_and_windows() {
        let e = ranges().check(0xfee0_0000, 0x2000).unwrap_err().to_string();
        assert!(e.contains("0xfee00000-0xfee01fff"), "{e}");
        assert!(e.contains("0x0-0xfedfffff, 0xfef00000-0xffffffffffff"), "{e}");
        assert!(e.contains("MSI window 0xfee00000-0xfeefffff"), "{e}");
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(b: &mut [u8], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn parses_iommu_info_caps() {
        let mut b = vec![0u8; 96];
        put32(&mut b, 0, 96);
        put32(&mut b, 4, sys::IOMMU_INFO_PGSIZES | sys::IOMMU_INFO_CAPS);
        put64(&mut b, 8, 0x4020_1000);
        put32(&mut b, 16, 24);
        // IOVA range cap at 24: header (id 1, version 1, next 72), nr 2, reserved, 2 ranges.
        b[24..26].copy_from_slice(&sys::CAP_IOVA_RANGE.to_le_bytes());
        put32(&mut b, 28, 72);
        put32(&mut b, 32, 2);
        put64(&mut b, 40, 0);
        put64(&mut b, 48, 0xfedf_ffff);
        put64(&mut b, 56, 0xfef0_0000);
        put64(&mut b, 64, 0xffff_ffff_ffff);
        // DMA avail cap at 72, last.
        b[72..74].copy_from_slice(&sys::CAP_DMA_AVAIL.to_le_bytes());
        put32(&mut b, 76, 0);
        put32(&mut b, 80, 65535);
        assert_eq!(IommuInfo::parse(&b), ranges());
        // A chain pointing outside the buffer or backwards stops the walk.
        put32(&mut b, 28, 10_000);
        assert_eq!(IommuInfo::parse(&b).ranges.len(), 2);
        put32(&mut b, 28, 8);
        assert_eq!(IommuInfo::parse(&b).dma_avail, None);
    }

    #[test]
    fn memlock_error_says_what_to_raise() {
        let e =
            VfioError::Memlock { start: 0x7f00_0000_0000, len: 0x22_0000, mapped: 0x1000, limit: 1 << 20 }.to_string();
        assert!(e.contains("VFIO_IOMMU_MAP_DMA 0x7f0000000000+0x220000"), "{e}");
        assert!(e.contains("RLIMIT_MEMLOCK is 1048576 bytes, 4096 bytes are mapped already"), "{e}");
        assert!(e.contains("at least 2232320 bytes"), "{e}");
        assert!(sys::memlock_limit() > 0);
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:01:10.0"));
        assert!(is_pci_address("0000:81:1f.7"));
        for bad in ["0000:01:10", "01:10.0", "0000:01:20.0", "0000:01:10.8", "000g:01:10.0", "0000-01:10.0"] {
            assert!(!is_pci_address(bad), "{bad}");
        }
        let e = iommu_group_of(Path::new("/nonexistent"), "0000:01:10.0").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/bus/pci/devices/0000:01:10.0/iommu_group"), "{e}");
        let e = iommu_group_of(Path::new("/sys"), "bogus").unwrap_err().to_string();
        assert!(e.contains("'bogus' is not a PCI address"), "{e}");
    }
}
