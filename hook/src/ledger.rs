// The ledger: what each container holds (cores, hugepages, ports, VFs, cgroups), in one JSON
// file under the state directory, changed only under an exclusive flock and replaced atomically.
//! Ledger.

use crate::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Reserved; createRuntime is still applying it (or died doing so).
    Creating,
    /// Everything applied.
    Ready,
}

/// Hugepages held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugeAlloc {
    /// Bytes.
    pub bytes: u64,
    /// Page size.
    pub page_size: u64,
}

/// A switch port held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAlloc {
    /// Name on the switch.
    pub name: String,
    /// Bridge.
    pub bridge: String,
    /// Host path of its socket.
    pub socket: PathBuf,
    /// The MAC the container was given for it (empty in ledgers from before MACs).
    #[serde(default)]
    pub mac: String,
}

/// A VF held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfAlloc {
    /// PCI address.
    pub pci: String,
    /// IOMMU group.
    pub group: u32,
    /// (major, minor) of `/dev/vfio/<group>` (known once the VF is on vfio-pci).
    pub dev: (u64, u64),
    /// Whether the hook bound it to vfio-pci (and gives it back at release).
    #[serde(default)]
    pub hook_bound: bool,
    /// The driver it had before the hook bound it (`None`: none); bound again at release.
    #[serde(default)]
    pub previous_driver: Option<String>,
}

/// What one container holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Container id.
    pub id: String,
    /// Life stage.
    pub status: Status,
    /// The container's init pid on the host.
    pub pid: i32,
    /// Its start time (with the pid, identifies the process across pid reuse).
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The container's uid.
    pub uid: u32,
    /// The container's gid.
    pub gid: u32,
    /// Exclusive cores.
    pub cores: Vec<usize>,
    /// Hugepages.
    pub hugepages: Option<HugeAlloc>,
    /// Host directory of its sockets.
    pub sock_dir: Option<PathBuf>,
    /// Switch ports.
    pub ports: Vec<PortAlloc>,
    /// VFs.
    pub vfs: Vec<VfAlloc>,
    /// Whether libfastpath_net is mounted.
    pub inject: bool,
    /// Cgroup directories the hook wrote limits into.
    pub cgroups: Vec<PathBuf>,
    /// What createContainer writes to /run/fastpath/config.json.
    pub config: Option<netlib::config::Config>,
    /// When it was reserved (seconds since the epoch).
    pub created_unix: u64,
}

impl Entry {
    /// A short description for messages: `container ID (pid N)`.
    pub fn who(&self) -> String {
        format!("container {} (pid {})", self.id, self.pid)
    }
}

/// The whole ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LedgerData {
    /// Schema version (1).
    #[serde(default)]
    pub version: u32,
    /// Entries by container id.
    #[serde(default)]
    pub containers: BTreeMap<String, Entry>,
}

/// The ledger file and its lock.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
    lock_path: PathBuf,
}

impl Ledger {
    /// The ledger in `state_dir` (`ledger.json`, locked through `ledger.lock`).
    pub fn new(state_dir: &Path) -> Self {
        Self { path: state_dir.join("ledger.json"), lock_path: state_dir.join("ledger.lock") }
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
            Ok(t) if t.trim().is_empty() => Ok(LedgerData { version: 1, ..LedgerData::default() }),
            Ok(t) => serde_json::from_str(&t).map_err(|e| {
                self.err(format!("is not a ledger ({e}); move it aside only once no container holds anything"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(LedgerData { version: 1, ..LedgerData::default() })
            }
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
        Entry {
            id: id.into(),
            status: Status::Ready,
            pid: 1,
            start_time: 1,
            bundle: "/b".into(),
            uid: 1000,
            gid: 1000,
            cores,
            hugepages: None,
            sock_dir: None,
            ports: vec![],
            vfs: vec![],
            inject: false,
            cgroups: vec![],
            config: None,
            created_unix: 0,
        }
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
