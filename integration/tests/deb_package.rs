// The Debian package (`cargo xtask package`): its control data and file list, its systemd
// units under `systemd-analyze verify`, then `dpkg -i` here, the demo flow (pktgen → fastpathd
// → sink in hook-started runc containers) with the installed binaries, and `dpkg --purge`.
//! Debian package test.

mod hook_common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fastpath_oci::which;
use hook_common::*;
use integration::{bin_dir, output_text, run_with_timeout, skip_or_fail, TestDir};

/// The package's name.
const PKG: &str = "fastpath";
/// Every file the package installs (absolute paths on the host).
const FILES: &[&str] = &[
    "/usr/bin/fastpathd",
    "/usr/bin/fastpathctl",
    "/usr/bin/fastpath-hook",
    "/usr/lib/cni/fastpath-cni",
    "/usr/lib/x86_64-linux-gnu/libfastpath_net.so",
    "/usr/lib/x86_64-linux-gnu/libfastpath_net.a",
    "/usr/include/fastpath_net.h",
    "/usr/lib/fastpath/libfastpath_net.so",
    "/usr/lib/fastpath/fastpath_net.h",
    "/lib/systemd/system/fastpathd.service",
    "/lib/systemd/system/fastpath-gc.service",
    "/etc/fastpath/hook.toml",
    "/etc/fastpath/fastpathd.toml",
    "/usr/share/containers/oci/hooks.d/fastpath-createRuntime.json",
    "/usr/share/containers/oci/hooks.d/fastpath-createContainer.json",
    "/usr/share/containers/oci/hooks.d/fastpath-poststop.json",
    "/usr/share/doc/fastpath/copyright",
    "/usr/share/doc/fastpath/changelog.gz",
];
/// The units, in /lib/systemd/system.
const UNITS: [&str; 2] = ["fastpathd.service", "fastpath-gc.service"];
/// The conffiles.
const CONFFILES: [&str; 2] = ["/etc/fastpath/hook.toml", "/etc/fastpath/fastpathd.toml"];
/// lintian errors the package has, known: no mail host for the maintainer yet, and no SONAME
/// on libfastpath_net.so (netlib/ffi links it without `-soname`).
const LINTIAN_KNOWN: [&str; 3] =
    ["bogus-mail-host", "bogus-mail-host-in-debian-changelog", "sharedobject-in-library-directory-missing-soname"];
/// What the hook mounts at `fastpath.io/inject` in a container.
const CONTAINER_LIB_DIR: &str = "/usr/local/lib/fastpath";
const DPKG_WAIT: Duration = Duration::from_mins(2);

/// The .deb: `$FASTPATH_DEB` (set by `cargo xtask test`), else `target/deb/` beside the
/// release binaries; `None` (and a skip) when it is not built or dpkg is missing.
fn find_deb(test: &str) -> Option<PathBuf> {
    for tool in ["dpkg-deb", "dpkg", "systemd-analyze"] {
        if which(tool).is_none() {
            skip_or_fail(test, &format!("{tool} is not installed (apt-get install dpkg systemd)"));
            return None;
        }
    }
    let beside_release = || {
        let target = bin_dir().parent().map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
        target.join("deb").join(format!("{PKG}_{}_amd64.deb", env!("CARGO_PKG_VERSION")))
    };
    let deb = std::env::var_os("FASTPATH_DEB").filter(|v| !v.is_empty()).map_or_else(beside_release, PathBuf::from);
    if deb.is_file() {
        Some(deb)
    } else {
        skip_or_fail(test, &format!("{} is missing (cargo xtask package builds it)", deb.display()));
        None
    }
}

fn run(cmd: &mut Command, t: Duration) -> Output {
    run_with_timeout(cmd, t).unwrap_or_else(|e| panic!("{e}"))
}

fn dpkg_deb(deb: &Path, args: &[&str]) -> String {
    let o = run(Command::new("dpkg-deb").args(args).arg(deb), Duration::from_mins(1));
    assert!(o.status.success(), "dpkg-deb {args:?}: {}", output_text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The value of `key` in a unit file's text (the last assignment).
fn unit_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().rev().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// `systemd-analyze verify` of the units in the unpacked tree `root`: with `--root`, so that
/// their ExecStart binaries are the tree's; the host's targets copied in for the ordering.
fn verify_units(root: &Path) {
    let units = root.join("lib/systemd/system");
    for e in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".target") && e.path().is_file() {
            std::fs::copy(e.path(), units.join(&name)).unwrap();
        }
    }
    let o = run(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args(UNITS.map(|u| format!("/lib/systemd/system/{u}"))),
        Duration::from_mins(1),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| UNITS.iter().any(|u| l.contains(u))).collect();
    assert!(o.status.success() && ours.is_empty(), "systemd-analyze verify: {}", output_text(&o));
}

/// lintian's errors on the package, but [`LINTIAN_KNOWN`]; not checked (a note) where lintian
/// is not installed, as `cargo xtask setup` does not install it.
fn lintian(deb: &Path) {
    if which("lintian").is_none() {
        eprintln!("deb_package: lintian is not installed (apt-get install lintian): not run");
        return;
    }
    let o = run(Command::new("lintian").args(["--tag-display-limit", "0"]).arg(deb), Duration::from_mins(5));
    let out = String::from_utf8_lossy(&o.stdout);
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("E: "))
        .filter(|l| !LINTIAN_KNOWN.iter().any(|t| l.split_whitespace().nth(2) == Some(t)))
        .collect();
    assert!(errors.is_empty(), "lintian: {errors:#?}\n{}", output_text(&o));
}

#[test]
fn deb_lists_every_file_and_its_units_verify() {
    let test = "deb_lists_every_file_and_its_units_verify";
    let Some(deb) = find_deb(test) else { return };
    let info = dpkg_deb(&deb, &["--info"]);
    let field = |k: &str| {
        info.lines().find_map(|l| l.trim_start().strip_prefix(k)?.strip_prefix(':').map(str::trim)).unwrap_or("")
    };
    assert_eq!(field("Package"), PKG, "{info}");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"), "{info}");
    assert_eq!(field("Architecture"), "amd64", "{info}");
    // libfastpath_net.so is the one dynamic ELF file (the executables are static).
    assert!(field("Depends").contains("libc6"), "Depends: {info}");
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        assert!(info.contains(script), "no {script}: {info}");
    }
    let contents = dpkg_deb(&deb, &["--contents"]);
    let listed: Vec<String> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    for f in FILES {
        assert!(listed.iter().any(|l| l == f), "{f} is not in the package:\n{contents}");
    }
    for l in contents.lines() {
        assert!(l.contains(" root/root "), "not owned by root: {l}");
    }

    // Unpacked: conffiles, the units, the hooks.d files and the configs as the binaries read them.
    let dir = TestDir::new("deb");
    let root = dir.join("root");
    let o = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), Duration::from_mins(1));
    assert!(o.status.success(), "dpkg-deb -x: {}", output_text(&o));
    let ctl = dir.join("control");
    let o = run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl), Duration::from_mins(1));
    assert!(o.status.success(), "dpkg-deb -e: {}", output_text(&o));
    let conffiles = std::fs::read_to_string(ctl.join("conffiles")).unwrap();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), CONFFILES, "DEBIAN/conffiles");
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(ctl.join(script)).unwrap();
        // systemctl only where systemd runs (a chroot, a container build, this machine).
        for l in text.lines().filter(|l| l.trim_start().starts_with("systemctl")) {
            let guarded = text.contains("[ -d /run/systemd/system ]");
            assert!(guarded, "{script} runs `{}` without checking for systemd", l.trim());
        }
        let o = run(Command::new("sh").arg("-n").arg(ctl.join(script)), Duration::from_secs(10));
        assert!(o.status.success(), "{script}: {}", output_text(&o));
    }

    let unit = |u: &str| std::fs::read_to_string(root.join("lib/systemd/system").join(u)).unwrap();
    let fpd = unit("fastpathd.service");
    assert_eq!(unit_key(&fpd, "Restart"), Some("always"), "fastpathd.service");
    assert_eq!(
        unit_key(&fpd, "ExecStart"),
        Some("/usr/bin/fastpathd --config /etc/fastpath/fastpathd.toml"),
        "fastpathd.service"
    );
    let gc = unit("fastpath-gc.service");
    assert_eq!(unit_key(&gc, "Type"), Some("oneshot"), "fastpath-gc.service");
    assert_eq!(unit_key(&gc, "ExecStart"), Some("/usr/bin/fastpath-hook gc"), "fastpath-gc.service");
    let before = unit_key(&gc, "Before").unwrap_or("");
    assert!(before.contains("fastpathd.service") && before.contains("containerd.service"), "gc Before={before}");
    verify_units(&root);
    lintian(&deb);

    for stage in ["createRuntime", "createContainer", "poststop"] {
        let f = root.join(format!("usr/share/containers/oci/hooks.d/fastpath-{stage}.json"));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(v["hook"]["path"], "/usr/bin/fastpath-hook", "{}", f.display());
        // No --config: the installed hook reads its default, the package's /etc/fastpath/hook.toml.
        assert_eq!(v["hook"]["args"], serde_json::json!(["fastpath-hook", stage]), "{}", f.display());
        assert_eq!(v["stages"], serde_json::json!([stage]), "{}", f.display());
    }
    let hook_toml = std::fs::read_to_string(root.join("etc/fastpath/hook.toml")).unwrap();
    let hook = fastpath_hook::hostconfig::HostConfig::parse(&hook_toml, Some(Path::new("hook.toml")), "0-7")
        .unwrap_or_else(|e| panic!("the package's hook.toml: {e}"));
    assert_eq!(hook.lib_dir, Path::new("/usr/lib/fastpath"), "hook.toml lib_dir is the package's");
    let sw = fastpath::config::Config::load(&root.join("etc/fastpath/fastpathd.toml"))
        .unwrap_or_else(|e| panic!("the package's fastpathd.toml: {e}"));
    assert_eq!(hook.switch_socket, sw.ctl_socket, "the hook's switch_socket is not fastpathd's ctl_socket");
    eprintln!("{test}: ok, {} files, units verified", listed.len());
}

/// Whether dpkg knows the package (installed, or only its conffiles left).
fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PKG])
        .output()
        .is_ok_and(|o| o.status.success() && !String::from_utf8_lossy(&o.stdout).trim_end().ends_with("not-installed"))
}

fn purge() -> Output {
    run(Command::new("dpkg").args(["--purge", PKG]), DPKG_WAIT)
}

/// Purges the package on drop, whatever the test did: while it is installed, every podman
/// container with a fastpath.io/ annotation on this machine runs its hooks.d files.
struct Installed;

impl Installed {
    fn new(deb: &Path) -> Self {
        if installed() {
            // A crashed earlier run's.
            eprintln!("deb_package: purging a {PKG} left installed: {}", output_text(&purge()));
        }
        let guard = Installed;
        let o = run(Command::new("dpkg").arg("-i").arg(deb), DPKG_WAIT);
        assert!(o.status.success(), "dpkg -i {}: {}", deb.display(), output_text(&o));
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let o = purge();
            if !o.status.success() {
                eprintln!("deb_package: dpkg --purge {PKG}: {}", output_text(&o));
            }
        }
    }
}

/// The test's world, dropped in this order: the fixture (its containers deleted and released
/// by the installed hook, its fastpathd stopped), the package (purged), the test lock.
struct Session {
    fx: Fixture,
    pkg: Option<Installed>,
    _lock: Option<integration::Serial>,
}

/// The package's hook.toml with the test's core pool, state directory and switch socket in
/// place of the package's (every other key as installed).
fn test_copy(installed: &str, fx: &Fixture, pool: &str) -> String {
    let ours = [
        ("cores", format!("{pool:?}")),
        ("state_dir", format!("{:?}", fx.state.display().to_string())),
        ("switch_socket", format!("{:?}", fx.ctl.display().to_string())),
    ];
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let mut out: String =
        installed.lines().filter(|l| !ours.iter().any(|(k, _)| key(l) == *k)).flat_map(|l| [l, "\n"]).collect();
    for (k, v) in ours {
        let _ = writeln!(out, "{k} = {v}");
    }
    out
}

#[test]
fn deb_installs_runs_the_demo_and_purges() {
    let test = "deb_installs_runs_the_demo_and_purges";
    let Some(deb) = find_deb(test) else { return };
    let Some(mut peers) = require(test, Some("runc")) else { return };
    let t0 = Instant::now();
    // The installed binaries, once installed: the fixture holds the test lock from here on.
    peers.hook = "/usr/bin/fastpath-hook".into();
    peers.fastpathd = "/usr/bin/fastpathd".into();
    peers.fastpathctl = "/usr/bin/fastpathctl".into();
    let pool = "0-1";
    let mut fx = Fixture::without_switch(&peers, Rt::Runc, pool);
    let lock = fx.take_lock();
    let mut s = Session { fx, pkg: None, _lock: lock };
    s.pkg = Some(Installed::new(&deb));
    let fx = &mut s.fx;
    for f in FILES {
        assert!(Path::new(f).is_file(), "dpkg -i did not install {f}");
    }
    let o = run(Command::new("/usr/bin/fastpathd").arg("--version"), Duration::from_secs(10));
    assert!(o.status.success(), "the installed fastpathd: {}", output_text(&o));

    // The installed hook.toml, with the test's pool, state and switch socket; fastpathd from
    // /usr/bin on the fixture's private control socket.
    let installed_toml = std::fs::read_to_string("/etc/fastpath/hook.toml").unwrap();
    std::fs::write(&fx.config, test_copy(&installed_toml, fx, pool)).unwrap();
    fx.start_switch();

    // pktgen → fastpathd → sink in hook-started runc containers; the sink's container also
    // gets the package's libfastpath_net (fastpath.io/inject, hook.toml's lib_dir).
    let lib_check =
        format!("test -f {CONTAINER_LIB_DIR}/libfastpath_net.so || {{ echo no injected library >&2; exit 9; }}; ");
    let got = pktgen_to_sink(fx, &lib_check, &[("fastpath.io/inject", "true")], &String::new);
    fx.assert_released();
    assert!(fx.ports().is_empty(), "ports left on fastpathd: {:?}", fx.ports());
    // The installed hook's gc (what fastpath-gc.service runs at boot) finds nothing to release.
    let o = fx.gc();
    assert!(o.status.success(), "fastpath-hook gc: {}", output_text(&o));
    fx.stop_switch();

    // Purge: every file, the conffiles and /etc/fastpath go.
    let o = purge();
    assert!(o.status.success(), "dpkg --purge: {}", output_text(&o));
    assert!(!installed(), "dpkg still knows {PKG} after --purge");
    let left: Vec<&&str> = FILES.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left after dpkg --purge: {left:?}");
    assert!(!Path::new("/etc/fastpath").exists(), "/etc/fastpath left after dpkg --purge");
    eprintln!("{test}: ok, {got}/{FRAMES} frames through the installed fastpathd, {:.1} s", t0.elapsed().as_secs_f64());
}
