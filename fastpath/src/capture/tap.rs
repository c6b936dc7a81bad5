// The worker's end of one capture: the port and direction it watches, the ring it copies
// frames into, and the control connection whose closing ends it (shut down when it ends).
//! A capture as the switch's worker holds it.

use std::os::unix::net::UnixStream;

use fastpath_host::proto::CaptureSpec;
use netlib::vhost::Frames;

use super::pcapng::Direction;
use super::ring::Ring;

/// One running capture, held by the switch while it copies frames.
#[derive(Debug)]
pub struct CaptureTap {
    /// Tells captures apart (the control server ends one by its id).
    pub id: u64,
    /// The port and which of its frames.
    pub spec: CaptureSpec,
    ring: Ring,
    /// The connection the capture was asked on: shut down when the capture ends, so that
    /// the client learns it (a port removed, the switch stopping).
    conn: Option<UnixStream>,
    /// Where a frame's head is read before it goes into the ring.
    scratch: Vec<u8>,
}

impl CaptureTap {
    /// A capture `spec` copying into `ring`, ended (shut down) through `conn`.
    pub fn new(id: u64, spec: CaptureSpec, ring: Ring, conn: Option<UnixStream>) -> Self {
        let scratch = vec![0; ring.snaplen()];
        Self { id, spec, ring, conn, scratch }
    }

    /// Lets the connection be (a capture refused before it began: the refusal still goes out on it).
    pub fn detach(&mut self) {
        self.conn = None;
    }

    /// Copies frames `picks` of `frames` (all of them when `None`), seen at `ts_ns` in
    /// `dir`, into the ring; a full ring drops and counts them.
    pub fn copy(&mut self, frames: &Frames<'_>, picks: Option<&[u8]>, dir: Direction, ts_ns: u64) {
        let mut one = |i: usize| {
            let f = frames.get(i);
            let n = f.read_head(&mut self.scratch);
            self.ring.push_cut(ts_ns, dir, &self.scratch[..n], f.len());
        };
        match picks {
            Some(p) => p.iter().for_each(|&i| one(i as usize)),
            None => (0..frames.len()).for_each(one),
        }
    }
}

/// A capture as the switch gets it: the tap on the port's own worker and, for a port whose
/// queue pairs other workers poll, a tap of received frames for each of them.
#[derive(Debug)]
pub struct CaptureTaps {
    /// The tap on the port's worker (its connection ends the capture).
    pub main: CaptureTap,
    /// (worker, its tap of what the port sends on the pairs it polls).
    pub lanes: Vec<(u16, CaptureTap)>,
}

impl CaptureTaps {
    /// One tap, on the port's own worker.
    pub fn one(main: CaptureTap) -> Box<Self> {
        Box::new(Self { main, lanes: Vec::new() })
    }
}

impl Drop for CaptureTap {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;
    use netlib::vhost::FrameBuf;

    #[test]
    fn copies_picked_frames_cut_to_the_snaplen_with_their_length() {
        let ring = Ring::create(8, 8).unwrap();
        let reader = Ring::open(OwnedFd::from(ring.fd().try_clone().unwrap())).unwrap();
        let spec =
            CaptureSpec { port: "p".into(), direction: fastpath_host::proto::Direction::Both, snaplen: 8, slots: 8 };
        let mut tap = CaptureTap::new(1, spec, ring, None);
        let bufs: Vec<FrameBuf> = [vec![1u8; 20], vec![2u8; 3], vec![3u8; 9]]
            .iter()
            .map(|f| {
                let mut b = FrameBuf::with_capacity(f.len());
                b.fill_from(f);
                b
            })
            .collect();
        tap.copy(&Frames::Local(&bufs), Some(&[0, 2]), Direction::Outbound, 5);
        tap.copy(&Frames::Local(&bufs), None, Direction::Inbound, 6);
        let got: Vec<_> = std::iter::from_fn(|| reader.pop().unwrap()).map(|c| (c.orig_len, c.data, c.ts_ns)).collect();
        assert_eq!(
            got,
            [(20, vec![1; 8], 5), (9, vec![3; 8], 5), (20, vec![1; 8], 6), (3, vec![2; 3], 6), (9, vec![3; 8], 6)]
        );
    }
}
