// The connection's life: a fresh one taken through the handshake, the port going down
// on a fault or a disconnect, and, while down, accepting or reconnecting to a backend.
//! virtio-user's connection and reconnection.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::{State, VirtioUser, VirtioUserError};
use crate::pool::PktPool;
use crate::vhost_user::Conn;

/// How often a down port retries its backend.
pub(super) const RETRY_EVERY: Duration = Duration::from_millis(100);

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
        let res = self.handshake(&mut conn, pool);
        match &res {
            Ok(()) => self.conn = Some(conn),
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
        tracing::warn!("{}: down: {why}", self.name);
        self.conn = None;
        self.state = State::Down;
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
        if self.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return;
        }
        self.last_try = Some(Instant::now());
        let stream = match &self.listener {
            Some(l) => l.accept().map(|(s, _)| s),
            None => UnixStream::connect(&self.path),
        };
        match stream {
            Ok(s) => {
                self.retry_error = None;
                let _ = s.set_nonblocking(false);
                if let Err(e) = self.start(s, pool) {
                    tracing::warn!("{}: {e}", self.name);
                }
            }
            Err(e) => self.note_retry_error(&e),
        }
    }

    /// A failed accept or connect while down. No backend yet is the usual case and
    /// passes silently; anything else (out of fds, permissions) is logged once, and
    /// retried all the same.
    fn note_retry_error(&mut self, e: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionRefused, NotFound, WouldBlock};
        let text = e.to_string();
        if matches!(e.kind(), WouldBlock | NotFound | ConnectionRefused) || self.retry_error.as_ref() == Some(&text) {
            return;
        }
        let what = if self.listener.is_some() { "accepting a backend" } else { "connecting" };
        tracing::warn!("{}: {what}: {text}; staying down, retrying every {RETRY_EVERY:?}", self.name);
        self.retry_error = Some(text);
    }
}
