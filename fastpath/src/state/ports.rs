// The ports and mirrors the running switch holds, as the control thread keeps them: each
// change (a port or mirror added or removed) is saved to the state file before it is answered.
//! The ports and mirrors held, saved on every change.

use std::path::Path;

use super::file::{Origin, SavedPort, SavedPorts, StateError, StateFile, FORMAT};
use crate::config::PortConfig;
use fastpath_host::proto::MirrorConfig;

/// The ports the switch holds and the file they are saved in.
#[derive(Debug)]
pub struct Durable {
    file: StateFile,
    ports: Vec<SavedPort>,
    mirrors: Vec<MirrorConfig>,
}

impl Durable {
    /// The switch holds `ports`, saved in `file` (call [`Durable::save`] to write them).
    pub fn new(file: StateFile, ports: Vec<SavedPort>) -> Self {
        Self { file, ports, mirrors: Vec::new() }
    }

    /// With these mirrors too.
    #[must_use]
    pub fn with_mirrors(mut self, mirrors: Vec<MirrorConfig>) -> Self {
        self.mirrors = mirrors;
        self
    }

    /// Records a mirror the switch now has and saves; when saving fails it is not recorded.
    pub fn mirror_added(&mut self, m: MirrorConfig) -> Result<(), StateError> {
        self.mirrors.push(m);
        let r = self.save();
        if r.is_err() {
            self.mirrors.pop();
        }
        r
    }

    /// Forgets the mirror from `from` to `to` and saves.
    pub fn mirror_removed(&mut self, from: &str, to: &str) -> Result<(), StateError> {
        self.mirrors.retain(|m| m.from != from || m.to != to);
        self.save()
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// How many ports the switch holds.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The ports, in the order they were added.
    pub fn ports(&self) -> &[SavedPort] {
        &self.ports
    }

    /// Writes every port to the state file.
    pub fn save(&self) -> Result<(), StateError> {
        self.file.save(&SavedPorts { version: FORMAT, ports: self.ports.clone(), mirrors: self.mirrors.clone() })
    }

    /// Records a port the switch now holds and saves. When saving fails the port is not
    /// recorded (the caller takes it off the switch).
    pub fn added(&mut self, port: PortConfig, origin: Origin) -> Result<(), StateError> {
        self.ports.push(SavedPort { origin, port });
        let r = self.save();
        if r.is_err() {
            self.ports.pop();
        }
        r
    }

    /// Forgets the port `name` (the switch removed it) and saves.
    pub fn removed(&mut self, name: &str) -> Result<(), StateError> {
        self.ports.retain(|p| p.port.name != name);
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_saved_and_a_failed_save_records_nothing() {
        let d = std::env::temp_dir().join(format!("fastpath-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let file = StateFile::in_dir(&d);
        let mut held = Durable::new(file.clone(), vec![]);
        held.added(PortConfig::new("a", "br0", "/a.sock"), Origin::Runtime).unwrap();
        held.added(PortConfig::new("b", "br0", "/b.sock"), Origin::Config).unwrap();
        let names = |s: SavedPorts| s.ports.into_iter().map(|p| p.port.name).collect::<Vec<_>>();
        assert_eq!(names(file.load().unwrap().unwrap()), ["a", "b"]);
        held.removed("a").unwrap();
        assert_eq!(names(file.load().unwrap().unwrap()), ["b"]);
        let m = MirrorConfig { from: "b".into(), to: "a".into(), direction: fastpath_host::proto::Direction::Rx };
        held.mirror_added(m.clone()).unwrap();
        assert_eq!(file.load().unwrap().unwrap().mirrors, [m]);
        held.mirror_removed("b", "a").unwrap();
        assert!(file.load().unwrap().unwrap().mirrors.is_empty());
        // The directory becomes a file: nothing can be saved there any more.
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::write(&d, "in the way").unwrap();
        let e = held.added(PortConfig::new("c", "br0", "/c.sock"), Origin::Runtime).unwrap_err();
        assert!(e.to_string().starts_with(&format!("state file {}: ", held.path().display())), "{e}");
        assert_eq!(held.len(), 1);
        std::fs::remove_file(&d).unwrap();
    }
}
