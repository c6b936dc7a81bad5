// The learning bridge's MAC table, keyed by VLAN and MAC: fixed-size open addressing,
// no allocation after creation, entries age out after a configured time. Shared by every
// worker without a lock: each entry is a seqlock of two atomic words.
//! MAC learning table.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// A MAC address.
pub type Mac = [u8; 6];

/// One entry: `key` holds the VLAN (bits 48..60) and the MAC (bits 0..48), compared at
/// once; `word` holds the tick the MAC was last seen as a source (bits 0..32, 0 = empty),
/// its port (bits 32..48) and the entry's version (bits 48..64), odd while a writer is
/// changing the entry. A reader takes the key only between two equal, even words.
#[derive(Debug, Default)]
struct Entry {
    key: AtomicU64,
    word: AtomicU64,
}

/// What a reader saw in an entry.
#[derive(Debug, Clone, Copy)]
struct Seen {
    key: u64,
    word: u64,
}

const VERSION_ONE: u64 = 1 << 48;

impl Seen {
    fn seen(self) -> u32 {
        self.word as u32
    }
    fn port(self) -> u16 {
        (self.word >> 32) as u16
    }
}

/// Tries at reading an entry a writer keeps changing before the reader gives up (a lookup
/// then misses and the frame floods, which is always allowed).
const READ_TRIES: usize = 4;

impl Entry {
    /// The entry, or `None` while writers keep changing it.
    #[inline]
    fn read(&self) -> Option<Seen> {
        for _ in 0..READ_TRIES {
            let w1 = self.word.load(Ordering::Acquire);
            if w1 & VERSION_ONE == 0 {
                let key = self.key.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.word.load(Ordering::Relaxed) == w1 {
                    return Some(Seen { key, word: w1 });
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Replaces the entry last read as `was` with `key`, `port`, `seen`; false (nothing
    /// written) if another writer changed it since.
    #[inline]
    fn write(&self, was: Seen, key: u64, port: u16, seen: u32) -> bool {
        let writing = was.word.wrapping_add(VERSION_ONE);
        if self.word.compare_exchange(was.word, writing, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return false;
        }
        fence(Ordering::Release);
        self.key.store(key, Ordering::Relaxed);
        let version = writing.wrapping_add(VERSION_ONE) & !((1 << 48) - 1);
        self.word.store(version | u64::from(port) << 32 | u64::from(seen), Ordering::Release);
        true
    }
}

/// The key of `mac` on VLAN `vlan` (0: no VLAN).
#[inline]
fn key(vlan: u16, m: &Mac) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]) | u64::from(vlan) << 48
}

/// How many slots a lookup probes.
const PROBES: usize = 8;

/// A learning table mapping (VLAN, MAC) → port, with ageing: one MAC may live on
/// several VLANs, behind a different port on each.
///
/// Every method takes `&self`: the workers share one table per bridge and learn and look up
/// without a lock. Each entry is a seqlock: a lookup that meets an entry being written
/// reads it again, and misses (the frame floods) if writers keep it busy; a learner that
/// loses a race to another writer skips the entry (the MAC is learned from its next
/// frame). Workers' clocks may differ by a tick: an entry seen "in the future" is fresh.
#[derive(Debug)]
pub struct MacTable {
    slots: Vec<Entry>,
    mask: usize,
    age: u32,
    /// Learning events: MACs learned afresh (new, back after ageing out) or moved to
    /// another port.
    learned: AtomicU64,
}

#[inline]
fn hash(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

/// Whether an entry last seen at tick `seen` is fresh at tick `now` (`seen` a little ahead
/// of `now`, from a worker whose clock ticked first, is).
#[inline]
fn fresh(now: u32, seen: u32, age: u32) -> bool {
    seen != 0 && (now.wrapping_sub(seen) as i32) <= age as i32
}

impl MacTable {
    /// A table of `capacity` slots (rounded to a power of two); entries older than
    /// `age` ticks (at most `i32::MAX`) are ignored.
    pub fn new(capacity: usize, age: u32) -> Self {
        let cap = capacity.next_power_of_two().max(PROBES);
        Self {
            slots: (0..cap).map(|_| Entry::default()).collect(),
            mask: cap - 1,
            age: age.min(i32::MAX as u32),
            learned: AtomicU64::new(0),
        }
    }

    /// Records that `mac` was seen on VLAN `vlan` on `port` at tick `now` (now > 0). An
    /// entry already saying so at this tick is not written (no line bounces between workers).
    #[inline]
    pub fn learn(&self, vlan: u16, mac: &Mac, port: u16, now: u32) {
        let k = key(vlan, mac);
        let h = hash(k);
        let mut victim = None;
        let mut oldest = u32::MAX;
        for i in 0..PROBES {
            let e = &self.slots[(h + i) & self.mask];
            let Some(seen) = e.read() else { continue };
            if seen.seen() != 0 && seen.key == k {
                let is_fresh = fresh(now, seen.seen(), self.age);
                if seen.port() == port && is_fresh && (now.wrapping_sub(seen.seen()) as i32) <= 0 {
                    return;
                }
                if e.write(seen, k, port, now) && (seen.port() != port || !is_fresh) {
                    self.learned.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            let age_key = if fresh(now, seen.seen(), self.age) { seen.seen() } else { 0 };
            if age_key < oldest {
                oldest = age_key;
                victim = Some((e, seen));
            }
        }
        if let Some((e, seen)) = victim {
            if e.write(seen, k, port, now) {
                self.learned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Learning events so far: MACs learned afresh (new, or back after ageing out) or
    /// moved to another port.
    pub fn learned(&self) -> u64 {
        self.learned.load(Ordering::Relaxed)
    }

    /// How many fresh entries the table holds at tick `now`.
    pub fn len(&self, now: u32) -> usize {
        self.slots.iter().filter_map(Entry::read).filter(|e| fresh(now, e.seen(), self.age)).count()
    }

    /// The port `mac` was last seen on in VLAN `vlan`, if it is known and fresh.
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: &Mac, now: u32) -> Option<u16> {
        let k = key(vlan, mac);
        let h = hash(k);
        for i in 0..PROBES {
            let e = self.slots[(h + i) & self.mask].read()?;
            if e.seen() != 0 && e.key == k {
                return fresh(now, e.seen(), self.age).then_some(e.port());
            }
        }
        None
    }

    /// Forgets every entry that points at `port` (the port went away). Unlike learning, it
    /// waits out a writer in an entry: no entry for `port` is left when it returns.
    pub fn flush_port(&self, port: u16) {
        for e in &self.slots {
            let mut tries = 0u32;
            loop {
                let Some(seen) = e.read() else {
                    tries += 1;
                    if tries.is_multiple_of(64) {
                        std::thread::yield_now();
                    }
                    continue;
                };
                if seen.seen() == 0 || seen.port() != port || e.write(seen, 0, 0, 0) {
                    break;
                }
            }
        }
    }

    /// Fresh entries (for `list`): VLAN, MAC, port.
    pub fn entries(&self, now: u32) -> Vec<(u16, Mac, u16)> {
        self.slots
            .iter()
            .filter_map(Entry::read)
            .filter(|e| fresh(now, e.seen(), self.age))
            .map(|e| {
                let b = e.key.to_le_bytes();
                ((e.key >> 48) as u16, [b[0], b[1], b[2], b[3], b[4], b[5]], e.port())
            })
            .collect()
    }
}

/// Whether a MAC is multicast or broadcast.
#[inline]
pub fn is_multicast(m: &Mac) -> bool {
    m[0] & 1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_moves_and_ages() {
        let t = MacTable::new(64, 10);
        let a = [2, 0, 0, 0, 0, 1];
        assert_eq!(t.lookup(0, &a, 1), None);
        t.learn(0, &a, 3, 1);
        assert_eq!(t.lookup(0, &a, 5), Some(3));
        t.learn(0, &a, 4, 6);
        assert_eq!(t.lookup(0, &a, 6), Some(4));
        assert_eq!(t.lookup(0, &a, 17), None, "aged out");
        t.learn(0, &a, 4, 20);
        assert_eq!((t.learned(), t.len(20)), (3, 1), "new, moved, back after ageing");
        t.learn(0, &a, 4, 21);
        assert_eq!(t.learned(), 3, "seen again on the same port: no event");
        t.flush_port(4);
        assert_eq!(t.lookup(0, &a, 20), None);
        assert_eq!(t.len(20), 0);
    }

    #[test]
    fn one_mac_on_two_vlans_is_two_entries() {
        let t = MacTable::new(64, 10);
        let a = [2, 0, 0, 0, 0, 1];
        t.learn(100, &a, 1, 1);
        t.learn(200, &a, 2, 1);
        t.learn(4094, &a, 3, 1);
        assert_eq!((t.lookup(100, &a, 1), t.lookup(200, &a, 1), t.lookup(4094, &a, 1)), (Some(1), Some(2), Some(3)));
        assert_eq!(t.lookup(0, &a, 1), None, "not learned without a VLAN");
        let mut e = t.entries(1);
        e.sort_unstable();
        assert_eq!(e, [(100, a, 1), (200, a, 2), (4094, a, 3)]);
        t.flush_port(2);
        assert_eq!((t.lookup(100, &a, 1), t.lookup(200, &a, 1)), (Some(1), None));
    }

    #[test]
    fn full_table_replaces_oldest() {
        let t = MacTable::new(8, 1000);
        for i in 0..100u8 {
            t.learn(0, &[2, 0, 0, 0, 0, i], 1, u32::from(i) + 1);
        }
        assert_eq!(t.lookup(0, &[2, 0, 0, 0, 0, 99], 101), Some(1));
        assert!(t.entries(101).len() <= 8);
        assert!(is_multicast(&[0xff; 6]));
        assert!(!is_multicast(&[2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn workers_learning_at_once_never_show_a_torn_entry() {
        // Two learners fight over a small table (entries replaced all the time) while a
        // reader checks that every hit is the port its MAC was learned on.
        let t = std::sync::Arc::new(MacTable::new(64, 1000));
        let mac = |i: u32| {
            let b = i.to_be_bytes();
            [2, 0, b[0], b[1], b[2], b[3]]
        };
        let port = |i: u32| (i % 7) as u16;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let learners: Vec<_> = (0..2u32)
            .map(|w| {
                let (t, stop) = (t.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut now = 1;
                    while !stop.load(Ordering::Relaxed) {
                        for i in w * 500..w * 500 + 500 {
                            t.learn((i % 3) as u16, &mac(i), port(i), now);
                        }
                        now += 1;
                    }
                })
            })
            .collect();
        let (mut hits, mut checks) = (0u64, 0u64);
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < until {
            for i in 0..1000 {
                checks += 1;
                if let Some(p) = t.lookup((i % 3) as u16, &mac(i), 1) {
                    assert_eq!(p, port(i), "MAC {i} found on a port it was never learned on");
                    hits += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for l in learners {
            l.join().unwrap();
        }
        assert!(hits > 0 && checks > hits, "{hits} hits of {checks}");
        for p in 0..7 {
            t.flush_port(p);
        }
        assert_eq!(t.len(1), 0, "flushing every port empties the table");
    }

    #[test]
    fn the_default_table_holds_ten_thousand_hosts_behind_one_port() {
        let host = |i: u32| {
            let b = i.to_be_bytes();
            [2, 0, 0x0a, b[1], b[2], b[3]]
        };
        let t = MacTable::new(crate::switch::DEFAULT_MAC_TABLE_SIZE, 300);
        for i in 0..10_000 {
            t.learn(0, &host(i), 1, 1);
        }
        let missing = (0..10_000).filter(|&i| t.lookup(0, &host(i), 2) != Some(1)).count();
        assert_eq!(missing, 0, "every host is found");
        assert_eq!(t.len(2), 10_000);
    }
}
