// smoltcp on netlib: a `smoltcp::phy::Device` over any `Port`, and a small host
// (interface + sockets + device) that the udp_echo, udp_rr and tcp_echo examples share.
//! smoltcp over a netlib port.
//!
//! [`PortDevice`] turns a [`Port`] and its pool into a smoltcp Ethernet device:
//! received frames are copied once out of their buffer (smoltcp's receive and
//! transmit tokens are alive at the same time, and both would need the pool)
//! and frames to send are written by smoltcp straight into pool buffers. When
//! the port's ring and the device's backlog are both full, the device refuses
//! to transmit, so smoltcp waits instead of sending into a drop.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, Result};
use netlib::pool::{burst_vec, BURST};
use netlib::{Packet, PktPool, Port, PortCounters, PortSpec};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

use crate::{discover_port, make_pool, open, own_mac, pin, stop_flag, wait_link, Common};

/// The Ethernet header before the IP packet: a frame of an IP MTU of `m` is `m` + this.
const ETHERNET_HEADER: usize = 14;
/// Frames the device keeps waiting when the port's ring is full, before dropping.
const TX_BACKLOG: usize = 256;

/// What the device moved, beyond the port's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames handed to smoltcp.
    pub rx: u64,
    /// Frames smoltcp produced.
    pub tx: u64,
    /// Frames dropped: no free buffer, too big, or the backlog was full.
    pub tx_dropped: u64,
    /// Received frames dropped for being bigger than the device's largest frame.
    pub rx_dropped: u64,
}

/// A smoltcp Ethernet device over a netlib port.
pub struct PortDevice {
    port: Box<dyn Port>,
    pool: PktPool,
    rx_burst: Vec<Packet>,
    rx_ready: VecDeque<Packet>,
    rx_copy: Vec<u8>,
    tx_spare: Vec<u8>,
    tx_backlog: Vec<Packet>,
    stats: DeviceStats,
    /// The largest frame (no FCS) it takes and sends: the port's MTU and the Ethernet header.
    max_frame: usize,
}

impl PortDevice {
    /// A device sending and receiving on `port`, whose buffers come from `pool`, with IP
    /// packets of up to `mtu` bytes (`--mtu`; the pool's buffers must hold such a frame).
    pub fn new(port: Box<dyn Port>, pool: PktPool, mtu: u16) -> Self {
        let max_frame = usize::from(mtu) + ETHERNET_HEADER;
        Self {
            port,
            pool,
            rx_burst: burst_vec(),
            rx_ready: VecDeque::with_capacity(BURST),
            rx_copy: vec![0; max_frame],
            tx_spare: vec![0; max_frame],
            tx_backlog: Vec::with_capacity(TX_BACKLOG + 1),
            stats: DeviceStats::default(),
            max_frame,
        }
    }

    /// The port's counters.
    pub fn counters(&self) -> PortCounters {
        self.port.counters()
    }

    /// The device's own counters.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// The port.
    pub fn port_mut(&mut self) -> &mut dyn Port {
        &mut *self.port
    }

    /// Sends frames the port's ring had no room for earlier; true if all are out.
    pub fn flush(&mut self) -> bool {
        flush(&mut *self.port, &mut self.pool, &mut self.tx_backlog)
    }
}

fn flush(port: &mut dyn Port, pool: &mut PktPool, backlog: &mut Vec<Packet>) -> bool {
    if !backlog.is_empty() {
        port.tx_burst(pool, backlog);
    }
    backlog.is_empty()
}

/// A received frame, already copied out of its buffer.
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

/// The right to send one frame.
pub struct TxToken<'a> {
    port: &'a mut dyn Port,
    pool: &'a mut PktPool,
    backlog: &'a mut Vec<Packet>,
    spare: &'a mut [u8],
    stats: &'a mut DeviceStats,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let buf = if len <= usize::from(self.pool.data_room()) && self.backlog.len() < TX_BACKLOG {
            self.pool.alloc()
        } else {
            None
        };
        let Some(mut p) = buf else {
            // smoltcp still builds the frame; it goes nowhere.
            self.stats.tx_dropped += 1;
            let n = len.min(self.spare.len());
            return f(&mut self.spare[..n]);
        };
        let r = f(self.pool.set_len(&mut p, len));
        self.stats.tx += 1;
        self.backlog.push(p);
        flush(self.port, self.pool, self.backlog);
        r
    }
}

impl phy::Device for PortDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let p = loop {
            if self.rx_ready.is_empty() {
                if self.port.rx_burst(&mut self.pool, &mut self.rx_burst) == 0 {
                    return None;
                }
                self.rx_ready.extend(self.rx_burst.drain(..));
            }
            let p = self.rx_ready.pop_front()?;
            if p.len() <= self.max_frame {
                break p;
            }
            self.stats.rx_dropped += 1;
            self.pool.free(p);
        };
        let len = p.len();
        self.rx_copy[..len].copy_from_slice(self.pool.data(&p));
        self.pool.free(p);
        self.stats.rx += 1;
        Some((
            RxToken { frame: &self.rx_copy[..len] },
            TxToken {
                port: &mut *self.port,
                pool: &mut self.pool,
                backlog: &mut self.tx_backlog,
                spare: &mut self.tx_spare,
                stats: &mut self.stats,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        // A full backlog holds smoltcp back (it sends again on a later poll) rather than
        // having it build frames that would be dropped and retransmitted.
        if self.tx_backlog.len() >= TX_BACKLOG {
            self.flush();
            if self.tx_backlog.len() >= TX_BACKLOG {
                return None;
            }
        }
        Some(TxToken {
            port: &mut *self.port,
            pool: &mut self.pool,
            backlog: &mut self.tx_backlog,
            spare: &mut self.tx_spare,
            stats: &mut self.stats,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.max_frame;
        caps.max_burst_size = Some(BURST);
        caps
    }
}

impl Drop for PortDevice {
    fn drop(&mut self) {
        self.pool.free_all(&mut self.tx_backlog);
        self.pool.free_all(&mut self.rx_burst);
        for p in self.rx_ready.drain(..) {
            self.pool.free(p);
        }
    }
}

/// Flags of the smoltcp examples: the port and the host's addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Port: vu:PATH, vu-server:PATH, vhost:PATH, vhost-client:PATH or vf:PCI (default: the
    /// port in the container's fastpath config, /run/fastpath/config.json).
    #[arg(long)]
    pub port: Option<PortSpec>,
    /// This host's IPv4 address and prefix, e.g. 10.0.0.2/24.
    #[arg(long)]
    pub ip: Option<String>,
    /// This host's MAC (default: the port's MAC from the container's fastpath config, else
    /// 02:00 followed by the IPv4 address).
    #[arg(long)]
    pub mac: Option<String>,
    /// Default gateway.
    #[arg(long)]
    pub gateway: Option<String>,
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Address, u8), String> {
    let (a, l) = s.split_once('/').ok_or_else(|| format!("'{s}' is not ADDRESS/PREFIX like 10.0.0.2/24"))?;
    let addr: std::net::Ipv4Addr = a.parse().map_err(|_| format!("'{s}': '{a}' is not an IPv4 address"))?;
    let len: u8 =
        l.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("'{s}': prefix length '{l}' is not 0..=32"))?;
    Ok((addr, len))
}

/// A smoltcp host on a netlib port: interface, device and sockets.
pub struct Host {
    /// The interface (addresses, ARP cache, routes).
    pub iface: Interface,
    /// The device.
    pub dev: PortDevice,
    /// The sockets.
    pub sockets: SocketSet<'static>,
    idle_sleep: Duration,
    last: (u64, u64),
}

impl Host {
    /// Opens the port of `h` (pinning first, waiting for the link) and sets up
    /// the interface with `h`'s addresses.
    /// Without `--port`, the port (and core) come from the container's fastpath config.
    pub fn open(h: &HostArgs, c: &Common) -> Result<Self> {
        let mut c = c.clone();
        let spec = discover_port(h.port.clone(), &mut c)?;
        let c = &c;
        let cidr = h.ip.as_deref().ok_or_else(|| anyhow!("--ip ADDRESS/PREFIX is required with --port"))?;
        let (addr, len) = parse_cidr(cidr).map_err(|e| anyhow!("--ip: {e}"))?;
        let o = addr.octets();
        let mac = own_mac(h.mac.as_deref(), "--mac", &spec)?.unwrap_or([2, 0, o[0], o[1], o[2], o[3]]);
        let gateway = h
            .gateway
            .as_deref()
            .map(|g| g.parse::<std::net::Ipv4Addr>().map_err(|_| anyhow!("--gateway: '{g}' is not an IPv4 address")))
            .transpose()?;
        pin(c.core)?;
        let stop = stop_flag();
        let mut pool = make_pool(c)?;
        let mut ports = [open(&spec, &mut pool, c)?];
        wait_link(&mut ports, &mut pool, c, &stop)?;
        let [port] = ports;
        let mut dev = PortDevice::new(port, pool, c.mtu);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed();
        let mut iface = Interface::new(config, &mut dev, Instant::now());
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(addr.into(), len));
        });
        if let Some(g) = gateway {
            iface.routes_mut().add_default_ipv4_route(g).map_err(|e| anyhow!("--gateway: {e}"))?;
        }
        Ok(Self {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            idle_sleep: Duration::from_micros(c.idle_sleep_us),
            last: (0, 0),
        })
    }

    /// Runs the stack once: all received frames in, all queued frames out.
    /// Returns whether any frame moved.
    pub fn poll(&mut self) -> bool {
        self.iface.poll(Instant::now(), &mut self.dev, &mut self.sockets);
        self.dev.flush();
        let s = self.dev.stats();
        let now = (s.rx, s.tx);
        let moved = now != self.last;
        self.last = now;
        moved
    }

    /// Sleeps `--idle-sleep-us` (or until smoltcp has a timer due, if sooner);
    /// call when [`Host::poll`] moved nothing.
    pub fn idle(&mut self) {
        if self.idle_sleep.is_zero() {
            return;
        }
        let d = match self.iface.poll_delay(Instant::now(), &self.sockets) {
            Some(d) => Duration::from_micros(d.total_micros()).min(self.idle_sleep),
            None => self.idle_sleep,
        };
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
}

/// Whether Ctrl-C (SIGINT/SIGTERM) was asked.
pub fn stopped() -> bool {
    stop_flag().load(Ordering::Relaxed)
}

/// A seed for smoltcp's TCP initial sequence numbers and ports.
fn seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    crate::flow::mix64(t ^ u64::from(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.2/24").unwrap(), (std::net::Ipv4Addr::new(10, 0, 0, 2), 24));
        assert!(parse_cidr("10.0.0.2").unwrap_err().contains("ADDRESS/PREFIX"));
        assert!(parse_cidr("10.0.0/24").unwrap_err().contains("'10.0.0' is not an IPv4"));
        assert!(parse_cidr("10.0.0.2/40").unwrap_err().contains("prefix length '40'"));
    }
}
