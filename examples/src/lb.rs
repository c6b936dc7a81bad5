// The L4 load balancer's logic: backends, a lookup table filled by rendezvous hashing
// (so adding a backend moves flows only onto it), and the per-packet rewrite.
//! L4 load balancing by consistent hashing of the 5-tuple.
//!
//! Each flow hashes to one of [`TABLE_SIZE`] slots; each slot holds the
//! backend that wins the rendezvous (highest random weight) contest for that
//! slot. The per-packet cost is one hash and one table read; the table is
//! rebuilt only when the backends change. Because a slot's winner among
//! N+1 backends is either its old winner or the new backend, adding a backend
//! moves about 1/(N+1) of the flows, all onto the new one, and none between
//! the old ones; removing one moves only its own flows.

use crate::flow::{self, mix64, parse, ETH_LEN};

/// Slots in the lookup table (a power of two: the slot is the hash's low bits).
pub const TABLE_SIZE: usize = 1 << 16;

/// One backend: where its frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Its MAC: the new destination MAC of its frames.
    pub mac: [u8; 6],
    /// Its IPv4 address (host order): when set, the new destination address (NAT mode).
    pub ip: Option<u32>,
}

impl Backend {
    /// Parses `MAC` or `MAC,IP` (e.g. `02:00:00:00:01:01,10.1.0.1`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (mac, ip) = match s.split_once(',') {
            Some((m, i)) => (m, Some(i)),
            None => (s, None),
        };
        let mac = crate::frame::parse_mac(mac.trim()).map_err(|e| format!("backend '{s}': {e}"))?;
        let ip = ip.map(|i| flow::parse_ip(i.trim())).transpose().map_err(|e| format!("backend '{s}': {e}"))?;
        Ok(Self { mac, ip })
    }

    /// The backend's identity for hashing: its MAC and IP, so that a backend
    /// keeps its slots whatever its position in the list.
    fn seed(&self) -> u64 {
        let mut m = [0u8; 8];
        m[..6].copy_from_slice(&self.mac);
        mix64(u64::from_le_bytes(m) ^ (u64::from(self.ip.unwrap_or(0)) << 17) ^ 0x5851_f42d_4c95_7f2d)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.mac;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])?;
        if let Some(ip) = self.ip {
            write!(f, ",{}", std::net::Ipv4Addr::from(ip))?;
        }
        Ok(())
    }
}

/// What the balancer did with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Rewritten for backend `i`: send it on.
    To(usize),
    /// Not IPv4 (or a broken header): drop it.
    NotIpv4,
}

/// The balancer: backends, the lookup table, and counters.
#[derive(Debug, Clone)]
pub struct Balancer {
    backends: Vec<Backend>,
    table: Vec<u16>,
    src_mac: Option<[u8; 6]>,
    /// Frames sent to each backend (same order as [`Balancer::backends`]).
    pub per_backend: Vec<u64>,
    /// Frames dropped because they were not IPv4.
    pub not_ipv4: u64,
}

impl Balancer {
    /// A balancer over `backends` (1..=65535 of them, no duplicates); `src_mac`,
    /// when set, becomes the source MAC of forwarded frames.
    pub fn new(backends: Vec<Backend>, src_mac: Option<[u8; 6]>) -> Result<Self, String> {
        let mut b =
            Self { backends: Vec::new(), table: vec![0; TABLE_SIZE], src_mac, per_backend: Vec::new(), not_ipv4: 0 };
        b.set_backends(backends)?;
        Ok(b)
    }

    /// Replaces the backends and rebuilds the table (allocates: not for the packet loop).
    /// Counters of backends that stay are kept.
    pub fn set_backends(&mut self, backends: Vec<Backend>) -> Result<(), String> {
        if backends.is_empty() || backends.len() > usize::from(u16::MAX) {
            return Err(format!("{} backends: give 1 to 65535", backends.len()));
        }
        for (i, b) in backends.iter().enumerate() {
            if backends[..i].contains(b) {
                return Err(format!("backend {b} is given twice"));
            }
        }
        let seeds: Vec<u64> = backends.iter().map(Backend::seed).collect();
        for (slot, entry) in self.table.iter_mut().enumerate() {
            let key = mix64(slot as u64 ^ 0xa076_1d64_78bd_642f);
            let mut best = (0u64, 0usize);
            for (i, s) in seeds.iter().enumerate() {
                let w = mix64(key ^ s);
                if i == 0 || w > best.0 {
                    best = (w, i);
                }
            }
            *entry = best.1 as u16;
        }
        let old: Vec<(Backend, u64)> = self.backends.iter().copied().zip(self.per_backend.iter().copied()).collect();
        self.per_backend = backends.iter().map(|b| old.iter().find(|(o, _)| o == b).map_or(0, |(_, n)| *n)).collect();
        self.backends = backends;
        Ok(())
    }

    /// The backends, in the order given.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend index for a flow hash.
    #[inline]
    pub fn pick(&self, hash: u64) -> usize {
        usize::from(self.table[(hash as usize) & (TABLE_SIZE - 1)])
    }

    /// Balances one frame in place: picks its backend from the 5-tuple and
    /// rewrites the destination MAC (and IP, with the checksums, in NAT mode).
    #[inline]
    pub fn process(&mut self, f: &mut [u8]) -> Action {
        let Some(p) = parse(f) else {
            self.not_ipv4 += 1;
            return Action::NotIpv4;
        };
        let i = self.pick(p.tuple.hash());
        let b = self.backends[i];
        f[0..6].copy_from_slice(&b.mac);
        if let Some(m) = self.src_mac {
            f[6..12].copy_from_slice(&m);
        }
        if let Some(ip) = b.ip {
            flow::set_dst_ip(f, &p, ip);
        }
        debug_assert!(f.len() >= ETH_LEN);
        self.per_backend[i] += 1;
        Action::To(i)
    }
}

/// Reads backends from text: one `MAC` or `MAC,IP` a line; `#` comments and
/// blank lines ignored. `what` names the source in errors.
pub fn parse_backends(text: &str, what: &str) -> Result<Vec<Backend>, String> {
    let mut v = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        v.push(Backend::parse(line).map_err(|e| format!("{what} line {}: {e}", n + 1))?);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{build, l4_csum_ok, FiveTuple, FrameSpec, PROTO_TCP, PROTO_UDP};

    fn backend(i: u8) -> Backend {
        Backend { mac: [2, 0, 0, 0, 1, i], ip: None }
    }

    fn backends(n: u8) -> Vec<Backend> {
        (1..=n).map(backend).collect()
    }

    fn tuples(n: u32) -> Vec<FiveTuple> {
        (0..n)
            .map(|i| FiveTuple {
                src: 0x0a00_0000 + i,
                dst: 0xc0a8_010a,
                sport: 1024 + (i % 50_000) as u16,
                dport: 80,
                proto: if i % 2 == 0 { PROTO_TCP } else { PROTO_UDP },
            })
            .collect()
    }

    fn frame(t: FiveTuple) -> Vec<u8> {
        let mut f = vec![0u8; 70];
        let s = FrameSpec { dst_mac: [2, 0, 0, 0, 0, 0xfe], src_mac: [2, 0, 0, 0, 0, 1], tuple: t, len: 70 };
        build(&mut f, &s, b"x").unwrap();
        f
    }

    #[test]
    fn spreads_flows_evenly() {
        let lb = Balancer::new(backends(4), None).unwrap();
        let mut n = [0u32; 4];
        for t in tuples(40_000) {
            n[lb.pick(t.hash())] += 1;
        }
        for c in n {
            assert!((8_000..12_000).contains(&c), "uneven: {n:?}");
        }
    }

    #[test]
    fn adding_a_backend_moves_flows_only_onto_it() {
        let flows = tuples(50_000);
        for n in [1u8, 2, 4, 7] {
            let before = Balancer::new(backends(n), None).unwrap();
            let after = Balancer::new(backends(n + 1), None).unwrap();
            let mut moved = 0usize;
            for t in &flows {
                let (a, b) = (before.pick(t.hash()), after.pick(t.hash()));
                if a != b {
                    assert_eq!(b, usize::from(n), "flow {t} moved between old backends {a} -> {b}");
                    moved += 1;
                }
            }
            let frac = moved as f64 / flows.len() as f64;
            let want = 1.0 / f64::from(n + 1);
            assert!((frac - want).abs() < want * 0.15, "{n}->{}: moved {frac:.3}, want ~{want:.3}", n + 1);
        }
    }

    #[test]
    fn order_of_backends_does_not_matter_and_removal_moves_only_its_flows() {
        let flows = tuples(20_000);
        let a = Balancer::new(backends(5), None).unwrap();
        let mut rev = backends(5);
        rev.reverse();
        let b = Balancer::new(rev.clone(), None).unwrap();
        for t in &flows {
            assert_eq!(a.backends()[a.pick(t.hash())], b.backends()[b.pick(t.hash())]);
        }
        rev.retain(|x| *x != backend(3));
        let c = Balancer::new(rev, None).unwrap();
        for t in &flows {
            let was = a.backends()[a.pick(t.hash())];
            let now = c.backends()[c.pick(t.hash())];
            if was != backend(3) {
                assert_eq!(was, now, "flow {t} moved though its backend stayed");
            }
        }
    }

    #[test]
    fn rewrites_mac_and_ip_keeping_checksums() {
        let mut bs = backends(3);
        bs[1].ip = Some(0xac10_0002);
        bs[0].ip = Some(0xac10_0001);
        bs[2].ip = Some(0xac10_0003);
        let mut lb = Balancer::new(bs.clone(), Some([2, 0, 0, 0, 0, 0x1b])).unwrap();
        for t in tuples(300) {
            let mut f = frame(t);
            let Action::To(i) = lb.process(&mut f) else { panic!("not balanced") };
            assert_eq!(&f[0..6], &bs[i].mac);
            assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 0x1b]);
            let p = parse(&f).unwrap();
            assert_eq!(p.tuple.dst, bs[i].ip.unwrap());
            assert!(l4_csum_ok(&f, &p), "{t}");
            // The same flow always goes to the same backend.
            let mut g = frame(t);
            assert_eq!(lb.process(&mut g), Action::To(i));
        }
        assert_eq!(lb.per_backend.iter().sum::<u64>(), 600);
        let mut arp = vec![0xffu8; 60];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(lb.process(&mut arp), Action::NotIpv4);
        assert_eq!(lb.not_ipv4, 1);
    }

    #[test]
    fn set_backends_keeps_counters_and_rejects_bad_lists() {
        let mut lb = Balancer::new(backends(2), None).unwrap();
        lb.per_backend = vec![5, 7];
        lb.set_backends(vec![backend(2), backend(9)]).unwrap();
        assert_eq!(lb.per_backend, vec![7, 0]);
        assert!(lb.set_backends(vec![]).unwrap_err().contains("0 backends"));
        assert!(lb.set_backends(vec![backend(1), backend(1)]).unwrap_err().contains("twice"));
    }

    #[test]
    fn parses_backend_lists() {
        let v = parse_backends("# pool\n02:00:00:00:01:01\n02:00:00:00:01:02, 10.1.0.2  # nat\n\n", "b.txt").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].ip, Some(0x0a01_0002));
        assert_eq!(v[1].to_string(), "02:00:00:00:01:02,10.1.0.2");
        let e = parse_backends("02:00:00:00:01:01\n02:zz:00:00:01:01\n", "b.txt").unwrap_err();
        assert!(e.starts_with("b.txt line 2: backend '02:zz:00:00:01:01'"), "{e}");
        let e = parse_backends("02:00:00:00:01:01,10.1\n", "b.txt").unwrap_err();
        assert!(e.contains("'10.1' is not an IPv4 address"), "{e}");
    }
}
