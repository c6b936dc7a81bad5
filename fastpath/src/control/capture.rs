// The control server's part of a capture: make the ring, give it to the worker, answer with
// the ring's memfd attached, then watch the connection and end the capture when it closes.
//! Serving `capture`.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

use fastpath_host::proto::{CaptureSpec, ErrorCode, Response};

use crate::capture::ring::Ring;
use crate::capture::session::send_with_fd;
use crate::capture::tap::CaptureTap;
use crate::worker::Command;

use super::Server;

/// Capture ids, unique in this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Server {
    /// Starts capture `spec` for the client on `conn`: the reply carries the ring's memfd;
    /// the capture runs until the client closes the connection (a thread waits for that).
    pub(super) fn capture(&self, spec: CaptureSpec, conn: UnixStream) {
        let refuse = |r: Response| {
            let _ = std::io::Write::write_all(&mut &conn, r.to_line().as_bytes());
        };
        let ring = match Ring::create(spec.slots, spec.snaplen) {
            Ok(r) => r,
            Err(e) => {
                return refuse(Response::error(ErrorCode::BadRequest, format!("capture of '{}': {e}", spec.port)))
            }
        };
        let fd = match ring.fd().try_clone() {
            Ok(f) => f,
            Err(e) => return refuse(Response::error(ErrorCode::Internal, format!("capture ring: {e}"))),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let tap = CaptureTap::new(id, spec, ring, conn.try_clone().ok());
        match self.ask(|tx| Command::Capture(Box::new(tap), tx)) {
            Some(Ok(())) => {}
            Some(Err(e)) => return refuse(e.into()),
            None => return refuse(Response::error(ErrorCode::Internal, "the switch worker is not running")),
        }
        let sent = send_with_fd(&conn, Response::ok().to_line().as_bytes(), fd.as_fd());
        drop(fd);
        if let Err(e) = sent {
            tracing::warn!("capture {id}: answering: {e}");
            let _ = self.worker.send(Command::Uncapture(id));
            return;
        }
        let worker = self.worker.clone();
        let watcher = std::thread::Builder::new().name(format!("capture-{id}")).spawn(move || {
            watch_until_closed(conn);
            let _ = worker.send(Command::Uncapture(id));
        });
        if let Err(e) = watcher {
            tracing::warn!("capture {id}: no thread to watch its client ({e}): ending it");
            let _ = self.worker.send(Command::Uncapture(id));
        }
    }
}

/// Returns when the client closes `conn` (or dies) or the capture ends on the switch's side.
fn watch_until_closed(mut conn: UnixStream) {
    let _ = conn.set_read_timeout(None);
    let mut buf = [0u8; 256];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}
