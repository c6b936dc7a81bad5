// fastpathd and fastpathctl: fastpathd's command line and start (`fastpathd_args`,
// `fastpathd_port`, `spawn_fastpathd`), the port list with its counters (`fastpathctl_list`,
// `port_stat`, `link_up`), waiting for links (`wait_ports_up`) and for fastpathd to close its
// control connections (`wait_ctl_idle`), notes (`show_ports`) and the switch's counters after
// a transfer (`check_switch_counters`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{field, run_with_timeout, Peers, Proc, TestDir, Verdict};

/// A fastpathd `--port` value: `BRIDGE:NAME:KIND:PATH` (KIND `vhost`: fastpathd listens on
/// the socket `path`; `vhost-client`: it connects to it).
pub fn fastpathd_port(bridge: &str, name: &str, kind: &str, path: &Path) -> String {
    format!("{bridge}:{name}:{kind}:{}", path.display())
}

/// fastpathd's arguments in these tests: its polling worker on CPU 0, its control socket
/// `ctl`, a `--bridge` for each of `bridges` (none: only fastpathd's default) and a
/// `--port` for each of `ports` (see [`fastpathd_port`]).
pub fn fastpathd_args(ctl: &Path, bridges: &[&str], ports: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec!["--core".into(), "0".into(), "--ctl".into(), ctl.display().to_string()];
    for b in bridges {
        a.push("--bridge".into());
        a.push((*b).to_string());
    }
    for p in ports {
        a.push("--port".into());
        a.push(p.clone());
    }
    a
}

/// Starts our fastpathd as `name` with [`fastpathd_args`]`(ctl, bridges, ports)`.
pub fn spawn_fastpathd(
    name: &str,
    peers: &Peers,
    dir: &TestDir,
    ctl: &Path,
    bridges: &[&str],
    ports: &[String],
) -> Proc {
    Proc::spawn(name, dir, &peers.bin("fastpathd"), &fastpathd_args(ctl, bridges, ports), &[])
}

/// Turns [`fastpathd_args`]' one worker (`--core 0`) into two, one per CPU
/// (`--cores 0,1`), with `idle` (`--share-core` or `--interrupt`): what they do when idle.
pub fn on_two_workers(args: &mut Vec<String>, idle: &str) {
    let core = args.iter().position(|a| a == "--core").expect("fastpathd_args pins a core");
    args.splice(core..core + 2, ["--cores", "0,1", idle].map(String::from));
}

/// `fastpathctl --ctl CTL list --json`: the ports with their counters.
pub fn fastpathctl_list(peers: &Peers, ctl: &Path) -> Result<Vec<Value>, String> {
    fastpathctl_list_with(&peers.bin("fastpathctl"), ctl)
}

/// [`fastpathctl_list`] with the `fastpathctl` binary at `fastpathctl`.
pub fn fastpathctl_list_with(fastpathctl: &Path, ctl: &Path) -> Result<Vec<Value>, String> {
    let out = run_with_timeout(
        Command::new(fastpathctl).arg("--ctl").arg(ctl).args(["list", "--json"]),
        Duration::from_secs(5),
    )?;
    if !out.status.success() {
        return Err(format!(
            "fastpathctl list --json: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(other) => Err(format!("fastpathctl list --json: expected a JSON array, got {other}")),
        Err(e) => Err(format!("fastpathctl list --json: not JSON ({e}): {text}")),
    }
}

/// The entry of port `name` in a `list`.
pub fn port_entry<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

/// A counter of port `name` (`stats.KEY`) in a `list`.
pub fn port_stat(list: &[Value], name: &str, key: &str) -> Option<u64> {
    port_entry(list, name).and_then(|p| p.get("stats")).and_then(|s| field(s, key))
}

/// A counter of port `name`'s kind (`kind_counters`, e.g. `rxq1_packets`, `link_dropped`)
/// in a `list`.
pub fn kind_stat(list: &[Value], name: &str, key: &str) -> Option<u64> {
    port_entry(list, name)?.get("kind_counters")?.as_array()?.iter().find_map(|c| {
        let pair = c.as_array()?;
        (pair.first()?.as_str()? == key).then(|| pair.get(1)?.as_u64()).flatten()
    })
}

/// The link state of port `name` in a `list` (`None`: no such port).
pub fn link_up(list: &[Value], name: &str) -> Option<bool> {
    port_entry(list, name).and_then(|p| p.get("stats")).and_then(|s| s.get("link_up")).and_then(Value::as_bool)
}

/// Waits until fastpathd reports link up on every port of `names`.
pub fn wait_ports_up(peers: &Peers, ctl: &Path, names: &[&str], t: Duration) -> Result<(), String> {
    let deadline = Instant::now() + t;
    loop {
        let list = fastpathctl_list(peers, ctl);
        if let Ok(l) = &list {
            if names.iter().all(|n| link_up(l, n) == Some(true)) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let shown = match list {
                Ok(l) => serde_json::to_string(&l).unwrap_or_default(),
                Err(e) => e,
            };
            return Err(format!("fastpathd: expected link up on ports {names:?} within {t:?}; last list: {shown}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many control connections fastpathd holds open on its control socket `ctl`: the
/// accepted ends of `ctl` in /proc/net/unix (all but the listening one). A connection is an
/// fd of fastpathd's until it has read the client's end of it, so a test that counts
/// fastpathd's fds waits for none first ([`wait_ctl_idle`]).
pub fn ctl_connections(ctl: &Path) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else { return 0 };
    count_accepted(&table, &ctl.display().to_string())
}

/// In the text of /proc/net/unix (`Num RefCount Protocol Flags Type St Inode Path`), the
/// sockets bound to `path` that are not listening (flag `__SO_ACCEPTCON`, 0x10000, unset).
fn count_accepted(table: &str, path: &str) -> usize {
    const ACCEPTCON: u32 = 0x10000;
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[7] == path)
        .filter(|f| u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & ACCEPTCON == 0))
        .count()
}

/// Waits up to `t` until fastpathd holds no control connection on `ctl` ([`ctl_connections`]).
pub fn wait_ctl_idle(ctl: &Path, t: Duration) -> bool {
    crate::wait_until(t, || ctl_connections(ctl) == 0)
}

/// One line per port with its counters, for notes.
pub fn show_ports(list: &[Value]) -> String {
    let mut s = String::from("fastpathd ports:");
    for p in list {
        let _ = write!(
            s,
            "\n    {} ({}): {}",
            p.get("name").and_then(Value::as_str).unwrap_or("?"),
            p.get("bridge").and_then(Value::as_str).unwrap_or("?"),
            p.get("stats").map_or_else(String::new, Value::to_string)
        );
        if let Some(f) = p.get("last_fault").and_then(Value::as_str) {
            let _ = write!(s, " last_fault={f}");
        }
        if let Some(k) = p.get("kind_counters") {
            let _ = write!(s, " kind_counters={k}");
        }
    }
    s
}

/// Checks the switch's counters for a one-way transfer of `n` frames:
/// `counters` lists (port, key, expected); also no drops on any port (but those
/// `counters` name).
pub fn check_switch_counters(v: &mut Verdict, list: &[Value], counters: &[(&str, &str, u64)]) {
    for &(port, key, want) in counters {
        let got = port_stat(list, port, key);
        v.check(got == Some(want), || {
            format!(
                "fastpathd port {port}: expected {key} == {want}, got {}",
                got.map_or_else(|| "no such port/counter".into(), |g| g.to_string())
            )
        });
    }
    for p in list {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
        for key in ["drop_ring_full", "drop_too_big", "rx_errors"] {
            if counters.iter().any(|&(port, k, _)| port == name && k == key) {
                continue;
            }
            let got = p.get("stats").and_then(|s| field(s, key));
            v.check(got == Some(0), || {
                format!(
                    "fastpathd port {name}: expected {key} == 0, got {}",
                    got.map_or_else(|| "?".into(), |g| g.to_string())
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accepted_control_connections_only() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 6248255 /tmp/x/ctl.sock
0000000000000000: 00000003 00000000 00000000 0001 03 6248258 /tmp/x/ctl.sock
0000000000000000: 00000002 00000000 00000000 0001 03 6248259 /tmp/x/ctl.sock
0000000000000000: 00000003 00000000 00000000 0001 03 6248260
0000000000000000: 00000003 00000000 00000000 0001 03 6248261 /tmp/x/a.sock
";
        assert_eq!(count_accepted(table, "/tmp/x/ctl.sock"), 2);
        assert_eq!(count_accepted(table, "/tmp/x/a.sock"), 1);
        assert_eq!(count_accepted(table, "/tmp/y/ctl.sock"), 0);
    }
}
