// DPDK testpmd as the peer: builds its command lines (net_vhost / virtio_user, one worker core)
// and reads its rates from the `--stats-period 1` output ("Rx-pps:" per port).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::median;
use crate::procs::{check_interrupt, Spawn};
use crate::scratch::{ProcId, Sandbox};

/// The testpmd binary from Debian's `dpdk-dev`.
pub const TESTPMD: &str = "dpdk-testpmd";

/// Packets in one testpmd burst (`tx_first` sends one burst per call and per port).
pub const BURST: u32 = 32;

/// Where testpmd gets its memory.
pub enum Memory {
    /// `-m 512` hugepage files under our unique prefix (removed after the run).
    Files512,
    /// `--in-memory`: no files at all; the pool is sized to `mbufs`.
    InMemory {
        /// `--total-num-mbufs`.
        mbufs: u32,
    },
}

/// One testpmd instance: which CPU its forwarding core runs on, its devices and its mode.
pub struct Testpmd {
    /// Name used in messages.
    pub name: &'static str,
    /// CPU of the forwarding lcore; the main lcore (stats printing, mostly asleep) is the other.
    pub worker_cpu: u8,
    /// `--vdev` arguments.
    pub vdevs: Vec<String>,
    /// `--forward-mode`.
    pub mode: &'static str,
    /// Frame length for txonly and for `tx_first` priming (`--txpkts`).
    pub frame: u32,
    /// Bursts per port sent by `start tx_first N` before forwarding (`None`: plain `-a`).
    pub prime_bursts: Option<u32>,
    /// Memory setup.
    pub memory: Memory,
    /// Extra application arguments (after `--`).
    pub extra: Vec<String>,
}

impl Testpmd {
    /// A vhost-user backend (`net_vhost`, listening on `sock`) on CPU 0.
    pub fn vhost(sock: &Path, mode: &'static str) -> Self {
        Self {
            name: "testpmd-vhost",
            worker_cpu: 0,
            vdevs: vec![format!("net_vhost0,iface={},queues=1", sock.display())],
            mode,
            frame: 64,
            prime_bursts: None,
            memory: Memory::Files512,
            extra: Vec::new(),
        }
    }

    /// A virtio-user frontend (`virtio_user`, connecting to `sock`) on CPU 1.
    pub fn virtio_user(sock: &Path, mode: &'static str) -> Self {
        Self {
            name: "testpmd-virtio",
            worker_cpu: 1,
            vdevs: vec![format!("virtio_user0,path={},queues=1", sock.display())],
            mode,
            frame: 64,
            prime_bursts: None,
            memory: Memory::Files512,
            extra: Vec::new(),
        }
    }

    /// Sets the frame length.
    #[must_use]
    pub fn frame(mut self, len: u32) -> Self {
        self.frame = len;
        self
    }

    /// Its virtio_user ports take packed rings (`packed_vq=1`).
    #[must_use]
    pub fn packed(mut self) -> Self {
        for v in &mut self.vdevs {
            if v.starts_with("virtio_user") {
                v.push_str(",packed_vq=1");
            }
        }
        self
    }

    /// Primes the loop with `bursts` bursts of [`BURST`] packets per port.
    #[must_use]
    pub fn prime(mut self, bursts: u32) -> Self {
        self.prime_bursts = Some(bursts);
        self
    }

    /// Starts it in `sb`, with a fresh file prefix.
    pub fn spawn(self, sb: &mut Sandbox) -> Result<ProcId> {
        let prefix = sb.dpdk_prefix();
        let main_cpu = 1 - self.worker_cpu;
        let mut args = vec![
            "-l".to_string(),
            "0,1".to_string(),
            "--main-lcore".to_string(),
            main_cpu.to_string(),
            "--no-pci".to_string(),
            format!("--file-prefix={prefix}"),
        ];
        match self.memory {
            Memory::Files512 => args.extend(["-m".to_string(), "512".to_string()]),
            Memory::InMemory { .. } => args.push("--in-memory".to_string()),
        }
        if self.vdevs.iter().any(|v| v.starts_with("virtio_user")) {
            // Without it virtio-user needs more than vhost-user's 8 memory regions.
            args.push("--single-file-segments".to_string());
        }
        for v in &self.vdevs {
            args.push(format!("--vdev={v}"));
        }
        args.extend([
            "--".to_string(),
            "--nb-cores=1".to_string(),
            format!("--forward-mode={}", self.mode),
            format!("--txpkts={}", self.frame),
            // Non-interactive testpmd exits at once without it; it also gives us the rates.
            "--stats-period=1".to_string(),
        ]);
        if let Memory::InMemory { mbufs } = self.memory {
            args.push(format!("--total-num-mbufs={mbufs}"));
        }
        match self.prime_bursts {
            Some(n) => {
                // `--tx-first` sends one burst only; `start tx_first N` sends N per port, and
                // testpmd then finds forwarding already started.
                let file = sb.path(&format!("{prefix}.cmds"));
                std::fs::write(&file, format!("start tx_first {n}\n"))
                    .with_context(|| format!("writing {}", file.display()))?;
                args.push(format!("--cmdline-file={}", file.display()));
            }
            None => args.push("--auto-start".to_string()),
        }
        args.extend(self.extra);
        sb.spawn(Spawn::new(self.name, TESTPMD).args(args))
    }
}

/// Reads the per-port "Rx-pps:" values of one testpmd's stats output into samples (the sum
/// over the chosen ports of one stats print).
struct Meter {
    ports: Vec<u16>,
    pos: usize,
    port: Option<u16>,
    print: BTreeMap<u16, f64>,
    samples: Vec<(Instant, f64)>,
}

impl Meter {
    fn feed(&mut self, line: &str, now: Instant) {
        if line.contains("Port statistics ====") {
            self.print.clear();
            self.port = None;
        } else if let Some(rest) = line.split("NIC statistics for port ").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            self.port = digits.parse().ok();
        } else if let Some(rest) = line.split("Rx-pps:").nth(1) {
            let value = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(port), Some(v)) = (self.port, value) {
                if self.ports.contains(&port) {
                    self.print.insert(port, v);
                    if self.print.len() == self.ports.len() {
                        self.samples.push((now, self.print.values().sum()));
                        self.print.clear();
                    }
                }
            }
        }
    }

    /// The steady-state samples: those after the first non-zero one (which covers the start
    /// of traffic, a partial interval); and the time they cover.
    fn steady(&self) -> (Vec<f64>, Duration) {
        let Some(first) = self.samples.iter().position(|&(_, v)| v > 0.0) else {
            return (Vec::new(), Duration::ZERO);
        };
        let t0 = self.samples[first].0;
        let rest = &self.samples[first + 1..];
        let covered = rest.last().map_or(Duration::ZERO, |&(t, _)| t - t0);
        (rest.iter().map(|&(_, v)| v).collect(), covered)
    }
}

/// Waits until every testpmd in `meters` (with the ports whose Rx-pps to add up) has shown
/// traffic and then `secs` more seconds of stats; returns each one's median rate in Mpps.
/// Fails if any process of the sandbox exits meanwhile, or if no traffic shows in 30 s.
pub fn measure(sb: &mut Sandbox, meters: &[(ProcId, &[u16])], secs: u64) -> Result<Vec<f64>> {
    let ids: Vec<ProcId> = meters.iter().map(|&(id, _)| id).collect();
    let mut meters: Vec<Meter> = meters
        .iter()
        .map(|&(_, ports)| Meter {
            ports: ports.to_vec(),
            pos: 0,
            port: None,
            print: BTreeMap::new(),
            samples: Vec::new(),
        })
        .collect();
    let start = Instant::now();
    let want = Duration::from_secs(secs);
    loop {
        check_interrupt()?;
        sb.check_alive()?;
        let now = Instant::now();
        for (m, &id) in meters.iter_mut().zip(&ids) {
            let (lines, pos) = sb.proc(id).stdout_since(m.pos);
            m.pos = pos;
            for l in &lines {
                m.feed(l, now);
            }
        }
        let views: Vec<(Vec<f64>, Duration)> = meters.iter().map(Meter::steady).collect();
        if views.iter().all(|(s, c)| !s.is_empty() && *c >= want) {
            return Ok(views.into_iter().map(|(s, _)| median(&s) / 1e6).collect());
        }
        let waited = now - start;
        if waited > Duration::from_secs(30) + want * 2 {
            let silent: Vec<&str> = meters
                .iter()
                .zip(&views)
                .filter(|(_, (s, _))| s.is_empty())
                .map(|(m, _)| if m.samples.is_empty() { "no stats at all" } else { "rates stayed at 0" })
                .collect();
            let excerpts: String = ids.iter().map(|&id| sb.proc(id).stderr_excerpt()).collect();
            bail!("testpmd showed no steady traffic after {} s ({}){excerpts}", waited.as_secs(), silent.join(", "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(ports: &[u16]) -> Meter {
        Meter { ports: ports.to_vec(), pos: 0, port: None, print: BTreeMap::new(), samples: Vec::new() }
    }

    const PRINT: &str = "\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 32543360   RX-missed: 0          RX-bytes:  2082775040
  Throughput (since last show)
  Rx-pps:     16269675          Rx-bps:   8330073768
  Tx-pps:            0          Tx-bps:            0
  ######################## NIC statistics for port 1  ########################
  Rx-pps:      1000000          Rx-bps:   8330073768
  ############################################################################";

    #[test]
    fn sums_the_chosen_ports_of_one_print() {
        let now = Instant::now();
        let mut both = meter(&[0, 1]);
        let mut one = meter(&[1]);
        for l in PRINT.lines() {
            both.feed(l, now);
            one.feed(l, now);
        }
        assert_eq!(both.samples.len(), 1);
        assert!((both.samples[0].1 - 17_269_675.0).abs() < 0.5);
        assert!((one.samples[0].1 - 1_000_000.0).abs() < 0.5);
    }
}
