// The switch's data plane: ports (vhost-user backends) grouped in learning
// bridges; one pass moves a burst from each port to its destinations with one copy.
//! The polling L2 switch.

use netlib::vhost::{
    copy_chain, read_chain, Chain, ChainFault, VhostBackend, VhostMode, GUEST_RX, GUEST_TX, RX_NET_HDR,
};
use netlib::{LinkState, Port, PortCounters};
use std::os::fd::AsRawFd;

use crate::config::{PortConfig, PortMode};
use crate::error::SwitchError;
use crate::info::{PortInfo, PortStats};
use crate::mactable::{is_multicast, Mac, MacTable};

/// Packets taken from one port per pass.
pub const BURST: usize = 32;
/// Most ports one switch holds.
pub const MAX_PORTS: usize = 64;
const NET_HDR: u32 = 12;

/// One switch port.
#[derive(Debug)]
pub struct SwitchPort {
    /// Its configuration.
    pub cfg: PortConfig,
    bridge: usize,
    backend: VhostBackend,
    stats: PortCounters,
    seen_resets: u64,
}

impl SwitchPort {
    /// Opens the port's socket (binds it, or prepares to connect).
    pub fn open(cfg: PortConfig) -> Result<Self, SwitchError> {
        let mode = match cfg.mode {
            PortMode::Server => VhostMode::Listen,
            PortMode::Client => VhostMode::Connect,
        };
        let mut backend = VhostBackend::open(&cfg.socket, mode)
            .map_err(|e| SwitchError::Open { port: cfg.name.clone(), why: e.to_string() })?;
        backend.set_name(format!("port {} ({})", cfg.name, cfg.socket.display()));
        Ok(Self { cfg, bridge: 0, backend, stats: PortCounters::default(), seen_resets: 0 })
    }
}

#[derive(Debug)]
struct Bridge {
    name: String,
    macs: MacTable,
    members: Vec<u16>,
}

/// A popped packet waiting to be switched.
#[derive(Debug, Clone, Copy)]
struct Pending {
    chain: Chain,
    dst: Mac,
    ok: bool,
}

/// The switch: bridges and their ports, driven by [`Switch::poll_once`].
#[derive(Debug)]
pub struct Switch {
    ports: Vec<Option<SwitchPort>>,
    bridges: Vec<Bridge>,
    now: u32,
    pending: Vec<Pending>,
}

impl Switch {
    /// A switch with these bridges; MAC entries age after `mac_age_secs`.
    pub fn new(bridges: &[String], mac_age_secs: u32) -> Self {
        Self {
            ports: (0..MAX_PORTS).map(|_| None).collect(),
            bridges: bridges
                .iter()
                .map(|b| Bridge {
                    name: b.clone(),
                    macs: MacTable::new(4096, mac_age_secs),
                    members: Vec::with_capacity(MAX_PORTS),
                })
                .collect(),
            now: 1,
            pending: vec![Pending { chain: Chain::empty(0), dst: [0; 6], ok: false }; BURST],
        }
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
            if p.cfg.socket == cfg.socket {
                return Err(SwitchError::SocketInUse { socket: cfg.socket.clone(), port: p.cfg.name.clone() });
            }
        }
        if self.ports.iter().all(Option::is_some) {
            return Err(SwitchError::Full(MAX_PORTS));
        }
        Ok(())
    }

    /// Adds an opened port.
    pub fn add_port(&mut self, mut p: SwitchPort) -> Result<(), SwitchError> {
        self.check_new(&p.cfg)?;
        let b = self.bridges.iter().position(|b| b.name == p.cfg.bridge).expect("checked");
        let slot = self.ports.iter().position(Option::is_none).expect("checked");
        p.bridge = b;
        tracing::info!(
            "port {} added to {} ({:?} on {})",
            p.cfg.name,
            p.cfg.bridge,
            p.cfg.mode,
            p.cfg.socket.display()
        );
        self.ports[slot] = Some(p);
        self.bridges[b].members.push(slot as u16);
        Ok(())
    }

    /// Removes a port by name: its socket closes, its memory is unmapped, its MACs forgotten.
    pub fn del_port(&mut self, name: &str) -> Result<(), SwitchError> {
        let slot = self
            .ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name))
            .ok_or_else(|| SwitchError::NoSuchPort(name.to_string()))?;
        let p = self.ports[slot].take().expect("found");
        let b = &mut self.bridges[p.bridge];
        b.members.retain(|&m| m as usize != slot);
        b.macs.flush_port(slot as u16);
        tracing::info!("port {name} removed");
        Ok(())
    }

    /// Ports and their counters.
    pub fn list(&self) -> Vec<PortInfo> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
            .map(|(slot, p)| PortInfo {
                name: p.cfg.name.clone(),
                bridge: p.cfg.bridge.clone(),
                socket: p.cfg.socket.display().to_string(),
                mode: p.cfg.mode,
                stats: PortStats {
                    counters: PortCounters { resets: p.backend.counters().resets, ..p.stats },
                    link_up: p.backend.link() == LinkState::Up,
                },
                last_fault: p.backend.last_fault().map(str::to_owned),
                macs: self.bridges[p.bridge]
                    .macs
                    .entries(self.now)
                    .into_iter()
                    .filter(|&(_, port)| port as usize == slot)
                    .map(|(m, _)| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
                    .collect(),
            })
            .collect()
    }

    /// Advances the ageing clock by one second.
    pub fn tick_second(&mut self) {
        self.now = self.now.wrapping_add(1).max(1);
    }

    /// Interrupt mode: asks every live port to kick when it sends, checks once
    /// more for traffic, then sleeps on the kicks and control sockets for up to
    /// `timeout`. Back in polling mode on return.
    pub fn sleep(&mut self, timeout: std::time::Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        for p in self.ports.iter_mut().flatten() {
            if let Some(dev) = p.backend.device_mut() {
                dev.set_kicks(GUEST_TX, true);
            }
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let busy = self.ports.iter_mut().flatten().any(|p| {
            p.backend.device_mut().and_then(|d| d.queue(GUEST_TX)).is_some_and(|q| !matches!(q.available(), Ok(0)))
        });
        let mut readable_kicks: u64 = 0;
        if !busy {
            let mut owners = Vec::with_capacity(2 * MAX_PORTS);
            let mut fds = Vec::with_capacity(2 * MAX_PORTS);
            for (i, p) in self.ports.iter().enumerate() {
                if let Some(p) = p {
                    for (k, fd) in p.backend.wait_fds().into_iter().enumerate() {
                        owners.push((i, k == 1));
                        fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    }
                }
            }
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0 {
                for (fd, (i, is_kick)) in fds.iter().zip(&owners) {
                    if *is_kick && fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
                        readable_kicks |= 1 << i;
                    }
                }
            }
        }
        for (i, p) in self.ports.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            if let Some(dev) = p.backend.device_mut() {
                dev.set_kicks(GUEST_TX, false);
                if readable_kicks & (1 << i) != 0 {
                    if let Some(k) = dev.kick_fd(GUEST_TX) {
                        let mut b = [0u8; 8];
                        let _ = nix::unistd::read(k.as_raw_fd(), &mut b);
                    }
                }
            }
        }
    }

    /// One pass: every port's pending burst goes to its destinations. Returns
    /// packets moved.
    pub fn poll_once(&mut self) -> usize {
        let mut moved = 0;
        for s in 0..self.ports.len() {
            if self.ports[s].is_some() {
                moved += self.poll_port(s);
            }
        }
        moved
    }

    fn poll_port(&mut self, s: usize) -> usize {
        // The burst buffer lives in the switch: no per-pass initialisation.
        let mut pending = std::mem::take(&mut self.pending);
        let n = self.poll_port_with(s, &mut pending);
        self.pending = pending;
        n
    }

    fn poll_port_with(&mut self, s: usize, pending: &mut [Pending]) -> usize {
        let sp = self.ports[s].as_mut().expect("caller checked");
        if !sp.backend.poll() {
            // A reset (fault or frontend gone): forget the MACs learned on this port.
            let resets = sp.backend.counters().resets;
            if resets != sp.seen_resets {
                sp.seen_resets = resets;
                self.bridges[sp.bridge].macs.flush_port(s as u16);
            }
            return 0;
        }
        let bridge = sp.bridge;
        // 1. Pop a burst from the source and learn its MACs.
        let n = {
            let dev = sp.backend.device_mut().expect("ready");
            let (mem, q) = dev.mem_and_queue(GUEST_TX);
            // A frontend that never sends may leave its transmit ring unstarted.
            let Some(q) = q else { return 0 };
            let n = match q.available() {
                Ok(0) => return 0,
                Ok(n) => (n as usize).min(BURST),
                Err(f) => {
                    sp.backend.fault(&f.into());
                    return 0;
                }
            };
            // The ring lines and packets were written by the frontend's core: start every
            // load of the burst before waiting on any (descriptors, then the headers).
            q.prefetch(n as u16);
            for slot in pending.iter_mut().take(n) {
                if let Err(f) = q.pop_into(mem, false, &mut slot.chain) {
                    sp.backend.fault(&f.into());
                    return 0;
                }
                if let Some(seg) = slot.chain.segs().first() {
                    seg.prefetch();
                }
            }
            let macs = &mut self.bridges[bridge].macs;
            // A burst usually comes from one sender: learn each run of one source MAC once.
            let mut learned: Option<Mac> = None;
            for slot in pending.iter_mut().take(n) {
                let c = &slot.chain;
                let mut eth = [0u8; 12];
                let (got, _) = read_chain(mem, c, NET_HDR, &mut eth);
                slot.ok = got == 12;
                if !slot.ok {
                    sp.stats.rx_errors += 1;
                    continue;
                }
                slot.dst.copy_from_slice(&eth[0..6]);
                let src: Mac = eth[6..12].try_into().expect("6 bytes");
                if learned != Some(src) && !is_multicast(&src) {
                    macs.learn(&src, s as u16, self.now);
                    learned = Some(src);
                }
                sp.stats.rx_packets += 1;
                sp.stats.rx_bytes += u64::from(c.total - NET_HDR);
            }
            n
        };
        if n == 0 {
            return 0;
        }
        // 2. Copy each packet into its destinations' receive rings.
        let mut touched: u64 = 0;
        let mut room = Room::default();
        // A burst usually goes to one receiver: look each run of one destination MAC up once.
        let mut last: Option<(Mac, Option<u16>)> = None;
        for pk in pending.iter().take(n).filter(|p| p.ok) {
            let unicast = match last {
                Some((mac, port)) if mac == pk.dst => port,
                _ => {
                    let port =
                        if is_multicast(&pk.dst) { None } else { self.bridges[bridge].macs.lookup(&pk.dst, self.now) };
                    last = Some((pk.dst, port));
                    port
                }
            };
            match unicast {
                Some(o) if o as usize == s => {
                    self.ports[s].as_mut().expect("present").stats.drop_filtered += 1;
                }
                Some(o) => touched |= self.deliver(s, o as usize, &pk.chain, &mut room),
                None => {
                    for i in 0..self.bridges[bridge].members.len() {
                        let o = self.bridges[bridge].members[i] as usize;
                        if o != s {
                            touched |= self.deliver(s, o, &pk.chain, &mut room);
                        }
                    }
                }
            }
        }
        // 3. Return the source's buffers and publish every ring we wrote.
        {
            let sp = self.ports[s].as_mut().expect("present");
            if let Some(dev) = sp.backend.device_mut() {
                if let Some(q) = dev.queue(GUEST_TX) {
                    for pk in pending.iter().take(n) {
                        q.push_used(pk.chain.head, 0);
                    }
                    q.publish();
                }
                dev.notify(GUEST_TX);
            }
        }
        for o in 0..MAX_PORTS {
            if touched & (1 << o) != 0 {
                if let Some(dev) = self.ports[o].as_mut().and_then(|p| p.backend.device_mut()) {
                    if let Some(q) = dev.queue(GUEST_RX) {
                        q.publish();
                    }
                    dev.notify(GUEST_RX);
                }
            }
        }
        n
    }
}

impl Switch {
    /// Copies one packet from port `s` into port `o`'s receive ring; returns the
    /// bit of `o` if its ring was written (to publish later), else 0. A fault in
    /// `o`'s ring resets `o` alone.
    #[inline]
    fn deliver(&mut self, s: usize, o: usize, chain: &Chain, room: &mut Room) -> u64 {
        match deliver_one(&mut self.ports, s, o, chain, room) {
            Ok(true) => 1 << o,
            Ok(false) => 0,
            Err(f) => {
                // The port resets: what was counted of its ring no longer holds.
                room.known &= !(1u64 << o);
                if let Some(p) = self.ports[o].as_mut() {
                    p.backend.fault(&f.into());
                }
                0
            }
        }
    }
}

/// Receive buffers each destination is known to have offered, per burst: a
/// destination's avail index (a line its frontend keeps writing) is read once when
/// the burst first reaches it and again only when that count runs out.
struct Room {
    /// Bit `o`: `left[o]` holds a count read during this burst.
    known: u64,
    /// Chains known available and not yet taken.
    left: [u16; MAX_PORTS],
    /// The destination chain being filled (walked in place, not moved per packet).
    chain: Chain,
}

impl Default for Room {
    fn default() -> Self {
        Self { known: 0, left: [0; MAX_PORTS], chain: Chain::empty(0) }
    }
}

#[inline]
fn deliver_one(
    ports: &mut [Option<SwitchPort>],
    s: usize,
    o: usize,
    chain: &Chain,
    room: &mut Room,
) -> Result<bool, ChainFault> {
    let Ok([Some(src), Some(dst)]) = ports.get_disjoint_mut([s, o]) else {
        return Ok(false);
    };
    let Some(src_dev) = src.backend.device_mut() else { return Ok(false) };
    let src_mem = src_dev.mem();
    let Some(dev) = dst.backend.device_mut() else {
        dst.stats.drop_ring_full += 1;
        dst.stats.tx_dropped += 1;
        return Ok(false);
    };
    let (mem, q) = dev.mem_and_queue(GUEST_RX);
    let Some(q) = q else { return Ok(false) };
    let bit = 1u64 << o;
    if room.known & bit == 0 || room.left[o] == 0 {
        room.left[o] = q.available()?;
        room.known |= bit;
        if room.left[o] == 0 {
            dst.stats.drop_ring_full += 1;
            dst.stats.tx_dropped += 1;
            return Ok(false);
        }
        q.prefetch(room.left[o].min(BURST as u16));
    }
    room.left[o] -= 1;
    let dc = &mut room.chain;
    q.pop_into(mem, true, dc)?;
    if let Some(len) = copy_chain(mem, dc, &RX_NET_HDR, src_mem, chain, NET_HDR) {
        q.push_used(dc.head, len);
        dst.stats.tx_packets += 1;
        dst.stats.tx_bytes += u64::from(len - NET_HDR);
    } else {
        q.push_used(dc.head, 0);
        dst.stats.drop_too_big += 1;
        dst.stats.tx_dropped += 1;
    }
    Ok(true)
}
