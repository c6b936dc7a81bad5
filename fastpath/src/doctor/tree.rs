// A fake host tree for the doctor's unit tests: a temporary root with the /proc, /sys and /etc
// files a test writes, removed when dropped.
//! Fake host trees.

use std::path::{Path, PathBuf};

use super::Host;

/// A temporary root directory.
pub struct Tree {
    /// The root.
    pub root: PathBuf,
}

impl Tree {
    /// An empty tree named after the test.
    pub fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("fastpath-doctor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    /// Writes `text` at the host path `abs` (directories made).
    pub fn write(&self, abs: &str, text: &str) -> &Self {
        let p = self.root.join(abs.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Makes the directory `abs`.
    pub fn dir(&self, abs: &str) -> &Self {
        std::fs::create_dir_all(self.root.join(abs.trim_start_matches('/'))).unwrap();
        self
    }

    /// The host it describes, programs looked for in /usr/bin, no fastpathd.
    pub fn host(&self) -> Host {
        let mut h = Host::at(&self.root, "/usr/bin");
        h.ctl = self.root.join("no-switch.sock");
        h
    }

    /// A path in the tree.
    pub fn path(&self, abs: &str) -> PathBuf {
        Path::new(&self.root).join(abs.trim_start_matches('/'))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
