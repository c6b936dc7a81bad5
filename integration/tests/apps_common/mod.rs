// Helpers shared by the apps_* tests (C ABI, smoltcp, VNFs): building the C examples
// with gcc against libfastpath_net, skip-or-fail for gcc and the library, and JSON field checks.
//! Helpers of the apps_* integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration::{bin_dir, run_with_timeout, skip_or_fail, workspace_dir, TestDir};
use serde_json::Value;

/// How long gcc may take for one example.
const GCC_TIMEOUT: Duration = Duration::from_secs(45);

/// Whether gcc and the built libfastpath_net (.so and .a) are there; else skips.
pub fn c_toolchain(test: &str) -> bool {
    if !Command::new("gcc").arg("--version").output().is_ok_and(|o| o.status.success()) {
        skip_or_fail(test, "gcc is not installed (apt-get install gcc)");
        return false;
    }
    let dir = bin_dir();
    for f in ["libfastpath_net.so", "libfastpath_net.a"] {
        if !dir.join(f).is_file() {
            skip_or_fail(
                test,
                &format!("{f} not found in {} (build with `cargo build --release --workspace`)", dir.display()),
            );
            return false;
        }
    }
    true
}

/// What a program linking libfastpath_net.a also needs (Rust's std on glibc).
const STATIC_LINK_LIBS: [&str; 7] = ["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// How a C example links libfastpath_net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The .so, with an rpath to the build directory.
    Shared,
    /// The .a archive.
    Static,
    /// The .so, with an rpath to where the hook's `fastpath.io/inject` mounts it in a
    /// container (`/usr/local/lib/fastpath`).
    Injected,
}

/// Where `fastpath.io/inject` mounts the library inside a container.
pub const INJECTED_LIB_DIR: &str = "/usr/local/lib/fastpath";

/// Compiles `examples/c/NAME.c` into `dir` with -Wall -Wextra -Werror, linked as `link` says.
pub fn build_c(dir: &TestDir, name: &str, link: Link) -> Result<PathBuf, String> {
    let lib = bin_dir();
    let src = workspace_dir().join("examples").join("c").join(format!("{name}.c"));
    let out = dir.join(&match link {
        Link::Shared => name.to_string(),
        Link::Static => format!("{name}-static"),
        Link::Injected => format!("{name}-injected"),
    });
    let mut cmd = Command::new("gcc");
    cmd.args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-std=c11", "-O2", "-I"])
        .arg(workspace_dir().join("netlib").join("ffi").join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&out);
    match link {
        Link::Static => {
            cmd.arg(lib.join("libfastpath_net.a")).args(STATIC_LINK_LIBS);
        }
        Link::Shared => {
            cmd.arg("-L").arg(&lib).arg("-lfastpath_net").arg(format!("-Wl,-rpath,{}", lib.display()));
        }
        Link::Injected => {
            cmd.arg("-L").arg(&lib).arg("-lfastpath_net").arg(format!("-Wl,-rpath,{INJECTED_LIB_DIR}"));
        }
    }
    let o = run_with_timeout(&mut cmd, GCC_TIMEOUT)?;
    if !o.status.success() {
        return Err(format!(
            "gcc {}: {}\n{}{}",
            src.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(out)
}

/// A number field of a JSON result as f64.
pub fn num(v: Option<&Value>, k: &str) -> Option<f64> {
    v.and_then(|v| v.get(k)).and_then(Value::as_f64)
}

/// A u64 field of a JSON result.
pub fn int(v: Option<&Value>, k: &str) -> Option<u64> {
    v.and_then(|v| v.get(k)).and_then(Value::as_u64)
}

/// The JSON result as text for messages.
pub fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "no JSON line on stdout".to_string(), Value::to_string)
}

/// `vu:PATH` etc.
pub fn spec(kind: &str, p: &Path) -> String {
    format!("{kind}:{}", p.display())
}
