// The switch: learning bridges of ports of any kind, on VLANs or not, driven one
// burst at a time by the worker; adding, removing and listing ports, captures and
// mirrors; sleeping in interrupt mode.
//! The polling L2 switch.

mod forward;
pub mod load;
mod offload;
mod snapshot;
#[cfg(test)]
mod tests;
mod vlan;
mod watch;

use std::sync::Arc;

use netlib::LinkState;

use crate::config::{PortConfig, PortDefaults};
use crate::error::SwitchError;
use crate::info::{PortInfo, PortStats};
use crate::link::{Doorbell, LinkRx, LinkTx};
use crate::mactable::MacTable;
use crate::port::{self, SwitchPort};
use crate::security::{guard_for, Guard};
use netlib::vhost::DeviceLimits;

use forward::Groups;
use vlan::Membership;
use watch::Watch;

use crate::capture::tap::CaptureTap;
use fastpath_host::proto::{MirrorConfig, MirrorInfo};

/// Most ports one switch holds.
pub const MAX_PORTS: usize = 64;
/// MAC entries each bridge holds unless the configuration says (`mac_table_size`).
pub const DEFAULT_MAC_TABLE_SIZE: usize = 65_536;

/// A port, opened and configured, waiting to be added to a switch.
#[derive(Debug)]
pub struct NewPort {
    /// Its configuration.
    pub cfg: PortConfig,
    port: Box<dyn SwitchPort>,
    guard: Guard,
}

impl NewPort {
    /// Opens the port `cfg` describes (binds its socket, or prepares to connect),
    /// with `defaults` where it is silent; its guard checks its frames.
    pub fn open(cfg: PortConfig, defaults: &PortDefaults) -> Result<Self, SwitchError> {
        let guard =
            guard_for(&cfg, defaults.port_security).map_err(|why| SwitchError::Open { port: cfg.name.clone(), why })?;
        let limits = DeviceLimits {
            max_memory: cfg.max_memory.map_or(defaults.limits.max_memory, |b| b.0),
            mtu: cfg.mtu,
            offloads: cfg.offloads.unwrap_or(defaults.limits.offloads),
            packed: cfg.packed.unwrap_or(defaults.limits.packed),
            queue_pairs: cfg.queues.unwrap_or(defaults.limits.queue_pairs),
            ..defaults.limits
        };
        let port = port::open(&cfg, limits)?;
        Ok(Self { cfg, port, guard })
    }

    /// A port of any kind (e.g. an in-process [`crate::port::loopback::Loopback`]).
    pub fn with(cfg: PortConfig, port: Box<dyn SwitchPort>) -> Self {
        Self { cfg, port, guard: Guard::default() }
    }

    /// What the port's frames are checked against (port security).
    pub fn guard(&self) -> Guard {
        self.guard
    }

    /// Lends the transmit ring of its peer's queue pair `pair` to another worker (see
    /// [`SwitchPort::lend`]).
    pub fn lend(&mut self, pair: usize) -> Option<netlib::vhost::LaneRx> {
        self.port.lend(pair).map(netlib::vhost::LaneRx::new)
    }

    /// Checks every frame the port sends against `guard` (port security).
    #[must_use]
    pub fn guarded(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }
}

/// Where ports and mirrors are added at start: a switch before its worker runs, or the
/// workers running ([`crate::worker::Running`]).
pub trait AddPorts {
    /// Adds an opened port.
    fn add_port(&mut self, p: NewPort) -> Result<(), SwitchError>;
    /// Adds a mirror.
    fn add_mirror(&mut self, cfg: MirrorConfig) -> Result<(), SwitchError>;
}

impl AddPorts for Switch {
    fn add_port(&mut self, p: NewPort) -> Result<(), SwitchError> {
        Switch::add_port(self, p)
    }
    fn add_mirror(&mut self, cfg: MirrorConfig) -> Result<(), SwitchError> {
        Switch::add_mirror(self, cfg)
    }
}

/// A port in the switch.
#[derive(Debug)]
struct Slot {
    cfg: PortConfig,
    bridge: usize,
    port: Box<dyn SwitchPort>,
    /// What its frames are checked against.
    guard: Guard,
    /// The port's reset count when the bridge last forgot its MACs.
    seen_resets: u64,
    /// Longest frame it takes (its MTU with an Ethernet header and a VLAN tag), or
    /// `u32::MAX` for a port without an MTU.
    max_frame: u32,
    /// Another worker owns it: this slot sends into the link to that worker, and is
    /// neither listed nor watched here.
    remote: bool,
    /// Polled here: the worker's own port, or another's of which it polls queue pairs.
    receives: bool,
}

/// How a port is held by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// Its own.
    Own,
    /// Another worker's: only sent to.
    Remote,
    /// Another worker's, of which this one polls queue pairs.
    RemoteWithLanes,
}

/// Another worker's port, as this worker holds it.
#[derive(Debug)]
pub struct RemoteEnd {
    /// The port's configuration.
    pub cfg: PortConfig,
    /// Its slot (the same in every worker).
    pub slot: usize,
    /// Where this worker sends it frames (its worker drains the link).
    pub link: LinkTx,
    /// The transmit rings of the port's queue pairs that this worker polls (none: it
    /// only sends to the port).
    pub lanes: Vec<netlib::vhost::LaneRx>,
    /// What frames received from those lanes are checked against (the port's guard).
    pub guard: Guard,
}

/// The longest frame a port of MTU `mtu` takes: the MTU, an Ethernet header and a VLAN tag.
fn max_frame_of(mtu: Option<u16>) -> u32 {
    mtu.map_or(u32::MAX, |m| u32::from(m) + u32::from(netlib::pool::ETH_VLAN_HDR_LEN))
}

#[derive(Debug)]
struct Bridge {
    name: String,
    /// Shared by every worker's switch.
    macs: Arc<MacTable>,
    members: Vec<u16>,
    /// Members on a VLAN (access or trunk): none, and the bridge forwards without VLANs.
    vlan_ports: usize,
}

/// The switch: bridges and their ports, driven by [`Switch::poll_once`].
#[derive(Debug)]
pub struct Switch {
    ports: Vec<Option<Slot>>,
    bridges: Vec<Bridge>,
    /// The ageing clock, in seconds (never 0).
    now: u32,
    /// Where each frame of the burst being forwarded goes (kept: no per-burst setup).
    groups: Box<Groups>,
    /// Each slot's VLANs.
    vlans: Vec<Membership>,
    /// How loaded the worker is.
    load: load::Load,
    /// Captures and mirrors.
    watch: Watch,
    /// The offload requests of the burst being forwarded (from senders with offloads).
    offloads: Box<offload::Offloads>,
    /// Each slot's links from the other workers (its own ports' only).
    inbound: Vec<Vec<LinkRx>>,
    /// Rung by the other workers when they send into its links while it sleeps.
    doorbell: Option<Arc<Doorbell>>,
    /// Workers of the switch this one is part of (a port's `worker` must be one of them).
    workers: u16,
}

impl Switch {
    /// A switch with these bridges; MAC entries age after `mac_age_secs`; each bridge's
    /// table holds [`DEFAULT_MAC_TABLE_SIZE`] entries.
    pub fn new(bridges: &[String], mac_age_secs: u32) -> Self {
        Self::with_mac_table(bridges, mac_age_secs, DEFAULT_MAC_TABLE_SIZE)
    }

    /// A switch with these bridges, each with a MAC table of `mac_table_size` entries
    /// (rounded up to a power of two) that age after `mac_age_secs`.
    pub fn with_mac_table(bridges: &[String], mac_age_secs: u32, mac_table_size: usize) -> Self {
        Self {
            ports: (0..MAX_PORTS).map(|_| None).collect(),
            bridges: bridges
                .iter()
                .map(|b| Bridge {
                    name: b.clone(),
                    macs: Arc::new(MacTable::new(mac_table_size, mac_age_secs)),
                    members: Vec::with_capacity(MAX_PORTS),
                    vlan_ports: 0,
                })
                .collect(),
            now: 1,
            groups: Box::default(),
            vlans: vec![Membership::Untagged; MAX_PORTS],
            load: load::Load::default(),
            watch: Watch::default(),
            offloads: Box::default(),
            inbound: (0..MAX_PORTS).map(|_| Vec::new()).collect(),
            doorbell: None,
            workers: 1,
        }
    }

    /// Part of a switch of `workers` workers (ports may ask for worker 0 to `workers - 1`).
    #[must_use]
    pub fn one_of(mut self, workers: u16) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Sleeps (interrupt mode) on `bell` too: the one other workers ring when they send it
    /// frames.
    #[must_use]
    pub fn with_doorbell(mut self, bell: Arc<Doorbell>) -> Self {
        self.doorbell = Some(bell);
        self
    }

    /// A switch whose bridges share their MAC tables with `other`'s (another worker's).
    #[must_use]
    pub fn sharing_macs_with(mut self, other: &Switch) -> Self {
        for b in &mut self.bridges {
            if let Some(o) = other.bridges.iter().find(|o| o.name == b.name) {
                b.macs = Arc::clone(&o.macs);
            }
        }
        self
    }

    /// Bridge names.
    pub fn bridge_names(&self) -> Vec<String> {
        self.bridges.iter().map(|b| b.name.clone()).collect()
    }

    /// Checks that a port could be added (bridge exists, name and socket free).
    pub fn check_new(&self, cfg: &PortConfig) -> Result<(), SwitchError> {
        if !self.bridges.iter().any(|b| b.name == cfg.bridge) {
            return Err(SwitchError::NoSuchBridge { bridge: cfg.bridge.clone(), known: self.bridge_names() });
        }
        for p in self.ports.iter().flatten() {
            if p.cfg.name == cfg.name {
                return Err(SwitchError::PortExists(cfg.name.clone()));
            }
            if p.cfg.place() == cfg.place() {
                return Err(SwitchError::SocketInUse { socket: cfg.place().into(), port: p.cfg.name.clone() });
            }
        }
        if self.ports.iter().all(Option::is_some) {
            return Err(SwitchError::Full(MAX_PORTS));
        }
        if let Some(w) = cfg.worker.filter(|&w| w >= self.workers) {
            let (n, s) = (self.workers, if self.workers == 1 { "" } else { "s" });
            let why = format!("worker {w}: this switch runs {n} worker{s} (0 to {}; fastpathd --cores)", n - 1);
            return Err(SwitchError::Open { port: cfg.name.clone(), why });
        }
        Ok(())
    }

    /// Adds an opened port.
    pub fn add_port(&mut self, p: NewPort) -> Result<(), SwitchError> {
        self.check_new(&p.cfg)?;
        let slot = self.ports.iter().position(Option::is_none).ok_or(SwitchError::Full(MAX_PORTS))?;
        self.add_port_at(p, slot, Vec::new())
    }

    /// Adds an opened port at `slot` (with several workers, the same slot in every one),
    /// taking what other workers send it from `inbound`.
    pub fn add_port_at(&mut self, p: NewPort, slot: usize, inbound: Vec<LinkRx>) -> Result<(), SwitchError> {
        self.check_new(&p.cfg)?;
        tracing::info!("port {} added to {} ({:?} on {})", p.cfg.name, p.cfg.bridge, p.cfg.mode, p.cfg.place());
        self.insert(slot, p.cfg, p.port, p.guard, Placed::Own)?;
        self.inbound[slot] = inbound;
        Ok(())
    }

    /// Adds the port of another worker (see [`RemoteEnd`]).
    pub fn add_remote(&mut self, end: RemoteEnd) -> Result<(), SwitchError> {
        let RemoteEnd { cfg, slot, link, lanes, guard } = end;
        self.check_new(&cfg)?;
        if lanes.is_empty() {
            let port = Box::new(crate::port::remote::RemotePort::new(link));
            return self.insert(slot, cfg, port, Guard::default(), Placed::Remote);
        }
        let pairs: Vec<String> = lanes.iter().map(|l| l.pair().to_string()).collect();
        tracing::info!("port {}: this worker polls queue pair(s) {}", cfg.name, pairs.join(","));
        let port = Box::new(crate::port::lanes::LanesPort::new(link, lanes));
        self.insert(slot, cfg, port, guard, Placed::RemoteWithLanes)
    }

    fn insert(
        &mut self,
        slot: usize,
        cfg: PortConfig,
        port: Box<dyn SwitchPort>,
        guard: Guard,
        placed: Placed,
    ) -> Result<(), SwitchError> {
        let remote = placed != Placed::Own;
        let receives = placed != Placed::Remote;
        let b = self.bridges.iter().position(|b| b.name == cfg.bridge);
        let (Some(b), Some(None)) = (b, self.ports.get(slot)) else {
            return Err(SwitchError::Full(MAX_PORTS));
        };
        let seen_resets = port.counters().resets;
        let vlans = Membership::of(&cfg);
        self.bridges[b].vlan_ports += usize::from(vlans.is_vlan());
        self.vlans[slot] = vlans;
        let max_frame = max_frame_of(cfg.mtu);
        self.ports[slot] = Some(Slot { cfg, bridge: b, port, guard, seen_resets, max_frame, remote, receives });
        self.bridges[b].members.push(slot as u16);
        self.watch.ports_changed(&self.ports);
        Ok(())
    }

    /// Removes a port by name: its socket closes, its memory is unmapped, its MACs forgotten.
    pub fn del_port(&mut self, name: &str) -> Result<(), SwitchError> {
        let slot = self
            .ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name))
            .ok_or_else(|| SwitchError::NoSuchPort(name.to_string()))?;
        let Some(p) = self.ports[slot].take() else {
            return Err(SwitchError::NoSuchPort(name.to_string()));
        };
        let b = &mut self.bridges[p.bridge];
        b.members.retain(|&m| m as usize != slot);
        b.macs.flush_port(slot as u16);
        b.vlan_ports -= usize::from(std::mem::take(&mut self.vlans[slot]).is_vlan());
        self.inbound[slot].clear();
        if !p.remote {
            tracing::info!("port {name} removed");
        }
        self.watch.ports_changed(&self.ports);
        Ok(())
    }

    /// Starts a capture of the port `tap` names.
    pub fn capture(&mut self, tap: CaptureTap) -> Result<(), SwitchError> {
        self.watch.capture(&self.ports, tap)
    }

    /// Ends capture `id` (unmapping its ring); false if it had ended already.
    pub fn uncapture(&mut self, id: u64) -> bool {
        self.watch.uncapture(id)
    }

    /// Mirrors a port's frames to another port (once both exist).
    pub fn add_mirror(&mut self, cfg: MirrorConfig) -> Result<(), SwitchError> {
        self.watch.add_mirror(&self.ports, cfg)
    }

    /// Stops mirroring `from` to `to`.
    pub fn del_mirror(&mut self, from: &str, to: &str) -> Result<(), SwitchError> {
        self.watch.del_mirror(from, to)
    }

    /// The mirrors with their counters.
    pub fn mirrors(&self) -> Vec<MirrorInfo> {
        self.watch.mirrors()
    }

    /// Ports and their counters.
    pub fn list(&self) -> Vec<PortInfo> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().filter(|p| !p.remote).map(|p| (i, p)))
            .map(|(slot, p)| PortInfo {
                name: p.cfg.name.clone(),
                bridge: p.cfg.bridge.clone(),
                socket: p.cfg.place(),
                mode: p.cfg.mode,
                stats: PortStats { counters: p.port.counters(), link_up: p.port.link() == LinkState::Up },
                last_fault: p.port.last_fault().map(str::to_owned),
                kind_counters: p.port.kind_counters().into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
                macs: self.bridges[p.bridge]
                    .macs
                    .entries(self.now)
                    .into_iter()
                    .filter(|&(_, _, port)| port as usize == slot)
                    .map(|(vlan, m, _)| {
                        let mac = m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
                        if vlan == 0 {
                            mac
                        } else {
                            format!("{mac} vlan {vlan}")
                        }
                    })
                    .collect(),
                vlan: p.cfg.vlan,
                trunk: p.cfg.trunk.clone(),
                worker: None,
                pair_workers: Vec::new(),
            })
            .collect()
    }

    /// What this worker sent the ports other workers own, and what their links dropped.
    pub fn remote_counters(&self) -> Vec<(String, netlib::PortCounters)> {
        self.ports.iter().flatten().filter(|p| p.remote).map(|p| (p.cfg.name.clone(), p.port.counters())).collect()
    }

    /// Advances the ageing clock by one second.
    pub fn tick_second(&mut self) {
        self.now = self.now.wrapping_add(1).max(1);
    }

    /// Interrupt mode: asks every port's peer to signal when it sends, checks once
    /// more for traffic, then sleeps on those signals and the control fds for up to
    /// `timeout`. Back in polling mode on return.
    pub fn sleep(&mut self, timeout: std::time::Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut busy = false;
        for p in self.ports.iter_mut().flatten() {
            busy |= p.port.arm_wakeup();
        }
        if let Some(bell) = &self.doorbell {
            bell.going_to_sleep();
        }
        busy |= self.inbound.iter().flatten().any(LinkRx::ready);
        let mut woken = [false; MAX_PORTS];
        if !busy {
            let mut owners: Vec<(usize, bool)> = Vec::with_capacity(2 * MAX_PORTS + 1);
            let mut fds = Vec::with_capacity(2 * MAX_PORTS + 1);
            if let Some(bell) = &self.doorbell {
                owners.push((usize::MAX, false));
                fds.push(PollFd::new(bell.fd(), PollFlags::POLLIN));
            }
            for (i, p) in self.ports.iter().enumerate() {
                let Some(p) = p else { continue };
                let w = p.port.wake_fds();
                let data = w.data.into_iter().map(|fd| (fd, true));
                for (fd, data) in w.control.map(|fd| (fd, false)).into_iter().chain(data) {
                    owners.push((i, data));
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
            }
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0 {
                for (fd, &(i, data)) in fds.iter().zip(&owners) {
                    if data && fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
                        woken[i] = true;
                    }
                }
            }
        }
        for (i, p) in self.ports.iter_mut().enumerate() {
            if let Some(p) = p {
                p.port.disarm_wakeup(woken[i]);
            }
        }
        if let Some(bell) = &self.doorbell {
            bell.awake();
        }
    }

    /// One pass: every port's pending burst goes to its destinations. Returns
    /// frames moved. The pass and each burst are counted in the worker's load.
    pub fn poll_once(&mut self) -> usize {
        let mut moved = 0;
        for s in 0..self.ports.len() {
            if self.ports[s].as_ref().is_some_and(|p| p.receives) {
                let n = self.forward_from(s);
                self.load.burst(n);
                moved += n;
                if !self.inbound[s].is_empty() {
                    moved += self.deliver_inbound(s);
                }
            }
        }
        self.load.pass(moved);
        moved
    }
}
