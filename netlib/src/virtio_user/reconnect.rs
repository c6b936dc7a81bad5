// The connection's life: a fresh one taken through the handshake, the port going down
// on a fault or a disconnect, and, while down, accepting or reconnecting to a backend.
//! virtio-user's connection and reconnection.
//!
//! A port whose backend goes away (a switch killed, restarted or upgraded) goes down with
//! one log line, keeps its pool, counters and rings, and tries the backend again on the
//! [`Backoff`] schedule; it comes back up with one log line saying how long it was down.
//! Its owner sees bursts of nothing meanwhile, never an error.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Instant;

use super::backoff::{Backoff, RETRY_MAX};
use super::{State, VirtioUser, VirtioUserError};
use crate::pool::PktPool;
use crate::vhost_user::Conn;

impl VirtioUser {
    /// Takes a fresh connection through the whole handshake and brings the port up.
    pub(super) fn start(&mut self, stream: UnixStream, pool: &mut PktPool) -> Result<(), VirtioUserError> {
        self.rxq.reset(pool);
        self.txq.reset(pool);
        self.conn = None;
        let mut conn = Conn::new(stream).map_err(|e| VirtioUserError::Socket {
            path: self.path.clone(),
            what: "socket setup",
            source: e,
        })?;
        self.protocol = 0;
        self.in_order = false;
        self.tx_features = 0;
        let res = self.handshake(&mut conn, pool);
        match &res {
            Ok(()) => {
                self.conn = Some(conn);
                self.backoff.reset();
                if let Some(t) = self.down_since.take() {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    tracing::info!("{}: up again after {ms:.1} ms down (reset {})", self.name, self.counters.resets);
                }
            }
            Err(e) => {
                tracing::warn!("{}: handshake failed: {e}", self.name);
                self.rxq.reset(pool);
                self.txq.reset(pool);
            }
        }
        res
    }

    /// Drops the connection after a fault or a disconnect, with one log line saying why,
    /// and takes back every packet in flight.
    pub(super) fn go_down(&mut self, pool: &mut PktPool, why: &str) {
        tracing::warn!("{}: down: {why}; reconnecting", self.name);
        self.conn = None;
        self.state = State::Down;
        self.down_since = Some(Instant::now());
        self.backoff.reset();
        self.counters.resets += 1;
        self.rxq.reset(pool);
        self.txq.reset(pool);
    }

    /// Checks the control socket: peer gone, or (when down) a new backend.
    pub(super) fn control(&mut self, pool: &mut PktPool) {
        if self.state == State::Up {
            let r = self.conn.as_mut().map(Conn::try_recv);
            match r {
                Some(Ok(None)) | None => {}
                Some(Ok(Some(m))) => {
                    tracing::debug!("{}: ignoring unexpected message {}", self.name, m.header.request);
                }
                Some(Err(e)) => self.go_down(pool, &e.to_string()),
            }
            return;
        }
        let Some(s) = dial(&self.name, &self.path, self.listener.as_ref(), &mut self.backoff, &mut self.retry_error)
        else {
            return;
        };
        if let Err(e) = self.start(s, pool) {
            tracing::warn!("{}: {e}", self.name);
            self.backoff.failed();
        }
    }
}

/// One try at a backend for the down port `name` on `path`, if `backoff` says one is
/// due: accepts one waiting on `listener` (a server), else connects. A miss is counted in
/// `backoff`; an unusual one (out of fds, permissions) is logged once (see
/// [`note_retry_error`]). The stream returned blocks.
pub(super) fn dial(
    name: &str,
    path: &Path,
    listener: Option<&UnixListener>,
    backoff: &mut Backoff,
    retry_error: &mut Option<String>,
) -> Option<UnixStream> {
    if !backoff.due(Instant::now()) {
        return None;
    }
    let stream = match listener {
        Some(l) => l.accept().map(|(s, _)| s),
        None => UnixStream::connect(path),
    };
    match stream {
        Ok(s) => {
            *retry_error = None;
            let _ = s.set_nonblocking(false);
            Some(s)
        }
        Err(e) if listener.is_some() && e.kind() == std::io::ErrorKind::WouldBlock => {
            backoff.nothing_yet();
            None
        }
        Err(e) => {
            backoff.failed();
            note_retry_error(name, listener.is_some(), retry_error, &e);
            None
        }
    }
}

/// A failed accept (`server`) or connect while down, on port `name`. No backend yet is the
/// usual case and passes silently; anything else (out of fds, permissions) is logged once
/// (`last` holds the one logged), and retried all the same.
fn note_retry_error(name: &str, server: bool, last: &mut Option<String>, e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionRefused, NotFound, WouldBlock};
    let text = e.to_string();
    if matches!(e.kind(), WouldBlock | NotFound | ConnectionRefused) || last.as_ref() == Some(&text) {
        return;
    }
    let what = if server { "accepting a backend" } else { "connecting" };
    tracing::warn!("{name}: {what}: {text}; staying down, retrying at least every {RETRY_MAX:?}");
    *last = Some(text);
}
