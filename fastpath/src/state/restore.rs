// What a starting fastpathd opens: its config file's ports always, the saved runtime ports, and
// the hook's ledger's word on them (gone containers' ports dropped, live ones' missing ports back).
//! Restoring ports at start.

use std::path::{Path, PathBuf};

use fastpath_host::ledger::{self, Entry, HeldPort, LedgerData};

use super::file::{Origin, SavedPort, SavedPorts, StateFile};
use crate::config::{Config, PortConfig, PortDefaults};
use crate::error::SwitchError;
use crate::switch::AddPorts;

/// What a starting switch opens, and what it has to say about how it got there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartPlan {
    /// The ports, config file's first.
    pub ports: Vec<SavedPort>,
    /// One line per saved port left out or port added back, and why.
    pub notes: Vec<String>,
}

/// The ports a starting switch opens: every port of its config, then each saved runtime port
/// that no config port shares a name or socket with. With the hook's `ledger`, the runtime
/// ports are reconciled with it ([`ledger::plan`]): the hook's ports that no live container
/// holds are left out, and the ports of live, ready containers that are missing are added.
/// `alive` tells whether an entry's container still runs.
pub fn plan(
    config: &[PortConfig],
    saved: Option<&SavedPorts>,
    ledger: Option<(&Path, &LedgerData)>,
    alive: impl Fn(&Entry) -> bool,
) -> StartPlan {
    let mut out = StartPlan::default();
    out.ports.extend(config.iter().map(|p| SavedPort { origin: Origin::Config, port: p.clone() }));
    for s in saved.map_or(&[][..], |s| &s.ports).iter().filter(|s| s.origin == Origin::Runtime) {
        let p = &s.port;
        if let Some(c) = config.iter().find(|c| c.name == p.name || c.socket == p.socket) {
            out.notes.push(format!(
                "saved port {} ({}) not restored: config port {} has its name or socket now",
                p.name,
                p.socket.display(),
                c.name
            ));
            continue;
        }
        out.ports.push(s.clone());
    }
    let Some((path, ledger)) = ledger else { return out };
    let runtime: Vec<HeldPort> = out
        .ports
        .iter()
        .filter(|s| s.origin == Origin::Runtime)
        .map(|s| HeldPort { name: &s.port.name, container: s.port.container.as_deref() })
        .collect();
    let mut held: Vec<HeldPort> = runtime.clone();
    // Config ports stay whatever the ledger says, and are not added twice.
    held.extend(
        out.ports
            .iter()
            .filter(|s| s.origin == Origin::Config)
            .map(|s| HeldPort { name: &s.port.name, container: None }),
    );
    let fix = ledger::plan(ledger, &held, alive);
    let gone: Vec<String> = fix.remove.into_iter().filter(|n| runtime.iter().any(|h| h.name == n)).collect();
    for name in &gone {
        let who = out.ports.iter().find(|s| &s.port.name == name).and_then(|s| s.port.container.clone());
        out.notes.push(format!(
            "saved port {name} not restored: no live container holds it in {} (container {})",
            path.display(),
            who.as_deref().unwrap_or("unnamed")
        ));
    }
    out.ports.retain(|s| !gone.contains(&s.port.name));
    for p in fix.add {
        out.notes.push(format!(
            "port {} added back: container {} holds it in {} and it was not saved",
            p.name,
            p.container.as_deref().unwrap_or("?"),
            path.display()
        ));
        out.ports.push(SavedPort { origin: Origin::Runtime, port: p });
    }
    out
}

/// What a starting switch read: its state file (set aside when it could not be used) and
/// the hook's ledger, if there is one.
#[derive(Debug)]
pub struct Found {
    /// The state file.
    pub file: StateFile,
    /// What it held (`None`: no file, or a bad one).
    pub saved: Option<SavedPorts>,
    /// The hook's ledger and where it is.
    pub ledger: Option<(PathBuf, LedgerData)>,
}

/// Reads the state file in `cfg`'s state directory and the hook's ledger. A state file that
/// cannot be used is reported in one error line naming it and what is wrong, and moved aside
/// (`*.bad`): the switch starts with its config file's ports (and the ledger's). A ledger that
/// cannot be read is reported and not used.
pub fn find(cfg: &Config) -> Found {
    let file = StateFile::in_dir(&cfg.state_dir());
    let saved = match file.load() {
        Ok(s) => s,
        Err(e) if e.is_bad_content() => {
            let kept = match file.set_aside() {
                Ok(to) => format!("kept aside as {}", to.display()),
                Err(e2) => format!("and it could not be kept aside ({e2})"),
            };
            tracing::error!("{e}; {kept}; starting with the config file's ports");
            None
        }
        Err(e) => {
            tracing::error!("{e}; starting with the config file's ports");
            None
        }
    };
    let path = cfg.hook_ledger();
    let ledger = match ledger::read(&path) {
        Ok(l) => l.map(|l| (path, l)),
        Err(e) => {
            tracing::warn!("{e}; ports are restored as saved, not reconciled with it");
            None
        }
    };
    Found { file, saved, ledger }
}

/// Whether the container a ledger entry names still runs (its pid, with the same start time),
/// or for a CNI attachment, whether its network namespace still exists.
pub fn container_alive(e: &Entry) -> bool {
    e.alive(ledger::process_start_time, std::path::Path::exists)
}

/// Opens the ports of `plan` and adds them to `sw`; returns those it holds. A config port
/// that cannot be opened is an error (as it always was); a runtime port is logged and left out.
pub fn open(plan: StartPlan, sw: &mut impl AddPorts, defaults: &PortDefaults) -> Result<Vec<SavedPort>, SwitchError> {
    let mut held = Vec::with_capacity(plan.ports.len());
    for s in plan.ports {
        match crate::control::open_port(s.port.clone(), defaults).and_then(|p| sw.add_port(p)) {
            Ok(()) => held.push(s),
            Err(e) if s.origin == Origin::Config => return Err(e),
            Err(e) => tracing::warn!("saved {e}: not restored"),
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests;
