// A vhost-user connection: sends a message with its fds in one sendmsg, and
// receives messages incrementally so that a slow or hostile peer never blocks us.
//! The socket side of vhost-user.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::message::{Header, MAX_FDS, MAX_PAYLOAD};

/// Errors on a vhost-user connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// An I/O error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// More fds than a message may carry, or truncated control data.
    #[error("too many fds with one message (more than {MAX_FDS})")]
    TooManyFds,
    /// Payload size over the limit.
    #[error("payload size {0} exceeds {MAX_PAYLOAD}")]
    TooLarge(u32),
    /// No complete message in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The peer does not read what we send (its socket buffer is full).
    #[error("the peer is not reading its socket (a reply could not be sent within {0:?})")]
    PeerNotReading(Duration),
}

/// Most fds the kernel passes with one message (`SCM_MAX_FD`): room for all of them
/// is given to every receive, so the kernel never truncates the control data and
/// every fd it installs in our table is ours to close.
const SCM_MAX_FD: usize = 253;

impl From<Errno> for ConnError {
    fn from(e: Errno) -> Self {
        ConnError::Io(e.into())
    }
}

/// A received message before decoding.
#[derive(Debug)]
pub struct RawMsg {
    /// Its header.
    pub header: Header,
    /// Its payload (exactly `header.size` bytes).
    pub payload: Vec<u8>,
    /// Fds that came with it.
    pub fds: Vec<OwnedFd>,
}

/// One vhost-user connection.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// How long a send may wait for room in the peer's socket buffer.
    send_wait: Duration,
}

/// How long a send waits for the peer to make room, unless told otherwise.
const DEFAULT_SEND_WAIT: Duration = Duration::from_secs(2);

impl Conn {
    /// Wraps a connected stream; it is put in non-blocking mode. A send waits up to
    /// 2 s for room in the peer's socket buffer.
    pub fn new(stream: UnixStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(Header::LEN + MAX_PAYLOAD as usize),
            fds: Vec::new(),
            send_wait: DEFAULT_SEND_WAIT,
        })
    }

    /// Sets how long a send may wait for room in the peer's socket buffer. A backend
    /// gives zero: a peer that does not read its replies is cut off at once, and
    /// never holds up the thread that serves the other ports.
    #[must_use]
    pub fn with_send_wait(mut self, wait: Duration) -> Self {
        self.send_wait = wait;
        self
    }

    /// The socket's fd (for poll).
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// The socket's fd, borrowed (for poll).
    pub fn fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stream)
    }

    /// Sends one message with `fds` attached.
    pub fn send(&self, request: u32, flags: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ConnError> {
        let h = Header { request, flags, size: payload.len() as u32 }.encode();
        let iov = [IoSlice::new(&h), IoSlice::new(payload)];
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        let total = h.len() + payload.len();
        let deadline = Instant::now() + self.send_wait;
        let full = || ConnError::PeerNotReading(self.send_wait);
        let mut sent = loop {
            match sendmsg::<()>(self.stream.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(n) => break n,
                Err(Errno::EAGAIN) if Instant::now() < deadline => std::thread::yield_now(),
                Err(Errno::EAGAIN) => return Err(full()),
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(ConnError::Closed),
                Err(e) => return Err(e.into()),
            }
        };
        // The rest (rare: a full socket buffer) goes without fds.
        let all: Vec<u8> = h.iter().chain(payload).copied().collect();
        while sent < total {
            match nix::sys::socket::send(self.stream.as_raw_fd(), &all[sent..], MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => sent += n,
                Err(Errno::EAGAIN) if Instant::now() < deadline => std::thread::yield_now(),
                Err(Errno::EAGAIN) => return Err(full()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads what has arrived; returns a message once one is complete, `None`
    /// if it is still incomplete. Never blocks.
    pub fn try_recv(&mut self) -> Result<Option<RawMsg>, ConnError> {
        loop {
            let have = self.buf.len();
            let want = if have < Header::LEN {
                Header::LEN
            } else {
                let h = self.header();
                if h.size > MAX_PAYLOAD {
                    return Err(ConnError::TooLarge(h.size));
                }
                Header::LEN + h.size as usize
            };
            if have == want {
                let header = self.header();
                let payload = self.buf[Header::LEN..].to_vec();
                self.buf.clear();
                return Ok(Some(RawMsg { header, payload, fds: std::mem::take(&mut self.fds) }));
            }
            self.buf.resize(want, 0);
            let mut cmsg_space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
            let res = {
                let mut iov = [IoSliceMut::new(&mut self.buf[have..want])];
                recvmsg::<()>(
                    self.stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg_space),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map(|m| {
                    let mut fds = Vec::new();
                    // With room for SCM_MAX_FD fds the control data is never truncated
                    // (nix refuses to walk truncated data, which would leave the fds
                    // the kernel did install unclosed).
                    for c in m.cmsgs().into_iter().flatten() {
                        if let ControlMessageOwned::ScmRights(v) = c {
                            fds.extend(v);
                        }
                    }
                    (m.bytes, fds, m.flags.contains(MsgFlags::MSG_CTRUNC))
                })
            };
            match res {
                Ok((n, fds, truncated)) => {
                    for fd in fds {
                        // SAFETY: SCM_RIGHTS fds are fresh descriptors now owned by us.
                        self.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                    self.buf.truncate(have + n);
                    if truncated || self.fds.len() > MAX_FDS {
                        // Closed now, whatever happens to the connection.
                        self.fds.clear();
                        return Err(ConnError::TooManyFds);
                    }
                    if n == 0 {
                        return Err(ConnError::Closed);
                    }
                }
                Err(Errno::EAGAIN) => {
                    self.buf.truncate(have);
                    return Ok(None);
                }
                Err(Errno::ECONNRESET) => return Err(ConnError::Closed),
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e.into());
                }
            }
        }
    }

    fn header(&self) -> Header {
        let mut b = [0u8; 12];
        b.copy_from_slice(&self.buf[..Header::LEN]);
        Header::decode(&b)
    }

    /// Waits up to `timeout` for a complete message.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<RawMsg, ConnError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnError::Timeout(timeout));
            }
            let ms = left.as_millis().clamp(1, 1000) as u16;
            // SAFETY-free: poll through nix on our own fd.
            let fd = self.stream.as_fd_borrowed();
            let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}
impl AsFdBorrowed for UnixStream {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn message_with_fds_roundtrip() {
        let (a, b) = UnixStream::pair().unwrap();
        let a = Conn::new(a).unwrap();
        let mut b = Conn::new(b).unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send(5, 1, &[1, 2, 3], &[f.as_fd(), f.as_fd()]).unwrap();
        let m = b.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(m.header.request, 5);
        assert_eq!(m.payload, vec![1, 2, 3]);
        assert_eq!(m.fds.len(), 2);
    }

    #[test]
    fn partial_message_does_not_block() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut b = Conn::new(b).unwrap();
        let h = Header { request: 1, flags: 1, size: 8 }.encode();
        a.write_all(&h[..5]).unwrap();
        assert!(b.try_recv().unwrap().is_none());
        a.write_all(&h[5..]).unwrap();
        a.write_all(&[0; 4]).unwrap();
        assert!(b.try_recv().unwrap().is_none());
        a.write_all(&[0; 4]).unwrap();
        assert!(b.try_recv().unwrap().is_some());
    }

    #[test]
    fn oversized_and_closed() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut b = Conn::new(b).unwrap();
        let h = Header { request: 1, flags: 1, size: MAX_PAYLOAD + 1 }.encode();
        a.write_all(&h).unwrap();
        assert!(matches!(b.try_recv(), Err(ConnError::TooLarge(_))));
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = Conn::new(b).unwrap();
        drop(a);
        assert!(matches!(b.try_recv(), Err(ConnError::Closed)));
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
    }

    #[test]
    fn the_most_fds_a_message_can_carry_are_refused_and_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let a = Conn::new(a).unwrap();
        let mut b = Conn::new(b).unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        let fds: Vec<_> = (0..SCM_MAX_FD).map(|_| f.as_fd()).collect();
        // Other tests open and close fds meanwhile: count around a quiet window by
        // repeating, and require that no round leaves 8 or more behind (the bug kept
        // MAX_FDS fds per message).
        let before = open_fds();
        for _ in 0..20 {
            a.send(1, 1, &[], &fds).unwrap();
            assert!(matches!(b.recv_timeout(Duration::from_secs(1)), Err(ConnError::TooManyFds)));
            b.buf.clear();
        }
        let after = open_fds();
        assert!(after < before + 8, "{} fds left open by 20 refused messages", after.saturating_sub(before));
    }

    #[test]
    fn a_peer_that_does_not_read_is_refused_at_once_when_asked() {
        let (a, _b) = UnixStream::pair().unwrap();
        let a = Conn::new(a).unwrap().with_send_wait(Duration::ZERO);
        let payload = [0u8; 200];
        let t = Instant::now();
        let err = loop {
            if let Err(e) = a.send(1, 1, &payload, &[]) {
                break e;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "the socket buffer never filled");
        };
        assert!(matches!(err, ConnError::PeerNotReading(_)), "{err}");
    }

    #[test]
    fn too_many_fds_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let a = Conn::new(a).unwrap();
        let mut b = Conn::new(b).unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        let fds: Vec<_> = (0..12).map(|_| f.as_fd()).collect();
        a.send(5, 1, &[0; 8], &fds).unwrap();
        assert!(matches!(b.recv_timeout(Duration::from_secs(1)), Err(ConnError::TooManyFds)));
    }
}
