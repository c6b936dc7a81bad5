//! Growing the process's fd table once, at start, so that it never grows under traffic.
//!
//! Linux grows a process's fd table when an fd is installed past its end. When the table is
//! shared by several threads, the kernel then waits for an RCU grace period before going on
//! (`synchronize_rcu()` in `expand_fdtable`): the thread that was installing the fd sleeps for
//! tens of milliseconds. fastpathd's worker receives tenants' fds with their messages, and
//! one message may carry 253 of them. Measured with `perf` during the `fd-churn` case of
//! `hostile_tenants`, the first such message kept the worker off its CPU for 30 ms, and every
//! port stalled with it. The table never shrinks, so [`reserve`] grows it once, before any
//! thread exists. Then no grace period has to pass, and no tenant can cause one later.
//!
//! It also raises the soft `RLIMIT_NOFILE` to the hard limit (systemd's default soft
//! limit is 1024), since the switch uses `poll`, never `select`, and many ports hold many
//! fds.

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// What [`reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The soft `RLIMIT_NOFILE` before.
    pub soft_before: u64,
    /// The soft `RLIMIT_NOFILE` now.
    pub soft: u64,
    /// How many fds the table holds now (at least this many).
    pub slots: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, then grows the fd table to `want`
/// slots (at most the soft limit). Call it before starting any thread: in a process with
/// one thread the kernel grows the table without waiting for an RCU grace period.
pub fn reserve(want: u64) -> Result<Reserved, Errno> {
    let (soft_before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let soft =
        if hard > soft_before && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft_before };
    let slots = want.min(soft).max(1);
    let null = File::open("/dev/null").map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    // The lowest free fd at or above slots - 1: installing it grows the table to hold it.
    let at = i32::try_from(slots - 1).unwrap_or(i32::MAX);
    let fd = fcntl(null.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(at))?;
    nix::unistd::close(fd)?;
    Ok(Reserved { soft_before, soft, slots })
}

/// How many fds this process's table holds now (`FDSize` in `/proc/self/status`).
pub fn table_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("FDSize:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_what_was_reserved() {
        let r = reserve(4096).expect("reserve");
        assert!(r.soft >= r.soft_before, "{r:?}");
        assert_eq!(r.slots, 4096.min(r.soft));
        let size = table_size().expect("FDSize in /proc/self/status");
        assert!(size >= r.slots, "FDSize {size} after reserving {r:?}");
    }
}
