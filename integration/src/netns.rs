// Kernel network plumbing for the tests that reach outside the switch: network
// namespaces and veth pairs, each removed when dropped, and `ip` run with a timeout.
//! Network namespaces, veth pairs and `ip`.

use std::process::Command;
use std::time::Duration;

use crate::{output_text, run_with_timeout};

/// Runs `ip ARGS`; its output, or an error naming the command and what it said.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let o = run_with_timeout(Command::new("ip").args(args), Duration::from_secs(10))?;
    if o.status.success() {
        Ok(output_text(&o))
    } else {
        Err(format!("ip {}: {}", args.join(" "), output_text(&o)))
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    /// Creates namespace `name` (deleting a stale one of that name first).
    pub fn new(name: &str) -> Result<Self, String> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name])?;
        Ok(Self(name.into()))
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["-n", self.0.as_str()];
        v.extend_from_slice(args);
        ip(&v)
    }

    /// Moves the calling thread into the namespace: the sockets it opens from then on,
    /// and the threads it starts, are the namespace's. For a thread started for that.
    pub fn enter(&self) -> Result<(), String> {
        let path = format!("/run/netns/{}", self.0);
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns into {path}: {e}"))
    }

    /// Runs `cmd` inside the namespace, killed after `t`.
    pub fn exec(&self, cmd: &[&str], t: Duration) -> Result<std::process::Output, String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(cmd);
        run_with_timeout(&mut c, t)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A veth pair `a` ↔ `b` in this namespace, both up, IPv6 off (so the kernel sends
/// nothing of its own on them); deleted on drop.
#[derive(Debug)]
pub struct Veth {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
}

impl Veth {
    /// Creates the pair (deleting a stale `a` first) and sets both ends up.
    pub fn new(a: &str, b: &str) -> Result<Self, String> {
        let _ = Command::new("ip").args(["link", "del", a]).output();
        ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        let me = Self { a: a.into(), b: b.into() };
        for end in [a, b] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
            ip(&["link", "set", end, "up"])?;
        }
        Ok(me)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.a]).output();
    }
}
