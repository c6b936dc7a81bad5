// PCI devices through sysfs, for the hook's VF path and `fastpathctl vf`: lists SR-IOV PFs and
// VFs, creates VFs, binds a device to vfio-pci through driver_override and gives it back to
// its driver. The sysfs and /dev roots are configurable so tests run against a fake tree.
//! PCI sysfs: SR-IOV VFs, vfio-pci binding and restoring.
//!
//! The kernel interface used (Documentation/ABI/testing/sysfs-bus-pci):
//! `bus/pci/devices/<addr>/{vendor,device,class,driver,driver_override,iommu_group,
//! sriov_numvfs,sriov_totalvfs,virtfn<N>,physfn,net/}`, `bus/pci/drivers/<name>/{bind,unbind}`,
//! `bus/pci/drivers_probe` and `class/vfio/<group>/dev`.
//!
//! Binding to vfio-pci: write `vfio-pci` to `driver_override`, unbind from the current
//! driver, write the address to `drivers_probe`, wait until `driver` points at vfio-pci.
//! Restoring: clear `driver_override`, unbind from vfio-pci, bind the previous driver
//! (or let `drivers_probe` pick the device's own driver).

use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The driver userspace drivers need.
pub const VFIO_PCI: &str = "vfio-pci";
/// (major, minor) of `/dev/vfio/vfio`, the VFIO container device (misc 10:196).
pub const VFIO_CONTAINER_DEV: (u64, u64) = (10, 196);

/// Why a PCI operation failed; every message names the device, the file and the value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a PCI address.
    #[error("'{value}' is not a PCI address (write it as 0000:01:10.0, or 01:10.0 for domain 0000)")]
    BadAddress {
        /// The text given.
        value: String,
    },
    /// No such device in sysfs.
    #[error("{pci}: no such PCI device ({} does not exist)", path.display())]
    NoDevice {
        /// The address.
        pci: String,
        /// Its sysfs directory.
        path: PathBuf,
    },
    /// The device is in no IOMMU group: VFIO cannot give it to userspace.
    #[error("{pci} has no IOMMU group ({} does not exist): turn the IOMMU on (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d/AMD-Vi in the firmware)", path.display())]
    NoIommuGroup {
        /// The address.
        pci: String,
        /// The missing link.
        path: PathBuf,
    },
    /// The vfio-pci driver is not there and could not be loaded.
    #[error("VFIO is not available: {} does not exist and {detail} (does this kernel have CONFIG_VFIO_PCI?)", path.display())]
    NoVfio {
        /// The missing driver directory.
        path: PathBuf,
        /// What loading it said.
        detail: String,
    },
    /// A device that is not an SR-IOV physical function.
    #[error("{pci} is not an SR-IOV PF ({} does not exist)", path.display())]
    NotPf {
        /// The address.
        pci: String,
        /// The missing file.
        path: PathBuf,
    },
    /// More VFs than the PF supports.
    #[error("{pci} supports at most {total} VFs ({}), not {wanted}", path.display())]
    TooManyVfs {
        /// The PF.
        pci: String,
        /// The limit file.
        path: PathBuf,
        /// The limit.
        total: u32,
        /// What was asked.
        wanted: u32,
    },
    /// Writing a sysfs file failed.
    #[error("{pci}: writing '{value}' to {}: {source}{hint}", path.display())]
    Write {
        /// The device.
        pci: String,
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
        /// What to check, when there is a likely cause.
        hint: String,
    },
    /// Reading a sysfs file failed, or it held something unexpected.
    #[error("{pci}: reading {}: {msg}", path.display())]
    Read {
        /// The device.
        pci: String,
        /// The file.
        path: PathBuf,
        /// What happened.
        msg: String,
    },
    /// The kernel did not do what was asked in time.
    #[error("{pci}: {} is {got} after {waited:?}, waiting for {want}", path.display())]
    Timeout {
        /// The device.
        pci: String,
        /// The file or link watched.
        path: PathBuf,
        /// What it should have become.
        want: String,
        /// What it is.
        got: String,
        /// How long was waited.
        waited: Duration,
    },
    /// A device node could not be created or given away.
    #[error("{}: {what}: {source}", path.display())]
    Node {
        /// The node.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks and normalises a PCI address: `0000:01:10.0`, or `01:10.0` (domain 0000), any case.
pub fn parse_addr(s: &str) -> Result<String> {
    let t = s.trim().to_ascii_lowercase();
    let full = if t.len() == 7 { format!("0000:{t}") } else { t };
    let b = full.as_bytes();
    let ok = b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter().enumerate().all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
        && matches!(b[11], b'0'..=b'7')
        && b[8] <= b'1';
    if ok {
        Ok(full)
    } else {
        Err(Error::BadAddress { value: s.into() })
    }
}

/// A device's place in SR-IOV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Role {
    /// A physical function.
    Pf {
        /// VFs enabled now (`sriov_numvfs`).
        numvfs: u32,
        /// Most VFs it can have (`sriov_totalvfs`).
        totalvfs: u32,
        /// The VFs' addresses, in VF index order (`virtfn<N>`).
        vfs: Vec<String>,
    },
    /// A virtual function.
    Vf {
        /// Its PF (`physfn`).
        pf: String,
        /// Its index among the PF's VFs, when the PF lists it.
        index: Option<u32>,
    },
    /// Neither.
    None,
}

/// One PCI device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Address, `0000:01:10.0`.
    pub pci: String,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (`0x020000` is Ethernet).
    pub class: u32,
    /// The bound driver, if any.
    pub driver: Option<String>,
    /// `driver_override`, if set.
    pub driver_override: Option<String>,
    /// IOMMU group, if the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// Network interfaces (while a kernel network driver holds it).
    pub net: Vec<String>,
    /// PF, VF or neither.
    pub role: Role,
}

impl Device {
    /// `vendor:device` as lspci writes it (`8086:10ca`).
    pub fn id(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }
}

/// What [`Pci::bind_vfio`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The device.
    pub pci: String,
    /// The driver it had before (`None`: none, or it was on vfio-pci already).
    pub previous_driver: Option<String>,
    /// Its IOMMU group (`/dev/vfio/<group>`).
    pub group: u32,
    /// Whether this call changed the binding (false: it was on vfio-pci already).
    pub changed: bool,
}

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

/// Called after every sysfs write with the resolved path and the value: lets a fake tree
/// act like the kernel (see [`fake`]).
pub type Emulator = Arc<dyn Fn(&Path, &str) + Send + Sync>;

/// Access to PCI devices through a sysfs tree.
#[derive(Clone)]
pub struct Pci {
    root: PathBuf,
    dev: PathBuf,
    modprobe: Option<PathBuf>,
    timeout: Duration,
    emulate: Option<Emulator>,
}

impl std::fmt::Debug for Pci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pci").field("root", &self.root).field("dev", &self.dev).finish_non_exhaustive()
    }
}

impl Default for Pci {
    fn default() -> Self {
        Self::new()
    }
}

fn io_hint(e: &io::Error, file: &str) -> String {
    match (e.raw_os_error(), file) {
        (Some(13 | 1), _) => " (needs root)".into(),
        (Some(16), "sriov_numvfs") => " (VFs in use: set 0 first, or stop what uses them)".into(),
        (Some(2 | 95), "sriov_numvfs") => " (is the PF's driver loaded and its link up?)".into(),
        (Some(19), "bind") => " (the driver does not take this device)".into(),
        _ => String::new(),
    }
}

impl Pci {
    /// The host's `/sys` and `/dev`.
    pub fn new() -> Self {
        Self::at("/sys")
    }

    /// A sysfs tree at `root` (the `/sys` of a fake tree in tests); device nodes in `/dev`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            dev: "/dev".into(),
            modprobe: Some("modprobe".into()),
            timeout: Duration::from_secs(5),
            emulate: None,
        }
    }

    /// Device nodes under `dev` instead of `/dev`.
    #[must_use]
    pub fn with_dev_dir(mut self, dev: impl Into<PathBuf>) -> Self {
        self.dev = dev.into();
        self
    }

    /// The program run to load vfio-pci when its driver directory is missing (`None`: never).
    #[must_use]
    pub fn with_modprobe(mut self, modprobe: Option<PathBuf>) -> Self {
        self.modprobe = modprobe;
        self
    }

    /// How long to wait for the kernel to bind or create devices.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs `f` after every write (a fake tree's kernel).
    #[must_use]
    pub fn with_emulator(mut self, f: Emulator) -> Self {
        self.emulate = Some(f);
        self
    }

    /// The sysfs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `bus/pci/devices/<pci>`.
    pub fn dev_path(&self, pci: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci)
    }

    fn driver_dir(&self, name: &str) -> PathBuf {
        self.root.join("bus/pci/drivers").join(name)
    }

    /// `/dev/vfio/<group>` (under the configured /dev).
    pub fn group_node(&self, group: u32) -> PathBuf {
        self.dev.join("vfio").join(group.to_string())
    }

    /// `/dev/vfio/vfio` (under the configured /dev).
    pub fn container_node(&self) -> PathBuf {
        self.dev.join("vfio/vfio")
    }

    fn existing(&self, pci: &str) -> Result<PathBuf> {
        let p = self.dev_path(pci);
        if p.exists() {
            Ok(p)
        } else {
            Err(Error::NoDevice { pci: pci.into(), path: p })
        }
    }

    fn link_name(p: &Path) -> Option<String> {
        std::fs::read_link(p).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    fn read_trim(p: &Path) -> Option<String> {
        std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
    }

    fn read_num<T: std::str::FromStr>(pci: &str, p: &Path) -> Result<T> {
        let t = std::fs::read_to_string(p).map_err(|e| Error::Read {
            pci: pci.into(),
            path: p.into(),
            msg: e.to_string(),
        })?;
        t.trim().parse().map_err(|_| Error::Read {
            pci: pci.into(),
            path: p.into(),
            msg: format!("'{}' is not a number", t.trim()),
        })
    }

    fn write(&self, pci: &str, path: &Path, value: &str) -> Result<()> {
        // sysfs wants the whole value in one write(2), into the existing file.
        let r = std::fs::OpenOptions::new().write(true).open(path).and_then(|mut f| {
            use std::io::Write;
            f.write_all(value.as_bytes())
        });
        r.map_err(|e| {
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Error::Write {
                pci: pci.into(),
                path: path.into(),
                value: value.trim_end().into(),
                hint: io_hint(&e, &file),
                source: e,
            }
        })?;
        if let Some(f) = &self.emulate {
            f(&std::fs::canonicalize(path).unwrap_or_else(|_| path.into()), value);
        }
        Ok(())
    }

    fn wait(&self, mut done: impl FnMut() -> bool) -> bool {
        let t0 = Instant::now();
        loop {
            if done() {
                return true;
            }
            if t0.elapsed() >= self.timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The driver bound to a device (`None`: none).
    pub fn driver(&self, pci: &str) -> Option<String> {
        Self::link_name(&self.dev_path(pci).join("driver"))
    }

    /// A device's IOMMU group.
    pub fn iommu_group(&self, pci: &str) -> Result<u32> {
        let p = self.existing(pci)?.join("iommu_group");
        Self::link_name(&p).and_then(|n| n.parse().ok()).ok_or(Error::NoIommuGroup { pci: pci.into(), path: p })
    }

    /// Whether a device is an SR-IOV VF (has `physfn`).
    pub fn is_vf(&self, pci: &str) -> bool {
        self.dev_path(pci).join("physfn").exists()
    }

    /// The devices in an IOMMU group (`kernel/iommu_groups/<group>/devices`), sorted; all of
    /// them must be on vfio-pci (or on no driver) for VFIO to give the group out.
    pub fn group_devices(&self, group: u32) -> Vec<String> {
        let d = self.root.join("kernel/iommu_groups").join(group.to_string()).join("devices");
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// One device.
    pub fn device(&self, pci: &str) -> Result<Device> {
        let d = self.existing(pci)?;
        let hex = |f: &str| -> Result<u32> {
            let p = d.join(f);
            let t = Self::read_trim(&p).ok_or_else(|| Error::Read {
                pci: pci.into(),
                path: p.clone(),
                msg: "missing".into(),
            })?;
            u32::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|_| Error::Read {
                pci: pci.into(),
                path: p,
                msg: format!("'{t}' is not hexadecimal"),
            })
        };
        let role = if let Some(pf) = Self::link_name(&d.join("physfn")) {
            let index = self.vfs_of(&pf).iter().position(|v| v == pci).map(|i| i as u32);
            Role::Vf { pf, index }
        } else if d.join("sriov_totalvfs").exists() {
            Role::Pf {
                numvfs: Self::read_num(pci, &d.join("sriov_numvfs")).unwrap_or(0),
                totalvfs: Self::read_num(pci, &d.join("sriov_totalvfs"))?,
                vfs: self.vfs_of(pci),
            }
        } else {
            Role::None
        };
        let mut net: Vec<String> = std::fs::read_dir(d.join("net"))
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
            .unwrap_or_default();
        net.sort();
        Ok(Device {
            pci: pci.into(),
            vendor: hex("vendor")? as u16,
            device: hex("device")? as u16,
            class: hex("class").unwrap_or(0),
            driver: self.driver(pci),
            driver_override: Self::read_trim(&d.join("driver_override")).filter(|s| !s.is_empty() && s != "(null)"),
            iommu_group: Self::link_name(&d.join("iommu_group")).and_then(|n| n.parse().ok()),
            net,
            role,
        })
    }

    /// The VFs of a PF in index order (`virtfn0`, `virtfn1`, ...); empty for anything else.
    pub fn vfs_of(&self, pf: &str) -> Vec<String> {
        let d = self.dev_path(pf);
        let mut v: Vec<(u32, String)> = std::fs::read_dir(&d)
            .map(|r| {
                r.filter_map(|e| {
                    let name = e.ok()?.file_name().to_string_lossy().into_owned();
                    let i: u32 = name.strip_prefix("virtfn")?.parse().ok()?;
                    Some((i, Self::link_name(&d.join(&name))?))
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, a)| a).collect()
    }

    /// The PCI devices, sorted by address: only SR-IOV PFs and VFs, or all with `all`.
    pub fn list(&self, all: bool) -> Result<Vec<Device>> {
        let dir = self.root.join("bus/pci/devices");
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::Read {
            pci: "*".into(),
            path: dir.clone(),
            msg: e.to_string(),
        })?;
        let mut names: Vec<String> =
            rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let d = self.device(&n)?;
            if all || d.role != Role::None {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Sets the number of VFs of a PF (through 0 when changing a non-zero count, as the kernel
    /// requires) and waits for them; returns their addresses.
    pub fn set_numvfs(&self, pf: &str, n: u32) -> Result<Vec<String>> {
        let d = self.existing(pf)?;
        let total_p = d.join("sriov_totalvfs");
        if !total_p.exists() {
            return Err(Error::NotPf { pci: pf.into(), path: total_p });
        }
        let total: u32 = Self::read_num(pf, &total_p)?;
        if n > total {
            return Err(Error::TooManyVfs { pci: pf.into(), path: total_p, total, wanted: n });
        }
        let num_p = d.join("sriov_numvfs");
        let cur: u32 = Self::read_num(pf, &num_p)?;
        if cur != n {
            if cur != 0 && n != 0 {
                self.write(pf, &num_p, "0")?;
            }
            self.write(pf, &num_p, &n.to_string())?;
        }
        if !self.wait(|| self.vfs_of(pf).len() == n as usize) {
            return Err(Error::Timeout {
                pci: pf.into(),
                path: d.join("virtfn*"),
                want: format!("{n} VFs"),
                got: format!("{} VFs", self.vfs_of(pf).len()),
                waited: self.timeout,
            });
        }
        Ok(self.vfs_of(pf))
    }

    /// Makes sure the vfio-pci driver is there, loading it with modprobe if need be.
    pub fn ensure_vfio(&self) -> Result<()> {
        let d = self.driver_dir(VFIO_PCI);
        if d.exists() {
            return Ok(());
        }
        let detail = match &self.modprobe {
            None => "loading it is not allowed here".to_string(),
            Some(m) => match std::process::Command::new(m).arg(VFIO_PCI).output() {
                Ok(o) if o.status.success() => {
                    if self.wait(|| d.exists()) {
                        return Ok(());
                    }
                    format!("`{} {VFIO_PCI}` succeeded but the driver did not appear", m.display())
                }
                Ok(o) => format!(
                    "`{} {VFIO_PCI}` failed ({}): {}",
                    m.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => format!("running `{} {VFIO_PCI}` failed: {e}", m.display()),
            },
        };
        Err(Error::NoVfio { path: d, detail })
    }

    /// Binds a device to vfio-pci: `driver_override`, unbind, `drivers_probe`, then waits for
    /// `driver` to point at vfio-pci. A device already there is left alone (`changed` false).
    /// On failure after the first write the device is given back to its driver.
    pub fn bind_vfio(&self, pci: &str) -> Result<Binding> {
        let d = self.existing(pci)?;
        let group = self.iommu_group(pci)?;
        let previous = self.driver(pci);
        if previous.as_deref() == Some(VFIO_PCI) {
            return Ok(Binding { pci: pci.into(), previous_driver: None, group, changed: false });
        }
        self.ensure_vfio()?;
        let r = (|| {
            self.write(pci, &d.join("driver_override"), VFIO_PCI)?;
            if previous.is_some() {
                self.write(pci, &d.join("driver/unbind"), pci)?;
            }
            if self.write(pci, &self.root.join("bus/pci/drivers_probe"), pci).is_err() || self.driver(pci).is_none() {
                // drivers_probe refuses a device no driver claims at once; ask vfio-pci directly.
                let _ = self.write(pci, &self.driver_dir(VFIO_PCI).join("bind"), pci);
            }
            if !self.wait(|| self.driver(pci).as_deref() == Some(VFIO_PCI)) {
                return Err(Error::Timeout {
                    pci: pci.into(),
                    path: d.join("driver"),
                    want: VFIO_PCI.into(),
                    got: self.driver(pci).unwrap_or_else(|| "no driver".into()),
                    waited: self.timeout,
                });
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(Binding { pci: pci.into(), previous_driver: previous, group, changed: true }),
            Err(e) => {
                let _ = self.restore(pci, previous.as_deref());
                Err(e)
            }
        }
    }

    /// Gives a device back: clears `driver_override`, unbinds it from vfio-pci, and binds
    /// `previous` (or, when `None`, lets `drivers_probe` pick the device's own driver).
    /// Returns the driver bound afterwards. Idempotent; a device on another driver than
    /// vfio-pci is not unbound.
    pub fn restore(&self, pci: &str, previous: Option<&str>) -> Result<Option<String>> {
        let d = self.existing(pci)?;
        let ov = d.join("driver_override");
        if Self::read_trim(&ov).is_some_and(|s| !s.is_empty() && s != "(null)") {
            self.write(pci, &ov, "\n")?;
        }
        match self.driver(pci) {
            Some(cur) if cur == VFIO_PCI => self.write(pci, &d.join("driver/unbind"), pci)?,
            Some(cur) => return Ok(Some(cur)),
            None => {}
        }
        let probe = || self.write(pci, &self.root.join("bus/pci/drivers_probe"), pci);
        match previous.filter(|p| *p != VFIO_PCI) {
            Some(p) if self.driver_dir(p).exists() => {
                if self.write(pci, &self.driver_dir(p).join("bind"), pci).is_err() {
                    probe()?;
                }
            }
            _ => probe()?,
        }
        if let Some(p) = previous {
            self.wait(|| self.driver(pci).as_deref() == Some(p));
        }
        Ok(self.driver(pci))
    }

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

/// A fake sysfs tree in a directory, with a small emulated kernel, for tests of this module,
/// the hook and `fastpathctl`.
pub mod fake;

#[cfg(test)]
mod tests;
