// What the switch copies besides forwarding: captures (frames into a shared ring) and
// mirrors (frames to another port), by port and direction; when none runs, the forwarding
// loop looks at one flag per burst and nothing else.
//! Captures and mirrors.

use fastpath_host::proto::{Direction as Dir, MirrorConfig, MirrorInfo};
use netlib::pool::BURST;
use netlib::vhost::{Frames, TagEdit};

use crate::capture::pcapng::Direction;
use crate::capture::session::now_ns;
use crate::capture::tap::CaptureTap;
use crate::error::SwitchError;

use super::{Slot, MAX_PORTS};

/// Every position of a burst, for copying it whole.
pub(super) const ALL: [u8; BURST] = {
    let mut a = [0u8; BURST];
    let mut i = 0;
    while i < BURST {
        a[i] = i as u8;
        i += 1;
    }
    a
};

/// A mirror and where its ports are now.
#[derive(Debug)]
struct Mirror {
    cfg: MirrorConfig,
    /// The slots of `from` and `to`, while both exist and this worker owns `from` (what is
    /// sent to `from` passes here).
    slots: Option<(u16, u16)>,
    /// The slots of `from` and `to`, while both exist and this worker receives from `from`:
    /// its own port, or one whose queue pairs it polls for the port's worker.
    rx_slots: Option<(u16, u16)>,
    sent: u64,
    dropped: u64,
}

/// The captures and mirrors of a switch.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// Whether any capture or mirror is active: the one thing a burst looks at.
    pub on: bool,
    captures: Vec<(u16, CaptureTap)>,
    mirrors: Vec<Mirror>,
}

type Ports = Vec<Option<Slot>>;

fn slot_of(ports: &Ports, name: &str) -> Option<u16> {
    ports.iter().position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name)).map(|s| s as u16)
}

/// The slot of a port this worker owns (its frames, both ways, pass here).
fn own_slot_of(ports: &Ports, name: &str) -> Option<u16> {
    ports.iter().position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name && !p.remote)).map(|s| s as u16)
}

/// The slot of a port this worker receives from: one it owns, or one whose queue pairs it
/// polls for the port's own worker (frames the port sends on those pairs pass only here).
fn rx_slot_of(ports: &Ports, name: &str) -> Option<u16> {
    ports.iter().position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name && p.receives)).map(|s| s as u16)
}

impl Watch {
    fn refresh(&mut self) {
        self.on = !self.captures.is_empty() || self.mirrors.iter().any(Mirror::active);
    }

    /// Starts a capture of the port `tap` names: a capture of received frames only
    /// (`Dir::Rx`) also where this worker polls some of the port's queue pairs for
    /// the port's own worker.
    pub fn capture(&mut self, ports: &Ports, mut tap: CaptureTap) -> Result<(), SwitchError> {
        let slot = if tap.spec.direction == Dir::Rx {
            rx_slot_of(ports, &tap.spec.port)
        } else {
            own_slot_of(ports, &tap.spec.port)
        };
        let Some(slot) = slot else {
            tap.detach();
            return Err(SwitchError::NoSuchPort(tap.spec.port.clone()));
        };
        tracing::info!("capture {} of port {} ({}) started", tap.id, tap.spec.port, tap.spec.direction.as_str());
        self.captures.push((slot, tap));
        self.refresh();
        Ok(())
    }

    /// Ends capture `id` (its ring is unmapped and its memfd closed); true if it ran.
    pub fn uncapture(&mut self, id: u64) -> bool {
        let before = self.captures.len();
        self.captures.retain(|(_, t)| t.id != id);
        self.refresh();
        let ended = self.captures.len() != before;
        if ended {
            tracing::info!("capture {id} ended");
        }
        ended
    }

    /// Adds a mirror (active once both its ports exist).
    pub fn add_mirror(&mut self, ports: &Ports, cfg: MirrorConfig) -> Result<(), SwitchError> {
        if cfg.from == cfg.to {
            return Err(SwitchError::MirrorToItself(cfg.from));
        }
        if self.mirrors.iter().any(|m| m.cfg.from == cfg.from && m.cfg.to == cfg.to) {
            return Err(SwitchError::MirrorExists { from: cfg.from, to: cfg.to });
        }
        self.mirrors.push(Mirror { cfg, slots: None, rx_slots: None, sent: 0, dropped: 0 });
        self.ports_changed(ports);
        Ok(())
    }

    /// Removes a mirror.
    pub fn del_mirror(&mut self, from: &str, to: &str) -> Result<(), SwitchError> {
        let at = self
            .mirrors
            .iter()
            .position(|m| m.cfg.from == from && m.cfg.to == to)
            .ok_or_else(|| SwitchError::NoSuchMirror { from: from.into(), to: to.into() })?;
        self.mirrors.remove(at);
        self.refresh();
        Ok(())
    }

    /// The mirrors with their counters.
    pub fn mirrors(&self) -> Vec<MirrorInfo> {
        self.mirrors
            .iter()
            .map(|m| MirrorInfo { mirror: m.cfg.clone(), active: m.active(), sent: m.sent, dropped: m.dropped })
            .collect()
    }

    /// After a port was added or removed: captures of a port that is gone end, mirrors
    /// follow their ports' names to their slots.
    pub fn ports_changed(&mut self, ports: &Ports) {
        self.captures.retain(|(s, t)| ports[*s as usize].as_ref().is_some_and(|p| p.cfg.name == t.spec.port));
        for m in &mut self.mirrors {
            let to = slot_of(ports, &m.cfg.to);
            m.slots = own_slot_of(ports, &m.cfg.from).zip(to);
            m.rx_slots = rx_slot_of(ports, &m.cfg.from).zip(to);
        }
        self.refresh();
    }

    /// Port `s` received the burst `frames`: captures copy it, mirrors send it on.
    pub fn received(&mut self, s: usize, ports: &mut Ports) {
        let ts = if self.captures.is_empty() { 0 } else { now_ns() };
        if let Some(sp) = ports[s].as_ref() {
            let frames = sp.port.frames();
            for (_, t) in self.captures.iter_mut().filter(|(p, t)| *p as usize == s && t.spec.direction.rx()) {
                t.copy(&frames, None, Direction::Inbound, ts);
            }
        }
        for i in 0..self.mirrors.len() {
            let m = &self.mirrors[i];
            if let Some((from, to)) = m.rx_slots.filter(|&(f, _)| f as usize == s && m.cfg.direction.rx()) {
                let n = ports[from as usize].as_ref().map_or(0, |p| p.port.frames().len());
                self.mirror(from as usize, to as usize, TagEdit::Keep, &ALL[..n], ports, i);
            }
        }
    }

    /// Port `o` was handed frames `picks` of port `s`'s burst with `edit`: captures copy
    /// them, mirrors send them on.
    pub fn sent(&mut self, s: usize, o: usize, edit: TagEdit, picks: &[u8], ports: &mut Ports) {
        if let Some(sp) = ports[s].as_ref() {
            let ts = if self.captures.is_empty() { 0 } else { now_ns() };
            let raw = sp.port.frames();
            let frames = raw.edited(edit);
            for (_, t) in self.captures.iter_mut().filter(|(p, t)| *p as usize == o && t.spec.direction.tx()) {
                t.copy(&frames, Some(picks), Direction::Outbound, ts);
            }
        }
        for i in 0..self.mirrors.len() {
            let m = &self.mirrors[i];
            if let Some((_, to)) = m.slots.filter(|&(f, _)| f as usize == o && m.cfg.direction.tx()) {
                self.mirror(s, to as usize, edit, picks, ports, i);
            }
        }
    }

    /// Port `o` was handed `frames` (at `picks`) that another worker forwarded to it:
    /// captures copy them, mirrors send them on.
    pub fn delivered(&mut self, o: usize, frames: &Frames<'_>, picks: &[u8], ports: &mut Ports) {
        let ts = if self.captures.is_empty() { 0 } else { now_ns() };
        for (_, t) in self.captures.iter_mut().filter(|(p, t)| *p as usize == o && t.spec.direction.tx()) {
            t.copy(frames, Some(picks), Direction::Outbound, ts);
        }
        for m in &mut self.mirrors {
            if let Some((_, to)) = m.slots.filter(|&(f, _)| f as usize == o && m.cfg.direction.tx()) {
                match ports[to as usize].as_mut() {
                    Some(dst) => m.send(dst, frames, picks),
                    None => m.dropped += picks.len() as u64,
                }
            }
        }
    }

    /// Sends frames `picks` of port `s`'s burst (with `edit`) to port `to` for mirror `i`,
    /// counting what it took and what it dropped; a copy back to the sender is dropped.
    fn mirror(&mut self, s: usize, to: usize, edit: TagEdit, picks: &[u8], ports: &mut Ports, i: usize) {
        let m = &mut self.mirrors[i];
        let Ok([Some(src), Some(dst)]) = ports.get_disjoint_mut([s, to]) else {
            m.dropped += picks.len() as u64;
            return;
        };
        m.send(dst, &src.port.frames().edited(edit), picks);
    }
}

impl Mirror {
    /// Whether this worker copies some of the mirrored port's frames.
    fn active(&self) -> bool {
        self.slots.is_some() || self.rx_slots.is_some()
    }

    /// Sends `frames` at `picks` to the mirror's port `dst`, counting what it took and
    /// what it dropped.
    fn send(&mut self, dst: &mut Slot, frames: &Frames<'_>, picks: &[u8]) {
        let before = dst.port.counters().tx_packets;
        dst.port.send(frames, picks);
        let took = dst.port.counters().tx_packets.saturating_sub(before).min(picks.len() as u64);
        self.sent += took;
        self.dropped += picks.len() as u64 - took;
    }
}

const _: () = assert!(MAX_PORTS <= u16::MAX as usize);
