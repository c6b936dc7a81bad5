// The packet loop the one-way VNFs (lb, fw) share: receive on --in, let the VNF keep/rewrite
// or drop each frame, send the kept ones on --out; replies on --out go back; each port sends as itself.
//! A two-port, one-way VNF loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;
use netlib::mac::Mac;
use netlib::pool::burst_vec;
use netlib::{PktPool, Port, PortSpec};

use crate::frame::set_src;
use crate::{idle, make_pool, mpps, open, own_mac, pin, stop_flag, wait_link, Common, Meter};

/// The MACs a VNF's ports send with: a VNF behind a switch with port security sends
/// what it forwards as itself.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MacArgs {
    /// Source MAC of the frames sent on --out (default: --out's MAC from the container's
    /// fastpath config; with neither, forwarded frames keep their source MAC).
    #[arg(long)]
    pub mac: Option<String>,
    /// Source MAC of the frames sent back on --in (default: --in's MAC from the
    /// container's fastpath config; with neither, they keep their source MAC).
    #[arg(long)]
    pub in_mac: Option<String>,
}

/// What a VNF loop moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Frames received on the ingress port.
    pub rx: u64,
    /// Frames sent on the egress port.
    pub forwarded: u64,
    /// Frames the VNF dropped (denied, not IPv4, ...).
    pub filtered: u64,
    /// Frames the egress port refused (ring full or link down).
    pub tx_dropped: u64,
    /// Frames that came in on the egress port and went back out of the ingress port.
    pub returned: u64,
    /// Seconds from the first frame to now.
    pub secs: f64,
}

impl Totals {
    /// The counts as JSON fields.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"rx":self.rx,"forwarded":self.forwarded,"filtered":self.filtered,
            "tx_dropped":self.tx_dropped,"returned":self.returned,"secs":self.secs,"mpps":mpps(self.forwarded, self.secs)})
    }
}

/// Whether a signal flag is set, clearing it. Reads before it swaps: a swap is a locked
/// instruction that drains the store buffer, too dear for every pass of a polling loop.
#[inline]
pub fn take_flag(f: &AtomicBool) -> bool {
    f.load(Ordering::Relaxed) && f.swap(false, Ordering::Relaxed)
}

/// What a VNF does with frames.
pub trait Logic {
    /// Gets each frame from the ingress port, writable; says whether to send it on.
    fn process(&mut self, frame: &mut [u8]) -> bool;
    /// Runs between bursts (every idle pass and every 256 busy ones) with the
    /// totals so far: signal checks and periodic output, off the per-packet path.
    fn house(&mut self, _totals: &Totals) {}
}

/// The ports of a VNF, opened on one pool, links up.
pub struct Vnf {
    /// The pool both ports share.
    pub pool: PktPool,
    /// Ingress port.
    pub inp: Box<dyn Port>,
    /// Egress port.
    pub out: Box<dyn Port>,
    /// The source MAC of frames sent on the ingress port, when it has one.
    pub in_mac: Option<Mac>,
    /// The source MAC of frames sent on the egress port, when it has one.
    pub out_mac: Option<Mac>,
}

impl Vnf {
    /// Pins, opens `inp` and `out` and waits for both links; `macs` (or the container's
    /// config) says which MAC each port sends with.
    pub fn open(inp: &PortSpec, out: &PortSpec, macs: &MacArgs, c: &Common) -> Result<Self> {
        let in_mac = own_mac(macs.in_mac.as_deref(), "--in-mac", inp)?;
        let out_mac = own_mac(macs.mac.as_deref(), "--mac", out)?;
        pin(c.core)?;
        let stop = stop_flag();
        let mut pool = make_pool(c)?;
        let mut ports = [open(inp, &mut pool, c)?, open(out, &mut pool, c)?];
        wait_link(&mut ports, &mut pool, c, &stop)?;
        let [inp, out] = ports;
        Ok(Self { pool, inp, out, in_mac, out_mac })
    }

    /// Runs `logic` until Ctrl-C or `--secs`.
    pub fn run(&mut self, c: &Common, what: &'static str, logic: &mut impl Logic) -> Totals {
        let stop: std::sync::Arc<AtomicBool> = stop_flag();
        let mut t = Totals::default();
        let mut meter = Meter::new(what, c);
        let mut burst = burst_vec();
        let mut fwd = burst_vec();
        let mut first: Option<Instant> = None;
        let mut loops: u32 = 0;
        let Self { pool, inp, out, in_mac, out_mac } = self;
        while !stop.load(Ordering::Relaxed) && meter.tick(t.forwarded) {
            loops = loops.wrapping_add(1);
            let n = inp.rx_burst(pool, &mut burst);
            if n > 0 {
                if first.is_none() {
                    first = Some(Instant::now());
                    meter.restart();
                }
                t.rx += n as u64;
                for p in burst.drain(..) {
                    let f = pool.data_mut(&p);
                    if logic.process(f) {
                        if let Some(m) = out_mac {
                            set_src(f, m);
                        }
                        fwd.push(p);
                    } else {
                        t.filtered += 1;
                        pool.free(p);
                    }
                }
                if !fwd.is_empty() {
                    t.forwarded += out.tx_burst(pool, &mut fwd) as u64;
                    t.tx_dropped += fwd.len() as u64;
                    pool.free_all(&mut fwd);
                }
            }
            // Replies (and ARP) from the egress side go back, from the ingress port's MAC.
            let m = out.rx_burst(pool, &mut burst);
            if m > 0 {
                if let Some(mac) = in_mac {
                    for p in &burst {
                        set_src(pool.data_mut(p), mac);
                    }
                }
                t.returned += inp.tx_burst(pool, &mut burst) as u64;
                pool.free_all(&mut burst);
            }
            if n == 0 && m == 0 {
                idle(c);
                logic.house(&t);
            } else if loops.is_multiple_of(256) {
                t.secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
                logic.house(&t);
            }
        }
        t.secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
        t
    }
}
