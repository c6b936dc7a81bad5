// fastpathd's side of the control socket: one JSON request per line, one JSON reply per
// line (the protocol is fastpath-host's `proto`); requests are handed to the worker.
//! fastpathd's control server.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use fastpath_host::proto::{decode_request, ErrorCode};
pub use fastpath_host::proto::{Request, Response};

use crate::config::{PortDefaults, PortMode};
use crate::switch::NewPort;
use crate::worker::Command;

const WORKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Executes one request against the worker.
pub fn execute(req: Request, worker: &Sender<Command>, defaults: &PortDefaults) -> Response {
    let gone = || Response::error(ErrorCode::Internal, "the switch worker is not running");
    match req {
        Request::AddPort(cfg) => {
            let (mode, uid, gid) = (cfg.mode, cfg.uid, cfg.gid);
            // Refuse before touching the filesystem, then bind, then add.
            let (tx, rx) = channel();
            if worker.send(Command::Check(cfg.clone(), tx)).is_err() {
                return gone();
            }
            match rx.recv_timeout(WORKER_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return e.into(),
                Err(_) => return gone(),
            }
            let sock = cfg.socket.clone();
            let port = match NewPort::open(cfg, defaults) {
                Ok(p) => p,
                Err(e) => return e.into(),
            };
            if mode == PortMode::Server && (uid.is_some() || gid.is_some()) {
                let r =
                    nix::unistd::chown(&sock, uid.map(nix::unistd::Uid::from_raw), gid.map(nix::unistd::Gid::from_raw));
                if let Err(e) = r {
                    let msg = format!("chown {} to {uid:?}:{gid:?}: {e}", sock.display());
                    return Response::error(ErrorCode::OpenFailed, msg);
                }
            }
            let (tx, rx) = channel();
            if worker.send(Command::Add(Box::new(port), tx)).is_err() {
                return gone();
            }
            match rx.recv_timeout(WORKER_TIMEOUT) {
                Ok(Ok(())) => Response::ok(),
                Ok(Err(e)) => e.into(),
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
                Ok(Err(e)) => e.into(),
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
pub fn serve(listener: &UnixListener, worker: &Sender<Command>, defaults: &PortDefaults) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        serve_one(conn, worker, defaults);
    }
}

fn serve_one(conn: UnixStream, worker: &Sender<Command>, defaults: &PortDefaults) {
    let Ok(mut out) = conn.try_clone() else { return };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match decode_request(&line) {
            Ok((_version, req)) => execute(req, worker, defaults),
            Err(refusal) => refusal,
        };
        if out.write_all(resp.to_line().as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
