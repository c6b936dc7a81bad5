// What every example shares: the common flags, opening ports on one pool,
// pinning, Ctrl-C, the test frame format, live rates and the final JSON line.
//! Shared pieces of fastpath's example programs.
#![deny(unsafe_code)]

pub mod acl;
pub mod flow;
pub mod frame;
pub mod gap;
pub mod gso;
pub mod lb;
pub mod smol;
pub mod tcp_server;
pub mod timeline;
pub mod vnf;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use netlib::mac::{format_mac, parse_source_mac, Mac};
use netlib::pool::PoolOptions;
use netlib::virtio_user::{VirtioUser, VirtioUserOptions, VirtioUserPair};
use netlib::{open_port, LinkState, PktPool, Port, PortSpec};

/// Flags every example takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Pin the packet loop to this CPU.
    #[arg(long)]
    pub core: Option<usize>,
    /// Run for this many seconds (0: until Ctrl-C or a count is reached).
    #[arg(long, default_value_t = 0.0)]
    pub secs: f64,
    /// Print one JSON object with the results on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// No live rate lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// hugetlbfs directory for packet memory (falls back to memfd when unusable).
    #[arg(long, default_value = "/dev/hugepages")]
    pub hugedir: String,
    /// Packet buffers in the pool.
    #[arg(long, default_value_t = 8192)]
    pub nbufs: u32,
    /// Ring entries per queue.
    #[arg(long, default_value_t = 256)]
    pub queue_size: u16,
    /// The port's MTU: packet buffers hold a frame of it with its Ethernet header and a
    /// VLAN tag (1500: 2048-byte buffers; 9000: jumbo frames).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(68..=9216))]
    pub mtu: u16,
    /// Sleep this many microseconds when a loop finds nothing to do (0: spin).
    /// Lets several pollers share a core, e.g. in tests.
    #[arg(long, default_value_t = 0)]
    pub idle_sleep_us: u64,
    /// Interrupt mode: after a run of empty polls, sleep until the peer signals traffic.
    #[arg(long)]
    pub interrupt: bool,
    /// Seconds to wait for the link to come up.
    #[arg(long, default_value_t = 30.0)]
    pub link_timeout: f64,
}

/// Starts logging to stderr (RUST_LOG, default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// A flag set by SIGINT or SIGTERM.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, Arc::clone(&f));
        }
        f
    })
    .clone()
}

/// Pins this thread to `core`.
pub fn pin(core: Option<usize>) -> Result<()> {
    if let Some(c) = core {
        let mut set = nix::sched::CpuSet::new();
        set.set(c).with_context(|| format!("--core {c}: no such CPU"))?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .with_context(|| format!("--core {c}: cannot pin to it"))?;
    }
    Ok(())
}

/// The port to use: `--port` if given, else the first port of the container's
/// fastpath config (`/run/fastpath/config.json` or `$FASTPATH_CONFIG`, written by
/// fastpath-hook), or its first VF when it lists no switch port. Without `--core`, the first core the config gives is used.
pub fn discover_port(port: Option<PortSpec>, c: &mut Common) -> Result<PortSpec> {
    if let Some(p) = port {
        return Ok(p);
    }
    let cfg = netlib::config::Config::discover().context(
        "no --port given, and no fastpath config to discover one from (run under fastpath-hook, or give --port)",
    )?;
    // A switch port if there is one, else the first VF the hook handed over.
    let spec = match (cfg.ports.first(), cfg.vfs.first()) {
        (Some(p), _) => p.spec(),
        (None, Some(vf)) => vf.spec(),
        (None, None) => bail!("no --port given, and the fastpath config lists no port and no VF"),
    };
    if c.core.is_none() {
        c.core = cfg.cores.first().copied();
    }
    Ok(spec)
}

/// The source MAC an app uses when neither a flag nor the container's config gives one.
pub const DEFAULT_SRC_MAC: Mac = [2, 0, 0, 0, 0, 1];
/// The destination MAC of the test frames an app sends when no flag gives one.
pub const DEFAULT_DST_MAC: Mac = [2, 0, 0, 0, 0, 2];

/// The MAC an app sends with on `spec`: `flag` (the flag `name`, for messages) when
/// given, else the one fastpath-hook gave that port (in the container's config.json,
/// [`netlib::config::discover_mac`]); `None` when neither has one (an app run by hand),
/// so the app keeps its own default.
pub fn own_mac(flag: Option<&str>, name: &str, spec: &PortSpec) -> Result<Option<Mac>> {
    if let Some(m) = flag {
        return parse_source_mac(m).map(Some).map_err(|e| anyhow!("{name}: {e}"));
    }
    let mac = netlib::config::discover_mac(spec).context("reading the port's MAC from the fastpath config")?;
    if let Some(m) = mac {
        tracing::info!("{spec}: sending as {}, the MAC fastpath-hook gave the port", format_mac(&m));
    }
    Ok(mac)
}

/// [`own_mac`], or `default` when neither the flag nor the config gives one.
pub fn own_mac_or(flag: Option<&str>, name: &str, spec: &PortSpec, default: Mac) -> Result<Mac> {
    Ok(own_mac(flag, name, spec)?.unwrap_or(default))
}

/// A pool built from the common flags.
pub fn make_pool(c: &Common) -> Result<PktPool> {
    make_pool_for(c, 1)
}

/// A pool built from the common flags for an app with `ports` ports: at least `--nbufs`
/// buffers, and room for each port's full receive and transmit rings and the app's own
/// bursts.
pub fn make_pool_for(c: &Common, ports: usize) -> Result<PktPool> {
    let rings = u32::try_from(2 * ports + 2).unwrap_or(u32::MAX);
    let opts = PoolOptions {
        nbufs: c.nbufs.max(u32::from(c.queue_size).saturating_mul(rings)),
        hugedir: Some(c.hugedir.clone().into()),
        data_room: netlib::pool::data_room_for_mtu(c.mtu),
    };
    PktPool::new(&opts).context("creating the packet pool")
}

/// Opens `spec` on `pool`.
pub fn open(spec: &PortSpec, pool: &mut PktPool, c: &Common) -> Result<Box<dyn Port>> {
    open_port(spec, pool, c.queue_size).with_context(|| format!("opening port {spec}"))
}

/// Opens `spec`, a virtio-user port, with a queue pair per pool in `pools` (see
/// `netlib::virtio_user::VirtioUser::open_pairs`): a handle per pair, for a thread each.
pub fn open_pairs(spec: &PortSpec, pools: &mut [PktPool], c: &Common) -> Result<Vec<VirtioUserPair>> {
    let (path, server, packed) = match spec {
        PortSpec::VirtioUser(p) => (p, false, false),
        PortSpec::VirtioUserServer(p) => (p, true, false),
        PortSpec::VirtioUserPacked(p) => (p, false, true),
        other => bail!("--queues needs a vu:, vu-server: or vu-packed: port (virtio-user), not {other}"),
    };
    let opts = VirtioUserOptions { queue_size: c.queue_size, server, packed, ..VirtioUserOptions::default() };
    VirtioUser::open_pairs(path, pools, opts)
        .with_context(|| format!("opening port {spec} with {} queue pairs", pools.len()))
}

/// `n` pools built from the common flags, one per queue pair of a port opened with
/// [`open_pairs`].
pub fn make_pools(c: &Common, n: usize) -> Result<Vec<PktPool>> {
    (0..n).map(|_| make_pool(c)).collect()
}

/// Waits (driving the control path) until every port is up.
pub fn wait_link(ports: &mut [Box<dyn Port>], pool: &mut PktPool, c: &Common, stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(c.link_timeout);
    let mut said = false;
    loop {
        let mut all = true;
        for p in ports.iter_mut() {
            p.poll_control(pool);
            all &= p.link() == LinkState::Up;
        }
        if all {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted while waiting for the link");
        }
        if Instant::now() > deadline {
            let down: Vec<&str> = ports.iter().filter(|p| p.link() != LinkState::Up).map(|p| p.name()).collect();
            bail!("link still down after {} s on {}", c.link_timeout, down.join(", "));
        }
        if !said && !c.quiet {
            let names: Vec<&str> = ports.iter().map(|p| p.name()).collect();
            eprintln!("waiting for link on {}", names.join(", "));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Prints a rate line once a second; tells when a run's time is over.
#[derive(Debug)]
pub struct Meter {
    what: &'static str,
    quiet: bool,
    start: Instant,
    last: Instant,
    last_count: u64,
    end: Option<Instant>,
    calls: u32,
    now: Instant,
}

impl Meter {
    /// A meter for `what`, ending after `secs` (0: never).
    pub fn new(what: &'static str, c: &Common) -> Self {
        let now = Instant::now();
        Self {
            what,
            quiet: c.quiet,
            start: now,
            last: now,
            last_count: 0,
            end: (c.secs > 0.0).then(|| now + Duration::from_secs_f64(c.secs)),
            calls: 0,
            now,
        }
    }

    /// Restarts the clock (e.g. at the first packet).
    pub fn restart(&mut self) {
        let now = Instant::now();
        self.start = now;
        self.last = now;
        self.now = now;
    }

    /// Call once per loop with the running count; returns false when time is up.
    /// Reads the clock every 1024 calls only.
    #[inline]
    pub fn tick(&mut self, count: u64) -> bool {
        self.calls = self.calls.wrapping_add(1);
        if !self.calls.is_multiple_of(1024) {
            return true;
        }
        self.now = Instant::now();
        let dt = self.now.duration_since(self.last).as_secs_f64();
        if dt >= 1.0 {
            if !self.quiet {
                let rate = (count - self.last_count) as f64 / dt / 1e6;
                eprintln!("{}: {rate:8.3} Mpps   total {count}", self.what);
            }
            self.last = self.now;
            self.last_count = count;
        }
        self.end.is_none_or(|e| self.now < e)
    }

    /// Seconds since start (or restart).
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// Sleeps `--idle-sleep-us` if set (call when a loop did no work).
#[inline]
pub fn idle(c: &Common) {
    if c.idle_sleep_us > 0 {
        std::thread::sleep(Duration::from_micros(c.idle_sleep_us));
    }
}

/// Decides what a receive loop does when it found nothing: spin, nap
/// (`--idle-sleep-us`) or, in interrupt mode, sleep on the port's notification.
#[derive(Debug, Default)]
pub struct Idler {
    empty: u32,
}

/// Empty polls before an interrupt-mode port goes to sleep.
const EMPTY_POLLS_BEFORE_SLEEP: u32 = 64;

impl Idler {
    /// Call when a receive found nothing.
    #[inline]
    pub fn empty(&mut self, c: &Common, port: &mut dyn Port, pool: &mut PktPool) {
        if c.interrupt {
            self.empty += 1;
            if self.empty >= EMPTY_POLLS_BEFORE_SLEEP {
                self.empty = 0;
                port.wait_rx(pool, Duration::from_millis(100));
            }
        } else {
            idle(c);
        }
    }

    /// Call when a receive found packets.
    #[inline]
    pub fn busy(&mut self) {
        self.empty = 0;
    }
}

/// Sends `count` 64-byte frames (`src` → `dst`, numbered from 0) out of `port`: the
/// packets a two-way benchmark loop starts with. Gives up after 5 s; returns how many
/// went out.
pub fn prime(port: &mut dyn Port, pool: &mut PktPool, count: u32, dst: Mac, src: Mac) -> Result<u64> {
    prime_sized(port, pool, count, 64, dst, src)
}

/// As [`prime`], with frames of `size` bytes (the pool's buffers must hold them).
pub fn prime_sized(port: &mut dyn Port, pool: &mut PktPool, count: u32, size: u16, dst: Mac, src: Mac) -> Result<u64> {
    let tpl = frame::Template::new(usize::from(size), dst, src).map_err(anyhow::Error::msg)?;
    let mut burst = netlib::pool::burst_vec();
    let (mut seq, mut sent) = (0u64, 0u64);
    let started = Instant::now();
    while sent < u64::from(count) && started.elapsed().as_secs() < 5 {
        let want = (u64::from(count) - seq).min(burst.capacity() as u64) as usize;
        let before = burst.len();
        pool.alloc_bulk(&mut burst, want.saturating_sub(before));
        for p in &mut burst[before..] {
            tpl.write(pool.set_len(p, usize::from(size)), seq);
            seq += 1;
        }
        sent += port.tx_burst(pool, &mut burst) as u64;
    }
    pool.free_all(&mut burst);
    Ok(sent)
}

/// How many frames a generator may add to its burst now: the burst's free `room`,
/// capped by `--count` (0: no cap) less the `queued` frames (sent or waiting in the
/// burst), and by `--rate` frames per second since `start` (0: no cap).
#[inline]
pub fn send_budget(room: usize, queued: u64, count: u64, rate: f64, start: Instant) -> usize {
    let mut want = room;
    if count > 0 {
        want = want.min(count.saturating_sub(queued) as usize);
    }
    if rate > 0.0 {
        let allowed = (start.elapsed().as_secs_f64() * rate) as u64;
        want = want.min(allowed.saturating_sub(queued) as usize);
    }
    want
}

/// The start of a `--rate` schedule on which `queued` frames are exactly on time now: what
/// a generator resumes from after its link was down, so that it does not send the frames
/// of the outage in one burst when the link comes back (their sequence numbers were never
/// used; nothing is lost, the stream just pauses).
pub fn schedule_from(queued: u64, rate: f64) -> Instant {
    let now = Instant::now();
    if rate <= 0.0 {
        return now;
    }
    let behind = Duration::try_from_secs_f64(queued as f64 / rate).unwrap_or(Duration::ZERO);
    now.checked_sub(behind).unwrap_or(now)
}

/// Mpps of `count` over `secs`.
pub fn mpps(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs / 1e6
    } else {
        0.0
    }
}

/// Prints the final JSON line (if asked) and a human summary on stderr.
pub fn report(c: &Common, v: &serde_json::Value) {
    if c.json {
        println!("{v}");
    }
    if !c.quiet {
        eprintln!("{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        c: Common,
    }

    #[test]
    fn a_schedule_resumed_after_an_outage_does_not_catch_up() {
        // 1000 frames queued at 10,000/s: the schedule restarts with them on time, so a
        // generator may add almost nothing now, and about 10 more per millisecond after.
        let s = schedule_from(1000, 10_000.0);
        assert!(send_budget(32, 1000, 0, 10_000.0, s) <= 1);
        std::thread::sleep(Duration::from_millis(2));
        let n = send_budget(32, 1000, 0, 10_000.0, s);
        assert!((15..=32).contains(&n), "{n}");
        // Without a rate there is no schedule to keep.
        assert_eq!(send_budget(32, 1000, 0, 0.0, schedule_from(1000, 0.0)), 32);
    }

    #[test]
    fn port_core_and_mac_come_from_the_container_config_when_not_given() {
        let dir = std::env::temp_dir().join(format!("fp-discover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.json");
        std::fs::write(
            &p,
            r#"{"version":1,"container_id":"c1","cores":[1],"hugepages":null,"ports":[{"name":"c1-br0","bridge":"br0","socket":"/run/fastpath/sock/br0.sock","mode":"client","mac":"02:aa:bb:cc:dd:ee"}],"vfs":[],"lib_dir":null,"memlock":null,"uid":1000,"gid":1000}"#,
        )
        .unwrap();
        std::env::set_var("FASTPATH_CONFIG", &p);
        let mut t = T::parse_from(["t"]);
        let spec = discover_port(None, &mut t.c).unwrap();
        assert_eq!(spec.to_string(), "vu:/run/fastpath/sock/br0.sock");
        assert_eq!(t.c.core, Some(1));
        // The port's MAC: the flag's, else the config's, else none (the app's default).
        let me = [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        assert_eq!(own_mac(None, "--mac", &spec).unwrap(), Some(me));
        assert_eq!(own_mac(Some("02:00:00:00:00:33"), "--mac", &spec).unwrap(), Some([2, 0, 0, 0, 0, 0x33]));
        let e = own_mac(Some("01:00:00:00:00:33"), "--src-mac", &spec).unwrap_err().to_string();
        assert!(e.starts_with("--src-mac: ") && e.contains("multicast"), "{e}");
        let elsewhere: PortSpec = "vu:/tmp/other.sock".parse().unwrap();
        assert_eq!(own_mac_or(None, "--mac", &elsewhere, DEFAULT_SRC_MAC).unwrap(), DEFAULT_SRC_MAC);
        assert_eq!(own_mac_or(None, "--mac", &spec, DEFAULT_SRC_MAC).unwrap(), me);
        // An explicit --port wins and the config is not read.
        let given: PortSpec = "vhost:/x".parse().unwrap();
        assert_eq!(discover_port(Some(given.clone()), &mut t.c).unwrap(), given);
        // No switch port but a VF: the VF.
        std::fs::write(
            &p,
            r#"{"version":1,"container_id":"c2","cores":[],"ports":[],"vfs":[{"pci":"0000:01:10.2","iommu_group":6,"devices":["/dev/vfio/6"]}],"uid":0,"gid":0}"#,
        )
        .unwrap();
        let spec = discover_port(None, &mut t.c).unwrap();
        assert_eq!(spec, PortSpec::Vf("0000:01:10.2".into()));
        std::env::set_var("FASTPATH_CONFIG", dir.join("missing.json"));
        let e = format!("{:#}", discover_port(None, &mut t.c).unwrap_err());
        assert!(e.contains("no --port given"), "{e}");
        std::env::remove_var("FASTPATH_CONFIG");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
