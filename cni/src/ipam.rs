// Delegating addresses to the IPAM plugin a network config names (`ipam.type`): found in
// CNI_PATH, run with the same environment and config, its result or error passed on.
//! IPAM delegation.

use crate::env::{CniEnv, Command};
use crate::error::{CniError, Result, IPAM};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

/// Runs the IPAM plugin `ty` for `cmd` (ADD or DEL) with the network config `conf` on its
/// stdin; ADD returns its result.
pub fn delegate(ty: &str, cmd: Command, env: &CniEnv, conf: &str) -> Result<Option<Value>> {
    let plugin = find(ty, &env.path)?;
    let verb = if cmd == Command::Add { "ADD" } else { "DEL" };
    let mut child = std::process::Command::new(&plugin)
        .env("CNI_COMMAND", verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(IPAM, format!("ipam.type '{ty}': running {}: {e}", plugin.display())))?;
    if let Some(mut i) = child.stdin.take() {
        // A plugin that exits without reading gives EPIPE: its output says why.
        let _ = i.write_all(conf.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(IPAM, format!("ipam.type '{ty}': waiting for {}: {e}", plugin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let v: Option<Value> = serde_json::from_str(&text).ok();
        let msg = v
            .as_ref()
            .and_then(|v| v.get("msg"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("{} {}", text.trim(), String::from_utf8_lossy(&out.stderr).trim()), str::to_string);
        return Err(CniError::new(IPAM, format!("ipam.type '{ty}' {verb} failed ({}): {msg}", out.status)));
    }
    if cmd != Command::Add {
        return Ok(None);
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CniError::new(IPAM, format!("ipam.type '{ty}': its result is not JSON ({e}): {text}")))
}

/// The plugin `ty` in the first `CNI_PATH` directory that has it.
fn find(ty: &str, path: &[PathBuf]) -> Result<PathBuf> {
    path.iter().map(|d| d.join(ty)).find(|p| p.is_file()).ok_or_else(|| {
        let dirs: Vec<String> = path.iter().map(|d| d.display().to_string()).collect();
        CniError::new(IPAM, format!("ipam.type '{ty}': no such plugin in CNI_PATH ({})", dirs.join(":")))
    })
}
