// The guest's virtio-net NICs on vhost-user (`VhostUserNic`): QEMU's chardev, netdev and
// device arguments for each, the shared guest memory they need, and their PCI addresses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The PCI slot (on the root bus, `0000:00:SS.0`) of the first vhost-user NIC; NIC `n` is in
/// slot `VNIC_FIRST_SLOT + n`.
pub const VNIC_FIRST_SLOT: u32 = 5;

/// Who listens on a vhost-user NIC's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostMode {
    /// QEMU connects to the socket (a fastpathd port added with `--socket`), and connects
    /// again every `reconnect_ms` after the switch goes away (0: never).
    Client {
        /// QEMU's `reconnect-ms`.
        reconnect_ms: u32,
    },
    /// QEMU listens on the socket (a fastpathd port added with `--socket ... --client`).
    Server,
}

/// A `virtio-net-pci` NIC on `-netdev vhost-user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserNic {
    /// The vhost-user socket.
    pub socket: PathBuf,
    /// Who listens on it.
    pub mode: VhostMode,
    /// The NIC's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// QEMU's `host_mtu` (the MTU the device offers the guest, VIRTIO_NET_F_MTU), if any.
    pub host_mtu: Option<u16>,
    /// QEMU's `packed=on`: the device offers the packed ring layout (VIRTIO_F_RING_PACKED).
    pub packed: bool,
    /// Queue pairs (QEMU's netdev `queues=N` and the device's `mq=on` past one).
    pub queues: u16,
}

impl VhostUserNic {
    /// A NIC with MAC `mac` on `socket`, QEMU in `mode`.
    pub fn new(socket: &Path, mode: VhostMode, mac: &str) -> Self {
        Self { socket: socket.to_path_buf(), mode, mac: mac.to_string(), host_mtu: None, packed: false, queues: 1 }
    }

    /// The same NIC offering the guest MTU `mtu` (`host_mtu`; QEMU sends it to the backend
    /// with VHOST_USER_NET_SET_MTU).
    #[must_use]
    pub fn with_host_mtu(self, mtu: u16) -> Self {
        Self { host_mtu: Some(mtu), ..self }
    }

    /// The same NIC with packed rings (QEMU's `packed=on`): the guest's driver takes them
    /// when the backend offers them too.
    #[must_use]
    pub fn with_packed(self) -> Self {
        Self { packed: true, ..self }
    }

    /// The same NIC with `n` queue pairs (VIRTIO_NET_F_MQ): QEMU asks the backend for them
    /// (GET_QUEUE_NUM) and gives the device a vector per queue.
    #[must_use]
    pub fn with_queues(self, n: u16) -> Self {
        Self { queues: n, ..self }
    }
}

/// NIC `n`'s PCI address in the guest.
pub fn vnic_pci(n: usize) -> String {
    format!("0000:00:{:02x}.0", VNIC_FIRST_SLOT as usize + n)
}

/// QEMU's arguments for `nics` on a guest of `memory_mb`: guest RAM in a shared memfd (the
/// backend maps it), then a chardev, a netdev and a device for each NIC. Empty without NICs.
pub fn vnic_args(nics: &[VhostUserNic], memory_mb: u32) -> Vec<String> {
    if nics.is_empty() {
        return Vec::new();
    }
    let mut a: Vec<String> = vec![
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={memory_mb}M,share=on"),
        "-numa".into(),
        "node,memdev=mem".into(),
    ];
    for (i, nic) in nics.iter().enumerate() {
        let mut chardev = format!("socket,id=vuc{i},path={}", nic.socket.display());
        match nic.mode {
            VhostMode::Client { reconnect_ms: 0 } => {}
            VhostMode::Client { reconnect_ms } => {
                let _ = write!(chardev, ",reconnect-ms={reconnect_ms}");
            }
            VhostMode::Server => chardev.push_str(",server=on,wait=off"),
        }
        let mut device =
            format!("virtio-net-pci,netdev=vu{i},mac={},bus=pcie.0,addr=0x{:x}", nic.mac, VNIC_FIRST_SLOT as usize + i);
        if let Some(mtu) = nic.host_mtu {
            let _ = write!(device, ",host_mtu={mtu}");
        }
        if nic.packed {
            device.push_str(",packed=on");
        }
        let mut netdev = format!("vhost-user,id=vu{i},chardev=vuc{i}");
        if nic.queues > 1 {
            device.push_str(",mq=on");
            let _ = write!(netdev, ",queues={}", nic.queues);
        }
        a.extend(["-chardev".into(), chardev, "-netdev".into(), netdev, "-device".into(), device]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_then_one_chardev_netdev_device_per_nic() {
        assert!(vnic_args(&[], 256).is_empty());
        let nics = [
            VhostUserNic::new(Path::new("/t/a.sock"), VhostMode::Client { reconnect_ms: 500 }, "02:00:00:00:00:0a"),
            VhostUserNic::new(Path::new("/t/b.sock"), VhostMode::Server, "02:00:00:00:00:0b")
                .with_host_mtu(9000)
                .with_packed()
                .with_queues(2),
        ];
        let a = vnic_args(&nics, 256).join(" ");
        assert!(a.starts_with("-object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem"), "{a}");
        assert!(a.contains("-chardev socket,id=vuc0,path=/t/a.sock,reconnect-ms=500 "), "{a}");
        assert!(a.contains("-chardev socket,id=vuc1,path=/t/b.sock,server=on,wait=off "), "{a}");
        assert!(a.contains("-netdev vhost-user,id=vu0,chardev=vuc0 "), "{a}");
        assert!(a.contains("-netdev vhost-user,id=vu1,chardev=vuc1,queues=2"), "{a}");
        assert!(a.contains("virtio-net-pci,netdev=vu0,mac=02:00:00:00:00:0a,bus=pcie.0,addr=0x5 "), "{a}");
        assert!(
            a.ends_with(
                "virtio-net-pci,netdev=vu1,mac=02:00:00:00:00:0b,bus=pcie.0,addr=0x6,host_mtu=9000,packed=on,mq=on"
            ),
            "{a}"
        );
        assert_eq!(vnic_pci(1), "0000:00:06.0");
    }
}
