// The vhost-user port kind: a container's (or a VM's) virtio rings, through
// netlib's backend for the protocol and netlib's engine for the bursts.
//! vhost-user ports.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use netlib::pool::BURST;
use netlib::vhost::{
    Burst, DeviceLimits, Filler, Frame, Frames, VhostBackend, VhostDevice, VhostError, VhostMode, GUEST_RX, GUEST_TX,
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
            Ok(n) => n,
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
        if dev.queue(GUEST_RX).is_none() {
            // A frontend that only sends may never start its receive ring: nothing to count.
            return;
        }
        let (taken, res) = self.filler.fill(dev, picks.len(), |k| src.get(picks[k] as usize), &mut self.counters);
        let lost = (picks.len() - taken) as u64;
        self.counters.drop_ring_full += lost;
        self.counters.tx_dropped += lost;
        if let Err(f) = res {
            self.backend.fault(&f.into());
        }
    }

    fn counters(&self) -> PortCounters {
        PortCounters { resets: self.backend.counters().resets, ..self.counters }
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
        let o = self.offloads;
        if o.asked + o.as_is + o.finished + o.segmented == 0 {
            return Vec::new();
        }
        vec![
            ("offload_rx", o.asked),
            ("offload_tx_as_is", o.as_is),
            ("offload_tx_csum_finished", o.finished),
            ("offload_tx_segmented", o.segmented),
            ("offload_tx_segments", o.segments),
        ]
    }

    fn send_with_header(&mut self, hdr: &[u8; 12], f: Frame<'_>) -> bool {
        let Some(dev) = self.backend.device_mut() else {
            self.counters.drop_no_peer += 1;
            self.counters.tx_dropped += 1;
            return true;
        };
        let (taken, res) = self.filler.fill_with_header(dev, hdr, f, &mut self.counters);
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
        dev.set_kicks(GUEST_TX, true);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        dev.queue(GUEST_TX).is_some_and(|q| !matches!(q.available(), Ok(0)))
    }

    fn wake_fds(&self) -> WakeFds<'_> {
        WakeFds { control: self.backend.control_fd(), data: self.backend.kick_fd().map(AsFd::as_fd) }
    }

    fn disarm_wakeup(&mut self, woken: bool) {
        let Some(dev) = self.backend.device_mut() else { return };
        dev.set_kicks(GUEST_TX, false);
        if woken {
            if let Some(k) = dev.kick_fd(GUEST_TX) {
                let mut b = [0u8; 8];
                let _ = nix::unistd::read(k.as_raw_fd(), &mut b);
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
