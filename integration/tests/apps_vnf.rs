// The VNFs end to end: flowgen (vhost, IPv4 flows) → lb or fw (vu in, vu out) → flowgen,
// checking checksums after rewriting, which backend each flow reached, a live backend
// added with SIGHUP, and the firewall's per-rule counts.
//! End to end: lb and fw between two ports of flowgen.

mod apps_common;

use std::time::{Duration, Instant};

use apps_common::{int, show, spec};
use integration::{
    app_flags, require, serial, stamp, wait_for_socket, wait_until, Peers, Proc, TestDir, Verdict, SETUP_TIMEOUT,
    VU_LINK_UP,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const BACKENDS: [&str; 3] = ["02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03"];
const NEW_BACKEND: &str = "02:00:00:00:01:04";
/// The first rule of the firewall test, as fw's counter reports name it.
const FW_RULE_1: &str = "(line   2) deny udp 10.0.0.0/25 any -> any any";

/// flowgen sending on `in.sock` and receiving on `out.sock` (both vhost, listening).
fn flowgen(peers: &Peers, dir: &TestDir, extra: &[&str]) -> Proc {
    let mut a: Vec<String> = vec![
        "--port".into(),
        spec("vhost", &dir.join("in.sock")),
        "--rx".into(),
        spec("vhost", &dir.join("out.sock")),
        "--check".into(),
        "--drain-secs".into(),
        "1".into(),
    ];
    a.extend(extra.iter().map(|s| (*s).to_string()));
    a.extend(app_flags());
    Proc::spawn("flowgen", dir, &peers.bin("flowgen"), &a, &[])
}

/// The VNF `bin` from `in.sock` to `out.sock` (both vu).
fn vnf(peers: &Peers, dir: &TestDir, bin: &str, extra: &[&str]) -> Proc {
    let mut a: Vec<String> =
        vec!["--in".into(), spec("vu", &dir.join("in.sock")), "--out".into(), spec("vu", &dir.join("out.sock"))];
    a.extend(extra.iter().map(|s| (*s).to_string()));
    a.extend(app_flags());
    Proc::spawn(bin, dir, &peers.bin(bin), &a, &[])
}

/// Starts flowgen, waits for its sockets, starts the VNF.
fn start(
    peers: &Peers,
    dir: &TestDir,
    v: Verdict,
    gen_args: &[&str],
    bin: &str,
    vnf_args: &[&str],
) -> (Verdict, Proc, Proc) {
    let mut gen = flowgen(peers, dir, gen_args);
    for s in ["in.sock", "out.sock"] {
        if !wait_for_socket(&dir.join(s), SETUP_TIMEOUT) {
            v.abort(format!("flowgen: expected it to listen on {s} within {SETUP_TIMEOUT:?}"), &mut [&mut gen]);
        }
    }
    let f = vnf(peers, dir, bin, vnf_args);
    (v, gen, f)
}

/// Waits for flowgen to finish, then stops the VNF; their JSON results.
fn finish(v: &mut Verdict, gen: &mut Proc, f: &mut Proc) -> (Option<Value>, Option<Value>) {
    if let Some(s) = gen.wait_timeout(Duration::from_secs(30)) {
        v.check(s.success(), || format!("flowgen: expected exit status 0, got {s}"));
    } else {
        v.fail("flowgen: expected it to finish within 30 s");
        gen.stop(Signal::SIGINT, Duration::from_secs(3));
    }
    let st = f.stop(Signal::SIGTERM, Duration::from_secs(5));
    v.check(st.success(), || format!("{}: expected exit status 0 after SIGTERM, got {st}", f.name()));
    (gen.last_json(), f.last_json())
}

/// Prints flowgen's and the VNF's results and the time since `t0`, then fails with the
/// problems of `v`, if any.
fn done(test: &str, t0: Instant, v: Verdict, gen: (&mut Proc, Option<&Value>), vnf: (&mut Proc, Option<&Value>)) {
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("[{}] {test}: flowgen {} {} {} in {secs:.2} s", stamp(), show(gen.1), vnf.0.name(), show(vnf.1));
    v.finish(&mut [gen.0, vnf.0]);
}

/// Every frame sent came back, intact.
fn check_all_back(v: &mut Verdict, g: Option<&Value>, n: u64) {
    v.check(
        int(g, "sent") == Some(n)
            && int(g, "received") == Some(n)
            && int(g, "bad") == Some(0)
            && int(g, "foreign") == Some(0),
        || format!("flowgen: expected \"sent\":{n}, \"received\":{n}, \"bad\":0, \"foreign\":0, got {}", show(g)),
    );
}

/// Frames lb has balanced so far, by its counters (SIGUSR1 prints them on stderr as
/// `backend MAC: N packets` lines, then `not IPv4 (dropped): N packets`): asks for a report,
/// then sums the backends of the last complete one (0 before the first).
fn balanced(lb: &mut Proc) -> u64 {
    lb.signal(Signal::SIGUSR1);
    let mut sum = 0;
    let mut last = 0;
    for l in lb.stderr().lines() {
        let packets =
            || l.rsplit_once(": ").and_then(|(_, n)| n.strip_suffix(" packets")).and_then(|n| n.parse::<u64>().ok());
        if l.starts_with("backend ") {
            sum += packets().unwrap_or(0);
        } else if l.starts_with("not IPv4 (dropped): ") {
            last = sum;
            sum = 0;
        }
    }
    last
}

fn per_mac(g: Option<&Value>, key: &str) -> Vec<(String, u64)> {
    g.and_then(|g| g.get(key))
        .and_then(Value::as_object)
        .map_or_else(Vec::new, |m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
}

#[test]
fn lb_spreads_flows_and_rewrites_intact() {
    const TEST: &str = "lb_spreads_flows_and_rewrites_intact";
    const N: u64 = 20_000;
    let Some(peers) = require(TEST, &["flowgen", "lb"], false) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("lb");
    let n = N.to_string();
    let nat = format!("{},172.16.0.2", BACKENDS[1]);
    let (mut v, mut gen, mut lb) = start(
        &peers,
        &dir,
        Verdict::new(TEST),
        &["--flows", "512", "--proto", "mix", "--size", "70", "--count", &n, "--rate", "50000"],
        "lb",
        &["--backend", BACKENDS[0], "--backend", &nat, "--backend", BACKENDS[2], "--mac", "02:00:00:00:00:1b"],
    );
    let (g, l) = finish(&mut v, &mut gen, &mut lb);
    check_all_back(&mut v, g.as_ref(), N);
    v.check(int(g.as_ref(), "flows_seen") == Some(512) && int(g.as_ref(), "moved") == Some(0), || {
        format!(
            "flowgen: expected all 512 flows seen, each always at one backend (\"moved\":0), got {}",
            show(g.as_ref())
        )
    });
    let macs = per_mac(g.as_ref(), "per_mac");
    v.check(
        macs.len() == 3 && macs.iter().all(|(m, c)| BACKENDS.contains(&m.as_str()) && *c > N / 5 && *c < N / 2),
        || format!("flowgen: expected the frames spread over the 3 backends (each 20%..50%), got {macs:?}"),
    );
    v.check(int(l.as_ref(), "forwarded") == Some(N) && int(l.as_ref(), "filtered") == Some(0), || {
        format!("lb: expected \"forwarded\":{N}, \"filtered\":0, got {}", show(l.as_ref()))
    });
    done(TEST, t0, v, (&mut gen, g.as_ref()), (&mut lb, l.as_ref()));
}

#[test]
fn lb_added_backend_takes_flows_only_from_the_others() {
    const TEST: &str = "lb_added_backend_takes_flows_only_from_the_others";
    const N: u64 = 60_000;
    const FLOWS: u64 = 1000;
    let Some(peers) = require(TEST, &["flowgen", "lb"], false) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("lbhup");
    let file = dir.join("backends.txt");
    std::fs::write(&file, BACKENDS.join("\n")).expect("write backends file");
    let (n, flows, path) = (N.to_string(), FLOWS.to_string(), file.display().to_string());
    let (mut v, mut gen, mut lb) = start(
        &peers,
        &dir,
        Verdict::new(TEST),
        &["--flows", &flows, "--count", &n, "--rate", "30000"],
        "lb",
        &["--backends", &path],
    );
    // Both of lb's ports up, then about a third of the traffic before the new backend.
    if !wait_until(SETUP_TIMEOUT, || lb.stderr().matches(VU_LINK_UP).count() >= 2) {
        v.abort("lb: expected both of its ports up", &mut [&mut gen, &mut lb]);
    }
    if !wait_until(Duration::from_secs(20), || balanced(&mut lb) >= N / 3) {
        v.abort(format!("lb: expected {} frames balanced within 20 s", N / 3), &mut [&mut gen, &mut lb]);
    }
    std::fs::write(&file, format!("{}\n{NEW_BACKEND}\n", BACKENDS.join("\n"))).expect("rewrite backends file");
    lb.signal(Signal::SIGHUP);
    v.check(lb.wait_for_stderr("lb: reloaded: 4 backend(s)", Duration::from_secs(5)), || {
        "lb: expected \"lb: reloaded: 4 backend(s)\" on stderr after SIGHUP".into()
    });
    let (g, l) = finish(&mut v, &mut gen, &mut lb);
    check_all_back(&mut v, g.as_ref(), N);
    let moved_to = per_mac(g.as_ref(), "moved_to");
    v.check(moved_to.iter().all(|(m, _)| m == NEW_BACKEND), || {
        format!("flowgen: expected flows to move only onto the new backend {NEW_BACKEND}, got moves onto {moved_to:?}")
    });
    let moved = int(g.as_ref(), "moved_flows").unwrap_or(0);
    // Rendezvous hashing: ~1/(N+1) = 1/4 of the flows move.
    v.check((FLOWS * 15 / 100..=FLOWS * 35 / 100).contains(&moved), || {
        format!("flowgen: expected about 1/4 of {FLOWS} flows to move (150..=350), got {moved}: {}", show(g.as_ref()))
    });
    v.check(int(g.as_ref(), "moved") == Some(moved), || "flowgen: a flow moved more than once".to_string());
    done(TEST, t0, v, (&mut gen, g.as_ref()), (&mut lb, l.as_ref()));
}

#[test]
fn fw_filters_by_first_matching_rule() {
    const TEST: &str = "fw_filters_by_first_matching_rule";
    const N: u64 = 20_000;
    // Flows 0..=255 come from 10.0.0.0..=10.0.0.255, round-robin: flows 0..=127 (the /25)
    // are denied by rule 1, flows 128..=255 allowed by rule 2.
    const DENIED: u64 = 10_016;
    const ALLOWED: u64 = 9_984;
    const RULES: &str = "# test rules\n\
        deny udp 10.0.0.0/25 any -> any any\n\
        allow udp 10.0.0.0/16 1024-65535 -> 192.168.1.0/24 53\n\
        deny tcp any any -> any 22\n\
        default deny\n";
    let Some(peers) = require(TEST, &["flowgen", "fw"], false) else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("fw");
    let rules = dir.join("rules.txt");
    std::fs::write(&rules, RULES).expect("write rules");
    let (n, path) = (N.to_string(), rules.display().to_string());
    let (mut v, mut gen, mut fw) = start(
        &peers,
        &dir,
        Verdict::new(TEST),
        &["--flows", "256", "--src", "10.0.0.0", "--count", &n, "--rate", "50000"],
        "fw",
        &["--rules", &path],
    );
    // fw takes SIGUSR1 from before it opens its ports: once one is up, it reports.
    if fw.wait_for_stderr(VU_LINK_UP, SETUP_TIMEOUT) {
        fw.signal(Signal::SIGUSR1);
        v.check(fw.wait_for_stderr(FW_RULE_1, Duration::from_secs(5)), || {
            "fw: expected its counters on stderr within 5 s of SIGUSR1".into()
        });
    }
    let (g, f) = finish(&mut v, &mut gen, &mut fw);
    v.check(
        int(g.as_ref(), "sent") == Some(N)
            && int(g.as_ref(), "received") == Some(ALLOWED)
            && int(g.as_ref(), "bad") == Some(0)
            && int(g.as_ref(), "flows_seen") == Some(128),
        || {
            format!(
                "flowgen: expected \"sent\":{N}, \"received\":{ALLOWED}, \"bad\":0, \"flows_seen\":128, got {}",
                show(g.as_ref())
            )
        },
    );
    let rule = |i: usize| f.as_ref().and_then(|f| f["acl"]["rules"][i]["packets"].as_u64());
    let default = f.as_ref().and_then(|f| f["acl"]["default"]["packets"].as_u64());
    v.check(rule(0) == Some(DENIED) && rule(1) == Some(ALLOWED) && rule(2) == Some(0) && default == Some(0), || {
        format!("fw: expected rule 1 {DENIED} packets, rule 2 {ALLOWED}, rule 3 0, default 0; got {}", show(f.as_ref()))
    });
    v.check(int(f.as_ref(), "forwarded") == Some(ALLOWED) && int(f.as_ref(), "filtered") == Some(DENIED), || {
        format!("fw: expected \"forwarded\":{ALLOWED}, \"filtered\":{DENIED}, got {}", show(f.as_ref()))
    });
    let reports = fw.stderr().matches(FW_RULE_1).count();
    v.check(reports >= 2, || {
        format!("fw: expected its counters on stderr on SIGUSR1 and at exit (2 reports), saw {reports}")
    });
    done(TEST, t0, v, (&mut gen, g.as_ref()), (&mut fw, f.as_ref()));
}
