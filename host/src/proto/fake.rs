// A control socket whose answers a closure writes, for tests of the clients of fastpathd
// (this crate's, the hook's) against switches that refuse, babble, or speak other versions.
//! A fake control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A listening unix socket in the temp directory, removed on drop.
#[derive(Debug)]
pub struct FakeSocket {
    path: PathBuf,
}

impl FakeSocket {
    /// Listens at `<tmp>/fastpath-proto-<name>-<pid>.sock` and answers each connection's
    /// first line with `answer(line)` (`None`: never answers, holding the connection open
    /// for two seconds).
    pub fn answering(name: &str, answer: impl Fn(&str) -> Option<String> + Send + 'static) -> Self {
        let path = std::env::temp_dir().join(format!("fastpath-proto-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                match answer(&line) {
                    Some(a) => {
                        let _ = (&conn).write_all(a.as_bytes());
                    }
                    None => std::thread::sleep(Duration::from_secs(2)),
                }
            }
        });
        Self { path }
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FakeSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
