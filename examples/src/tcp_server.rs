// A smoltcp TCP server with a backlog: N listening sockets on one port, each serving its
// own connection and listening again when it closes, with counters; and the echo service.
//! TCP server sockets on smoltcp: a backlog of listeners and the echo service.
//!
//! smoltcp has no accept queue: a listening socket takes one SYN and becomes that
//! connection, and a SYN that finds no socket listening is answered with a RST. A
//! [`Backlog`] keeps N sockets listening on one port, so N connections are served at
//! once and new ones are accepted while earlier ones close; each socket listens again
//! as soon as its connection is over.

use std::fmt;

use anyhow::{anyhow, Result};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

/// Bytes of each socket's receive and of its send buffer.
pub const SOCKET_BUFFER: usize = 65536;

/// What a [`Backlog`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Connections that got established.
    pub accepted: u64,
    /// Connections established now.
    pub active: u64,
    /// Established connections that are over (closed, reset or timed out).
    pub closed: u64,
    /// Bytes the service moved (for the echo server: bytes echoed).
    pub bytes: u64,
}

impl fmt::Display for ServerCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "accepted {} active {} closed {} bytes {}", self.accepted, self.active, self.closed, self.bytes)
    }
}

/// One listening socket and whether it holds an established connection.
#[derive(Debug)]
struct Slot {
    handle: SocketHandle,
    connected: bool,
}

/// N sockets listening on one TCP port.
#[derive(Debug)]
pub struct Backlog {
    port: u16,
    slots: Vec<Slot>,
    counters: ServerCounters,
}

/// A TCP socket with [`SOCKET_BUFFER`]-byte buffers.
pub fn socket() -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]), tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]))
}

/// Whether a socket in `state` holds a connection that was established.
fn established(state: tcp::State) -> bool {
    use tcp::State as S;
    matches!(state, S::Established | S::FinWait1 | S::FinWait2 | S::CloseWait | S::Closing | S::LastAck | S::TimeWait)
}

impl Backlog {
    /// Adds `n` sockets to `sockets`, all listening on TCP `port`.
    pub fn listen(sockets: &mut SocketSet<'static>, port: u16, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(anyhow!("a backlog of 0 sockets accepts nothing; give at least 1"));
        }
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = socket();
            s.listen(port).map_err(|e| anyhow!("listening on TCP port {port}: {e}"))?;
            slots.push(Slot { handle: sockets.add(s), connected: false });
        }
        Ok(Self { port, slots, counters: ServerCounters::default() })
    }

    /// Goes over every socket: counts connections that were established or are over,
    /// sets a socket whose connection is over listening again, and hands each
    /// established connection to `serve`, which returns the bytes it moved. Returns
    /// whether anything happened (a connection came or went, or bytes moved).
    pub fn service<F>(&mut self, sockets: &mut SocketSet<'_>, mut serve: F) -> Result<bool>
    where
        F: FnMut(&mut tcp::Socket<'_>) -> usize,
    {
        let mut moved = false;
        let mut active = 0;
        for slot in &mut self.slots {
            let s = sockets.get_mut::<tcp::Socket>(slot.handle);
            if !s.is_open() {
                // Closed or TIME-WAIT: the connection, if there was one, is over.
                if slot.connected {
                    slot.connected = false;
                    self.counters.closed += 1;
                    moved = true;
                }
                s.listen(self.port).map_err(|e| anyhow!("listening again on TCP port {}: {e}", self.port))?;
            }
            if !slot.connected && established(s.state()) {
                slot.connected = true;
                self.counters.accepted += 1;
                moved = true;
            }
            if slot.connected {
                active += 1;
                let n = serve(s) as u64;
                self.counters.bytes += n;
                moved |= n > 0;
            }
        }
        self.counters.active = active;
        Ok(moved)
    }

    /// The counters so far.
    pub fn counters(&self) -> ServerCounters {
        self.counters
    }

    /// Sockets in the backlog.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the backlog has no socket (never: [`Backlog::listen`] refuses 0).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Echoes what `s` received, as much as its send buffer takes, through `buf`; closes
/// the socket once the peer closed its side and everything it sent was echoed and
/// acknowledged. Returns the bytes echoed.
pub fn echo(s: &mut tcp::Socket<'_>, buf: &mut [u8]) -> usize {
    let mut echoed = 0;
    while s.can_recv() && s.send_capacity() > s.send_queue() {
        let take = (s.send_capacity() - s.send_queue()).min(buf.len());
        let n = s.recv_slice(&mut buf[..take]).unwrap_or(0);
        if n == 0 {
            break;
        }
        // The room was checked above, so all of it is queued.
        echoed += s.send_slice(&buf[..n]).unwrap_or(0);
    }
    if s.state() == tcp::State::CloseWait && s.send_queue() == 0 && !s.can_recv() {
        s.close();
    }
    echoed
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::{Config, Interface};
    use smoltcp::phy::{Loopback, Medium};
    use smoltcp::time::{Duration, Instant};
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};

    const SERVER: Ipv4Address = Ipv4Address::LOCALHOST;
    const PORT: u16 = 7;

    /// A smoltcp host on a loopback device, talking to itself, with a clock that
    /// moves forward 1 ms a step.
    struct Net {
        iface: Interface,
        dev: Loopback,
        sockets: SocketSet<'static>,
        now: Instant,
    }

    impl Net {
        fn new() -> Self {
            let mut dev = Loopback::new(Medium::Ethernet);
            let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
            let now = Instant::from_millis(0);
            let mut iface = Interface::new(config, &mut dev, now);
            iface.update_ip_addrs(|a| a.push(IpCidr::new(SERVER.into(), 8)).unwrap());
            Self { iface, dev, sockets: SocketSet::new(Vec::new()), now }
        }

        fn step(&mut self, b: &mut Backlog, buf: &mut [u8]) {
            self.now += Duration::from_millis(1);
            self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
            b.service(&mut self.sockets, |s| echo(s, buf)).unwrap();
        }

        fn connect(&mut self, local: u16) -> SocketHandle {
            let h = self.sockets.add(socket());
            let remote = IpEndpoint::new(IpAddress::Ipv4(SERVER), PORT);
            self.sockets.get_mut::<tcp::Socket>(h).connect(self.iface.context(), remote, local).unwrap();
            h
        }

        fn client(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(h)
        }
    }

    #[test]
    fn every_socket_of_the_backlog_serves_a_connection_and_listens_again_when_it_closes() {
        let mut net = Net::new();
        let mut b = Backlog::listen(&mut net.sockets, PORT, 3).unwrap();
        let mut buf = vec![0u8; 4096];
        for round in 0..2u16 {
            let clients: Vec<SocketHandle> = (0..3).map(|i| net.connect(40_000 + round * 10 + i)).collect();
            for _ in 0..20 {
                net.step(&mut b, &mut buf);
            }
            assert_eq!(b.counters().active, 3, "round {round}: {}", b.counters());
            for (i, h) in clients.iter().enumerate() {
                let msg = format!("hello from {round}/{i}");
                assert_eq!(net.client(*h).send_slice(msg.as_bytes()).unwrap(), msg.len());
            }
            for _ in 0..20 {
                net.step(&mut b, &mut buf);
            }
            for (i, h) in clients.iter().enumerate() {
                let mut got = [0u8; 64];
                let n = net.client(*h).recv_slice(&mut got).unwrap();
                assert_eq!(&got[..n], format!("hello from {round}/{i}").as_bytes());
                net.client(*h).close();
            }
            for _ in 0..50 {
                net.step(&mut b, &mut buf);
            }
            for h in clients {
                net.sockets.remove(h);
            }
            let c = b.counters();
            let round = u64::from(round) + 1;
            assert_eq!((c.accepted, c.active, c.closed), (3 * round, 0, 3 * round), "{c}");
            assert_eq!(c.bytes, 3 * round * "hello from 0/0".len() as u64, "{c}");
        }
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn a_connection_beyond_the_backlog_is_refused() {
        let mut net = Net::new();
        let mut b = Backlog::listen(&mut net.sockets, PORT, 2).unwrap();
        let mut buf = vec![0u8; 4096];
        let clients: Vec<SocketHandle> = (0..3).map(|i| net.connect(41_000 + i)).collect();
        for _ in 0..20 {
            net.step(&mut b, &mut buf);
        }
        let c = b.counters();
        assert_eq!((c.accepted, c.active), (2, 2), "{c}");
        let open: Vec<bool> = clients.iter().map(|h| net.client(*h).may_send()).collect();
        assert_eq!(open, [true, true, false]);
    }

    #[test]
    fn an_empty_backlog_or_port_zero_is_refused_with_the_reason() {
        let mut sockets = SocketSet::new(Vec::new());
        let e = Backlog::listen(&mut sockets, PORT, 0).unwrap_err().to_string();
        assert!(e.contains("backlog of 0"), "{e}");
        let e = Backlog::listen(&mut sockets, 0, 1).unwrap_err().to_string();
        assert!(e.contains("TCP port 0"), "{e}");
    }

    #[test]
    fn counters_read_as_one_line() {
        let c = ServerCounters { accepted: 5, active: 2, closed: 3, bytes: 1000 };
        assert_eq!(c.to_string(), "accepted 5 active 2 closed 3 bytes 1000");
    }
}
