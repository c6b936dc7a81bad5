// The /dev/vfio nodes a VFIO user needs: the group node's device number (from sysfs), and
// creating the nodes and giving the group node to a user.
//! VFIO device nodes.

use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

use super::{Error, Pci, Result, VFIO_CONTAINER_DEV};

/// A device node made ready by [`Pci::prepare_nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Its path.
    pub path: PathBuf,
    /// (major, minor).
    pub dev: (u64, u64),
    /// Owner uid and gid after the call.
    pub owner: (u32, u32),
    /// Permission bits after the call.
    pub mode: u32,
    /// What was done to it (`created`, `chowned`, `chmod 0666`, ...), empty: nothing.
    pub actions: Vec<String>,
}

impl Pci {
    /// (major, minor) of `/dev/vfio/<group>`: from `class/vfio/<group>/dev`, else the node.
    pub fn group_dev(&self, group: u32) -> Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let p = self.root.join("class/vfio").join(group.to_string()).join("dev");
        if let Some(t) = Self::read_trim(&p) {
            if let Some((a, b)) = t.split_once(':') {
                if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                    return Ok((a, b));
                }
            }
        }
        let node = self.group_node(group);
        let m = std::fs::metadata(&node).map_err(|e| Error::Read {
            pci: format!("IOMMU group {group}"),
            path: p.clone(),
            msg: format!("missing, and {}: {e} (is the group's device bound to vfio-pci?)", node.display()),
        })?;
        Ok((nix::sys::stat::major(m.rdev()), nix::sys::stat::minor(m.rdev())))
    }

    /// Makes `/dev/vfio/vfio` and `/dev/vfio/<group>` usable by `owner`: creates missing
    /// nodes (from sysfs's numbers), gives the group node to `owner` with mode 0660 and
    /// makes sure the container node is 0666 (the kernel's default). Without `owner` only
    /// reports them.
    pub fn prepare_nodes(&self, group: u32, owner: Option<(u32, u32)>) -> Result<Vec<Node>> {
        let gdev = self.group_dev(group)?;
        let c = Self::node(&self.container_node(), VFIO_CONTAINER_DEV, 0o666, None, owner.is_some())?;
        let g = Self::node(&self.group_node(group), gdev, 0o660, owner, owner.is_some())?;
        Ok(vec![c, g])
    }

    fn node(path: &Path, dev: (u64, u64), mode: u32, owner: Option<(u32, u32)>, fix: bool) -> Result<Node> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let err = |what: &str| {
            let what = what.to_string();
            move |source: io::Error| Error::Node { path: path.into(), what, source }
        };
        let mut actions = Vec::new();
        if !path.exists() && fix {
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).map_err(err("creating its directory"))?;
            }
            mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(mode), makedev(dev.0, dev.1))
                .map_err(|e| io::Error::from_raw_os_error(e as i32))
                .map_err(err(&format!("mknod c {}:{}", dev.0, dev.1)))?;
            actions.push(format!("created c {}:{}", dev.0, dev.1));
        }
        let m = std::fs::metadata(path).map_err(err("stat"))?;
        if fix {
            if let Some((u, g)) = owner {
                if (m.uid(), m.gid()) != (u, g) {
                    std::os::unix::fs::chown(path, Some(u), Some(g)).map_err(err(&format!("chown {u}:{g}")))?;
                    actions.push(format!("chown {u}:{g}"));
                }
            }
            let want = if owner.is_some() { mode } else { (m.mode() & 0o777) | mode };
            if m.mode() & 0o777 != want {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))
                    .map_err(err(&format!("chmod {want:o}")))?;
                actions.push(format!("chmod {want:04o}"));
            }
        }
        let m = std::fs::metadata(path).map_err(err("stat"))?;
        Ok(Node { path: path.into(), dev, owner: (m.uid(), m.gid()), mode: m.mode() & 0o7777, actions })
    }
}
