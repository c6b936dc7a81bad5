// Our side of the race: starts fastpath's binaries (pktgen, sink, echo, ping, l2fwd,
// fastpathd) from the release directory and reads their final JSON line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::procs::{self, Spawn};
use crate::scratch::{ProcId, Sandbox};

/// Where our binaries are and how long each run lasts.
pub struct Ctx {
    /// `<target>/release`.
    pub bin_dir: PathBuf,
    /// Seconds of traffic per run.
    pub secs: u64,
}

impl Ctx {
    /// `--secs` value for runs that stop by themselves.
    pub fn secs_arg(&self) -> String {
        self.secs.to_string()
    }

    /// Starts our binary `bin` with `args` in `sb`; fails clearly if it was not built.
    pub fn spawn(&self, sb: &mut Sandbox, bin: &str, args: &[&str]) -> Result<ProcId> {
        self.spawn_as(sb, bin, bin, args)
    }

    /// Like [`Ctx::spawn`], naming the process `name` in messages.
    pub fn spawn_as(&self, sb: &mut Sandbox, name: &str, bin: &str, args: &[&str]) -> Result<ProcId> {
        sb.spawn(Spawn::new(name, self.program(bin)?).args(args))
    }

    /// Runs our binary `bin` with `args` to a successful end within `timeout`.
    pub fn run(&self, bin: &str, args: &[&str], timeout: Duration) -> Result<()> {
        procs::run(Spawn::new(bin, self.program(bin)?).args(args), timeout)?;
        Ok(())
    }

    /// The path of our binary `bin`; fails clearly if it was not built.
    fn program(&self, bin: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(bin);
        if !path.is_file() {
            bail!("our binary {} is missing (not written yet, or the release build failed)", path.display());
        }
        Ok(path)
    }
}

/// `vhost:PATH`, `vu:PATH`: a port spec of our binaries.
pub fn port(kind: &str, sock: &Path) -> String {
    format!("{kind}:{}", sock.display())
}

/// The last stdout line of `id` that is a JSON object whose "role" is `role`.
pub fn final_json(sb: &mut Sandbox, id: ProcId, role: &str) -> Result<Value> {
    let p = sb.proc(id);
    p.stdout_lines()
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v.get("role").and_then(Value::as_str) == Some(role))
        .ok_or_else(|| {
            anyhow!("{} printed no final JSON line with \"role\":\"{role}\"{}", p.name(), p.stderr_excerpt())
        })
}

/// The number `key` of a JSON object.
pub fn number(v: &Value, key: &str) -> Result<f64> {
    v.get(key).and_then(Value::as_f64).ok_or_else(|| anyhow!("no number \"{key}\" in {v}"))
}
