// The tenant attacks of issue 12, one function each: each keeps at it (reconnecting
// after every reset) until its time is up, and says how many rounds it ran and what moved.
//! Attacks a tenant can make on the switch from its own port.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netlib::ring::Desc;
use netlib::spec::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use netlib::vhost_user::message::{encode, FLAG_VERSION};
use netlib::vhost_user::{Conn, ConnError, Header, MemRegion, Request};
use serde_json::{json, Value};

use crate::frontend::{send_when_writable, Hostile, QSIZE};
use crate::tenant::{plain_memfd, Memory, Tenant};

/// What an attack did: rounds (connections), frames sent and received, anything else.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rounds: u64,
    pub sent: u64,
    pub received: u64,
    pub extra: Value,
}

impl Outcome {
    pub fn json(&self, case: &str) -> Value {
        let mut v = json!({"case": case, "rounds": self.rounds, "sent": self.sent, "received": self.received});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), &self.extra) {
            o.extend(e.clone());
        }
        v
    }
}

/// The shortest time between two rounds: a reset port is back within a millisecond or
/// two, and a tenant reconnecting faster than this only fills the log.
const ROUND_GAP: Duration = Duration::from_millis(20);
/// Where a region that is not ours to map is said to be: far from every address of ours.
const FAR: u64 = 1 << 46;
/// How long a round waits for the switch to close the connection after a fault.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// An Ethernet frame of 60 bytes from `src` to `dst` (ethertype 0x88b5, local experimental).
pub fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}
/// This tenant's own MAC (frames to itself are filtered by the bridge once learned).
const OWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];

/// Repeats `round` until `secs` are over, at most every [`ROUND_GAP`]; stops early when a
/// round fails to connect (the switch is gone). Returns the rounds run.
fn rounds(secs: Duration, mut round: impl FnMut() -> Result<()>) -> Result<u64> {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < secs {
        let t = Instant::now();
        round()?;
        n += 1;
        std::thread::sleep(ROUND_GAP.saturating_sub(t.elapsed()));
    }
    Ok(n)
}

/// 100,000 GET_FEATURES per connection, never reading a reply.
pub fn no_read(path: &Path, secs: Duration) -> Result<Outcome> {
    let hdr = Header { request: Request::GetFeatures as u32, flags: FLAG_VERSION, size: 0 }.encode();
    let chunk: Vec<u8> = hdr.iter().copied().cycle().take(hdr.len() * 1000).collect();
    let mut written = 0u64;
    let n = rounds(secs, || {
        let mut s = UnixStream::connect(path).context("connect")?;
        for _ in 0..100 {
            if s.write_all(&chunk).is_err() {
                return Ok(());
            }
            written += 1000;
        }
        // All sent: wait (still not reading) until the switch hangs up.
        s.set_nonblocking(true)?;
        let deadline = Instant::now() + CLOSE_WAIT;
        while Instant::now() < deadline {
            match s.write(&hdr) {
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Ok(()),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Ok(())
    })?;
    Ok(Outcome { rounds: n, extra: json!({"messages": written}), ..Outcome::default() })
}

/// A region of `bytes` in a memfd we never touch, registered alone; held for `hold` (or
/// until the switch refuses it and hangs up).
pub fn register(path: &Path, secs: Duration, bytes: u64, hold: Duration) -> Result<Outcome> {
    let fd = plain_memfd("sparse")?;
    nix::unistd::ftruncate(&fd, bytes as i64)?;
    let r = MemRegion { guest_phys_addr: FAR, memory_size: bytes, userspace_addr: FAR, mmap_offset: 0 };
    let mut accepted = 0u64;
    let n = rounds(secs, || {
        let mut h = Hostile::connect(path, Duration::from_secs(2))?;
        h.start()?;
        h.send(Request::SetMemTable, &encode::mem_table(&[r]), &[fd.as_fd()])?;
        // Answered: the switch took the table (it answers in order).
        if h.get(Request::GetFeatures).is_ok() {
            accepted += 1;
        }
        h.hold_until_closed(hold);
        Ok(())
    })?;
    Ok(Outcome { rounds: n, extra: json!({"bytes": bytes, "accepted": accepted}), ..Outcome::default() })
}

/// 10,000 control messages a second on one connection, half GET_FEATURES, half
/// SET_MEM_TABLE of a 64 MiB memfd, reading every reply (on a thread).
pub fn flood(path: &Path, secs: Duration) -> Result<Outcome> {
    let mut h = Hostile::connect(path, Duration::from_secs(2))?;
    h.start()?;
    let fd = plain_memfd("flood")?;
    nix::unistd::ftruncate(&fd, 64 << 20)?;
    let table = encode::mem_table(&[MemRegion {
        guest_phys_addr: FAR,
        memory_size: 64 << 20,
        userspace_addr: FAR,
        mmap_offset: 0,
    }]);
    let replies = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let mut conn = Conn::new(UnixStream::from(h.conn.fd().try_clone_to_owned()?))?;
        let (replies, done) = (Arc::clone(&replies), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(50)) {
                    Ok(_) => {
                        replies.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ConnError::Timeout(_)) => {}
                    Err(_) => return,
                }
            }
        })
    };
    let start = Instant::now();
    let mut sent = 0u64;
    // A send waits for room in the socket, which is the switch throttling us.
    while start.elapsed() < secs {
        let due = (start.elapsed().as_secs_f64() * 10_000.0) as u64;
        while sent < due && start.elapsed() < secs {
            let r = if sent.is_multiple_of(2) {
                send_when_writable(&h.conn, Request::GetFeatures, &[], &[])
            } else {
                send_when_writable(&h.conn, Request::SetMemTable, &table, &[fd.as_fd()])
            };
            if r.is_err() {
                break;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let extra = json!({"messages": sent, "replies": replies.load(Ordering::Relaxed)});
    Ok(Outcome { rounds: 1, extra, ..Outcome::default() })
}

/// Live rings with traffic (frames to ourselves), and SET_MEM_TABLE of the same memory a
/// thousand times a second meanwhile (from a thread, so the traffic never waits for it).
pub fn memtable_churn(path: &Path, secs: Duration) -> Result<Outcome> {
    let mut t = Tenant::with_buffers(path, &Memory::Memfd, (QSIZE, QSIZE), 64 << 20, None)?;
    t.load_frame(&frame(OWN_MAC, OWN_MAC))?;
    let regs: Vec<MemRegion> = [t.rx.region(), t.tx.region(), &t.data].iter().map(|r| Hostile::region(r)).collect();
    let fds = [t.rx.region().fd(), t.tx.region().fd(), t.data.fd()].map(|f| f.try_clone_to_owned());
    let fds: Vec<_> = fds.into_iter().collect::<Result<_, _>>()?;
    let ctl = Conn::new(UnixStream::from(t.h.conn.fd().try_clone_to_owned()?))?;
    let done = Arc::new(AtomicBool::new(false));
    let tables = Arc::new(AtomicU64::new(0));
    let churn = {
        let (done, tables) = (Arc::clone(&done), Arc::clone(&tables));
        let payload = encode::mem_table(&regs);
        std::thread::spawn(move || {
            let fds: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            while !done.load(Ordering::Relaxed) {
                if send_when_writable(&ctl, Request::SetMemTable, &payload, &fds).is_err() {
                    return;
                }
                tables.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    t.run(20_000, secs, |t| t.h.closed());
    done.store(true, Ordering::Relaxed);
    let _ = churn.join();
    t.drain(Duration::from_secs(1));
    let extra = json!({"tables": tables.load(Ordering::Relaxed), "closed": t.h.closed()});
    Ok(Outcome { rounds: 1, sent: t.sent, received: t.received, extra })
}

/// Live rings and buffers in `mem` with traffic for 300 ms, then the files behind them
/// shrunk to nothing while the switch still polls them; again until the time is up.
pub fn truncate(path: &Path, secs: Duration, mem: &Memory) -> Result<Outcome> {
    let (mut sent, mut received, mut closed) = (0u64, 0u64, 0u64);
    let n = rounds(secs, || {
        let mut t = Tenant::with_buffers(path, mem, (QSIZE, QSIZE), 0, None)?;
        t.load_frame(&frame(OWN_MAC, OWN_MAC))?;
        t.run(20_000, Duration::from_millis(300), |_| false);
        t.pump(0);
        (sent, received) = (sent + t.sent, received + t.received);
        t.truncate()?;
        // From here on our own memory faults too: only the socket is used.
        closed += u64::from(t.h.hold_until_closed(CLOSE_WAIT));
        Ok(())
    })?;
    Ok(Outcome { rounds: n, sent, received, extra: json!({"closed_by_switch": closed}) })
}

/// GET_FEATURES with 253 fds (the most a message can carry) on `connections` fresh
/// connections, one after another (each until the switch hangs up, at most 1 s).
pub fn fd_churn(path: &Path, secs: Duration, connections: u64) -> Result<Outcome> {
    let f = std::fs::File::open("/dev/null")?;
    let fds = vec![f.as_fd(); 253];
    let start = Instant::now();
    let (mut n, mut refused, mut answered) = (0u64, 0u64, 0u64);
    while n < connections && start.elapsed() < secs {
        let Ok(s) = UnixStream::connect(path) else {
            refused += 1;
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let mut c = Conn::new(s)?;
        n += 1;
        if c.send(Request::GetFeatures as u32, FLAG_VERSION, &[], &fds).is_err() {
            continue;
        }
        if c.recv_timeout(Duration::from_secs(1)).is_ok() {
            answered += 1;
        }
    }
    Ok(Outcome { rounds: n, extra: json!({"refused": refused, "answered": answered}), ..Outcome::default() })
}

/// Live rings whose call fd is a blocking eventfd whose counter is at its maximum, with
/// interrupts wanted on both rings and traffic both ways.
pub fn call_eventfd(path: &Path, secs: Duration) -> Result<Outcome> {
    let ev = nix::sys::eventfd::EventFd::from_value_and_flags(0, nix::sys::eventfd::EfdFlags::empty())?;
    ev.write(0xffff_ffff_ffff_fffe)?;
    let mut t = Tenant::with_buffers(path, &Memory::Sealed, (QSIZE, QSIZE), 0, Some(ev.as_fd()))?;
    t.load_frame(&frame(OWN_MAC, OWN_MAC))?;
    t.run(20_000, secs, |t| t.h.closed());
    t.drain(Duration::from_secs(1));
    let extra = json!({"closed": t.h.closed()});
    Ok(Outcome { rounds: 1, sent: t.sent, received: t.received, extra })
}

/// Live rings whose call fd is the write end of a full, blocking pipe, with interrupts
/// wanted and traffic; held until the switch hangs up, then again.
pub fn call_pipe(path: &Path, secs: Duration) -> Result<Outcome> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let junk = [0u8; 4096];
    while nix::unistd::write(&w, &junk).is_ok() {}
    fcntl(w.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))?;
    let start = Instant::now();
    let (mut sent, mut received) = (0u64, 0u64);
    let n = rounds(secs, || {
        let left = secs.saturating_sub(start.elapsed());
        let mut t = match Tenant::with_buffers(path, &Memory::Sealed, (QSIZE, QSIZE), 0, Some(w.as_fd())) {
            Ok(t) => t,
            // The switch refused the fd and hung up: what a switch should do.
            Err(e) if e.downcast_ref::<ConnError>().is_some() => return Ok(()),
            Err(e) => return Err(e),
        };
        t.load_frame(&frame(OWN_MAC, OWN_MAC))?;
        t.run(20_000, left, |t| t.h.closed());
        (sent, received) = (sent + t.sent, received + t.received);
        Ok(())
    })?;
    drop(r);
    Ok(Outcome { rounds: n, sent, received, ..Outcome::default() })
}

/// A 32,768-entry transmit ring whose every avail entry names one chain of 32,768
/// zero-length descriptors, kept full; after a reset, again.
pub fn zero_chains(path: &Path, secs: Duration) -> Result<Outcome> {
    const SIZE: u16 = netlib::spec::MAX_QUEUE_SIZE;
    let start = Instant::now();
    let n = rounds(secs, || {
        let left = secs.saturating_sub(start.elapsed());
        let mut t = Tenant::open(path, &Memory::Sealed, (QSIZE, SIZE), 1 << 20, None)?;
        let addr = t.data.map().addr();
        for i in 0..SIZE {
            let last = i == SIZE - 1;
            let flags = if last { 0 } else { VRING_DESC_F_NEXT };
            t.tx.set_desc(i, Desc { addr, len: 0, flags, next: if last { 0 } else { i + 1 } });
            t.tx.set_avail(i, 0);
        }
        let until = Instant::now() + left;
        while Instant::now() < until && !t.h.closed() {
            t.tx.publish_avail(t.tx.used_idx().wrapping_add(SIZE));
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })?;
    Ok(Outcome { rounds: n, ..Outcome::default() })
}

/// Two ports of one tenant: `path` sends 512 MiB frames (16 descriptors aliasing one
/// 32 MiB buffer) to `peer`, which offers receive chains as big (aliased the same way)
/// and has told the bridge its MAC. `path` reconnects after each reset.
pub fn giant_frames(path: &Path, peer: &Path, secs: Duration) -> Result<Outcome> {
    const SEG: u32 = 32 << 20;
    const SEGS: u16 = 16;
    const MAC_TX: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];
    const MAC_RX: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa2];
    let chains = QSIZE / SEGS;
    // Both ports' buffer memory is one 32 MiB region each, which every segment aliases.
    let open = |p: &Path| Tenant::open(p, &Memory::Sealed, (QSIZE, QSIZE), u64::from(SEG), None);
    let giant = |t: &Tenant, ring: &netlib::ring::DriverRing, flags: u16| {
        let base = t.data.map().addr();
        for i in 0..chains * SEGS {
            let last = i % SEGS == SEGS - 1;
            let f = flags | if last { 0 } else { VRING_DESC_F_NEXT };
            ring.set_desc(i, Desc { addr: base, len: SEG, flags: f, next: if last { 0 } else { i + 1 } });
        }
    };
    // Keeps every chain of `ring` posted: avail `*next` up to what the switch used plus all.
    let keep_posted = |ring: &netlib::ring::DriverRing, next: &mut u16| {
        let target = ring.used_idx().wrapping_add(chains);
        while *next != target {
            ring.set_avail(*next, (*next % chains) * SEGS);
            *next = next.wrapping_add(1);
        }
        ring.publish_avail(*next);
    };
    // The receiving port: its MAC learned (a frame to itself), then giant receive chains.
    let mut rx = open(peer)?;
    rx.data.map_mut().slice_mut(0, 12 + 60)?.copy_from_slice(&[&[0u8; 12][..], &frame(MAC_RX, MAC_RX)].concat());
    rx.tx.set_desc(0, Desc { addr: rx.data.map().addr(), len: 72, flags: 0, next: 0 });
    rx.tx.set_avail(0, 0);
    rx.tx.publish_avail(1);
    let t0 = Instant::now();
    while rx.tx.used_idx() != 1 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    giant(&rx, &rx.rx, VRING_DESC_F_WRITE);
    let mut rx_next = 0u16;
    keep_posted(&rx.rx, &mut rx_next);
    let start = Instant::now();
    let n = rounds(secs, || {
        let left = secs.saturating_sub(start.elapsed());
        let mut tx = open(path)?;
        let hdr = tx.data.map_mut().slice_mut(0, 12 + 14)?;
        hdr[..12].fill(0);
        hdr[12..].copy_from_slice(&frame(MAC_RX, MAC_TX)[..14]);
        giant(&tx, &tx.tx, 0);
        let mut tx_next = 0u16;
        let until = Instant::now() + left;
        while Instant::now() < until && !tx.h.closed() {
            keep_posted(&tx.tx, &mut tx_next);
            keep_posted(&rx.rx, &mut rx_next);
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })?;
    let received = u64::from(rx.rx.used_idx());
    Ok(Outcome { rounds: n, received, ..Outcome::default() })
}

/// Live rings sending 2,000 frames a second whose source MAC is `neighbour`'s (to
/// `dst`), counting what comes back to us.
pub fn spoof(path: &Path, secs: Duration, neighbour: [u8; 6], dst: [u8; 6]) -> Result<Outcome> {
    let mut t = Tenant::with_buffers(path, &Memory::Sealed, (QSIZE, QSIZE), 0, None)?;
    t.load_frame(&frame(dst, neighbour))?;
    t.run(2_000, secs, |_| false);
    t.drain(Duration::from_secs(1));
    Ok(Outcome { rounds: 1, sent: t.sent, received: t.received, ..Outcome::default() })
}
