// A tenant that runs real traffic while it attacks: its rings and buffers in memory of
// its choosing (sealed memfds, an unsealed memfd, hugetlbfs files), frames it sends on
// its transmit ring and buffers it keeps posted on its receive ring.
//! A frontend with live rings.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use netlib::mem::Region;
use netlib::ring::{Desc, DriverRing, SplitLayout};
use netlib::spec::{NET_HDR_LEN, VRING_DESC_F_WRITE};
use netlib::vhost_user::Request;

use crate::frontend::Hostile;

/// Bytes of each packet buffer.
pub const BUF: u64 = 2048;

/// What a tenant's rings and buffers live in.
#[derive(Debug, Clone)]
pub enum Memory {
    /// What netlib's apps use: memfds sealed against shrinking.
    Sealed,
    /// A plain memfd its tenant can still shrink.
    Memfd,
    /// Files in a hugetlbfs directory (which can't be sealed).
    Hugetlbfs(PathBuf),
}

impl Memory {
    /// A region of at least `len` bytes.
    pub fn region(&self, len: u64) -> Result<Region> {
        Ok(match self {
            Memory::Sealed => Region::create(None, len)?,
            Memory::Memfd => Region::from_fd(plain_memfd("hostile")?, len.next_multiple_of(4096))?,
            Memory::Hugetlbfs(dir) => {
                let r = Region::create(Some(dir), len)?;
                ensure!(r.backing().hugetlbfs_dir().is_some(), "{} is not a usable hugetlbfs mount", dir.display());
                r
            }
        })
    }
}

/// A memfd that is not sealed and can't be (no `MFD_ALLOW_SEALING`).
pub fn plain_memfd(name: &str) -> Result<std::os::fd::OwnedFd> {
    let name = std::ffi::CString::new(name)?;
    Ok(nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?)
}

/// A tenant's port: the connection, both rings, its buffers, and what moved.
pub struct Tenant {
    pub h: Hostile,
    pub rx: DriverRing,
    pub tx: DriverRing,
    pub data: Region,
    tx_next: u16,
    tx_seen: u16,
    rx_seen: u16,
    /// Frames the switch took from our transmit ring.
    pub sent: u64,
    /// Frames the switch put in our receive ring.
    pub received: u64,
}

impl Tenant {
    /// Connects to `path`, negotiates, sets up a receive ring of `rx_size` and a transmit
    /// ring of `tx_size` entries in `mem` with `data_len` bytes of buffer memory, and waits
    /// until the switch has taken it all. `call`, when given, is both vrings' call fd. The
    /// rings want interrupts (their avail flags are 0); nothing is posted yet.
    pub fn open(
        path: &Path,
        mem: &Memory,
        (rx_size, tx_size): (u16, u16),
        data_len: u64,
        call: Option<BorrowedFd<'_>>,
    ) -> Result<Self> {
        let mut h = Hostile::connect(path, Duration::from_secs(2))?;
        h.start()?;
        let rx = DriverRing::in_region(mem.region(SplitLayout::total_bytes(rx_size))?, rx_size)?;
        let tx = DriverRing::in_region(mem.region(SplitLayout::total_bytes(tx_size))?, tx_size)?;
        let data = mem.region(data_len)?;
        h.rings_with(&rx, &tx, &[&data], call)?;
        h.get(Request::GetFeatures)?;
        Ok(Self { h, rx, tx, data, tx_next: 0, tx_seen: 0, rx_seen: 0, sent: 0, received: 0 })
    }

    /// [`Self::open`] with buffers for both rings ([`BUF`] bytes each: transmit buffers
    /// first, then receive buffers) in at least `data_len` bytes, every receive buffer posted.
    pub fn with_buffers(
        path: &Path,
        mem: &Memory,
        sizes: (u16, u16),
        data_len: u64,
        call: Option<BorrowedFd<'_>>,
    ) -> Result<Self> {
        let buffers = (u64::from(sizes.0) + u64::from(sizes.1)) * BUF;
        let t = Self::open(path, mem, sizes, buffers.max(data_len), call)?;
        let base = t.rx_buffers();
        for i in 0..sizes.0 {
            let d = Desc { addr: base + u64::from(i) * BUF, len: BUF as u32, flags: VRING_DESC_F_WRITE, next: 0 };
            t.rx.set_desc(i, d);
            t.rx.set_avail(i, i);
        }
        t.rx.publish_avail(sizes.0);
        Ok(t)
    }

    fn buffers_fit(&self) -> bool {
        (u64::from(self.rx.size()) + u64::from(self.tx.size())) * BUF <= self.data.map().len() as u64
    }

    fn rx_buffers(&self) -> u64 {
        self.data.map().addr() + u64::from(self.tx.size()) * BUF
    }

    /// Puts `frame` (after a zeroed virtio-net header) in every transmit buffer.
    pub fn load_frame(&mut self, frame: &[u8]) -> Result<()> {
        ensure!(self.buffers_fit() && frame.len() as u64 + u64::from(NET_HDR_LEN) <= BUF, "no room for the frame");
        let hdr = NET_HDR_LEN as usize;
        let (base, len) = (self.data.map().addr(), hdr + frame.len());
        for i in 0..usize::from(self.tx.size()) {
            let b = self.data.map_mut().slice_mut(i * BUF as usize, len)?;
            b[..hdr].fill(0);
            b[hdr..].copy_from_slice(frame);
            let d = Desc { addr: base + i as u64 * BUF, len: len as u32, flags: 0, next: 0 };
            self.tx.set_desc(i as u16, d);
        }
        Ok(())
    }

    /// Counts what the switch took and gave since the last call, gives the receive buffers
    /// back, and sends up to `n` more frames (as room allows). Returns frames sent now.
    pub fn pump(&mut self, n: u16) -> u16 {
        let used = self.tx.used_idx();
        let in_flight = self.tx_next.wrapping_sub(used);
        self.sent += u64::from(used.wrapping_sub(self.tx_seen));
        self.tx_seen = used;
        let rx_used = self.rx.used_idx();
        let got = rx_used.wrapping_sub(self.rx_seen);
        if got > 0 {
            self.received += u64::from(got);
            self.rx_seen = rx_used;
            // In order: the chains come back in the order we posted them, the same ids.
            let size = self.rx.size();
            let next = rx_used.wrapping_add(size);
            for k in 0..got {
                let idx = next.wrapping_sub(got).wrapping_add(k);
                self.rx.set_avail(idx, idx % size);
            }
            self.rx.publish_avail(next);
        }
        let room = self.tx.size().saturating_sub(in_flight).min(n);
        let size = self.tx.size();
        for k in 0..room {
            let idx = self.tx_next.wrapping_add(k);
            self.tx.set_avail(idx, idx % size);
        }
        self.tx_next = self.tx_next.wrapping_add(room);
        if room > 0 {
            self.tx.publish_avail(self.tx_next);
        }
        room
    }

    /// Sends `rate` frames per second for `t`, pumping every half millisecond, until
    /// `stop` (asked every pump) says otherwise.
    pub fn run(&mut self, rate: u32, t: Duration, mut stop: impl FnMut(&mut Self) -> bool) {
        let start = Instant::now();
        let mut queued = 0u64;
        while start.elapsed() < t && !stop(self) {
            let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            let want = due.saturating_sub(queued).min(u64::from(u16::MAX)) as u16;
            queued += u64::from(self.pump(want));
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Waits up to `t` for the switch to take every frame we sent.
    pub fn drain(&mut self, t: Duration) {
        let deadline = Instant::now() + t;
        while self.tx.used_idx() != self.tx_next && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.pump(0);
    }

    /// Shrinks the files behind our rings and buffers to nothing (the switch's mappings of
    /// them fault from now on). Touches none of that memory itself afterwards: it must not.
    pub fn truncate(&self) -> Result<()> {
        for r in [self.rx.region(), self.tx.region(), &self.data] {
            nix::unistd::ftruncate(r.fd().as_fd(), 0)?;
        }
        Ok(())
    }
}
