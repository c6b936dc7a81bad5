// Locating our binaries (`bin_dir`, `static_bin_dir`) and the peers (dpdk-testpmd): `require`
// and the `Peers` it returns; `skip_or_fail`, the one way a test says that something is missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The workspace root (parent of this crate's manifest dir).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the integration crate lives in the workspace").to_path_buf()
}

/// Where our binaries are: `$FASTPATH_BIN_DIR`, else `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_dir().join("target").join("release"),
    }
}

/// The switch's own binaries (`fastpathd`, `fastpathctl`), which
/// `$FASTPATH_SWITCH_BIN_DIR` may take from elsewhere than [`bin_dir`]: to run a test
/// against another build of the switch (an older one, to show a test failing before a fix)
/// with this build's apps.
const SWITCH_BINS: &[&str] = &["fastpathd", "fastpathctl"];

/// Where binary `name` is: [`bin_dir`], or `$FASTPATH_SWITCH_BIN_DIR` for the switch's own
/// ([`SWITCH_BINS`]) when that is set.
pub fn bin_path(name: &str) -> PathBuf {
    match std::env::var_os("FASTPATH_SWITCH_BIN_DIR") {
        Some(d) if !d.is_empty() && SWITCH_BINS.contains(&name) => PathBuf::from(d).join(name),
        _ => bin_dir().join(name),
    }
}

/// Where the statically linked binaries are (for containers and guests, which have no
/// loader): `$FASTPATH_STATIC_BIN_DIR`, else where `cargo xtask test` builds them
/// (`<workspace>/target/static/x86_64-unknown-linux-gnu/release`).
pub fn static_bin_dir() -> PathBuf {
    match std::env::var_os("FASTPATH_STATIC_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_dir().join("target/static/x86_64-unknown-linux-gnu/release"),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The executable `name` in `$PATH`, if any.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

/// The binaries and peers a test found.
#[derive(Debug, Clone)]
pub struct Peers {
    testpmd: Option<PathBuf>,
}

impl Peers {
    /// Path of one of our binaries.
    pub fn bin(&self, name: &str) -> PathBuf {
        bin_path(name)
    }

    /// Path of `dpdk-testpmd` (the test asked for it).
    pub fn testpmd(&self) -> &Path {
        self.testpmd.as_deref().expect("the test did not ask for testpmd in require()")
    }
}

/// Whether a missing peer is a failure (`FASTPATH_REQUIRE_PEERS=1`) or a skip.
fn peers_required() -> bool {
    std::env::var("FASTPATH_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Finds our binaries `bins` and (if `testpmd`) `dpdk-testpmd` (`$FASTPATH_TESTPMD`
/// or `PATH`). When something is missing: panics if `FASTPATH_REQUIRE_PEERS=1`,
/// else prints a loud SKIPPED line on stderr and returns `None`.
pub fn require(test: &str, bins: &[&str], testpmd: bool) -> Option<Peers> {
    let mut missing = Vec::new();
    let absent: Vec<String> =
        bins.iter().map(|b| bin_path(b)).filter(|p| !is_executable(p)).map(|p| p.display().to_string()).collect();
    if !absent.is_empty() {
        missing.push(format!(
            "{} not found (build with `cargo build --release --workspace`, or set FASTPATH_BIN_DIR)",
            absent.join(", ")
        ));
    }
    let tp = if testpmd {
        let found = match std::env::var_os("FASTPATH_TESTPMD") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)).filter(|p| is_executable(p)),
            _ => find_in_path("dpdk-testpmd"),
        };
        if found.is_none() {
            missing.push("dpdk-testpmd not found in PATH or $FASTPATH_TESTPMD (apt-get install dpdk-dev)".into());
        }
        found
    } else {
        None
    };
    if missing.is_empty() {
        return Some(Peers { testpmd: tp });
    }
    skip_or_fail(test, &missing.join("; "));
    None
}

/// Something `test` needs is missing (`reason` says what, and how to get it): panics if
/// `FASTPATH_REQUIRE_PEERS=1` (CI, `cargo xtask test`), else prints a loud SKIPPED block
/// on stderr; the test then returns without checking anything. Every test that skips says
/// so through here.
pub fn skip_or_fail(test: &str, reason: &str) {
    assert!(!peers_required(), "{test}: FASTPATH_REQUIRE_PEERS=1 but a peer is missing: {reason}");
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a skip must be seen.
    let stars = "*".repeat(72);
    let msg = format!("\n{stars}\nSKIPPED: {test}: {reason}\n{stars}\n");
    let _ = std::io::stderr().write_all(msg.as_bytes());
}
