// The ledger: what each container holds (cores, hugepages, ports, VFs, cgroups), in one JSON
// file under the state directory, changed only under an exclusive flock and replaced atomically.
//! Ledger.
//!
//! The entry types are fastpath-host's (`fastpath_host::ledger`), where fastpathd reads them
//! too; this module owns the file: the lock, and every change to it.

use crate::{Error, Result};
pub use fastpath_host::ledger::{ContainerLabels, Entry, HugeAlloc, LedgerData, PortAlloc, Status, VfAlloc};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The ledger file and its lock.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
    lock_path: PathBuf,
}

impl Ledger {
    /// The ledger in `state_dir` (`ledger.json`, locked through `ledger.lock`).
    pub fn new(state_dir: &Path) -> Self {
        Self { path: state_dir.join(fastpath_host::ledger::LEDGER_FILE), lock_path: state_dir.join("ledger.lock") }
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Ledger { path: self.path.clone(), msg: msg.into() }
    }

    fn lock(&self) -> Result<Flock<File>> {
        if let Some(dir) = self.lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.err(format!("creating {}: {e}", dir.display())))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| self.err(format!("opening lock {}: {e}", self.lock_path.display())))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| self.err(format!("locking: {e}")))
    }

    fn load(&self) -> Result<LedgerData> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => LedgerData::parse(&t).map_err(|e| {
                self.err(format!("is not a ledger ({e}); move it aside only once no container holds anything"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LedgerData::empty()),
            Err(e) => Err(self.err(format!("reading: {e}"))),
        }
    }

    fn store(&self, d: &LedgerData) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(d).map_err(|e| self.err(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.err(format!("writing: {e}")))
    }

    /// Runs `f` on the ledger under the lock; writes it back (atomically) when `f` succeeded
    /// and changed it. Nothing is written when `f` fails.
    pub fn update<T>(&self, f: impl FnOnce(&mut LedgerData) -> Result<T>) -> Result<T> {
        let _lock = self.lock()?;
        let mut d = self.load()?;
        let before = d.clone();
        let out = f(&mut d)?;
        if d != before {
            d.version = 1;
            self.store(&d)?;
        }
        Ok(out)
    }

    /// A consistent copy of the ledger.
    pub fn read(&self) -> Result<LedgerData> {
        self.update(|d| Ok(d.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cores;
    use std::collections::BTreeSet;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fastpath-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub(crate) fn entry(id: &str, cores: Vec<usize>) -> Entry {
        Entry { bundle: "/b".into(), cores, ..Entry::new(id, 1, 1, 1000) }
    }

    #[test]
    fn failed_update_writes_nothing() {
        let d = tmpdir("fail");
        let l = Ledger::new(&d);
        l.update(|d| {
            d.containers.insert("a".into(), entry("a", vec![1]));
            Ok(())
        })
        .unwrap();
        let r: Result<()> = l.update(|d| {
            d.containers.clear();
            Err(Error::Refused("no".into()))
        });
        assert!(r.is_err());
        assert_eq!(l.read().unwrap().containers.len(), 1);
        assert!(!d.join("ledger.json.tmp").exists());
        std::fs::write(d.join("ledger.json"), "garbage").unwrap();
        let e = l.read().unwrap_err().to_string();
        assert!(e.contains("ledger.json") && e.contains("is not a ledger"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Sixteen threads race for a pool of one core, each through its own lock file
    /// descriptor (as separate processes would): exactly one gets it.
    #[test]
    fn racing_for_one_core_one_wins() {
        let d = tmpdir("race");
        let pool: BTreeSet<usize> = [5].into();
        let results: Vec<std::result::Result<Vec<usize>, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|i| {
                    let (d, pool) = (&d, &pool);
                    s.spawn(move || {
                        Ledger::new(d)
                            .update(|l| {
                                let held = l
                                    .containers
                                    .values()
                                    .flat_map(|e| e.cores.iter().map(move |c| (*c, e.who())))
                                    .collect();
                                let got = cores::pick(pool, &held, 1).map_err(Error::Refused)?;
                                let id = format!("c{i}");
                                l.containers.insert(id.clone(), entry(&id, got.clone()));
                                Ok(got)
                            })
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(wins.len(), 1, "{results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(r.contains("pool 5") && r.contains("core 5 held by container c"), "{r}");
        }
        assert_eq!(Ledger::new(&d).read().unwrap().containers.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
