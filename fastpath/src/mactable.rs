// The learning bridge's MAC table: fixed-size open addressing, no allocation
// after creation, entries age out after a configured time.
//! MAC learning table.

/// A MAC address.
pub type Mac = [u8; 6];

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    mac: Mac,
    port: u16,
    /// Tick of the last time this MAC was seen as a source; 0 = empty.
    seen: u32,
}

/// How many slots a lookup probes.
const PROBES: usize = 8;

/// A learning table mapping MAC → port, with ageing.
#[derive(Debug)]
pub struct MacTable {
    slots: Vec<Entry>,
    mask: usize,
    age: u32,
}

#[inline]
fn hash(m: &Mac) -> usize {
    let v = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]);
    (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

impl MacTable {
    /// A table of `capacity` slots (rounded to a power of two); entries older than
    /// `age` ticks are ignored.
    pub fn new(capacity: usize, age: u32) -> Self {
        let cap = capacity.next_power_of_two().max(PROBES);
        Self { slots: vec![Entry::default(); cap], mask: cap - 1, age }
    }

    /// Records that `mac` was seen on `port` at tick `now` (now > 0).
    #[inline]
    pub fn learn(&mut self, mac: &Mac, port: u16, now: u32) {
        let h = hash(mac);
        let mut victim = h & self.mask;
        let mut oldest = u32::MAX;
        for i in 0..PROBES {
            let s = (h + i) & self.mask;
            let e = &mut self.slots[s];
            if e.seen != 0 && e.mac == *mac {
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
        self.slots[victim] = Entry { mac: *mac, port, seen: now };
    }

    /// The port `mac` was last seen on, if it is known and fresh.
    #[inline]
    pub fn lookup(&self, mac: &Mac, now: u32) -> Option<u16> {
        let h = hash(mac);
        for i in 0..PROBES {
            let e = &self.slots[(h + i) & self.mask];
            if e.seen != 0 && e.mac == *mac {
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

    /// Fresh entries (for `list`).
    pub fn entries(&self, now: u32) -> Vec<(Mac, u16)> {
        self.slots
            .iter()
            .filter(|e| e.seen != 0 && now.wrapping_sub(e.seen) <= self.age)
            .map(|e| (e.mac, e.port))
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
        assert_eq!(t.lookup(&a, 1), None);
        t.learn(&a, 3, 1);
        assert_eq!(t.lookup(&a, 5), Some(3));
        t.learn(&a, 4, 6);
        assert_eq!(t.lookup(&a, 6), Some(4));
        assert_eq!(t.lookup(&a, 17), None, "aged out");
        t.learn(&a, 4, 20);
        t.flush_port(4);
        assert_eq!(t.lookup(&a, 20), None);
    }

    #[test]
    fn full_table_replaces_oldest() {
        let mut t = MacTable::new(8, 1000);
        for i in 0..100u8 {
            t.learn(&[2, 0, 0, 0, 0, i], 1, u32::from(i) + 1);
        }
        assert_eq!(t.lookup(&[2, 0, 0, 0, 0, 99], 101), Some(1));
        assert!(t.entries(101).len() <= 8);
        assert!(is_multicast(&[0xff; 6]));
        assert!(!is_multicast(&[2, 0, 0, 0, 0, 1]));
    }
}
