// Reading the hook's ledger as a bystander (no lock: the hook replaces it atomically), and
// telling whether the process a ledger entry names still runs (its pid and start time).
//! Reading the ledger.

use std::path::{Path, PathBuf};

use super::LedgerData;

/// The ledger's file name in the hook's state directory.
pub const LEDGER_FILE: &str = "ledger.json";

/// Why the ledger could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be read.
    #[error("ledger {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a ledger.
    #[error("ledger {}: is not a ledger ({source})", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
}

/// Reads the ledger at `path`; `Ok(None)` when there is no such file.
pub fn read(path: &Path) -> Result<Option<LedgerData>, LedgerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LedgerError::Read { path: path.into(), source }),
    };
    LedgerData::parse(&text).map(Some).map_err(|source| LedgerError::Parse { path: path.into(), source })
}

/// The start time (clock ticks since boot) of process `pid`, from `/proc/PID/stat`; `None`
/// when there is no such process or it is a zombie. With the pid it names one process for
/// good: a recycled pid has another start time.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 (starttime) of a `/proc/PID/stat` line, unless field 3 (state) says the process
/// is dead (`Z`, `X`). The command name (field 2) may hold spaces and parentheses: the
/// fields after it are counted from its last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // After the state come fields 4..; starttime is field 22, the 19th of them.
    f.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_a_process_and_of_none() {
        let me = process_start_time(std::process::id() as i32).unwrap();
        assert_eq!(process_start_time(std::process::id() as i32), Some(me));
        assert_eq!(process_start_time(0), None);
        assert_eq!(process_start_time(i32::MAX), None);
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_time(line), Some(987_654));
        assert_eq!(parse_start_time(&line.replace(") S ", ") Z ")), None);
        assert_eq!(parse_start_time("42 (x) S 1"), None);
    }

    #[test]
    fn reads_a_ledger_or_says_why_not() {
        let dir = std::env::temp_dir().join(format!("fastpath-host-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(LEDGER_FILE);
        let _ = std::fs::remove_file(&p);
        assert!(read(&p).unwrap().is_none());
        std::fs::write(&p, "").unwrap();
        assert_eq!(read(&p).unwrap(), Some(LedgerData::empty()));
        std::fs::write(&p, "{\"containers\":").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("ledger {}: is not a ledger (", p.display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
