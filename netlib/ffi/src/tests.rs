// Tests of the C ABI called from Rust as C would: bad arguments give codes and
// messages (never a crash), handles are tracked, and packets cross a vhost/virtio-user pair.

// Calls pass `&mut local` where C passes `&local`: the point is to call as C does.
#![allow(clippy::borrow_as_ptr)]

use super::*;
use netlib::pool::PoolOptions;
use netlib::PortSpec;
use std::ffi::CString;
use std::ptr::{null, null_mut};

fn last() -> String {
    // SAFETY: fp_last_error returns a valid NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(fp_last_error()) }.to_string_lossy().into_owned()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fpnet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&d);
    d
}

/// Runs `open` (a frontend's open, which does the handshake) while another thread polls
/// the backend `be` (its control path must answer meanwhile); the backend is this
/// thread's again when it returns.
fn while_polled<T>(be: *mut FpPort, open: impl FnOnce() -> T) -> T {
    let be_addr = be as usize;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: the calling thread does not touch the backend until this one ends.
                unsafe { fp_link_up(be_addr as *mut FpPort) };
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let r = open();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    })
}

/// Opens `spec` with a small pool in memfd memory (no hugepages needed).
fn open(spec: &str) -> Result<*mut FpPort, c_int> {
    let spec: PortSpec = spec.parse().expect("spec");
    let p = FpPort::open(&spec, 512, 256, Some(std::path::Path::new("/nonexistent-hugedir")))?;
    Ok(Box::into_raw(Box::new(p)))
}

#[test]
fn null_and_bad_arguments_are_codes() {
    let mut out: *mut FpPort = null_mut();
    // SAFETY: every pointer passed is NULL or valid; that is what is being tested.
    unsafe {
        assert_eq!(fp_open(null(), 64, 256, &mut out), FP_ERR_NULL);
        assert!(last().contains("spec is NULL"), "{}", last());
        let spec = CString::new("tap:/x").unwrap();
        assert_eq!(fp_open(spec.as_ptr(), 64, 256, null_mut()), FP_ERR_NULL);
        assert_eq!(fp_open(spec.as_ptr(), 64, 256, &mut out), FP_ERR_ARG);
        assert!(last().contains("'tap:/x' is not a port spec"), "{}", last());
        let spec = CString::new(format!("vhost:{}", tmp("bad").display())).unwrap();
        assert_eq!(fp_open(spec.as_ptr(), 0, 256, &mut out), FP_ERR_ARG);
        assert!(last().contains("pool_size 0"), "{}", last());
        assert_eq!(fp_open(spec.as_ptr(), 64, 70_000, &mut out), FP_ERR_ARG);
        assert!(last().contains("queue_size 70000"), "{}", last());
        let spec = CString::new("vhost:/nonexistent-dir/x.sock").unwrap();
        assert_eq!(fp_open(spec.as_ptr(), 64, 256, &mut out), FP_ERR_OPEN);
        assert!(last().contains("/nonexistent-dir/x.sock"), "{}", last());
        assert!(out.is_null());
        let mut h: fp_pkt = 0;
        let mut c = fp_counters::default();
        assert_eq!(fp_rx_burst(null_mut(), &mut h, 1), FP_ERR_NULL);
        assert_eq!(fp_tx_burst(null_mut(), &h, 1), FP_ERR_NULL);
        assert_eq!(fp_pkt_alloc(null_mut(), &mut h), FP_ERR_NULL);
        assert_eq!(fp_pkt_alloc_bulk(null_mut(), &mut h, 1), FP_ERR_NULL);
        assert_eq!(fp_pkt_free(null_mut(), 0), FP_ERR_NULL);
        assert_eq!(fp_pkt_data(null_mut(), 0, null_mut(), null_mut()), FP_ERR_NULL);
        assert_eq!(fp_pkt_set_len(null_mut(), 0, 1), FP_ERR_NULL);
        assert_eq!(fp_pkt_room(null_mut(), 0), FP_ERR_NULL);
        assert_eq!(fp_counters(null_mut(), &mut c), FP_ERR_NULL);
        assert_eq!(fp_link_up(null_mut()), FP_ERR_NULL);
        assert_eq!(fp_wait_link(null_mut(), 1), FP_ERR_NULL);
        assert_eq!(fp_held(null_mut()), FP_ERR_NULL);
        assert!(last().contains("fp_held: port is NULL"));
        fp_close(null_mut());
        assert_eq!(CStr::from_ptr(fp_version()).to_str().unwrap(), "0.1.0");
    }
}

#[test]
fn errors_are_per_thread() {
    // SAFETY: NULL arguments only.
    unsafe { fp_pkt_free(null_mut(), 0) };
    assert!(last().contains("fp_pkt_free"));
    let other = std::thread::spawn(last).join().unwrap();
    assert_eq!(other, "", "another thread sees its own (empty) error");
}

#[test]
fn handles_are_tracked() {
    let sock = tmp("handles");
    let port = open(&format!("vhost:{}", sock.display())).unwrap();
    // SAFETY: port is open until fp_close below; pointers are to locals.
    unsafe {
        let mut h: fp_pkt = u32::MAX;
        assert_eq!(fp_pkt_alloc(port, &mut h), FP_OK);
        assert_eq!(fp_held(port), 1);
        assert_eq!(fp_pkt_room(port, h), 2048);
        assert_eq!(fp_pkt_set_len(port, h, 60), FP_OK);
        let (mut d, mut l): (*mut u8, u32) = (null_mut(), 0);
        assert_eq!(fp_pkt_data(port, h, &mut d, &mut l), FP_OK);
        assert_eq!(l, 60);
        std::slice::from_raw_parts_mut(d, l as usize).fill(0xab);
        assert_eq!(fp_pkt_set_len(port, h, 4000), FP_ERR_ARG);
        assert!(last().contains("len 4000 is more than the packet's room of 2048"), "{}", last());
        assert_eq!(fp_pkt_data(port, h, null_mut(), &mut l), FP_OK, "data may be NULL");
        assert_eq!(l, 60, "a refused set_len leaves the length");
        assert_eq!(fp_pkt_free(port, h), FP_OK);
        assert_eq!(fp_pkt_free(port, h), FP_ERR_HANDLE);
        assert!(last().contains(&format!("packet handle {h}: the application does not hold it")), "{}", last());
        assert_eq!(fp_pkt_data(port, 99_999, &mut d, &mut l), FP_ERR_HANDLE);
        assert!(last().contains("past the end of the pool"), "{}", last());
        let mut many = [0 as fp_pkt; 600];
        assert_eq!(fp_pkt_alloc_bulk(port, many.as_mut_ptr(), 600), 512, "the pool has 512");
        assert_eq!(fp_pkt_alloc(port, &mut h), FP_ERR_NOBUF);
        assert!(last().contains("all 512 buffers are in use"));
        // The link is down: nothing is taken, a bad handle in the list is refused.
        assert_eq!(fp_link_up(port), 0);
        assert_eq!(fp_tx_burst(port, many.as_ptr(), 4), 0);
        assert_eq!(fp_held(port), 512);
        let dup = [many[0], many[0]];
        assert_eq!(fp_tx_burst(port, dup.as_ptr(), 2), FP_ERR_HANDLE);
        assert_eq!(fp_held(port), 512, "a refused burst gives its packets back");
        assert_eq!(fp_tx_burst(port, null(), 0), 0);
        assert_eq!(fp_wait_link(port, 20), FP_ERR_LINK);
        assert!(last().contains("link still down after 20 ms"), "{}", last());
        let mut c = fp_counters { rx_packets: 9, ..fp_counters::default() };
        assert_eq!(fp_counters(port, &mut c), FP_OK);
        assert_eq!(c, fp_counters::default());
        // Closing with packets held frees them.
        fp_close(port);
    }
}

#[test]
fn packets_cross_a_port_pair() {
    let sock = tmp("pair");
    let spec = CString::new(format!("vhost:{}", sock.display())).unwrap();
    let mut be: *mut FpPort = null_mut();
    // SAFETY: spec is a C string, be a local.
    assert_eq!(unsafe { fp_open(spec.as_ptr(), 512, 256, &mut be) }, FP_OK, "{}", last());
    // The frontend's open does the handshake, which needs the backend polled meanwhile.
    let fe = while_polled(be, || open(&format!("vu:{}", sock.display())).unwrap_or_else(|_| panic!("{}", last())));
    // SAFETY: both ports are open until closed at the end; pointers are to locals.
    unsafe {
        assert_eq!(fp_wait_link(be, 5000), FP_OK, "{}", last());
        assert_eq!(fp_wait_link(fe, 5000), FP_OK, "{}", last());
        let n = 100u32;
        let mut tx = vec![0 as fp_pkt; n as usize];
        assert_eq!(fp_pkt_alloc_bulk(fe, tx.as_mut_ptr(), n), n as c_int);
        for (i, &h) in tx.iter().enumerate() {
            let len = 60 + i as u32;
            assert_eq!(fp_pkt_set_len(fe, h, len), FP_OK);
            let mut d = null_mut();
            assert_eq!(fp_pkt_data(fe, h, &mut d, null_mut()), FP_OK);
            let b = std::slice::from_raw_parts_mut(d, len as usize);
            for (j, x) in b.iter_mut().enumerate() {
                *x = (i + j) as u8;
            }
        }
        let mut sent = 0;
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut rx = [0 as fp_pkt; 7]; // an odd size: bursts of 32 split over calls
        let t0 = Instant::now();
        while got.len() < n as usize && t0.elapsed() < Duration::from_secs(5) {
            if sent < n {
                let k = fp_tx_burst(fe, tx[sent as usize..].as_ptr(), n - sent);
                assert!(k >= 0, "{}", last());
                sent += k as u32;
            }
            let k = fp_rx_burst(be, rx.as_mut_ptr(), rx.len() as u32);
            assert!(k >= 0, "{}", last());
            for &h in &rx[..k as usize] {
                let (mut d, mut l) = (null_mut(), 0u32);
                assert_eq!(fp_pkt_data(be, h, &mut d, &mut l), FP_OK);
                got.push(std::slice::from_raw_parts(d, l as usize).to_vec());
                assert_eq!(fp_pkt_free(be, h), FP_OK);
            }
        }
        assert_eq!(got.len(), n as usize, "all packets arrive");
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.len(), 60 + i, "in order, with their lengths");
            assert!(g.iter().enumerate().all(|(j, x)| *x == (i + j) as u8), "packet {i} intact");
        }
        let mut c = fp_counters::default();
        assert_eq!(fp_counters(be, &mut c), FP_OK);
        assert_eq!(c.rx_packets, u64::from(n));
        assert_eq!(fp_held(fe), 0);
        assert_eq!(fp_held(be), 0);
        fp_close(fe);
        fp_close(be);
    }
}

/// A port opened with two queue pairs: a handle each, used from two threads at once; the
/// backend gets every frame of each pair in order; `fp_pair_of` picks a pair by flow; bad
/// arguments are codes with messages.
#[test]
fn two_pairs_send_from_two_threads() {
    const N: u32 = 200;
    let sock = tmp("pairs");
    let spec = CString::new(format!("vhost:{}", sock.display())).unwrap();
    let vu = CString::new(format!("vu:{}", sock.display())).unwrap();
    let mut be: *mut FpPort = null_mut();
    let mut fe: [*mut FpPort; 2] = [null_mut(); 2];
    // SAFETY: C strings and locals; pointers as C passes them.
    unsafe {
        assert_eq!(fp_open_pairs(vu.as_ptr(), 0, 512, 256, fe.as_mut_ptr()), FP_ERR_ARG);
        assert!(last().contains("pairs 0 must be in 1..=16"), "{}", last());
        assert_eq!(fp_open_pairs(spec.as_ptr(), 2, 512, 256, fe.as_mut_ptr()), FP_ERR_ARG);
        assert!(last().contains("queue pairs need a vu:"), "{}", last());
        assert_eq!(fp_open_pairs(vu.as_ptr(), 2, 512, 256, null_mut()), FP_ERR_NULL);
        assert_eq!(fp_open(spec.as_ptr(), 1024, 256, &mut be), FP_OK, "{}", last());
    }
    // SAFETY: fe has room for two ports.
    let opened = while_polled(be, || unsafe { fp_open_pairs(vu.as_ptr(), 2, 512, 256, fe.as_mut_ptr()) });
    assert_eq!(opened, FP_OK, "{}", last());
    // Each pair's thread sends N frames: the pair, then the frame's number.
    let senders: Vec<_> = fe
        .iter()
        .enumerate()
        .map(|(pair, &p)| {
            let addr = p as usize;
            std::thread::spawn(move || {
                let port = addr as *mut FpPort;
                let mut sent = 0u32;
                let t0 = Instant::now();
                // SAFETY: this thread alone uses this pair's handle until joined.
                unsafe {
                    assert_eq!(fp_wait_link(port, 5000), FP_OK, "{}", last());
                    while sent < N && t0.elapsed() < Duration::from_secs(5) {
                        let mut pkt: fp_pkt = 0;
                        if fp_pkt_alloc(port, &mut pkt) != FP_OK {
                            fp_tx_burst(port, &pkt, 0);
                            continue;
                        }
                        assert_eq!(fp_pkt_set_len(port, pkt, 64), FP_OK);
                        let mut data = null_mut();
                        assert_eq!(fp_pkt_data(port, pkt, &mut data, null_mut()), FP_OK);
                        let buf = std::slice::from_raw_parts_mut(data, 64);
                        buf.fill(0);
                        buf[0] = pair as u8;
                        buf[1..5].copy_from_slice(&sent.to_le_bytes());
                        if fp_tx_burst(port, &pkt, 1) == 1 {
                            sent += 1;
                        } else {
                            assert_eq!(fp_pkt_free(port, pkt), FP_OK);
                        }
                    }
                }
                sent
            })
        })
        .collect();
    let mut next = [0u32; 2];
    let mut rx = [0 as fp_pkt; 32];
    let t0 = Instant::now();
    // SAFETY: the backend is this thread's again; the handles are the senders'.
    unsafe {
        while next.iter().sum::<u32>() < 2 * N && t0.elapsed() < Duration::from_secs(10) {
            let k = fp_rx_burst(be, rx.as_mut_ptr(), rx.len() as u32);
            assert!(k >= 0, "{}", last());
            for &h in &rx[..k as usize] {
                let (mut d, mut l) = (null_mut(), 0u32);
                assert_eq!(fp_pkt_data(be, h, &mut d, &mut l), FP_OK);
                let b = std::slice::from_raw_parts(d, l as usize);
                let pair = usize::from(b[0]);
                assert_eq!(u32::from_le_bytes([b[1], b[2], b[3], b[4]]), next[pair], "pair {pair} in order");
                next[pair] += 1;
                assert_eq!(fp_pkt_free(be, h), FP_OK);
            }
        }
    }
    let sent: Vec<u32> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!((sent, next), (vec![N, N], [N, N]), "every frame of both pairs");
    // SAFETY: open ports; the frame is 64 readable bytes.
    unsafe {
        let frame = [0x02u8; 64];
        let p = fp_pair_of(fe[0], frame.as_ptr(), 64);
        assert_eq!(p, netlib::flow::pick(netlib::flow::flow_hash(&frame), 2) as c_int);
        assert_eq!(fp_pair_of(fe[1], frame.as_ptr(), 64), p, "the same for every handle");
        assert_eq!(fp_pair_of(be, frame.as_ptr(), 64), 0, "a port of one pair");
        assert_eq!(fp_pair_of(fe[0], null(), 64), FP_ERR_NULL);
        fp_close(fe[0]);
        fp_close(fe[1]);
        fp_close(be);
    }
}

/// A port opened with offloads against a backend that offers them: it takes CSUM and
/// TSO, a header the switch would refuse is refused naming its field, and a 20 KB GSO
/// frame with its header reaches the backend whole.
#[test]
fn a_gso_frame_goes_out_with_its_header() {
    use netlib::vhost::{DeviceLimits, VhostBackend, VhostMode};
    use netlib::vnet_hdr::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6};
    const LEN: u32 = 20_054;
    let sock = tmp("offloads");
    let mut be = VhostBackend::open(&sock, VhostMode::Listen).unwrap();
    be.set_limits(DeviceLimits { offloads: true, ..DeviceLimits::default() });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    // The backend in its own thread: the frontend's open does the handshake with it.
    let backend = std::thread::spawn(move || {
        let opts = PoolOptions { nbufs: 256, hugedir: None, data_room: netlib::pool::MAX_DATA_ROOM };
        let mut pool = PktPool::new(&opts).unwrap();
        let (mut burst, mut lens) = (burst_vec(), Vec::new());
        while !d2.load(std::sync::atomic::Ordering::Relaxed) {
            be.rx_burst(&mut pool, &mut burst);
            lens.extend(burst.iter().map(Packet::len));
            pool.free_all(&mut burst);
            std::thread::sleep(Duration::from_micros(200));
        }
        lens
    });
    let spec = CString::new(format!("vu:{}", sock.display())).unwrap();
    let mut fe: *mut FpPort = null_mut();
    // SAFETY: spec is a C string, fe a local; the port is open until closed below.
    unsafe {
        assert_eq!(fp_open_offloads(spec.as_ptr(), 256, 64, 32768, &mut fe), FP_OK, "{}", last());
        let want = VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6;
        assert_eq!(fp_tx_offloads(fe), want as c_int);
        let mut h: fp_pkt = 0;
        assert_eq!(fp_pkt_alloc(fe, &mut h), FP_OK);
        assert_eq!(fp_pkt_set_len(fe, h, LEN), FP_OK, "{}", last());
        let tso = fp_net_hdr { flags: 1, gso_type: 1, hdr_len: 54, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        let udp = fp_net_hdr { gso_type: 3, ..tso };
        assert_eq!(fp_pkt_set_net_hdr(fe, h, &udp), FP_ERR_ARG);
        assert!(last().contains("gso_type 0x03"), "{}", last());
        let outside = fp_net_hdr { csum_start: 20_050, ..tso };
        assert_eq!(fp_pkt_set_net_hdr(fe, h, &outside), FP_ERR_ARG);
        assert!(last().contains("csum_start 20050"), "{}", last());
        assert_eq!(fp_pkt_set_net_hdr(fe, h, null()), FP_ERR_NULL);
        assert_eq!(fp_pkt_set_net_hdr(fe, 99_999, &tso), FP_ERR_HANDLE);
        assert_eq!(fp_pkt_set_net_hdr(fe, h, &tso), FP_OK, "{}", last());
        assert_eq!(fp_tx_burst(fe, &h, 1), 1, "{}", last());
        assert!(fp_flushed(fe), "the backend took the frame");
        fp_close(fe);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let lens = backend.join().unwrap();
    assert_eq!(lens, vec![LEN as usize], "the GSO frame arrived whole");
    // A port that is not virtio-user cannot take offloads.
    let vhost = CString::new(format!("vhost:{}", tmp("offloads-vhost").display())).unwrap();
    let mut p: *mut FpPort = null_mut();
    // SAFETY: as above.
    assert_eq!(unsafe { fp_open_offloads(vhost.as_ptr(), 64, 64, 2048, &mut p) }, FP_ERR_ARG);
    assert!(last().contains("offloads need a vu: or vu-packed: port"), "{}", last());
}

/// Waits up to 5 s for the port's transmit ring to be empty (the backend took it all).
///
/// # Safety
/// `p` is an open port.
unsafe fn fp_flushed(p: *mut FpPort) -> bool {
    // SAFETY: the caller's contract.
    let port = unsafe { &mut *p };
    port.port.flush_tx(&mut port.pool, Duration::from_secs(5))
}

/// The only test that sets FASTPATH_CONFIG (tests of this binary run in parallel threads).
#[test]
fn opens_the_discovered_port() {
    let dir = std::env::temp_dir().join(format!("fpnet-{}-discover", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("br0.sock");
    let cfg = dir.join("config.json");
    let mut out: *mut FpPort = null_mut();
    std::env::set_var("FASTPATH_CONFIG", &cfg);
    // SAFETY: pointers are to locals or C strings that outlive the calls.
    unsafe {
        assert_eq!(fp_open_discovered(null(), 64, 256, null_mut()), FP_ERR_NULL);
        assert_eq!(fp_open_discovered(null(), 64, 256, &mut out), FP_ERR_CONFIG);
        assert!(last().contains(&cfg.display().to_string()), "{}", last());
        std::fs::write(&cfg, config_json(&sock, "/nonexistent-hugedir")).unwrap();
        let nope = CString::new("br9").unwrap();
        assert_eq!(fp_open_discovered(nope.as_ptr(), 64, 256, &mut out), FP_ERR_CONFIG);
        assert!(last().contains("no port on bridge br9 (the container has: br0)"), "{}", last());
    }
    // The switch's side: a backend listening on the socket the config names, polled
    // in a thread while the frontend's open does the handshake.
    let be = open(&format!("vhost:{}", sock.display())).unwrap();
    let br0 = CString::new("br0").unwrap();
    // SAFETY: a C string and a local.
    let rc = while_polled(be, || unsafe { fp_open_discovered(br0.as_ptr(), 64, 256, &mut out) });
    std::env::remove_var("FASTPATH_CONFIG");
    assert_eq!(rc, FP_OK, "{}", last());
    // SAFETY: both ports are open; closed once each; `mac` is 6 writable bytes.
    unsafe {
        assert_eq!(fp_wait_link(out, 5000), FP_OK, "{}", last());
        let mut mac = [0u8; 6];
        assert_eq!(fp_port_mac(out, mac.as_mut_ptr()), FP_OK, "{}", last());
        assert_eq!(mac, [2, 0, 0, 0, 0, 0x0a]);
        // The backend is no port of the container's: no MAC, and `mac` untouched.
        assert_eq!(fp_port_mac(be, mac.as_mut_ptr()), FP_ERR_CONFIG);
        assert!(last().contains("has no MAC"), "{}", last());
        assert_eq!(mac, [2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(fp_port_mac(out, null_mut()), FP_ERR_NULL);
        assert_eq!(fp_port_mac(null_mut(), mac.as_mut_ptr()), FP_ERR_NULL);
        fp_close(out);
        fp_close(be);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A configuration as the hook writes it: one switch port on br0 that the app connects to.
fn config_json(sock: &std::path::Path, hugedir: &str) -> String {
    format!(
        r#"{{"version":1,"container_id":"test","cores":[1],
        "hugepages":{{"dir":"{hugedir}","page_size":2097152,"bytes":67108864}},
        "ports":[{{"name":"test-br0","bridge":"br0","socket":"{}","mode":"client","mac":"02:00:00:00:00:0a"}}],
        "uid":0,"gid":0}}"#,
        sock.display()
    )
}
