// The state file: every port fastpathd holds, with where it came from, in one JSON document with
// a format version; written atomically, and set aside (never overwritten) when it can't be read.
//! The state file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::PortConfig;
use fastpath_host::proto::MirrorConfig;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "fastpathd-state.json";
/// The format this fastpathd writes, and the newest it reads.
pub const FORMAT: u32 = 1;
/// How many copies of bad state files are kept side by side (`.bad`, `.1.bad` ...).
const MAX_BAD_COPIES: u32 = 100;

/// Where a port came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// fastpathd's config file or `--port` flags: the config says whether it exists.
    Config,
    /// An `add-port` request (the hook, `fastpathctl add-port`), or the hook's ledger at start.
    Runtime,
}

/// One port in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPort {
    /// Where it came from.
    pub origin: Origin,
    /// The port, as a config file or an `add-port` request describes it.
    pub port: PortConfig,
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPorts {
    /// The format ([`FORMAT`]).
    pub version: u32,
    /// Every port the switch held.
    pub ports: Vec<SavedPort>,
    /// Its mirrors (`fastpathctl mirror add`); absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorConfig>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a state file (truncated, or damaged).
    #[error("state file {}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The file was written by a newer fastpathd, in a format this one does not read.
    #[error("state file {}: format {version} is newer than this fastpathd reads ({FORMAT})", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its format.
        version: u64,
    },
}

impl StateError {
    /// Whether the file is there but unusable (to be set aside), rather than unreadable.
    pub fn is_bad_content(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::Newer { .. })
    }
}

/// The state file in a directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file of a fastpathd whose state directory is `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { path: dir.join(STATE_FILE) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<SavedPorts>, StateError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path: self.path.clone(), what: "reading", source }),
        };
        self.parse(&text).map(Some)
    }

    fn parse(&self, text: &[u8]) -> Result<SavedPorts, StateError> {
        let corrupt = |why: String| StateError::Corrupt { path: self.path.clone(), why };
        if text.iter().all(u8::is_ascii_whitespace) {
            return Err(corrupt("is empty (truncated?)".into()));
        }
        let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
            let what = if e.is_eof() { "is truncated" } else { "is not JSON" };
            corrupt(format!("{what} ({e})"))
        })?;
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(n) if n > u64::from(FORMAT) => return Err(StateError::Newer { path: self.path.clone(), version: n }),
            Some(_) => {}
            None => return Err(corrupt("has no format version (\"version\")".into())),
        }
        serde_json::from_value(v).map_err(|e| corrupt(format!("is not a state file ({e})")))
    }

    /// Writes `state` atomically: a temporary file beside it, fsync, rename over the old one,
    /// fsync of the directory. Creates the directory if needed.
    pub fn save(&self, state: &SavedPorts) -> Result<(), StateError> {
        let io = |what| move |source| StateError::Io { path: self.path.clone(), what, source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating its directory"))?;
        let mut text = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            why: format!("cannot be written as JSON: {e}"),
        })?;
        text.push(b'\n');
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io("creating the temporary file"))?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(io("writing the temporary file"))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io("renaming the temporary file over it"))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing its directory"))
    }

    /// Moves the file aside, to `<file>.bad` or, when that exists, the first free
    /// `<file>.N.bad`: an older bad file is never overwritten. Returns where it went.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let io = |source| StateError::Io { path: self.path.clone(), what: "setting it aside", source };
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for n in 0..MAX_BAD_COPIES {
            let bad = if n == 0 { format!("{name}.bad") } else { format!("{name}.{n}.bad") };
            let to = self.path.with_file_name(bad);
            if to.symlink_metadata().is_ok() {
                continue;
            }
            std::fs::rename(&self.path, &to).map_err(io)?;
            return Ok(to);
        }
        Err(io(std::io::Error::other(format!("{MAX_BAD_COPIES} bad copies are there already: remove some"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fastpath-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn state() -> SavedPorts {
        let mut hooks = PortConfig::new("fp-c-br0", "br0", "/run/fastpath/sock/c/br0.sock");
        hooks.uid = Some(1000);
        hooks.container = Some("c".into());
        hooks.pod_name = Some("web-0".into());
        hooks.pod_namespace = Some("shop".into());
        SavedPorts {
            version: FORMAT,
            ports: vec![
                SavedPort { origin: Origin::Config, port: PortConfig::new("up", "br0", "/run/up.sock") },
                SavedPort { origin: Origin::Runtime, port: hooks },
            ],
            mirrors: vec![MirrorConfig {
                from: "up".into(),
                to: "x".into(),
                direction: fastpath_host::proto::Direction::Both,
            }],
        }
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let d = dir("save");
        let f = StateFile::in_dir(&d.join("sub"));
        assert!(f.load().unwrap().is_none());
        f.save(&state()).unwrap();
        assert_eq!(f.load().unwrap(), Some(state()));
        assert!(!f.path().with_extension("json.tmp").exists());
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert!(text.contains("\"origin\": \"runtime\"") && text.contains("\"version\": 1"), "{text}");
        assert!(text.contains("\"pod_name\": \"web-0\"") && text.contains("\"pod_namespace\": \"shop\""), "{text}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_say_what_is_wrong_and_are_set_aside_without_overwriting() {
        let d = dir("bad");
        std::fs::create_dir_all(&d).unwrap();
        let f = StateFile::in_dir(&d);
        let good = serde_json::to_string(&state()).unwrap();
        let shown = f.path().display().to_string();
        for (text, want) in [
            (String::new(), "is empty (truncated?)"),
            (good[..good.len() / 2].to_string(), "is truncated (EOF while parsing"),
            ("\u{0}\u{1}garbage".into(), "is not JSON ("),
            ("{\"ports\":[]}".into(), "has no format version (\"version\")"),
            ("{\"version\":1,\"ports\":[{\"origin\":\"config\"}]}".into(), "is not a state file (missing field `port`"),
            ("{\"version\":7,\"ports\":\"whatever\"}".into(), "format 7 is newer than this fastpathd reads (1)"),
        ] {
            std::fs::write(f.path(), &text).unwrap();
            let e = f.load().unwrap_err();
            assert!(e.is_bad_content());
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("state file {shown}: {want}")), "{text:?}: {msg}");
        }
        std::fs::write(f.path(), "first").unwrap();
        assert_eq!(f.set_aside().unwrap(), d.join("fastpathd-state.json.bad"));
        std::fs::write(f.path(), "second").unwrap();
        assert_eq!(f.set_aside().unwrap(), d.join("fastpathd-state.json.1.bad"));
        assert_eq!(std::fs::read_to_string(d.join("fastpathd-state.json.bad")).unwrap(), "first");
        assert!(f.load().unwrap().is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
