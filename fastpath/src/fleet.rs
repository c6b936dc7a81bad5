// Several polling workers, one switch each, behind one command channel: the router places
// each new port on the least busy worker (the others get its remote end and a link to it),
// sends each command where it belongs, and merges the answers so that the control socket
// and the metrics see one switch.
//! Several workers.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use fastpath_host::proto::MirrorInfo;

use crate::capture::tap::CaptureTaps;
use crate::error::SwitchError;
use crate::info::PortInfo;
use crate::link::{link, Doorbell};
use crate::metrics::Snapshot;
use crate::switch::{NewPort, RemoteEnd, Switch, MAX_PORTS};
use crate::worker::{self, Command, FirstFrame, Idle};
use netlib::vhost::LaneRx;

/// Starts a worker for each switch, pinned to its CPU in `cores` (`None`: not pinned), and
/// returns the channel that commands them all: the worker's own with one switch, else a
/// router's. The switches must share their MAC tables ([`Switch::sharing_macs_with`]).
pub fn spawn(
    switches: Vec<Switch>,
    cores: &[Option<usize>],
    stop: &Arc<AtomicBool>,
    idle: Idle,
    first: &Arc<FirstFrame>,
) -> std::io::Result<(Sender<Command>, Vec<JoinHandle<()>>)> {
    let mut senders = Vec::with_capacity(switches.len());
    let mut handles = Vec::with_capacity(switches.len());
    let mut bells = Vec::with_capacity(switches.len());
    let many = switches.len() > 1;
    for (i, mut sw) in switches.into_iter().enumerate() {
        if many {
            let bell = Doorbell::new()?;
            sw = sw.with_doorbell(Arc::clone(&bell)).one_of(u16::try_from(cores.len()).unwrap_or(u16::MAX));
            bells.push(bell);
        }
        let (tx, rx) = channel();
        let core = cores.get(i).copied().flatten();
        let (stop, first) = (Arc::clone(stop), Arc::clone(first));
        let name = if many { format!("fastpath-worker-{i}") } else { "fastpath-worker".to_string() };
        handles.push(std::thread::Builder::new().name(name).spawn(move || {
            if let Some(c) = core {
                pin(i, c);
            }
            worker::run(sw, &rx, &stop, idle, &first);
        })?);
        senders.push(tx);
    }
    if senders.len() == 1 {
        return Ok((senders.remove(0), handles));
    }
    let (tx, rx) = channel();
    let fleet = Fleet::new(senders, bells).spreading(idle != Idle::Sleep);
    std::thread::Builder::new().name("fastpath-router".into()).spawn(move || fleet.serve(&rx))?;
    Ok((tx, handles))
}

/// Pins the calling thread, worker `i`, to CPU `c`.
fn pin(i: usize, c: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(c).is_ok() && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok() {
        tracing::info!("worker {i} pinned to CPU {c}");
    } else {
        tracing::warn!("could not pin worker {i} to CPU {c}");
    }
}

/// Lends the transmit rings of `p`'s queue pairs past the first to the workers that
/// poll them: pair `q` to worker `(owner + q) % workers` (the owner keeps pair 0, and
/// every pair that comes back to it). Returns each worker's lanes (none for a port kind
/// without queue pairs).
fn lanes_of(p: &mut NewPort, owner: usize, workers: usize) -> Vec<Vec<LaneRx>> {
    let mut lanes: Vec<Vec<LaneRx>> = (0..workers).map(|_| Vec::new()).collect();
    for q in 1..usize::from(netlib::vhost::device::MAX_QUEUE_PAIRS) {
        let w = (owner + q) % workers;
        if w != owner {
            match p.lend(q) {
                Some(l) => lanes[w].push(l),
                None => break,
            }
        }
    }
    lanes
}

/// A port and the worker that owns it.
#[derive(Debug)]
struct Owned {
    name: String,
    worker: usize,
    /// The queue pairs whose transmit rings other workers poll: (pair, worker).
    pair_workers: Vec<(u16, u16)>,
}

/// The router in front of several workers.
#[derive(Debug)]
pub struct Fleet {
    workers: Vec<Sender<Command>>,
    /// Each worker's doorbell (its links ring it).
    bells: Vec<Arc<Doorbell>>,
    /// Who owns each slot (the same slot in every worker's switch).
    slots: Vec<Option<Owned>>,
    /// Whether a port's queue pairs are spread over the workers (polling workers only:
    /// a lane has no wakeup of its own for a sleeping one).
    spread: bool,
}

/// Sends worker `w` a command and waits for its answer (`None`: the worker is gone).
fn ask<T>(w: &Sender<Command>, cmd: impl FnOnce(Sender<T>) -> Command) -> Option<T> {
    let (tx, rx) = channel();
    w.send(cmd(tx)).ok()?;
    rx.recv().ok()
}

impl Fleet {
    /// A router for these workers, whose switches hold no port yet and sleep on `bells`.
    pub fn new(workers: Vec<Sender<Command>>, bells: Vec<Arc<Doorbell>>) -> Self {
        Self { workers, bells, slots: (0..MAX_PORTS).map(|_| None).collect(), spread: true }
    }

    /// Keeps each port's queue pairs on its own worker (`false`: for workers that sleep in
    /// interrupt mode).
    #[must_use]
    pub fn spreading(mut self, spread: bool) -> Self {
        self.spread = spread;
        self
    }

    /// Serves commands until the channel closes or a [`Command::Stop`] was passed on.
    pub fn serve(mut self, commands: &Receiver<Command>) {
        while let Ok(cmd) = commands.recv() {
            if !self.route(cmd) {
                break;
            }
        }
    }

    fn owner(&self, name: &str) -> Option<(usize, usize)> {
        self.slots.iter().enumerate().find_map(|(s, o)| o.as_ref().filter(|o| o.name == name).map(|o| (s, o.worker)))
    }

    fn slot_of(&self, name: &str) -> usize {
        self.owner(name).map_or(usize::MAX, |(s, _)| s)
    }

    /// Passes one command on; false after a stop.
    fn route(&mut self, cmd: Command) -> bool {
        let first = &self.workers[0];
        match cmd {
            Command::Add(p, reply) => {
                if let Some(r) = self.add(*p) {
                    let _ = reply.send(r);
                }
            }
            Command::Del(name, reply) => {
                if let Some(r) = self.del(&name) {
                    let _ = reply.send(r);
                }
            }
            // Worker 0 holds every port, its own or another's: it knows every name and socket.
            Command::Check(cfg, reply) => {
                if let Some(r) = ask(first, |tx| Command::Check(cfg, tx)) {
                    let _ = reply.send(r);
                }
            }
            Command::Bridges(reply) => {
                if let Some(r) = ask(first, Command::Bridges) {
                    let _ = reply.send(r);
                }
            }
            Command::List(reply) => {
                if let Some(r) = self.list() {
                    let _ = reply.send(r);
                }
            }
            Command::Metrics(reply) => {
                if let Some(r) = self.metrics() {
                    let _ = reply.send(r);
                }
            }
            Command::Capture(taps, reply) => {
                if let Some(r) = self.capture(*taps) {
                    let _ = reply.send(r);
                }
            }
            Command::Uncapture(id) => {
                for w in &self.workers {
                    let _ = w.send(Command::Uncapture(id));
                }
            }
            // Every worker holds every mirror; a mirror copies where its `from` port's worker is.
            Command::MirrorAdd(cfg, reply) => {
                if let Some(r) = self.everywhere(|tx| Command::MirrorAdd(cfg.clone(), tx)) {
                    let _ = reply.send(r);
                }
            }
            Command::MirrorDel(from, to, reply) => {
                if let Some(r) = self.everywhere(|tx| Command::MirrorDel(from.clone(), to.clone(), tx)) {
                    let _ = reply.send(r);
                }
            }
            Command::Mirrors(reply) => {
                if let Some(r) = self.mirrors() {
                    let _ = reply.send(r);
                }
            }
            Command::Stop(reply) => {
                for w in &self.workers {
                    let _ = ask(w, Command::Stop);
                }
                let _ = reply.send(());
                return false;
            }
            // Internal to a worker: the router makes these itself.
            Command::AddAt(_, _, _, reply) | Command::AddRemote(_, reply) => {
                let _ = reply.send(Err(SwitchError::Full(MAX_PORTS)));
            }
            Command::RemoteCounters(reply) => {
                let _ = reply.send(Vec::new());
            }
        }
        true
    }

    /// Places a new port on the worker with the fewest, at the first free slot, and its
    /// remote end (with a link to it) in every other worker. A vhost-user port's queue
    /// pairs past the first are spread over the workers (see [`lanes_of`]).
    fn add(&mut self, mut p: NewPort) -> Option<Result<(), SwitchError>> {
        if let Err(e) = ask(&self.workers[0], |tx| Command::Check(Box::new(p.cfg.clone()), tx))? {
            return Some(Err(e));
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            return Some(Err(SwitchError::Full(MAX_PORTS)));
        };
        let owned = |w: usize| self.slots.iter().flatten().filter(|o| o.worker == w).count();
        let n = self.workers.len();
        let fewest = (0..n).min_by_key(|&w| owned(w)).unwrap_or(0);
        // Worker 0 checked that a port's own choice is one of the workers.
        let owner = p.cfg.worker.map_or(fewest, usize::from).min(n - 1);
        let mut lanes =
            if self.spread && p.cfg.spread != Some(false) { lanes_of(&mut p, owner, n) } else { Vec::new() };
        let guard = p.guard();
        let (mut txs, mut rxs) = (Vec::new(), Vec::new());
        for w in (0..n).filter(|&w| w != owner) {
            let (tx, rx) = link(Arc::clone(&self.bells[owner]));
            txs.push((w, tx));
            rxs.push(rx);
        }
        let cfg = p.cfg.clone();
        if let Err(e) = ask(&self.workers[owner], |tx| Command::AddAt(Box::new(p), slot, rxs, tx))? {
            return Some(Err(e));
        }
        let mut pair_workers = Vec::new();
        for (w, link) in txs {
            let lanes = lanes.get_mut(w).map(std::mem::take).unwrap_or_default();
            let as_u16 = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
            pair_workers.extend(lanes.iter().map(|l| (as_u16(l.pair()), as_u16(w))));
            let end = RemoteEnd { cfg: cfg.clone(), slot, link, lanes, guard };
            match ask(&self.workers[w], |r| Command::AddRemote(Box::new(end), r)) {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::warn!(
                    "worker {w} could not take port {}'s remote end (nor poll its queue pairs lent to it): {e}",
                    cfg.name
                ),
                None => tracing::warn!("worker {w} is gone"),
            }
        }
        tracing::info!("port {} on worker {owner}", cfg.name);
        self.slots[slot] = Some(Owned { name: cfg.name, worker: owner, pair_workers });
        Some(Ok(()))
    }

    /// Removes a port from its worker, then its remote ends.
    fn del(&mut self, name: &str) -> Option<Result<(), SwitchError>> {
        let Some((slot, owner)) = self.owner(name) else {
            return ask(&self.workers[0], |tx| Command::Del(name.to_string(), tx));
        };
        let r = ask(&self.workers[owner], |tx| Command::Del(name.to_string(), tx))?;
        for (w, worker) in self.workers.iter().enumerate().filter(|&(w, _)| w != owner) {
            if let Some(Err(e)) = ask(worker, |tx| Command::Del(name.to_string(), tx)) {
                tracing::warn!("worker {w} could not drop port {name}'s remote end: {e}");
            }
        }
        self.slots[slot] = None;
        Some(r)
    }

    /// Sends every worker the command, worker 0 first (whose answer is the answer; the
    /// others are asked only if it agreed: they hold the same mirrors).
    fn everywhere(&self, cmd: impl Fn(Sender<Result<(), SwitchError>>) -> Command) -> Option<Result<(), SwitchError>> {
        let r = ask(&self.workers[0], &cmd)?;
        if r.is_ok() {
            for w in &self.workers[1..] {
                let _ = ask(w, &cmd);
            }
        }
        Some(r)
    }

    /// What each worker counted for the ports it does not own (links' drops, frames
    /// received from queue pairs it polls), by port name.
    fn remote_counters(&self) -> Option<Vec<(String, netlib::PortCounters)>> {
        let mut all = Vec::new();
        for w in &self.workers {
            all.extend(ask(w, Command::RemoteCounters)?);
        }
        Some(all)
    }

    fn list(&self) -> Option<Vec<PortInfo>> {
        let mut ports = Vec::new();
        for w in &self.workers {
            ports.extend(ask(w, Command::List)?);
        }
        for (name, c) in self.remote_counters()? {
            if let Some(p) = ports.iter_mut().find(|p| p.name == name) {
                add_remote(&mut p.stats.counters, &c);
                match p.kind_counters.iter_mut().find(|(n, _)| n == LINK_DROPPED) {
                    Some((_, v)) => *v += c.tx_dropped,
                    None => p.kind_counters.push((LINK_DROPPED.to_string(), c.tx_dropped)),
                }
            }
        }
        ports.sort_by_key(|p| self.slot_of(&p.name));
        for p in &mut ports {
            let Some((slot, w)) = self.owner(&p.name) else { continue };
            p.worker = u16::try_from(w).ok();
            if let Some(o) = &self.slots[slot] {
                p.pair_workers.clone_from(&o.pair_workers);
                p.pair_workers.sort_unstable();
            }
        }
        Some(ports)
    }

    fn metrics(&self) -> Option<Snapshot> {
        let mut snap = ask(&self.workers[0], Command::Metrics)?;
        for w in &self.workers[1..] {
            let s = ask(w, Command::Metrics)?;
            snap.ports.extend(s.ports);
            snap.loads.extend(s.loads);
        }
        for (name, c) in self.remote_counters()? {
            if let Some(p) = snap.ports.iter_mut().find(|p| p.port == name) {
                add_remote(&mut p.counters, &c);
            }
        }
        snap.ports.sort_by_key(|p| self.slot_of(&p.port));
        Some(snap)
    }

    /// Starts a capture: each lane tap on its worker (the frames the port sends on the pairs
    /// that worker polls), then the main tap on the port's worker. If one cannot start, none
    /// runs (and the refusal still goes out on the main tap's connection).
    fn capture(&self, taps: CaptureTaps) -> Option<Result<(), SwitchError>> {
        let CaptureTaps { mut main, lanes } = taps;
        let id = main.id;
        let mut r = Ok(());
        for (lw, tap) in lanes {
            let port = tap.spec.port.clone();
            r = match self.workers.get(usize::from(lw)) {
                Some(worker) => ask(worker, |tx| Command::Capture(CaptureTaps::one(tap), tx))?,
                None => Err(SwitchError::NoSuchPort(port)),
            };
            if r.is_err() {
                break;
            }
        }
        if r.is_ok() {
            let w = self.owner(&main.spec.port).map_or(0, |(_, w)| w);
            r = ask(&self.workers[w], |tx| Command::Capture(CaptureTaps::one(main), tx))?;
        } else {
            main.detach();
        }
        if r.is_err() {
            for worker in &self.workers {
                let _ = worker.send(Command::Uncapture(id));
            }
        }
        Some(r)
    }

    fn mirrors(&self) -> Option<Vec<MirrorInfo>> {
        let mut all = ask(&self.workers[0], Command::Mirrors)?;
        for w in &self.workers[1..] {
            for (m, o) in all.iter_mut().zip(ask(w, Command::Mirrors)?) {
                m.active |= o.active;
                m.sent += o.sent;
                m.dropped += o.dropped;
            }
        }
        Some(all)
    }
}

/// The counter `fastpathctl list` shows for what links to a port dropped (also counted in
/// its `tx_dropped`, by reason).
pub const LINK_DROPPED: &str = "link_dropped";

/// Adds to a port's counters what another worker counted for it: what the link to it
/// dropped, and what that worker received from the port's queue pairs it polls.
fn add_remote(to: &mut netlib::PortCounters, other: &netlib::PortCounters) {
    to.tx_dropped += other.tx_dropped;
    to.drop_ring_full += other.drop_ring_full;
    to.drop_too_big += other.drop_too_big;
    to.rx_packets += other.rx_packets;
    to.rx_bytes += other.rx_bytes;
    to.rx_errors += other.rx_errors;
    to.drop_filtered += other.drop_filtered;
    to.drop_spoofed += other.drop_spoofed;
    to.drop_vlan += other.drop_vlan;
}

#[cfg(test)]
mod tests;
