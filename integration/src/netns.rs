// Network namespaces for the tests that put kernel interfaces (a TAP, VLAN sub-interfaces)
// on the far side of a port: created by name and deleted on drop, `ip` commands in and out.
//! Network namespaces.

use std::process::{Command, Output};
use std::time::Duration;

use crate::{output_text, run_with_timeout};

/// A network namespace, deleted on drop (a stale one of the same name is deleted first).
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    /// Creates the namespace `name`.
    pub fn new(name: &str) -> Result<Self, String> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name])?;
        Ok(Self(name.into()))
    }

    /// `ip -n NAME ARGS`; its output, or an error naming the command.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["-n", self.0.as_str()];
        v.extend_from_slice(args);
        ip(&v)
    }

    /// Runs `cmd` in the namespace, for at most `t`.
    pub fn exec(&self, cmd: &[&str], t: Duration) -> Result<Output, String> {
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

/// `ip ARGS`; its output, or an error naming the command.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let o = run_with_timeout(Command::new("ip").args(args), Duration::from_secs(10))?;
    if o.status.success() {
        Ok(output_text(&o))
    } else {
        Err(format!("ip {}: {}", args.join(" "), output_text(&o)))
    }
}
