// fastpathctl: the human front of fastpathd's control socket: add, remove and list ports,
// watch per-port rates and drops live, capture and mirror a port, the switch's status, and
// replacing it with a new binary (`upgrade`); and `vf`: SR-IOV VFs for VFIO (list, create, bind to vfio-pci, give back).
//! fastpathd's command-line client, and the VF tool.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use fastpath::doctor;
use fastpath_host::pci::{Pci, PciAddress, Role, VFIO_PCI};
use fastpath_host::proto::{
    CaptureSpec, Client, Direction, MirrorConfig, PortInfo, Request, Response, DEFAULT_SLOTS, DEFAULT_SNAPLEN,
};

/// fastpathctl: control a running fastpathd.
mod add_port;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpathctl: add, remove, list fastpathd ports and watch their rates; list, create and bind SR-IOV VFs"
)]
struct Args {
    /// fastpathd's control socket.
    #[arg(long, default_value = "/run/fastpath/fastpathd.sock", global = true)]
    ctl: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per run: add-port's many flags inline cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Add a port to a bridge: a vhost-user socket (--socket), a TAP interface (--tap), a
    /// queue of a kernel interface through AF_XDP (--afxdp), an SR-IOV VF (--vf) or a VXLAN
    /// overlay over an uplink (--vxlan).
    AddPort(add_port::AddPortArgs),
    /// Remove a port.
    DelPort {
        /// Port name.
        name: String,
    },
    /// List ports with counters.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List bridges.
    Bridges,
    /// Per-port rates and drops (once, or live with --watch).
    Stats {
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// The switch's pid, port count, state file, its worker's CPU, and when it forwarded its first frame.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the running fastpathd with another binary, keeping its ports.
    #[command(
        long_about = "Replace the running fastpathd with BINARY: start it with the running one's command line plus --takeover (and --config FILE if given); it asks the running one to hand over (that one closes its ports, saves its state and exits), restores every port and serves the control socket. The frontends reconnect by themselves. Prints the outage: from the old switch stopping to the first frame through the new one. For fastpathd run outside systemd; under the unit, install the new binary and `systemctl restart fastpathd` (the state file keeps the ports)."
    )]
    Upgrade {
        /// The new fastpathd binary.
        #[arg(long)]
        binary: PathBuf,
        /// The config file the new one reads (default: the running one's --config, if any).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Append the new fastpathd's output to this file (default: this command's stdout and stderr).
        #[arg(long)]
        log: Option<PathBuf>,
        /// How long to wait for a frame through the new switch before reporting without one.
        #[arg(long, default_value_t = 10.0)]
        wait_traffic: f64,
    },
    /// Capture a port's frames into a pcapng (or pcap) file, like tcpdump -w.
    #[command(long_about = "Capture a port's frames: fastpathd copies each frame (up to --snaplen bytes) with its \
timestamp (ns) and direction into a ring shared with this command, which writes them out as pcapng (the port as \
the interface, the direction in each packet's epb_flags, the frames the ring had no room for in a closing \
statistics block's isb_ifdrop) or, with --pcap, classic pcap (ns). The switch never waits for the capture: when \
the ring is full, frames are dropped from the capture and counted. With several workers, each worker that polls \
some of the port's queue pairs copies what it receives from them into a ring of its own, and this command writes \
the frames of all the rings, oldest first. Ends after --count frames, on Ctrl-C, or when the port goes away; if \
this command dies, fastpathd stops copying and frees the rings.")]
    Capture {
        /// The port.
        port: String,
        /// Frames the switch received from the port (rx), sent to it (tx), or both.
        #[arg(long, default_value = "both")]
        direction: Direction,
        /// Stop after this many frames.
        #[arg(long, short = 'c')]
        count: Option<u64>,
        /// Bytes kept of each frame (1-16384).
        #[arg(long, short = 's', default_value_t = DEFAULT_SNAPLEN)]
        snaplen: u32,
        /// Frames each shared ring holds (1-65536; one ring per worker that sees the port's frames).
        #[arg(long, default_value_t = DEFAULT_SLOTS)]
        ring: u32,
        /// The file to write, or - for stdout (e.g. `| tshark -r -`).
        #[arg(short = 'w', default_value = "-")]
        write: PathBuf,
        /// Classic pcap instead of pcapng (no direction, no drop count in the file).
        #[arg(long)]
        pcap: bool,
    },
    /// Mirror a port's frames to another port (where an IDS or a capture app runs).
    #[command(subcommand)]
    Mirror(MirrorCmd),
    /// SR-IOV VFs for userspace drivers: list, create, bind to vfio-pci, give back.
    #[command(
        long_about = "SR-IOV virtual functions for userspace drivers (netlib's VF PMD, DPDK): list PFs and VFs with \
their drivers and IOMMU groups, create VFs on a PF, bind a VF to vfio-pci (and give its /dev/vfio node to a user), \
give it back to its kernel driver. A replacement for dpdk-devbind.py, using the same code the fastpath hook runs \
for fastpath.io/vf. Changing drivers needs root; listing does not."
    )]
    Vf(VfArgs),
    /// Check the host: hugepages, cores, NUMA, IOMMU, memlock, cgroups, runtimes and the hook,
    /// fastpathd. One line per check (ok / warn / fail: what, why, the command that fixes it).
    #[command(
        long_about = "Check whether this host is ready for fastpath: hugepages (reserved, free, mounted, the hugetlb \
cgroup controller); the hook's core pool against isolcpus, nohz_full and rcu_nocbs and the core fastpathd pins; the NUMA \
node of each core, VF and hugepage pool; IOMMU groups and vfio-pci; RLIMIT_MEMLOCK; cgroup v1/v2/hybrid and crun's \
hugetlb fix; which runtimes are installed and whether the hook is installed for each; whether fastpathd answers. \
Each check prints one line: `ok|warn|fail NAME: DETAIL; fix: COMMAND`. Exits 1 when any check fails, else 0."
    )]
    Doctor(DoctorArgs),
}

#[derive(Debug, Subcommand)]
enum MirrorCmd {
    /// Copy the frames of --from to --to as well (kept across restarts). The switch never
    /// waits for the mirror port: when it has no room, the copies are dropped and counted.
    Add {
        /// The mirrored port.
        #[arg(long)]
        from: String,
        /// The port the copies go to.
        #[arg(long)]
        to: String,
        /// Frames --from received (rx), was sent (tx), or both.
        #[arg(long, default_value = "both")]
        direction: Direction,
    },
    /// Stop a mirror.
    Del {
        /// The mirrored port.
        #[arg(long)]
        from: String,
        /// The port the copies go to.
        #[arg(long)]
        to: String,
    },
    /// Mirrors with the copies sent and dropped.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn mirror_main(ctl: &std::path::Path, cmd: MirrorCmd) -> Result<()> {
    match cmd {
        MirrorCmd::Add { from, to, direction } => {
            call(ctl, &Request::MirrorAdd(MirrorConfig { from: from.clone(), to: to.clone(), direction }))?;
            println!("{from} mirrored to {to} ({})", direction.as_str());
        }
        MirrorCmd::Del { from, to } => {
            call(ctl, &Request::MirrorDel { from: from.clone(), to: to.clone() })?;
            println!("mirror {from} -> {to} removed");
        }
        MirrorCmd::List { json } => {
            let mirrors = call(ctl, &Request::Mirrors)?.mirrors.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&mirrors)?);
            }
            for m in mirrors.iter().filter(|_| !json) {
                println!(
                    "{} -> {} direction={} {} sent={} dropped={}",
                    m.mirror.from,
                    m.mirror.to,
                    m.mirror.direction.as_str(),
                    if m.active { "active" } else { "waiting-for-ports" },
                    m.sent,
                    m.dropped
                );
            }
        }
    }
    Ok(())
}

/// Captures `spec` from the switch on `ctl` into `write` (- for stdout) until `count`
/// frames, Ctrl-C, or the switch ends it; says what it got on stderr.
fn capture_main(
    ctl: &std::path::Path,
    spec: CaptureSpec,
    count: Option<u64>,
    write: &std::path::Path,
    pcap: bool,
) -> Result<()> {
    use fastpath::capture::session::{CaptureError, Output, Session};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    // Ctrl-C (and SIGTERM) end the capture cleanly: they are read from a signalfd.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.thread_block().context("blocking SIGINT")?;
    let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    // One line, as `call` words it (the OS error is in the message already).
    let fail = |e: CaptureError| anyhow!("fastpathd at {}: capture of port '{}': {e}", ctl.display(), spec.port);
    let session = Session::start(ctl, &spec, CALL_TIMEOUT).map_err(fail)?;
    let out: Box<dyn std::io::Write> = if write.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let f = std::fs::File::create(write).with_context(|| format!("-w {}", write.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let out = Output::start(out, pcap, &spec.port, spec.snaplen).context("writing the capture")?;
    // A port whose queue pairs several workers poll is captured on each of them.
    let workers = match session.rings() {
        1 => String::new(),
        n => format!(", on {n} workers"),
    };
    eprintln!("capturing port {} ({}, snaplen {}{workers})", spec.port, spec.direction.as_str(), spec.snaplen);
    let (sum, _) = session.drain(out, count, || matches!(sfd.read_signal(), Ok(Some(_)))).map_err(fail)?;
    eprintln!(
        "capture of port {}: {} frames, {} dropped (ring full){}",
        spec.port,
        sum.captured,
        sum.dropped,
        if sum.ended_by_switch { "; ended by fastpathd (the port is gone?)" } else { "" }
    );
    Ok(())
}

#[derive(Debug, ClapArgs)]
struct DoctorArgs {
    /// One JSON object per check (name, status, detail, fix) per line.
    #[arg(long)]
    json: bool,
    /// The directory /proc, /sys, /etc, /dev and /usr are read under (another tree for tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// podman's hooks directory [default: $FASTPATH_HOOKS_DIR, else ROOT/usr/share/containers/oci/hooks.d].
    #[arg(long)]
    hooks_dir: Option<PathBuf>,
    /// The hook's configuration [default: $FASTPATH_HOOK_CONFIG, else ROOT/etc/fastpath/hook.toml].
    #[arg(long)]
    hook_config: Option<PathBuf>,
}

fn doctor_main(a: DoctorArgs, ctl: PathBuf) -> Result<bool> {
    let mut host =
        doctor::Host::at(&a.root, &std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
    host.ctl = ctl;
    let env = |v: &str| std::env::var_os(v).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = a.hooks_dir.or_else(|| env("FASTPATH_HOOKS_DIR")) {
        host.hooks_dir = d;
    }
    if let Some(c) = a.hook_config.or_else(|| env("FASTPATH_HOOK_CONFIG")) {
        host.hook_config = c;
    }
    let checks = doctor::run(&host);
    for c in &checks {
        if a.json {
            println!("{}", serde_json::to_string(c)?);
        } else {
            println!("{}", c.line());
        }
    }
    Ok(!doctor::any_failed(&checks))
}

#[derive(Debug, ClapArgs)]
struct VfArgs {
    /// The sysfs root (another tree for tests).
    #[arg(long, default_value = "/sys", global = true)]
    sysfs: PathBuf,
    /// The /dev directory holding vfio/.
    #[arg(long, default_value = "/dev", global = true)]
    dev: PathBuf,
    #[command(subcommand)]
    cmd: VfCmd,
}

#[derive(Debug, Subcommand)]
enum VfCmd {
    /// List SR-IOV PFs and VFs: PCI address, vendor:device, driver, IOMMU group, PF/VF relation.
    #[command(
        long_about = "List SR-IOV physical functions (with numvfs/totalvfs) and virtual functions (with their PF and \
index), each with vendor:device, bound driver, IOMMU group and network interface. A VF is usable by a userspace \
driver once its driver is vfio-pci and it has an IOMMU group (`-` means the IOMMU is off)."
    )]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Every PCI device, not only SR-IOV ones.
        #[arg(long)]
        all: bool,
    },
    /// Create N VFs on a PF (writes sriov_numvfs; 0 removes them).
    #[command(
        long_about = "Create N VFs on a PF by writing sriov_numvfs (going through 0 first when it already has VFs, as \
the kernel requires); 0 removes them. The PF's own driver must be loaded (and for igb, its link up: \
`ip link set <pf-if> up`) for the VFs to work."
    )]
    Create {
        /// The PF's PCI address (0000:01:00.0, or 01:00.0).
        pf: PciAddress,
        /// How many VFs.
        n: u32,
    },
    /// Bind a device to vfio-pci (driver_override), and with --owner give its /dev/vfio node to a user.
    #[command(
        long_about = "Bind a device (normally a VF) to vfio-pci: set driver_override to vfio-pci, unbind it from its \
driver, probe, and wait until vfio-pci has it (loading vfio-pci with modprobe if needed). Prints the driver it had, \
which `vf unbind --driver` gives back. With --owner UID:GID, /dev/vfio/<group> is created if missing and given to \
that user (mode 0660), and /dev/vfio/vfio made 0666: that user can then drive the VF without privileges (it still \
needs RLIMIT_MEMLOCK for the memory it maps for DMA)."
    )]
    Bind {
        /// The device's PCI address (0000:01:10.0, or 01:10.0).
        pci: PciAddress,
        /// Give /dev/vfio/<group> to this user: UID:GID (or UID, with GID = UID).
        #[arg(long, value_name = "UID:GID")]
        owner: Option<String>,
    },
    /// Give a device back from vfio-pci to a kernel driver.
    #[command(
        long_about = "Give a device back: clear driver_override, unbind it from vfio-pci, and bind --driver (or, \
without it, let the kernel probe the device's own driver). A device on another driver than vfio-pci is left alone."
    )]
    Unbind {
        /// The device's PCI address (0000:01:10.0, or 01:10.0).
        pci: PciAddress,
        /// The driver to bind (default: whatever the kernel picks, normally the one it had).
        #[arg(long)]
        driver: Option<String>,
    },
}

fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let bad = || anyhow::anyhow!("--owner '{s}' is not UID:GID (numbers, e.g. 1000:1000)");
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Ok((u.trim().parse().map_err(|_| bad())?, g.trim().parse().map_err(|_| bad())?))
}

fn show_role(r: &Role) -> String {
    match r {
        Role::Pf { numvfs, totalvfs, .. } => format!("PF {numvfs}/{totalvfs} VFs"),
        Role::Vf { pf, index: Some(i) } => format!("VF {i} of {pf}"),
        Role::Vf { pf, index: None } => format!("VF of {pf}"),
        Role::None => "-".into(),
    }
}

fn show_driver(d: Option<&str>) -> &str {
    d.unwrap_or("(none)")
}

fn vf_main(a: VfArgs) -> Result<()> {
    let p = Pci::at(&a.sysfs).with_dev_dir(&a.dev);
    match a.cmd {
        VfCmd::List { json, all } => {
            let devs = p.list(all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devs)?);
                return Ok(());
            }
            if devs.is_empty() {
                eprintln!("no SR-IOV devices under {} (vf list --all shows every PCI device)", a.sysfs.display());
                return Ok(());
            }
            println!("{:<13} {:<10} {:<10} {:>5}  {:<24} NET", "PCI", "ID", "DRIVER", "GROUP", "ROLE");
            for d in &devs {
                println!(
                    "{:<13} {:<10} {:<10} {:>5}  {:<24} {}",
                    d.pci,
                    d.id(),
                    show_driver(d.driver.as_deref()),
                    d.iommu_group.map_or_else(|| "-".into(), |g| g.to_string()),
                    show_role(&d.role),
                    if d.net.is_empty() { "-".into() } else { d.net.join(",") }
                );
            }
        }
        VfCmd::Create { pf, n } => {
            let pf = pf.to_string();
            let vfs = p.set_numvfs(&pf, n)?;
            println!("{pf}: {} VFs", vfs.len());
            for v in vfs {
                println!(
                    "  {v}  driver {}  IOMMU group {}",
                    show_driver(p.driver(&v).as_deref()),
                    p.iommu_group(&v).map_or_else(|_| "-".into(), |g| g.to_string())
                );
            }
        }
        VfCmd::Bind { pci: addr, owner } => {
            let addr = addr.to_string();
            let owner = owner.as_deref().map(parse_owner).transpose()?;
            let b = p.bind_vfio(&addr)?;
            if b.changed {
                println!(
                    "{addr}: bound to vfio-pci (was {}); IOMMU group {}",
                    show_driver(b.previous_driver.as_deref()),
                    b.group
                );
            } else {
                println!("{addr}: already on vfio-pci; IOMMU group {}", b.group);
            }
            for other in p.group_devices(b.group).iter().filter(|d| **d != addr) {
                let drv = p.driver(other);
                if drv.is_some() && drv.as_deref() != Some(VFIO_PCI) {
                    println!(
                        "note: {other} shares IOMMU group {} and is on {}: the group is not usable until it is on vfio-pci or no driver",
                        b.group,
                        show_driver(drv.as_deref())
                    );
                }
            }
            match p.prepare_nodes(b.group, owner) {
                Ok(nodes) => {
                    for n in nodes {
                        println!(
                            "{}: c {}:{}, owner {}:{}, mode {:04o}{}",
                            n.path.display(),
                            n.dev.0,
                            n.dev.1,
                            n.owner.0,
                            n.owner.1,
                            n.mode,
                            if n.actions.is_empty() { String::new() } else { format!(" ({})", n.actions.join(", ")) }
                        );
                    }
                }
                Err(e) if owner.is_none() => println!("note: {e} (--owner UID:GID creates it)"),
                Err(e) => return Err(e).context(format!("{addr} is on vfio-pci, but its node is not ready")),
            }
        }
        VfCmd::Unbind { pci: addr, driver } => {
            let addr = addr.to_string();
            let before = p.driver(&addr);
            let now = p.restore(&addr, driver.as_deref())?;
            match before.as_deref() {
                Some(VFIO_PCI) => println!("{addr}: unbound from vfio-pci; now on {}", show_driver(now.as_deref())),
                None => println!("{addr}: had no driver; now on {}", show_driver(now.as_deref())),
                Some(d) => println!("{addr}: on {d}, not vfio-pci: left alone"),
            }
            if let Some(want) = driver.filter(|d| now.as_deref() != Some(d.as_str())) {
                bail!("{addr}: asked for driver {want}, but it is on {}", show_driver(now.as_deref()));
            }
        }
    }
    Ok(())
}

/// How long a control call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One control call; a failure names the socket.
fn call(ctl: &std::path::Path, req: &Request) -> Result<Response> {
    Client::new(ctl, CALL_TIMEOUT).call(req).map_err(|e| anyhow!("fastpathd at {}: {e}", ctl.display()))
}

fn list(ctl: &std::path::Path) -> Result<Vec<PortInfo>> {
    Ok(call(ctl, &Request::List)?.ports.unwrap_or_default())
}

fn print_table(ports: &[PortInfo], prev: Option<(&[PortInfo], f64)>) {
    // Columns as wide as the longest port and bridge names (the hook's are long).
    let w = ports.iter().map(|p| p.name.len()).max().unwrap_or(0).max(12);
    let wb = ports.iter().map(|p| p.bridge.len()).max().unwrap_or(0).max(6);
    println!(
        "{:<w$} {:<wb$} {:<5} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "port",
        "bridge",
        "link",
        "rx pkts",
        "tx pkts",
        "rx Mpps",
        "tx Mpps",
        "drop full",
        "no peer",
        "drop big",
        "filtered",
        "drop vlan",
        "resets"
    );
    for p in ports {
        let (rx_rate, tx_rate) = prev
            .and_then(|(old, dt)| old.iter().find(|o| o.name == p.name).map(|o| (o, dt)))
            .map_or((0.0, 0.0), |(o, dt)| {
                (
                    (p.stats.counters.rx_packets - o.stats.counters.rx_packets) as f64 / dt / 1e6,
                    (p.stats.counters.tx_packets - o.stats.counters.tx_packets) as f64 / dt / 1e6,
                )
            });
        println!(
            "{:<w$} {:<wb$} {:<5} {:>12} {:>12} {:>10.3} {:>10.3} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
            p.name,
            p.bridge,
            if p.stats.link_up { "up" } else { "down" },
            p.stats.counters.rx_packets,
            p.stats.counters.tx_packets,
            rx_rate,
            tx_rate,
            p.stats.counters.drop_ring_full,
            p.stats.counters.drop_no_peer,
            p.stats.counters.drop_too_big,
            p.stats.counters.drop_filtered,
            p.stats.counters.drop_vlan,
            p.stats.counters.resets
        );
        let worker = p.worker.map(|w| format!("worker {w}{}", pairs_elsewhere(&p.pair_workers)));
        let kind: Vec<String> = worker
            .into_iter()
            .chain(p.kind_counters.iter().filter(|(_, v)| *v > 0).map(|(n, v)| format!("{n} {v}")))
            .collect();
        if !kind.is_empty() {
            println!("  {:<w$} {}", "", kind.join(", "));
        }
    }
}

/// ", pairs 1,3 on worker 1" for the queue pairs other workers poll (`(pair, worker)`).
fn pairs_elsewhere(pair_workers: &[(u16, u16)]) -> String {
    use std::fmt::Write as _;
    let mut workers: Vec<u16> = pair_workers.iter().map(|&(_, w)| w).collect();
    workers.sort_unstable();
    workers.dedup();
    let mut said = String::new();
    for w in workers {
        let pairs: Vec<String> = pair_workers.iter().filter(|&&(_, pw)| pw == w).map(|(p, _)| p.to_string()).collect();
        let s = if pairs.len() == 1 { "" } else { "s" };
        let _ = write!(said, ", pair{s} {} on worker {w}", pairs.join(","));
    }
    said
}

/// The new switch's command line: the running one's arguments (`old`, without the program
/// name), with `--config FILE` replaced (or added) when `config` is given, and `--takeover`.
fn takeover_args(old: &[String], config: Option<&std::path::Path>) -> Vec<String> {
    let mut args = Vec::with_capacity(old.len() + 3);
    let mut it = old.iter();
    while let Some(a) = it.next() {
        if a == "--takeover" {
            continue;
        }
        if config.is_some() && (a == "--config" || a.starts_with("--config=")) {
            if a == "--config" {
                it.next();
            }
            continue;
        }
        args.push(a.clone());
    }
    if let Some(c) = config {
        args.push("--config".into());
        args.push(c.display().to_string());
    }
    args.push("--takeover".into());
    args
}

/// A process's arguments (without the program name), from /proc/PID/cmdline.
fn cmdline(pid: u32) -> Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("reading the command line of pid {pid}"))?;
    Ok(raw
        .split(|b| *b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// Starts `binary` to take over from the fastpathd on `ctl`, waits until it serves there, and
/// reports the outage its frontends saw.
fn upgrade(
    ctl: &std::path::Path,
    binary: &std::path::Path,
    config: Option<&std::path::Path>,
    log: Option<&std::path::Path>,
    wait_traffic: f64,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let old = call(ctl, &Request::Status)?
        .status
        .ok_or_else(|| anyhow!("fastpathd at {}: no status in its answer", ctl.display()))?;
    let args = takeover_args(&cmdline(old.pid)?, config);
    let mut cmd = std::process::Command::new(binary);
    cmd.args(&args).stdin(std::process::Stdio::null()).process_group(0);
    if let Some(l) = log {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(l)
            .with_context(|| format!("opening --log {}", l.display()))?;
        cmd.stdout(f.try_clone()?).stderr(f);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id();
    eprintln!("started {} {} (pid {pid})", binary.display(), args.join(" "));
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        if let Some(s) = child.try_wait()? {
            bail!("the new fastpathd (pid {pid}) exited ({s}) before serving{}; pid {} keeps running if it did not hand over",
                log.map_or_else(String::new, |l| format!(": see {}", l.display())), old.pid);
        }
        if let Ok(Some(st)) = Client::new(ctl, Duration::from_secs(1)).call(&Request::Status).map(|r| r.status) {
            if st.pid == pid {
                break st;
            }
        }
        if Instant::now() > deadline {
            bail!("the new fastpathd (pid {pid}) did not serve on {} within 30 s", ctl.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let old_gone = {
        let until = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{}", old.pid)).exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        !std::path::Path::new(&format!("/proc/{}", old.pid)).exists()
    };
    println!(
        "fastpathd upgraded: pid {} -> pid {pid} ({}), {} of {} ports{}",
        old.pid,
        binary.display(),
        new.ports,
        old.ports,
        if old_gone { "" } else { "; the old process has not exited yet" }
    );
    let until = Instant::now() + Duration::from_secs_f64(wait_traffic.max(0.0));
    loop {
        let st = call(ctl, &Request::Status)?.status;
        if let Some(ms) = st.and_then(|s| s.first_frame_ms) {
            println!("outage: {ms:.1} ms from the old switch stopping to the first frame through the new one");
            return Ok(());
        }
        if Instant::now() > until {
            println!("outage: no frame through the new switch within {wait_traffic} s (no traffic?)");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    match a.cmd {
        Cmd::Vf(v) => vf_main(v)?,
        Cmd::Capture { port, direction, count, snaplen, ring, write, pcap } => {
            capture_main(&a.ctl, CaptureSpec { port, direction, snaplen, slots: ring }, count, &write, pcap)?;
        }
        Cmd::Mirror(m) => mirror_main(&a.ctl, m)?,
        Cmd::Doctor(d) => {
            if !doctor_main(d, a.ctl)? {
                std::process::exit(1);
            }
        }
        Cmd::AddPort(args) => add_port::run(&a.ctl, args)?,
        Cmd::DelPort { name } => {
            call(&a.ctl, &Request::DelPort { name: name.clone() })?;
            println!("port {name} removed");
        }
        Cmd::List { json } => {
            let ports = list(&a.ctl)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ports)?);
            } else {
                for p in &ports {
                    let vlans = match (p.vlan, &p.trunk) {
                        (_, Some(t)) => {
                            format!(" trunk={}", t.iter().map(u16::to_string).collect::<Vec<_>>().join(","))
                        }
                        (Some(v), None) => format!(" vlan={v}"),
                        (None, None) => String::new(),
                    };
                    let worker = p.worker.map(|w| format!(" worker={w}")).unwrap_or_default();
                    println!(
                        "{} bridge={} socket={} mode={:?}{vlans}{worker} link={} fault={}",
                        p.name,
                        p.bridge,
                        p.socket,
                        p.mode,
                        if p.stats.link_up { "up" } else { "down" },
                        p.last_fault.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        Cmd::Status { json } => {
            let st = call(&a.ctl, &Request::Status)?.status.ok_or_else(|| anyhow!("no status in the answer"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!(
                    "pid {}, {} ports, state {}",
                    st.pid,
                    st.ports,
                    st.state_file.as_ref().map_or_else(|| "-".into(), |p| p.display().to_string())
                );
                match (st.core, st.cores.as_slice()) {
                    (_, many @ [_, _, ..]) => {
                        let cpus: Vec<String> = many.iter().map(ToString::to_string).collect();
                        println!("{} workers on CPUs {}", many.len(), cpus.join(","));
                    }
                    (Some(c), _) => println!("worker on CPU {c}"),
                    (None, _) => {}
                }
                if let Some(old) = st.took_over_from {
                    println!("took over from pid {old}");
                }
                match st.first_frame_ms {
                    Some(ms) => println!(
                        "first frame through {ms:.1} ms after {}",
                        if st.took_over_from.is_some() { "the old switch stopped" } else { "start" }
                    ),
                    None => println!("no frame through yet"),
                }
            }
        }
        Cmd::Upgrade { binary, config, log, wait_traffic } => {
            upgrade(&a.ctl, &binary, config.as_deref(), log.as_deref(), wait_traffic)?;
        }
        Cmd::Bridges => {
            for b in call(&a.ctl, &Request::Bridges)?.bridges.unwrap_or_default() {
                println!("{b}");
            }
        }
        Cmd::Stats { watch } => {
            let mut prev = list(&a.ctl)?;
            let mut t = Instant::now();
            if !watch {
                print_table(&prev, None);
                return Ok(());
            }
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = list(&a.ctl)?;
                let dt = t.elapsed().as_secs_f64();
                t = Instant::now();
                print!("\x1b[2J\x1b[H");
                print_table(&now, Some((&prev, dt)));
                prev = now;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_switch_gets_the_old_command_line_with_takeover() {
        let old: Vec<String> = ["--config", "/etc/a.toml", "--core", "0", "--takeover"].map(String::from).to_vec();
        assert_eq!(takeover_args(&old, None), ["--config", "/etc/a.toml", "--core", "0", "--takeover"]);
        let new = takeover_args(&old, Some(std::path::Path::new("/etc/b.toml")));
        assert_eq!(new, ["--core", "0", "--config", "/etc/b.toml", "--takeover"]);
        let eq: Vec<String> = vec!["--config=/x".into(), "--ctl".into(), "/c".into()];
        assert_eq!(
            takeover_args(&eq, Some(std::path::Path::new("/y"))),
            ["--ctl", "/c", "--config", "/y", "--takeover"]
        );
        assert_eq!(cmdline(std::process::id()).unwrap(), std::env::args().skip(1).collect::<Vec<_>>());
    }

    #[test]
    fn the_pairs_other_workers_poll_are_said_per_worker() {
        assert_eq!(pairs_elsewhere(&[]), "");
        assert_eq!(pairs_elsewhere(&[(1, 1)]), ", pair 1 on worker 1");
        assert_eq!(pairs_elsewhere(&[(1, 1), (2, 2), (4, 1)]), ", pairs 1,4 on worker 1, pair 2 on worker 2");
    }
}
