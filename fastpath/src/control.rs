// The control socket: one JSON request per line, one JSON response per line.
// The server side hands requests to the worker; the client side is fastpathctl's.
//! fastpathd's control protocol.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{PortConfig, PortMode};
use crate::info::PortInfo;
use crate::switch::NewPort;
use crate::worker::Command;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Add a port.
    AddPort {
        /// Port name.
        name: String,
        /// Bridge.
        bridge: String,
        /// Socket path.
        socket: PathBuf,
        /// Who listens (default: the switch).
        #[serde(default = "server")]
        mode: PortMode,
        /// Give the socket file to this uid (so a non-root container can connect).
        #[serde(default)]
        uid: Option<u32>,
        /// ... and this gid.
        #[serde(default)]
        gid: Option<u32>,
    },
    /// Remove a port.
    DelPort {
        /// Port name.
        name: String,
    },
    /// Ports with their counters.
    List,
    /// Bridge names.
    Bridges,
}

fn server() -> PortMode {
    PortMode::Server
}

/// A control response.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ports (for `list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortInfo>>,
    /// Bridges (for `bridges`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridges: Option<Vec<String>>,
}

impl Response {
    fn ok() -> Self {
        Self { ok: true, ..Self::default() }
    }
    fn err(e: impl Into<String>) -> Self {
        Self { ok: false, error: Some(e.into()), ..Self::default() }
    }
}

const WORKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Executes one request against the worker.
pub fn execute(req: Request, worker: &Sender<Command>) -> Response {
    let gone = || Response::err("the switch worker is not running");
    match req {
        Request::AddPort { name, bridge, socket, mode, uid, gid } => {
            let cfg = PortConfig { name, bridge, socket, mode };
            // Refuse before touching the filesystem, then bind, then add.
            let (tx, rx) = channel();
            if worker.send(Command::Check(cfg.clone(), tx)).is_err() {
                return gone();
            }
            match rx.recv_timeout(WORKER_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Response::err(e.to_string()),
                Err(_) => return gone(),
            }
            let sock = cfg.socket.clone();
            let port = match NewPort::open(cfg) {
                Ok(p) => p,
                Err(e) => return Response::err(e.to_string()),
            };
            if mode == PortMode::Server && (uid.is_some() || gid.is_some()) {
                let r =
                    nix::unistd::chown(&sock, uid.map(nix::unistd::Uid::from_raw), gid.map(nix::unistd::Gid::from_raw));
                if let Err(e) = r {
                    return Response::err(format!("chown {} to {uid:?}:{gid:?}: {e}", sock.display()));
                }
            }
            let (tx, rx) = channel();
            if worker.send(Command::Add(Box::new(port), tx)).is_err() {
                return gone();
            }
            match rx.recv_timeout(WORKER_TIMEOUT) {
                Ok(Ok(())) => Response::ok(),
                Ok(Err(e)) => Response::err(e.to_string()),
                Err(_) => gone(),
            }
        }
        Request::DelPort { name } => {
            let (tx, rx) = channel();
            if worker.send(Command::Del(name, tx)).is_err() {
                return gone();
            }
            match rx.recv_timeout(WORKER_TIMEOUT) {
                Ok(Ok(())) => Response::ok(),
                Ok(Err(e)) => Response::err(e.to_string()),
                Err(_) => gone(),
            }
        }
        Request::List => {
            let (tx, rx) = channel();
            if worker.send(Command::List(tx)).is_err() {
                return gone();
            }
            match rx.recv_timeout(WORKER_TIMEOUT) {
                Ok(ports) => Response { ports: Some(ports), ..Response::ok() },
                Err(_) => gone(),
            }
        }
        Request::Bridges => {
            let (tx, rx) = channel();
            if worker.send(Command::Bridges(tx)).is_err() {
                return gone();
            }
            match rx.recv_timeout(WORKER_TIMEOUT) {
                Ok(b) => Response { bridges: Some(b), ..Response::ok() },
                Err(_) => gone(),
            }
        }
    }
}

/// Binds the control socket; refuses if another switch answers on it.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is in use: is another fastpathd running?", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

/// Serves connections one after another until the listener fails. One thread:
/// a control call is short, and a client that stalls is cut off by a timeout.
pub fn serve(listener: &UnixListener, worker: &Sender<Command>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        serve_one(conn, worker);
    }
}

fn serve_one(conn: UnixStream, worker: &Sender<Command>) {
    let Ok(mut out) = conn.try_clone() else { return };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => execute(req, worker),
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        let mut text = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Errors talking to fastpathd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Can't connect.
    #[error("cannot reach fastpathd at {path}: {source} (is it running?)")]
    Connect {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// I/O.
    #[error("fastpathd control socket: {0}")]
    Io(#[from] std::io::Error),
    /// Bad response.
    #[error("fastpathd answered something unreadable: {0}")]
    Decode(#[from] serde_json::Error),
    /// The switch refused.
    #[error("fastpathd: {0}")]
    Refused(String),
}

/// Sends one request and returns the (successful) response.
pub fn call(path: &Path, req: &Request) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|e| ClientError::Connect { path: path.into(), source: e })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = serde_json::to_string(req)?;
    text.push('\n');
    s.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let r: Response = serde_json::from_str(&line)?;
    if r.ok {
        Ok(r)
    } else {
        Err(ClientError::Refused(r.error.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_shape() {
        let r: Request = serde_json::from_str(r#"{"cmd":"add-port","name":"a","bridge":"br0","socket":"/x"}"#).unwrap();
        assert_eq!(
            r,
            Request::AddPort {
                name: "a".into(),
                bridge: "br0".into(),
                socket: "/x".into(),
                mode: PortMode::Server,
                uid: None,
                gid: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert_eq!(serde_json::to_string(&Request::List).unwrap(), r#"{"cmd":"list"}"#);
    }
}
