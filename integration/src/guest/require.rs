// Finding what a guest test needs: QEMU (>= 8.0), the guest kernel folder, static busybox
// and our static binaries (`require_guest`, `GuestPeers`).

use std::path::{Path, PathBuf};

use fastpath_oci::{is_static, BUSYBOX};

use super::{DEFAULT_KERNEL_DIR, QEMU};
use crate::{skip_or_fail, static_bin_dir};

// ---------------------------------------------------------------------------
// Finding QEMU and the kernel.

/// The guest kernel folder: `$FASTPATH_GUEST_KERNEL_DIR`, else [`DEFAULT_KERNEL_DIR`]. It
/// holds `vmlinuz`, `modules/NAME.ko` and `load-order` (module names, dependencies first).
pub fn kernel_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_GUEST_KERNEL_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_KERNEL_DIR),
    }
}

fn qemu_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FASTPATH_QEMU").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(QEMU)).find(|p| p.is_file())
}

/// `QEMU --version` as (major, minor).
fn qemu_version(qemu: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(qemu).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut n = v.split('.').map(|x| x.parse::<u32>().ok());
    Some((n.next()??, n.next()??))
}

/// What a guest test found: QEMU, the guest kernel folder, busybox and the static binaries.
#[derive(Debug, Clone)]
pub struct GuestPeers {
    qemu: PathBuf,
    kernel: PathBuf,
    bins: PathBuf,
}

impl GuestPeers {
    /// Path of one of our static binaries.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// The guest kernel folder.
    pub fn kernel_dir(&self) -> &Path {
        &self.kernel
    }

    /// The QEMU binary.
    pub fn qemu(&self) -> &Path {
        &self.qemu
    }
}

/// Finds QEMU (>= 8.0, for igb SR-IOV), the guest kernel ([`kernel_dir`]), static busybox
/// and our static binaries `bins` (in [`static_bin_dir`]). When something is missing: panics
/// if `FASTPATH_REQUIRE_PEERS=1`, else prints a loud SKIPPED line and returns `None`.
pub fn require_guest(test: &str, bins: &[&str]) -> Option<GuestPeers> {
    let mut missing = Vec::new();
    let qemu = qemu_path();
    match &qemu {
        None => missing.push(format!("{QEMU} not found in PATH or $FASTPATH_QEMU (cargo xtask setup)")),
        Some(q) => match qemu_version(q) {
            Some(v) if v >= (8, 0) => {}
            v => missing.push(format!(
                "{} is version {}, igb SR-IOV needs >= 8.0 (cargo xtask setup: bookworm-backports)",
                q.display(),
                v.map_or_else(|| "unknown".to_string(), |(a, b)| format!("{a}.{b}"))
            )),
        },
    }
    let kernel = kernel_dir();
    for f in ["vmlinuz", "load-order"] {
        if !kernel.join(f).is_file() {
            missing.push(format!(
                "guest kernel: no {} (cargo xtask setup, or set FASTPATH_GUEST_KERNEL_DIR)",
                kernel.join(f).display()
            ));
        }
    }
    match is_static(Path::new(BUSYBOX)) {
        Ok(true) => {}
        Ok(false) => missing.push(format!("{BUSYBOX} is not static (apt-get install busybox-static)")),
        Err(e) => missing.push(format!("{e} (apt-get install busybox-static)")),
    }
    let dir = static_bin_dir();
    for b in bins {
        let p = dir.join(b);
        match is_static(&p) {
            Ok(true) => {}
            Ok(false) => missing.push(format!("{} is not a static executable", p.display())),
            Err(_) => missing.push(format!(
                "static {b} not found in {} (cargo xtask test builds it; or RUSTFLAGS=\"-C target-feature=+crt-static\" \
                 cargo build --release --target x86_64-unknown-linux-gnu --target-dir target/static, and set \
                 FASTPATH_STATIC_BIN_DIR)",
                dir.display()
            )),
        }
    }
    if let (true, Some(qemu)) = (missing.is_empty(), qemu) {
        return Some(GuestPeers { qemu, kernel, bins: dir });
    }
    skip_or_fail(test, &missing.join("; "));
    None
}
