// The createContainer stage's work, in the container's mount namespace before pivot_root:
// its own hugetlbfs, /run/fastpath (config.json and the socket directory), the library, VF nodes.
//! Container mounts.

use crate::devices;
use crate::hugetlb;
use crate::ledger::Entry;
use crate::sys::{Mount, Sys};
use crate::{error::io, Error, Result};
use nix::mount::MsFlags;
use std::path::{Component, Path, PathBuf};

/// Where the hugetlbfs goes inside the container.
pub const HUGEPAGES_DIR: &str = "/dev/hugepages";
/// The fastpath directory inside the container (a small read-only tmpfs).
pub const RUN_DIR: &str = "/run/fastpath";
/// The socket directory inside the container.
pub const SOCK_DIR: &str = "/run/fastpath/sock";
/// Where libfastpath_net is mounted inside the container.
pub const LIB_DIR: &str = "/usr/local/lib/fastpath";

/// The host path of container path `inside` under `rootfs`, refusing to follow a symlink on
/// the way (an image could point `/run` at a host directory: before pivot_root it resolves
/// on the host).
pub fn in_rootfs(sys: &dyn Sys, rootfs: &Path, inside: &str) -> Result<PathBuf> {
    let mut cur = rootfs.to_path_buf();
    for c in Path::new(inside).components() {
        match c {
            Component::Normal(n) => cur.push(n),
            Component::RootDir | Component::CurDir => continue,
            _ => return Err(Error::Refused(format!("{inside}: '..' is not allowed in a container path"))),
        }
        if sys.is_symlink(&cur) {
            return Err(Error::Refused(format!(
                "{inside}: {} is a symlink in the container's rootfs; refusing to mount through it",
                cur.display()
            )));
        }
    }
    Ok(cur)
}

fn mount(
    sys: &dyn Sys,
    source: &Path,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let m = Mount {
        source: source.into(),
        target: target.into(),
        fstype: fstype.map(String::from),
        flags,
        data: data.map(String::from),
    };
    sys.mount(&m).map_err(io(format!(
        "mounting {} on {} ({}{})",
        source.display(),
        target.display(),
        fstype.unwrap_or("bind"),
        data.map(|d| format!(" {d}")).unwrap_or_default()
    )))
}

/// Makes every mount and node the ledger entry calls for under `rootfs`.
pub fn apply(sys: &dyn Sys, rootfs: &Path, e: &Entry, lib_dir: &Path) -> Result<()> {
    let safe = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Some(h) = e.hugepages {
        let t = in_rootfs(sys, rootfs, HUGEPAGES_DIR)?;
        sys.mkdir_all(&t).map_err(io(format!("creating {}", t.display())))?;
        let opts = hugetlb::mount_options(h.page_size, h.bytes, e.uid, e.gid);
        mount(sys, Path::new("hugetlbfs"), &t, Some("hugetlbfs"), safe, Some(&opts))?;
    }
    let run = in_rootfs(sys, rootfs, RUN_DIR)?;
    sys.mkdir_all(&run).map_err(io(format!("creating {}", run.display())))?;
    let tmpfs_opts = "size=1m,mode=0755";
    mount(sys, Path::new("fastpath"), &run, Some("tmpfs"), safe | MsFlags::MS_NOEXEC, Some(tmpfs_opts))?;
    let text = serde_json::to_string_pretty(&e.config).map_err(|x| Error::Oci(x.to_string()))?;
    let cfg_path = run.join("config.json");
    sys.create_file(&cfg_path, text.as_bytes(), 0o444).map_err(io(format!("writing {}", cfg_path.display())))?;
    if let Some(dir) = &e.sock_dir {
        let t = run.join("sock");
        sys.mkdir_all(&t).map_err(io(format!("creating {}", t.display())))?;
        mount(sys, dir, &t, None, MsFlags::MS_BIND, None)?;
        mount(
            sys,
            Path::new("none"),
            &t,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | safe | MsFlags::MS_NOEXEC,
            None,
        )?;
    }
    // The tmpfs itself read-only: the app cannot rewrite what it was given.
    mount(
        sys,
        Path::new("fastpath"),
        &run,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | safe | MsFlags::MS_NOEXEC,
        Some(tmpfs_opts),
    )?;
    if e.inject {
        let t = in_rootfs(sys, rootfs, LIB_DIR)?;
        sys.mkdir_all(&t).map_err(io(format!("creating {}", t.display())))?;
        mount(sys, lib_dir, &t, None, MsFlags::MS_BIND, None)?;
        mount(
            sys,
            Path::new("none"),
            &t,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | safe,
            None,
        )?;
    }
    for (inside, major, minor) in devices::nodes(&e.vfs) {
        let t = in_rootfs(sys, rootfs, &inside.to_string_lossy())?;
        if let Some(p) = t.parent() {
            sys.mkdir_all(p).map_err(io(format!("creating {}", p.display())))?;
        }
        sys.mknod_char(&t, major, minor, 0o600, e.uid, e.gid)
            .map_err(io(format!("creating device node {}", t.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    #[test]
    fn symlinks_in_the_rootfs_are_refused() {
        let s = FakeSys::default();
        s.dir("/b/rootfs/dev");
        s.st.borrow_mut().links.insert("/b/rootfs/run".into(), "/etc".into());
        assert_eq!(
            in_rootfs(&s, Path::new("/b/rootfs"), "/dev/hugepages").unwrap(),
            PathBuf::from("/b/rootfs/dev/hugepages")
        );
        let e = in_rootfs(&s, Path::new("/b/rootfs"), RUN_DIR).unwrap_err().to_string();
        assert!(e.contains("/b/rootfs/run is a symlink"), "{e}");
        assert!(in_rootfs(&s, Path::new("/b/rootfs"), "/dev/../etc").is_err());
    }
}
