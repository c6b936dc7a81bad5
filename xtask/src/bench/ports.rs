// The many-ports and many-MACs cases: one forwarder process holds every virtio-user port
// (pairs of ports looping frames to each other through the switch, addressed by MAC so that
// the switch forwards by what it learned), against OVS-DPDK with as many dpdkvhostuser ports.
//! Bench cases `switch_16`, `switch_64ports`, `macs_10k`, `mq2_64` and `mq2w_64`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use super::ours::{final_json, number, port, Ctx};
use super::ovs::Ovs;
use super::testpmd::{self, Testpmd};
use crate::scratch::Sandbox;

/// How long a listening side gets to create its sockets (OVS with 64 ports takes a while).
const SOCKET_WAIT: Duration = Duration::from_secs(60);
/// Slack on top of the run time for the forwarder to connect every port and finish.
const SLACK: Duration = Duration::from_secs(60);
/// Frames in flight per pair of ports: one testpmd burst of 32 on each of the two ports.
const IN_FLIGHT_PER_PAIR: u32 = 64;
/// Frames in flight in `macs_10k` (as switch_64).
const IN_FLIGHT_MACS: u32 = 256;
/// testpmd's build holds this many ports at most (`RTE_MAX_ETHPORTS` of Debian's DPDK).
const TESTPMD_MAX_PORTS: usize = 32;
/// Hosts behind the first port in `macs_10k`.
pub const HOSTS: u32 = 10_000;
/// The MAC table size both switches get in `macs_10k`, so that neither evicts (OVS's
/// default, 8,192, is smaller than the hosts).
const MAC_TABLE_SIZE: u32 = 65_536;

/// Port `i`'s MAC: `02:00:00:00:01:ii` (the pairs are ports 2k and 2k+1).
fn mac(i: usize) -> String {
    format!("02:00:00:00:{:02x}:{:02x}", 1 + i / 256, i % 256)
}

/// The first port's MAC in `macs_10k`: its hosts count up from it in the low three bytes.
const HOSTS_MAC: &str = "02:00:0a:00:00:00";
/// The second port's MAC in `macs_10k`.
const SERVER_MAC: &str = "02:00:0b:00:00:00";

/// Port names `p0`, `p1`, ...
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i}")).collect()
}

/// fastpathd on CPU 0 with `n` listening ports `p0..` on one bridge (and `extra` arguments);
/// their sockets.
fn start_fastpathd(sb: &mut Sandbox, ctx: &Ctx, n: usize, extra: &[&str]) -> Result<Vec<PathBuf>> {
    start_fastpathd_on(sb, ctx, "0", n, extra)
}

/// [`start_fastpathd`] with a worker on each CPU of `cores` (comma-separated).
fn start_fastpathd_on(sb: &mut Sandbox, ctx: &Ctx, cores: &str, n: usize, extra: &[&str]) -> Result<Vec<PathBuf>> {
    let ctl = sb.path("ctl.sock").display().to_string();
    let socks: Vec<PathBuf> = names(n).iter().map(|p| sb.path(&format!("{p}.sock"))).collect();
    let mut args: Vec<String> = ["--cores", cores, "--ctl", &ctl, "--bridge", "br0"].map(String::from).into();
    for (name, sock) in names(n).iter().zip(&socks) {
        args.push("--port".into());
        args.push(format!("br0:{name}:vhost:{}", sock.display()));
    }
    args.extend(extra.iter().map(|&s| s.to_owned()));
    ctx.spawn(sb, "fastpathd", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    for s in &socks {
        sb.wait_for_path(s, SOCKET_WAIT)?;
    }
    Ok(socks)
}

/// Our l2fwd on CPU 1 holding a virtio-user port on each socket, pairs addressed to each
/// other by MAC (`--dst-pair`), `prime` frames per pair, with `extra` arguments; its rate
/// (every frame it forwards, i.e. every frame through the switch) in Mpps.
fn l2fwd(sb: &mut Sandbox, ctx: &Ctx, socks: &[PathBuf], macs: &[String], prime: u32, extra: &[&str]) -> Result<f64> {
    let secs = ctx.secs_arg();
    let prime = prime.to_string();
    let mut args: Vec<String> = Vec::new();
    for (s, m) in socks.iter().zip(macs) {
        args.extend(["--port".into(), port("vu", s), "--mac".into(), m.clone()]);
    }
    args.extend(
        [
            "--dst-pair",
            "--core",
            "1",
            "--prime",
            &prime,
            "--prime-after-ms",
            "200",
            "--secs",
            &secs,
            "--json",
            "--quiet",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|&s| s.to_owned()));
    let fwd = ctx.spawn(sb, "l2fwd", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    sb.wait_all_success(&[fwd], Duration::from_secs(ctx.secs) + SLACK)?;
    let v = final_json(sb, fwd, "l2fwd")?;
    number(&v, "mpps")
}

/// `switch_16` / `switch_64ports`, ours: fastpathd with `n` ports, l2fwd looping frames
/// between each pair.
pub fn ours_ports(sb: &mut Sandbox, ctx: &Ctx, n: usize) -> Result<Vec<f64>> {
    let socks = start_fastpathd(sb, ctx, n, &[])?;
    let macs: Vec<String> = (0..n).map(mac).collect();
    Ok(vec![l2fwd(sb, ctx, &socks, &macs, IN_FLIGHT_PER_PAIR, &[])?])
}

/// `switch_16` / `switch_64ports`, the peer: OVS-DPDK (PMD on CPU 0, the NORMAL action: a
/// learning switch) with `n` dpdkvhostuser ports. Up to testpmd's 32 ports, one testpmd
/// (CPU 1) holds them all as virtio_user ports in `mac` forward mode (each port sends from
/// its MAC to its pair's, as our l2fwd with --dst-pair does), one burst of 32 primed on
/// each; its Rx-pps summed over every port. Past 32 ports (a build limit of Debian's DPDK),
/// our l2fwd drives OVS as it drives ours: the same forwarder on both sides.
pub fn peer_ports(sb: &mut Sandbox, ctx: &Ctx, n: usize) -> Result<Vec<f64>> {
    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ovs = Ovs::start(sb, 0, &refs)?;
    let socks: Vec<PathBuf> = names.iter().map(|p| ovs.socket(p)).collect();
    let macs: Vec<String> = (0..n).map(mac).collect();
    if n > TESTPMD_MAX_PORTS {
        return Ok(vec![l2fwd(sb, ctx, &socks, &macs, IN_FLIGHT_PER_PAIR, &[])?]);
    }
    let mut fwd = Testpmd::virtio_user(&socks[0], "mac").prime(IN_FLIGHT_PER_PAIR / 2 / testpmd::BURST);
    fwd.name = "testpmd-ports";
    fwd.vdevs =
        (0..n).map(|i| format!("virtio_user{i},path={},queues=1,mac={}", socks[i].display(), macs[i])).collect();
    fwd.extra = (0..n).map(|i| format!("--eth-peer={i},{}", macs[i ^ 1])).collect();
    let fwd = fwd.spawn(sb)?;
    let ports: Vec<u16> = (0..n as u16).collect();
    testpmd::measure(sb, &[(fwd, &ports)], ctx.secs)
}

/// `macs_10k`: a switch with two ports; l2fwd loops frames between them, those leaving the
/// first port from [`HOSTS`] MACs in turn and those leaving the second addressed to them in
/// turn (10,000 hosts behind one port talking to a server behind the other). Ours with
/// fastpathd, or (`ovs`) the same traffic through OVS-DPDK; both with a MAC table of
/// [`MAC_TABLE_SIZE`].
pub fn macs(sb: &mut Sandbox, ctx: &Ctx, ovs: bool) -> Result<Vec<f64>> {
    let size = MAC_TABLE_SIZE.to_string();
    let (socks, _ovs) = if ovs {
        let o = Ovs::start(sb, 0, &["a", "b"])?;
        o.set_mac_table_size(MAC_TABLE_SIZE)?;
        (vec![o.socket("a"), o.socket("b")], Some(o))
    } else {
        // fastpathd's table size comes from its config file.
        let cfg = sb.path("fastpathd.toml");
        std::fs::write(&cfg, format!("mac_table_size = {size}\n"))?;
        let cfg = cfg.display().to_string();
        (start_fastpathd(sb, ctx, 2, &["--config", &cfg])?, None)
    };
    let macs = [HOSTS_MAC.to_string(), SERVER_MAC.to_string()];
    let hosts = HOSTS.to_string();
    let mpps = l2fwd(sb, ctx, &socks, &macs, IN_FLIGHT_MACS, &["--hosts", &hosts])?;
    if mpps <= 0.0 {
        bail!("no frames went round");
    }
    Ok(vec![mpps])
}

/// How long OVS's PMDs sleep when idle in `mq2w_64` (they share CPU 1 with testpmd).
const SHARED_PMD_SLEEP_US: u32 = 50;
/// Queue pairs of each port in `mq2_64`.
const MQ_PAIRS: u32 = 2;
/// Frames in flight in `mq2_64` (as switch_64): a burst of 32 primed on each queue, 2 each.
const IN_FLIGHT_MQ: u32 = 256;

/// `mq2_64`: a switch with two ports of [`MQ_PAIRS`] queue pairs each; testpmd (CPU 1, one
/// forwarding core polling all four queues) holds both as `virtio_user` ports (`queues=2`)
/// in `mac` mode, each port sending from its MAC to the other's, the primed frames of many
/// flows (`--txonly-multi-flow`: each frame its own source address) so that a switch
/// spreads them over both receive queues of its destination. Ours: fastpathd's one worker
/// on CPU 0 polling every queue pair; or (`ovs`) OVS-DPDK's PMD on CPU 0 with the same
/// ports, whose vhost-user ports take as many queues as the frontend enables. Rx-pps
/// summed over both of testpmd's ports. `workers` 2 (`mq2w_64`): fastpathd `--cores 0,1`
/// (one port on each worker, each port's pair 1 polled by the other worker: half of the
/// frames cross a link), against OVS-DPDK with a PMD on
/// each CPU (each taking some of the four receive queues); testpmd still on CPU 1, beside
/// the second worker or PMD, so both switches give their CPU away when idle: ours yield
/// (`--share-core`), OVS's PMDs sleep up to 50 us (`pmd-maxsleep`).
pub fn mq2(sb: &mut Sandbox, ctx: &Ctx, ovs: bool, workers: u8) -> Result<Vec<f64>> {
    let names = names(2);
    let (socks, _ovs) = if ovs {
        let o = if workers > 1 {
            Ovs::start_pmds(sb, 0b11, SHARED_PMD_SLEEP_US, &["p0", "p1"])?
        } else {
            Ovs::start(sb, 0, &["p0", "p1"])?
        };
        (names.iter().map(|p| o.socket(p)).collect::<Vec<_>>(), Some(o))
    } else {
        let socks = if workers > 1 {
            start_fastpathd_on(sb, ctx, "0,1", 2, &["--share-core"])?
        } else {
            start_fastpathd(sb, ctx, 2, &[])?
        };
        (socks, None)
    };
    let macs: Vec<String> = (0..2).map(mac).collect();
    let per_queue = IN_FLIGHT_MQ / (2 * MQ_PAIRS) / testpmd::BURST;
    let mut fwd = Testpmd::virtio_user(&socks[0], "mac").prime(per_queue);
    fwd.name = "testpmd-mq2";
    fwd.vdevs = (0..2)
        .map(|i| format!("virtio_user{i},path={},queues={MQ_PAIRS},cq=1,mac={}", socks[i].display(), macs[i]))
        .collect();
    fwd.extra = (0..2).map(|i| format!("--eth-peer={i},{}", macs[i ^ 1])).collect();
    fwd.extra.extend([format!("--rxq={MQ_PAIRS}"), format!("--txq={MQ_PAIRS}"), "--txonly-multi-flow".to_string()]);
    let fwd = fwd.spawn(sb)?;
    testpmd::measure(sb, &[(fwd, &[0, 1])], ctx.secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_macs_are_distinct_and_pairs_are_neighbours() {
        let macs: Vec<String> = (0..64).map(mac).collect();
        let set: std::collections::HashSet<&String> = macs.iter().collect();
        assert_eq!(set.len(), 64);
        assert_eq!(mac(0), "02:00:00:00:01:00");
        assert_eq!(mac(63), "02:00:00:00:01:3f");
    }
}
