// The host side of the guest NIC's wire: `HostPeer` (a thread that records every frame
// QEMU sends to a unix datagram socket, and sends frames in), `Frame`, and helpers to make
// and read Ethernet frames and MACs.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The host side of the guest NIC's wire.

/// One Ethernet frame the guest sent (one datagram from QEMU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// When it arrived, since QEMU started.
    pub at: Duration,
    /// The frame, from the destination MAC on (no FCS).
    pub data: Vec<u8>,
}

impl Frame {
    /// Destination MAC (zeros if the frame is shorter).
    pub fn dst(&self) -> [u8; 6] {
        self.data.get(..6).and_then(|b| b.try_into().ok()).unwrap_or_default()
    }

    /// Source MAC.
    pub fn src(&self) -> [u8; 6] {
        self.data.get(6..12).and_then(|b| b.try_into().ok()).unwrap_or_default()
    }

    /// EtherType (0 if the frame is shorter).
    pub fn ethertype(&self) -> u16 {
        self.data.get(12..14).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// The host peer: a thread records every frame QEMU sends to `host.sock`; frames sent to
/// `qemu.sock` arrive at the guest's NIC. Stops on drop.
#[derive(Debug)]
pub struct HostPeer {
    sock: Arc<UnixDatagram>,
    qemu_sock: PathBuf,
    frames: Arc<Mutex<Vec<Frame>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostPeer {
    pub(super) fn bind(host_sock: &Path, qemu_sock: &Path, t0: Instant) -> Result<Self, String> {
        let _ = std::fs::remove_file(host_sock);
        let sock = UnixDatagram::bind(host_sock).map_err(|e| format!("cannot bind {}: {e}", host_sock.display()))?;
        sock.set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| format!("set_read_timeout: {e}"))?;
        // A send blocks while QEMU's socket is full (the guest NIC has no free RX buffer):
        // bounded, so that a stuck guest fails the test instead of hanging it.
        sock.set_write_timeout(Some(Duration::from_secs(2))).map_err(|e| format!("set_write_timeout: {e}"))?;
        let sock = Arc::new(sock);
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sock, frames, stop) = (Arc::clone(&sock), Arc::clone(&frames), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("guest-host-peer".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = sock.recv(&mut buf) {
                            let f = Frame { at: t0.elapsed(), data: buf[..n].to_vec() };
                            frames.lock().unwrap_or_else(PoisonError::into_inner).push(f);
                        }
                    }
                })
                .map_err(|e| format!("cannot start the host peer thread: {e}"))?
        };
        Ok(Self { sock, qemu_sock: qemu_sock.to_path_buf(), frames, stop, thread: Some(thread) })
    }

    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Every frame received so far, in order.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many frames were received so far.
    pub fn count(&self) -> usize {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// How many frames received so far satisfy `f`.
    pub fn count_where(&self, f: impl Fn(&Frame) -> bool) -> usize {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|x| f(x)).count()
    }

    /// Waits up to `t` until `n` received frames satisfy `f`; returns how many do.
    pub fn wait_frames(&self, n: usize, t: Duration, f: impl Fn(&Frame) -> bool) -> usize {
        let deadline = Instant::now() + t;
        loop {
            let c = self.count_where(&f);
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one frame to the guest's NIC (QEMU must be running: its socket exists).
    pub fn send(&self, frame: &[u8]) -> Result<(), String> {
        self.sock.send_to(frame, &self.qemu_sock).map(|_| ()).map_err(|e| {
            format!("host peer: cannot send a {}-byte frame to {}: {e}", frame.len(), self.qemu_sock.display())
        })
    }

    /// Sends `n` frames, frame `i` made by `make(i)`, paced at `pps` frames per second
    /// (0: as fast as QEMU takes them); returns how many were sent before an error.
    pub fn send_at_rate(&self, n: u64, pps: u64, mut make: impl FnMut(u64) -> Vec<u8>) -> Result<u64, String> {
        let t0 = Instant::now();
        for i in 0..n {
            if pps > 0 {
                let due = t0 + Duration::from_secs_f64(i as f64 / pps as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            self.send(&make(i)).map_err(|e| format!("{e} (after {i} of {n} frames)"))?;
        }
        Ok(n)
    }
}

impl Drop for HostPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Frames.

/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// An Ethernet frame, padded to the 60-byte minimum.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// A broadcast ARP request "who has `target_ip`? tell `src_ip`" from `src_mac`.
pub fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&src_ip);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target_ip);
    eth_frame(BROADCAST, src_mac, ETHERTYPE_ARP, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::PF_MAC;

    #[test]
    fn frames_and_macs() {
        let m = parse_mac(PF_MAC).unwrap();
        assert_eq!(fmt_mac(&m), PF_MAC);
        assert!(parse_mac("52:54:00:12:34").is_none());
        let f = Frame { at: Duration::ZERO, data: arp_request(m, [10, 0, 0, 1], [10, 0, 0, 2]) };
        assert_eq!((f.dst(), f.src(), f.ethertype(), f.data.len()), (BROADCAST, m, ETHERTYPE_ARP, 60));
    }
}
