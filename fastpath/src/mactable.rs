// The learning bridge's MAC table, keyed by VLAN and MAC: fixed-size open addressing,
// no allocation after creation, entries age out after a configured time.
//! MAC learning table.

/// A MAC address.
pub type Mac = [u8; 6];

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The VLAN (bits 48..60) and the MAC (bits 0..48), compared at once.
    key: u64,
    port: u16,
    /// Tick of the last time this MAC was seen as a source; 0 = empty.
    seen: u32,
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
#[derive(Debug)]
pub struct MacTable {
    slots: Vec<Entry>,
    mask: usize,
    age: u32,
    /// Learning events: MACs learned afresh (new, back after ageing out) or moved to
    /// another port.
    learned: u64,
}

#[inline]
fn hash(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

impl MacTable {
    /// A table of `capacity` slots (rounded to a power of two); entries older than
    /// `age` ticks are ignored.
    pub fn new(capacity: usize, age: u32) -> Self {
        let cap = capacity.next_power_of_two().max(PROBES);
        Self { slots: vec![Entry::default(); cap], mask: cap - 1, age, learned: 0 }
    }

    /// Records that `mac` was seen on VLAN `vlan` on `port` at tick `now` (now > 0).
    #[inline]
    pub fn learn(&mut self, vlan: u16, mac: &Mac, port: u16, now: u32) {
        let k = key(vlan, mac);
        let h = hash(k);
        let mut victim = h & self.mask;
        let mut oldest = u32::MAX;
        for i in 0..PROBES {
            let s = (h + i) & self.mask;
            let e = &mut self.slots[s];
            if e.seen != 0 && e.key == k {
                if e.port != port || now.wrapping_sub(e.seen) > self.age {
                    self.learned += 1;
                }
                e.port = port;
                e.seen = now;
                return;
            }
            let age_key = if e.seen == 0 || now.wrapping_sub(e.seen) > self.age { 0 } else { e.seen };
            if age_key < oldest {
                oldest = age_key;
                victim = s;
            }
        }
        self.slots[victim] = Entry { key: k, port, seen: now };
        self.learned += 1;
    }

    /// Learning events so far: MACs learned afresh (new, or back after ageing out) or
    /// moved to another port.
    pub fn learned(&self) -> u64 {
        self.learned
    }

    /// How many fresh entries the table holds at tick `now`.
    pub fn len(&self, now: u32) -> usize {
        self.slots.iter().filter(|e| e.seen != 0 && now.wrapping_sub(e.seen) <= self.age).count()
    }

    /// The port `mac` was last seen on in VLAN `vlan`, if it is known and fresh.
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: &Mac, now: u32) -> Option<u16> {
        let k = key(vlan, mac);
        let h = hash(k);
        for i in 0..PROBES {
            let e = &self.slots[(h + i) & self.mask];
            if e.seen != 0 && e.key == k {
                return (now.wrapping_sub(e.seen) <= self.age).then_some(e.port);
            }
        }
        None
    }

    /// Forgets every entry that points at `port` (the port went away).
    pub fn flush_port(&mut self, port: u16) {
        for e in &mut self.slots {
            if e.seen != 0 && e.port == port {
                *e = Entry::default();
            }
        }
    }

    /// Fresh entries (for `list`): VLAN, MAC, port.
    pub fn entries(&self, now: u32) -> Vec<(u16, Mac, u16)> {
        self.slots
            .iter()
            .filter(|e| e.seen != 0 && now.wrapping_sub(e.seen) <= self.age)
            .map(|e| {
                let b = e.key.to_le_bytes();
                ((e.key >> 48) as u16, [b[0], b[1], b[2], b[3], b[4], b[5]], e.port)
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
        let mut t = MacTable::new(64, 10);
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
        let mut t = MacTable::new(64, 10);
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
        let mut t = MacTable::new(8, 1000);
        for i in 0..100u8 {
            t.learn(0, &[2, 0, 0, 0, 0, i], 1, u32::from(i) + 1);
        }
        assert_eq!(t.lookup(0, &[2, 0, 0, 0, 0, 99], 101), Some(1));
        assert!(t.entries(101).len() <= 8);
        assert!(is_multicast(&[0xff; 6]));
        assert!(!is_multicast(&[2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn the_default_table_holds_ten_thousand_hosts_behind_one_port() {
        let host = |i: u32| {
            let b = i.to_be_bytes();
            [2, 0, 0x0a, b[1], b[2], b[3]]
        };
        let mut t = MacTable::new(crate::switch::DEFAULT_MAC_TABLE_SIZE, 300);
        for i in 0..10_000 {
            t.learn(0, &host(i), 1, 1);
        }
        let missing = (0..10_000).filter(|&i| t.lookup(0, &host(i), 2) != Some(1)).count();
        assert_eq!(missing, 0, "every host is found");
        assert_eq!(t.len(2), 10_000);
    }
}
