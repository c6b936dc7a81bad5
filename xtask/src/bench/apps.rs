// The application cases: lb_64/fw_64 (a VNF between two ports of flowgen, against our own
// l2fwd in its place) and udp_rr (smoltcp over netlib against the kernel's UDP over a veth pair).

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use super::ours::{final_json, number, port, Ctx};
use crate::procs::Spawn;
use crate::scratch::{ProcId, Sandbox};

/// Flows flowgen spreads its frames over.
const FLOWS: &str = "1024";
/// Backends the lb case balances over.
const LB_BACKENDS: [&str; 4] = ["02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03", "02:00:00:00:01:04"];
/// The fw case's rules: flowgen's frames (UDP from 10.0.0.0/22 to 192.168.1.10:53) pass
/// six rules before the one that allows them, so every frame scans seven.
const FW_RULES: &str = "\
deny tcp any any -> any 22
deny tcp any any -> any 23
deny udp 172.16.0.0/12 any -> any any
deny udp any any -> 192.168.1.0/24 161-162
deny icmp any any -> any any
deny udp 10.0.0.0/8 0-1023 -> any any
allow udp 10.0.0.0/8 1024-65535 -> 192.168.1.0/24 53
default deny
";
/// Transactions udp_rr measures per run.
const TRANSACTIONS: &str = "50000";
/// How long a listening side gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Slack on top of a run for our binaries to start and stop.
const SLACK: Duration = Duration::from_secs(30);

/// The VNF between flowgen's two ports: `lb`, `fw`, or `l2fwd` (the peer).
#[derive(Clone, Copy)]
pub enum Vnf {
    /// The load balancer over four backends.
    Lb,
    /// The firewall with [`FW_RULES`].
    Fw,
    /// Our plain forwarder, the yardstick.
    L2fwd,
}

/// One VNF run: the VNF listens as the vhost-user backend on both ports (CPU 1) and
/// flowgen connects with virtio-user (CPU 0), so that the VNF, which then copies every
/// frame in and out, is the bottleneck rather than the generator; 64-byte UDP frames
/// over 1024 flows. Score: the rate at which frames come back to flowgen.
pub fn vnf_64(sb: &mut Sandbox, ctx: &Ctx, vnf: Vnf) -> Result<Vec<f64>> {
    let (a, b) = (sb.path("in.sock"), sb.path("out.sock"));
    let (pa, pb) = (port("vhost", &a), port("vhost", &b));
    // The VNF outlives flowgen's run and its drain.
    let vnf_secs = format!("{}", ctx.secs + 2);
    let mut args: Vec<String> = match vnf {
        Vnf::Lb => {
            let mut v = vec!["--in".to_string(), pa, "--out".into(), pb];
            for m in LB_BACKENDS {
                v.push("--backend".into());
                v.push(m.into());
            }
            v
        }
        Vnf::Fw => {
            let rules = sb.path("rules.txt");
            std::fs::write(&rules, FW_RULES).with_context(|| format!("writing {}", rules.display()))?;
            vec!["--in".to_string(), pa, "--out".into(), pb, "--rules".into(), rules.display().to_string()]
        }
        Vnf::L2fwd => vec!["--port".to_string(), pa, "--port".into(), pb],
    };
    args.extend(["--core", "1", "--secs", &vnf_secs, "--json", "--quiet"].map(String::from));
    let bin = match vnf {
        Vnf::Lb => "lb",
        Vnf::Fw => "fw",
        Vnf::L2fwd => "l2fwd",
    };
    let f = ctx.spawn(sb, bin, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    sb.wait_for_path(&a, SOCKET_WAIT)?;
    sb.wait_for_path(&b, SOCKET_WAIT)?;
    let secs = ctx.secs_arg();
    let (va, vb) = (port("vu", &a), port("vu", &b));
    let gen = ctx.spawn(
        sb,
        "flowgen",
        &[
            "--port",
            &va,
            "--rx",
            &vb,
            "--flows",
            FLOWS,
            "--size",
            "64",
            "--core",
            "0",
            "--secs",
            &secs,
            "--drain-secs",
            "0.3",
            "--json",
            "--quiet",
        ],
    )?;
    sb.wait_all_success(&[gen, f], Duration::from_secs(ctx.secs) + SLACK)?;
    let v = final_json(sb, gen, "flowgen")?;
    Ok(vec![number(&v, "mpps")?])
}

/// udp_echo and udp_rr on smoltcp, straight over one vhost-user/virtio-user pair (echo the
/// backend on CPU 0, the client on CPU 1, both polling): mean and p99 round trip.
pub fn ours_udp_rr(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let sock = sb.path("udp.sock");
    let backend = port("vhost", &sock);
    let echo = ctx.spawn(
        sb,
        "udp_echo",
        &["--port", &backend, "--ip", "10.0.0.2/24", "--listen", "7", "--core", "0", "--quiet"],
    )?;
    sb.wait_for_path(&sock, SOCKET_WAIT)?;
    let frontend = port("vu", &sock);
    let rr = ctx.spawn(
        sb,
        "udp_rr",
        &[
            "--port",
            &frontend,
            "--ip",
            "10.0.0.1/24",
            "--server",
            "10.0.0.2:7",
            "--count",
            TRANSACTIONS,
            "--core",
            "1",
            "--json",
            "--quiet",
        ],
    )?;
    sb.wait_all_success(&[rr], SLACK * 2)?;
    let v = final_json(sb, rr, "udp_rr")?;
    sb.stop(echo, Signal::SIGTERM, Duration::from_secs(3));
    Ok(vec![number(&v, "mean_us")?, number(&v, "p99_us")?])
}

/// Two network namespaces joined by a veth pair, removed on drop.
struct VethPair {
    ns: [String; 2],
}

/// Addresses of the two ends.
const VETH_IPS: [&str; 2] = ["10.99.0.1", "10.99.0.2"];

/// Runs `ip ARGS`, failing with what it said.
pub(super) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl VethPair {
    fn new() -> Result<Self> {
        let pid = std::process::id();
        let me = Self { ns: [format!("fpbench{pid}a"), format!("fpbench{pid}b")] };
        for ns in &me.ns {
            let _ = ip(&["netns", "del", ns]);
            ip(&["netns", "add", ns])?;
        }
        let [a, b] = &me.ns;
        ip(&["link", "add", "fpv0", "netns", a, "type", "veth", "peer", "name", "fpv1", "netns", b])?;
        for (ns, (dev, addr)) in me.ns.iter().zip([("fpv0", VETH_IPS[0]), ("fpv1", VETH_IPS[1])]) {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(me)
    }

    /// Starts our binary `bin` inside namespace `i`.
    fn spawn(&self, sb: &mut Sandbox, ctx: &Ctx, i: usize, bin: &str, args: &[&str]) -> Result<ProcId> {
        let path = ctx.bin_dir.join(bin);
        if !path.is_file() {
            bail!("our binary {} is missing (not written yet, or the release build failed)", path.display());
        }
        sb.spawn(Spawn::new(bin, "ip").args(["netns", "exec", &self.ns[i]]).args([path.as_os_str()]).args(args))
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the pair, and the pair with it.
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The kernel's UDP: the same udp_echo and udp_rr with `--kernel`, each in its own network
/// namespace, over a veth pair (echo on CPU 0, client on CPU 1, blocking sockets).
pub fn kernel_udp_rr(sb: &mut Sandbox, ctx: &Ctx) -> Result<Vec<f64>> {
    let veth = VethPair::new().context("setting up two network namespaces and a veth pair (needs root)")?;
    let server = format!("{}:7", VETH_IPS[1]);
    let echo = veth.spawn(sb, ctx, 1, "udp_echo", &["--kernel", "--bind", &server, "--core", "0", "--quiet"])?;
    // Time to bind; a request before that is lost and retried within udp_rr's warm-up.
    std::thread::sleep(Duration::from_millis(300));
    let rr = veth.spawn(
        sb,
        ctx,
        0,
        "udp_rr",
        &["--kernel", "--server", &server, "--count", TRANSACTIONS, "--core", "1", "--json", "--quiet"],
    )?;
    sb.wait_all_success(&[rr], SLACK * 2)?;
    let v = final_json(sb, rr, "udp_rr")?;
    sb.stop(echo, Signal::SIGTERM, Duration::from_secs(3));
    drop(veth);
    Ok(vec![number(&v, "mean_us")?, number(&v, "p99_us")?])
}
