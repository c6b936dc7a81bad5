// The control server's part of a capture: make the rings (one per worker that sees the port's
// frames), give them to the workers, answer with the rings' memfds attached, then watch the
// connection and end the capture when it closes.
//! Serving `capture`.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

use fastpath_host::proto::{CaptureSpec, Direction, ErrorCode, Response};

use crate::capture::ring::Ring;
use crate::capture::session::send_with_fds;
use crate::capture::tap::{CaptureTap, CaptureTaps};
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
        // A ring for the port's worker and, for what the port sends, one for each worker
        // that polls some of its queue pairs.
        let lane_workers = if spec.direction.rx() { self.lane_workers(&spec.port) } else { Vec::new() };
        let n = 1 + lane_workers.len();
        let (mut rings, mut fds) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let ring = match Ring::create(spec.slots, spec.snaplen) {
                Ok(r) => r,
                Err(e) => {
                    return refuse(Response::error(ErrorCode::BadRequest, format!("capture of '{}': {e}", spec.port)))
                }
            };
            match ring.fd().try_clone() {
                Ok(f) => fds.push(f),
                Err(e) => return refuse(Response::error(ErrorCode::Internal, format!("capture ring: {e}"))),
            }
            rings.push(ring);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut rings = rings.into_iter();
        let main = CaptureTap::new(id, spec.clone(), rings.next().expect("one ring at least"), conn.try_clone().ok());
        let lanes = lane_workers
            .into_iter()
            .zip(rings)
            .map(|(w, ring)| {
                (w, CaptureTap::new(id, CaptureSpec { direction: Direction::Rx, ..spec.clone() }, ring, None))
            })
            .collect();
        match self.ask(|tx| Command::Capture(Box::new(CaptureTaps { main, lanes }), tx)) {
            Some(Ok(())) => {}
            Some(Err(e)) => return refuse(e.into()),
            None => return refuse(Response::error(ErrorCode::Internal, "the switch worker is not running")),
        }
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let sent = send_with_fds(&conn, Response::ok().to_line().as_bytes(), &borrowed);
        drop(borrowed);
        drop(fds);
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

    /// The workers other than its own that poll some of `port`'s queue pairs (none if the
    /// port is not there: the capture's refusal then says so).
    fn lane_workers(&self, port: &str) -> Vec<u16> {
        let ports = self.ask(Command::List).unwrap_or_default();
        let mut workers: Vec<u16> =
            ports.iter().filter(|p| p.name == port).flat_map(|p| p.pair_workers.iter().map(|&(_, w)| w)).collect();
        workers.sort_unstable();
        workers.dedup();
        workers
    }
}

/// Returns when the client closes `conn` (or dies) or the capture ends on the switch's side.
fn watch_until_closed(mut conn: UnixStream) {
    let _ = conn.set_read_timeout(None);
    let mut buf = [0u8; 256];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}
