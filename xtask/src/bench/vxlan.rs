// The vxlan_64 case: 64-byte frames from an app on fastpathd A through VXLAN over a veth
// to fastpathd B and an app there, against the kernel's path in the same two namespaces
// (a UDP socket → kernel vxlan → veth → kernel vxlan → a UDP socket), same frame size.
//! Bench case for the VXLAN overlay.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::Signal;

use super::apps::ip;
use super::ours::{final_json, number, port, Ctx};
use crate::procs::Spawn;
use crate::scratch::Sandbox;

/// How long a listening side gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Slack on top of a run for processes to start and stop.
const SLACK: Duration = Duration::from_secs(30);
const VNI: &str = "77";
/// The VTEPs (on the veth) and the overlay's addresses (kernel path).
const VTEPS: [&str; 2] = ["10.97.0.1", "10.97.0.2"];
const OVERLAY: [&str; 2] = ["192.168.97.1", "192.168.97.2"];
/// The veths' `napi_defer_hard_irqs` and `gro_flush_timeout` (ns), on both sides.
const NAPI_DEFER: u32 = 2;
const GRO_FLUSH_NS: u32 = 50_000;
/// Microseconds the apps nap when their ring is empty (pktgen: full), to give the core
/// they share with their switch back to it at once.
const APP_NAP_US: &str = "20";
/// UDP payload of a 64-byte frame (less Ethernet 14, IPv4 20, UDP 8).
const PAYLOAD: usize = 64 - 42;

/// Two namespaces ("hosts") joined by a veth pair `fpxv0` ↔ `fpxv1`; deleted on drop.
struct Hosts {
    ns: [String; 2],
}

impl Hosts {
    fn new() -> Result<Self> {
        let pid = std::process::id() % 100_000;
        let me = Self { ns: [format!("fpbvx{pid}a"), format!("fpbvx{pid}b")] };
        for ns in &me.ns {
            let _ = ip(&["netns", "del", ns]);
            ip(&["netns", "add", ns])?;
        }
        let [a, b] = &me.ns;
        ip(&["link", "add", "fpxv0", "netns", a, "type", "veth", "peer", "name", "fpxv1", "netns", b])?;
        for (ns, dev) in me.ns.iter().zip(["fpxv0", "fpxv1"]) {
            ip(&["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]).ok();
            // Both sides: the veth's receive NAPI completes lazily (re-armed by a 50 us
            // timer rather than by every frame sent), the setting busy-polling AF_XDP
            // users give their interfaces; it batches the receive side's softirq work.
            let sysfs = format!(
                "echo {NAPI_DEFER} > /sys/class/net/{dev}/napi_defer_hard_irqs && echo {GRO_FLUSH_NS} > /sys/class/net/{dev}/gro_flush_timeout"
            );
            ip(&["netns", "exec", ns, "sh", "-c", &sysfs])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(me)
    }

    /// Our binary `bin` in host `i`.
    fn spawn(&self, sb: &mut Sandbox, ctx: &Ctx, i: usize, bin: &str, args: &[&str]) -> Result<crate::scratch::ProcId> {
        let path = ctx.bin_dir.join(bin);
        sb.spawn(Spawn::new(bin, "ip").args(["netns", "exec", &self.ns[i]]).args([path.as_os_str()]).args(args))
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Ours: fastpathd A (CPU 0) and B (CPU 1), each with a vxlan port over an afxdp uplink on
/// its veth end and a vhost port; pktgen on A's (CPU 0), sink on B's (CPU 1): the sink's
/// rate. Two pollers share each core, so each gives its core away when it has nothing to
/// do (the switches with `--share-core`, the apps napping): a poller spinning on an empty
/// ring would otherwise hold the core for a whole time slice while its peer's ring fills.
pub fn ours_vxlan_64(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let hosts = Hosts::new().context("two namespaces and a veth pair (needs root)")?;
    let (gen, sink) = (sb.path("gen.sock"), sb.path("sink.sock"));
    let mut procs = Vec::new();
    for (i, (dev, app)) in [("fpxv0", ("gen", &gen)), ("fpxv1", ("sink", &sink))].into_iter().enumerate() {
        // Each switch keeps its state file by its control socket: apart.
        let dir = sb.path(&format!("host{i}"));
        std::fs::create_dir_all(&dir)?;
        let ctl = dir.join("fastpathd.sock");
        let vx = format!("br0:vx:vxlan:afxdp:{dev},vni={VNI},local={},remote={}", VTEPS[i], VTEPS[1 - i]);
        let vhost = format!("br0:{}:vhost:{}", app.0, app.1.display());
        let ctl = ctl.display().to_string();
        let core = i.to_string();
        procs.push(hosts.spawn(
            sb,
            ctx,
            i,
            "fastpathd",
            &["--core", &core, "--share-core", "--ctl", &ctl, "--bridge", "br0", "--port", &vx, "--port", &vhost],
        )?);
        sb.wait_for_path(app.1, SOCKET_WAIT)?;
    }
    // The VTEPs find each other with ARP at their first poll.
    std::thread::sleep(Duration::from_secs(1));
    // The generator outlasts the sink, so that the sink's whole run is under load.
    let sink_secs = (ctx.secs + 1).to_string();
    let gen_secs = (ctx.secs + 5).to_string();
    let (vu_sink, vu_gen) = (port("vu", &sink), port("vu", &gen));
    let sink = ctx.spawn(
        sb,
        "sink",
        &["--port", &vu_sink, "--core", "1", "--idle-sleep-us", APP_NAP_US, "--secs", &sink_secs, "--json", "--quiet"],
    )?;
    let pktgen = ctx.spawn(
        sb,
        "pktgen",
        &[
            "--port",
            &vu_gen,
            "--core",
            "0",
            "--idle-sleep-us",
            APP_NAP_US,
            "--size",
            "64",
            "--secs",
            &gen_secs,
            "--json",
            "--quiet",
        ],
    )?;
    sb.wait_all_success(&[sink], Duration::from_secs(ctx.secs) + SLACK)?;
    for id in [pktgen].into_iter().chain(procs) {
        sb.stop(id, Signal::SIGTERM, Duration::from_secs(3));
    }
    let v = final_json(sb, sink, "sink")?;
    Ok(vec![number(&v, "mpps")?])
}

/// Runs `f` on a thread in namespace `ns`. Not pinned: the kernel's sender and receiver
/// move between the machine's two cores as the scheduler likes (pinned like ours, CPU 0
/// and 1, they measured a third slower on the shared test machine).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {path}"))?;
        f()
    })
}

/// The kernel: a vxlan device in each namespace over its veth end; a UDP socket in A sends
/// 22-byte datagrams (64-byte frames) as fast as it can for the run, one in B counts them:
/// B's rate. The same two cores as ours (the machine's), the same veth settings.
pub fn kernel_vxlan_64(_sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let hosts = Hosts::new().context("two namespaces and a veth pair (needs root)")?;
    for (i, (ns, dev)) in hosts.ns.iter().zip(["fpxv0", "fpxv1"]).enumerate() {
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            VNI,
            "dstport",
            "4789",
            "local",
            VTEPS[i],
            "remote",
            VTEPS[1 - i],
            "dev",
            dev,
        ])?;
        ip(&["-n", ns, "addr", "add", &format!("{}/24", VTEPS[i]), "dev", dev])?;
        ip(&["-n", ns, "addr", "add", &format!("{}/24", OVERLAY[i]), "dev", "vx0"])?;
        ip(&["-n", ns, "link", "set", "vx0", "up"])?;
    }
    let run = Duration::from_secs(ctx.secs);
    let to = format!("{}:9000", OVERLAY[1]);
    let receiver = in_netns(&hosts.ns[1], {
        let to = to.clone();
        move || {
            let s = UdpSocket::bind(&to)?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut buf = [0u8; 2048];
            let (mut n, mut first) = (0u64, None);
            let give_up = Instant::now() + run + Duration::from_secs(5);
            loop {
                match s.recv(&mut buf) {
                    Ok(_) => {
                        first.get_or_insert_with(Instant::now);
                        n += 1;
                    }
                    // Half a second of silence after the stream: it ended.
                    Err(_) if first.is_some() => break,
                    Err(_) if Instant::now() < give_up => {}
                    Err(e) => anyhow::bail!("no datagram through the kernel's vxlan: {e}"),
                }
            }
            let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64() - 0.5);
            Ok(n as f64 / secs.max(1e-9) / 1e6)
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let sender = in_netns(&hosts.ns[0], move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        let payload = [0x5au8; PAYLOAD];
        let end = Instant::now() + run;
        while Instant::now() < end {
            for _ in 0..64 {
                let _ = s.send_to(&payload, &to);
            }
        }
        Ok(())
    });
    sender.join().map_err(|_| anyhow::anyhow!("the sender thread panicked"))??;
    let mpps = receiver.join().map_err(|_| anyhow::anyhow!("the receiver thread panicked"))??;
    drop(hosts);
    Ok(vec![mpps])
}
