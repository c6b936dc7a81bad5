// Where the workspace and its build outputs are, and how to run cargo on it.
// Shared by test, bench and demo so that they build and find binaries the same way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::procs::{Spawn, Stream};

/// The workspace root and its target directory.
pub struct Workspace {
    /// The directory holding the workspace `Cargo.toml`.
    pub root: PathBuf,
    /// The cargo target directory (`CARGO_TARGET_DIR` or `<root>/target`).
    pub target: PathBuf,
}

impl Workspace {
    /// Finds the workspace from where this crate was compiled.
    pub fn locate() -> Self {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest).to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let target = if target.is_absolute() { target } else { root.join(target) };
        Self { root, target }
    }

    /// The directory holding the release binaries.
    pub fn release_dir(&self) -> PathBuf {
        self.target.join("release")
    }

    /// A `cargo` command run in the workspace root, its output passed through.
    pub fn cargo(&self, args: &[&str]) -> Spawn {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        Spawn::new("cargo", cargo).args(args).current_dir(&self.root).stdout(Stream::Inherit).stderr(Stream::Inherit)
    }

    /// Builds the examples, `fastpathd`/`fastpathctl`, `fastpath-hook` and the integration
    /// helper binaries as static executables (for busybox container rootfs, the QEMU guest's
    /// initramfs and the node image, `deploy/build-image.sh`) into
    /// `<target>/static/x86_64-unknown-linux-gnu/release`.
    pub fn build_static_examples(&self) -> Result<PathBuf> {
        let dir = self.target.join("static");
        let dir_s = dir.display().to_string();
        let args = [
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "fastpath-examples",
            "-p",
            "fastpath",
            "-p",
            "fastpath-hook",
            "-p",
            "fastpath-cni",
            "-p",
            "integration",
            "--target-dir",
            dir_s.as_str(),
        ];
        eprintln!("xtask: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo {}", args.join(" "));
        let mut build = self.cargo(&args).env("RUSTFLAGS", "-C target-feature=+crt-static").spawn()?;
        match build.wait_timeout(Duration::from_secs(3 * 3600))? {
            Some(s) if s.success() => Ok(dir.join("x86_64-unknown-linux-gnu/release")),
            Some(s) => bail!("static build of the examples, fastpath, the hook, the CNI plugin and integration binaries failed ({s})"),
            None => bail!("static build of the examples, fastpath, the hook, the CNI plugin and integration binaries did not finish"),
        }
    }

    /// Runs `cargo build --release --workspace` plus `extra`, failing if the build fails.
    pub fn build_release(&self, extra: &[&str]) -> Result<()> {
        let mut args = vec!["build", "--release", "--workspace"];
        args.extend_from_slice(extra);
        eprintln!("xtask: cargo {}", args.join(" "));
        let mut build = self.cargo(&args).spawn()?;
        let status = build.wait_timeout(Duration::from_secs(3 * 3600))?;
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("cargo {} failed ({s})", args.join(" ")),
            None => bail!("cargo {} did not finish in 3 hours", args.join(" ")),
        }
    }
}
