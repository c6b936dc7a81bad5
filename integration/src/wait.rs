// Waits with timeouts: on a condition (`wait_until`), for a socket (`wait_for_socket`), for a
// command or child to finish with its output (`run_with_timeout`, `spawn_piped`, `wait_output`).
//! Waiting on conditions and commands, always with a timeout.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// How long [`wait_output`] still reads a finished child's pipes: a process it left behind
/// (a created container, a daemon) may hold them open for ever.
const PIPE_GRACE: Duration = Duration::from_secs(3);

/// Polls `f` every 10 ms until it is true or `t` passes; returns the last result.
pub fn wait_until(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + t;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `p` is a unix socket.
pub fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Waits up to `t` for the unix socket `p` to exist.
pub fn wait_for_socket(p: &Path, t: Duration) -> bool {
    wait_until(t, || is_socket(p))
}

/// Runs `cmd` to completion (stdin /dev/null, stdout and stderr captured), killing it after
/// `t`; see [`wait_output`].
pub fn run_with_timeout(cmd: &mut Command, t: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    wait_output(child, t).map_err(|e| format!("{what}: {e}"))
}

/// Starts `cmd` with stdin /dev/null and stdout and stderr piped, for [`wait_output`]: a
/// command that runs while the test does something else (a container in the foreground).
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Reads `r` to its end on a thread; the bytes arrive on the receiver.
fn read_on_thread<R: Read + Send + 'static>(r: Option<R>) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        let _ = tx.send(v);
    });
    rx
}

/// Waits up to `t` for `child` (stdout and stderr piped, as [`spawn_piped`] starts it) to
/// exit; its output. The pipes are read on threads (a chatty child cannot block on a full
/// pipe), and given up on [`PIPE_GRACE`] after the child exits, so that a process it left
/// holding them (a created container) cannot hang the test. When `t` passes, the child is
/// killed and the error says so, with what it had written.
pub fn wait_output(mut child: Child, t: Duration) -> Result<Output, String> {
    let (out, err) = (read_on_thread(child.stdout.take()), read_on_thread(child.stderr.take()));
    let deadline = Instant::now() + t;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => return Err(format!("wait for pid {}: {e}", child.id())),
        }
    };
    let stdout = out.recv_timeout(PIPE_GRACE).unwrap_or_default();
    let stderr = err.recv_timeout(PIPE_GRACE).unwrap_or_default();
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => Err(format!(
            "did not finish within {t:?} (killed)\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// A finished command's exit status, stdout and stderr, for failure messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_to_completion_with_output() {
        let o = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(o.status.code(), Some(3));
        assert_eq!((o.stdout.as_slice(), o.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
        assert!(output_text(&o).contains("stdout:\nout\n"), "{}", output_text(&o));
    }

    #[test]
    fn kills_a_command_that_runs_too_long() {
        let t0 = Instant::now();
        let e = run_with_timeout(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("did not finish within 200ms (killed)") && e.contains("started"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }

    #[test]
    fn does_not_wait_for_a_process_left_holding_the_pipes() {
        // The child exits at once; the background sleep keeps its stdout open for 30 s.
        let t0 = Instant::now();
        let o =
            run_with_timeout(Command::new("sh").args(["-c", "sleep 30 & echo done"]), Duration::from_secs(10)).unwrap();
        assert!(o.status.success());
        assert!(t0.elapsed() < Duration::from_secs(10), "waited {:?} for the left-behind sleep", t0.elapsed());
    }
}
