// The polling worker thread: owns the switch, runs passes back to back, between batches of
// passes applies commands from the control thread, and notes when it first forwarded a frame.
//! The switch's worker thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fastpath_host::proto::{MirrorConfig, MirrorInfo};

use crate::capture::tap::CaptureTaps;
use crate::error::SwitchError;
use crate::info::PortInfo;
use crate::link::LinkRx;
use crate::switch::{NewPort, RemoteEnd, Switch};

/// A request from the control thread.
#[derive(Debug)]
pub enum Command {
    /// Add an opened port.
    Add(Box<NewPort>, Sender<Result<(), SwitchError>>),
    /// Add an opened port at a slot, with the links other workers send it frames on
    /// (several workers: the fleet's router chooses the slot, the same in every worker).
    AddAt(Box<NewPort>, usize, Vec<LinkRx>, Sender<Result<(), SwitchError>>),
    /// Add another worker's port at a slot: what this worker forwards to it goes into the
    /// link; it polls the port's queue pairs lent to it.
    AddRemote(Box<RemoteEnd>, Sender<Result<(), SwitchError>>),
    /// What this worker sent other workers' ports and the links dropped, by port name.
    RemoteCounters(Sender<Vec<(String, netlib::PortCounters)>>),
    /// Check that a port could be added.
    Check(Box<crate::config::PortConfig>, Sender<Result<(), SwitchError>>),
    /// Remove a port by name.
    Del(String, Sender<Result<(), SwitchError>>),
    /// List ports with counters.
    List(Sender<Vec<PortInfo>>),
    /// List bridges.
    Bridges(Sender<Vec<String>>),
    /// What a metrics scrape shows.
    Metrics(Sender<crate::metrics::Snapshot>),
    /// Start a capture (its taps go to the workers that see the port's frames).
    Capture(Box<CaptureTaps>, Sender<Result<(), SwitchError>>),
    /// End a capture (its client closed the connection).
    Uncapture(u64),
    /// Add a mirror.
    MirrorAdd(MirrorConfig, Sender<Result<(), SwitchError>>),
    /// Remove the mirror from the first port to the second.
    MirrorDel(String, String, Sender<Result<(), SwitchError>>),
    /// List mirrors with counters.
    Mirrors(Sender<Vec<MirrorInfo>>),
    /// Stop: close every port (the switch is dropped), then answer.
    Stop(Sender<()>),
}

/// The workers, running: ports and mirrors are added by command (and placed by the router).
#[derive(Debug)]
pub struct Running<'a>(pub &'a Sender<Command>);

impl Running<'_> {
    fn ask(&self, cmd: impl FnOnce(Sender<Result<(), SwitchError>>) -> Command) -> Result<(), SwitchError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let gone = || SwitchError::Open { port: String::new(), why: "the switch worker is not running".into() };
        self.0.send(cmd(tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl crate::switch::AddPorts for Running<'_> {
    fn add_port(&mut self, p: NewPort) -> Result<(), SwitchError> {
        self.ask(|tx| Command::Add(Box::new(p), tx))
    }
    fn add_mirror(&mut self, cfg: MirrorConfig) -> Result<(), SwitchError> {
        self.ask(|tx| Command::MirrorAdd(cfg, tx))
    }
}

/// When the worker first forwarded a frame, counted from the switch's start or, when it took
/// over from another switch, from that one stopping: the outage its frontends saw.
#[derive(Debug)]
pub struct FirstFrame {
    since: Instant,
    at: OnceLock<Instant>,
}

impl FirstFrame {
    /// Counting from `since`.
    pub fn since(since: Instant) -> Self {
        Self { since, at: OnceLock::new() }
    }

    /// Notes that a frame was forwarded (only the first call counts).
    pub fn mark(&self) {
        let _ = self.at.set(Instant::now());
    }

    /// Milliseconds from the start to the first frame; `None` before one.
    pub fn ms(&self) -> Option<f64> {
        self.at.get().map(|t| t.duration_since(self.since).as_secs_f64() * 1000.0)
    }
}

/// Passes between two looks at the command queue and the clock.
const PASSES: u32 = 256;
/// Passes between two looks when the worker shares its core ([`Idle::Yield`]): it naps
/// after this many empty passes, not holding the core for long with nothing to do.
const SHARED_PASSES: u32 = 32;

/// Idle batches of passes before the worker sleeps in interrupt mode.
const IDLE_BATCHES: u32 = 8;
/// Longest sleep (commands from the control thread wait at most this long).
const SLEEP: Duration = Duration::from_millis(10);

/// How long a worker sharing its core naps after a batch of passes that moved nothing.
pub const SHARED_NAP: Duration = Duration::from_micros(20);

/// What the worker does when its ports have no traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// Polls on: the lowest latency, the core is the worker's alone.
    #[default]
    Spin,
    /// Gives the core away after each batch of passes that moved nothing: naps
    /// [`SHARED_NAP`], so that threads pinned beside it (the apps, the kernel's NAPI thread
    /// of an afxdp uplink's interface, another poller) run at once, and wakes with the
    /// credit of a sleeper: the scheduler gives it the core back when the nap ends even if
    /// its neighbour spins (a `sched_yield` would wait out the neighbour's time slice).
    Yield,
    /// Sleeps on the ports' kick eventfds after a few idle batches (interrupt mode).
    Sleep,
}

impl Idle {
    /// From the config's switches: interrupt mode wins over sharing the core.
    pub fn from_flags(interrupt: bool, share_core: bool) -> Self {
        match (interrupt, share_core) {
            (true, _) => Self::Sleep,
            (false, true) => Self::Yield,
            (false, false) => Self::Spin,
        }
    }
}

/// Runs the switch until `stop` is set or a [`Command::Stop`] comes; `idle` says what it
/// does when no port has traffic. The first frame it forwards is marked in `first`.
pub fn run(mut sw: Switch, commands: &Receiver<Command>, stop: &Arc<AtomicBool>, idle_mode: Idle, first: &FirstFrame) {
    if idle_mode == Idle::Yield {
        // Naps end on time, not up to 50 us late (the default timer slack).
        if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
            tracing::debug!("timer slack stays at its default: {e}");
        }
    }
    let mut second = Instant::now();
    let mut idle = 0u32;
    let mut forwarded = false;
    let mut stopping = None;
    while !stop.load(Ordering::Relaxed) && stopping.is_none() {
        let mut moved = 0;
        let passes = if idle_mode == Idle::Yield { SHARED_PASSES } else { PASSES };
        for _ in 0..passes {
            moved += sw.poll_once();
        }
        if !forwarded && moved > 0 {
            forwarded = true;
            first.mark();
        }
        match idle_mode {
            Idle::Yield if moved == 0 => std::thread::sleep(SHARED_NAP),
            Idle::Spin | Idle::Yield => {}
            Idle::Sleep => {
                idle = if moved == 0 { idle + 1 } else { 0 };
                if idle >= IDLE_BATCHES {
                    sw.sleep(SLEEP);
                }
            }
        }
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Add(p, reply) => {
                    let _ = reply.send(sw.add_port(*p));
                }
                Command::AddAt(p, slot, inbound, reply) => {
                    let _ = reply.send(sw.add_port_at(*p, slot, inbound));
                }
                Command::AddRemote(end, reply) => {
                    let _ = reply.send(sw.add_remote(*end));
                }
                Command::RemoteCounters(reply) => {
                    let _ = reply.send(sw.remote_counters());
                }
                Command::Check(cfg, reply) => {
                    let _ = reply.send(sw.check_new(&cfg));
                }
                Command::Del(name, reply) => {
                    let _ = reply.send(sw.del_port(&name));
                }
                Command::List(reply) => {
                    let _ = reply.send(sw.list());
                }
                Command::Bridges(reply) => {
                    let _ = reply.send(sw.bridge_names());
                }
                Command::Metrics(reply) => {
                    let _ = reply.send(sw.snapshot());
                }
                Command::Capture(taps, reply) => {
                    // One worker: the port's pairs are all its own (lanes are for a fleet).
                    let _ = reply.send(sw.capture(taps.main));
                }
                Command::Uncapture(id) => {
                    sw.uncapture(id);
                }
                Command::MirrorAdd(cfg, reply) => {
                    let _ = reply.send(sw.add_mirror(cfg));
                }
                Command::MirrorDel(from, to, reply) => {
                    let _ = reply.send(sw.del_mirror(&from, &to));
                }
                Command::Mirrors(reply) => {
                    let _ = reply.send(sw.mirrors());
                }
                Command::Stop(reply) => {
                    stopping = Some(reply);
                    break;
                }
            }
        }
        if second.elapsed() >= Duration::from_secs(1) {
            second = Instant::now();
            sw.tick_second();
        }
    }
    drop(sw);
    if let Some(reply) = stopping {
        let _ = reply.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::Idle;

    #[test]
    fn interrupt_mode_wins_over_sharing_the_core() {
        assert_eq!(Idle::from_flags(false, false), Idle::Spin);
        assert_eq!(Idle::from_flags(false, true), Idle::Yield);
        assert_eq!(Idle::from_flags(true, false), Idle::Sleep);
        assert_eq!(Idle::from_flags(true, true), Idle::Sleep);
    }
}
