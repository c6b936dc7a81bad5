// The benchmark cases: for each, how to run our side and the DPDK/OVS side once, and what
// number(s) each run yields. Backend (device) side on CPU 0, frontend (driver) side on CPU 1.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::apps;
use super::hook_start;
use super::interrupt;
use super::jumbo;
use super::ours::{final_json, number, port, Ctx};
use super::ovs::Ovs;
use super::packed;
use super::ports;
use super::restart;
use super::scrape;
use super::testpmd::{self, Memory, Testpmd, BURST};
use super::tso;
use super::uplink;
use super::vxlan;
use crate::procs::check_interrupt;
use crate::scratch::{ProcId, Sandbox};

/// Unit of a metric; decides which way is better.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unit {
    /// Million packets per second (higher is better).
    Mpps,
    /// Microseconds (lower is better).
    Us,
    /// Milliseconds (lower is better).
    Ms,
    /// Gigabits per second (higher is better).
    Gbps,
}

impl Unit {
    /// The unit as written in the report.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Mpps => "Mpps",
            Unit::Us => "us",
            Unit::Ms => "ms",
            Unit::Gbps => "Gbit/s",
        }
    }

    /// The ratio that is above 1 when ours is better.
    pub fn ratio(self, ours: f64, peer: f64) -> f64 {
        match self {
            Unit::Mpps | Unit::Gbps => ours / peer,
            Unit::Us | Unit::Ms => peer / ours,
        }
    }
}

/// One reported number.
pub struct Metric {
    /// Its name in the report.
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
}

/// What a case does.
#[derive(Clone, Copy)]
enum Kind {
    /// Frontend (virtio-user) sends, backend (vhost-user) receives; frame length.
    V2h(u32),
    /// Backend sends, frontend receives; frame length.
    H2v(u32),
    /// Both forward a primed loop of packets to each other.
    Twoway,
    /// A switch with two vhost-user ports, a two-port forwarder looping packets through it.
    Switch,
    /// The same with `fastpathctl capture` running on one port (vs none).
    Capture,
    /// Round trip of one packet at a time.
    Rtt,
    /// Exec of the sender to the first packet at the receiver.
    Start,
    /// A VNF (ours: lb or fw; peer: our l2fwd) between two ports of flowgen.
    Vnf(apps::Vnf),
    /// UDP request/response: smoltcp over netlib vs the kernel over a veth pair.
    UdpRr,
    /// A busybox container's start-to-exit under runc with fastpath-hook vs without.
    HookStart,
    /// Round trip through a reflector that sleeps on its call eventfd (vs the bare kernel
    /// eventfd wake-up round trip between the same two CPUs: the floor).
    Wake,
    /// CPU used by an idle switch and idle apps in interrupt mode (vs polling).
    IdleCpu,
    /// From the far end of a veth through an AF_XDP port to a vhost port (vs testpmd
    /// net_af_xdp ↔ net_vhost).
    Afxdp,
    /// The same as `Afxdp`, against OVS-DPDK with an afxdp port.
    AfxdpOvs,
    /// UDP request/response from a host socket through a TAP port to smoltcp (vs the
    /// kernel over a veth pair).
    TapRr,
    /// App → fastpathd A → VXLAN over a veth → fastpathd B → app (vs UDP sockets over the
    /// kernel's vxlan devices in the same place).
    Vxlan,
    /// pktgen → switch → sink, the switch killed with SIGKILL and started again: the
    /// outage (vs OVS-DPDK with dpdkvhostuserclient ports).
    Restart,
    /// `Switch` with a Prometheus scrape of fastpathd every 100 ms (vs the same without).
    Scrape,
    /// 9014-byte frames app → switch → app, in Gbit/s (vs testpmd as the switch).
    Jumbo,
    /// A switch with this many ports, pairs of them looping frames addressed by MAC
    /// through it (vs OVS-DPDK with as many dpdkvhostuser ports).
    Ports(usize),
    /// 10,000 source MACs behind one port of two (vs OVS-DPDK with the same traffic).
    Macs,
    /// Two ports of two queue pairs each, testpmd looping frames of many flows between them
    /// (vs OVS-DPDK with the same ports and traffic), through this many workers (PMDs).
    Mq2(u8),
    /// DPDK's virtio_user on packed rings against our backend apps (vs testpmd's net_vhost).
    Packed(packed::Flow),
    /// 64 KB TCP GSO frames app → switch → app without offloads, cut in software, in
    /// Gbit/s (vs the same bytes sent as 1518-byte frames).
    Tso,
}

/// A benchmark case: one pair of runs per round yields one value per metric and side.
pub struct Case {
    /// The name used by `--case`.
    pub name: &'static str,
    /// What each run reports, in order.
    pub metrics: &'static [Metric],
    kind: Kind,
}

/// All cases, in the order they run.
pub const CASES: &[Case] = &[
    Case { name: "v2h_64", metrics: &[Metric { name: "v2h_64", unit: Unit::Mpps }], kind: Kind::V2h(64) },
    Case { name: "v2h_1518", metrics: &[Metric { name: "v2h_1518", unit: Unit::Mpps }], kind: Kind::V2h(1518) },
    Case { name: "h2v_64", metrics: &[Metric { name: "h2v_64", unit: Unit::Mpps }], kind: Kind::H2v(64) },
    Case { name: "h2v_1518", metrics: &[Metric { name: "h2v_1518", unit: Unit::Mpps }], kind: Kind::H2v(1518) },
    Case { name: "twoway_64", metrics: &[Metric { name: "twoway_64", unit: Unit::Mpps }], kind: Kind::Twoway },
    Case { name: "switch_64", metrics: &[Metric { name: "switch_64", unit: Unit::Mpps }], kind: Kind::Switch },
    Case { name: "capture_64", metrics: &[Metric { name: "capture_64", unit: Unit::Mpps }], kind: Kind::Capture },
    Case {
        name: "rtt",
        metrics: &[Metric { name: "rtt", unit: Unit::Us }, Metric { name: "rtt_p99", unit: Unit::Us }],
        kind: Kind::Rtt,
    },
    Case { name: "start", metrics: &[Metric { name: "start", unit: Unit::Ms }], kind: Kind::Start },
    Case { name: "lb_64", metrics: &[Metric { name: "lb_64", unit: Unit::Mpps }], kind: Kind::Vnf(apps::Vnf::Lb) },
    Case { name: "fw_64", metrics: &[Metric { name: "fw_64", unit: Unit::Mpps }], kind: Kind::Vnf(apps::Vnf::Fw) },
    Case {
        name: "udp_rr",
        metrics: &[Metric { name: "udp_rr", unit: Unit::Us }, Metric { name: "udp_rr_p99", unit: Unit::Us }],
        kind: Kind::UdpRr,
    },
    Case {
        name: "hook_start",
        metrics: &[Metric { name: "hook_start", unit: Unit::Ms }, Metric { name: "hook_own", unit: Unit::Ms }],
        kind: Kind::HookStart,
    },
    Case {
        name: "wake",
        metrics: &[Metric { name: "wake_p50", unit: Unit::Us }, Metric { name: "wake_p99", unit: Unit::Us }],
        kind: Kind::Wake,
    },
    Case { name: "idle_cpu", metrics: &[Metric { name: "idle_cpu", unit: Unit::Ms }], kind: Kind::IdleCpu },
    Case { name: "afxdp_64", metrics: &[Metric { name: "afxdp_64", unit: Unit::Mpps }], kind: Kind::Afxdp },
    Case { name: "afxdp_ovs_64", metrics: &[Metric { name: "afxdp_ovs_64", unit: Unit::Mpps }], kind: Kind::AfxdpOvs },
    Case {
        name: "tap_rr",
        metrics: &[Metric { name: "tap_rr", unit: Unit::Us }, Metric { name: "tap_rr_p99", unit: Unit::Us }],
        kind: Kind::TapRr,
    },
    Case { name: "vxlan_64", metrics: &[Metric { name: "vxlan_64", unit: Unit::Mpps }], kind: Kind::Vxlan },
    Case {
        name: "restart",
        metrics: &[Metric { name: "restart", unit: Unit::Ms }, Metric { name: "restart_new", unit: Unit::Ms }],
        kind: Kind::Restart,
    },
    Case { name: "scrape_64", metrics: &[Metric { name: "scrape_64", unit: Unit::Mpps }], kind: Kind::Scrape },
    Case { name: "jumbo_9000", metrics: &[Metric { name: "jumbo_9000", unit: Unit::Gbps }], kind: Kind::Jumbo },
    Case { name: "switch_16", metrics: &[Metric { name: "switch_16", unit: Unit::Mpps }], kind: Kind::Ports(16) },
    Case {
        name: "switch_64ports",
        metrics: &[Metric { name: "switch_64ports", unit: Unit::Mpps }],
        kind: Kind::Ports(64),
    },
    Case { name: "macs_10k", metrics: &[Metric { name: "macs_10k", unit: Unit::Mpps }], kind: Kind::Macs },
    Case { name: "mq2_64", metrics: &[Metric { name: "mq2_64", unit: Unit::Mpps }], kind: Kind::Mq2(1) },
    Case { name: "mq2w_64", metrics: &[Metric { name: "mq2w_64", unit: Unit::Mpps }], kind: Kind::Mq2(2) },
    Case {
        name: "v2h_64_packed",
        metrics: &[Metric { name: "v2h_64_packed", unit: Unit::Mpps }],
        kind: Kind::Packed(packed::Flow::V2h),
    },
    Case {
        name: "h2v_64_packed",
        metrics: &[Metric { name: "h2v_64_packed", unit: Unit::Mpps }],
        kind: Kind::Packed(packed::Flow::H2v),
    },
    Case {
        name: "twoway_64_packed",
        metrics: &[Metric { name: "twoway_64_packed", unit: Unit::Mpps }],
        kind: Kind::Packed(packed::Flow::Twoway),
    },
    Case { name: "tso_64k", metrics: &[Metric { name: "tso_64k", unit: Unit::Gbps }], kind: Kind::Tso },
];

/// Packets in flight in the looping cases (ours: `--prime 256`).
const IN_FLIGHT: u32 = 256;
/// Round trips measured by `ping`.
const PINGS: &str = "100000";
/// How long a listening side gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Slack on top of the run time for our binaries to start and finish.
const SLACK: Duration = Duration::from_secs(30);

impl Case {
    /// Runs our side once.
    pub fn run_ours(&self, ctx: &Ctx) -> Result<Vec<f64>> {
        let mut sb = Sandbox::new(&format!("{}-ours", self.name))?;
        match self.kind {
            Kind::V2h(size) => ours_one_way(&mut sb, ctx, size, true, "vu"),
            Kind::H2v(size) => ours_one_way(&mut sb, ctx, size, false, "vu"),
            Kind::Twoway => ours_twoway(&mut sb, ctx, "vu"),
            Kind::Switch => ours_switch(&mut sb, ctx, &[], false),
            Kind::Capture => ours_switch(&mut sb, ctx, &[], true),
            Kind::Rtt => ours_rtt(&mut sb, ctx),
            Kind::Start => ours_start(&mut sb, ctx),
            Kind::Vnf(v) => apps::vnf_64(&mut sb, ctx, v),
            Kind::UdpRr => apps::ours_udp_rr(&mut sb, ctx),
            Kind::HookStart => hook_start::ours(&mut sb, ctx),
            Kind::Wake => interrupt::wake(&mut sb, ctx, true),
            Kind::IdleCpu => interrupt::idle_cpu(&mut sb, ctx, true),
            Kind::Afxdp | Kind::AfxdpOvs => uplink::ours_afxdp_64(&mut sb, ctx),
            Kind::TapRr => uplink::ours_tap_rr(&mut sb, ctx),
            Kind::Vxlan => vxlan::ours_vxlan_64(&mut sb, ctx),
            Kind::Restart => restart::ours(&mut sb, ctx),
            Kind::Scrape => scrape::ours(&mut sb, ctx),
            Kind::Jumbo => jumbo::ours(&mut sb, ctx),
            Kind::Ports(n) => ports::ours_ports(&mut sb, ctx, n),
            Kind::Macs => ports::macs(&mut sb, ctx, false),
            Kind::Mq2(workers) => ports::mq2(&mut sb, ctx, false, workers),
            Kind::Packed(flow) => packed::ours(&mut sb, ctx, flow),
            Kind::Tso => tso::ours(&mut sb, ctx),
        }
    }

    /// Runs the DPDK (or OVS-DPDK) side once.
    pub fn run_peer(&self, ctx: &Ctx) -> Result<Vec<f64>> {
        let mut sb = Sandbox::new(&format!("{}-peer", self.name))?;
        match self.kind {
            Kind::V2h(size) => peer_v2h(&mut sb, ctx, size),
            Kind::H2v(size) => peer_h2v(&mut sb, ctx, size),
            Kind::Twoway => peer_twoway(&mut sb, ctx),
            Kind::Switch => peer_switch(&mut sb, ctx),
            // capture_64 and scrape_64 race our switch without the capture or the scrapes.
            Kind::Capture | Kind::Scrape => ours_switch(&mut sb, ctx, &[], false),
            Kind::Rtt => peer_rtt(&mut sb, ctx),
            Kind::Start => peer_start(&mut sb, ctx),
            Kind::Vnf(_) => apps::vnf_64(&mut sb, ctx, apps::Vnf::L2fwd),
            // tap_rr's peer is the same kernel path: UDP sockets over a veth pair.
            Kind::UdpRr | Kind::TapRr => apps::kernel_udp_rr(&mut sb, ctx),
            Kind::HookStart => hook_start::peer(&mut sb, ctx),
            Kind::Wake => interrupt::eventfd_floor(),
            Kind::IdleCpu => interrupt::idle_cpu(&mut sb, ctx, false),
            Kind::Afxdp => uplink::peer_afxdp_64(&mut sb, ctx),
            Kind::AfxdpOvs => uplink::ovs_afxdp_64(&mut sb, ctx),
            Kind::Vxlan => vxlan::kernel_vxlan_64(&mut sb, ctx),
            Kind::Restart => restart::peer(&mut sb, ctx),
            Kind::Jumbo => jumbo::peer(&mut sb, ctx),
            Kind::Ports(n) => ports::peer_ports(&mut sb, ctx, n),
            Kind::Macs => ports::macs(&mut sb, ctx, true),
            Kind::Mq2(workers) => ports::mq2(&mut sb, ctx, true, workers),
            Kind::Packed(flow) => packed::peer(&mut sb, ctx, flow),
            Kind::Tso => tso::plain(&mut sb, ctx),
        }
    }
}

fn run_time(ctx: &Ctx) -> Duration {
    Duration::from_secs(ctx.secs) + SLACK
}

/// sink and pktgen; `to_vhost`: the sink is the backend (v2h), else the generator is (h2v).
/// The listening (vhost) side starts first.
/// `frontend`: the frontend's port kind (`vu`, or `vu-packed` for packed rings).
pub(super) fn ours_one_way(sb: &mut Sandbox, ctx: &Ctx, size: u32, to_vhost: bool, frontend: &str) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    let (secs, size) = (ctx.secs_arg(), size.to_string());
    let backend = port("vhost", &sock);
    let frontend = port(frontend, &sock);
    let (sink_port, sink_core, gen_port, gen_core) =
        if to_vhost { (&backend, "0", &frontend, "1") } else { (&frontend, "1", &backend, "0") };
    let sink_args = ["--port", sink_port, "--core", sink_core, "--secs", &secs, "--json", "--quiet"];
    let gen_args = ["--port", gen_port, "--core", gen_core, "--size", &size, "--secs", &secs, "--json", "--quiet"];
    let (sink, gen) = if to_vhost {
        let sink = ctx.spawn(sb, "sink", &sink_args)?;
        sb.wait_for_path(&sock, SOCKET_WAIT)?;
        (sink, ctx.spawn(sb, "pktgen", &gen_args)?)
    } else {
        let gen = ctx.spawn(sb, "pktgen", &gen_args)?;
        sb.wait_for_path(&sock, SOCKET_WAIT)?;
        (ctx.spawn(sb, "sink", &sink_args)?, gen)
    };
    sb.wait_all_success(&[sink, gen], run_time(ctx))?;
    let v = final_json(sb, sink, "sink")?;
    Ok(vec![number(&v, "mpps")?])
}

/// Two echo instances looping 256 packets, no MAC swap; the mean of the two directions.
/// `frontend`: the frontend's port kind (`vu`, or `vu-packed` for packed rings).
pub(super) fn ours_twoway(sb: &mut Sandbox, ctx: &Ctx, frontend: &str) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    let secs = ctx.secs_arg();
    let prime = IN_FLIGHT.to_string();
    let backend = port("vhost", &sock);
    let frontend = port(frontend, &sock);
    let be = ctx.spawn_as(
        sb,
        "echo-vhost",
        "echo",
        &["--port", &backend, "--core", "0", "--prime", &prime, "--no-macswap", "--secs", &secs, "--json", "--quiet"],
    )?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    let fe = ctx.spawn_as(
        sb,
        "echo-vu",
        "echo",
        &["--port", &frontend, "--core", "1", "--no-macswap", "--secs", &secs, "--json", "--quiet"],
    )?;
    sb.wait_all_success(&[be, fe], run_time(ctx))?;
    let a = number(&final_json(sb, be, "echo")?, "mpps")?;
    let b = number(&final_json(sb, fe, "echo")?, "mpps")?;
    Ok(vec![(a + b) / 2.0])
}

/// fastpathd (with `extra` arguments) listening on two ports of one bridge, l2fwd looping 256
/// packets through it. Our switch_64; `capture`: with `fastpathctl capture` of port a (both
/// ways, whole frames, into /dev/null) running throughout.
pub(super) fn ours_switch(sb: &mut Sandbox, ctx: &Ctx, extra: &[&str], capture: bool) -> Result<Vec<f64>> {
    let (a, b, ctl) = (sb.path("a.sock"), sb.path("b.sock"), sb.path("ctl.sock"));
    let (secs, prime) = (ctx.secs_arg(), IN_FLIGHT.to_string());
    let ctl = ctl.display().to_string();
    let port_a = format!("br0:a:vhost:{}", a.display());
    let port_b = format!("br0:b:vhost:{}", b.display());
    let args = ["--core", "0", "--ctl", &ctl, "--bridge", "br0", "--port", &port_a, "--port", &port_b];
    ctx.spawn(sb, "fastpathd", &[&args[..], extra].concat())?;
    sb.wait_for_path(&a, SOCKET_WAIT)?;
    sb.wait_for_path(&b, SOCKET_WAIT)?;
    if capture {
        ctx.spawn(sb, "fastpathctl", &["--ctl", &ctl, "capture", "a", "-w", "/dev/null"])?;
        // It connects and maps the ring in a few ms; a failure shows as its early exit.
        std::thread::sleep(Duration::from_millis(500));
        sb.check_alive()?;
    }
    let (vu_a, vu_b) = (port("vu", &a), port("vu", &b));
    let fwd = ctx.spawn(
        sb,
        "l2fwd",
        &["--port", &vu_a, "--port", &vu_b, "--core", "1", "--prime", &prime, "--secs", &secs, "--json", "--quiet"],
    )?;
    // Fails early if fastpathd exits meanwhile.
    sb.wait_all_success(&[fwd], run_time(ctx))?;
    Ok(vec![number(&final_json(sb, fwd, "l2fwd")?, "mpps")?])
}

/// Our ping against the reflector listening on `sock` (failing early if the reflector
/// exits): p50 and p99.
fn ping(sb: &mut Sandbox, ctx: &Ctx, sock: &std::path::Path) -> Result<Vec<f64>> {
    let vu = port("vu", sock);
    let p = ctx.spawn(sb, "ping", &["--port", &vu, "--core", "1", "--count", PINGS, "--json", "--quiet"])?;
    sb.wait_all_success(&[p], SLACK * 2)?;
    let v = final_json(sb, p, "ping")?;
    Ok(vec![number(&v, "p50_us")?, number(&v, "p99_us")?])
}

fn ours_rtt(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    let backend = port("vhost", &sock);
    ctx.spawn(sb, "echo", &["--port", &backend, "--core", "0", "--secs", "0", "--quiet"])?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    ping(sb, ctx, &sock)
}

/// Starts our sink with `--stamp-first` as the backend and waits for its socket.
fn stamping_sink(sb: &mut Sandbox, ctx: &Ctx) -> Result<(ProcId, std::path::PathBuf)> {
    let sock = sb.path("vhost.sock");
    let backend = port("vhost", &sock);
    let sink = ctx.spawn(sb, "sink", &["--port", &backend, "--core", "0", "--stamp-first", "--json", "--quiet"])?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    Ok((sink, sock))
}

/// CLOCK_REALTIME in nanoseconds.
pub(super) fn unix_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// Waits for the sink's `{"event":"first_packet","unix_ns":N}` line; returns the ms since
/// `t0_ns`. Fails if the sink exits, or the sender `gen` fails, or nothing comes in 20 s.
fn first_packet_ms(sb: &mut Sandbox, sink: ProcId, gen: ProcId, t0_ns: i128) -> Result<f64> {
    let end = std::time::Instant::now() + SOCKET_WAIT;
    let mut pos = 0;
    loop {
        let (lines, next) = sb.proc(sink).stdout_since(pos);
        pos = next;
        for l in lines {
            let Ok(v) = serde_json::from_str::<Value>(l.trim()) else {
                continue;
            };
            if v.get("event").and_then(Value::as_str) == Some("first_packet") {
                let ns =
                    v.get("unix_ns").and_then(Value::as_u64).ok_or_else(|| anyhow!("no integer unix_ns in {v}"))?;
                return Ok((i128::from(ns) - t0_ns) as f64 / 1e6);
            }
        }
        if let Some(s) = sb.proc(sink).poll() {
            bail!("sink exited ({s}) before a first packet{}", sb.proc(sink).stderr_excerpt());
        }
        if let Some(s) = sb.proc(gen).poll() {
            if !s.success() {
                bail!("{}", sb.proc(gen).failure());
            }
        }
        check_interrupt()?;
        if std::time::Instant::now() > end {
            bail!("no first packet within {} s", SOCKET_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn ours_start(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let (sink, sock) = stamping_sink(sb, ctx)?;
    let frontend = port("vu", &sock);
    let t0 = unix_ns();
    let gen =
        ctx.spawn(sb, "pktgen", &["--port", &frontend, "--core", "1", "--size", "64", "--secs", "1", "--quiet"])?;
    Ok(vec![first_packet_ms(sb, sink, gen, t0)?])
}

fn peer_v2h(sb: &mut Sandbox, ctx: &Ctx, size: u32) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    let be = Testpmd::vhost(&sock, "rxonly").spawn(sb)?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    Testpmd::virtio_user(&sock, "txonly").frame(size).spawn(sb)?;
    testpmd::measure(sb, &[(be, &[0])], ctx.secs)
}

fn peer_h2v(sb: &mut Sandbox, ctx: &Ctx, size: u32) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    Testpmd::vhost(&sock, "txonly").frame(size).spawn(sb)?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    let fe = Testpmd::virtio_user(&sock, "rxonly").spawn(sb)?;
    testpmd::measure(sb, &[(fe, &[0])], ctx.secs)
}

/// io forward on both sides; the frontend primes the loop (8 bursts of 32 = 256 packets):
/// a vhost-side `tx_first` would lose its bursts while the link is still down.
fn peer_twoway(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    let be = Testpmd::vhost(&sock, "io").spawn(sb)?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    let fe = Testpmd::virtio_user(&sock, "io").prime(IN_FLIGHT / BURST).spawn(sb)?;
    let rates = testpmd::measure(sb, &[(be, &[0]), (fe, &[0])], ctx.secs)?;
    Ok(vec![(rates[0] + rates[1]) / 2.0])
}

/// OVS-DPDK (PMD on CPU 0) with two dpdkvhostuser ports, and one testpmd (CPU 1) with two
/// virtio_user ports in io forward, primed with 4 bursts of 32 on each port (256 in flight).
/// The MACs are set so that OVS's MAC learning converges: port 0 sends to port 1's MAC and
/// the other way round. Score: testpmd's Rx-pps of port 0 plus port 1, i.e. every packet the
/// forwarder receives (and forwards) per second, as l2fwd counts both directions.
fn peer_switch(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    const MAC_A: &str = "02:00:00:00:00:0a";
    const MAC_B: &str = "02:00:00:00:00:0b";
    let ovs = Ovs::start(sb, 0, &["a", "b"])?;
    let mut fwd = Testpmd::virtio_user(&ovs.socket("a"), "io").prime(IN_FLIGHT / BURST / 2);
    fwd.name = "testpmd-2port";
    fwd.vdevs = vec![
        format!("virtio_user0,path={},queues=1,mac={MAC_A}", ovs.socket("a").display()),
        format!("virtio_user1,path={},queues=1,mac={MAC_B}", ovs.socket("b").display()),
    ];
    fwd.extra = vec![format!("--eth-peer=0,{MAC_B}"), format!("--eth-peer=1,{MAC_A}")];
    let fwd = fwd.spawn(sb)?;
    testpmd::measure(sb, &[(fwd, &[0, 1])], ctx.secs)
}

/// testpmd net_vhost in macswap forward mode, our ping as the frontend.
fn peer_rtt(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let sock = sb.path("vhost.sock");
    Testpmd::vhost(&sock, "macswap").spawn(sb)?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    ping(sb, ctx, &sock)
}

/// Our stamping sink with testpmd virtio_user txonly as the sender (no hugepage files,
/// a small pool, as a fast-starting DPDK app would be configured).
fn peer_start(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let (sink, sock) = stamping_sink(sb, ctx)?;
    let mut gen = Testpmd::virtio_user(&sock, "txonly");
    gen.memory = Memory::InMemory { mbufs: 8192 };
    let t0 = unix_ns();
    let gen = gen.spawn(sb)?;
    Ok(vec![first_packet_ms(sb, sink, gen, t0)?])
}

/// The case named `name`, or the case that reports a metric of that name.
pub fn find(name: &str) -> Result<&'static Case> {
    CASES.iter().find(|c| c.name == name || c.metrics.iter().any(|m| m.name == name)).ok_or_else(|| {
        let names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
        anyhow!("unknown case {name:?}; cases: {}", names.join(", "))
    })
}
