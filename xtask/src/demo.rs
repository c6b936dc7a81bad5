// `cargo xtask demo`: fastpathd and two unprivileged busybox containers under runc (or crun), wired by
// fastpath-hook; pktgen in one, sink --check in the other, live rates until Ctrl-C or --secs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::bundle::{self, HookHost, Runtime, Spec, CONTRACT};
use crate::procs::{check_interrupt, interrupted, Echo, Stream};
use crate::scratch::{ProcId, Sandbox};
use crate::setup;
use crate::workspace::Workspace;

/// Arguments of `cargo xtask demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    pub secs: Option<u64>,
    /// The OCI runtime that runs the containers: runc or crun.
    #[arg(long, default_value = "runc")]
    pub runtime: String,
    /// Frames per second pktgen sends.
    #[arg(long, default_value_t = 1_000_000)]
    pub rate: u64,
    /// Skip the builds: use the binaries already in target/release and target/static.
    #[arg(long)]
    pub no_build: bool,
}

/// What the apps sleep when a loop finds nothing to do, so that they share 2 CPUs with fastpathd.
const IDLE_SLEEP_US: &str = "20";
/// How long a container gets from `run` to its port being up.
const READY_WAIT: Duration = Duration::from_secs(60);
/// How long a container gets to exit after its signal.
const EXIT_WAIT: Duration = Duration::from_secs(10);

fn say(msg: &str) {
    eprintln!("demo: {msg}");
}

/// The container's command: read the port from the config.json the hook wrote (pktgen and sink
/// take `--port`; they do not read the file themselves), say what the hook gave, exec the app.
fn app_script(app: &str, args: &str) -> String {
    format!(
        r#"cfg=/run/fastpath/config.json
sock=$(grep -o '"socket": *"[^"]*"' "$cfg" | head -n 1 | cut -d '"' -f 4)
if [ -z "$sock" ]; then echo "no vhost-user port in $cfg:" >&2; cat "$cfg" >&2; exit 1; fi
echo "in the container: uid $(id -u), CPUs $(grep Cpus_allowed_list /proc/self/status | cut -f 2), hugetlbfs $(grep -c ' /dev/hugepages ' /proc/self/mountinfo) mount, port vu:$sock from $cfg" >&2
exec {app} --port "vu:$sock" {args}"#
    )
}

/// Waits until the hook's ledger has container `id` ready and fastpathd reports its port's
/// link up (the app connected); fails early if a demo process exits.
fn wait_ready(sb: &mut Sandbox, host: &HookHost, id: &str) -> Result<Value> {
    let end = Instant::now() + READY_WAIT;
    loop {
        check_interrupt()?;
        sb.check_alive().with_context(|| format!("while starting container {id}"))?;
        let entry = host.ledger().get(id).cloned();
        if let Some(e) = entry.filter(|e| e["status"] == "ready") {
            let mine: Vec<&str> =
                e["ports"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
            let ports = host.ports()?;
            let up = !mine.is_empty()
                && mine.iter().all(|m| ports.iter().any(|p| p["name"] == *m && p["stats"]["link_up"] == true));
            if up {
                return Ok(e);
            }
        }
        if Instant::now() >= end {
            bail!(
                "container {id}: not ready with its port up within {} s; ledger: {:?}; hook.log: {}",
                READY_WAIT.as_secs(),
                host.ledger(),
                host.hook_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// "core(s) [1], 64 MiB of 2 MiB hugepages, port NAME (SOCKET)" from a ledger entry.
fn describe(e: &Value) -> String {
    let cores = e["cores"].as_array().map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    let huge = e["hugepages"]["bytes"].as_u64().map_or_else(|| "no".into(), |b| format!("{} MiB of", b >> 20));
    let page = e["hugepages"]["page_size"].as_u64().map_or(0, |p| p >> 20);
    let ports: Vec<String> = e["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} on {} ({})",
                p["name"].as_str().unwrap_or("?"),
                p["bridge"].as_str().unwrap_or("?"),
                p["socket"].as_str().unwrap_or("?")
            )
        })
        .collect();
    format!("core {}, {huge} {page} MiB hugepages, switch port {}", cores.unwrap_or_default(), ports.join(", "))
}

/// Polls child `id` until it exits or `grace` passes (no Ctrl-C check: used while stopping).
fn wait_exit(sb: &mut Sandbox, id: ProcId, grace: Duration) -> bool {
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if sb.proc(id).poll().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Stops one container: `kill ID TERM`, wait for it to exit (the runtime's `run` then deletes
/// it, running the hook's poststop), then `delete --force ID` in case it is still there.
fn stop_container(sb: &mut Sandbox, rt: &Runtime, id: &str, proc: ProcId) {
    let rtn = &rt.name;
    say(&format!("{rtn} kill {id} TERM"));
    if let Err(e) = rt.kill(id, "TERM") {
        say(&format!("{e:#}"));
    }
    let exited = wait_exit(sb, proc, EXIT_WAIT);
    if !exited {
        say(&format!("{id} did not exit within {} s", EXIT_WAIT.as_secs()));
    }
    match rt.delete_force(id) {
        Ok(true) => say(&format!("{rtn} delete -f {id}: deleted (the hook's poststop ran)")),
        Ok(false) => say(&format!(
            "{rtn} delete -f {id}: already gone ({rtn} run deleted it when it exited, running the hook's poststop)"
        )),
        Err(e) => say(&format!("{e:#}")),
    }
    sb.stop(proc, Signal::SIGTERM, Duration::from_secs(5));
}

/// What fastpathd dropped at container `id`'s port because its receive ring was full.
fn ring_full_drops(host: &HookHost, id: &str) -> Option<u64> {
    let ports = host.ports().ok()?;
    let port = ports.iter().find(|p| p["name"].as_str().is_some_and(|n| n.contains(id)))?;
    port["stats"]["drop_ring_full"].as_u64()
}

/// Prints the sink's final JSON line as a summary, and where lost frames went
/// (`ring_drops`: fastpathd's drop counter at the sink's port).
fn print_summary(lines: &[String], ring_drops: Option<u64>) {
    let v = lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v.get("role").and_then(Value::as_str) == Some("sink"));
    let Some(v) = v else {
        println!("sink summary: the sink printed none");
        return;
    };
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "sink summary: {} frames received in {:.1} s ({:.3} Mpps); {} lost, {} reordered, {} damaged, {} foreign",
        n("received"),
        v["secs"].as_f64().unwrap_or(0.0),
        v["mpps"].as_f64().unwrap_or(0.0),
        n("lost"),
        n("reordered"),
        n("bad"),
        n("foreign"),
    );
    if let Some(d) = ring_drops.filter(|&d| d > 0 && n("lost") > 0) {
        println!(
            "  of the {} lost, fastpathd dropped {d} at the sink's full receive ring: the sink shares CPU 0 \
             with the switch's polling worker on this 2-CPU layout, and frames that come while it waits \
             for the CPU find no room",
            n("lost")
        );
    }
    println!("sink JSON: {v}");
}

/// Runs the demo; Ctrl-C (or --secs) is the normal way to end it.
pub fn run(ws: &Workspace, args: &DemoArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo runs containers with an OCI hook that mounts and writes cgroups: run it as root");
    }
    say("setup: packages, hugepages, cgroups");
    setup::run()?;
    let static_dir = if args.no_build {
        say("--no-build: using the binaries already built");
        ws.target.join("static/x86_64-unknown-linux-gnu/release")
    } else {
        say("building the release binaries (fastpathd, fastpath-hook)");
        ws.build_release(&["--bins"])?;
        say("building static pktgen and sink for the busybox rootfs");
        ws.build_static_examples()?
    };
    let bins = ws.release_dir();
    let (hook, fastpathd) = (bins.join("fastpath-hook"), bins.join("fastpathd"));
    let (pktgen, sink) = (static_dir.join("pktgen"), static_dir.join("sink"));

    let mut sb = Sandbox::new("demo")?;
    let dir = sb.dir().to_path_buf();
    say(&format!("temporary directory {}", dir.display()));
    let pool = bundle::core_pool(2);
    let host = HookHost::new(&dir, &hook, &pool)?;
    say(&format!(
        "wrote {}: core pool {pool}, state dir {}, switch socket {}",
        host.config.display(),
        host.state.display(),
        host.ctl.display()
    ));
    let show = Stream::Capture(Echo::Prefixed);
    let switch = host.start_switch(&mut sb, &fastpathd, show)?;
    say(&format!(
        "fastpathd running: bridge {}, worker polling on CPU 0, control socket {}",
        bundle::BRIDGE,
        host.ctl.display()
    ));
    let rootfs = sb.path("rootfs");
    bundle::make_rootfs(&rootfs, &[(&pktgen, "pktgen"), (&sink, "sink")])?;
    say(&format!("rootfs {}: busybox-static, static pktgen and sink", rootfs.display()));
    let hooks = host.oci_hooks(&hook, &host.config)?;
    say(&format!(
        "config.json hooks as `fastpath-hook --config FILE install` prints them: createRuntime, createContainer, poststop -> {}",
        hook.display(),
    ));
    let rt = Runtime::find(&args.runtime, dir.join("rt-root"))?;

    let pid = std::process::id();
    let (sink_id, gen_id) = (format!("fpdemo{pid}-sink"), format!("fpdemo{pid}-pktgen"));
    let sink_sh = app_script("sink", &format!("--check --json --queue-size 4096 --idle-sleep-us {IDLE_SLEEP_US}"));
    let gen_sh =
        app_script("pktgen", &format!("--rate {} --queue-size 1024 --idle-sleep-us {IDLE_SLEEP_US}", args.rate));
    let mut bundles = Vec::new();
    for (id, script) in [(&sink_id, &sink_sh), (&gen_id, &gen_sh)] {
        let args = ["sh", "-c", script];
        let spec = Spec { annotations: &CONTRACT, hooks: Some(&hooks), ..Spec::new(id, &rootfs, &args) };
        bundles.push(bundle::write_bundle(&dir.join(format!("bundle-{id}")), &spec)?);
    }
    let ann: Vec<String> = CONTRACT.iter().map(|(k, v)| format!("{k}={v}")).collect();
    say(&format!("bundles for {sink_id} and {gen_id}: uid 1000, no capabilities, annotations {}", ann.join(" ")));

    // The sink starts first and gets the lowest free core, CPU 0, beside fastpathd's worker: it
    // sleeps when idle, so they share well. pktgen (which spins while its ring is full) gets CPU 1.
    let (sink_p, sink_e) = start_container(&mut sb, &rt, &host, "sink", &bundles[0], &sink_id)?;
    say(&format!("{sink_id} up: the hook gave it {}", describe(&sink_e)));
    let (gen_p, gen_e) = start_container(&mut sb, &rt, &host, "pktgen", &bundles[1], &gen_id)?;
    say(&format!("{gen_id} up: the hook gave it {}", describe(&gen_e)));

    let until = args.secs.map(|s| Instant::now() + Duration::from_secs(s));
    say(&format!(
        "pktgen -> fastpathd {} -> sink at {} frames/s; {}",
        bundle::BRIDGE,
        args.rate,
        match args.secs {
            Some(s) => format!("stopping after {s} s (or Ctrl-C)"),
            None => "Ctrl-C to stop".to_string(),
        }
    ));
    let mut problem = None;
    while !interrupted() && until.map_or(true, |u| Instant::now() < u) {
        if let Err(e) = sb.check_alive() {
            problem = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    say("stopping: pktgen first, so that the sink sees the end of the stream");
    stop_container(&mut sb, &rt, &gen_id, gen_p);
    let sink_drops = ring_full_drops(&host, &sink_id);
    stop_container(&mut sb, &rt, &sink_id, sink_p);
    let left = host.ledger();
    let ports = host.ports().unwrap_or_else(|e| {
        say(&format!("{e:#}"));
        Vec::new()
    });
    if left.is_empty() && ports.is_empty() {
        say("the hook's poststop released everything: ledger empty (cores, hugepages, sockets), no switch ports");
    } else {
        let names: Vec<&str> = ports.iter().filter_map(|p| p["name"].as_str()).collect();
        say(&format!("left over: ledger {:?}, switch ports {names:?}", left.keys().collect::<Vec<_>>()));
        match host.gc() {
            Ok(v) => say(&format!("fastpath-hook gc: {v}")),
            Err(e) => say(&format!("{e:#}")),
        }
    }
    sb.stop(switch, Signal::SIGTERM, Duration::from_secs(5));
    say("fastpathd stopped");
    let sink_lines = sb.proc(sink_p).stdout_lines();
    let state = host.state.clone();
    drop(rt);
    drop(host);
    drop(sb);
    say(&format!("removed {} and {}", dir.display(), state.display()));
    print_summary(&sink_lines, sink_drops);
    match problem {
        Some(e) => Err(e.context("a demo process stopped early")),
        None => Ok(()),
    }
}

/// Starts container `id` from `bundle` as child `name` (stderr shown prefixed) and waits until
/// it is ready with its port up; returns the child and the hook's ledger entry.
fn start_container(
    sb: &mut Sandbox,
    rt: &Runtime,
    host: &HookHost,
    name: &str,
    bundle: &Path,
    id: &str,
) -> Result<(ProcId, Value)> {
    say(&format!("{} run --bundle {} {id}", rt.name, bundle.display()));
    let p =
        sb.spawn(rt.run(name, bundle, id).stdout(Stream::Capture(Echo::Off)).stderr(Stream::Capture(Echo::Prefixed)))?;
    let e = wait_ready(sb, host, id).map_err(|e| {
        let why = sb.proc(p).stderr_excerpt();
        if why.is_empty() {
            e
        } else {
            anyhow!("{e:#}{why}")
        }
    })?;
    Ok((p, e))
}
