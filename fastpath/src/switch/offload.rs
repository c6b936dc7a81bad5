// Frames that ask for offloads (a partial checksum, TCP segmentation) on their way through
// the switch: their headers read once per burst from a sender that negotiated offloads,
// and each destination given the frame as it can take it.
//! Offloads through the switch.
//!
//! A sender without offloads costs one branch per burst: its frames go the usual way. A
//! sender with offloads has each frame's virtio-net header read (and checked: a header
//! that lies about the frame is refused, the frame counted in its `rx_errors` and
//! dropped). For each destination, the frames that ask for nothing go the usual way in
//! runs, and each one that asks goes, in its place in the order, through netlib's
//! [`Offloader`]: as it is, with its header, to a destination that negotiated the same
//! offloads; with its checksum finished, or cut into segments, to one that did not (a
//! netlib app without offloads, a smoltcp app, a NIC or a VXLAN tunnel). A segment or
//! frame longer than the destination's MTU is dropped and counted (`drop_too_big`); a
//! frame that cannot be segmented is dropped and counted in the destination's
//! `tx_dropped`.

use netlib::pool::BURST;
use netlib::vhost::offload::{header_of, Delivery, Offloader};
use netlib::vhost::{Frames, TagEdit, TAG_LEN};
use netlib::vnet_hdr::{Action, VnetHdr};

use super::forward::keep_fitting;
use super::Slot;
use crate::port::OffloadEvent;

/// What a frame of the burst asks.
#[derive(Debug, Clone, Copy, Default)]
enum Ask {
    /// Nothing: it goes the usual way.
    #[default]
    Nothing,
    /// What its header says.
    Offload(VnetHdr),
    /// Its header was refused: it goes nowhere.
    Refused,
}

/// The headers of the burst being forwarded and the software offloads' buffers, kept by
/// the switch from one burst to the next.
#[derive(Debug)]
pub(super) struct Offloads {
    asks: [Ask; BURST],
    offloader: Offloader,
}

impl Default for Offloads {
    fn default() -> Self {
        Self { asks: [Ask::Nothing; BURST], offloader: Offloader::default() }
    }
}

impl Offloads {
    /// Reads the headers of `frames`, from a sender that negotiated the offloads
    /// `features` (not 0). Returns how many frames ask for something, and how many
    /// headers were refused.
    pub(super) fn read(&mut self, frames: &Frames<'_>, features: u64) -> (u64, u64) {
        let (mut asked, mut refused) = (0, 0);
        for (i, ask) in self.asks.iter_mut().enumerate().take(frames.len()) {
            *ask = match header_of(&frames.get(i), features) {
                Ok(h) if h.is_plain() => Ask::Nothing,
                Ok(h) => {
                    asked += 1;
                    Ask::Offload(h)
                }
                Err(_) => {
                    refused += 1;
                    Ask::Refused
                }
            };
        }
        (asked, refused)
    }

    /// Sends the frames `picks` of `frames` (edited by `edit` on their way) to `dst`, in
    /// order, each as `dst` can take it. Leaves at the front of `picks` the frames that
    /// went (whole or in pieces), for the captures; returns how many.
    pub(super) fn send(&mut self, frames: &Frames<'_>, edit: TagEdit, picks: &mut [u8], dst: &mut Slot) -> usize {
        let features = dst.port.offloads();
        let max = dst.max_frame;
        let delta = match edit {
            TagEdit::Keep => 0,
            TagEdit::Push(_) => TAG_LEN as i16,
            TagEdit::Pop => -(TAG_LEN as i16),
        };
        let (mut kept, mut at) = (0, 0);
        while at < picks.len() {
            // A run of frames that ask for nothing, the usual way.
            let start = at;
            while at < picks.len() && matches!(self.asks[usize::from(picks[at])], Ask::Nothing) {
                at += 1;
            }
            if at > start {
                let run = &mut picks[start..at];
                let n = if max == u32::MAX { run.len() } else { keep_fitting(frames, run, max) };
                if n < run.len() {
                    let c = dst.port.counters_mut();
                    c.tx_dropped += (run.len() - n) as u64;
                    c.drop_too_big += (run.len() - n) as u64;
                }
                dst.port.send(frames, &run[..n]);
                picks.copy_within(start..start + n, kept);
                kept += n;
            }
            let Some(&pick) = picks.get(at) else { break };
            at += 1;
            let Ask::Offload(hdr0) = self.asks[usize::from(pick)] else { continue };
            let Some(asked) = hdr0.shifted(delta) else {
                dst.port.counters_mut().tx_dropped += 1;
                continue;
            };
            let frame = frames.get(usize::from(pick));
            let port = &mut dst.port;
            let event = match self.offloader.prepare(frame, &asked, features) {
                Ok(Delivery::AsIs(h)) => {
                    if asked.gso.is_none() && frame.len() > max {
                        let c = port.counters_mut();
                        c.tx_dropped += 1;
                        c.drop_too_big += 1;
                        continue;
                    }
                    if !port.send_with_header(&h, frame) {
                        let c = port.counters_mut();
                        c.tx_dropped += 1;
                        c.drop_ring_full += 1;
                        continue;
                    }
                    OffloadEvent::AsIs
                }
                Ok(Delivery::Plain { base, spans }) => {
                    // All of the frame's pieces to the destination as bursts: one publish
                    // and one signal per burst, not per segment.
                    let mut fit = [0u8; BURST];
                    for chunk in spans.chunks(BURST) {
                        let mut n = 0;
                        for (k, &(_, len)) in chunk.iter().enumerate() {
                            if len <= max {
                                fit[n] = k as u8;
                                n += 1;
                            }
                        }
                        if n < chunk.len() {
                            let c = port.counters_mut();
                            c.tx_dropped += (chunk.len() - n) as u64;
                            c.drop_too_big += (chunk.len() - n) as u64;
                        }
                        port.send(&Frames::Spans { base, spans: chunk }, &fit[..n]);
                    }
                    match asked.action_for(features) {
                        Action::Segment => OffloadEvent::Segmented(spans.len() as u64),
                        _ => OffloadEvent::Finished,
                    }
                }
                Err(_) => {
                    port.counters_mut().tx_dropped += 1;
                    continue;
                }
            };
            port.count_offload(event);
            picks[kept] = pick;
            kept += 1;
        }
        kept
    }
}
