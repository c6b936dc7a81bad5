// Regions of our own memory that another process can map: a hugetlbfs file, a
// MFD_HUGETLB memfd or a plain memfd, chosen (and logged) at creation.
//! Our own shareable regions.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{round_up, sys, Mapping, MemError};

/// What backs a region: this is logged, since it decides performance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A file in a hugetlbfs directory (the container's `/dev/hugepages`).
    HugetlbfsFile(PathBuf),
    /// `memfd_create(MFD_HUGETLB)`.
    MemfdHuge,
    /// A plain memfd (4 KiB pages): works everywhere, slower.
    Memfd,
    /// A file its creator made and handed over ([`Region::from_fd`]), unsealed.
    Given,
}

impl Backing {
    /// The hugetlbfs directory, for a region there.
    pub fn hugetlbfs_dir(&self) -> Option<&Path> {
        match self {
            Backing::HugetlbfsFile(p) => Some(p),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::HugetlbfsFile(p) => write!(f, "hugetlbfs file in {}", p.display()),
            Backing::MemfdHuge => f.write_str("memfd with MFD_HUGETLB"),
            Backing::Memfd => f.write_str("plain memfd (no hugepages)"),
            Backing::Given => f.write_str("a file its creator gave (unsealed)"),
        }
    }
}

static REGION_SEQ: AtomicU64 = AtomicU64::new(0);

/// A region of our own memory that another process can map: an fd plus our mapping.
#[derive(Debug)]
pub struct Region {
    fd: OwnedFd,
    map: Mapping,
    backing: Backing,
}

fn huge_page_size(dir: &Path) -> Option<u64> {
    let st = nix::sys::statfs::statfs(dir).ok()?;
    // HUGETLBFS_MAGIC
    if st.filesystem_type().0 as u64 != 0x9584_58f6 {
        return None;
    }
    Some(st.block_size() as u64)
}

fn memfd(name: &str, huge: bool) -> Result<OwnedFd, MemError> {
    let cname = CString::new(name).expect("no NUL");
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | if huge { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: cname is a valid C string; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        return Err(sys(format!("memfd_create({name}, huge={huge})")));
    }
    // SAFETY: fd is a fresh descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Region {
    /// Creates a region of at least `len` bytes: a file in `hugedir` if it is a
    /// hugetlbfs mount, else a `MFD_HUGETLB` memfd, else a plain memfd. The
    /// choice is logged. The size is rounded up to the page size.
    pub fn create(hugedir: Option<&Path>, len: u64) -> Result<Self, MemError> {
        if len == 0 || len > (1 << 40) {
            return Err(MemError::BadSize(len));
        }
        let seq = REGION_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("fastpath-{}-{seq}", std::process::id());
        if let Some(dir) = hugedir {
            if let Some(pg) = huge_page_size(dir) {
                match Self::in_hugetlbfs(dir, &name, round_up(len, pg).ok_or(MemError::BadSize(len))?) {
                    Ok(r) => return Ok(r),
                    Err(e) => tracing::warn!("hugetlbfs {} unusable ({e}); trying memfd", dir.display()),
                }
            } else {
                tracing::info!("{} is not a hugetlbfs mount; trying memfd", dir.display());
            }
        }
        let huge_len = round_up(len, 2 << 20).ok_or(MemError::BadSize(len))?;
        match memfd(&name, true).and_then(|fd| Self::with_fd(fd, huge_len, Backing::MemfdHuge)) {
            Ok(r) => {
                tracing::info!("memory: {} bytes from memfd MFD_HUGETLB", huge_len);
                return Ok(r);
            }
            Err(e) => tracing::warn!("memfd MFD_HUGETLB unusable ({e}); using plain memfd (4 KiB pages, slower)"),
        }
        let small_len = round_up(len, 4096).ok_or(MemError::BadSize(len))?;
        Self::with_fd(memfd(&name, false)?, small_len, Backing::Memfd)
    }

    fn in_hugetlbfs(dir: &Path, name: &str, len: u64) -> Result<Self, MemError> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| MemError::Sys { what: format!("create {}", path.display()), source: e })?;
        // Unlinked at once: the memory goes away with the last fd or mapping.
        let _ = std::fs::remove_file(&path);
        let r = Self::with_fd(file.into(), len, Backing::HugetlbfsFile(dir.to_path_buf()))?;
        tracing::info!("memory: {len} bytes from hugetlbfs {}", dir.display());
        Ok(r)
    }

    fn with_fd(fd: OwnedFd, len: u64, backing: Backing) -> Result<Self, MemError> {
        nix::unistd::ftruncate(&fd, len as i64)
            .map_err(|e| MemError::Sys { what: format!("ftruncate to {len} ({backing})"), source: e.into() })?;
        if matches!(backing, Backing::Memfd | Backing::MemfdHuge) {
            // The size is final: sealed, so that a backend that maps it knows it can't
            // shrink under its mapping (a hugetlbfs file can't be sealed).
            let seals = nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW;
            if let Err(e) = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_ADD_SEALS(seals)) {
                tracing::debug!("memory: could not seal the {backing} region's size: {e}");
            }
        }
        let map = Mapping::map_fd(fd.as_fd(), len as usize)?;
        Ok(Self { fd, map, backing })
    }

    /// A region over `fd`, a file the caller made (a memfd, a hugetlbfs or tmpfs file):
    /// sized to `len` bytes and mapped, and nothing sealed, so its creator can still
    /// shrink it (what a hostile tenant does to a backend that maps it; our own regions
    /// come from [`Region::create`], sealed where they can be).
    pub fn from_fd(fd: OwnedFd, len: u64) -> Result<Self, MemError> {
        if len == 0 || len > (1 << 40) {
            return Err(MemError::BadSize(len));
        }
        Self::with_fd(fd, len, Backing::Given)
    }

    /// The fd to send to a backend.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Our mapping of the region.
    pub fn map(&self) -> &Mapping {
        &self.map
    }

    /// Our mapping of the region, exclusively.
    pub fn map_mut(&mut self) -> &mut Mapping {
        &mut self.map
    }

    /// What backs it.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }
}

/// A counter of created regions (for tests that check nothing leaks).
pub fn regions_created() -> u64 {
    REGION_SEQ.load(Ordering::Relaxed)
}
