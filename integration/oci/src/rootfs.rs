// A container root for fastpath's apps: busybox-static with its applet links, static apps in
// /bin, the app user; and how to tell that a program is static (it names no ELF interpreter).
//! The busybox rootfs and its static programs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, APP_UID};

/// Where busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// How to get a static busybox.
const BUSYBOX_HOW: &str = "apt-get install busybox-static";
/// How to get static apps.
const STATIC_HOW: &str = "cargo xtask test builds them: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build \
     --release --target x86_64-unknown-linux-gnu -p fastpath-examples --target-dir target/static";

/// Whether `p` is a statically linked x86-64 executable: a 64-bit ELF file without a program
/// interpreter (no `PT_INTERP` program header), so it runs in a root with no loader.
/// `Err` if `p` cannot be read or is not a 64-bit ELF file.
pub fn is_static(p: &Path) -> Result<bool, Error> {
    let b = std::fs::read(p).map_err(Error::io("reading", p))?;
    is_static_image(&b).ok_or_else(|| Error::NotElf { path: p.to_path_buf() })
}

/// [`is_static`] on the bytes of a file; `None` if they are not a 64-bit little-endian ELF image.
fn is_static_image(b: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?) as usize);
    let phoff = usize::try_from(u64::from_le_bytes(b.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (u16_at(0x36)?, u16_at(0x38)?);
    for i in 0..phnum {
        let o = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let Some(t) = b.get(o..o.saturating_add(4)) else { break };
        if u32::from_le_bytes(t.try_into().ok()?) == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// `name` on `$PATH` (else the usual system directories), if installed.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Fails unless `p` is a static executable ([`is_static`]); `how` says how to get one.
pub fn require_static(p: &Path, how: &'static str) -> Result<(), Error> {
    if !p.is_file() {
        return Err(Error::Missing { path: p.to_path_buf(), how });
    }
    if is_static(p)? {
        Ok(())
    } else {
        Err(Error::NotStatic { path: p.to_path_buf(), how })
    }
}

/// Builds a container root at `root`: [`BUSYBOX`] with its applet links in /bin, the static
/// programs `apps` (host file, name in /bin, mode 0755), empty /proc, /dev, /sys, /tmp, /run,
/// and /etc/passwd and /etc/group with root and the app user ([`APP_UID`]).
pub fn make_rootfs(root: &Path, apps: &[(&Path, &str)]) -> Result<(), Error> {
    let busybox = Path::new(BUSYBOX);
    require_static(busybox, BUSYBOX_HOW)?;
    for (src, _) in apps {
        require_static(src, STATIC_HOW)?;
    }
    let bin = root.join("bin");
    for d in ["bin", "proc", "dev", "sys", "tmp", "run", "etc"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(Error::io("creating", &p))?;
    }
    std::fs::copy(busybox, bin.join("busybox")).map_err(Error::io("copying busybox into", &bin))?;
    let list = Command::new(busybox).arg("--list").output().map_err(Error::io("running --list of", busybox))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        let link = bin.join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(Error::io("linking", &link))?;
    }
    for (src, name) in apps {
        let dst = bin.join(name);
        std::fs::copy(src, &dst).map_err(Error::io("copying a static app to", &dst))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).map_err(Error::io("chmod 755", &dst))?;
    }
    let etc = root.join("etc");
    let users = [
        ("passwd", format!("root:x:0:0::/:/bin/sh\napp:x:{APP_UID}:{APP_UID}::/tmp:/bin/sh\n")),
        ("group", format!("root:x:0:\napp:x:{APP_UID}:\n")),
    ];
    for (file, text) in users {
        let p = etc.join(file);
        std::fs::write(&p, text).map_err(Error::io("writing", &p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF header with one program header of type `ptype`.
    fn elf(ptype: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ptype.to_le_bytes());
        b
    }

    #[test]
    fn tells_static_from_dynamic_and_not_elf() {
        assert_eq!(is_static_image(&elf(1)), Some(true), "PT_LOAD only: static");
        assert_eq!(is_static_image(&elf(3)), Some(false), "PT_INTERP: dynamic");
        assert_eq!(is_static_image(b"#!/bin/sh\n"), None);
        let mut truncated = elf(3);
        truncated.truncate(66);
        assert_eq!(is_static_image(&truncated), Some(true), "a table past the end is not read");
    }

    #[test]
    fn this_test_binary_is_an_elf_file() {
        let me = std::env::current_exe().unwrap();
        assert!(is_static(&me).is_ok(), "{}", me.display());
        assert!(matches!(is_static(Path::new("/nonexistent/x")), Err(Error::Io { .. })));
    }
}
