// Checks the hand-kept header include/fastpath_net.h against the built library: the same
// functions as the exported fp_* symbols, matching constants and layout, and C that compiles cleanly.
//! Header vs library.

mod common;

use common::{build_shared, c_test, gcc_strict, have, header, lib_dir, manifest, run};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Function names the header declares: `... fp_name(` at the start of a declaration line.
fn header_functions() -> BTreeSet<String> {
    let text = std::fs::read_to_string(header()).expect("header");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with("/*") || l.starts_with('*') || l.starts_with('#') || l.starts_with("typedef") {
            continue;
        }
        if let Some(i) = l.find("fp_") {
            let rest = &l[i..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if rest[end..].starts_with('(') {
                names.insert(rest[..end].to_string());
            }
        }
    }
    names
}

/// `fp_*` functions the shared library exports.
fn exported_functions(so: &Path) -> BTreeSet<String> {
    let out = run(Command::new("nm").args(["-D", "--defined-only"]).arg(so));
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().rev();
            let name = w.next()?;
            let kind = w.next()?;
            (kind == "T" && name.starts_with("fp_")).then(|| name.to_string())
        })
        .collect()
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    const TEST: &str = "header_declares_exactly_the_exported_functions";
    if !have("nm", TEST) {
        return;
    }
    let declared = header_functions();
    let exported = exported_functions(&lib_dir().join("libfastpath_net.so"));
    assert!(declared.len() >= 15, "the header parse found only {declared:?}");
    let missing: Vec<_> = exported.difference(&declared).collect();
    let stale: Vec<_> = declared.difference(&exported).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "exported but not in the header: {missing:?}; in the header but not exported: {stale:?}"
    );
}

/// A C program: constants and layout match the Rust side, error paths behave.
fn abi_check_c() -> String {
    use fastpath_net::*;
    use netlib::vnet_hdr as v;
    use std::fmt::Write as _;
    let mut s = String::from("#define _POSIX_C_SOURCE 200809L\n#include <stddef.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include \"fastpath_net.h\"\n");
    for (name, v) in [
        ("FP_OK", FP_OK),
        ("FP_ERR_NULL", FP_ERR_NULL),
        ("FP_ERR_ARG", FP_ERR_ARG),
        ("FP_ERR_OPEN", FP_ERR_OPEN),
        ("FP_ERR_NOBUF", FP_ERR_NOBUF),
        ("FP_ERR_HANDLE", FP_ERR_HANDLE),
        ("FP_ERR_LINK", FP_ERR_LINK),
        ("FP_ERR_CONFIG", FP_ERR_CONFIG),
        ("FP_ERR_INTERNAL", FP_ERR_INTERNAL),
    ] {
        let _ = writeln!(s, "_Static_assert({name} == {v}, \"{name} differs from the library\");");
    }
    let _ = writeln!(
        s,
        "_Static_assert(sizeof(struct fp_counters) == {}, \"struct fp_counters size\");",
        std::mem::size_of::<fp_counters>()
    );
    for (f, off) in [
        ("rx_packets", std::mem::offset_of!(fp_counters, rx_packets)),
        ("rx_bytes", std::mem::offset_of!(fp_counters, rx_bytes)),
        ("tx_packets", std::mem::offset_of!(fp_counters, tx_packets)),
        ("tx_bytes", std::mem::offset_of!(fp_counters, tx_bytes)),
        ("rx_errors", std::mem::offset_of!(fp_counters, rx_errors)),
        ("tx_dropped", std::mem::offset_of!(fp_counters, tx_dropped)),
        ("resets", std::mem::offset_of!(fp_counters, resets)),
    ] {
        let _ = writeln!(s, "_Static_assert(offsetof(struct fp_counters, {f}) == {off}, \"fp_counters.{f}\");");
    }
    let _ = writeln!(s, "_Static_assert(sizeof(fp_pkt) == {}, \"fp_pkt size\");", std::mem::size_of::<fp_pkt>());
    let _ = writeln!(
        s,
        "_Static_assert(sizeof(struct fp_net_hdr) == {}, \"struct fp_net_hdr size\");",
        std::mem::size_of::<fp_net_hdr>()
    );
    for (f, off) in [
        ("flags", std::mem::offset_of!(fp_net_hdr, flags)),
        ("gso_type", std::mem::offset_of!(fp_net_hdr, gso_type)),
        ("hdr_len", std::mem::offset_of!(fp_net_hdr, hdr_len)),
        ("gso_size", std::mem::offset_of!(fp_net_hdr, gso_size)),
        ("csum_start", std::mem::offset_of!(fp_net_hdr, csum_start)),
        ("csum_offset", std::mem::offset_of!(fp_net_hdr, csum_offset)),
    ] {
        let _ = writeln!(s, "_Static_assert(offsetof(struct fp_net_hdr, {f}) == {off}, \"fp_net_hdr.{f}\");");
    }
    for (name, val) in [
        ("FP_NET_HDR_F_NEEDS_CSUM", u64::from(v::HDR_F_NEEDS_CSUM)),
        ("FP_NET_HDR_GSO_NONE", u64::from(v::GSO_NONE)),
        ("FP_NET_HDR_GSO_TCPV4", u64::from(v::GSO_TCPV4)),
        ("FP_NET_HDR_GSO_TCPV6", u64::from(v::GSO_TCPV6)),
        ("FP_TX_CSUM", v::VIRTIO_NET_F_CSUM),
        ("FP_TX_TSO4", v::VIRTIO_NET_F_HOST_TSO4),
        ("FP_TX_TSO6", v::VIRTIO_NET_F_HOST_TSO6),
    ] {
        let _ = writeln!(s, "_Static_assert({name} == {val}, \"{name} differs from the library\");");
    }
    s.push_str(
        r#"
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "line %d: %s (last error: %s)\n", __LINE__, #cond, fp_last_error()); return 1; } } while (0)
int main(void) {
    fp_port *p = NULL;
    fp_pkt h = 0;
    struct fp_counters c;
    CHECK(strcmp(fp_version(), "0.1.0") == 0);
    CHECK(strcmp(fp_last_error(), "") == 0);
    CHECK(fp_open(NULL, 64, 256, &p) == FP_ERR_NULL);
    CHECK(strstr(fp_last_error(), "spec is NULL") != NULL);
    CHECK(fp_open("nonsense", 64, 256, &p) == FP_ERR_ARG);
    CHECK(strstr(fp_last_error(), "'nonsense' is not a port spec") != NULL);
    CHECK(fp_open("vhost:/nonexistent-dir/x.sock", 64, 256, &p) == FP_ERR_OPEN);
    CHECK(p == NULL);
    CHECK(fp_rx_burst(NULL, &h, 1) == FP_ERR_NULL);
    CHECK(fp_tx_burst(NULL, &h, 1) == FP_ERR_NULL);
    CHECK(fp_pkt_free(NULL, 0) == FP_ERR_NULL);
    CHECK(fp_counters(NULL, &c) == FP_ERR_NULL);
    fp_close(NULL);
    uint8_t mac[6] = {0};
    CHECK(fp_port_mac(NULL, mac) == FP_ERR_NULL);
    /* The port the config names (FASTPATH_CONFIG, a vu-server port: it opens without a
     * peer) has the hook's MAC; a port of no config has none. */
    if (getenv("FASTPATH_CONFIG") != NULL) {
        CHECK(fp_open_discovered(NULL, 64, 256, &p) == FP_OK);
        CHECK(fp_port_mac(p, NULL) == FP_ERR_NULL);
        CHECK(fp_port_mac(p, mac) == FP_OK);
        CHECK(mac[0] == 0x02 && mac[1] == 0x1a && mac[2] == 0x2b && mac[3] == 0x3c && mac[4] == 0x4d && mac[5] == 0x5e);
        fp_close(p);
        CHECK(fp_open(getenv("FP_OTHER_SPEC"), 64, 256, &p) == FP_OK);
        memset(mac, 0, sizeof mac);
        CHECK(fp_port_mac(p, mac) == FP_ERR_CONFIG);
        CHECK(strstr(fp_last_error(), "has no MAC") != NULL);
        CHECK(mac[0] == 0 && mac[5] == 0);
        fp_close(p);
        puts("mac ok");
    }
    puts("abi ok");
    return 0;
}
"#,
    );
    s
}

/// A container config as fastpath-hook writes it, with one port: a listening (`server`)
/// virtio-user socket at `sock`, so that it opens without a peer, with MAC `mac`.
fn config_with_mac(sock: &Path, mac: &str) -> String {
    format!(
        r#"{{"version":1,"container_id":"c","ports":[{{"name":"c-br0","bridge":"br0","socket":"{}","mode":"server","mac":"{mac}"}}],"uid":0,"gid":0}}"#,
        sock.display()
    )
}

#[test]
fn c_compiles_cleanly_against_the_header_and_both_libraries() {
    const TEST: &str = "c_compiles_cleanly_against_the_header_and_both_libraries";
    let Some((lib, tmp)) = c_test(TEST, "header") else { return };
    let src = tmp.join("abi_check.c");
    std::fs::write(&src, abi_check_c()).expect("write C");

    // Against the shared library.
    let dyn_bin = tmp.join("abi_check_dyn");
    build_shared(&src, &dyn_bin, &lib);
    assert!(run(&mut Command::new(&dyn_bin)).contains("abi ok"));
    // The port's MAC from a config as the hook writes it.
    let cfg = tmp.join("config.json");
    std::fs::write(&cfg, config_with_mac(&tmp.join("br0.sock"), "02:1a:2b:3c:4d:5e")).expect("write config");
    let other = format!("vu-server:{}", tmp.join("other.sock").display());
    let out = run(Command::new(&dyn_bin).env("FASTPATH_CONFIG", &cfg).env("FP_OTHER_SPEC", &other));
    assert!(out.contains("mac ok") && out.contains("abi ok"), "{out}");

    // Against the static archive.
    let static_bin = tmp.join("abi_check_static");
    run(gcc_strict(&static_bin).arg(&src).arg(lib.join("libfastpath_net.a")).args([
        "-lgcc_s",
        "-lutil",
        "-lrt",
        "-lpthread",
        "-lm",
        "-ldl",
        "-lc",
    ]));
    assert!(run(&mut Command::new(&static_bin)).contains("abi ok"));

    // The C examples compile with the same strictness.
    let examples = manifest().join("..").join("..").join("examples").join("c");
    for name in ["fp_send", "fp_echo"] {
        let bin = tmp.join(name);
        run(gcc_strict(&bin).arg(examples.join(format!("{name}.c"))).arg("-L").arg(&lib).arg("-lfastpath_net"));
    }

    // The header is valid C++ too.
    if Command::new("g++").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let cpp = tmp.join("h.cpp");
        std::fs::write(&cpp, "#include \"fastpath_net.h\"\nint main() { return fp_last_error() == nullptr; }\n")
            .expect("write C++");
        run(Command::new("g++")
            .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-std=c++17", "-I"])
            .arg(manifest().join("include"))
            .arg(&cpp)
            .arg("-L")
            .arg(&lib)
            .arg("-lfastpath_net")
            .arg("-o")
            .arg(tmp.join("h_cpp")));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
