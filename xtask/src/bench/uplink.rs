// The uplink cases: afxdp_64 (frames from the far end of a veth through an AF_XDP port to a
// container's vhost port: fastpathd against testpmd net_af_xdp ↔ net_vhost) and tap_rr (UDP
// request/response between a host socket and a container app through a TAP port).
//! Bench cases for the port kinds that reach outside the switch.

use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::apps::ip;
use super::ours::{final_json, number, port, Ctx};
use super::ovs::Ovs;
use super::testpmd::{Memory, Testpmd};
use crate::procs::Spawn;
use crate::scratch::{ProcId, Sandbox};

/// How long a listening side gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Slack on top of a run for processes to start and stop.
const SLACK: Duration = Duration::from_secs(30);
/// Seconds the sink waits beyond the run for the generator to start.
const GEN_START_SECS: u64 = 3;
/// Transactions tap_rr measures per run.
const TRANSACTIONS: &str = "50000";
/// The TAP side's address and the app's (tap_rr).
const TAP_IPS: [&str; 2] = ["10.98.0.1", "10.98.0.2"];

/// A veth pair in the host's namespace, both ends up with IPv6 off (the kernel sends
/// nothing of its own); deleted on drop.
struct Veth {
    ends: [String; 2],
}

impl Veth {
    fn new() -> Result<Self> {
        let pid = std::process::id() % 100_000;
        let me = Self { ends: [format!("fpb{pid}a"), format!("fpb{pid}b")] };
        let [a, b] = &me.ends;
        let _ = ip(&["link", "del", a]);
        ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        for end in &me.ends {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
            ip(&["link", "set", end, "up"])?;
        }
        Ok(me)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.ends[0]]);
    }
}

/// The far end's generator, the same for both sides: testpmd txonly, 64-byte frames,
/// through net_af_xdp on `ifname`, its worker on CPU 1.
fn far_end_generator(sb: &mut Sandbox, ifname: &str) -> Result<ProcId> {
    Testpmd {
        name: "testpmd-gen",
        worker_cpu: 1,
        vdevs: vec![format!("net_af_xdp0,iface={ifname},start_queue=0,queue_count=1")],
        mode: "txonly",
        frame: 64,
        prime_bursts: None,
        memory: Memory::InMemory { mbufs: 16384 },
        extra: Vec::new(),
    }
    .spawn(sb)
}

/// A sink on `vu:sock` (CPU 1, beside the generator, as on the peer's side): its rate.
/// Its rings are long (4096 entries) so that they absorb the scheduler's time slices
/// while it shares CPU 1 with the generator.
fn sink_rate(sb: &mut Sandbox, ctx: &Ctx, veth: &Veth, sock: &std::path::Path, others: &[ProcId]) -> Result<f64> {
    let secs = (ctx.secs + GEN_START_SECS).to_string();
    let vu = port("vu", sock);
    let sink = ctx.spawn(
        sb,
        "sink",
        &[
            "--port",
            &vu,
            "--core",
            "1",
            "--secs",
            &secs,
            "--queue-size",
            "4096",
            "--nbufs",
            "16384",
            "--json",
            "--quiet",
        ],
    )?;
    let gen = far_end_generator(sb, &veth.ends[1])?;
    sb.wait_all_success(&[sink], Duration::from_secs(ctx.secs) + SLACK)?;
    for &id in others.iter().chain([&gen]) {
        sb.stop(id, Signal::SIGINT, Duration::from_secs(5));
    }
    let v = final_json(sb, sink, "sink")?;
    number(&v, "mpps")
}

/// Ours: fastpathd (CPU 0) with an afxdp port on the near end and a vhost port, our sink on
/// it; testpmd txonly on the far end.
pub fn ours_afxdp_64(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let veth = Veth::new().context("creating a veth pair (needs root)")?;
    let (sock, ctl) = (sb.path("app.sock"), sb.path("ctl.sock"));
    let up = format!("br0:up:afxdp:{}", veth.ends[0]);
    let app = format!("br0:app:vhost:{}", sock.display());
    let ctl = ctl.display().to_string();
    let fpd =
        ctx.spawn(sb, "fastpathd", &["--core", "0", "--ctl", &ctl, "--bridge", "br0", "--port", &up, "--port", &app])?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    Ok(vec![sink_rate(sb, ctx, &veth, &sock, &[fpd])?])
}

/// The peer: testpmd (CPU 0) forwarding net_af_xdp on the near end ↔ net_vhost, our sink
/// on the vhost side; the same generator.
pub fn peer_afxdp_64(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let veth = Veth::new().context("creating a veth pair (needs root)")?;
    let sock = sb.path("app.sock");
    let fwd = Testpmd {
        name: "testpmd-afxdp",
        worker_cpu: 0,
        vdevs: vec![
            format!("net_af_xdp0,iface={},start_queue=0,queue_count=1", veth.ends[0]),
            format!("net_vhost1,iface={},queues=1", sock.display()),
        ],
        mode: "io",
        frame: 64,
        prime_bursts: None,
        memory: Memory::InMemory { mbufs: 32768 },
        extra: Vec::new(),
    }
    .spawn(sb)?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    Ok(vec![sink_rate(sb, ctx, &veth, &sock, &[fwd])?])
}

/// OVS-DPDK in the same place: a netdev bridge with an `afxdp` port on the near end and a
/// `dpdkvhostuser` port (PMD on CPU 0), our sink on it; the same generator.
pub fn ovs_afxdp_64(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let veth = Veth::new().context("creating a veth pair (needs root)")?;
    let ovs = Ovs::start(sb, 0, &["app"])?;
    ovs.add_afxdp(&veth.ends[0])?;
    let sock = ovs.socket("app");
    Ok(vec![sink_rate(sb, ctx, &veth, &sock, &[])?])
}

/// A network namespace for the host's side of tap_rr, deleted on drop.
struct HostNs(String);

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Ours: fastpathd (CPU 0) with a TAP port, moved into a namespace with an address, and a
/// vhost port with smoltcp's udp_echo (interrupt mode, CPU 1); the kernel's udp_rr in the
/// namespace (CPU 1): mean and p99 round trip. The peer is the kernel's veth path
/// (`apps::kernel_udp_rr`).
pub fn ours_tap_rr(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let pid = std::process::id() % 100_000;
    let (tap, ns) = (format!("fpbt{pid}"), HostNs(format!("fpbtap{pid}")));
    let _ = ip(&["netns", "del", &ns.0]);
    ip(&["netns", "add", &ns.0])?;
    let (sock, ctl) = (sb.path("app.sock"), sb.path("ctl.sock"));
    let host = format!("br0:host:tap:{tap}");
    let app = format!("br0:app:vhost:{}", sock.display());
    let ctl = ctl.display().to_string();
    let fpd = ctx.spawn(
        sb,
        "fastpathd",
        &["--core", "0", "--ctl", &ctl, "--bridge", "br0", "--port", &host, "--port", &app],
    )?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    ip(&["link", "set", &tap, "netns", &ns.0])?;
    ip(&["-n", &ns.0, "addr", "add", &format!("{}/24", TAP_IPS[0]), "dev", &tap])?;
    ip(&["-n", &ns.0, "link", "set", &tap, "up"])?;
    let vu = port("vu", &sock);
    let app_ip = format!("{}/24", TAP_IPS[1]);
    let echo = ctx.spawn(
        sb,
        "udp_echo",
        &["--port", &vu, "--ip", &app_ip, "--listen", "7", "--core", "1", "--interrupt", "--quiet"],
    )?;
    let rr_bin = ctx.bin_dir.join("udp_rr");
    let server = format!("{}:7", TAP_IPS[1]);
    let rr = sb.spawn(Spawn::new("udp_rr", "ip").args(["netns", "exec", &ns.0]).args([rr_bin.as_os_str()]).args([
        "--kernel",
        "--server",
        &server,
        "--count",
        TRANSACTIONS,
        "--core",
        "1",
        "--json",
        "--quiet",
    ]))?;
    sb.wait_all_success(&[rr], SLACK * 2)?;
    let v = final_json(sb, rr, "udp_rr")?;
    for id in [echo, fpd] {
        sb.stop(id, Signal::SIGTERM, Duration::from_secs(3));
    }
    Ok(vec![number(&v, "mean_us")?, number(&v, "p99_us")?])
}
