// The AF_XDP port kind: one queue of a kernel interface (any NIC with a driver, a
// veth) as a switch port. Its UMEM is hugepage memory; frames are copied once, between
// the UMEM and the other ports' buffers. It follows its interface: gone or re-created,
// the port faults and comes back by itself.
//! AF_XDP ports.

mod bpf;
mod xsk;

use std::time::{Duration, Instant};

use netlib::mem::Region;
use netlib::pool::BURST;
use netlib::vhost::Frames;
use netlib::{LinkState, PortCounters};

use super::SwitchPort;

pub use bpf::AttachError;
pub use xsk::BindMode;

/// Bytes of one UMEM frame: a standard Ethernet frame fits.
pub const FRAME_SIZE: u32 = 2048;
/// Frames in the UMEM: half to receive into, half to send from.
const FRAMES: u32 = 4096;
/// Entries of each of the socket's rings.
const RING_SIZE: u32 = 2048;
/// How often the port looks whether its interface is still (or again) there.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Calls between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;

/// Errors opening an AF_XDP port.
#[derive(Debug, thiserror::Error)]
pub enum AfxdpError {
    /// No such interface.
    #[error("AF_XDP port on {ifname}: no such interface")]
    NoInterface {
        /// Interface name.
        ifname: String,
    },
    /// The UMEM could not be allocated.
    #[error("AF_XDP port on {ifname}: UMEM: {source}")]
    Umem {
        /// Interface name.
        ifname: String,
        /// Cause.
        source: netlib::mem::MemError,
    },
    /// The XDP program could not be attached.
    #[error("AF_XDP port on {ifname}: {source}")]
    Attach {
        /// Interface name.
        ifname: String,
        /// Cause.
        source: AttachError,
    },
    /// The socket could not be set up.
    #[error("AF_XDP port on {ifname} queue {queue}: socket: {source} (fastpathd needs CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW)")]
    Socket {
        /// Interface name.
        ifname: String,
        /// Queue.
        queue: u32,
        /// Cause.
        source: std::io::Error,
    },
}

/// What exists while the interface does. Fields drop in order: the socket, then the
/// program, then the memory both used.
#[derive(Debug)]
struct Live {
    xsk: xsk::Xsk,
    _redirect: bpf::Redirect,
    umem: Region,
    ifindex: u32,
    /// The burst received: (offset, length) of each frame in the UMEM.
    spans: [(u32, u32); BURST],
    n: usize,
    /// TX frames not in flight.
    free_tx: Vec<u64>,
    /// Scratch for the descriptors the kernel hands over.
    descs: [(u64, u32); BURST],
    /// Scratch for frames going back to the fill ring.
    refill: [u64; BURST],
}

impl Live {
    fn open(ifname: &str, queue: u32) -> Result<Self, AfxdpError> {
        let ifindex = xsk::ifindex(ifname).ok_or_else(|| AfxdpError::NoInterface { ifname: ifname.into() })?;
        let umem = Region::create(Some(std::path::Path::new("/dev/hugepages")), u64::from(FRAMES * FRAME_SIZE))
            .map_err(|source| AfxdpError::Umem { ifname: ifname.into(), source })?;
        let redirect = bpf::Redirect::attach(ifindex, ifname, queue + 1)
            .map_err(|source| AfxdpError::Attach { ifname: ifname.into(), source })?;
        let sock_err = |source| AfxdpError::Socket { ifname: ifname.into(), queue, source };
        let map = umem.map();
        let mut xsk =
            xsk::Xsk::open(map.addr(), map.len() as u64, FRAME_SIZE, RING_SIZE, ifindex, queue).map_err(sock_err)?;
        redirect.insert(queue, xsk.fd()).map_err(sock_err)?;
        let rx: Vec<u64> = (0..FRAMES / 2).map(|i| u64::from(i * FRAME_SIZE)).collect();
        xsk.fill(&rx);
        tracing::info!(
            "AF_XDP port on {ifname} queue {queue}: {} mode, XDP program {}, UMEM {} ({} frames of {FRAME_SIZE})",
            match xsk.mode() {
                BindMode::ZeroCopy => "zero-copy",
                BindMode::Copy => "copy",
            },
            if redirect.native { "in the driver" } else { "in the generic hook" },
            umem.backing(),
            FRAMES
        );
        Ok(Self {
            xsk,
            _redirect: redirect,
            umem,
            ifindex,
            spans: [(0, 0); BURST],
            n: 0,
            free_tx: (FRAMES / 2..FRAMES).map(|i| u64::from(i * FRAME_SIZE)).collect(),
            descs: [(0, 0); BURST],
            refill: [0; BURST],
        })
    }
}

/// An AF_XDP socket on one queue of a kernel interface, as a switch port.
#[derive(Debug)]
pub struct AfxdpPort {
    ifname: String,
    queue: u32,
    live: Option<Live>,
    counters: PortCounters,
    last_fault: Option<String>,
    calls: u32,
    next_check: Instant,
    /// A reopen under way on its own thread (it loads a program and maps memory: never
    /// on the polling worker).
    reopening: Option<std::sync::mpsc::Receiver<Result<Live, AfxdpError>>>,
}

impl AfxdpPort {
    /// Opens queue `queue` of `ifname`: attaches the redirect program, binds a socket
    /// (zero-copy where the driver can, else copy mode: logged) over a hugepage UMEM.
    pub fn open(ifname: &str, queue: u32) -> Result<Self, AfxdpError> {
        let live = Live::open(ifname, queue)?;
        Ok(Self {
            ifname: ifname.into(),
            queue,
            live: Some(live),
            counters: PortCounters::default(),
            last_fault: None,
            calls: 0,
            next_check: Instant::now() + CHECK_EVERY,
            reopening: None,
        })
    }

    /// How the socket is bound, while the interface is there.
    pub fn mode(&self) -> Option<BindMode> {
        self.live.as_ref().map(|l| l.xsk.mode())
    }

    /// Follows the interface: faults when it went (or was re-created), reopens when it
    /// is back.
    fn check_interface(&mut self) {
        let now_index = xsk::ifindex(&self.ifname);
        match (&self.live, now_index) {
            (Some(l), Some(i)) if l.ifindex == i => {}
            (Some(_), _) => {
                let why = format!("interface {} went away (or was re-created)", self.ifname);
                tracing::warn!("AF_XDP port on {}: {why}; waiting for it", self.ifname);
                self.live = None;
                self.counters.resets += 1;
                self.last_fault = Some(why);
            }
            (None, Some(_)) => self.reopen(),
            (None, None) => {}
        }
    }
}

impl AfxdpPort {
    /// Starts a reopen on its own thread, or takes the result of the one under way.
    fn reopen(&mut self) {
        let Some(rx) = &self.reopening else {
            let (tx, rx) = std::sync::mpsc::channel();
            let (ifname, queue) = (self.ifname.clone(), self.queue);
            let spawned = std::thread::Builder::new()
                .name(format!("afxdp-{ifname}"))
                .spawn(move || drop(tx.send(Live::open(&ifname, queue))));
            if spawned.is_ok() {
                self.reopening = Some(rx);
            }
            return;
        };
        match rx.try_recv() {
            Ok(Ok(l)) => {
                tracing::info!("AF_XDP port on {}: interface back, port up", self.ifname);
                self.live = Some(l);
                self.reopening = None;
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if self.last_fault.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("{msg}");
                }
                self.last_fault = Some(msg);
                self.reopening = None;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => self.reopening = None,
        }
    }
}

impl AfxdpPort {
    /// Sends `n` frames, each written by `write(k, buf)` straight into a UMEM frame;
    /// returns how many went out.
    #[inline]
    fn transmit(&mut self, n: usize, mut write: impl FnMut(usize, &mut [u8]) -> Result<usize, super::Unsent>) -> usize {
        let Some(l) = self.live.as_mut() else {
            self.counters.tx_dropped += n as u64;
            self.counters.drop_ring_full += n as u64;
            return 0;
        };
        l.xsk.completed(&mut l.free_tx);
        let mut room = l.xsk.tx_room();
        let mut sent = 0;
        for k in 0..n {
            if room == 0 {
                self.counters.tx_dropped += 1;
                self.counters.drop_ring_full += 1;
                continue;
            }
            let Some(addr) = l.free_tx.pop() else {
                self.counters.tx_dropped += 1;
                self.counters.drop_ring_full += 1;
                continue;
            };
            let written = match l.umem.map_mut().slice_mut(addr as usize, FRAME_SIZE as usize) {
                Ok(buf) => write(k, buf),
                Err(_) => Err(super::Unsent::Unreadable),
            };
            let len = match written {
                Ok(len) => len as u32,
                Err(why) => {
                    l.free_tx.push(addr);
                    why.count(&mut self.counters);
                    continue;
                }
            };
            l.xsk.tx_push(addr, len);
            room -= 1;
            sent += 1;
            self.counters.tx_packets += 1;
            self.counters.tx_bytes += u64::from(len);
        }
        // Also with nothing new: frames a stopped queue left in the ring go out only when
        // kicked again (a full ring took nothing above, and would never drain).
        if sent > 0 || l.xsk.tx_pending() > 0 {
            l.xsk.tx_publish();
        }
        sent
    }
}

impl SwitchPort for AfxdpPort {
    #[inline]
    fn poll(&mut self) -> bool {
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(CLOCK_EVERY) || self.live.is_none() {
            let now = Instant::now();
            if now >= self.next_check {
                self.next_check = now + CHECK_EVERY;
                self.check_interface();
            }
        }
        match self.live.as_mut() {
            Some(l) => {
                // Frames left in the ring by a kick that found the queue stopped.
                if l.xsk.tx_pending() > 0 {
                    l.xsk.tx_publish();
                }
                true
            }
            None => false,
        }
    }

    #[inline]
    fn recv(&mut self) -> usize {
        let Some(l) = self.live.as_mut() else { return 0 };
        let n = l.xsk.rx_peek(&mut l.descs);
        let umem_len = l.umem.map().len() as u64;
        let mut kept = 0;
        for &(addr, len) in &l.descs[..n] {
            // The kernel's descriptors are checked like any other input.
            if len == 0 || len > FRAME_SIZE || addr.saturating_add(u64::from(len)) > umem_len {
                self.counters.rx_errors += 1;
                // A frame of ours with a bad length goes back to the fill ring at once, so
                // the UMEM never runs short; an address outside it is not ours to give back.
                if addr < umem_len {
                    l.xsk.fill(&[addr & !u64::from(FRAME_SIZE - 1)]);
                }
                continue;
            }
            l.spans[kept] = (addr as u32, len);
            kept += 1;
        }
        l.xsk.rx_done(n);
        l.n = kept;
        kept
    }

    #[inline]
    fn frames(&self) -> Frames<'_> {
        match &self.live {
            Some(l) => Frames::Spans {
                base: l.umem.map().slice(0, l.umem.map().len()).unwrap_or_default(),
                spans: &l.spans[..l.n],
            },
            None => Frames::EMPTY,
        }
    }

    #[inline]
    fn release(&mut self) {
        let Some(l) = self.live.as_mut() else { return };
        for (k, &(off, _)) in l.spans[..l.n].iter().enumerate() {
            l.refill[k] = u64::from(off) & !u64::from(FRAME_SIZE - 1);
        }
        let n = l.n;
        l.xsk.fill(&l.refill[..n]);
        l.n = 0;
    }

    #[inline]
    fn send(&mut self, src: &Frames<'_>, picks: &[u8]) {
        self.transmit(picks.len(), |k, buf| super::copy_pick(src, picks, k, buf));
    }

    fn send_built(&mut self, n: usize, build: &mut dyn FnMut(usize, &mut [u8]) -> usize) -> usize {
        self.transmit(n, |k, buf| super::built(build(k, buf)))
    }

    fn counters(&self) -> PortCounters {
        self.counters
    }

    fn counters_mut(&mut self) -> &mut PortCounters {
        &mut self.counters
    }

    fn link(&self) -> LinkState {
        if self.live.is_some() {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn last_fault(&self) -> Option<&str> {
        self.last_fault.as_deref()
    }
}

#[cfg(test)]
mod tests;
