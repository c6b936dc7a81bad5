// The calls into the kernel that need root (mounts, mknod, chown, prlimit, cgroupfs writes)
// behind one small trait: the real implementation, and a test double that records them.
//! System calls.

use nix::mount::MsFlags;
use std::io;
use std::path::{Path, PathBuf};

/// One `mount(2)` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Source (`none` for pseudo filesystems, a host path for binds).
    pub source: PathBuf,
    /// Mount point.
    pub target: PathBuf,
    /// Filesystem type (`None` for binds and remounts).
    pub fstype: Option<String>,
    /// Flags.
    pub flags: MsFlags,
    /// Filesystem options.
    pub data: Option<String>,
}

/// The operations the hook performs on the host. Paths are absolute host paths.
pub trait Sys {
    /// Reads a whole text file (procfs, sysfs, cgroupfs, config files).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `data` to an existing file (cgroupfs knobs).
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    /// Creates or replaces a regular file with `mode`.
    fn create_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()>;
    /// Whether `path` exists (without following a final symlink).
    fn exists(&self, path: &Path) -> bool;
    /// Whether `path` is a symlink.
    fn is_symlink(&self, path: &Path) -> bool;
    /// The target of a symlink.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// `mkdir -p` (new directories root-owned, 0755).
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates one directory owned by `uid:gid` with `mode` (an existing one is re-owned).
    fn mkdir_owned(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()>;
    /// `rm -r`; a missing path is not an error.
    fn remove_all(&self, path: &Path) -> io::Result<()>;
    /// `rmdir` (cgroup directories).
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Entries of a directory (names only).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// `mount(2)`.
    fn mount(&self, m: &Mount) -> io::Result<()>;
    /// Creates a character device node owned by `uid:gid`.
    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32, uid: u32, gid: u32) -> io::Result<()>;
    /// The (major, minor) of a device node.
    fn device_number(&self, path: &Path) -> io::Result<(u64, u64)>;
    /// RLIMIT_MEMLOCK (soft, hard) of a process; `u64::MAX` is unlimited.
    fn memlock(&self, pid: i32) -> io::Result<(u64, u64)>;
    /// Sets RLIMIT_MEMLOCK of a process.
    fn set_memlock(&self, pid: i32, soft: u64, hard: u64) -> io::Result<()>;
    /// Whether this process may raise hard rlimits (CAP_SYS_RESOURCE in its effective set).
    fn can_raise_rlimits(&self) -> bool;
    /// The start time (clock ticks since boot) of a live process; `None` when it is gone
    /// or a zombie. With the pid it identifies a process across pid reuse.
    fn start_time(&self, pid: i32) -> Option<u64>;
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSys;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Sys for RealSys {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        use std::io::Write;
        // cgroupfs wants one write(2) with the whole value, into the existing file.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(data.as_bytes())
    }

    fn create_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }

    fn is_symlink(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink())
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn mkdir_owned(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !self.is_symlink(path) => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn remove_all(&self, path: &Path) -> io::Result<()> {
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        let removed = if is_dir { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        match removed {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(path)?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect()
    }

    fn mount(&self, m: &Mount) -> io::Result<()> {
        nix::mount::mount(Some(&m.source), &m.target, m.fstype.as_deref(), m.flags, m.data.as_deref()).map_err(errno)
    }

    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        match mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(mode), makedev(major, minor)) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(errno(e)),
        }
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        nix::sys::stat::fchmodat(
            None,
            path,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(errno)
    }

    fn device_number(&self, path: &Path) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(path)?.rdev();
        Ok((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
    }

    fn memlock(&self, pid: i32) -> io::Result<(u64, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
        parse_memlock(&text).ok_or_else(|| io::Error::other(format!("/proc/{pid}/limits: no 'Max locked memory' line")))
    }

    fn set_memlock(&self, pid: i32, soft: u64, hard: u64) -> io::Result<()> {
        use rustix::process::{prlimit, Pid, Resource, Rlimit};
        let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let lim = |v: u64| if v == u64::MAX { None } else { Some(v) };
        prlimit(Some(pid), Resource::Memlock, Rlimit { current: lim(soft), maximum: lim(hard) })
            .map(|_| ())
            .map_err(io::Error::from)
    }

    fn can_raise_rlimits(&self) -> bool {
        caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap_or(false)
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        fastpath_host::ledger::process_start_time(pid)
    }
}

/// Parses the `Max locked memory` line of `/proc/PID/limits` into (soft, hard) bytes.
pub fn parse_memlock(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"))?;
    let mut f = line["Max locked memory".len()..].split_whitespace();
    let v = |s: &str| if s == "unlimited" { Some(u64::MAX) } else { s.parse().ok() };
    Some((v(f.next()?)?, v(f.next()?)?))
}

/// A test double: an in-memory filesystem and process table that records every call and
/// can be told to fail one (this crate's tests, and with the `test-utils` feature, others').
#[cfg(any(test, feature = "test-utils"))]
pub mod fake {
    use super::{Mount, Sys};
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};
    use std::io;
    use std::path::{Path, PathBuf};

    /// The recorded state of a [`FakeSys`].
    #[derive(Debug, Default)]
    pub struct FakeState {
        /// Files and their contents.
        pub files: BTreeMap<PathBuf, String>,
        /// Directories, with (mode, uid, gid).
        pub dirs: BTreeMap<PathBuf, (u32, u32, u32)>,
        /// Symlinks and their targets.
        pub links: BTreeMap<PathBuf, PathBuf>,
        /// Mounts in the order made.
        pub mounts: Vec<Mount>,
        /// Device nodes: (major, minor, mode, uid, gid).
        pub nodes: BTreeMap<PathBuf, (u64, u64, u32, u32, u32)>,
        /// RLIMIT_MEMLOCK per pid.
        pub memlock: BTreeMap<i32, (u64, u64)>,
        /// Live processes and their start times.
        pub procs: BTreeMap<i32, u64>,
        /// Every mutating call, as a line (`write PATH DATA`, `mount TARGET`, ...).
        pub log: Vec<String>,
        /// A mutating call whose log line starts with this fails with EIO.
        pub fail: Option<String>,
        /// Whether CAP_SYS_RESOURCE is held.
        pub cap_sys_resource: bool,
    }

    /// In-memory [`Sys`].
    #[derive(Debug, Default)]
    pub struct FakeSys {
        /// Everything, open for tests to set up and inspect.
        pub st: RefCell<FakeState>,
    }

    impl FakeSys {
        /// Adds a file.
        pub fn file(&self, path: &str, data: &str) -> &Self {
            let p = PathBuf::from(path);
            self.add_parents(&p);
            self.st.borrow_mut().files.insert(p, data.into());
            self
        }

        /// Adds a directory (and its parents).
        pub fn dir(&self, path: &str) -> &Self {
            let p = PathBuf::from(path);
            self.add_parents(&p);
            self.st.borrow_mut().dirs.entry(p).or_insert((0o755, 0, 0));
            self
        }

        fn add_parents(&self, p: &Path) {
            let mut st = self.st.borrow_mut();
            for a in p.ancestors().skip(1) {
                st.dirs.entry(a.to_path_buf()).or_insert((0o755, 0, 0));
            }
        }

        fn op(&self, line: String) -> io::Result<()> {
            let mut st = self.st.borrow_mut();
            let fail = st.fail.as_ref().is_some_and(|f| line.starts_with(f.as_str()));
            st.log.push(line);
            if fail {
                Err(io::Error::from_raw_os_error(5))
            } else {
                Ok(())
            }
        }

        /// The contents of a file, if it exists.
        pub fn get(&self, path: &str) -> Option<String> {
            self.st.borrow().files.get(Path::new(path)).cloned()
        }
    }

    fn not_found() -> io::Error {
        io::Error::from(io::ErrorKind::NotFound)
    }

    impl Sys for FakeSys {
        fn read(&self, path: &Path) -> io::Result<String> {
            self.st.borrow().files.get(path).cloned().ok_or_else(not_found)
        }

        fn write(&self, path: &Path, data: &str) -> io::Result<()> {
            self.op(format!("write {} {data}", path.display()))?;
            let mut st = self.st.borrow_mut();
            let f = st.files.get_mut(path).ok_or_else(not_found)?;
            *f = data.into();
            Ok(())
        }

        fn create_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
            self.op(format!("create {} {mode:o}", path.display()))?;
            let mut st = self.st.borrow_mut();
            if !path.parent().is_some_and(|p| st.dirs.contains_key(p)) {
                return Err(not_found());
            }
            st.files.insert(path.into(), String::from_utf8_lossy(data).into_owned());
            Ok(())
        }

        fn exists(&self, path: &Path) -> bool {
            let st = self.st.borrow();
            st.files.contains_key(path)
                || st.dirs.contains_key(path)
                || st.links.contains_key(path)
                || st.nodes.contains_key(path)
        }

        fn is_symlink(&self, path: &Path) -> bool {
            self.st.borrow().links.contains_key(path)
        }

        fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
            self.st.borrow().links.get(path).cloned().ok_or_else(not_found)
        }

        fn mkdir_all(&self, path: &Path) -> io::Result<()> {
            self.op(format!("mkdir {}", path.display()))?;
            let mut st = self.st.borrow_mut();
            for a in path.ancestors() {
                st.dirs.entry(a.to_path_buf()).or_insert((0o755, 0, 0));
            }
            Ok(())
        }

        fn mkdir_owned(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
            self.op(format!("mkdir-owned {} {mode:o} {uid}:{gid}", path.display()))?;
            let mut st = self.st.borrow_mut();
            if !path.parent().is_some_and(|p| st.dirs.contains_key(p)) {
                return Err(not_found());
            }
            st.dirs.insert(path.into(), (mode, uid, gid));
            Ok(())
        }

        fn remove_all(&self, path: &Path) -> io::Result<()> {
            self.op(format!("rm {}", path.display()))?;
            let mut st = self.st.borrow_mut();
            st.files.retain(|p, _| !p.starts_with(path));
            st.dirs.retain(|p, _| !p.starts_with(path));
            st.nodes.retain(|p, _| !p.starts_with(path));
            Ok(())
        }

        fn rmdir(&self, path: &Path) -> io::Result<()> {
            self.op(format!("rmdir {}", path.display()))?;
            let mut st = self.st.borrow_mut();
            if st.dirs.remove(path).is_none() {
                return Err(not_found());
            }
            st.files.retain(|p, _| !p.starts_with(path));
            Ok(())
        }

        fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
            let st = self.st.borrow();
            if !st.dirs.contains_key(path) {
                return Err(not_found());
            }
            let names: BTreeSet<String> = st
                .dirs
                .keys()
                .chain(st.files.keys())
                .filter(|p| p.parent() == Some(path))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            Ok(names.into_iter().collect())
        }

        fn mount(&self, m: &Mount) -> io::Result<()> {
            self.op(format!("mount {} {}", m.target.display(), m.fstype.as_deref().unwrap_or("bind")))?;
            self.st.borrow_mut().mounts.push(m.clone());
            Ok(())
        }

        fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
            self.op(format!("mknod {} {major}:{minor}", path.display()))?;
            self.st.borrow_mut().nodes.insert(path.into(), (major, minor, mode, uid, gid));
            Ok(())
        }

        fn device_number(&self, path: &Path) -> io::Result<(u64, u64)> {
            self.st.borrow().nodes.get(path).map(|n| (n.0, n.1)).ok_or_else(not_found)
        }

        fn memlock(&self, pid: i32) -> io::Result<(u64, u64)> {
            self.st.borrow().memlock.get(&pid).copied().ok_or_else(not_found)
        }

        fn set_memlock(&self, pid: i32, soft: u64, hard: u64) -> io::Result<()> {
            self.op(format!("memlock {pid} {soft} {hard}"))?;
            let mut st = self.st.borrow_mut();
            let cur = st.memlock.get(&pid).copied().ok_or_else(not_found)?;
            if hard > cur.1 && !st.cap_sys_resource {
                return Err(io::Error::from_raw_os_error(1));
            }
            st.memlock.insert(pid, (soft, hard));
            Ok(())
        }

        fn can_raise_rlimits(&self) -> bool {
            self.st.borrow().cap_sys_resource
        }

        fn start_time(&self, pid: i32) -> Option<u64> {
            self.st.borrow().procs.get(&pid).copied()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_line() {
        let t = "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max locked memory         8388608              unlimited            bytes\n";
        assert_eq!(parse_memlock(t), Some((8 << 20, u64::MAX)));
        assert_eq!(parse_memlock("nothing"), None);
    }

    #[test]
    fn real_remove_all_takes_files_directories_and_nothing() {
        let d = std::env::temp_dir().join(format!("fastpath-sys-rm-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        RealSys.remove_all(&d.join("f")).unwrap();
        assert!(!d.join("f").exists());
        RealSys.remove_all(&d.join("f")).unwrap();
        RealSys.remove_all(&d).unwrap();
        assert!(!d.exists());
    }

    #[test]
    fn real_sys_sees_this_process() {
        let me = std::process::id() as i32;
        assert!(RealSys.start_time(me).is_some());
        assert!(RealSys.memlock(me).is_ok());
    }
}
