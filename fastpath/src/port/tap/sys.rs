// The kernel calls behind a TAP port: open /dev/net/tun and ask for a TAP device
// (TUNSETIFF), and set an interface's flags (SIOCGIFFLAGS/SIOCSIFFLAGS) to bring it up.
//! TAP device ioctls.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Longest interface name (without its NUL).
pub const MAX_IFNAME: usize = libc::IFNAMSIZ - 1;

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || name.bytes().any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not an interface name (1 to {MAX_IFNAME} bytes, no '/', space or NUL)"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

/// Opens a TAP device named `name` (created if absent, attached if it is a TAP
/// device that nobody holds), frames without packet information, non-blocking.
pub fn open_tap(name: &str) -> io::Result<File> {
    let mut req = ifreq(name)?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and fills in) the ifreq we pass, which lives across the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF as _, std::ptr::addr_of_mut!(req)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Sets the interface `name` up (`IFF_UP`), leaving its other flags as they are.
pub fn set_up(name: &str) -> io::Result<()> {
    let mut req = ifreq(name)?;
    // SAFETY: a plain socket(2); the fd is owned at once.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a fresh fd nobody else owns.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: SIOCGIFFLAGS fills in the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, std::ptr::addr_of_mut!(req)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the flags member is the one SIOCGIFFLAGS filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, std::ptr::addr_of_mut!(req)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
