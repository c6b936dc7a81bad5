// The VXLAN port kind (RFC 7348): one port on a bridge carrying every MAC behind the
// remote VTEPs, through an uplink port (afxdp or tap) it owns. Encapsulation and its
// checks are in software; inner MACs are learned per VTEP; BUM frames go to every remote.
//! VXLAN ports.

mod arp;
mod header;
mod vteps;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netlib::pool::BURST;
use netlib::vhost::{DeviceLimits, Frame, FrameBuf, Frames};
use netlib::{LinkState, PortCounters};

use super::SwitchPort;
use crate::config::{PortConfig, PortKind};
use crate::mactable::Mac;

pub use header::{Reject, ENCAP_LEN, IP_OVERHEAD, MAX_VNI, VXLAN_PORT};
pub use vteps::{MAX_REMOTES, MAX_VTEPS};

use header::{Outer, ETH_ARP, ETH_IPV4, ETH_LEN};
use vteps::Vteps;

/// Seconds an inner MAC stays behind its VTEP without traffic from it.
pub const REMOTE_MAC_AGE: u32 = 300;
/// Largest inner frame a decapsulated packet may carry (the fallback copy's buffers).
const MAX_INNER: usize = 9216;
/// Polls between two looks at the clock.
const CLOCK_EVERY: u32 = 256;
/// At most one "too big" log line per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// ARP replies queued in one burst (more are dropped: the asker asks again).
const ARP_QUEUE: usize = 8;

/// Errors opening a VXLAN port.
#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    /// A setting is missing or wrong.
    #[error("vxlan port: {0}")]
    Config(String),
    /// The uplink could not be opened.
    #[error("vxlan port: uplink {place}: {why}")]
    Uplink {
        /// The uplink (`afxdp:IFNAME:QUEUE`, `tap:IFNAME`).
        place: String,
        /// Why.
        why: String,
    },
}

/// What a VXLAN port counts beyond [`PortCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VxlanCounters {
    /// Frames from the uplink not decapsulated, per [`Reject`] (in [`Reject::ALL`]'s order).
    pub rejected: [u64; Reject::ALL.len()],
    /// Frames too large for the uplink's MTU once encapsulated (also in `drop_too_big`).
    pub tx_too_big: u64,
    /// Frames for a VTEP whose next hop's MAC is not known yet (also in `tx_dropped`).
    pub tx_no_next_hop: u64,
    /// ARP messages taken from the uplink.
    pub arp_in: u64,
    /// ARP requests sent for remote VTEPs.
    pub arp_requests: u64,
    /// ARP replies sent for the local VTEP address.
    pub arp_replies: u64,
    /// Decapsulated frames from a new VTEP when the VTEP list was full (delivered, not learned).
    pub vteps_full: u64,
}

impl VxlanCounters {
    /// Counts a frame rejected for `r`.
    #[inline]
    fn reject(&mut self, r: Reject) {
        if let Some(i) = Reject::ALL.iter().position(|&x| x == r) {
            self.rejected[i] += 1;
        }
    }

    /// By name, for `fastpathctl stats`.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = Reject::ALL.iter().map(|r| r.label()).zip(self.rejected).collect();
        v.extend([
            ("tx_too_big", self.tx_too_big),
            ("tx_no_next_hop", self.tx_no_next_hop),
            ("arp_in", self.arp_in),
            ("arp_requests", self.arp_requests),
            ("arp_replies", self.arp_replies),
            ("vteps_full", self.vteps_full),
        ]);
        v
    }
}

/// What a VXLAN port is: its VNI, its VTEP, its remotes and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSettings {
    /// The VNI.
    pub vni: u32,
    /// The local VTEP address.
    pub local: Ipv4Addr,
    /// The remote VTEPs (head-end replication's list).
    pub remotes: Vec<Ipv4Addr>,
    /// A static next-hop MAC for every remote (else ARP).
    pub next_hop_mac: Option<Mac>,
    /// The local VTEP's MAC (the outer source).
    pub mac: Mac,
    /// The uplink's MTU (largest outer IPv4 packet).
    pub mtu: usize,
}

impl VxlanSettings {
    /// The settings `cfg` gives (a vxlan port's), with the uplink's `mac` and `mtu`.
    pub fn from_config(cfg: &PortConfig, mac: Mac, mtu: usize) -> Result<Self, VxlanError> {
        let bad = |s: String| VxlanError::Config(s);
        crate::config::check_port(cfg).map_err(bad)?;
        let next_hop_mac = cfg
            .next_hop_mac
            .as_deref()
            .map(|m| crate::security::parse_mac(m).map_err(|e| bad(format!("next_hop_{e}"))))
            .transpose()?;
        Ok(Self {
            vni: cfg.vni.ok_or_else(|| bad("a vxlan port needs a vni".into()))?,
            local: cfg.local.ok_or_else(|| bad("a vxlan port needs a local VTEP address".into()))?,
            remotes: cfg.remotes.clone(),
            next_hop_mac,
            mac,
            mtu,
        })
    }
}

/// A VXLAN overlay over an uplink, as one switch port.
#[derive(Debug)]
pub struct VxlanPort {
    uplink: Box<dyn SwitchPort>,
    /// The uplink's interface, to follow its MTU (none for an in-process uplink).
    ifname: Option<String>,
    /// Whether the outer MAC is the uplink interface's (followed when it is re-created).
    mac_of_interface: bool,
    /// The uplink's resets when the next hops were last trusted.
    seen_resets: u64,
    /// A next hop is wanted now (at start, or a frame found none): ask at the next poll
    /// rather than at the next second.
    ask_now: bool,
    settings: VxlanSettings,
    outer: Outer,
    vteps: Vteps,
    /// The burst: where each inner frame is in the uplink's buffer (`zero_copy`), or
    /// copies of them in `bufs` (an uplink whose frames are not in one buffer).
    spans: [(u32, u32); BURST],
    bufs: Vec<FrameBuf>,
    zero_copy: bool,
    n: usize,
    /// What one `send` transmits: (frame, VTEP) pairs (head-end replication).
    plan: Vec<(u8, u16)>,
    /// ARP replies to send: (asker's MAC, asker's address).
    arp_queue: [(Mac, Ipv4Addr); ARP_QUEUE],
    arp_n: usize,
    ip_id: u16,
    counters: PortCounters,
    vx: VxlanCounters,
    /// The ageing clock, in seconds (never 0).
    now: u32,
    calls: u32,
    next_second: Instant,
    last_log: Option<Instant>,
}

/// Reads a kernel interface's attribute from sysfs.
fn sysfs(ifname: &str, what: &str) -> Result<String, VxlanError> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{what}")).map(|s| s.trim().to_string()).map_err(|e| {
        VxlanError::Uplink { place: ifname.into(), why: format!("reading /sys/class/net/{ifname}/{what}: {e}") }
    })
}

impl VxlanPort {
    /// Opens the port `cfg` describes: its uplink (afxdp or tap, on `ifname`) held to
    /// `limits`, the outer MAC the uplink interface's (a tap uplink's: 02:00 and the
    /// local address, for the kernel's side of the TAP has the interface's own), its MTU.
    pub fn open(cfg: &PortConfig, limits: DeviceLimits) -> Result<Self, VxlanError> {
        crate::config::check_port(cfg).map_err(VxlanError::Config)?;
        let kind = cfg.uplink.unwrap_or(PortKind::Afxdp);
        let ifname = cfg.ifname.clone().unwrap_or_default();
        let up_cfg = PortConfig {
            kind,
            ifname: Some(ifname.clone()),
            queue: if kind == PortKind::Afxdp { Some(cfg.queue.unwrap_or(0)) } else { None },
            ..PortConfig::new(format!("{}-uplink", cfg.name), cfg.bridge.clone(), "")
        };
        let uplink = super::open(&up_cfg, limits)
            .map_err(|e| VxlanError::Uplink { place: up_cfg.place(), why: e.to_string() })?;
        let mac = match kind {
            PortKind::Tap => {
                let ip = cfg.local.unwrap_or(Ipv4Addr::UNSPECIFIED).octets();
                [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
            }
            _ => crate::security::parse_mac(&sysfs(&ifname, "address")?)
                .map_err(|why| VxlanError::Uplink { place: up_cfg.place(), why })?,
        };
        let mtu = sysfs(&ifname, "mtu")?.parse().unwrap_or(1500);
        let settings = VxlanSettings::from_config(cfg, mac, mtu)?;
        tracing::info!(
            "vxlan port {}: VNI {} from {} to {:?} over {}, MTU {mtu} (inner frames up to {})",
            cfg.name,
            settings.vni,
            settings.local,
            settings.remotes,
            up_cfg.place(),
            mtu.saturating_sub(IP_OVERHEAD)
        );
        let mut port = Self::over(uplink, settings);
        port.ifname = Some(ifname);
        port.mac_of_interface = kind == PortKind::Afxdp;
        Ok(port)
    }

    /// A port over an uplink already open (an in-process one in tests).
    pub fn over(uplink: Box<dyn SwitchPort>, settings: VxlanSettings) -> Self {
        Self {
            uplink,
            ifname: None,
            mac_of_interface: false,
            seen_resets: 0,
            ask_now: true,
            outer: Outer { mac: settings.mac, local: settings.local, vni: settings.vni },
            vteps: Vteps::new(&settings.remotes, settings.next_hop_mac, REMOTE_MAC_AGE),
            settings,
            spans: [(0, 0); BURST],
            bufs: (0..BURST).map(|_| FrameBuf::with_capacity(MAX_INNER)).collect(),
            zero_copy: false,
            n: 0,
            plan: Vec::with_capacity(BURST * MAX_REMOTES),
            arp_queue: [([0; 6], Ipv4Addr::UNSPECIFIED); ARP_QUEUE],
            arp_n: 0,
            ip_id: 0,
            counters: PortCounters::default(),
            vx: VxlanCounters::default(),
            now: 1,
            calls: 0,
            next_second: Instant::now() + Duration::from_secs(1),
            last_log: None,
        }
    }

    /// What it counts beyond [`PortCounters`].
    pub fn vxlan_counters(&self) -> VxlanCounters {
        self.vx
    }

    /// Advances the clock by `secs` (tests of ageing).
    #[cfg(test)]
    fn advance(&mut self, secs: u32) {
        self.now += secs;
    }

    /// Once a second: the clock, the uplink's MTU and MAC, ARP for the next hops unknown.
    fn every_second(&mut self) {
        self.now = self.now.wrapping_add(1).max(1);
        self.follow_interface();
        self.ask_next_hops();
    }

    /// Follows the uplink interface: its MTU, and its MAC (a re-created one has another).
    fn follow_interface(&mut self) {
        let Some(ifname) = self.ifname.as_deref() else { return };
        if let Some(mtu) = sysfs(ifname, "mtu").ok().and_then(|m| m.parse().ok()) {
            if mtu != self.settings.mtu {
                tracing::info!("vxlan VNI {}: uplink MTU {} -> {mtu}", self.settings.vni, self.settings.mtu);
                self.settings.mtu = mtu;
            }
        }
        if !self.mac_of_interface {
            return;
        }
        if let Some(mac) = sysfs(ifname, "address").ok().and_then(|m| crate::security::parse_mac(&m).ok()) {
            if mac != self.settings.mac {
                tracing::info!("vxlan VNI {}: uplink {ifname} has a new MAC", self.settings.vni);
                self.settings.mac = mac;
                self.outer.mac = mac;
            }
        }
    }

    /// Sends the ARP requests due.
    fn ask_next_hops(&mut self) {
        let mut ask = [Ipv4Addr::UNSPECIFIED; MAX_VTEPS];
        let mut n = 0;
        self.vteps.ask_due(self.now, |ip| {
            ask[n] = ip;
            n += 1;
        });
        if n == 0 {
            return;
        }
        let (mac, local) = (self.settings.mac, self.settings.local);
        let sent = self.uplink.send_built(n, &mut |k, buf| arp::write(buf, &mac, local, None, ask[k]));
        self.vx.arp_requests += sent as u64;
    }

    /// An ARP message from the uplink: a request for our VTEP address is answered (and
    /// the asker's MAC heard); a reply is a next hop's MAC.
    fn on_arp(&mut self, f: &[u8]) {
        let Some(a) = arp::parse(f) else {
            self.vx.reject(Reject::Short);
            return;
        };
        self.vx.arp_in += 1;
        if a.spa != Ipv4Addr::UNSPECIFIED {
            self.vteps.heard(a.spa, a.sha, self.now);
        }
        if a.request && a.tpa == self.settings.local && self.arp_n < ARP_QUEUE {
            self.arp_queue[self.arp_n] = (a.sha, a.spa);
            self.arp_n += 1;
        }
    }

    /// Sends the queued ARP replies.
    fn answer_arp(&mut self) {
        let (mac, local, q) = (self.settings.mac, self.settings.local, self.arp_queue);
        let sent = self.uplink.send_built(self.arp_n, &mut |k, buf| arp::write(buf, &mac, local, Some(q[k].0), q[k].1));
        self.vx.arp_replies += sent as u64;
        self.arp_n = 0;
    }

    /// Logs a frame too large once encapsulated (at most once per [`LOG_EVERY`]).
    fn log_too_big(&mut self, inner: usize) {
        let now = Instant::now();
        if self.last_log.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        self.last_log = Some(now);
        tracing::warn!(
            "vxlan VNI {}: dropped a frame too big for the uplink: inner frame {inner} + {IP_OVERHEAD} (IPv4 20, UDP 8, VXLAN 8) = {} > MTU {} (inner frames up to {} fit; {} dropped so far)",
            self.settings.vni,
            inner + IP_OVERHEAD,
            self.settings.mtu,
            self.settings.mtu.saturating_sub(IP_OVERHEAD),
            self.vx.tx_too_big
        );
    }
}

impl SwitchPort for VxlanPort {
    #[inline]
    fn poll(&mut self) -> bool {
        let up = self.uplink.poll();
        let resets = self.uplink.counters().resets;
        if resets != self.seen_resets {
            // The uplink came back (perhaps another interface, or another link): the
            // next hops are asked again.
            self.seen_resets = resets;
            self.vteps.forget_hops();
            self.follow_interface();
            self.ask_now = true;
        }
        if self.ask_now && up {
            self.ask_now = false;
            self.ask_next_hops();
        }
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(CLOCK_EVERY) {
            let now = Instant::now();
            if now >= self.next_second {
                self.next_second = now + Duration::from_secs(1);
                if up {
                    self.every_second();
                }
            }
        }
        up
    }

    #[inline]
    fn recv(&mut self) -> usize {
        let taken = self.uplink.recv();
        if taken == 0 {
            return 0;
        }
        let frames = self.uplink.frames();
        // Frames in one buffer (AF_XDP's UMEM, a TAP's) are handed on where they lie.
        let spans = match frames {
            Frames::Spans { spans, .. } => Some(spans),
            _ => None,
        };
        self.zero_copy = spans.is_some();
        let mut kept = 0;
        let mut arps = [0u8; BURST];
        let mut n_arp = 0;
        for i in 0..taken {
            let Frame::Local(f) = frames.get(i) else {
                self.counters.rx_errors += 1;
                continue;
            };
            if f.len() < ETH_LEN {
                self.vx.reject(Reject::Short);
                continue;
            }
            match u16::from_be_bytes([f[12], f[13]]) {
                ETH_IPV4 => {}
                ETH_ARP => {
                    arps[n_arp] = i as u8;
                    n_arp += 1;
                    continue;
                }
                _ => {
                    self.vx.reject(Reject::NotIpv4);
                    continue;
                }
            }
            let d = match header::decap(f, self.settings.local, self.settings.vni) {
                Ok(d) => d,
                Err(r) => {
                    self.vx.reject(r);
                    continue;
                }
            };
            let inner = &f[d.offset..d.offset + d.len];
            let src: Mac = inner[6..12].try_into().unwrap_or_default();
            if !self.vteps.learn(&src, d.vtep, &d.from_mac, self.now) {
                self.vx.vteps_full += 1;
            }
            match spans {
                Some(s) => self.spans[kept] = (s[i].0 + d.offset as u32, d.len as u32),
                None => {
                    if !self.bufs[kept].fill_from(inner) {
                        self.counters.rx_errors += 1;
                        continue;
                    }
                }
            }
            kept += 1;
        }
        self.n = kept;
        for &i in &arps[..n_arp] {
            // The frame is read again: the uplink's burst is still ours until release.
            if let Frame::Local(f) = self.uplink.frames().get(usize::from(i)) {
                let mut copy = [0u8; arp::ARP_FRAME];
                let len = f.len().min(copy.len());
                copy[..len].copy_from_slice(&f[..len]);
                self.on_arp(&copy[..len]);
            }
        }
        if self.arp_n > 0 {
            self.answer_arp();
        }
        if kept == 0 {
            // The switch releases only bursts that carried frames.
            self.uplink.release();
        }
        kept
    }

    #[inline]
    fn frames(&self) -> Frames<'_> {
        match self.uplink.frames() {
            Frames::Spans { base, .. } if self.zero_copy => Frames::Spans { base, spans: &self.spans[..self.n] },
            _ if self.zero_copy => Frames::EMPTY,
            _ => Frames::Local(&self.bufs[..self.n]),
        }
    }

    #[inline]
    fn release(&mut self) {
        self.uplink.release();
        self.n = 0;
    }

    fn send(&mut self, src: &Frames<'_>, picks: &[u8]) {
        self.plan.clear();
        for &i in picks {
            let f = src.get(usize::from(i));
            let len = f.len() as usize;
            let mut dst = [0u8; 6];
            if f.read_head(&mut dst) < 6 {
                self.counters.tx_dropped += 1;
                continue;
            }
            if len + IP_OVERHEAD > self.settings.mtu {
                self.counters.tx_dropped += 1;
                self.counters.drop_too_big += 1;
                self.vx.tx_too_big += 1;
                self.log_too_big(len);
                continue;
            }
            let targets = match self.vteps.lookup(&dst, self.now) {
                Some(v) => v..v + 1,
                None => self.vteps.flood(),
            };
            for v in targets {
                if self.vteps.get(v).is_some_and(|t| t.hop.is_some()) {
                    self.plan.push((i, v));
                } else {
                    self.vteps.want(v);
                    self.ask_now = true;
                    self.counters.tx_dropped += 1;
                    self.vx.tx_no_next_hop += 1;
                }
            }
        }
        if self.plan.is_empty() {
            return;
        }
        let Self { uplink, plan, outer, vteps, ip_id, .. } = self;
        let mut inner_bytes = 0u64;
        let mut too_big = 0u64;
        let sent = uplink.send_built(plan.len(), &mut |k, buf| {
            let (i, v) = plan[k];
            let f = src.get(usize::from(i));
            let len = f.len() as usize;
            let Some(vtep) = vteps.get(v) else { return 0 };
            let Some(hop) = vtep.hop else { return 0 };
            let Some((hdr, rest)) = buf.split_first_chunk_mut::<ENCAP_LEN>() else { return 0 };
            let Some(body) = rest.get_mut(..len) else {
                too_big += 1;
                return 0;
            };
            if !f.read_all(body) {
                return 0;
            }
            *ip_id = ip_id.wrapping_add(1);
            outer.write(hdr, &hop, vtep.ip, len, *ip_id, header::flow_port(&body[..len.min(38)]));
            inner_bytes += len as u64;
            ENCAP_LEN + len
        });
        let unsent = (plan.len() - sent) as u64;
        self.counters.tx_packets += sent as u64;
        self.counters.tx_bytes += inner_bytes;
        self.counters.tx_dropped += unsent;
        self.counters.drop_too_big += too_big;
        self.counters.drop_ring_full += unsent - too_big.min(unsent);
    }

    fn counters(&self) -> PortCounters {
        // The uplink's resets are the port's: the switch forgets the MACs behind it.
        PortCounters { resets: self.uplink.counters().resets, ..self.counters }
    }

    fn counters_mut(&mut self) -> &mut PortCounters {
        &mut self.counters
    }

    fn link(&self) -> LinkState {
        self.uplink.link()
    }

    fn last_fault(&self) -> Option<&str> {
        self.uplink.last_fault()
    }

    fn kind_counters(&self) -> Vec<(&'static str, u64)> {
        self.vx.named()
    }
}

#[cfg(test)]
mod tests;
