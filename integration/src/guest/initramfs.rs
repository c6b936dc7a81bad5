// The guest's initramfs: a cpio "newc" writer, the body's shell helpers (`BODY_HELPERS`),
// the generated `/init` (prelude, body, dmesg, poweroff) and `Guest::initramfs`, which
// packs busybox, the kernel modules, our (debug-stripped) binaries and the files.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use fastpath_oci::BUSYBOX;

use super::{vnic_pci, Guest, GUEST_UID};
use crate::TestDir;

// ---------------------------------------------------------------------------
// The initramfs (cpio "newc", uncompressed: the kernel unpacks it faster than it would
// inflate it under TCG).

/// Writes a cpio newc archive; parent directories are added before their entries.
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn new() -> Self {
        Self { buf: Vec::new(), ino: 1, dirs: BTreeSet::new() }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170_000 == 0o040_000 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            let _ = write!(self.buf, "{f:08x}");
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn dir(&mut self, path: &str) {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, data: &[u8], perm: u32) {
        self.entry(path, 0o100_000 | (perm & 0o7777), (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, 0o120_777, (0, 0), target.as_bytes());
    }

    fn chardev(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, 0o020_600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

/// Shell helpers and variables every body gets (sourced before the body; see the module docs).
pub const BODY_HELPERS: &str = r#"# fastpath guest body helpers (integration::guest)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# result NAME VALUE...: one result line for the host (value: text or JSON, one line).
result() { n="$1"; shift; echo "FASTPATH-RESULT $n $*"; }
# ready NAME: tells the host something is up (RunningGuest::wait_ready).
ready() { echo "FASTPATH-READY $1"; }
# as_user CMD ARGS...: runs CMD as user (uid/gid 1000), keeping the environment and rlimits.
as_user() { su -s /bin/sh -c 'exec "$0" "$@"' -- user "$@"; }
# iommu_group PCI: the IOMMU group number of a PCI device.
iommu_group() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
# wait_path PATH SECS: waits (10 ms steps) until PATH exists; status 1 if it does not in time.
wait_path() { i=0; while [ ! -e "$1" ]; do i=$((i + 1)); [ "$i" -gt $(($2 * 100)) ] && return 1; usleep 10000; done; }
# wait_file FILE TEXT SECS: waits until FILE contains TEXT (e.g. a program's "up" log line).
wait_file() { i=0; until grep -q -- "$2" "$1" 2>/dev/null; do i=$((i + 1)); [ "$i" -gt $(($3 * 100)) ] && return 1; usleep 10000; done; }
# vf_to_vfio PCI: binds a VF to vfio-pci through driver_override (stand-in for fastpathctl vf bind).
vf_to_vfio() {
    echo vfio-pci > "/sys/bus/pci/devices/$1/driver_override" || return 1
    if [ -e "/sys/bus/pci/devices/$1/driver" ]; then echo "$1" > "/sys/bus/pci/devices/$1/driver/unbind" || return 1; fi
    echo "$1" > /sys/bus/pci/drivers_probe || return 1
    wait_path "/dev/vfio/$(iommu_group "$1")" 5
}
"#;

/// The `/init` prelude (mounts, modules, PF up, VFs, users), the body, then dmesg and poweroff.
/// `{NUM_VFS}`, `{AUTOPROBE}`, `{VNETS}` (the virtio-net PCI addresses) and `{BODY_SECS}`
/// are filled in.
const INIT: &str = r#"#!/bin/sh
# fastpath guest /init (integration::guest): prelude, body, dmesg, poweroff.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/hugepages /tmp /run
mount -t hugetlbfs -o mode=1777 none /dev/hugepages
# Kernel messages stay out of the console from now on (they are printed with dmesg at the end),
# so that marker lines are never interleaved with them.
echo 1 > /proc/sys/kernel/printk
up() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "FASTPATH-PRELUDE-ERROR $*"; }
echo "FASTPATH-INIT $(up)"
for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
ip link set lo up
export PF=0000:01:00.0
i=0
while [ ! -d /sys/bus/pci/devices/$PF/net ] && [ $i -lt 500 ]; do i=$((i + 1)); usleep 10000; done
export PF_IF=$(ls /sys/bus/pci/devices/$PF/net 2>/dev/null | head -n 1)
[ -n "$PF_IF" ] || fail "no netdev for the PF $PF (igb)"
# The PF driver must be up: it answers the VFs' mailbox.
ip link set "$PF_IF" up || fail "ip link set $PF_IF up"
echo {AUTOPROBE} > /sys/bus/pci/devices/$PF/sriov_drivers_autoprobe || fail "sriov_drivers_autoprobe"
if [ {NUM_VFS} -gt 0 ]; then
    echo {NUM_VFS} > /sys/bus/pci/devices/$PF/sriov_numvfs || fail "echo {NUM_VFS} > sriov_numvfs"
fi
VFS=
n=0
while [ $n -lt {NUM_VFS} ]; do
    i=0
    while [ ! -e /sys/bus/pci/devices/$PF/virtfn$n ] && [ $i -lt 1000 ]; do i=$((i + 1)); usleep 10000; done
    vf=$(basename "$(readlink /sys/bus/pci/devices/$PF/virtfn$n)")
    [ -e /sys/bus/pci/devices/$PF/virtfn$n ] || fail "VF $n did not appear"
    VFS="$VFS${VFS:+ }$vf"
    n=$((n + 1))
done
export VFS
# The virtio-net NICs (vhost-user): VNET_IF0, VNET_IF1... in the order they were added, up.
n=0
for pci in {VNETS}; do
    i=0
    while ! ls /sys/bus/pci/devices/$pci/virtio*/net >/dev/null 2>&1 && [ $i -lt 1000 ]; do i=$((i + 1)); usleep 10000; done
    nif=$(ls /sys/bus/pci/devices/$pci/virtio*/net 2>/dev/null | head -n 1)
    [ -n "$nif" ] || fail "no netdev for the virtio-net NIC $pci"
    eval "export VNET_IF$n=$nif"
    ip link set "$nif" up || fail "ip link set $nif up"
    n=$((n + 1))
done
# Unprivileged users may lock memory (netlib's DMA buffers): rlimits are inherited by as_user.
ulimit -l unlimited || fail "ulimit -l unlimited"
chmod 1777 /tmp
chown -R 1000:1000 /home/user
echo "FASTPATH-PRELUDE-DONE $(up)"
timeout -s KILL {BODY_SECS} /bin/sh /lib/fastpath/body.sh
echo "FASTPATH-EXIT $?"
echo "FASTPATH-DMESG-BEGIN"
dmesg
echo "FASTPATH-DMESG-END"
echo "FASTPATH-DONE $(up)"
poweroff -f
"#;

impl Guest {
    /// The generated `/init`.
    pub fn init_script(&self) -> String {
        INIT.replace("{NUM_VFS}", &self.num_vfs.to_string())
            .replace("{AUTOPROBE}", if self.vf_autoprobe { "1" } else { "0" })
            .replace("{VNETS}", &(0..self.vnics.len()).map(vnic_pci).collect::<Vec<_>>().join(" "))
            .replace("{BODY_SECS}", &self.body_timeout.as_secs().max(1).to_string())
    }

    /// Builds the initramfs (uncompressed cpio): busybox and its applet links, the kernel
    /// modules, `/etc` with `root` and `user`, our binaries (debug info stripped into `dir`
    /// when `strip` is there), the files, `/init` and the body.
    pub fn initramfs(&self, dir: &TestDir) -> Result<Vec<u8>, String> {
        let mut c = Cpio::new();
        for d in ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc", "lib"] {
            c.dir(d);
        }
        c.dir("home/user");
        c.chardev("dev/console", 5, 1);
        c.chardev("dev/null", 1, 3);
        let bb = std::fs::read(BUSYBOX).map_err(|e| format!("cannot read {BUSYBOX}: {e}"))?;
        c.file("bin/busybox", &bb, 0o755);
        let list = std::process::Command::new(BUSYBOX)
            .arg("--list-full")
            .output()
            .map_err(|e| format!("{BUSYBOX} --list-full: {e}"))?;
        let ours: BTreeSet<&str> = self.bins.iter().map(|(n, _)| n.as_str()).collect();
        for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|l| !l.is_empty()) {
            let name = applet.rsplit('/').next().unwrap_or(applet);
            if applet != "bin/busybox" && !ours.contains(name) {
                c.symlink(applet, "/bin/busybox");
            }
        }
        let kdir = self.peers.kernel_dir();
        let order = std::fs::read_to_string(kdir.join("load-order"))
            .map_err(|e| format!("cannot read {}: {e}", kdir.join("load-order").display()))?;
        c.file("lib/modules/load-order", order.as_bytes(), 0o644);
        for m in order.lines().map(str::trim).filter(|m| !m.is_empty()) {
            let p = kdir.join("modules").join(format!("{m}.ko"));
            let data = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            c.file(&format!("lib/modules/{m}.ko"), &data, 0o644);
        }
        c.file(
            "etc/passwd",
            format!("root:x:0:0:root:/root:/bin/sh\nuser:x:{GUEST_UID}:{GUEST_UID}:user:/home/user:/bin/sh\n")
                .as_bytes(),
            0o644,
        );
        c.file("etc/group", format!("root:x:0:\nuser:x:{GUEST_UID}:\n").as_bytes(), 0o644);
        c.file("etc/shells", b"/bin/sh\n", 0o644);
        for (name, path) in &self.bins {
            let data = stripped(path, &dir.join(&format!("strip-{name}")))?;
            c.file(&format!("bin/{name}"), &data, 0o755);
        }
        for (p, data, mode) in &self.files {
            c.file(p, data, *mode);
        }
        for d in &self.dirs {
            c.dir(d);
        }
        for (p, target) in &self.links {
            c.symlink(p, target);
        }
        c.file("init", self.init_script().as_bytes(), 0o755);
        c.file("lib/fastpath/body.sh", format!("{BODY_HELPERS}\n{}\n", self.body).as_bytes(), 0o755);
        Ok(c.finish())
    }
}

/// `path`'s bytes without debug info (`strip --strip-debug` into `tmp`), or as they are
/// when `strip` fails or is missing.
fn stripped(path: &Path, tmp: &Path) -> Result<Vec<u8>, String> {
    let ok = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(tmp)
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let src = if ok { tmp } else { path };
    let data = std::fs::read(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    let _ = std::fs::remove_file(tmp);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_parents_first() {
        let mut c = Cpio::new();
        c.file("a/b/c", b"hello", 0o644);
        c.symlink("bin/sh", "/bin/busybox");
        let b = c.finish();
        assert_eq!(b.len() % 512, 0);
        let s = String::from_utf8_lossy(&b);
        let (a, ab, abc) = (s.find("a\0").unwrap(), s.find("a/b\0").unwrap(), s.find("a/b/c\0").unwrap());
        assert!(a < ab && ab < abc, "{s}");
        assert!(s.contains("TRAILER!!!"));
        // Header of the first entry: magic, ino 1, directory mode.
        assert!(s.starts_with("07070100000001000041ed"), "{}", &s[..30]);
    }
}
