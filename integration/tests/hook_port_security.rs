// Port security with the hook's defaults: three runc containers on br0, a victim, a sender to
// the victim's MAC and a spoofer sending with the victim's MAC; the switch's counters say where frames went.
//! A container that spoofs its neighbour's MAC diverts nothing.

mod hook_common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use hook_common::{finish, require, wait_ports_up, Fixture, Rt};
use integration::{last_json_line, output_text, spawn_piped, wait_output, wait_until};
use serde_json::Value;

/// Frames the legitimate sender sends to the victim.
const FRAMES: u64 = 20_000;
/// The apps' common flags (each app's port comes from its config.json).
const APP: &str = "--idle-sleep-us 20 --queue-size 1024 --nbufs 4096 --json --quiet --link-timeout 30";
/// Three containers without exclusive cores (the pool has two), each with a port on br0.
const ANN: [(&str, &str); 2] = [("fastpath.io/hugepages", "32Mi"), ("fastpath.io/vhost-user", "br0")];

/// One port's entry in `fastpathctl list`, by the hook's name for container `id`'s port.
fn port<'a>(list: &'a [Value], id: &str) -> &'a Value {
    let name = format!("fp-{id}-br0");
    list.iter().find(|p| p["name"] == name.as_str()).unwrap_or_else(|| panic!("no port {name} in {list:?}"))
}

fn stat(p: &Value, key: &str) -> u64 {
    p["stats"][key].as_u64().unwrap_or_else(|| panic!("no stats.{key} in {p}"))
}

/// Frames the switch sent toward a port: taken by its app, or dropped at its full ring.
fn directed(p: &Value) -> u64 {
    stat(p, "tx_packets") + stat(p, "tx_dropped")
}

fn learned(p: &Value) -> Vec<String> {
    p["macs"].as_array().map_or_else(Vec::new, |m| m.iter().filter_map(|v| v.as_str().map(String::from)).collect())
}

/// The MAC the hook gave container `id` on br0 (its ledger entry).
fn mac_of(fx: &Fixture, id: &str) -> String {
    let e = fx.entries().get(id).cloned().unwrap_or_else(|| panic!("{id} not in the ledger {}", fx.ledger()));
    e["ports"][0]["mac"].as_str().unwrap_or_else(|| panic!("{id}: no port MAC in its ledger entry {e}")).to_string()
}

/// Stops the containers still running (SIGTERM) and waits for them.
fn stop(fx: &Fixture, running: Vec<(&str, Child)>) {
    for (name, c) in running {
        let o = finish(fx, name, c, Duration::ZERO);
        eprintln!("{name}: {}", String::from_utf8_lossy(&o.stdout).trim());
    }
}

/// Where the frames went while a spoofer claimed the victim's MAC.
struct Outcome {
    /// `fastpathctl list` once the sender is done (and its port gone), before the others stop.
    list: Vec<Value>,
    /// The victim's MAC.
    victim_mac: String,
    /// The sender's JSON result.
    sender: Value,
}

/// The victim (pktgen sending to its own MAC: the bridge learns it on the victim's port and
/// forwards none of it), then the spoofer (pktgen with the victim's MAC as its source, with
/// hook.toml `spoofer_config` or the fixture's), then the sender: FRAMES frames to the victim's MAC.
fn run(fx: &mut Fixture, spoofer_config: Option<&Path>) -> Outcome {
    // The victim finds its MAC in the config.json the hook wrote, as the apps do.
    let victim = format!(
        "MAC=$(grep -o '\"mac\": *\"[^\"]*\"' /run/fastpath/config.json | cut -d'\"' -f4); \
         exec pktgen --dst-mac \"$MAC\" --rate 20 --secs 120 {APP}"
    );
    let mut v = Some(spawn_piped(&mut fx.run_cmd("fpvictim", &victim, &ANN, None)));
    wait_ports_up(fx, 1, "fpvictim", &mut v);
    let v = v.expect("running");
    let victim_mac = mac_of(fx, "fpvictim");
    let there = wait_until(Duration::from_secs(10), || learned(port(&fx.list(), "fpvictim")).contains(&victim_mac));
    if !there {
        let list = fx.list();
        stop(fx, vec![("fpvictim", v)]);
        panic!("the bridge did not learn the victim's {victim_mac} on its port within 10 s: {list:?}");
    }

    let spoof = format!("exec pktgen --src-mac {victim_mac} --rate 20000 --secs 120 {APP}");
    let mut s = Some(spawn_piped(&mut fx.run_cmd("fpspoof", &spoof, &ANN, spoofer_config)));
    wait_ports_up(fx, 2, "fpspoof", &mut s);
    let s = s.expect("running");
    // The spoofer is sending, whatever the switch does with its frames.
    let sending = wait_until(Duration::from_secs(10), || {
        let l = fx.list();
        let p = port(&l, "fpspoof");
        stat(p, "rx_packets") + stat(p, "drop_spoofed") >= 10_000
    });
    if !sending {
        let list = fx.list();
        stop(fx, vec![("fpvictim", v), ("fpspoof", s)]);
        panic!("the spoofer did not send 10,000 frames within 10 s: {list:?}");
    }

    let send = format!("exec pktgen --dst-mac {victim_mac} --count {FRAMES} --rate 10000 {APP}");
    let sender = spawn_piped(&mut fx.run_cmd("fpsender", &send, &ANN, None));
    let sender_out = wait_output(sender, Duration::from_secs(90));
    // Frames still in the victim's and the spoofer's rings settle.
    std::thread::sleep(Duration::from_millis(300));
    let list = fx.list();
    stop(fx, vec![("fpvictim", v), ("fpspoof", s)]);
    let sender_out = sender_out.unwrap_or_else(|e| panic!("sender container: {e}"));
    assert!(sender_out.status.success(), "sender container: {}", output_text(&sender_out));
    let sender = last_json_line(&String::from_utf8_lossy(&sender_out.stdout))
        .unwrap_or_else(|| panic!("sender: no JSON result: {}", output_text(&sender_out)));
    fx.assert_released();
    Outcome { list, victim_mac, sender }
}

#[test]
fn spoofing_a_neighbours_mac_diverts_nothing_by_default() {
    const TEST: &str = "spoofing_a_neighbours_mac_diverts_nothing_by_default";
    let Some(peers) = require(TEST, Some("runc")) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    let o = run(&mut fx, None);
    let (victim, spoofer) = (port(&o.list, "fpvictim"), port(&o.list, "fpspoof"));
    assert_eq!(o.sender["sent"].as_u64(), Some(FRAMES), "sender: {}", o.sender);
    // Every frame of the sender went to the victim's port (the victim's own frames to
    // itself are filtered), none to the spoofer's.
    assert_eq!(directed(victim), FRAMES, "the victim's port: {victim}");
    assert_eq!(directed(spoofer), 0, "the spoofer's port: {spoofer}");
    // The spoofer's frames were all dropped and counted, never learned.
    assert_eq!(stat(spoofer, "rx_packets"), 0, "the spoofer's port: {spoofer}");
    assert!(stat(spoofer, "drop_spoofed") >= 10_000, "the spoofer's port: {spoofer}");
    assert!(learned(spoofer).is_empty(), "the spoofer's port learned {:?}", learned(spoofer));
    assert!(learned(victim).contains(&o.victim_mac), "the victim's port: {victim}");
    // The victim sends with its own MAC: nothing of its is dropped (nor of the sender's:
    // all of them reached the victim's port).
    assert_eq!(stat(victim, "drop_spoofed"), 0, "the victim's port: {victim}");
    fx.assert_clean(&[]);
    eprintln!(
        "{TEST}: victim {} got {}/{FRAMES}, spoofer dropped {} in {:.1} s",
        o.victim_mac,
        directed(victim),
        stat(spoofer, "drop_spoofed"),
        t0.elapsed().as_secs_f64()
    );
}

/// The same spoofer on a port with `port_security = "off"` does divert the victim's
/// frames: what the test above would see without port security.
#[test]
fn spoofing_diverts_frames_when_port_security_is_off() {
    const TEST: &str = "spoofing_diverts_frames_when_port_security_is_off";
    let Some(peers) = require(TEST, Some("runc")) else { return };
    let t0 = Instant::now();
    let mut fx = Fixture::new(&peers, Rt::Runc, "0-1");
    let off = fx.config_plus("hook-off.toml", "port_security = \"off\"");
    let o = run(&mut fx, Some(&off));
    let (victim, spoofer) = (port(&o.list, "fpvictim"), port(&o.list, "fpspoof"));
    let (to_victim, to_spoofer) = (directed(victim), directed(spoofer));
    assert_eq!(stat(spoofer, "drop_spoofed"), 0, "the spoofer's port: {spoofer}");
    assert!(
        to_spoofer > FRAMES / 2,
        "with port security off, expected the spoofer to take most of the {FRAMES} frames, it took {to_spoofer} \
         (the victim {to_victim})"
    );
    fx.assert_clean(&[]);
    eprintln!(
        "{TEST}: the spoofer took {to_spoofer}/{FRAMES} of the victim's frames in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
