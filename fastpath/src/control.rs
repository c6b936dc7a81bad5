// fastpathd's side of the control socket: one JSON request per line, one JSON reply per
// line (the protocol is fastpath-host's `proto`); requests are handed to the worker, every
// change of ports is saved to the state file before it is answered, and a handover stops it;
// a capture keeps its connection (`capture`).
//! fastpathd's control server.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Duration;

use fastpath_host::proto::{decode_request, Client, ClientError, ErrorCode, SwitchStatus};
pub use fastpath_host::proto::{Request, Response};

use crate::config::{PortConfig, PortDefaults, PortMode};
use crate::error::SwitchError;
use crate::state::{Durable, Origin};
use crate::switch::NewPort;
use crate::worker::{Command, FirstFrame};

const WORKER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a control socket may still answer after its switch was killed: the kernel closes
/// a dead process's sockets as it tears the process down, a few ms after `kill -9` returns,
/// so a new switch started at once (by hand, or by a supervisor that does not wait) waits
/// for that instead of refusing to start.
const DYING_SWITCH_GRACE: Duration = Duration::from_millis(500);

/// Opens the port `cfg` describes with `defaults` where it is silent, and gives a socket the
/// switch listens on to the port's uid and gid.
pub fn open_port(cfg: PortConfig, defaults: &PortDefaults) -> Result<NewPort, SwitchError> {
    let (mode, uid, gid) = (cfg.mode, cfg.uid, cfg.gid);
    let (name, sock) = (cfg.name.clone(), cfg.socket.clone());
    let port = NewPort::open(cfg, defaults)?;
    if mode == PortMode::Server && (uid.is_some() || gid.is_some()) {
        nix::unistd::chown(&sock, uid.map(nix::unistd::Uid::from_raw), gid.map(nix::unistd::Gid::from_raw)).map_err(
            |e| SwitchError::Open { port: name, why: format!("chown {} to {uid:?}:{gid:?}: {e}", sock.display()) },
        )?;
    }
    Ok(port)
}

/// The control server's view of the switch: the worker it drives, the ports it holds (and
/// saves), and what `status` says.
#[derive(Debug)]
pub struct Server {
    /// The worker's command queue.
    pub worker: Sender<Command>,
    /// What ports get where their description is silent.
    pub defaults: PortDefaults,
    /// The ports the switch holds, saved on every change.
    pub ports: Durable,
    /// When the worker first forwarded a frame.
    pub first_frame: Arc<FirstFrame>,
    /// The pid of the switch this one took over from.
    pub took_over_from: Option<u32>,
    /// The CPU the worker is pinned to (the first worker's, with several).
    pub core: Option<usize>,
    /// The CPU of each worker, with several (empty with one).
    pub cores: Vec<usize>,
    /// Set once a handover began: the worker stops and no request is served any more.
    pub handed_over: Arc<AtomicBool>,
}

impl Server {
    /// Sends the worker a command made with a reply channel, and waits for the reply.
    /// (`capture` is served by [`Server::capture`] instead: it keeps the connection.)
    fn ask<T>(&self, cmd: impl FnOnce(Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = channel();
        self.worker.send(cmd(tx)).ok()?;
        rx.recv_timeout(WORKER_TIMEOUT).ok()
    }

    /// What the switch says about itself.
    pub fn status(&self) -> SwitchStatus {
        SwitchStatus {
            pid: std::process::id(),
            ports: self.ports.len(),
            state_file: Some(self.ports.path().to_path_buf()),
            took_over_from: self.took_over_from,
            first_frame_ms: self.first_frame.ms(),
            core: self.core,
            cores: self.cores.clone(),
        }
    }

    /// Executes one request against the worker.
    pub fn execute(&mut self, req: Request) -> Response {
        let gone = || Response::error(ErrorCode::Internal, "the switch worker is not running");
        if self.handed_over.load(Ordering::Relaxed) {
            return Response::error(ErrorCode::ShuttingDown, "this fastpathd handed its ports over to a new one");
        }
        match req {
            Request::AddPort(cfg) => {
                // Refuse before touching the filesystem, then bind, then add, then save.
                match self.ask(|tx| Command::Check(Box::new(cfg.clone()), tx)) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return e.into(),
                    None => return gone(),
                }
                let port = match open_port(cfg.clone(), &self.defaults) {
                    Ok(p) => p,
                    Err(e) => return e.into(),
                };
                match self.ask(|tx| Command::Add(Box::new(port), tx)) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return e.into(),
                    None => return gone(),
                }
                let name = cfg.name.clone();
                match self.ports.added(cfg, Origin::Runtime) {
                    Ok(()) => Response::ok(),
                    Err(e) => {
                        // Not durable, not held: a restart would lose it.
                        let _ = self.ask(|tx| Command::Del(name.clone(), tx));
                        Response::error(ErrorCode::Internal, format!("port '{name}' not added: {e}"))
                    }
                }
            }
            Request::DelPort { name } => match self.ask(|tx| Command::Del(name.clone(), tx)) {
                Some(Ok(())) => match self.ports.removed(&name) {
                    Ok(()) => Response::ok(),
                    Err(e) => Response::error(
                        ErrorCode::Internal,
                        format!("port '{name}' removed, but it comes back when fastpathd restarts: {e}"),
                    ),
                },
                Some(Err(e)) => e.into(),
                None => gone(),
            },
            Request::List => match self.ask(Command::List) {
                Some(ports) => Response { ports: Some(ports), ..Response::ok() },
                None => gone(),
            },
            Request::Bridges => match self.ask(Command::Bridges) {
                Some(b) => Response { bridges: Some(b), ..Response::ok() },
                None => gone(),
            },
            Request::Status => Response { status: Some(Box::new(self.status())), ..Response::ok() },
            Request::Handover => self.hand_over(),
            Request::Capture(spec) => Response::error(
                ErrorCode::BadRequest,
                format!("capture of '{}' asked through a path that cannot hand over its ring", spec.port),
            ),
            Request::MirrorAdd(cfg) => match self.ask(|tx| Command::MirrorAdd(cfg.clone(), tx)) {
                Some(Ok(())) => {
                    let (from, to) = (cfg.from.clone(), cfg.to.clone());
                    match self.ports.mirror_added(cfg) {
                        Ok(()) => Response::ok(),
                        Err(e) => {
                            let _ = self.ask(|tx| Command::MirrorDel(from.clone(), to.clone(), tx));
                            Response::error(ErrorCode::Internal, format!("mirror {from} -> {to} not added: {e}"))
                        }
                    }
                }
                Some(Err(e)) => e.into(),
                None => gone(),
            },
            Request::MirrorDel { from, to } => match self.ask(|tx| Command::MirrorDel(from.clone(), to.clone(), tx)) {
                Some(Ok(())) => match self.ports.mirror_removed(&from, &to) {
                    Ok(()) => Response::ok(),
                    Err(e) => Response::error(
                        ErrorCode::Internal,
                        format!("mirror {from} -> {to} removed, but it comes back when fastpathd restarts: {e}"),
                    ),
                },
                Some(Err(e)) => e.into(),
                None => gone(),
            },
            Request::Mirrors => match self.ask(Command::Mirrors) {
                Some(m) => Response { mirrors: Some(m), ..Response::ok() },
                None => gone(),
            },
        }
    }

    /// Stops the worker (every port closes: the frontends go down and reconnect to the new
    /// switch), saves the state once more, and answers with this switch's status.
    fn hand_over(&mut self) -> Response {
        self.handed_over.store(true, Ordering::Relaxed);
        if self.ask(Command::Stop).is_none() {
            tracing::warn!("handover: the worker did not confirm it stopped");
        }
        if let Err(e) = self.ports.save() {
            tracing::error!("handover: {e}");
        }
        tracing::info!("handed {} ports over to a new fastpathd; exiting", self.ports.len());
        Response { status: Some(Box::new(self.status())), ..Response::ok() }
    }
}

/// Binds the control socket; refuses if another switch still answers on it after
/// [`DYING_SWITCH_GRACE`].
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    bind_unless_live(path, DYING_SWITCH_GRACE)
}

fn bind_unless_live(path: &Path, grace: Duration) -> std::io::Result<UnixListener> {
    let deadline = std::time::Instant::now() + grace;
    while UnixStream::connect(path).is_ok() {
        if std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is in use: is another fastpathd running?", path.display()),
        ));
    }
    bind_over(path)
}

/// Binds the control socket in place of whatever is there (the switch that just handed over
/// may still be listening on the old file until it exits).
pub fn bind_over(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

/// The new switch's side of a handover: asks the fastpathd on `path` to hand its ports over,
/// waiting up to `timeout`. When this returns, the old switch has closed its ports and saved
/// its state; its answer says who it was.
pub fn take_over(path: &Path, timeout: Duration) -> Result<SwitchStatus, ClientError> {
    let r = Client::new(path, timeout).call(&Request::Handover)?;
    r.status
        .map(|s| *s)
        .ok_or(ClientError::Refused { code: ErrorCode::Unknown, message: "it answered without its status".into() })
}

/// Serves connections one after another until the listener fails or the switch has handed
/// over (then the listener closes). One thread: a control call is short, and a client that
/// stalls is cut off by a timeout.
pub fn serve(listener: UnixListener, mut server: Server) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        serve_one(conn, &mut server);
        if server.handed_over.load(Ordering::Relaxed) {
            return;
        }
    }
}

fn serve_one(conn: UnixStream, server: &mut Server) {
    let Ok(mut out) = conn.try_clone() else { return };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match decode_request(&line) {
            Ok((_version, Request::Capture(spec))) => {
                // The connection is the capture's from now on: it ends when it closes.
                let _ = out.set_read_timeout(None);
                return server.capture(spec, out);
            }
            Ok((_version, req)) => server.execute(req),
            Err(refusal) => refusal,
        };
        if out.write_all(resp.to_line().as_bytes()).is_err() || server.handed_over.load(Ordering::Relaxed) {
            return;
        }
    }
}

mod capture;
#[cfg(test)]
mod tests;
