// What the C tests of libfastpath_net share: where the header and the built libraries are,
// whether a tool is installed, running a command, and gcc with the project's strict flags.
//! Helpers of the C tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fastpath-net crate's directory.
pub fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// include/fastpath_net.h.
pub fn header() -> PathBuf {
    manifest().join("include").join("fastpath_net.h")
}

/// The directory holding the libfastpath_net.so/.a that cargo built with this test
/// (`target/<profile>/deps` for test builds, `target/<profile>` otherwise).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    for d in [deps.clone(), deps.parent().expect("profile dir").to_path_buf()] {
        if d.join("libfastpath_net.so").is_file() && d.join("libfastpath_net.a").is_file() {
            return d;
        }
    }
    panic!("libfastpath_net.so and .a not found next to {} (cargo builds them with this crate)", exe.display());
}

/// Whether `tool` runs; if not, fails under FASTPATH_REQUIRE_PEERS=1, else prints SKIPPED.
pub fn have(tool: &str, test: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    let required = std::env::var("FASTPATH_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: FASTPATH_REQUIRE_PEERS=1 but {tool} is not installed");
    eprintln!("SKIPPED: {test}: {tool} is not installed (apt-get install build-essential)");
    false
}

/// Runs `cmd` to completion; panics with its output unless it succeeds; returns its output.
pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{cmd:?} failed ({}):\n{out}", o.status);
    out
}

/// gcc with -Wall -Wextra -Werror -pedantic -std=c11, the header's directory, writing `out`.
pub fn gcc_strict(out: &Path) -> Command {
    let mut c = Command::new("gcc");
    c.args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-std=c11", "-O1", "-I"]).arg(manifest().join("include"));
    c.arg("-o").arg(out);
    c
}

/// The start of a C test: when gcc is installed (see [`have`]), the directory of the built
/// libraries and a fresh temporary directory named after `tag`.
pub fn c_test(test: &str, tag: &str) -> Option<(PathBuf, PathBuf)> {
    if !have("gcc", test) {
        return None;
    }
    let tmp = std::env::temp_dir().join(format!("fastpath-net-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    Some((lib_dir(), tmp))
}

/// Builds `src` into `out` with [`gcc_strict`], linked to the shared library in `lib`
/// (found there at run time too).
pub fn build_shared(src: &Path, out: &Path, lib: &Path) {
    run(gcc_strict(out).arg(src).arg("-L").arg(lib).arg("-lfastpath_net").arg(format!("-Wl,-rpath,{}", lib.display())));
}
