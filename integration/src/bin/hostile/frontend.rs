// The hand-driven vhost-user frontend every hostile case starts from: the connection,
// the polite start, memory tables and vrings, each easy to get wrong on purpose.
//! A vhost-user frontend speaking the protocol by hand.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netlib::mem::Region;
use netlib::ring::DriverRing;
use netlib::spec::{PACKED_BASE_WRAP, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use netlib::vhost_user::message::{encode, FLAG_VERSION};
use netlib::vhost_user::{Conn, MemRegion, Request, VringAddr, VringState};

/// Ring entries of a case's vrings unless it says otherwise.
pub const QSIZE: u16 = 256;
/// How long a case keeps its connection open for the switch to find the fault and close it.
pub const HOLD: Duration = Duration::from_secs(5);

/// One connection to the switch.
pub struct Hostile {
    pub conn: Conn,
    /// The rings' SET_VRING_BASE value (a packed ring's starts with its wrap counter set).
    base: u32,
}

impl Hostile {
    /// Connects to `path`, retrying for up to `within` (the socket may not be there yet).
    pub fn connect(path: &Path, within: Duration) -> Result<Self> {
        let deadline = Instant::now() + within;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(e).with_context(|| format!("connect {}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        Ok(Self { conn: Conn::new(s)?, base: 0 })
    }

    /// Keeps our end open until the switch closes the connection (as it does when it resets the
    /// port on a fault) or `t` passes: either way it has read everything we sent, and a switch
    /// that resets the port must do so itself, not because we went away. Whether it closed.
    pub fn hold_until_closed(&mut self, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            // Ok: a reply to one of our requests; Err: closed (or time is up).
            match self.conn.recv_timeout(left) {
                Ok(_) => {}
                Err(e) => return !matches!(e, netlib::vhost_user::ConnError::Timeout(_)),
            }
        }
        false
    }

    /// Whether the switch has closed the connection (replies that came are dropped). Never waits.
    pub fn closed(&mut self) -> bool {
        loop {
            match self.conn.try_recv() {
                Ok(Some(_)) => {}
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }

    pub fn send(&self, req: Request, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.conn.send(req as u32, FLAG_VERSION, payload, fds).map_err(Into::into)
    }

    /// Sends a GET_* request and waits (up to 5 s) for its answer. The switch answers in
    /// order, so an answer also says it has handled everything sent before.
    pub fn get(&mut self, req: Request) -> Result<u64> {
        self.send(req, &[], &[])?;
        let m = self.conn.recv_timeout(Duration::from_secs(5))?;
        let mut b = [0u8; 8];
        b.copy_from_slice(m.payload.get(..8).context("short reply")?);
        Ok(u64::from_le_bytes(b))
    }

    /// The polite start: features and owner, no protocol features (no acks).
    pub fn start(&mut self) -> Result<()> {
        self.start_with(0)
    }

    /// The polite start, also acking the `extra` features (which the backend must offer).
    pub fn start_with(&mut self, extra: u64) -> Result<()> {
        let f = self.get(Request::GetFeatures)?;
        if f & VIRTIO_F_VERSION_1 == 0 || f & extra != extra {
            bail!("backend lacks VERSION_1 or {extra:#x} (offers {f:#x})");
        }
        let ours = (VIRTIO_F_VERSION_1 | extra) & !VHOST_USER_F_PROTOCOL_FEATURES;
        self.send(Request::SetOwner, &[], &[])?;
        self.send(Request::SetFeatures, &encode::u64(ours), &[])
    }

    /// The polite start with packed rings (VIRTIO_F_RING_PACKED): a [`DriverRing`]'s
    /// descriptor table is then the packed ring, its avail and used areas the driver's
    /// and the device's event suppression structures.
    /// `extra`: features acked besides VERSION_1 and RING_PACKED.
    pub fn start_packed(&mut self, extra: u64) -> Result<()> {
        let f = self.get(Request::GetFeatures)?;
        if f & VIRTIO_F_RING_PACKED == 0 {
            bail!("backend does not offer RING_PACKED");
        }
        self.base = PACKED_BASE_WRAP;
        self.send(Request::SetOwner, &[], &[])?;
        self.send(Request::SetFeatures, &encode::u64(VIRTIO_F_VERSION_1 | VIRTIO_F_RING_PACKED | extra), &[])
    }

    /// A region of ours as the switch sees it (its address is our own).
    pub fn region(r: &Region) -> MemRegion {
        let a = r.map().addr();
        MemRegion { guest_phys_addr: a, memory_size: r.map().len() as u64, userspace_addr: a, mmap_offset: 0 }
    }

    /// A full, valid setup of both rings with `data` shared, each vring's call fd a fresh
    /// eventfd.
    pub fn rings(&mut self, rx: &DriverRing, tx: &DriverRing, data: &Region) -> Result<()> {
        self.rings_with(rx, tx, &[data], None)
    }

    /// A full setup of both rings with the regions `data` shared; `call` (when given) is
    /// both vrings' call fd, else each gets a fresh eventfd. The rings start at once.
    pub fn rings_with(
        &mut self,
        rx: &DriverRing,
        tx: &DriverRing,
        data: &[&Region],
        call: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        let mut regs = vec![Self::region(rx.region()), Self::region(tx.region())];
        let mut fds = vec![rx.region().fd(), tx.region().fd()];
        for d in data {
            regs.push(Self::region(d));
            fds.push(d.fd());
        }
        self.send(Request::SetMemTable, &encode::mem_table(&regs), &fds)?;
        for (i, r) in [rx, tx].iter().enumerate() {
            let l = r.layout();
            let i = i as u32;
            self.send(Request::SetVringNum, &encode::state(VringState { index: i, num: u32::from(r.size()) }), &[])?;
            self.send(Request::SetVringBase, &encode::state(VringState { index: i, num: self.base }), &[])?;
            let a = VringAddr { index: i, flags: 0, desc: l.desc, used: l.used, avail: l.avail, log: 0 };
            self.send(Request::SetVringAddr, &encode::addr(a), &[])?;
            let ev = nix::sys::eventfd::EventFd::new()?;
            // Kick at once: the switch starts a ring on its first kick.
            ev.write(1)?;
            self.send(Request::SetVringKick, &encode::u64(u64::from(i)), &[ev.as_fd()])?;
            self.send(Request::SetVringCall, &encode::u64(u64::from(i)), &[call.unwrap_or(ev.as_fd())])?;
        }
        Ok(())
    }
}

/// Sends one message on `conn` once its socket has room, waiting (asleep, up to 5 s) while
/// it has none: a switch that throttles our messages holds us here.
pub fn send_when_writable(conn: &Conn, req: Request, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pfd = [PollFd::new(conn.fd(), PollFlags::POLLOUT)];
    if poll(&mut pfd, PollTimeout::from(5000u16))? == 0 {
        bail!("the switch took no message for 5 s");
    }
    conn.send(req as u32, FLAG_VERSION, payload, fds).map_err(Into::into)
}
