// pktgen: sends fixed-size test frames (sequence number and checksum inside)
// at full speed or a given rate, with live rates.
//! Packet generator.

use anyhow::Context;
use anyhow::{bail, Result};
use clap::Parser;
use fastpath_examples::frame::{nth_mac, parse_mac, set_src, Template, MIN_FRAME};
use fastpath_examples::gso::GsoFrame;
use fastpath_examples::{
    discover_port, idle, init_logging, make_pool, mpps, open, own_mac_or, pin, report, schedule_from, send_budget,
    stop_flag, wait_link, Common, Meter, DEFAULT_SRC_MAC,
};
use netlib::pool::{burst_vec, PoolOptions, MAX_DATA_ROOM};
use netlib::virtio_user::{VirtioUser, VirtioUserOptions};
use netlib::vnet_hdr::VIRTIO_NET_F_HOST_TSO4;
use netlib::{LinkState, PktPool, Port, PortSpec};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Sends test frames on a port.
#[derive(Debug, Parser)]
#[command(version, about = "fastpath packet generator: fixed-size frames with sequence numbers and checksums")]
struct Args {
    /// Port: vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH or vf:PCI (default: the
    /// first port in the container's fastpath config).
    #[arg(long)]
    port: Option<PortSpec>,
    /// Frame size in bytes (60..=9018, no FCS; past 1518 with an --mtu that fits it).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Frames to send (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:02")]
    dst_mac: String,
    /// Source MAC (default: the port's MAC from the container's fastpath config, else
    /// 02:00:00:00:00:01).
    #[arg(long, visible_alias = "mac")]
    src_mac: Option<String>,
    /// Send from this many source MACs in turn: the source MAC and the ones after it
    /// (counting in the low three bytes), as that many hosts behind one port would
    /// (1..=16777216).
    #[arg(long, default_value_t = 1, value_name = "N")]
    src_macs: u32,
    /// Send TCP/IPv4 GSO frames of --size bytes (up to 65400) that ask the port's backend
    /// to cut them into segments of MSS payload bytes and checksum each (TSO): on a vu: or
    /// vu-packed: port whose backend offers HOST_TSO4 (fastpathd's ports with offloads on).
    /// The frames carry no sequence numbers: a sink counts them, it does not --check them.
    #[arg(long, value_name = "MSS")]
    gso_mss: Option<u16>,
    /// The GSO frames' IPv4 source address.
    #[arg(long, default_value = "10.0.0.1", requires = "gso_mss")]
    src_ip: Ipv4Addr,
    /// The GSO frames' IPv4 destination address.
    #[arg(long, default_value = "10.0.0.2", requires = "gso_mss")]
    dst_ip: Ipv4Addr,
    #[command(flatten)]
    common: Common,
}

fn main() -> Result<()> {
    init_logging();
    let mut a = Args::parse();
    let spec = discover_port(a.port.take(), &mut a.common)?;
    let c = &a.common;
    let src = own_mac_or(a.src_mac.as_deref(), "--src-mac", &spec, DEFAULT_SRC_MAC)?;
    let dst = parse_mac(&a.dst_mac).map_err(|e| anyhow::anyhow!("--dst-mac: {e}"))?;
    let ips = (a.src_ip, a.dst_ip);
    let gso = a.gso_mss.map(|mss| GsoFrame::new(a.size, mss, dst, src, ips)).transpose().map_err(anyhow::Error::msg)?;
    // The sequence template is not used for GSO frames; a valid size keeps it simple.
    let tpl_size = if gso.is_some() { MIN_FRAME } else { a.size };
    let tpl = Template::new(tpl_size, dst, src).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
    if !(1..=1 << 24).contains(&a.src_macs) {
        bail!("--src-macs {} is not in 1..=16777216", a.src_macs);
    }
    if a.rate < 0.0 {
        bail!("--rate {} must not be negative", a.rate);
    }
    pin(c.core)?;
    let stop = stop_flag();
    let mut pool = match &gso {
        Some(g) => gso_pool(c, g)?,
        None => make_pool(c)?,
    };
    if tpl.len() > usize::from(pool.data_room()) {
        bail!(
            "--size {} is more than a buffer of --mtu {} holds ({} bytes): raise --mtu",
            a.size,
            c.mtu,
            pool.data_room()
        );
    }
    let mut ports = vec![match &gso {
        Some(_) => open_tso(&spec, &mut pool, c)?,
        None => open(&spec, &mut pool, c)?,
    }];
    wait_link(&mut ports, &mut pool, c, &stop)?;
    let port = &mut ports[0];
    let mut burst = burst_vec();
    let mut rx = burst_vec();
    let mut seq: u64 = 0;
    // Buffers that already hold the template's payload: only the headers change.
    let mut filled = vec![false; pool.capacity() as usize];
    let mut last_resets = port.counters().resets;
    let mut sent: u64 = 0;
    let mut meter = Meter::new("pktgen", c);
    let start = Instant::now();
    // The --rate schedule: restarted after the link was down (see schedule_from).
    let mut schedule = start;
    let mut link_was_down = false;
    let mut loops: u32 = 0;
    // The index of the next frame's source MAC among --src-macs.
    let mut mac_index: u32 = 0;
    while !stop.load(Ordering::Relaxed) && (a.count == 0 || sent < a.count) && meter.tick(sent) {
        loops = loops.wrapping_add(1);
        if loops.is_multiple_of(64) {
            // Drain anything that comes back so the peer never stalls on us.
            port.rx_burst(&mut pool, &mut rx);
            for p in &rx {
                filled[p.index() as usize] = false;
            }
            pool.free_all(&mut rx);
            // After a reconnect, buffers that sat in the receive ring may hold anything.
            let resets = port.counters().resets;
            if resets != last_resets {
                last_resets = resets;
                filled.fill(false);
            }
        }
        if link_was_down && port.link() == LinkState::Up {
            link_was_down = false;
            schedule = schedule_from(sent + burst.len() as u64, a.rate);
        }
        let want = send_budget(burst.capacity() - burst.len(), sent + burst.len() as u64, a.count, a.rate, schedule);
        let before = burst.len();
        pool.alloc_bulk(&mut burst, want);
        for p in &mut burst[before..] {
            let fresh = !std::mem::replace(&mut filled[p.index() as usize], true);
            if let Some(g) = &gso {
                let buf = pool.set_len(p, g.bytes.len());
                if fresh {
                    buf.copy_from_slice(&g.bytes);
                }
                pool.set_net_hdr(p, &g.hdr);
                seq += 1;
                continue;
            }
            let buf = pool.set_len(p, tpl.len());
            if fresh {
                tpl.write(buf, seq);
            } else {
                tpl.write_header(buf, seq);
            }
            if a.src_macs > 1 {
                set_src(buf, &nth_mac(&src, mac_index));
                mac_index += 1;
                if mac_index == a.src_macs {
                    mac_index = 0;
                }
            }
            seq += 1;
        }
        if burst.is_empty() {
            // Nothing to send (rate limit, or every buffer in flight): a send of
            // nothing still reclaims what the peer has finished with.
            port.tx_burst(&mut pool, &mut burst);
            if a.rate > 0.0 {
                // Ahead of the schedule: give the CPU away until about a burst is due.
                let burst_secs = (32.0 / a.rate).min(0.0002);
                std::thread::sleep(std::time::Duration::from_secs_f64(burst_secs));
            } else {
                idle(c);
            }
            continue;
        }
        let took = port.tx_burst(&mut pool, &mut burst);
        sent += took as u64;
        // The switch went away (restarted, upgraded): the port reconnects by itself, and
        // the stream resumes at its rate when it is back.
        link_was_down |= took == 0 && port.link() == LinkState::Down;
        if took == 0 {
            idle(c);
        }
    }
    pool.free_all(&mut burst);
    let secs = start.elapsed().as_secs_f64();
    // Don't close while frames are still in the ring: the peer would lose them.
    if !port.flush_tx(&mut pool, std::time::Duration::from_secs(2)) {
        tracing::warn!("{}: the peer did not take every frame within 2 s", port.name());
    }
    report(
        c,
        &serde_json::json!({"role":"pktgen","sent":sent,"secs":secs,"mpps":mpps(sent, secs),
        "size":a.size,"src_macs":a.src_macs,"gso_mss":a.gso_mss,
        "segments":gso.as_ref().map(|g| g.segments() as u64 * sent),"port":spec.to_string(),"counters":port.counters()}),
    );
    Ok(())
}

/// A pool whose buffers hold the GSO frame `g`: enough of them for both rings and two
/// bursts, not --nbufs (each is up to 64 KiB: with --queue-size 128, 21 MB).
fn gso_pool(c: &Common, g: &GsoFrame) -> Result<PktPool> {
    let room = (g.bytes.len().next_multiple_of(64)).min(usize::from(MAX_DATA_ROOM)) as u16;
    let opts = PoolOptions {
        nbufs: 2 * u32::from(c.queue_size) + 64,
        hugedir: Some(c.hugedir.clone().into()),
        data_room: room,
    };
    PktPool::new(&opts).context("creating the packet pool for GSO frames")
}

/// Opens `spec`, a virtio-user port, with transmit offloads; an error unless the backend
/// took TSO over IPv4.
fn open_tso(spec: &PortSpec, pool: &mut PktPool, c: &Common) -> Result<Box<dyn Port>> {
    let (path, packed) = match spec {
        PortSpec::VirtioUser(p) => (p, false),
        PortSpec::VirtioUserPacked(p) => (p, true),
        other => bail!("--gso-mss needs a vu: or vu-packed: port (virtio-user with transmit offloads), not {other}"),
    };
    let opts = VirtioUserOptions { queue_size: c.queue_size, packed, tx_offloads: true, ..Default::default() };
    let port = VirtioUser::open(path, pool, opts).with_context(|| format!("opening port {spec}"))?;
    if port.tx_features() & VIRTIO_NET_F_HOST_TSO4 == 0 {
        bail!(
            "--gso-mss: the backend of {spec} did not take TSO (transmit offloads {:#x}): \
             turn the port's offloads on (fastpathctl add-port --offloads on)",
            port.tx_features()
        );
    }
    Ok(Box::new(port))
}
