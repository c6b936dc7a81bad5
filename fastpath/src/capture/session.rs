// Both ends of a capture's control connection: fastpathd answers `capture` with the rings'
// memfds attached (SCM_RIGHTS: one per worker that sees the port's frames); fastpathctl asks,
// receives the fds, maps the rings and drains them, oldest frame first, into a pcapng or pcap
// file until a count, Ctrl-C or the switch ends the capture.
//! A capture session over the control socket.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use fastpath_host::proto::{check_reply, encode_request, CaptureSpec, ClientError, Request, VERSION};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::pcapng::{Pcap, Pcapng};
use super::ring::{adopt_received_fd, Captured, Ring};

/// The longest reply line read before the fd (a capture's reply is a few dozen bytes).
const MAX_REPLY: usize = 64 * 1024;
/// The most rings a capture's reply carries (one per worker that sees the port's frames).
pub const MAX_RINGS: usize = 64;
/// How long the drain sleeps when the ring is empty.
const IDLE: Duration = Duration::from_millis(1);

/// Why a capture could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Talking to fastpathd failed (the caller names the control socket).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// fastpathd refused, or speaks an older protocol without `capture`.
    #[error(transparent)]
    Refused(#[from] ClientError),
    /// The reply is not one.
    #[error("bad answer from fastpathd: {0}")]
    BadAnswer(String),
    /// The ring fastpathd handed over is unusable.
    #[error("capture ring: {0}")]
    Ring(io::Error),
    /// Writing the capture file failed.
    #[error("writing the capture: {0}")]
    Write(io::Error),
}

/// fastpathd's side: writes the reply `line` on `conn` with `fds` attached (at most
/// [`MAX_RINGS`]).
pub fn send_with_fds(conn: &UnixStream, line: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let fds: Vec<_> = fds.iter().take(MAX_RINGS).map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let n = sendmsg::<()>(conn.as_raw_fd(), &[IoSlice::new(line)], &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    if n < line.len() {
        (&*conn).write_all(&line[n..])?;
    }
    Ok(())
}

/// fastpathctl's side of a running capture: the connection that keeps it alive and the
/// mapped rings (the port's worker's first).
pub struct Session {
    conn: UnixStream,
    rings: Vec<Ring>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Frames written to the file.
    pub captured: u64,
    /// Frames the switch dropped from the capture (ring full).
    pub dropped: u64,
    /// Whether fastpathd ended the capture (the port removed, the switch stopped).
    pub ended_by_switch: bool,
}

/// Where drained frames go: pcapng (with the port as its one interface) or classic pcap.
pub enum Output<W: Write> {
    /// pcapng: the interface's name, direction flags and a closing statistics block.
    Pcapng(Pcapng<W>),
    /// Classic pcap (no direction, no drop count).
    Pcap(Pcap<W>),
}

impl<W: Write> Output<W> {
    /// Starts a file for port `port` whose frames are cut to `snaplen`.
    pub fn start(out: W, pcap: bool, port: &str, snaplen: u32) -> io::Result<Self> {
        if pcap {
            return Ok(Self::Pcap(Pcap::new(out, snaplen)?));
        }
        let mut w = Pcapng::new(out)?;
        w.interface(port, snaplen)?;
        Ok(Self::Pcapng(w))
    }

    fn packet(&mut self, c: &Captured) -> io::Result<()> {
        match self {
            Self::Pcapng(w) => w.packet(0, c.ts_ns, c.direction, &c.data, c.orig_len),
            Self::Pcap(w) => w.packet(c.ts_ns, &c.data, c.orig_len),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Pcapng(w) => w.flush(),
            Self::Pcap(w) => w.flush(),
        }
    }

    /// Ends the file (pcapng: a statistics block with `dropped` at `ts_ns`) and flushes it.
    pub fn finish(self, ts_ns: u64, dropped: u64) -> io::Result<W> {
        match self {
            Self::Pcapng(mut w) => {
                w.statistics(0, ts_ns, dropped)?;
                w.finish()
            }
            Self::Pcap(w) => w.finish(),
        }
    }
}

impl Session {
    /// Asks the fastpathd on `ctl` to capture `spec` and maps the ring it hands over.
    pub fn start(ctl: &Path, spec: &CaptureSpec, timeout: Duration) -> Result<Self, CaptureError> {
        let io = |what| move |source| CaptureError::Io { what, source };
        let conn = UnixStream::connect(ctl).map_err(io("connecting (is fastpathd running?)"))?;
        conn.set_read_timeout(Some(timeout)).map_err(io("setting a timeout"))?;
        let line = encode_request(&Request::Capture(spec.clone()), VERSION)
            .map_err(|e| CaptureError::BadAnswer(format!("cannot write the request: {e}")))?;
        (&conn).write_all(line.as_bytes()).map_err(io("sending"))?;
        let (reply, fds) = receive_reply(&conn).map_err(io("receiving the reply"))?;
        check_reply(&String::from_utf8_lossy(&reply), VERSION)?;
        if fds.is_empty() {
            return Err(CaptureError::BadAnswer("the reply carries no capture ring".into()));
        }
        let rings = fds.into_iter().map(Ring::open).collect::<Result<Vec<_>, _>>().map_err(CaptureError::Ring)?;
        conn.set_nonblocking(true).map_err(io("setting non-blocking"))?;
        Ok(Self { conn, rings })
    }

    /// How many rings the switch copies this capture's frames into (one per worker that
    /// sees them).
    pub fn rings(&self) -> usize {
        self.rings.len()
    }

    /// Writes the rings' frames to `out` until `count` frames (if any) were written, `stop`
    /// says so (Ctrl-C), or fastpathd ends the capture; then ends the file with the drop count.
    /// Of the frames waiting at the heads of the rings the oldest goes first, so the file is
    /// in time order but for frames a worker copied later than another worker's newer ones.
    pub fn drain<W: Write>(
        &self,
        mut out: Output<W>,
        count: Option<u64>,
        mut stop: impl FnMut() -> bool,
    ) -> Result<(Summary, W), CaptureError> {
        let mut captured = 0u64;
        let mut ended_by_switch = false;
        let full = |n: u64| count.is_some_and(|c| n >= c);
        let mut heads: Vec<Option<Captured>> = self.rings.iter().map(|_| None).collect();
        while !full(captured) {
            for (head, ring) in heads.iter_mut().zip(&self.rings) {
                if head.is_none() {
                    *head = ring.pop().map_err(CaptureError::Ring)?;
                }
            }
            let oldest = heads.iter_mut().filter(|h| h.is_some()).min_by_key(|h| h.as_ref().map_or(0, |c| c.ts_ns));
            match oldest.and_then(Option::take) {
                Some(c) => {
                    out.packet(&c).map_err(CaptureError::Write)?;
                    captured += 1;
                }
                None if ended_by_switch || stop() => break,
                None => {
                    out.flush().map_err(CaptureError::Write)?;
                    ended_by_switch = self.closed_by_switch();
                    if !ended_by_switch {
                        std::thread::sleep(IDLE);
                    }
                }
            }
        }
        let dropped = self.rings.iter().map(Ring::dropped).sum();
        let w = out.finish(now_ns(), dropped).map_err(CaptureError::Write)?;
        Ok((Summary { captured, dropped, ended_by_switch }, w))
    }

    /// Whether fastpathd closed the connection (the capture is over on its side).
    fn closed_by_switch(&self) -> bool {
        let mut b = [0u8; 64];
        match (&self.conn).read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted,
        }
    }
}

/// Reads one reply line, and the fds that came with it (at most [`MAX_RINGS`]).
fn receive_reply(conn: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut reply = Vec::new();
    let mut fds = Vec::new();
    while !reply.contains(&b'\n') {
        if reply.len() > MAX_REPLY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a reply longer than {MAX_REPLY} bytes")));
        }
        let mut buf = [0u8; 4096];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_RINGS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raws) = c {
                for raw in raws {
                    // Adopted whatever the count, so that any beyond it are closed.
                    let owned = adopt_received_fd(raw);
                    if fds.len() < MAX_RINGS {
                        fds.push(owned);
                    }
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed without answering"));
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok((reply, fds))
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pcapng::Direction;

    /// A session over a socket pair (the switch's end returned) and the switch's ring.
    fn session(slots: u32) -> (Session, UnixStream, Ring) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let ring = Ring::create(slots, 64).unwrap();
        let mapped = Ring::open(OwnedFd::from(ring.fd().try_clone().unwrap())).unwrap();
        (Session { conn: ours, rings: vec![mapped] }, theirs, ring)
    }

    /// Each pcapng block in `b`: its type and body.
    fn blocks(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 12 {
            let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let (kind, len) = (word(0), word(4) as usize);
            out.push((kind, b[8..len - 4].to_vec()));
            b = &b[len..];
        }
        out
    }

    #[test]
    fn drains_until_the_count_and_ends_the_file_with_the_drops() {
        let (s, _switch, ring) = session(2);
        for i in 0..3u8 {
            ring.push(u64::from(i), Direction::Outbound, &[i; 60]);
        }
        let out = Output::start(Vec::new(), false, "p", 64).unwrap();
        let (sum, bytes) = s.drain(out, Some(2), || false).unwrap();
        assert_eq!(sum, Summary { captured: 2, dropped: 1, ended_by_switch: false });
        let kinds: Vec<u32> = blocks(&bytes).iter().map(|b| b.0).collect();
        assert_eq!(kinds, [0x0A0D_0D0A, 1, 6, 6, 5], "SHB, IDB, 2 EPBs, ISB");
        let isb = &blocks(&bytes)[4].1;
        assert_eq!(&isb[12..16], [5, 0, 8, 0], "isb_ifdrop");
        assert_eq!(u64::from_le_bytes(isb[16..24].try_into().unwrap()), 1);
    }

    #[test]
    fn ends_when_the_switch_closes_or_on_stop() {
        let (s, switch, ring) = session(4);
        ring.push(1, Direction::Inbound, &[1; 60]);
        drop(switch);
        let out = Output::start(Vec::new(), true, "p", 64).unwrap();
        let (sum, bytes) = s.drain(out, None, || false).unwrap();
        assert_eq!(sum, Summary { captured: 1, dropped: 0, ended_by_switch: true });
        assert_eq!(bytes.len(), 24 + 16 + 60, "pcap: header, one record");
        let (s, _switch, _ring) = session(4);
        let (sum, _) = s.drain(Output::start(Vec::new(), true, "p", 64).unwrap(), None, || true).unwrap();
        assert_eq!(sum, Summary { captured: 0, dropped: 0, ended_by_switch: false });
    }
}
