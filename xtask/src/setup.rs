// `cargo xtask setup`: brings this machine to what tests and benchmarks need (packages,
// hugepages, hugetlbfs, the crun cgroup fix, no stale DPDK files, QEMU >= 8 and an unpacked
// guest kernel for the VF tests); idempotent, one line per item.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};

use crate::procs::{self, Spawn, Stream};
use crate::scratch::{self, HUGEPAGES};

/// Debian packages the tests and benchmarks use (`iputils-ping`: the host pinging a container
/// through a TAP port; `ethtool`: checksum offload off on the veth the kernel's VXLAN sends
/// through, so that its frames carry whole checksums; `xz-utils` and `kmod`: unpacking the
/// guest kernel's modules; `tshark`: decoding what `fastpathctl capture` writes;
/// `containernetworking-plugins` (/usr/lib/cni: podman's CNI backend, host-local for IPAM) and
/// `containerd` (`ctr run --cni`): the callers fastpath-cni is tested with; `prometheus`: the
/// server the metrics test scrapes fastpathd with, its own service kept off by
/// [`quiet_services`]; `dpkg-dev`: `dpkg-shlibdeps` for the .deb `cargo xtask package` builds;
/// QEMU comes from `install_qemu`).
const PACKAGES: &[&str] = &[
    "dpdk-dev",
    "openvswitch-switch-dpdk",
    "runc",
    "crun",
    "podman",
    "busybox-static",
    "linux-perf",
    "iproute2",
    "iputils-ping",
    "ethtool",
    "xz-utils",
    "kmod",
    "tshark",
    "containernetworking-plugins",
    "containerd",
    "prometheus",
    "dpkg-dev",
];

/// Services the packages start and enable that nothing here wants running: the tests start
/// their own Prometheus, with their own config and storage.
const QUIET_SERVICES: &[&str] = &["prometheus", "prometheus-node-exporter"];

/// The oldest QEMU whose emulated igb NIC has SR-IOV (Debian 12's own 7.2 has not).
const QEMU_MIN: (u32, u32, u32) = (8, 0, 0);
/// The apt source added on Debian 12 for QEMU 10 and the 6.12 guest kernel.
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
const BACKPORTS_ENTRY: &str = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
/// Where the guest kernel package is downloaded and unpacked (one folder per kernel version),
/// unless `$FASTPATH_GUEST_DIR` says otherwise.
const GUEST_DIR: &str = "/var/cache/fastpath/guest";
/// The name of the symlink (in the guest dir) to the ready kernel folder, which the VM tests
/// use (`integration::guest::kernel_dir`): `vmlinuz`, `modules/*.ko`, `load-order`.
const GUEST_KERNEL_LINK: &str = "kernel";
/// Written last into a kernel folder: the modules to insmod, in dependency order.
const GUEST_READY: &str = "load-order";
/// The guest modules the VM tests need (their dependencies are added from `modinfo`): the
/// VF tests' igb, igbvf and vfio-pci, and virtio_net for the vhost-user NICs.
const GUEST_MODULES: &[&str] = &[
    "dca",
    "i2c-algo-bit",
    "igb",
    "igbvf",
    "irqbypass",
    "vfio",
    "vfio_iommu_type1",
    "vfio-pci-core",
    "vfio-pci",
    "virtio_net",
];

/// How many 2 MB hugepages we want reserved.
const WANT_HUGEPAGES: u64 = 1024;
/// Below this many, two testpmd instances with `-m 512` cannot run: setup fails.
const MIN_HUGEPAGES: u64 = 512;

/// The 2 MB pool count in sysfs (exists whatever the default hugepage size is).
const NR_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
/// Where crun's hybrid-cgroup fix binds the hugetlb controller.
const HUGETLB_CGROUP: &str = "/sys/fs/cgroup/hugetlb";
/// The cgroup2 mount of a hybrid (v1 + v2) host.
const UNIFIED_CONTROLLERS: &str = "/sys/fs/cgroup/unified/cgroup.controllers";

fn say(what: &str, state: &str) {
    println!("setup: {what:<34} {state}");
}

/// Runs the setup, printing one line per item checked or done.
pub fn run() -> Result<()> {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        return check_only();
    }
    install_packages()?;
    quiet_services();
    install_qemu()?;
    guest_kernel()?;
    reserve_hugepages()?;
    mount_hugetlbfs()?;
    bind_hugetlb_cgroup()?;
    let sweep = scratch::sweep_stale_dpdk_files();
    say(
        "stale DPDK files (fp*)",
        &format!("{} removed, {} prefixes in use by live processes", sweep.removed, sweep.in_use),
    );
    Ok(())
}

/// Without root nothing can be fixed: report what is missing and fail if anything is.
fn check_only() -> Result<()> {
    let mut missing = Vec::new();
    for p in PACKAGES {
        if !installed(p)? {
            missing.push(format!("package {p} (apt-get install -y {p})"));
        }
    }
    match qemu_version() {
        Some(v) if v >= QEMU_MIN => {}
        found => missing.push(format!(
            "qemu-system-x86_64 >= {}.{} (found {}; apt-get install -t bookworm-backports qemu-system-x86)",
            QEMU_MIN.0,
            QEMU_MIN.1,
            found.map_or_else(|| "none".to_string(), |(a, b, c)| format!("{a}.{b}.{c}"))
        )),
    }
    let link = guest_dir().join(GUEST_KERNEL_LINK);
    if !link.join(GUEST_READY).is_file() {
        missing
            .push(format!("guest kernel and modules unpacked in {} (run `cargo xtask setup` as root)", link.display()));
    }
    let pages = hugepages_2m().unwrap_or(0);
    if pages < WANT_HUGEPAGES {
        missing.push(format!(
            "{WANT_HUGEPAGES} x 2 MB hugepages (have {pages}; echo {WANT_HUGEPAGES} > /proc/sys/vm/nr_hugepages)"
        ));
    }
    if !is_mountpoint(HUGEPAGES)? {
        missing.push(format!("hugetlbfs at {HUGEPAGES} (mount -t hugetlbfs none {HUGEPAGES})"));
    }
    if hybrid_hugetlb_unbound() {
        missing.push(format!(
            "hugetlb cgroup v1 binding for crun (mkdir -p {HUGETLB_CGROUP} && mount -t cgroup -o hugetlb cgroup {HUGETLB_CGROUP})"
        ));
    }
    if missing.is_empty() {
        say("root", "no, but everything is already in place");
        return Ok(());
    }
    say("root", "no: cannot fix the following");
    for m in &missing {
        println!("setup:   missing: {m}");
    }
    bail!("setup needs root (DPDK, hugepages and mounts need it too): run it as root, or fix the items above")
}

/// Whether dpkg says `pkg` is installed.
fn installed(pkg: &str) -> Result<bool> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(std::process::Stdio::null())
        .output()
        .context("running dpkg-query (is this a Debian system?)")?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn install_packages() -> Result<()> {
    let mut missing = Vec::new();
    for p in PACKAGES {
        if installed(p)? {
            say(&format!("package {p}"), "present");
        } else {
            missing.push(*p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt(&["update"])?;
    say("apt-get update", "done");
    // With recommends, as on the project machines (podman wants catatonit, slirp4netns, ...).
    let mut args = vec!["install", "-y"];
    args.extend(&missing);
    apt(&args)?;
    for p in missing {
        if !installed(p)? {
            bail!("apt-get install {p} reported success but {p} is not installed");
        }
        say(&format!("package {p}"), "installed");
    }
    Ok(())
}

/// Stops and disables [`QUIET_SERVICES`] where they are installed (disabling works without
/// a running systemd too: it removes the unit's links).
fn quiet_services() {
    let systemd_running = Path::new("/run/systemd/system").is_dir();
    for unit in QUIET_SERVICES {
        if !Path::new("/lib/systemd/system").join(format!("{unit}.service")).exists() {
            continue;
        }
        let run = |args: &[&str]| {
            std::process::Command::new("systemctl")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let stopped = !systemd_running || run(&["stop", unit]);
        let disabled = run(&["disable", unit]);
        let state = match (stopped, disabled) {
            (true, true) => "stopped and disabled".to_string(),
            _ => format!("WARNING: could not stop or disable it (systemctl disable --now {unit})"),
        };
        say(&format!("service {unit}"), &state);
    }
}

/// Runs `apt-get ARGS` (non-interactive, output shown), failing if it fails.
fn apt(args: &[&str]) -> Result<()> {
    let spawn = Spawn::new("apt-get", "apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stream::Inherit)
        .stderr(Stream::Inherit);
    procs::run(spawn, Duration::from_secs(3600))?;
    Ok(())
}

/// The number of 2 MB hugepages in the pool.
fn hugepages_2m() -> Result<u64> {
    let s = fs::read_to_string(NR_2M).with_context(|| format!("reading {NR_2M}"))?;
    s.trim().parse().with_context(|| format!("parsing {NR_2M}"))
}

/// Whether the default hugepage size (the one /proc/sys/vm/nr_hugepages sets) is 2 MB.
fn default_hugepage_is_2m() -> bool {
    fs::read_to_string("/proc/meminfo")
        .is_ok_and(|m| m.lines().any(|l| l.starts_with("Hugepagesize:") && l.split_whitespace().nth(1) == Some("2048")))
}

fn reserve_hugepages() -> Result<()> {
    let have = hugepages_2m()?;
    if have >= WANT_HUGEPAGES {
        say("2 MB hugepages", &format!("{have} reserved (already)"));
        return Ok(());
    }
    let knob = if default_hugepage_is_2m() { "/proc/sys/vm/nr_hugepages" } else { NR_2M };
    fs::write(knob, format!("{WANT_HUGEPAGES}\n")).with_context(|| format!("writing {knob}"))?;
    let now = hugepages_2m()?;
    if now >= WANT_HUGEPAGES {
        say("2 MB hugepages", &format!("{now} reserved (was {have})"));
    } else if now >= MIN_HUGEPAGES {
        say(
            "2 MB hugepages",
            &format!(
                "WARNING: only {now} of {WANT_HUGEPAGES} could be reserved (memory short or fragmented); the OVS benchmark may fail"
            ),
        );
    } else {
        bail!(
            "only {now} of {WANT_HUGEPAGES} 2 MB hugepages could be reserved (memory short or fragmented); \
             DPDK needs at least {MIN_HUGEPAGES}: free memory, or reserve them at boot (hugepages=1024 on the kernel command line)"
        );
    }
    Ok(())
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
fn is_mountpoint(path: &str) -> Result<bool> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(info.lines().any(|l| l.split_whitespace().nth(4) == Some(path)))
}

fn mount_hugetlbfs() -> Result<()> {
    if is_mountpoint(HUGEPAGES)? {
        say("hugetlbfs", &format!("mounted at {HUGEPAGES} (already)"));
        return Ok(());
    }
    fs::create_dir_all(HUGEPAGES).with_context(|| format!("creating {HUGEPAGES}"))?;
    mount(Some("none"), HUGEPAGES, Some("hugetlbfs"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mount -t hugetlbfs none {HUGEPAGES}"))?;
    say("hugetlbfs", &format!("mounted at {HUGEPAGES} (now)"));
    Ok(())
}

/// On a hybrid host, whether hugetlb is still listed by cgroup2 (bound to no v1 hierarchy),
/// which makes crun refuse to run.
fn hybrid_hugetlb_unbound() -> bool {
    fs::read_to_string(UNIFIED_CONTROLLERS).is_ok_and(|c| c.split_whitespace().any(|w| w == "hugetlb"))
}

fn bind_hugetlb_cgroup() -> Result<()> {
    if is_mountpoint(HUGETLB_CGROUP)? {
        say("hugetlb cgroup (crun fix)", &format!("bound at {HUGETLB_CGROUP} (already)"));
        return Ok(());
    }
    if !Path::new(UNIFIED_CONTROLLERS).exists() {
        say("hugetlb cgroup (crun fix)", "not needed (not a hybrid cgroup host)");
        return Ok(());
    }
    if !hybrid_hugetlb_unbound() {
        say("hugetlb cgroup (crun fix)", "not needed (hugetlb not on cgroup2)");
        return Ok(());
    }
    fs::create_dir_all(HUGETLB_CGROUP).with_context(|| format!("creating {HUGETLB_CGROUP}"))?;
    mount(Some("cgroup"), HUGETLB_CGROUP, Some("cgroup"), MsFlags::empty(), Some("hugetlb"))
        .with_context(|| format!("mount -t cgroup -o hugetlb cgroup {HUGETLB_CGROUP}"))?;
    say("hugetlb cgroup (crun fix)", &format!("bound to v1 at {HUGETLB_CGROUP} (now)"));
    Ok(())
}

// ---------------------------------------------------------------------------
// QEMU and the guest kernel for the VF tests (notes/vm-sriov.md).

/// `qemu-system-x86_64 --version` as (major, minor, micro), if it runs.
fn qemu_version() -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut n = v.split(|c: char| !c.is_ascii_digit()).map(|x| x.parse::<u32>().unwrap_or(0));
    Some((n.next()?, n.next().unwrap_or(0), n.next().unwrap_or(0)))
}

/// `VERSION_CODENAME` of /etc/os-release (e.g. `bookworm`).
fn debian_codename() -> String {
    fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default()
}

/// Whether some apt source already names the `bookworm-backports` suite.
fn backports_listed() -> bool {
    let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    files.iter().any(|f| fs::read_to_string(f).is_ok_and(|t| t.contains("bookworm-backports")))
}

/// On Debian 12, adds the `bookworm-backports` apt source (and runs `apt-get update`) when
/// no source names it; returns the `-t SUITE` to install from (`None` on other releases).
fn backports() -> Result<Option<&'static str>> {
    if debian_codename() != "bookworm" {
        return Ok(None);
    }
    if backports_listed() {
        say("apt source bookworm-backports", "present");
    } else {
        fs::write(BACKPORTS_SOURCES, BACKPORTS_ENTRY).with_context(|| format!("writing {BACKPORTS_SOURCES}"))?;
        apt(&["update"])?;
        say("apt source bookworm-backports", &format!("added ({BACKPORTS_SOURCES}), apt-get update done"));
    }
    Ok(Some("bookworm-backports"))
}

/// QEMU >= 8.0 (igb with SR-IOV): on Debian 12 from bookworm-backports.
fn install_qemu() -> Result<()> {
    let show = |v: (u32, u32, u32)| format!("{}.{}.{}", v.0, v.1, v.2);
    let before = qemu_version();
    if let Some(v) = before.filter(|v| *v >= QEMU_MIN) {
        say("qemu-system-x86_64", &format!("{} (already)", show(v)));
        return Ok(());
    }
    let mut args = vec!["install", "-y"];
    if let Some(suite) = backports()? {
        args.extend(["-t", suite]);
    }
    args.push("qemu-system-x86");
    apt(&args)?;
    match qemu_version() {
        Some(v) if v >= QEMU_MIN => {
            let was = before.map_or_else(|| "none".to_string(), show);
            say("qemu-system-x86_64", &format!("{} installed (was {was})", show(v)));
            Ok(())
        }
        v => bail!(
            "apt-get {} succeeded but qemu-system-x86_64 is {} (need >= {}): igb SR-IOV needs QEMU 8",
            args.join(" "),
            v.map_or_else(|| "missing".to_string(), show),
            show(QEMU_MIN)
        ),
    }
}

/// A version string as numbers, for ordering (`6.12.117+deb12` → [6, 12, 117, 12]).
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse().unwrap_or(0)).collect()
}

/// The newest `linux-image-VERSION-amd64-unsigned` apt knows (not rt, not cloud), as
/// (package, kernel release): e.g. (`linux-image-6.12.117+deb12-amd64-unsigned`, `6.12.117+deb12-amd64`).
fn newest_guest_kernel() -> Result<Option<(String, String)>> {
    let out = std::process::Command::new("apt-cache")
        .args(["search", "--names-only", "^linux-image-[0-9].*-amd64-unsigned$"])
        .output()
        .context("running apt-cache search")?;
    Ok(pick_guest_kernel(&String::from_utf8_lossy(&out.stdout)))
}

/// From `apt-cache search` lines, the newest generic `linux-image-*-amd64-unsigned`
/// as (package, kernel release).
fn pick_guest_kernel(search: &str) -> Option<(String, String)> {
    search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.contains("-rt-") && !n.contains("-cloud-"))
        .filter_map(|n| {
            let release = n.strip_prefix("linux-image-")?.strip_suffix("-unsigned")?;
            Some((n.to_string(), release.to_string()))
        })
        .max_by_key(|(_, release)| version_key(release))
}

/// Every `*.ko*` file under `dir`, by module name (`-` and `_` are the same to the kernel).
fn index_modules(dir: &Path, index: &mut std::collections::HashMap<String, std::path::PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            index_modules(&p, index)?;
        } else if let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.split(".ko").next()) {
            if p.to_string_lossy().contains(".ko") {
                index.insert(stem.replace('-', "_"), p.clone());
            }
        }
    }
    Ok(())
}

/// The modules `wanted` plus their dependencies (`modinfo -F depends`), dependencies first.
fn module_load_order(
    wanted: &[&str],
    index: &std::collections::HashMap<String, std::path::PathBuf>,
) -> Result<Vec<(String, std::path::PathBuf)>> {
    fn visit(
        name: &str,
        index: &std::collections::HashMap<String, std::path::PathBuf>,
        order: &mut Vec<(String, std::path::PathBuf)>,
        depth: usize,
    ) -> Result<()> {
        let key = name.replace('-', "_");
        if order.iter().any(|(n, _)| n.replace('-', "_") == key) {
            return Ok(());
        }
        if depth > 32 {
            bail!("module dependencies of {name} loop");
        }
        let Some(path) = index.get(&key) else { bail!("module {name} not found in the guest kernel package") };
        let out = std::process::Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(path)
            .output()
            .context("running modinfo (package kmod)")?;
        if !out.status.success() {
            bail!("modinfo {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        for dep in String::from_utf8_lossy(&out.stdout).trim().split(',').filter(|d| !d.is_empty()) {
            visit(dep, index, order, depth + 1)?;
        }
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or(name);
        order.push((file.split(".ko").next().unwrap_or(name).to_string(), path.clone()));
        Ok(())
    }
    let mut order = Vec::new();
    for m in wanted {
        visit(m, index, &mut order, 0)?;
    }
    Ok(order)
}

/// Whether the load order `listed` (one module name a line) holds every module of `wanted`
/// (`-` and `_` are the same to the kernel).
fn lists_modules(listed: &str, wanted: &[&str]) -> bool {
    let have: std::collections::HashSet<String> = listed.lines().map(|l| l.trim().replace('-', "_")).collect();
    wanted.iter().all(|m| have.contains(&m.replace('-', "_")))
}

/// Writes the uncompressed module `src` (`.ko`, `.ko.xz` or `.ko.zst`) to `dst`.
fn decompress_module(src: &Path, dst: &Path) -> Result<()> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".ko") {
        fs::copy(src, dst).with_context(|| format!("copying {name}"))?;
        return Ok(());
    } else if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        bail!("{name}: unknown module compression")
    };
    let out = fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let status = std::process::Command::new(tool)
        .args(["-dc"])
        .arg(src)
        .stdout(out)
        .status()
        .with_context(|| format!("running {tool} -dc {name}"))?;
    if !status.success() {
        bail!("{tool} -dc {name} failed ({status})");
    }
    Ok(())
}

/// `$FASTPATH_GUEST_DIR`, else `GUEST_DIR`.
fn guest_dir() -> std::path::PathBuf {
    std::env::var_os("FASTPATH_GUEST_DIR").filter(|d| !d.is_empty()).map_or_else(|| GUEST_DIR.into(), Into::into)
}

/// Points `DIR/GUEST_KERNEL_LINK` at `release` (atomically).
fn link_guest_kernel(dir: &Path, release: &str) -> Result<()> {
    let link = dir.join(GUEST_KERNEL_LINK);
    let link = link.as_path();
    if fs::read_link(link).is_ok_and(|t| t == Path::new(release)) {
        return Ok(());
    }
    let tmp = dir.join(".kernel.link");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(release, &tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fs::rename(&tmp, link).with_context(|| format!("renaming {} to {}", tmp.display(), link.display()))?;
    Ok(())
}

/// The guest kernel for the VM tests: the newest `linux-image-*-amd64-unsigned` package
/// (from bookworm-backports on Debian 12) downloaded into the guest dir (never installed),
/// unpacked, and reduced to a ready folder `DIR/RELEASE` with `vmlinuz`,
/// `modules/NAME.ko` (decompressed) and `load-order`, linked as `DIR/kernel`.
fn guest_kernel() -> Result<()> {
    let what = "guest kernel";
    let dir = guest_dir();
    let dir = dir.as_path();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(GUEST_KERNEL_LINK);
    backports()?;
    let Some((package, release)) = newest_guest_kernel()? else {
        if link.join(GUEST_READY).is_file() {
            say(what, &format!("{} (already; apt knows no linux-image-*-amd64-unsigned now)", link.display()));
            return Ok(());
        }
        bail!("apt-cache knows no linux-image-*-amd64-unsigned package (apt-get update? bookworm-backports?)");
    };
    let ready = dir.join(&release);
    let listed = fs::read_to_string(ready.join(GUEST_READY)).ok();
    if listed.as_deref().is_some_and(|l| lists_modules(l, GUEST_MODULES)) {
        link_guest_kernel(dir, &release)?;
        say(what, &format!("{release} in {} (already)", ready.display()));
        return Ok(());
    }
    let prefix = format!("{package}_");
    let find_deb = || -> Option<std::path::PathBuf> {
        fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            let deb = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("deb"));
            deb && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix))
        })
    };
    let deb = if let Some(d) = find_deb() {
        d
    } else {
        let spawn = Spawn::new("apt-get", "apt-get")
            .args(["download", package.as_str()])
            .current_dir(dir)
            .stdout(Stream::Inherit)
            .stderr(Stream::Inherit);
        procs::run(spawn, Duration::from_secs(1800))?;
        let Some(d) = find_deb() else {
            bail!("apt-get download {package} left no {prefix}*.deb in {}", dir.display())
        };
        say(&package, &format!("downloaded to {}", d.display()));
        d
    };
    let unpack = dir.join(format!(".unpack-{release}"));
    let staging = dir.join(format!(".{release}.tmp"));
    for d in [&unpack, &staging] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let status =
        std::process::Command::new("dpkg").arg("-x").arg(&deb).arg(&unpack).status().context("running dpkg -x")?;
    if !status.success() {
        bail!("dpkg -x {} {} failed ({status})", deb.display(), unpack.display());
    }
    fs::create_dir_all(staging.join("modules")).with_context(|| format!("creating {}", staging.display()))?;
    let vmlinuz = unpack.join("boot").join(format!("vmlinuz-{release}"));
    fs::copy(&vmlinuz, staging.join("vmlinuz")).with_context(|| format!("copying {}", vmlinuz.display()))?;
    let mut index = std::collections::HashMap::new();
    index_modules(&unpack.join("lib/modules").join(&release), &mut index)?;
    let order = module_load_order(GUEST_MODULES, &index)?;
    let mut list = String::new();
    for (name, src) in &order {
        decompress_module(src, &staging.join("modules").join(format!("{name}.ko")))?;
        list.push_str(name);
        list.push('\n');
    }
    fs::write(staging.join(GUEST_READY), &list).context("writing the module load order")?;
    fs::remove_dir_all(&unpack).with_context(|| format!("removing {}", unpack.display()))?;
    if ready.exists() {
        // A folder from before a module was added to GUEST_MODULES: swapped for the new one.
        let old = dir.join(format!(".old-{release}"));
        if old.exists() {
            fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        fs::rename(&ready, &old).with_context(|| format!("renaming {} to {}", ready.display(), old.display()))?;
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    fs::rename(&staging, &ready).with_context(|| format!("renaming {} to {}", staging.display(), ready.display()))?;
    link_guest_kernel(dir, &release)?;
    say(
        what,
        &format!(
            "{release} unpacked in {} (now): vmlinuz + {} modules: {}",
            ready.display(),
            order.len(),
            list.trim().replace('\n', " ")
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{lists_modules, pick_guest_kernel};

    #[test]
    fn a_load_order_without_a_wanted_module_is_not_ready() {
        let listed = "dca\nigb\nvfio-pci\nfailover\nnet_failover\nvirtio_net\n";
        assert!(lists_modules(listed, &["dca", "igb", "vfio_pci", "virtio-net"]));
        assert!(!lists_modules("dca\nigb\n", &["dca", "igb", "virtio_net"]));
    }

    #[test]
    fn picks_the_newest_generic_unsigned_kernel() {
        let search = "\
linux-image-6.12.95+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.1.0-56-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.12.117+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
linux-image-6.12.117+deb12-rt-amd64-unsigned - Linux 6.12 for 64-bit PCs, PREEMPT_RT
linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.115+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
";
        assert_eq!(
            pick_guest_kernel(search),
            Some(("linux-image-6.12.117+deb12-amd64-unsigned".into(), "6.12.117+deb12-amd64".into()))
        );
        assert_eq!(pick_guest_kernel(""), None);
    }
}
