// One burst of one port through its bridge: learn the senders, look up each
// destination (on the frame's VLAN), group the frames by destination port, hand
// each group over at once (its tags pushed or popped on the way), and to the captures and
// mirrors watching either end.
//! Forwarding.

use netlib::pool::BURST;

use crate::mactable::{is_multicast, Mac};
use crate::port::OffloadEvent;
use crate::security::{Guard, GUARD_BYTES};

use super::vlan::Membership;
use super::{Bridge, Slot, Switch, MAX_PORTS};

/// No group yet for a port.
const NONE: u8 = u8::MAX;
const _: () = assert!(MAX_PORTS < NONE as usize && BURST <= u8::MAX as usize);

/// Where the frames of one burst go: for each destination port, the positions of
/// its frames in the burst, in order. Kept by the switch, so a burst sets up nothing.
#[derive(Debug)]
pub(super) struct Groups {
    n: usize,
    dest: [u16; MAX_PORTS],
    count: [u8; MAX_PORTS],
    picks: [[u8; BURST]; MAX_PORTS],
    group_of: [u8; MAX_PORTS],
}

impl Default for Groups {
    fn default() -> Self {
        Self {
            n: 0,
            dest: [0; MAX_PORTS],
            count: [0; MAX_PORTS],
            picks: [[0; BURST]; MAX_PORTS],
            group_of: [NONE; MAX_PORTS],
        }
    }
}

impl Groups {
    /// Frame `frame` of the burst goes to `port`.
    #[inline]
    fn add(&mut self, port: u16, frame: u8) {
        let mut g = self.group_of[port as usize];
        if g == NONE {
            g = self.n as u8;
            self.n += 1;
            self.dest[g as usize] = port;
            self.count[g as usize] = 0;
            self.group_of[port as usize] = g;
        }
        let g = g as usize;
        self.picks[g][self.count[g] as usize] = frame;
        self.count[g] += 1;
    }

    /// Forgets every group (touching only the ports that had one).
    #[inline]
    fn clear(&mut self) {
        for g in 0..self.n {
            self.group_of[self.dest[g] as usize] = NONE;
        }
        self.n = 0;
    }
}

/// What forwarding one burst counted on its source port.
#[derive(Default)]
struct Tally {
    rx: u64,
    bytes: u64,
    runts: u64,
    filtered: u64,
    spoofed: u64,
    vlan: u64,
}

impl Switch {
    /// Forwards one burst from port `s`; returns the frames taken from it.
    pub(super) fn forward_from(&mut self, s: usize) -> usize {
        let Switch { ports, bridges, now, groups, vlans, watch, offloads, .. } = self;
        let Some(sp) = ports[s].as_mut() else { return 0 };
        let bridge = &bridges[sp.bridge];
        if !sp.port.poll() {
            // Down (a fault or the peer gone): forget the MACs learned there once per reset.
            let resets = sp.port.counters().resets;
            if resets != sp.seen_resets {
                sp.seen_resets = resets;
                bridge.macs.flush_port(s as u16);
            }
            return 0;
        }
        let taken = sp.port.recv();
        if taken == 0 {
            return 0;
        }
        let frames = sp.port.frames();
        // One check per burst: a sender without offloads has no headers to read.
        let features = sp.port.rx_offloads();
        let (asked, refused) = if features == 0 { (0, 0) } else { offloads.read(&frames, features) };
        let asks = asked + refused > 0;
        // One check per burst: a bridge without VLANs forwards as if they did not exist.
        let tally = if bridge.vlan_ports == 0 {
            classify::<false>(frames, s as u16, &sp.guard, bridge, vlans, *now, groups)
        } else {
            classify::<true>(frames, s as u16, &sp.guard, bridge, vlans, *now, groups)
        };
        let c = sp.port.counters_mut();
        c.rx_packets += tally.rx;
        c.rx_bytes += tally.bytes;
        c.rx_errors += tally.runts + refused;
        c.drop_filtered += tally.filtered;
        c.drop_spoofed += tally.spoofed;
        c.drop_vlan += tally.vlan;
        if asked > 0 {
            sp.port.count_offload(OffloadEvent::Asked(asked));
        }
        for g in 0..groups.n {
            let o = groups.dest[g] as usize;
            let edit = vlans[s].edit_to(&vlans[o]);
            let picks = &mut groups.picks[g][..groups.count[g] as usize];
            let mut n = picks.len();
            // The MAC table is shared with other workers: a port it names must be on this
            // bridge (one check per group).
            if let Ok([Some(src), Some(dst)]) = ports.get_disjoint_mut([s, o]).map(same_bridge) {
                let all = src.port.frames();
                let frames = all.edited(edit);
                if asks {
                    n = offloads.send(&frames, edit, picks, dst);
                } else {
                    if dst.max_frame != u32::MAX {
                        n = keep_fitting(&frames, picks, dst.max_frame);
                    }
                    if n < picks.len() {
                        let c = dst.port.counters_mut();
                        c.tx_dropped += (picks.len() - n) as u64;
                        c.drop_too_big += (picks.len() - n) as u64;
                    }
                    dst.port.send(&frames, &picks[..n]);
                }
            }
            if watch.on {
                watch.sent(s, o, edit, &picks[..n], ports);
            }
        }
        groups.clear();
        // One branch per burst when nothing is captured or mirrored.
        if watch.on {
            watch.received(s, ports);
        }
        if let Some(sp) = ports[s].as_mut() {
            sp.port.release();
        }
        taken
    }
}

impl Switch {
    /// Hands port `o` what other workers forwarded to it (a burst from each link), in the
    /// order they sent it; returns how many frames it handed over.
    pub(super) fn deliver_inbound(&mut self, o: usize) -> usize {
        let Switch { ports, watch, inbound, .. } = self;
        let mut moved = 0;
        for link in &mut inbound[o] {
            let frames = link.frames(BURST);
            let n = frames.len();
            if n > 0 {
                let picks = &super::watch::ALL[..n];
                if let Some(dst) = ports[o].as_mut() {
                    dst.port.send(&frames, picks);
                }
                if watch.on {
                    watch.delivered(o, &frames, picks, ports);
                }
                moved += n;
            }
            link.consume();
        }
        moved
    }
}

/// Both slots, if both hold ports of one bridge.
#[inline]
fn same_bridge([from, to]: [&mut Option<Slot>; 2]) -> [Option<&mut Slot>; 2] {
    match (from.as_mut(), to.as_mut()) {
        (Some(f), Some(t)) if f.bridge == t.bridge => [Some(f), Some(t)],
        _ => [None, None],
    }
}

/// Keeps, in order at the front of `picks`, the frames of `frames` no longer than
/// `max` bytes (a destination's MTU); returns how many.
#[inline]
pub(super) fn keep_fitting(frames: &netlib::vhost::Frames<'_>, picks: &mut [u8], max: u32) -> usize {
    let mut n = 0;
    for k in 0..picks.len() {
        let i = picks[k];
        if frames.get(usize::from(i)).len() <= max {
            picks[n] = i;
            n += 1;
        }
    }
    n
}

/// Learns the burst's senders on port `s` and sorts its frames into `groups` by
/// destination port (flooding unknown, broadcast and multicast destinations). A
/// frame the port's `guard` refuses is counted, and neither learned nor forwarded.
/// With `VLANS` (the bridge has ports on VLANs, whose memberships are `vlans`), each
/// frame belongs to a VLAN: it is learned and looked up there and floods only to the
/// ports carrying it; one outside the port's VLANs is counted and dropped.
#[inline]
fn classify<const VLANS: bool>(
    frames: netlib::vhost::Frames<'_>,
    s: u16,
    guard: &Guard,
    bridge: &Bridge,
    vlans: &[Membership],
    now: u32,
    groups: &mut Groups,
) -> Tally {
    let mut t = Tally::default();
    // A burst usually comes from one sender and goes to one receiver: learn each run
    // of one source MAC once, and look each run of one destination MAC up once.
    let mut learned: Option<(u16, Mac)> = None;
    let mut last: Option<(u16, Mac, Option<u16>)> = None;
    let from = &vlans[s as usize];
    for i in 0..frames.len() {
        let f = frames.get(i);
        let mut head = [0u8; GUARD_BYTES];
        let want = if guard.reads_ip() {
            GUARD_BYTES
        } else if VLANS {
            16
        } else {
            12
        };
        let got = f.read_head(&mut head[..want]);
        if got < 12 {
            t.runts += 1;
            continue;
        }
        if !guard.allows(&head[..got]) {
            t.spoofed += 1;
            continue;
        }
        let vlan = if VLANS {
            let Some(v) = from.ingress(&head[..got]) else {
                t.vlan += 1;
                continue;
            };
            v
        } else {
            0
        };
        let (dst, src) = head[..12].split_at(6);
        let dst: Mac = dst.try_into().unwrap_or_default();
        let src: Mac = src.try_into().unwrap_or_default();
        if learned != Some((vlan, src)) && !is_multicast(&src) {
            bridge.macs.learn(vlan, &src, s, now);
            learned = Some((vlan, src));
        }
        t.rx += 1;
        t.bytes += u64::from(f.len());
        let to = match last {
            Some((v, mac, port)) if v == vlan && mac == dst => port,
            _ => {
                let port = if is_multicast(&dst) { None } else { bridge.macs.lookup(vlan, &dst, now) };
                last = Some((vlan, dst, port));
                port
            }
        };
        match to {
            Some(o) if o == s => t.filtered += 1,
            Some(o) => groups.add(o, i as u8),
            None => {
                for &o in &bridge.members {
                    if o != s && (!VLANS || vlans[o as usize].carries(vlan)) {
                        groups.add(o, i as u8);
                    }
                }
            }
        }
    }
    t
}
