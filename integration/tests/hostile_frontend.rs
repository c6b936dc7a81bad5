// Every hostile case against a running fastpathd, with real traffic between two
// other ports beside it: the switch must survive, reset only the hostile port, log
// one line naming it, and the neighbours must lose nothing.
//! Hostile vhost-user frontends against fastpathd.
#![allow(clippy::many_single_char_names)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::{bin_dir, fastpathctl_list_with, fastpathd_args, fastpathd_port, port_entry};

const CASES: &[(&str, &str)] = &[
    ("short-payload", "payload of 4 bytes"),
    ("truncated", ""),
    ("missing-fds", "0 fds attached"),
    ("extra-fds", "1 fds attached"),
    ("overlap", "overlaps"),
    ("wrap", "bad region size"),
    ("too-many-slots", "9 regions"),
    ("add-too-many", "more than 32 memory regions"),
    ("ring-outside", "outside every memory region"),
    ("num-3", "size 3"),
    ("num-0", "size 0"),
    ("num-65536", "size 65536"),
    ("avail-jump", "entries ahead"),
    ("loop", "descriptor chain from head 0"),
    ("next-past-end", "past the table"),
    ("len-overflow", "outside the frontend's memory"),
    ("straddle", "outside the frontend's memory"),
    ("outside", "outside the frontend's memory"),
    ("used-scribble", ""),
];

/// Kills the child's process when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn spawn(name: &'static str, args: &[&str], stdout: bool) -> Proc {
    let mut c = Command::new(bin_dir().join(name));
    c.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
    c.stdout(if stdout { Stdio::piped() } else { Stdio::null() });
    Proc(c.spawn().unwrap_or_else(|e| panic!("start {name}: {e}")))
}

fn wait_path(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ctl_list(ctl: &Path) -> Vec<serde_json::Value> {
    fastpathctl_list_with(&bin_dir().join("fastpathctl"), ctl).unwrap_or_else(|e| panic!("{e}"))
}

fn port<'a>(list: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    port_entry(list, name).unwrap_or_else(|| panic!("no port {name}"))
}

#[test]
fn hostile_frontends_reset_only_their_port() {
    let bins = bin_dir();
    for b in ["fastpathd", "fastpathctl", "pktgen", "sink"] {
        if !bins.join(b).exists() {
            let msg = format!("{b} not built in {} (cargo build --release --workspace)", bins.display());
            assert!(std::env::var("FASTPATH_REQUIRE_PEERS").as_deref() != Ok("1"), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("fp-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = |n: &str| dir.join(n).to_str().expect("utf8").to_string();
    let (ctl, a, b, h) = (path("ctl.sock"), path("a.sock"), path("b.sock"), path("h.sock"));
    let sw_args = fastpathd_args(
        Path::new(&ctl),
        &["br0", "br1"],
        &[
            fastpathd_port("br0", "a", "vhost", Path::new(&a)),
            fastpathd_port("br0", "b", "vhost", Path::new(&b)),
            fastpathd_port("br1", "h", "vhost", Path::new(&h)),
        ],
    );
    let mut sw = spawn("fastpathd", &sw_args.iter().map(String::as_str).collect::<Vec<_>>(), false);
    let log = sw.0.stderr.take().expect("stderr");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l2 = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            l2.lock().expect("lock").push(line);
        }
    });
    for s in [&ctl, &a, &b, &h] {
        wait_path(Path::new(s));
    }
    // Traffic beside the hostile port, for the whole test (stopped at the end).
    let common = ["--queue-size", "1024", "--idle-sleep-us", "20", "--json", "--quiet"];
    let mut sink =
        spawn("sink", &[&["--port", &format!("vu:{a}"), "--check", "--idle-exit", "5"], &common[..]].concat(), true);
    std::thread::sleep(Duration::from_millis(300));
    let gen = spawn("pktgen", &[&["--port", &format!("vu:{b}"), "--rate", "40000"], &common[..]].concat(), false);
    let hostile = env!("CARGO_BIN_EXE_hostile");
    let mut resets = 0u64;
    for (case, expect) in CASES {
        let before = lines.lock().expect("lock").len();
        let out = Command::new(hostile).args([case, h.as_str()]).output().expect("hostile");
        assert!(out.status.success(), "hostile {case}: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
        assert!(sw.0.try_wait().expect("wait").is_none(), "fastpathd died on case {case}");
        let list = ctl_list(Path::new(&ctl));
        let hp = port(&list, "h");
        resets += 1;
        assert_eq!(hp["stats"]["resets"].as_u64(), Some(resets), "case {case}: port h resets, list: {hp}");
        let new: Vec<String> =
            lines.lock().expect("lock")[before..].iter().filter(|l| l.contains("WARN")).cloned().collect();
        if expect.is_empty() {
            assert!(new.is_empty(), "case {case}: expected no fault line, got {new:?}");
        } else {
            assert_eq!(new.len(), 1, "case {case}: expected one log line, got {new:?}");
            assert!(
                new[0].contains("port h") && new[0].contains(expect),
                "case {case}: log line {:?} should name port h and '{expect}'",
                new[0]
            );
        }
        for other in ["a", "b"] {
            assert_eq!(port(&list, other)["stats"]["resets"].as_u64(), Some(0), "case {case}: port {other} was reset");
        }
    }
    drop(gen);
    let mut out = String::new();
    let t = Instant::now();
    while sink.0.try_wait().expect("wait").is_none() && t.elapsed() < Duration::from_mins(1) {
        std::thread::sleep(Duration::from_millis(100));
    }
    sink.0.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("{}")).expect("sink json");
    let list = ctl_list(Path::new(&ctl));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("neighbours' traffic during {} hostile cases: {v}", CASES.len());
    let received = v["received"].as_u64().unwrap_or(0);
    let sent = port(&list, "b")["stats"]["rx_packets"].as_u64().unwrap_or(0);
    assert!(sent > 0, "pktgen sent nothing");
    assert_eq!(v["bad"].as_u64(), Some(0), "damaged frames: {v}");
    assert_eq!(v["reordered"].as_u64(), Some(0), "reordered frames: {v}");
    assert_eq!(received, sent, "the neighbours lost packets: switch took {sent} from pktgen, sink got {received}: {v}");
}
