// `cargo xtask setup`: brings this machine to what tests and benchmarks need (packages,
// hugepages, hugetlbfs, the crun cgroup fix, no stale DPDK files); idempotent, one line per item.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};

use crate::procs::{self, Spawn, Stream};
use crate::scratch::{self, HUGEPAGES};

/// Debian packages the tests and benchmarks use.
const PACKAGES: &[&str] =
    &["dpdk-dev", "openvswitch-switch-dpdk", "runc", "crun", "podman", "busybox-static", "linux-perf", "iproute2"];

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
    let apt = |args: &[&str]| -> Result<()> {
        let spawn = Spawn::new("apt-get", "apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stream::Inherit)
            .stderr(Stream::Inherit);
        procs::run(spawn, Duration::from_secs(3600))?;
        Ok(())
    };
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
