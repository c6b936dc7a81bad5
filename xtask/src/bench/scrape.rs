// The scrape case: what serving Prometheus costs the switch. switch_64 with fastpathd's
// metrics scraped every 100 ms (ours) against the same switch not scraped (the peer).
//! Bench case `scrape_64`: the switch's 64-byte rate under scrapes against none.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cases::ours_switch;
use super::ours::Ctx;
use crate::scratch::Sandbox;

/// How often the metrics are scraped.
const INTERVAL: Duration = Duration::from_millis(100);
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// switch_64 with `fastpathd --metrics` on a free port of 127.0.0.1, scraped every
/// [`INTERVAL`] while l2fwd runs; fails if no scrape got an answer.
pub fn ours(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let addr = free_addr()?;
    let scraper = Scraper::start(addr);
    let rate = ours_switch(sb, ctx, &["--metrics", &addr.to_string()], false);
    let (ok, failed) = scraper.stop();
    let rate = rate?;
    if ok == 0 {
        bail!("no scrape of http://{addr}/metrics was answered ({failed} failed)");
    }
    Ok(rate)
}

/// A free address on 127.0.0.1 (bound and let go).
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 for fastpathd's metrics")?;
    Ok(l.local_addr()?)
}

/// One scrape: whether `GET /metrics` on `addr` was answered 200.
fn scrape(addr: SocketAddr) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT) else { return false };
    let _ = c.set_read_timeout(Some(SCRAPE_TIMEOUT));
    if c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200 ")
}

/// A thread scraping every [`INTERVAL`] until stopped, counting answers and failures.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if scrape(addr) {
                    ok += 1;
                } else {
                    failed += 1;
                }
                next += INTERVAL;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            (ok, failed)
        });
        Self { stop, thread }
    }

    /// Stops it: the scrapes answered and those that failed (fastpathd not listening yet).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}
