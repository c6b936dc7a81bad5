// A frame's offload request on its way through the switch: its virtio-net header read
// (once) from the sender's chain, and the frame as each destination can take it.
//! Offloads between ports.

use crate::csum;
use crate::gso::{GsoError, Segments};
use crate::spec::NUM_BUFFERS_AT;
use crate::vnet_hdr::{Action, HdrError, VnetHdr, HDR_FIELDS_LEN};

use super::frame::{read_chain, Frame};
use super::RX_NET_HDR;

/// Why a frame with an offload request could not be delivered. Counted; the frame
/// is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Its virtio-net header was refused.
    #[error(transparent)]
    Hdr(#[from] HdrError),
    /// It could not be segmented.
    #[error(transparent)]
    Gso(#[from] GsoError),
    /// Its bytes could not be read from the sender's memory.
    #[error("offload: the frame could not be read")]
    Unreadable,
}

/// The virtio-net header in front of `f` in its sender's chain, checked against the
/// frame's length. Frames of our own, and those whose sender negotiated no offload
/// (`sender_offloads` 0: its header's fields must be zero), ask for nothing.
pub fn header_of(f: &Frame<'_>, sender_offloads: u64) -> Result<VnetHdr, HdrError> {
    if sender_offloads == 0 {
        return Ok(VnetHdr::default());
    }
    match *f {
        Frame::Guest { mem, chain, skip } if skip as usize >= HDR_FIELDS_LEN => {
            let mut raw = [0u8; HDR_FIELDS_LEN];
            if read_chain(mem, chain, 0, &mut raw).0 < HDR_FIELDS_LEN {
                return Ok(VnetHdr::default());
            }
            VnetHdr::parse(&raw, f.len() as usize)
        }
        Frame::Edited { frames, i, .. } => header_of(&frames.get(i), sender_offloads),
        _ => Ok(VnetHdr::default()),
    }
}

/// The 12-byte header a destination gets in front of a frame that asks `hdr` of it
/// (`num_buffers` 1).
pub fn rx_header(hdr: &VnetHdr) -> [u8; 12] {
    let mut b = RX_NET_HDR;
    b[..HDR_FIELDS_LEN].copy_from_slice(&hdr.to_bytes());
    b[NUM_BUFFERS_AT..].copy_from_slice(&1u16.to_le_bytes());
    b
}

/// What a destination gets of a frame that asks for an offload (see [`Offloader::prepare`]).
#[derive(Debug)]
pub enum Delivery<'a> {
    /// The frame as it is, behind this header: the destination negotiated the offload.
    AsIs([u8; 12]),
    /// Plain frames at (offset, length) in `base`, in order: the frame with its checksum
    /// finished, or its segments.
    Plain {
        /// The buffer they are in.
        base: &'a [u8],
        /// Where each is.
        spans: &'a [(u32, u32)],
    },
}

/// Finishes checksums and segments frames in software for destinations without the
/// offload; keeps the buffers it needs from one frame to the next.
#[derive(Debug, Default)]
pub struct Offloader {
    whole: Vec<u8>,
    seg: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl Offloader {
    /// What a destination that negotiated `features` gets of `f`, which asks `hdr`: the
    /// frame as it is with its header, or plain frames (its checksum finished, or all its
    /// segments back to back in one buffer, so that they can go to the destination as one
    /// burst).
    pub fn prepare(&mut self, f: Frame<'_>, hdr: &VnetHdr, features: u64) -> Result<Delivery<'_>, OffloadError> {
        let action = hdr.action_for(features);
        if action == Action::AsIs {
            return Ok(Delivery::AsIs(rx_header(hdr)));
        }
        self.whole.resize(f.len() as usize, 0);
        if !f.read_all(&mut self.whole) {
            return Err(OffloadError::Unreadable);
        }
        self.spans.clear();
        let (Some(c), Action::Segment) = (hdr.csum, action) else {
            if let Some(c) = hdr.csum {
                csum::finish(&mut self.whole, c);
            }
            self.spans.push((0, self.whole.len() as u32));
            return Ok(Delivery::Plain { base: &self.whole, spans: &self.spans });
        };
        let Some(gso) = hdr.gso else { return Err(OffloadError::Unreadable) };
        let s = Segments::new(&self.whole, gso, c)?;
        let total: usize = (0..s.count()).map(|i| s.len(i)).sum();
        self.seg.resize(total, 0);
        let mut at = 0;
        for i in 0..s.count() {
            let Some(n) = s.write(i, &mut self.seg[at..]) else { break };
            self.spans.push((at as u32, n as u32));
            at += n;
        }
        Ok(Delivery::Plain { base: &self.seg, spans: &self.spans })
    }

    /// Delivers `f`, which asks `hdr`, to a destination that negotiated `features`:
    /// `emit(header, frame)` is called for each frame it is to get (the frame as it is
    /// with its header, or a plain frame with its checksum finished, or each segment)
    /// and returns false when the destination has no room (the frames after it are
    /// dropped). Returns how many were emitted.
    pub fn deliver(
        &mut self,
        f: Frame<'_>,
        hdr: &VnetHdr,
        features: u64,
        mut emit: impl FnMut(&[u8; 12], Frame<'_>) -> bool,
    ) -> Result<usize, OffloadError> {
        match self.prepare(f, hdr, features)? {
            Delivery::AsIs(h) => Ok(usize::from(emit(&h, f))),
            Delivery::Plain { base, spans } => {
                let mut sent = 0;
                for &(off, len) in spans {
                    if !emit(&RX_NET_HDR, Frame::Local(&base[off as usize..(off + len) as usize])) {
                        break;
                    }
                    sent += 1;
                }
                Ok(sent)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gso::tests::gso_frame;
    use crate::vnet_hdr::{Gso, GsoKind, PartialCsum, OFFLOAD_FEATURES, VIRTIO_NET_F_GUEST_CSUM};

    fn collect(o: &mut Offloader, f: &[u8], hdr: &VnetHdr, features: u64, room: usize) -> Vec<([u8; 12], Vec<u8>)> {
        let mut out = Vec::new();
        let n = o
            .deliver(Frame::Local(f), hdr, features, |h, g| {
                if out.len() == room {
                    return false;
                }
                let mut b = vec![0u8; g.len() as usize];
                assert!(g.read_all(&mut b));
                out.push((*h, b));
                true
            })
            .unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn a_gso_frame_goes_as_is_or_segmented() {
        let (f, gso, c) = gso_frame(false, false, 10_000, 1448);
        let hdr = VnetHdr { csum: Some(c), data_valid: false, gso: Some(gso) };
        let mut off = Offloader::default();
        let same = collect(&mut off, &f, &hdr, OFFLOAD_FEATURES, 100);
        assert_eq!(same, vec![(rx_header(&hdr), f.clone())]);
        assert_eq!(VnetHdr::parse(same[0].0[..10].try_into().unwrap(), f.len()), Ok(hdr));
        let segs = collect(&mut off, &f, &hdr, 0, 100);
        assert_eq!(segs.len(), 7);
        let cut = Segments::new(&f, gso, c).unwrap();
        let mut want = vec![0u8; 2000];
        for (i, (h, g)) in segs.iter().enumerate() {
            assert_eq!(*h, RX_NET_HDR);
            let len = cut.write(i, &mut want).unwrap();
            assert_eq!(g[..], want[..len]);
        }
        assert_eq!(collect(&mut off, &f, &hdr, 0, 3).len(), 3, "a full destination takes what fits");
    }

    #[test]
    fn a_partial_checksum_is_finished_for_a_destination_without_guest_csum() {
        let (f, gso, c) = gso_frame(true, false, 1000, 1448);
        let hdr = VnetHdr { csum: Some(c), ..VnetHdr::default() };
        let mut o = Offloader::default();
        assert_eq!(collect(&mut o, &f, &hdr, VIRTIO_NET_F_GUEST_CSUM, 1), vec![(rx_header(&hdr), f.clone())]);
        let got = collect(&mut o, &f, &hdr, 0, 1);
        let mut want = vec![0u8; f.len()];
        Segments::new(&f, gso, c).unwrap().write(0, &mut want).unwrap();
        assert_eq!(got, vec![(RX_NET_HDR, want)]);
    }

    #[test]
    fn an_unsegmentable_frame_is_an_error_and_emits_nothing() {
        let (f, gso, c) = gso_frame(false, false, 3000, 1000);
        let moved = PartialCsum { start: c.start + 2, offset: 16 };
        let hdr = VnetHdr { csum: Some(moved), data_valid: false, gso: Some(Gso { kind: GsoKind::Tcp6, ..gso }) };
        let r = Offloader::default().deliver(Frame::Local(&f), &hdr, 0, |_, _| panic!("emitted"));
        assert!(matches!(r, Err(OffloadError::Gso(GsoError::Ethertype { .. }))));
        assert_eq!(header_of(&Frame::Local(&f), OFFLOAD_FEATURES), Ok(VnetHdr::default()));
    }

    #[test]
    fn a_header_is_read_from_the_senders_chain_only_when_it_negotiated_offloads() {
        use super::super::tests::{d, rig};
        let mut r = rig();
        let (f, gso, c) = gso_frame(false, false, 3000, 1000);
        let hdr = VnetHdr { csum: Some(c), data_valid: false, gso: Some(gso) };
        let mut bytes = rx_header(&hdr).to_vec();
        bytes.extend_from_slice(&f);
        r.data.map_mut().slice_mut(0, bytes.len()).unwrap().copy_from_slice(&bytes);
        r.drv.set_desc(0, d(r.buf(0), bytes.len() as u32, 0, 0));
        r.post(&[0]);
        r.q.available().unwrap();
        let chain = r.q.pop(&r.mem, false).unwrap();
        let g = Frame::Guest { mem: &r.mem, chain: &chain, skip: 12 };
        assert_eq!(header_of(&g, OFFLOAD_FEATURES), Ok(hdr));
        assert_eq!(header_of(&g, 0), Ok(VnetHdr::default()));
        let short = Frame::Guest { mem: &r.mem, chain: &chain, skip: 12 + 3000 };
        assert!(header_of(&short, OFFLOAD_FEATURES).is_err(), "csum_start past a frame that is too short");
    }

    #[test]
    fn offloads_are_offered_only_when_the_port_enables_them() {
        use super::super::tests::raw_msg as msg;
        use super::super::{DeviceLimits, ProtocolFault, Reply, VhostDevice};
        use crate::spec::VIRTIO_F_VERSION_1;
        use crate::vhost_user::message::encode;
        use crate::vhost_user::Request;
        let features = |dev: &mut VhostDevice| {
            let Ok(Reply::Payload(f)) = dev.handle(msg(Request::GetFeatures, Vec::new())) else { panic!("features") };
            u64::from_le_bytes(f.try_into().unwrap())
        };
        let want = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_CSUM;
        let mut off = VhostDevice::new(DeviceLimits::default());
        assert_eq!(features(&mut off) & OFFLOAD_FEATURES, 0);
        let e = off.handle(msg(Request::SetFeatures, encode::u64(want))).unwrap_err();
        assert!(matches!(e, ProtocolFault::BadFeatures(f, _) if f == want), "{e}");
        let mut on = VhostDevice::new(DeviceLimits { offloads: true, ..DeviceLimits::default() });
        assert_eq!(features(&mut on) & OFFLOAD_FEATURES, OFFLOAD_FEATURES);
        assert_eq!(on.offloads(), 0);
        on.handle(msg(Request::SetFeatures, encode::u64(want))).unwrap();
        assert_eq!(on.offloads(), VIRTIO_NET_F_GUEST_CSUM);
    }
}
