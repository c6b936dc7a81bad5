// fastpathctl add-port: its flags, and the port configuration they make (a vhost-user
// socket, a TAP interface, an AF_XDP queue, a VF or a VXLAN overlay, with the settings
// every kind shares).
//! `fastpathctl add-port`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args as ClapArgs;
use fastpath_host::pci::PciAddress;
use fastpath_host::proto::{PortConfig, PortMode, Request};

use super::call;

/// The flags of `add-port`.
#[derive(Debug, ClapArgs)]
pub struct AddPortArgs {
    /// Port name.
    #[arg(long)]
    pub name: String,
    /// Bridge.
    #[arg(long, default_value = "br0")]
    pub bridge: String,
    /// vhost-user socket path.
    #[arg(long, required_unless_present_any = ["tap", "afxdp", "vf", "vxlan"], conflicts_with_all = ["tap", "afxdp", "vf", "vxlan"])]
    pub socket: Option<PathBuf>,
    /// A TAP interface instead (created if absent, set up): the host's own stack on the bridge.
    #[arg(long, value_name = "IFNAME", conflicts_with_all = ["afxdp", "vf", "vxlan"])]
    pub tap: Option<String>,
    /// One queue of a kernel interface instead, through AF_XDP: IFNAME or IFNAME:QUEUE.
    #[arg(long, value_name = "IFNAME[:QUEUE]", conflicts_with_all = ["vf", "vxlan"])]
    pub afxdp: Option<String>,
    /// An SR-IOV virtual function instead (an 82576 VF bound to vfio-pci: `vf bind`),
    /// driven by the switch from user space: an uplink to the NIC's wire.
    #[arg(long, value_name = "PCI", conflicts_with = "vxlan")]
    pub vf: Option<String>,
    /// A VXLAN overlay instead, for this VNI (with --local, --uplink, --remote).
    #[arg(long, value_name = "VNI", requires_all = ["local", "uplink"])]
    pub vxlan: Option<u32>,
    /// The local VTEP's IPv4 address (vxlan).
    #[arg(long, requires = "vxlan")]
    pub local: Option<std::net::Ipv4Addr>,
    /// The uplink the overlay goes through: afxdp:IFNAME[:QUEUE] or tap:IFNAME (vxlan).
    #[arg(long, value_name = "KIND:IFNAME", requires = "vxlan")]
    pub uplink: Option<String>,
    /// A remote VTEP (repeat for each): broadcast and unknown destinations go to every one (vxlan).
    #[arg(long, requires = "vxlan")]
    pub remote: Vec<std::net::Ipv4Addr>,
    /// The outer next hop's MAC for every remote VTEP [default: ARP for each] (vxlan).
    #[arg(long, requires = "vxlan")]
    pub next_hop_mac: Option<String>,
    /// The switch connects to a listening container instead of listening.
    #[arg(long)]
    pub client: bool,
    /// Owner uid of the socket file (a non-root container must own it to connect).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Owner gid of the socket file.
    #[arg(long)]
    pub gid: Option<u32>,
    /// The container the port belongs to (its id).
    #[arg(long)]
    pub container: Option<String>,
    /// The port's MAC, as its owner was told (checked on its frames with --port-security).
    #[arg(long)]
    pub mac: Option<String>,
    /// The port's IPv4 address (checked on its ARP and IPv4 frames with --port-security mac+ip).
    #[arg(long)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// What the port's frames are checked for: off, mac or mac+ip [default: the switch's port_security].
    #[arg(long)]
    pub port_security: Option<fastpath::config::PortSecurity>,
    /// Most memory its frontend may register, e.g. 256Mi [default: the switch's max_port_memory].
    #[arg(long)]
    pub max_memory: Option<fastpath::config::ByteSize>,
    /// An access port of this VLAN (1-4094): its frames come and go untagged.
    #[arg(long, value_name = "VLAN", conflicts_with = "trunk")]
    pub vlan: Option<u16>,
    /// A trunk carrying these VLANs tagged (802.1Q), e.g. 100,200.
    #[arg(long, value_name = "VLAN,...", value_delimiter = ',')]
    pub trunk: Option<Vec<u16>>,
    /// The port's MTU (68-9198): longer frames to it are dropped (counted as too big),
    /// and a vhost-user frontend is offered it [default: frames up to 9216 bytes].
    #[arg(long)]
    pub mtu: Option<u16>,
    /// Offer a vhost-user frontend the checksum and TSO offloads (on) or not (off)
    /// [default: fastpathd's `offloads`, on].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub offloads: Option<bool>,
    /// Don't offer a vhost-user frontend the packed ring (VIRTIO_F_RING_PACKED): it
    /// gets a split ring even if it asks for packed [default: offered].
    #[arg(long)]
    pub no_packed: bool,
    /// Queue pairs a vhost-user frontend may use, 1-8 (VIRTIO_NET_F_MQ; QEMU's
    /// `queues=N`, testpmd's `queues=N`) [default: 8].
    #[arg(long, value_name = "N")]
    pub queues: Option<u16>,
    /// The worker that polls the port on a switch of several (`fastpathd --cores`; 0 is
    /// the first CPU listed) [default: the worker with the fewest ports].
    #[arg(long, value_name = "N")]
    pub worker: Option<u16>,
    /// Keep every queue pair of a vhost-user frontend on the port's worker [default: with
    /// several workers, pair q's transmit ring is polled by worker (w + q) mod workers].
    #[arg(long)]
    pub no_spread: bool,
}

/// Adds the port `args` describe to the switch behind `ctl`.
pub fn run(ctl: &Path, args: AddPortArgs) -> Result<()> {
    let AddPortArgs {
        name,
        bridge,
        socket,
        tap,
        afxdp,
        vf,
        vxlan,
        local,
        uplink,
        remote,
        next_hop_mac,
        client,
        uid,
        gid,
        container,
        mac,
        ip,
        port_security,
        max_memory,
        vlan,
        trunk,
        mtu,
        offloads,
        no_packed,
        queues,
        worker,
        no_spread,
    } = args;
    let mode = if client { PortMode::Client } else { PortMode::Server };
    let base = match (tap, afxdp, vf) {
        _ if vxlan.is_some() => PortConfig {
            vni: vxlan,
            local,
            remotes: remote,
            next_hop_mac,
            ..fastpath::config::vxlan_over(&name, &bridge, uplink.as_deref().unwrap_or_default())
                .map_err(|e| anyhow!("--{e}"))?
        },
        (Some(ifname), _, _) => PortConfig::tap(name.clone(), bridge, ifname),
        (None, None, Some(pci)) => {
            PciAddress::parse_full(&pci).context("--vf")?;
            PortConfig::vf(name.clone(), bridge, pci)
        }
        (None, Some(x), _) => {
            let (ifname, queue) = match x.split_once(':') {
                Some((i, q)) => (i.to_string(), q.parse().with_context(|| format!("--afxdp {x}: queue '{q}'"))?),
                None => (x.clone(), 0),
            };
            PortConfig::afxdp(name.clone(), bridge, ifname, queue)
        }
        (None, None, None) => PortConfig::new(name.clone(), bridge, socket.unwrap_or_default()),
    };
    let packed = no_packed.then_some(false);
    let port = PortConfig {
        mode,
        uid,
        gid,
        container,
        mac,
        ip,
        port_security,
        max_memory,
        vlan,
        trunk,
        mtu,
        offloads,
        packed,
        queues,
        worker,
        spread: no_spread.then_some(false),
        ..base
    };
    call(ctl, &Request::AddPort(port))?;
    println!("port {name} added");
    Ok(())
}

/// `on` or `off` (also `true`/`false`, `yes`/`no`).
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("'{s}' is not on or off")),
    }
}
