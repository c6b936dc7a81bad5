// set_channels: `ethtool -L IFNAME combined N` for a guest without ethtool: asks the
// driver for its channels (ETHTOOL_GCHANNELS), sets the combined count (ETHTOOL_SCHANNELS)
// and prints both as JSON. A virtio-net driver on one vCPU uses one queue pair unless told.
//! Sets a NIC's combined channel count.

use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_SCHANNELS: u32 = 0x3d;

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Channels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// One SIOCETHTOOL call on `ifname` with `ch`.
fn ethtool(fd: i32, ifname: &str, ch: &mut Channels) -> Result<()> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.is_empty() || ifname.len() >= ifr.ifr_name.len() {
        bail!("interface name {ifname:?} is empty or longer than {} bytes", ifr.ifr_name.len() - 1);
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = std::ptr::from_mut(ch).cast();
    // SAFETY: SIOCETHTOOL reads the name and the pointer of `ifr`, and reads and writes
    // the `Channels` it points to, which lives across the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("SIOCETHTOOL {:#x} on {ifname}", ch.cmd));
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ifname, n] = args.as_slice() else {
        bail!("usage: set_channels IFNAME COMBINED (sets the NIC's combined channels, as ethtool -L does)");
    };
    let n: u32 = n.parse().with_context(|| format!("COMBINED {n:?} is not a number"))?;
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None).context("socket")?;
    let mut ch = Channels { cmd: ETHTOOL_GCHANNELS, ..Channels::default() };
    ethtool(sock.as_raw_fd(), ifname, &mut ch)?;
    if n == 0 || n > ch.max_combined {
        bail!("COMBINED {n} is not in 1..={} (the most {ifname} has)", ch.max_combined);
    }
    let before = ch.combined_count;
    ch.cmd = ETHTOOL_SCHANNELS;
    ch.combined_count = n;
    ethtool(sock.as_raw_fd(), ifname, &mut ch)?;
    println!("{{\"ifname\":\"{ifname}\",\"max_combined\":{},\"before\":{before},\"combined\":{n}}}", ch.max_combined);
    Ok(())
}
