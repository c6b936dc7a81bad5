// `cargo xtask package`: the Debian package, target/deb/fastpath_VERSION_amd64.deb, assembled
// from the static builds and deploy/deb/ (units, conffiles, maintainer scripts) by dpkg-deb.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::procs::{self, Spawn};
use crate::workspace::Workspace;

/// Arguments of `cargo xtask package`.
#[derive(Args)]
pub struct PackageArgs {
    /// Skip the builds: use the binaries already in target/static and target/release.
    #[arg(long)]
    pub no_build: bool,
}

/// Where a file of the package comes from.
#[derive(Clone, Copy)]
enum Origin {
    /// The static build (`<target>/static/x86_64-unknown-linux-gnu/release`).
    Static,
    /// The host's release build (`<target>/release`): the C library.
    Release,
    /// The workspace (a path relative to its root).
    Source,
    /// A systemd unit in the workspace, written for binaries in /usr/local/bin (a manual
    /// install): the package's are in /usr/bin.
    Unit,
}

/// Every file of the package: where it comes from, its path in the package, its mode.
/// The podman hooks.d files are written by the packaged hook itself ([`hooks_d`]).
const FILES: &[(Origin, &str, &str, u32)] = &[
    (Origin::Static, "fastpathd", "usr/bin/fastpathd", 0o755),
    (Origin::Static, "fastpathctl", "usr/bin/fastpathctl", 0o755),
    (Origin::Static, "fastpath-hook", "usr/bin/fastpath-hook", 0o755),
    // Where Debian's containernetworking-plugins keep CNI plugins.
    (Origin::Static, "fastpath-cni", "usr/lib/cni/fastpath-cni", 0o755),
    (Origin::Release, "libfastpath_net.so", "usr/lib/x86_64-linux-gnu/libfastpath_net.so", 0o644),
    (Origin::Release, "libfastpath_net.a", "usr/lib/x86_64-linux-gnu/libfastpath_net.a", 0o644),
    (Origin::Source, "netlib/ffi/include/fastpath_net.h", "usr/include/fastpath_net.h", 0o644),
    // hook.toml's lib_dir: what fastpath.io/inject mounts into a container (a directory of
    // its own, so that a container sees these two files and not the host's library directory).
    (Origin::Release, "libfastpath_net.so", "usr/lib/fastpath/libfastpath_net.so", 0o644),
    (Origin::Source, "netlib/ffi/include/fastpath_net.h", "usr/lib/fastpath/fastpath_net.h", 0o644),
    (Origin::Unit, "fastpath/dist/fastpathd.service", "lib/systemd/system/fastpathd.service", 0o644),
    (Origin::Unit, "deploy/deb/fastpath-gc.service", "lib/systemd/system/fastpath-gc.service", 0o644),
    (Origin::Source, "deploy/deb/hook.toml", "etc/fastpath/hook.toml", 0o644),
    (Origin::Source, "deploy/deb/fastpathd.toml", "etc/fastpath/fastpathd.toml", 0o644),
    (Origin::Source, "deploy/deb/copyright", "usr/share/doc/fastpath/copyright", 0o644),
    (Origin::Source, "deploy/deb/postinst", "DEBIAN/postinst", 0o755),
    (Origin::Source, "deploy/deb/prerm", "DEBIAN/prerm", 0o755),
    (Origin::Source, "deploy/deb/postrm", "DEBIAN/postrm", 0o755),
];

/// Where podman and CRI-O read hooks.d files shipped by packages.
const HOOKS_D: &str = "usr/share/containers/oci/hooks.d";
/// The package's architecture (the static builds are x86_64).
const ARCH: &str = "amd64";

/// Builds (unless `--no-build`) and packages; prints the .deb's path.
pub fn run(ws: &Workspace, args: &PackageArgs) -> Result<()> {
    let static_dir = if args.no_build {
        ws.target.join("static/x86_64-unknown-linux-gnu/release")
    } else {
        let dir = ws.build_static_examples()?;
        procs::run(ws.cargo(&["build", "--release", "-p", "fastpath-net"]), Duration::from_secs(3 * 3600))?;
        dir
    };
    let deb = build(ws, &static_dir)?;
    println!("{}", deb.display());
    Ok(())
}

/// The package's path: `<target>/deb/fastpath_VERSION_amd64.deb`.
pub fn deb_path(ws: &Workspace) -> PathBuf {
    ws.target.join("deb").join(format!("fastpath_{}_{ARCH}.deb", env!("CARGO_PKG_VERSION")))
}

/// Assembles the package tree from `static_dir` and the release build, and runs dpkg-deb.
pub fn build(ws: &Workspace, static_dir: &Path) -> Result<PathBuf> {
    for tool in ["dpkg-deb", "dpkg-shlibdeps", "strip", "md5sum", "gzip", "date"] {
        if fastpath_oci::which(tool).is_none() {
            bail!("{tool} is not installed (apt-get install dpkg-dev binutils gzip coreutils)");
        }
    }
    let out = deb_path(ws);
    // <stage>/debian/fastpath is the package's root, as dpkg-shlibdeps expects it.
    let stage = ws.target.join("deb/stage");
    let _ = fs::remove_dir_all(&stage);
    let root = stage.join("debian/fastpath");
    for (from, src, dst, mode) in FILES {
        match from {
            Origin::Static => install(&static_dir.join(src), &root, dst, *mode)?,
            Origin::Release => install(&ws.release_dir().join(src), &root, dst, *mode)?,
            Origin::Source => install(&ws.root.join(src), &root, dst, *mode)?,
            Origin::Unit => write(&root, dst, &unit(&ws.root.join(src))?, *mode)?,
        }
    }
    strip(&root)?;
    changelog(ws, &root)?;
    hooks_d(&root)?;
    let conffiles =
        FILES.iter().filter(|(_, _, dst, _)| dst.starts_with("etc/")).map(|(_, _, dst, _)| format!("/{dst}\n"));
    write(&root, "DEBIAN/conffiles", &conffiles.collect::<String>(), 0o644)?;
    write(&root, "DEBIAN/md5sums", &md5sums(&root)?, 0o644)?;
    let control = fs::read_to_string(ws.root.join("deploy/deb/control"))
        .context("reading deploy/deb/control")?
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@DEPENDS@", &depends(&stage, &elves(&root))?)
        .replace("@INSTALLED_SIZE@", &installed_kib(&root)?.to_string());
    write(&root, "DEBIAN/control", &control, 0o644)?;
    procs::run(
        Spawn::new("dpkg-deb", "dpkg-deb").args(["--build", "--root-owner-group", "-Zxz"]).args([&root, &out]),
        Duration::from_secs(600),
    )?;
    Ok(out)
}

/// The package's ELF files: executables and libraries.
fn elves(root: &Path) -> Vec<PathBuf> {
    FILES
        .iter()
        .filter(|(from, ..)| matches!(from, Origin::Static | Origin::Release))
        .map(|(_, _, dst, _)| root.join(dst))
        .collect()
}

/// Strips the ELF files as Debian's dh_strip does (the debug info would go to a -dbgsym
/// package): executables and shared libraries to what they need to run, archives of their
/// debug info only.
fn strip(root: &Path) -> Result<()> {
    let (archives, rest): (Vec<PathBuf>, Vec<PathBuf>) =
        elves(root).into_iter().partition(|p| p.extension().is_some_and(|e| e == "a"));
    let common = ["--remove-section=.comment", "--remove-section=.note"];
    for (how, files) in [("--strip-unneeded", rest), ("--strip-debug", archives)] {
        let mut spawn = Spawn::new("strip", "strip").args([how]).args(common).args(&files);
        if how == "--strip-debug" {
            spawn = spawn.args(["--enable-deterministic-archives"]);
        }
        procs::run(spawn, Duration::from_secs(300))?;
    }
    Ok(())
}

/// usr/share/doc/fastpath/changelog.gz: deploy/deb/changelog with the version and today's
/// date (RFC 2822, as dpkg-parsechangelog reads it), `gzip -9n` as Debian's tools compress it.
fn changelog(ws: &Workspace, root: &Path) -> Result<()> {
    let date = procs::run(Spawn::new("date", "date").args(["-R", "-u"]), Duration::from_secs(10))?.stdout_lines();
    let Some(date) = date.first() else { bail!("date -R printed nothing") };
    let text = fs::read_to_string(ws.root.join("deploy/deb/changelog"))
        .context("reading deploy/deb/changelog")?
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@DATE@", date);
    let rel = "usr/share/doc/fastpath/changelog";
    write(root, rel, &text, 0o644)?;
    procs::run(Spawn::new("gzip", "gzip").args(["-9n"]).args([root.join(rel)]), Duration::from_secs(60))?;
    Ok(())
}

/// Copies `src` to `<root>/<dst>` (parents made 0755) with `mode`.
fn install(src: &Path, root: &Path, dst: &str, mode: u32) -> Result<()> {
    if !src.is_file() {
        bail!("{} is missing (cargo xtask package builds it; --no-build uses what is there)", src.display());
    }
    mkdirs(root, dst)?;
    let to = root.join(dst);
    fs::copy(src, &to).with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
    chmod(&to, mode)
}

/// The unit file `src` for the package: its /usr/local/bin paths made /usr/bin.
fn unit(src: &Path) -> Result<String> {
    let text = fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    Ok(text.replace("/usr/local/bin/", "/usr/bin/"))
}

/// Writes `text` to `<root>/<dst>` (parents made 0755) with `mode`.
fn write(root: &Path, dst: &str, text: &str, mode: u32) -> Result<()> {
    mkdirs(root, dst)?;
    let to = root.join(dst);
    fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
    chmod(&to, mode)
}

/// Makes the parents of `<root>/<rel>`, each of those under `root` 0755 whatever the umask.
fn mkdirs(root: &Path, rel: &str) -> Result<()> {
    let Some(parent) = Path::new(rel).parent() else { return Ok(()) };
    let dir = root.join(parent);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for d in parent.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        chmod(&root.join(d), 0o755)?;
    }
    Ok(())
}

/// Sets `p`'s mode.
fn chmod(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {mode:o} {}", p.display()))
}

/// The podman/CRI-O hooks.d files, written by the packaged hook (`fastpath-hook install`) so
/// that they are the ones it would write itself, naming /usr/bin/fastpath-hook and its
/// default config, /etc/fastpath/hook.toml.
fn hooks_d(root: &Path) -> Result<()> {
    mkdirs(root, &format!("{HOOKS_D}/x"))?;
    let dir = root.join(HOOKS_D);
    let spawn = Spawn::new("fastpath-hook install", root.join("usr/bin/fastpath-hook"))
        .env("FASTPATH_HOOK_CONFIG", "")
        .args(["install", "--hook", "/usr/bin/fastpath-hook", "--hooks-dir"])
        .args([&dir]);
    procs::run(spawn, Duration::from_secs(60))?;
    for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        chmod(&e?.path(), 0o644)?;
    }
    Ok(())
}

/// Every file of the package outside DEBIAN/ and /etc (dpkg tracks conffiles itself), as
/// paths relative to `root`, sorted.
fn payload(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            if rel == "DEBIAN" || rel == "etc" {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// DEBIAN/md5sums: `md5sum` of the payload.
fn md5sums(root: &Path) -> Result<String> {
    let p =
        procs::run(Spawn::new("md5sum", "md5sum").args(payload(root)?).current_dir(root), Duration::from_secs(300))?;
    Ok(p.stdout_lines().iter().flat_map(|l| [l.as_str(), "\n"]).collect())
}

/// The Depends line: what dpkg-shlibdeps finds the dynamic ELF files need (the executables
/// are static; libfastpath_net.so needs libc6 and libgcc-s1).
fn depends(stage: &Path, elves: &[PathBuf]) -> Result<String> {
    write(stage, "debian/control", "Source: fastpath\n\nPackage: fastpath\nArchitecture: amd64\n", 0o644)?;
    let p = procs::run(
        Spawn::new("dpkg-shlibdeps", "dpkg-shlibdeps").args(["-O", "--warnings=0"]).args(elves).current_dir(stage),
        Duration::from_secs(120),
    )?;
    let line = p.stdout_lines().into_iter().find_map(|l| l.strip_prefix("shlibs:Depends=").map(String::from));
    match line {
        Some(d) if !d.trim().is_empty() => Ok(d.trim().to_string()),
        _ => bail!("dpkg-shlibdeps found no dependencies (libfastpath_net.so links libc6)"),
    }
}

/// Installed-Size: the payload's size in KiB, each file rounded up (as dpkg-gencontrol counts).
fn installed_kib(root: &Path) -> Result<u64> {
    let mut kib = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if e.file_name() == "DEBIAN" {
                continue;
            }
            let meta = e.metadata()?;
            if meta.is_dir() {
                kib += 1;
                dirs.push(e.path());
            } else {
                kib += meta.len().div_ceil(1024);
            }
        }
    }
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_etc_file_is_a_conffile_and_every_source_file_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for (from, src, dst, _) in FILES {
            if matches!(from, Origin::Source | Origin::Unit) {
                assert!(root.join(src).is_file(), "{src} (for {dst}) is not in the workspace");
            }
            assert!(!dst.starts_with('/'), "{dst}: paths are relative to the package root");
        }
        let etc: Vec<_> = FILES.iter().filter(|f| f.2.starts_with("etc/")).map(|f| f.2).collect();
        assert_eq!(etc, ["etc/fastpath/hook.toml", "etc/fastpath/fastpathd.toml"]);
    }

    #[test]
    fn the_units_run_the_packaged_binaries() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let bins: Vec<String> =
            FILES.iter().filter(|f| f.2.starts_with("usr/bin/")).map(|f| format!("/{}", f.2)).collect();
        for (_, src, dst, _) in FILES.iter().filter(|f| matches!(f.0, Origin::Unit)) {
            let text = unit(&root.join(src)).unwrap();
            let exec = text
                .lines()
                .find_map(|l| l.strip_prefix("ExecStart="))
                .unwrap_or_else(|| panic!("{src}: no ExecStart"));
            let prog = exec.split_whitespace().next().unwrap();
            assert!(bins.iter().any(|b| b == prog), "{dst} runs {prog}, which the package does not install");
        }
    }

    #[test]
    fn payload_skips_debian_and_etc_and_sorts() {
        let dir = crate::scratch::TempDir::new("pkgtest").unwrap();
        let r = dir.path();
        for f in ["usr/bin/b", "usr/bin/a", "etc/fastpath/hook.toml", "DEBIAN/control", "lib/x"] {
            write(r, f, "x", 0o644).unwrap();
        }
        assert_eq!(payload(r).unwrap(), ["lib/x", "usr/bin/a", "usr/bin/b"]);
        // One KiB for each file but DEBIAN's (4) and each directory but DEBIAN (usr, usr/bin,
        // etc, etc/fastpath, lib).
        assert_eq!(installed_kib(r).unwrap(), 4 + 5);
    }
}
