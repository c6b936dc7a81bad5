// What the hook asks of fastpathd, behind a trait so the hook's logic is tested against a fake
// switch; the real one speaks the control protocol through fastpath-host's client.
//! Switch control.

use crate::{Error, Result};
use fastpath_host::proto::{Client, ClientError, ErrorCode, PortConfig, Request, Response};
use std::path::Path;
use std::time::Duration;

/// Prefix of the port names the hook gives (so `gc` and fastpathd can tell its own ports).
pub use fastpath_host::ledger::PORT_PREFIX;

/// The port name for a container's port on a bridge.
pub fn port_name(id: &str, bridge: &str) -> String {
    format!("{PORT_PREFIX}{id}-{bridge}")
}

/// The MAC a container's port on a bridge gets: locally administered and unicast
/// (`02:` first), the other five bytes a hash of the container id and the bridge, so
/// that the same container gets the same MAC again (after a switch restart, say).
/// Two ports share one with a chance of about n²/2⁴¹ among n ports.
pub fn port_mac(id: &str, bridge: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain([b'/']).chain(bridge.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[3], b[4], b[5], b[6], b[7])
}

/// What the hook asks of the switch.
pub trait SwitchCtl {
    /// The control socket, for messages.
    fn socket(&self) -> &Path;
    /// The bridges the switch has.
    fn bridges(&self) -> Result<Vec<String>>;
    /// Adds a port (for the hook: a server-mode vhost-user port whose socket the switch
    /// binds and gives to the container's uid and gid).
    fn add_port(&self, port: &PortConfig) -> Result<()>;
    /// Removes a port; `Ok(false)` when there was no such port.
    fn del_port(&self, name: &str) -> Result<bool>;
    /// The names of all ports.
    fn ports(&self) -> Result<Vec<String>>;
    /// A port's bridge and whether its link is up (a frontend drives it); `Ok(None)` when
    /// there is no such port.
    fn port_link(&self, name: &str) -> Result<Option<(String, bool)>>;
}

/// fastpathd over its unix control socket.
#[derive(Debug, Clone)]
pub struct UnixSwitch {
    client: Client,
}

impl UnixSwitch {
    /// A client of the switch at `path`; each request waits at most `timeout`.
    pub fn new(path: &Path, timeout: Duration) -> Self {
        Self { client: Client::new(path, timeout) }
    }

    fn err(&self, e: &ClientError) -> Error {
        let hint = if matches!(e, ClientError::Connect { .. }) { " (switch_socket in hook.toml)" } else { "" };
        Error::Switch { socket: self.client.path().into(), msg: format!("{e}{hint}") }
    }

    fn call(&self, req: &Request) -> Result<Response> {
        self.client.call(req).map_err(|e| self.err(&e))
    }
}

impl SwitchCtl for UnixSwitch {
    fn socket(&self) -> &Path {
        self.client.path()
    }

    fn bridges(&self) -> Result<Vec<String>> {
        Ok(self.call(&Request::Bridges)?.bridges.unwrap_or_default())
    }

    /// A switch too old for the port's labels (protocol 4) gets the port without them.
    fn add_port(&self, port: &PortConfig) -> Result<()> {
        match self.client.call(&Request::AddPort(port.clone())) {
            Ok(_) => Ok(()),
            Err(ClientError::Version(v)) if port.has_labels() && v.switch < v.client => {
                tracing::warn!("{}: {v}; port {} added without its metrics labels", self.socket().display(), port.name);
                self.call(&Request::AddPort(port.clone().without_labels())).map(drop)
            }
            Err(e) => Err(self.err(&e)),
        }
    }

    fn del_port(&self, name: &str) -> Result<bool> {
        match self.client.call(&Request::DelPort { name: name.into() }) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(ErrorCode::NoSuchPort) => Ok(false),
            Err(e) => Err(self.err(&e)),
        }
    }

    fn ports(&self) -> Result<Vec<String>> {
        Ok(self.call(&Request::List)?.ports.unwrap_or_default().into_iter().map(|p| p.name).collect())
    }

    fn port_link(&self, name: &str) -> Result<Option<(String, bool)>> {
        let ports = self.call(&Request::List)?.ports.unwrap_or_default();
        Ok(ports.into_iter().find(|p| p.name == name).map(|p| (p.bridge, p.stats.link_up)))
    }
}

/// A switch in memory, for tests (this crate's, and with the `test-utils` feature, others').
#[cfg(any(test, feature = "test-utils"))]
pub mod fake {
    use super::SwitchCtl;
    use crate::{Error, Result};
    use fastpath_host::proto::PortConfig;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// In-memory switch: bridges, ports, and switches to make it fail.
    #[derive(Debug, Default)]
    pub struct FakeSwitch {
        /// Bridges.
        pub bridges: Vec<String>,
        /// Ports by name, as asked for.
        pub ports: RefCell<BTreeMap<String, PortConfig>>,
        /// Whether it answers at all.
        pub down: bool,
        /// Refuse `add-port` for this bridge.
        pub fail_add_on: Option<String>,
        /// Every port's link is down (no frontend).
        pub links_down: bool,
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
        fn add_port(&self, port: &PortConfig) -> Result<()> {
            self.up()?;
            if self.fail_add_on.as_deref() == Some(port.bridge.as_str()) {
                return Err(Error::Switch { socket: "/fake".into(), msg: "the switch is full".into() });
            }
            self.ports.borrow_mut().insert(port.name.clone(), port.clone());
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
        fn port_link(&self, name: &str) -> Result<Option<(String, bool)>> {
            self.up()?;
            Ok(self.ports.borrow().get(name).map(|p| (p.bridge.clone(), !self.links_down)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath_host::proto::fake::FakeSocket;

    fn reply(code: ErrorCode, msg: &str) -> String {
        Response::error(code, msg).to_line()
    }

    #[test]
    fn del_port_tells_a_missing_port_by_its_code_not_its_words() {
        let gone =
            FakeSocket::answering("hook-gone", |_| Some(reply(ErrorCode::NoSuchPort, "nothing here by that name")));
        let sw = UnixSwitch::new(gone.path(), Duration::from_secs(2));
        assert!(!sw.del_port("fp-x-br0").unwrap());
        // Words that say "does not exist" under another code are a failure.
        let other = FakeSocket::answering("hook-other", |_| {
            Some(reply(ErrorCode::NoSuchBridge, "bridge 'br0' does not exist"))
        });
        let sw = UnixSwitch::new(other.path(), Duration::from_secs(2));
        let e = sw.del_port("fp-x-br0").unwrap_err().to_string();
        assert_eq!(e, format!("fastpathd at {}: bridge 'br0' does not exist", other.path().display()));
        let ok = FakeSocket::answering("hook-ok", |_| Some(Response::ok().to_line()));
        assert!(UnixSwitch::new(ok.path(), Duration::from_secs(2)).del_port("fp-x-br0").unwrap());
    }

    fn want_port() -> PortConfig {
        PortConfig {
            uid: Some(1000),
            gid: Some(1001),
            container: Some("c".into()),
            mac: Some(port_mac("c", "br0")),
            ..PortConfig::new("fp-c-br0", "br0", "/run/fastpath/sock/c/br0.sock")
        }
    }

    #[test]
    fn a_switch_of_protocol_3_gets_the_port_without_its_labels() {
        let v3 = fastpath_host::proto::Served { oldest: 1, newest: 3 };
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&got);
        let sw = FakeSocket::answering("hook-v3", move |line| {
            Some(match v3.decode(line) {
                Ok((_, Request::AddPort(p))) => {
                    seen.lock().unwrap().push(p);
                    Response { version: Some(3), ..Response::ok() }.to_line()
                }
                Ok(_) => Response::error(ErrorCode::BadRequest, "unexpected").to_line(),
                Err(refusal) => refusal.to_line(),
            })
        });
        let labelled = PortConfig { pod_name: Some("web-0".into()), ..want_port() };
        UnixSwitch::new(sw.path(), Duration::from_secs(2)).add_port(&labelled).unwrap();
        assert_eq!(*got.lock().unwrap(), [want_port()]);
    }

    #[test]
    fn port_macs_are_unicast_local_stable_and_differ() {
        let m = port_mac("c1", "br0");
        assert_eq!(m, port_mac("c1", "br0"));
        assert!(m.starts_with("02:") && m.len() == 17, "{m}");
        let all: std::collections::BTreeSet<String> =
            (0..2000).map(|i| port_mac(&format!("container-{i}"), "br0")).collect();
        assert_eq!(all.len(), 2000);
        assert_ne!(port_mac("c1", "br0"), port_mac("c1", "br1"));
    }

    #[test]
    fn requests_are_the_protocol_types_and_errors_name_the_socket() {
        let sw = FakeSocket::answering("hook-req", |line| {
            let (_, req) = fastpath_host::proto::decode_request(line).unwrap();
            let want = Request::AddPort(want_port());
            Some(
                if req == want { Response::ok() } else { Response::error(ErrorCode::BadRequest, "unexpected") }
                    .to_line(),
            )
        });
        let u = UnixSwitch::new(sw.path(), Duration::from_secs(2));
        u.add_port(&want_port()).unwrap();
        let nowhere = sw.path().with_extension("none");
        let e = UnixSwitch::new(&nowhere, Duration::from_secs(2)).bridges().unwrap_err().to_string();
        let start = format!("fastpathd at {}: not answering (", nowhere.display());
        assert!(e.starts_with(&start) && e.ends_with("is fastpathd running? (switch_socket in hook.toml)"), "{e}");
    }
}
