// The connection's life: a fresh one taken through the handshake, the port going down
// on a fault or a disconnect, and, while down, accepting or reconnecting to a backend.
//! virtio-user's connection and reconnection.
//!
//! A port whose backend goes away (a switch killed, restarted or upgraded) goes down with
//! one log line, keeps its pool, counters and rings, and tries the backend again on the
//! [`Backoff`] schedule; it comes back up with one log line saying how long it was down.
//! Its owner sees bursts of nothing meanwhile, never an error.

use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::backoff::RETRY_MAX;
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
        if !self.backoff.due(Instant::now()) {
            return;
        }
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
                    self.backoff.failed();
                }
            }
            Err(e) if self.listener.is_some() && e.kind() == std::io::ErrorKind::WouldBlock => {
                self.backoff.nothing_yet();
            }
            Err(e) => {
                self.backoff.failed();
                self.note_retry_error(&e);
            }
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
        tracing::warn!("{}: {what}: {text}; staying down, retrying at least every {RETRY_MAX:?}", self.name);
        self.retry_error = Some(text);
    }
}
