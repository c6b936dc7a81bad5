// Prometheus metrics: what the worker publishes (a snapshot of its counters, taken between
// batches of passes), its rendering in the text exposition format, and the HTTP server.
//! Prometheus metrics.
//!
//! The polling worker never waits on a scrape: the metrics thread asks it for a
//! [`Snapshot`] the way `fastpathctl stats` asks for its counters (a command the worker
//! answers between batches of passes), then renders and serves it on its own.

pub mod expo;
pub mod http;
pub mod render;
pub mod snapshot;

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

pub use render::render;
pub use snapshot::{BridgeSample, PortSample, Snapshot};

use crate::worker::Command;

/// How long a scrape waits for the worker's snapshot (it answers between batches of passes:
/// within a millisecond when polling, 10 ms when asleep in interrupt mode).
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// The shortest time between two snapshots the worker is asked for.
const MIN_SNAPSHOT_GAP: Duration = Duration::from_millis(50);

/// The metrics as the worker behind `worker` sees them now, rendered; `None` if it did not
/// answer within [`WORKER_TIMEOUT`].
pub fn scrape(worker: &Sender<Command>) -> Option<String> {
    let (tx, rx) = channel();
    worker.send(Command::Metrics(tx)).ok()?;
    rx.recv_timeout(WORKER_TIMEOUT).ok().map(|s| render(&s))
}

/// Binds `addr` and serves `/metrics` there from a thread of its own (`fastpath-metrics`),
/// asking `worker` for a snapshot on each scrape. While the address is in use, tries again
/// for up to `wait` (a switch that took over waits for the one it replaced to exit). Returns
/// the address bound (a port 0 in `addr` is the one the kernel chose).
pub fn spawn(addr: SocketAddr, worker: Sender<Command>, wait: Duration) -> std::io::Result<SocketAddr> {
    let deadline = std::time::Instant::now() + wait;
    let listener = loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => break r?,
        }
    };
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("fastpath-metrics".into()).spawn(move || {
        // Scrapes closer together than MIN_SNAPSHOT_GAP get the last snapshot again: a
        // client scraping in a loop can't keep the worker building snapshots.
        let mut last: Option<(std::time::Instant, String)> = None;
        http::serve(listener, || {
            if let Some((at, text)) = &last {
                if at.elapsed() < MIN_SNAPSHOT_GAP {
                    return Some(text.clone());
                }
            }
            let text = scrape(&worker)?;
            last = Some((std::time::Instant::now(), text.clone()));
            Some(text)
        });
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that answers `n` metrics commands with an empty snapshot.
    fn worker(n: usize) -> Sender<Command> {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for cmd in rx.iter().take(n) {
                if let Command::Metrics(reply) = cmd {
                    let loads = vec![crate::switch::load::Load::default()];
                    let _ = reply.send(Snapshot { loads, ..Snapshot::default() });
                }
            }
        });
        tx
    }

    #[test]
    fn a_scrape_renders_what_the_worker_answers_and_none_when_it_is_gone() {
        let w = worker(1);
        let text = scrape(&w).unwrap();
        assert!(text.contains("# TYPE fastpath_worker_busy_polls_total counter\n"), "{text}");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(scrape(&w), None, "the worker is gone");
    }

    #[test]
    fn spawn_waits_for_the_address_to_come_free() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = spawn(addr, worker(0), Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        let freed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        assert_eq!(spawn(addr, worker(0), Duration::from_secs(5)).unwrap(), addr, "bound once the old one let go");
        freed.join().unwrap();
    }
}
