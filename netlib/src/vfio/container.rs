// A VFIO container (/dev/vfio/vfio): one IOMMU context, its type1v2 set-up, and the DMA
// mappings of our own memory at IOVA == VA, undone when they drop.
//! VFIO containers and DMA mappings.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::error::{ioctl_err, open_rw, VfioError};
use super::iova::{rd_u32, IommuInfo};
use super::{sys, CONTAINER_PATH};

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
        let v = sys::get_api_version(fd.as_fd()).map_err(ioctl_err(CONTAINER_PATH, "VFIO_GET_API_VERSION"))?;
        if v != sys::API_VERSION {
            return Err(VfioError::ApiVersion(v));
        }
        let ok = sys::check_extension(fd.as_fd(), sys::TYPE1V2_IOMMU)
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

    /// The container's fd.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// Sets the type1v2 IOMMU (after a group was attached) and reads its info.
    pub(super) fn set_iommu(&mut self) -> Result<(), VfioError> {
        if self.iommu_set {
            return Ok(());
        }
        sys::set_iommu(self.fd(), sys::TYPE1V2_IOMMU).map_err(ioctl_err(
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
            sys::iommu_get_info(self.fd(), &mut buf).map_err(ioctl_err(CONTAINER_PATH, "VFIO_IOMMU_GET_INFO"))?;
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
        if let Err(e) = sys::map_dma(self.fd(), sys::DMA_MAP_READ_WRITE, va, va, len) {
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
        match sys::unmap_dma(self.container.fd.as_fd(), self.iova, self.len) {
            Ok(()) => {
                self.container.mapped.fetch_sub(self.len, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("vfio: unmapping {:#x}+{:#x}: {e}", self.iova, self.len),
        }
    }
}
