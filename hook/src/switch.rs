// A client of fastpathd's control socket (one JSON object per line each way), behind a
// trait so the hook's logic is tested against a fake switch.
//! Switch control.

use crate::{Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of the port names the hook gives (so `gc` can tell its own ports).
pub const PORT_PREFIX: &str = "fp-";

/// The port name for a container's port on a bridge.
pub fn port_name(id: &str, bridge: &str) -> String {
    format!("{PORT_PREFIX}{id}-{bridge}")
}

/// What the hook asks of the switch.
pub trait SwitchCtl {
    /// The control socket, for messages.
    fn socket(&self) -> &Path;
    /// The bridges the switch has.
    fn bridges(&self) -> Result<Vec<String>>;
    /// Adds a server-mode vhost-user port whose socket the switch binds and gives to `uid:gid`.
    fn add_port(&self, name: &str, bridge: &str, socket: &Path, uid: u32, gid: u32) -> Result<()>;
    /// Removes a port; `Ok(false)` when there was no such port.
    fn del_port(&self, name: &str) -> Result<bool>;
    /// The names of all ports.
    fn ports(&self) -> Result<Vec<String>>;
}

/// fastpathd over its unix control socket.
#[derive(Debug, Clone)]
pub struct UnixSwitch {
    path: PathBuf,
    timeout: Duration,
}

impl UnixSwitch {
    /// A client of the switch at `path`; each request waits at most `timeout`.
    pub fn new(path: &Path, timeout: Duration) -> Self {
        Self { path: path.into(), timeout }
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Switch { socket: self.path.clone(), msg: msg.into() }
    }

    fn call(&self, req: &Value) -> Result<Value> {
        let s = UnixStream::connect(&self.path).map_err(|e| {
            self.err(format!("not answering ({e}): is fastpathd running? (switch_socket in hook.toml)"))
        })?;
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.err(e.to_string()))?;
        let mut line = req.to_string();
        line.push('\n');
        (&s).write_all(line.as_bytes()).map_err(|e| self.err(format!("sending: {e}")))?;
        let mut answer = String::new();
        BufReader::new(&s)
            .read_line(&mut answer)
            .map_err(|e| self.err(format!("no answer within {:?}: {e}", self.timeout)))?;
        let v: Value =
            serde_json::from_str(&answer).map_err(|e| self.err(format!("bad answer '{}': {e}", answer.trim())))?;
        if v["ok"] == Value::Bool(true) {
            Ok(v)
        } else {
            Err(self.err(v["error"].as_str().unwrap_or("refused without a reason").to_string()))
        }
    }
}

impl SwitchCtl for UnixSwitch {
    fn socket(&self) -> &Path {
        &self.path
    }

    fn bridges(&self) -> Result<Vec<String>> {
        let v = self.call(&json!({"cmd": "bridges"}))?;
        Ok(v["bridges"]
            .as_array()
            .map(|a| a.iter().filter_map(|b| b.as_str().map(String::from)).collect())
            .unwrap_or_default())
    }

    fn add_port(&self, name: &str, bridge: &str, socket: &Path, uid: u32, gid: u32) -> Result<()> {
        self.call(&json!({"cmd": "add-port", "name": name, "bridge": bridge, "socket": socket, "mode": "server", "uid": uid, "gid": gid}))
            .map(|_| ())
    }

    fn del_port(&self, name: &str) -> Result<bool> {
        match self.call(&json!({"cmd": "del-port", "name": name})) {
            Ok(_) => Ok(true),
            Err(Error::Switch { msg, .. }) if msg.contains("does not exist") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn ports(&self) -> Result<Vec<String>> {
        let v = self.call(&json!({"cmd": "list"}))?;
        Ok(v["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(String::from)).collect())
            .unwrap_or_default())
    }
}

/// A switch in memory, for tests.
pub mod fake {
    use super::SwitchCtl;
    use crate::{Error, Result};
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// In-memory switch: bridges, ports, and switches to make it fail.
    #[derive(Debug, Default)]
    pub struct FakeSwitch {
        /// Bridges.
        pub bridges: Vec<String>,
        /// Ports: name → (bridge, socket, uid).
        pub ports: RefCell<BTreeMap<String, (String, PathBuf, u32)>>,
        /// Whether it answers at all.
        pub down: bool,
        /// Refuse `add-port` for this bridge.
        pub fail_add_on: Option<String>,
    }

    impl FakeSwitch {
        /// A running switch with these bridges.
        pub fn with(bridges: &[&str]) -> Self {
            Self { bridges: bridges.iter().map(|s| (*s).to_string()).collect(), ..Self::default() }
        }

        fn up(&self) -> Result<()> {
            if self.down {
                Err(Error::Switch { socket: "/fake".into(), msg: "not answering: is fastpathd running?".into() })
            } else {
                Ok(())
            }
        }
    }

    impl SwitchCtl for FakeSwitch {
        fn socket(&self) -> &Path {
            Path::new("/fake")
        }
        fn bridges(&self) -> Result<Vec<String>> {
            self.up()?;
            Ok(self.bridges.clone())
        }
        fn add_port(&self, name: &str, bridge: &str, socket: &Path, uid: u32, _gid: u32) -> Result<()> {
            self.up()?;
            if self.fail_add_on.as_deref() == Some(bridge) {
                return Err(Error::Switch { socket: "/fake".into(), msg: "the switch is full".into() });
            }
            self.ports.borrow_mut().insert(name.into(), (bridge.into(), socket.into(), uid));
            Ok(())
        }
        fn del_port(&self, name: &str) -> Result<bool> {
            self.up()?;
            Ok(self.ports.borrow_mut().remove(name).is_some())
        }
        fn ports(&self) -> Result<Vec<String>> {
            self.up()?;
            Ok(self.ports.borrow().keys().cloned().collect())
        }
    }
}
