// An in-process port with a test's hand on the other side: frames the "peer"
// sends are queued by the handle, frames the switch sends land there, and faults,
// a link going down or a full ring are injected at will (as smoltcp's Loopback and
// FaultInjector do for its devices).
//! In-process ports for tests and demos.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use netlib::pool::BURST;
use netlib::vhost::{FrameBuf, Frames};
use netlib::{LinkState, PortCounters};

use super::SwitchPort;

/// Largest frame a loopback port takes by default (a standard Ethernet MTU frame).
pub const DEFAULT_MAX_FRAME: usize = 1514;

/// What the peer side holds.
#[derive(Debug)]
struct Peer {
    /// Frames the peer sent, not yet received by the switch.
    inbox: VecDeque<Vec<u8>>,
    /// Frames the switch delivered to the peer.
    outbox: Vec<Vec<u8>>,
    /// Receive buffers the peer offers (each delivered frame takes one).
    room: usize,
    /// Largest frame the peer's buffers take.
    max_frame: usize,
    link_up: bool,
    /// A fault to raise at the next recv or send.
    fault: Option<String>,
}

/// The test's end of a [`Loopback`] port.
#[derive(Debug, Clone)]
pub struct LoopbackPeer(Arc<Mutex<Peer>>);

impl LoopbackPeer {
    fn lock(&self) -> MutexGuard<'_, Peer> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The peer sends `frame` to the switch.
    pub fn send(&self, frame: &[u8]) {
        self.lock().inbox.push_back(frame.to_vec());
    }

    /// Takes the frames the switch delivered so far.
    pub fn take_delivered(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().outbox)
    }

    /// Frames the peer sent that the switch has not received yet.
    pub fn pending(&self) -> usize {
        self.lock().inbox.len()
    }

    /// Offers `n` receive buffers (a full ring: 0).
    pub fn set_room(&self, n: usize) {
        self.lock().room = n;
    }

    /// Sets the largest frame the peer's buffers take.
    pub fn set_max_frame(&self, n: usize) {
        self.lock().max_frame = n;
    }

    /// Connects or disconnects the peer.
    pub fn set_link(&self, up: bool) {
        self.lock().link_up = up;
    }

    /// Makes the port's next recv or send find its peer broken (`why`): the port
    /// resets and stays down until [`Self::set_link`] brings it back.
    pub fn inject_fault(&self, why: &str) {
        self.lock().fault = Some(why.to_string());
    }
}

/// A port whose peer is a [`LoopbackPeer`] in the same process.
#[derive(Debug)]
pub struct Loopback {
    peer: LoopbackPeer,
    bufs: Vec<FrameBuf>,
    n: usize,
    counters: PortCounters,
    last_fault: Option<String>,
    up: bool,
}

impl Loopback {
    /// A port with its peer's handle; the link is up, with unlimited receive room.
    pub fn new() -> (Self, LoopbackPeer) {
        let peer = LoopbackPeer(Arc::new(Mutex::new(Peer {
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            room: usize::MAX,
            max_frame: DEFAULT_MAX_FRAME,
            link_up: true,
            fault: None,
        })));
        let port = Self {
            peer: peer.clone(),
            bufs: (0..BURST).map(|_| FrameBuf::with_capacity(9216)).collect(),
            n: 0,
            counters: PortCounters::default(),
            last_fault: None,
            up: true,
        };
        (port, peer)
    }

    /// Resets the port after a fault the peer raised.
    fn fault(&mut self, why: String, peer: &mut Peer) {
        self.counters.resets += 1;
        self.last_fault = Some(why);
        self.up = false;
        self.n = 0;
        peer.link_up = false;
    }
}

impl Loopback {
    /// Hands the peer `n` frames, each written by `write(k, buf)`; returns how many it took.
    fn transmit(&mut self, n: usize, mut write: impl FnMut(usize, &mut [u8]) -> Result<usize, super::Unsent>) -> usize {
        let peer = self.peer.clone();
        let mut p = peer.lock();
        if let Some(why) = p.fault.take() {
            self.fault(why, &mut p);
        }
        let mut sent = 0;
        for k in 0..n {
            if !self.up || p.room == 0 {
                self.counters.tx_dropped += 1;
                self.counters.drop_ring_full += 1;
                continue;
            }
            let mut v = vec![0; p.max_frame];
            let len = match write(k, &mut v) {
                Ok(len) => len,
                Err(why) => {
                    why.count(&mut self.counters);
                    continue;
                }
            };
            v.truncate(len);
            p.room -= 1;
            sent += 1;
            self.counters.tx_packets += 1;
            self.counters.tx_bytes += v.len() as u64;
            p.outbox.push(v);
        }
        sent
    }
}

impl SwitchPort for Loopback {
    fn poll(&mut self) -> bool {
        let up = self.peer.lock().link_up;
        if up != self.up {
            self.up = up;
            if !up {
                self.counters.resets += 1;
            }
        }
        self.up
    }

    fn recv(&mut self) -> usize {
        let peer = self.peer.clone();
        let mut p = peer.lock();
        if let Some(why) = p.fault.take() {
            self.fault(why, &mut p);
            return 0;
        }
        self.n = 0;
        while self.n < BURST {
            let Some(f) = p.inbox.pop_front() else { break };
            if !self.bufs[self.n].fill_from(&f) {
                self.counters.rx_errors += 1;
                continue;
            }
            self.n += 1;
        }
        self.n
    }

    fn frames(&self) -> Frames<'_> {
        Frames::Local(&self.bufs[..self.n])
    }

    fn release(&mut self) {
        self.n = 0;
    }

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
        if self.up {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn last_fault(&self) -> Option<&str> {
        self.last_fault.as_deref()
    }
}
