// fastpath-hook's hook.toml as the tests, the bench and the demo write it: the core pool,
// the state directory, fastpathd's control socket and (optionally) the library to inject.
//! The hook's configuration file.

use std::fmt::Write as _;
use std::path::Path;

use crate::Error;

/// What a test or xtask run puts in fastpath-hook's hook.toml.
#[derive(Debug, Clone, Copy)]
pub struct HookConfig<'a> {
    /// The core pool containers get cores from (a kernel CPU list, "0-1" or "1,3").
    pub cores: &'a str,
    /// The hook's state directory (ledger, socket directories, hook.log).
    pub state_dir: &'a Path,
    /// fastpathd's control socket.
    pub switch_socket: &'a Path,
    /// What `fastpath.io/inject` mounts (the hook's default when `None`).
    pub lib_dir: Option<&'a Path>,
}

impl HookConfig<'_> {
    /// The hook.toml text.
    pub fn text(&self) -> String {
        let mut s = format!(
            "cores = \"{}\"\nstate_dir = \"{}\"\nswitch_socket = \"{}\"\n",
            self.cores,
            self.state_dir.display(),
            self.switch_socket.display()
        );
        if let Some(l) = self.lib_dir {
            let _ = writeln!(s, "lib_dir = \"{}\"", l.display());
        }
        s
    }

    /// Writes [`HookConfig::text`] to `path`.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.text()).map_err(Error::io("writing", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_lib_dir_only_when_given() {
        let mut c =
            HookConfig { cores: "0-1", state_dir: Path::new("/s"), switch_socket: Path::new("/c.sock"), lib_dir: None };
        assert_eq!(c.text(), "cores = \"0-1\"\nstate_dir = \"/s\"\nswitch_socket = \"/c.sock\"\n");
        c.lib_dir = Some(Path::new("/l"));
        assert!(c.text().ends_with("switch_socket = \"/c.sock\"\nlib_dir = \"/l\"\n"), "{}", c.text());
    }
}
