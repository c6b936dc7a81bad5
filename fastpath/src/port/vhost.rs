// The vhost-user port kind: a container's (or a VM's) virtio rings, through
// netlib's backend for the protocol and netlib's engine for the bursts.
//! vhost-user ports.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use netlib::flow::{flow_hash, pick, FLOW_HEAD};
use netlib::pool::BURST;
use netlib::vhost::device::MAX_QUEUE_PAIRS;
use netlib::vhost::{
    tx_ring, Burst, DeviceLimits, Filler, Frame, Frames, Lane, VhostBackend, VhostDevice, VhostError, VhostMode,
};
use netlib::{LinkState, Port, PortCounters};

use super::{OffloadEvent, SwitchPort, WakeFds};

/// A vhost-user backend as a switch port.
#[derive(Debug)]
pub struct VhostPort {
    backend: VhostBackend,
    burst: Burst,
    filler: Filler,
    counters: PortCounters,
    offloads: OffloadCounts,
    queues: QueueCounts,
    /// The transmit rings lent to other workers (their frames are counted there).
    lanes: Vec<Lane>,
}

/// Queue pairs as many as a port takes.
const PAIRS: usize = MAX_QUEUE_PAIRS as usize;

/// Frames per queue pair, both ways (shown once a frontend used more than one pair).
#[derive(Debug, Default, Clone, Copy)]
struct QueueCounts {
    rx: [u64; PAIRS],
    tx: [u64; PAIRS],
}

/// Names of the per-queue counters (kind counters are named by `&'static str`).
pub(super) const RXQ_NAMES: [&str; PAIRS] = [
    "rxq0_packets",
    "rxq1_packets",
    "rxq2_packets",
    "rxq3_packets",
    "rxq4_packets",
    "rxq5_packets",
    "rxq6_packets",
    "rxq7_packets",
];
const TXQ_NAMES: [&str; PAIRS] = [
    "txq0_packets",
    "txq1_packets",
    "txq2_packets",
    "txq3_packets",
    "txq4_packets",
    "txq5_packets",
    "txq6_packets",
    "txq7_packets",
];

/// The frames at `picks` of `src` sorted by the receive queue their flow hashes to.
struct Spread {
    picks: [[u8; BURST]; PAIRS],
    lens: [usize; PAIRS],
}

impl Spread {
    fn new(src: &Frames<'_>, picks: &[u8], queues: usize) -> Self {
        let mut s = Self { picks: [[0; BURST]; PAIRS], lens: [0; PAIRS] };
        for &p in picks {
            let q = flow_queue(&src.get(p as usize), queues);
            s.picks[q][s.lens[q]] = p;
            s.lens[q] += 1;
        }
        s
    }

    fn queue(&self, q: usize) -> &[u8] {
        &self.picks[q][..self.lens[q]]
    }
}

/// The receive queue pair of `dev` a frame goes to: by its flow hash when the frontend
/// has several live, else its only one; `None` when it has none.
fn rx_pair_of(dev: &VhostDevice, f: &Frame<'_>) -> Option<usize> {
    match dev.rx_pairs() {
        [] => None,
        [one] => Some(usize::from(*one)),
        live => Some(usize::from(live[flow_queue(f, live.len())])),
    }
}

/// Which of `queues` queues frame `f`'s flow goes to (its head hashed).
#[inline]
fn flow_queue(f: &Frame<'_>, queues: usize) -> usize {
    let mut head = [0u8; FLOW_HEAD];
    let n = f.read_head(&mut head);
    pick(flow_hash(&head[..n]), queues)
}

/// Copies the frames at `picks` of `src` into the receive ring of `dev`'s queue pair
/// `pair`, counting what it sent there, and what found no room (`drop_ring_full`).
#[inline]
fn fill(
    filler: &mut Filler,
    dev: &mut VhostDevice,
    pair: usize,
    src: &Frames<'_>,
    picks: &[u8],
    counters: &mut PortCounters,
    queues: &mut QueueCounts,
) -> Result<(), netlib::vhost::ChainFault> {
    let before = counters.tx_packets;
    let (taken, res) = filler.fill_pair(dev, pair, picks.len(), |k| src.get(picks[k] as usize), counters);
    queues.tx[pair % PAIRS] += counters.tx_packets - before;
    let lost = (picks.len() - taken) as u64;
    counters.drop_ring_full += lost;
    counters.tx_dropped += lost;
    res
}

/// What became of frames that asked for offloads, on this port (see [`OffloadEvent`]).
#[derive(Debug, Default, Clone, Copy)]
struct OffloadCounts {
    asked: u64,
    as_is: u64,
    finished: u64,
    segmented: u64,
    segments: u64,
}

impl VhostPort {
    /// A port whose socket the switch binds at `path` (a stale file is replaced).
    pub fn listen(path: &Path, name: String) -> Result<Self, VhostError> {
        Self::open(path, VhostMode::Listen, name)
    }

    /// A port that connects to a frontend listening at `path` (and reconnects).
    pub fn connect(path: &Path, name: String) -> Result<Self, VhostError> {
        Self::open(path, VhostMode::Connect, name)
    }

    /// Holds the port's frontends to `limits`.
    pub fn set_limits(&mut self, limits: DeviceLimits) {
        self.backend.set_limits(limits);
    }

    fn open(path: &Path, mode: VhostMode, name: String) -> Result<Self, VhostError> {
        let mut backend = VhostBackend::open(path, mode)?;
        backend.set_name(name);
        Ok(Self {
            backend,
            burst: Burst::default(),
            filler: Filler::default(),
            counters: PortCounters::default(),
            offloads: OffloadCounts::default(),
            queues: QueueCounts::default(),
            lanes: Vec::new(),
        })
    }
}

impl SwitchPort for VhostPort {
    #[inline]
    fn poll(&mut self) -> bool {
        self.backend.poll()
    }

    #[inline]
    fn recv(&mut self) -> usize {
        let Some(dev) = self.backend.device_mut() else { return 0 };
        match self.burst.pop(dev, BURST) {
            Ok(n) => {
                self.queues.rx[self.burst.pair() % PAIRS] += n as u64;
                n
            }
            Err(f) => {
                self.burst = Burst::default();
                self.backend.fault(&f.into());
                0
            }
        }
    }

    #[inline]
    fn frames(&self) -> Frames<'_> {
        match self.backend.device() {
            Some(dev) => self.burst.frames(dev.mem()),
            None => Frames::EMPTY,
        }
    }

    #[inline]
    fn release(&mut self) {
        if let Some(dev) = self.backend.device_mut() {
            self.burst.release(dev);
        }
    }

    #[inline]
    fn send(&mut self, src: &Frames<'_>, picks: &[u8]) {
        let Some(dev) = self.backend.device_mut() else {
            self.counters.drop_no_peer += picks.len() as u64;
            self.counters.tx_dropped += picks.len() as u64;
            return;
        };
        let (mut live, n) = ([0u8; PAIRS], dev.rx_pairs().len());
        live[..n].copy_from_slice(dev.rx_pairs());
        let (filler, counters, queues) = (&mut self.filler, &mut self.counters, &mut self.queues);
        let res = match n {
            // A frontend whose receive ring is not live (yet, or ever for one that only
            // sends) has nowhere to take frames: counted, as for a port with no frontend.
            0 => {
                counters.drop_no_peer += picks.len() as u64;
                counters.tx_dropped += picks.len() as u64;
                return;
            }
            1 => fill(filler, dev, usize::from(live[0]), src, picks, counters, queues),
            _ => {
                // Several receive queues: each flow to the one its hash picks, so that the
                // frontend's threads share the load and a flow stays in order.
                let spread = Spread::new(src, picks, n);
                let mut res = Ok(());
                for (q, &pair) in live[..n].iter().enumerate() {
                    let qp = spread.queue(q);
                    if !qp.is_empty() {
                        res = fill(filler, dev, usize::from(pair), src, qp, counters, queues);
                        if res.is_err() {
                            break;
                        }
                    }
                }
                res
            }
        };
        if let Err(f) = res {
            self.backend.fault(&f.into());
        }
    }

    fn counters(&self) -> PortCounters {
        PortCounters { resets: self.backend.counters().resets, ..self.counters }
    }

    fn lend(&mut self, pair: usize) -> Option<Lane> {
        let lane = self.backend.lend(pair)?;
        self.lanes.push(lane.clone());
        Some(lane)
    }

    #[inline]
    fn offloads(&self) -> u64 {
        self.backend.device().map_or(0, VhostDevice::offloads)
    }

    fn count_offload(&mut self, e: OffloadEvent) {
        let o = &mut self.offloads;
        match e {
            OffloadEvent::Asked(n) => o.asked += n,
            OffloadEvent::AsIs => o.as_is += 1,
            OffloadEvent::Finished => o.finished += 1,
            OffloadEvent::Segmented(n) => {
                o.segmented += 1;
                o.segments += n;
            }
        }
    }

    fn kind_counters(&self) -> Vec<(&'static str, u64)> {
        let mut v = Vec::new();
        // Per queue, once a frontend used more than one queue pair (the frames of a pair
        // another worker polls counted there).
        let mut q = self.queues;
        for l in &self.lanes {
            q.rx[l.pair() % PAIRS] += l.received();
        }
        let used = (0..PAIRS).rposition(|i| q.rx[i] + q.tx[i] > 0).map_or(0, |i| i + 1);
        if used > 1 {
            for i in 0..used {
                v.push((RXQ_NAMES[i], q.rx[i]));
                v.push((TXQ_NAMES[i], q.tx[i]));
            }
        }
        let o = self.offloads;
        if o.asked + o.as_is + o.finished + o.segmented > 0 {
            v.extend([
                ("offload_rx", o.asked),
                ("offload_tx_as_is", o.as_is),
                ("offload_tx_csum_finished", o.finished),
                ("offload_tx_segmented", o.segmented),
                ("offload_tx_segments", o.segments),
            ]);
        }
        v
    }

    fn send_with_header(&mut self, hdr: &[u8; 12], f: Frame<'_>) -> bool {
        let Some(dev) = self.backend.device_mut() else {
            self.counters.drop_no_peer += 1;
            self.counters.tx_dropped += 1;
            return true;
        };
        let Some(pair) = rx_pair_of(dev, &f) else { return false };
        let before = self.counters.tx_packets;
        let (taken, res) = self.filler.fill_with_header(dev, pair, hdr, f, &mut self.counters);
        self.queues.tx[pair % PAIRS] += self.counters.tx_packets - before;
        if let Err(e) = res {
            self.backend.fault(&e.into());
        }
        taken
    }

    fn counters_mut(&mut self) -> &mut PortCounters {
        &mut self.counters
    }

    fn link(&self) -> LinkState {
        self.backend.link()
    }

    fn last_fault(&self) -> Option<&str> {
        self.backend.last_fault()
    }

    fn arm_wakeup(&mut self) -> bool {
        let Some(dev) = self.backend.device_mut() else { return false };
        let tx_rings = (0..dev.pairs()).map(tx_ring);
        for ring in tx_rings.clone() {
            dev.set_kicks(ring, true);
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        tx_rings.into_iter().any(|ring| dev.queue(ring).is_some_and(|q| !matches!(q.available(), Ok(0))))
    }

    fn wake_fds(&self) -> WakeFds<'_> {
        WakeFds {
            control: self.backend.control_fd(),
            data: self.backend.tx_kick_fds().map(|(_, fd)| fd.as_fd()).collect(),
        }
    }

    fn disarm_wakeup(&mut self, woken: bool) {
        let Some(dev) = self.backend.device_mut() else { return };
        for ring in (0..dev.pairs()).map(tx_ring) {
            dev.set_kicks(ring, false);
            if woken {
                // Non-blocking: the kick fds of the rings that were not signalled say so.
                if let Some(k) = dev.kick_fd(ring) {
                    let mut b = [0u8; 8];
                    let _ = nix::unistd::read(k.as_raw_fd(), &mut b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_for_a_port_without_its_frontend_count_as_no_peer_not_ring_full() {
        let dir = std::env::temp_dir().join(format!("fp-vhost-nopeer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut port = VhostPort::listen(&dir.join("p.sock"), "p".into()).unwrap();
        port.send(&Frames::EMPTY, &[0, 1, 2]);
        let c = port.counters();
        assert_eq!((c.drop_no_peer, c.tx_dropped, c.drop_ring_full), (3, 3, 0));
        drop(port);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
