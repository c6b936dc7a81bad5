// Two workers on real threads behind the router, with in-process ports: placement, frames
// crossing between workers in order, floods, one switch's view for list, metrics and
// mirrors, and removal.
//! Fleet tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpath_host::proto::MirrorConfig;

use super::*;
use crate::config::PortConfig;
use crate::port::loopback::{Loopback, LoopbackPeer};
use crate::switch::AddPorts;
use crate::worker::Running;

struct Workers {
    tx: Sender<Command>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn two_workers() -> Workers {
    let first = Switch::new(&["br0".into(), "br1".into()], 300);
    let second = Switch::new(&["br0".into(), "br1".into()], 300).sharing_macs_with(&first);
    let stop = Arc::new(AtomicBool::new(false));
    let first_frame = Arc::new(FirstFrame::since(Instant::now()));
    let (tx, handles) = spawn(vec![first, second], &[None, None], &stop, Idle::Yield, &first_frame).unwrap();
    Workers { tx, stop, handles }
}

fn add(fleet: &Workers, name: &str, bridge: &str) -> LoopbackPeer {
    let (port, peer) = Loopback::new();
    let cfg = PortConfig::new(name, bridge, format!("/loopback/{name}"));
    Running(&fleet.tx).add_port(NewPort::with(cfg, Box::new(port))).unwrap();
    peer
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// A frame from MAC `src` to `dst` carrying `seq`.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_le_bytes());
    f
}

/// Waits until `peer` was delivered `n` frames (or 5 s passed); returns them.
fn delivered(peer: &LoopbackPeer, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while got.len() < n && Instant::now() < until {
        got.extend(peer.take_delivered());
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    got.extend(peer.take_delivered());
    got
}

fn ask<T>(w: &Workers, cmd: impl FnOnce(Sender<T>) -> Command) -> T {
    super::ask(&w.tx, cmd).expect("the router answers")
}

#[test]
fn frames_cross_workers_in_order_and_the_fleet_looks_like_one_switch() {
    let fleet = two_workers();
    // Placed on the worker with the fewest ports: a and c on worker 0, b and d on worker 1.
    let [pa, pb, pc, pd] =
        [("a", "br0"), ("b", "br0"), ("c", "br0"), ("d", "br1")].map(|(name, br)| add(&fleet, name, br));
    // Unknown destination: a's frame floods to b (the other worker) and c (its own), not d.
    pa.send(&frame(mac(2), mac(1), 0));
    assert_eq!(delivered(&pb, 1), [frame(mac(2), mac(1), 0)]);
    assert_eq!(delivered(&pc, 1), [frame(mac(2), mac(1), 0)]);
    assert!(pd.take_delivered().is_empty(), "another bridge");
    // b answers: a was learned by worker 0, in the table both share.
    pb.send(&frame(mac(1), mac(2), 0));
    assert_eq!(delivered(&pa, 1), [frame(mac(1), mac(2), 0)]);
    assert!(pc.take_delivered().is_empty(), "a known destination goes to its port alone");
    // 3,000 frames a -> b through the link (200 at a time, fewer than it holds), every one,
    // in order.
    let mut got = Vec::new();
    for chunk in 0..15 {
        for i in 1..=200 {
            pa.send(&frame(mac(2), mac(1), chunk * 200 + i));
        }
        got.extend(delivered(&pb, 200));
    }
    let seqs: Vec<u32> = got.iter().map(|f| u32::from_le_bytes(f[14..18].try_into().unwrap())).collect();
    assert_eq!(seqs.len(), 3000, "every frame arrived");
    assert!(seqs.iter().zip(1..).all(|(&s, i)| s == i), "in the order sent");
    assert!(pc.take_delivered().is_empty());

    let list = ask(&fleet, Command::List);
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"], "every worker's ports, in slot order");
    let stats = |n: &str| list.iter().find(|p| p.name == n).unwrap().stats.counters;
    assert_eq!((stats("a").rx_packets, stats("b").tx_packets), (3001, 3001));
    assert_eq!(list.iter().find(|p| p.name == "a").unwrap().macs, ["02:00:00:00:00:01"]);
    let link_dropped = list.iter().find(|p| p.name == "b").unwrap().kind_counters.clone();
    assert_eq!(link_dropped, [(LINK_DROPPED.to_string(), 0)], "b's link from worker 0 dropped nothing");
    let snap = ask(&fleet, Command::Metrics);
    assert_eq!((snap.ports.len(), snap.loads.len()), (4, 2), "four ports, two workers' loads");
    assert_eq!(snap.bridges[0].ports, 3, "br0's members, wherever they are");

    // Removal: b goes from its worker and its remote end from the other.
    ask(&fleet, |tx| Command::Del("b".into(), tx)).unwrap();
    let names: Vec<String> = ask(&fleet, Command::List).into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["a", "c", "d"]);
    pa.send(&frame(mac(2), mac(1), 9));
    assert_eq!(delivered(&pc, 1).len(), 1, "b's MAC was forgotten: the frame floods to c");
    let e = ask(&fleet, |tx| Command::Del("b".into(), tx)).unwrap_err();
    assert!(matches!(e, SwitchError::NoSuchPort(_)), "{e}");
    // The slot is free again, and a new port takes it.
    let e2 = add(&fleet, "e", "br0");
    pa.send(&BCAST_FRAME);
    assert_eq!(delivered(&e2, 1), [BCAST_FRAME.to_vec()]);
}

const BCAST_FRAME: [u8; 64] = {
    let mut f = [0u8; 64];
    let mut i = 0;
    while i < 6 {
        f[i] = 0xff;
        i += 1;
    }
    f[6] = 0x02;
    f[11] = 1;
    f
};

#[test]
fn a_name_or_socket_on_another_worker_is_refused_and_a_mirror_copies_from_the_owner() {
    let fleet = two_workers();
    let [pa, pb, pm] = [("a", "br0"), ("b", "br0"), ("m", "br1")].map(|(name, br)| add(&fleet, name, br));
    let (port, _) = Loopback::new();
    let again = NewPort::with(PortConfig::new("b", "br0", "/loopback/x"), Box::new(port));
    let e = Running(&fleet.tx).add_port(again).unwrap_err();
    assert!(matches!(e, SwitchError::PortExists(_)), "{e}");
    // m (worker 0) mirrors what b (worker 1) receives from a (worker 0): worker 1 copies it.
    let mirror =
        MirrorConfig { from: "b".into(), to: "m".into(), direction: fastpath_host::proto::Direction::default() };
    Running(&fleet.tx).add_mirror(mirror).unwrap();
    pa.send(&frame(mac(2), mac(1), 1));
    assert_eq!(delivered(&pb, 1).len(), 1);
    assert_eq!(delivered(&pm, 1), [frame(mac(2), mac(1), 1)], "the mirror's copy");
    let mirrors = ask(&fleet, Command::Mirrors);
    assert_eq!(mirrors.len(), 1);
    assert!(mirrors[0].active);
    assert_eq!((mirrors[0].sent, mirrors[0].dropped), (1, 0));
}

#[test]
fn a_port_goes_to_the_worker_it_names_and_a_worker_that_does_not_exist_is_refused() {
    let fleet = two_workers();
    let on = |name: &str, worker: Option<u16>| {
        let (port, peer) = Loopback::new();
        let cfg = PortConfig { worker, ..PortConfig::new(name, "br0", format!("/loopback/{name}")) };
        Running(&fleet.tx).add_port(NewPort::with(cfg, Box::new(port))).map(|()| peer)
    };
    // Both on worker 1 (a chain talking to itself), then one placed by count: worker 0.
    let (pa, pb) = (on("a", Some(1)).unwrap(), on("b", Some(1)).unwrap());
    let _pc = on("c", None).unwrap();
    let e = on("d", Some(2)).unwrap_err();
    assert_eq!(e.to_string(), "port 'd': worker 2: this switch runs 2 workers (0 to 1; fastpathd --cores)");
    let workers: Vec<(String, Option<u16>)> =
        ask(&fleet, Command::List).into_iter().map(|p| (p.name, p.worker)).collect();
    assert_eq!(workers, [("a".into(), Some(1)), ("b".into(), Some(1)), ("c".into(), Some(0))]);
    pa.send(&frame(mac(2), mac(1), 1));
    assert_eq!(delivered(&pb, 1), [frame(mac(2), mac(1), 1)], "a to b within worker 1");
}

/// Sends `n` frames from MAC `src` (to an unknown MAC: flooded) on queue pair `h`,
/// numbered from `from`; polls the other handles meanwhile.
fn send_on_pair(
    handles: &mut [netlib::virtio_user::VirtioUserPair],
    pools: &mut [netlib::PktPool],
    pair: usize,
    src: u8,
    from: u32,
    n: u32,
) {
    use netlib::Port;
    let mut seq = from;
    let until = Instant::now() + Duration::from_secs(10);
    while seq < from + n && Instant::now() < until {
        let mut burst = netlib::pool::burst_vec();
        while burst.len() < 32 && seq < from + n {
            let Some(mut p) = pools[pair].alloc() else { break };
            pools[pair].set_len(&mut p, 64).copy_from_slice(&frame(mac(9), mac(src), seq));
            burst.push(p);
            seq += 1;
        }
        let before = burst.len();
        let took = handles[pair].tx_burst(&mut pools[pair], &mut burst);
        seq -= (before - took) as u32;
        pools[pair].free_all(&mut burst);
        for (h, pool) in handles.iter_mut().zip(pools.iter_mut()) {
            h.poll_control(pool);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(seq, from + n, "pair {pair} sent every frame");
}

/// The frames `peer` got from MAC `src`, by sequence number.
fn seqs_from(got: &[Vec<u8>], src: u8) -> Vec<u32> {
    got.iter().filter(|f| f[6..12] == mac(src)).map(|f| u32::from_le_bytes(f[14..18].try_into().unwrap())).collect()
}

/// Opens a frontend of two queue pairs on `sock` and waits until both are up.
fn two_pair_frontend(sock: &std::path::Path) -> (Vec<netlib::virtio_user::VirtioUserPair>, Vec<netlib::PktPool>) {
    use netlib::Port;
    let opts = || netlib::pool::PoolOptions { nbufs: 1024, hugedir: None, ..Default::default() };
    let mut pools = vec![netlib::PktPool::new(&opts()).unwrap(), netlib::PktPool::new(&opts()).unwrap()];
    let mut handles = netlib::virtio_user::VirtioUser::open_pairs(
        sock,
        &mut pools,
        netlib::virtio_user::VirtioUserOptions::default(),
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while handles.iter().any(|h| h.link() != netlib::LinkState::Up) && Instant::now() < until {
        for (h, pool) in handles.iter_mut().zip(pools.iter_mut()) {
            h.poll_control(pool);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(handles.iter().all(|h| h.link() == netlib::LinkState::Up), "both pairs up");
    (handles, pools)
}

/// A vhost-user port of two queue pairs on a switch of two workers: the port's worker
/// polls pair 0, the other worker pair 1 (its transmit ring lent). Every frame arrives,
/// each pair's in order; the port's counters add up both workers'; a frontend that goes
/// and comes back is polled the same way; the port is removed cleanly.
#[test]
fn a_ports_second_queue_pair_is_polled_by_the_other_worker() {
    const N: u32 = 3_000;
    let fleet = two_workers();
    let dir = std::env::temp_dir().join(format!("fp-fleet-lanes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("v.sock");
    let cfg = PortConfig { worker: Some(0), queues: Some(2), ..PortConfig::new("v", "br0", &sock) };
    let port = NewPort::open(cfg, &crate::config::PortDefaults::default()).unwrap();
    Running(&fleet.tx).add_port(port).unwrap();
    let ps = add(&fleet, "s", "br0");
    for round in 0..2u32 {
        let (mut handles, mut pools) = two_pair_frontend(&sock);
        send_on_pair(&mut handles, &mut pools, 0, 10, round * N, N);
        send_on_pair(&mut handles, &mut pools, 1, 11, round * N, N);
        let got = delivered(&ps, 2 * N as usize);
        let want: Vec<u32> = (round * N..(round + 1) * N).collect();
        assert_eq!(seqs_from(&got, 10), want, "round {round}: pair 0's frames, all, in order");
        assert_eq!(seqs_from(&got, 11), want, "round {round}: pair 1's frames, all, in order");
        let list = ask(&fleet, Command::List);
        let v = list.iter().find(|p| p.name == "v").unwrap();
        let kind = |n: &str| v.kind_counters.iter().find(|(k, _)| k == n).map(|&(_, c)| c);
        let total = u64::from((round + 1) * N);
        assert_eq!(v.stats.counters.rx_packets, 2 * total, "round {round}: both workers' frames");
        assert_eq!(
            (kind("rxq0_packets"), kind("rxq1_packets")),
            (Some(total), Some(total)),
            "round {round}: pair 1's frames were the lane's (worker 1's)"
        );
        assert_eq!((v.worker, &v.pair_workers[..]), (Some(0), &[(1, 1)][..]), "pair 1 on worker 1");
        // What each worker received (s sends nothing): pair 0's on worker 0, pair 1's on 1.
        let received: Vec<u64> = ask(&fleet, Command::Metrics)
            .loads
            .iter()
            .map(|l| l.bursts.iter().enumerate().map(|(n, &c)| n as u64 * c).sum())
            .collect();
        assert_eq!(received, [total, total], "round {round}: each worker polled its own pair");
        drop(handles);
    }
    ask(&fleet, |tx| Command::Del("v".into(), tx)).unwrap();
    let names: Vec<String> = ask(&fleet, Command::List).into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["s"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A capture and a mirror of a port whose second queue pair the other worker polls see the
/// frames of both pairs: the lane's worker copies what it receives from its pair into its own
/// ring (and sends mirror copies on); a capture one of whose taps cannot start does not run.
#[test]
fn a_capture_and_a_mirror_of_a_spread_port_see_both_pairs() {
    use crate::capture::ring::Ring;
    use crate::capture::tap::{CaptureTap, CaptureTaps};
    use fastpath_host::proto::{CaptureSpec, Direction};
    use std::os::fd::OwnedFd;
    const N: u32 = 500;
    let fleet = two_workers();
    let dir = std::env::temp_dir().join(format!("fp-fleet-lanecap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("v.sock");
    let cfg = PortConfig { worker: Some(0), queues: Some(2), ..PortConfig::new("v", "br0", &sock) };
    Running(&fleet.tx).add_port(NewPort::open(cfg, &crate::config::PortDefaults::default()).unwrap()).unwrap();
    let ps = add(&fleet, "s", "br0");
    // m is on another bridge: it gets only the mirror's copies.
    let pm = add(&fleet, "m", "br1");
    let mirror = MirrorConfig { from: "v".into(), to: "m".into(), direction: Direction::Rx };
    Running(&fleet.tx).add_mirror(mirror).unwrap();
    let spec = CaptureSpec { port: "v".into(), direction: Direction::Both, snaplen: 64, slots: 4096 };
    let taps = |id: u64, lane_worker: u16| {
        let rings = [Ring::create(4096, 64).unwrap(), Ring::create(4096, 64).unwrap()];
        let readers = rings.each_ref().map(|r| Ring::open(OwnedFd::from(r.fd().try_clone().unwrap())).unwrap());
        let [main, lane] = rings;
        let lane = CaptureTap::new(id, CaptureSpec { direction: Direction::Rx, ..spec.clone() }, lane, None);
        let taps =
            CaptureTaps { main: CaptureTap::new(id, spec.clone(), main, None), lanes: vec![(lane_worker, lane)] };
        (Box::new(taps), readers)
    };
    let (bad, _) = taps(6, 5);
    let e = ask(&fleet, |tx| Command::Capture(bad, tx)).unwrap_err();
    assert!(matches!(e, SwitchError::NoSuchPort(_)), "a lane tap on a worker that does not exist: {e}");
    let (good, readers) = taps(7, 1);
    ask(&fleet, |tx| Command::Capture(good, tx)).unwrap();
    let (mut handles, mut pools) = two_pair_frontend(&sock);
    send_on_pair(&mut handles, &mut pools, 0, 10, 0, N);
    send_on_pair(&mut handles, &mut pools, 1, 11, 0, N);
    assert_eq!(delivered(&ps, 2 * N as usize).len(), 2 * N as usize);
    let want: Vec<u32> = (0..N).collect();
    let mirrored = delivered(&pm, 2 * N as usize);
    assert_eq!((seqs_from(&mirrored, 10), seqs_from(&mirrored, 11)), (want.clone(), want.clone()), "mirrored");
    let mirrors = ask(&fleet, Command::Mirrors);
    assert_eq!((mirrors[0].active, mirrors[0].sent, mirrors[0].dropped), (true, u64::from(2 * N), 0));
    let captured = readers.map(|r| {
        let frames: Vec<Vec<u8>> = std::iter::from_fn(|| r.pop().unwrap()).map(|c| c.data).collect();
        (seqs_from(&frames, 10), seqs_from(&frames, 11), r.dropped())
    });
    assert_eq!(captured[0], (want.clone(), vec![], 0), "the port's worker's ring: pair 0's frames");
    assert_eq!(captured[1], (vec![], want, 0), "the lane's worker's ring: pair 1's frames");
    ask(&fleet, |tx| Command::Del("v".into(), tx)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Workers that sleep in interrupt mode keep every queue pair of a port on its worker (a
/// lane has no wakeup of its own), as does a port with `spread = false` on polling ones.
#[test]
fn pairs_stay_on_the_ports_worker_in_interrupt_mode_or_when_the_port_says_so() {
    let dir = std::env::temp_dir().join(format!("fp-fleet-nospread-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pairs_of = |fleet: &Workers, name: &str, spread: Option<bool>| {
        let cfg =
            PortConfig { queues: Some(4), spread, ..PortConfig::new(name, "br0", dir.join(format!("{name}.sock"))) };
        let port = NewPort::open(cfg, &crate::config::PortDefaults::default()).unwrap();
        Running(&fleet.tx).add_port(port).unwrap();
        let list = ask(fleet, Command::List);
        list.into_iter().find(|p| p.name == name).unwrap().pair_workers
    };
    let polling = two_workers();
    assert_eq!(pairs_of(&polling, "a", None), [(1, 1), (3, 1)], "port a on worker 0: its odd pairs on worker 1");
    assert_eq!(pairs_of(&polling, "b", None), [(1, 0), (3, 0)], "port b on worker 1: its odd pairs on worker 0");
    assert!(pairs_of(&polling, "c", Some(false)).is_empty());
    drop(polling);
    let first = Switch::new(&["br0".into()], 300);
    let second = Switch::new(&["br0".into()], 300).sharing_macs_with(&first);
    let stop = Arc::new(AtomicBool::new(false));
    let first_frame = Arc::new(FirstFrame::since(Instant::now()));
    let (tx, handles) = spawn(vec![first, second], &[None, None], &stop, Idle::Sleep, &first_frame).unwrap();
    let sleeping = Workers { tx, stop, handles };
    assert!(pairs_of(&sleeping, "d", None).is_empty(), "interrupt mode: no lanes");
    drop(sleeping);
    let _ = std::fs::remove_dir_all(&dir);
}
