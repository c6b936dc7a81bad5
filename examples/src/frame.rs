// The test frame: Ethernet header, a magic, a sequence number and a checksum
// over the whole payload, so a receiver can tell lost, reordered and damaged frames.
//! Test frames with sequence numbers and checksums.

/// Ethertype of test frames (IEEE local experimental).
pub const ETHERTYPE: u16 = 0x88b5;
/// Magic after the Ethernet header.
pub const MAGIC: [u8; 4] = *b"FPG1";
/// Smallest frame we make.
pub const MIN_FRAME: usize = 60;
/// Largest frame we make.
pub const MAX_FRAME: usize = 9018;
const SEQ_OFF: usize = 18;
const CSUM_OFF: usize = 26;
const FILL_OFF: usize = 30;
/// Where a timestamp (ns) may be put by ping.
pub const STAMP_OFF: usize = 30;

pub use netlib::mac::parse_mac;

/// A frame template: everything but the sequence number and checksum.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    base_sum: u32,
}

fn sum(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)))
}

impl Template {
    /// A template of `size` bytes from `src` to `dst`.
    pub fn new(size: usize, dst: [u8; 6], src: [u8; 6]) -> Result<Self, String> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&size) {
            return Err(format!("frame size {size} must be in {MIN_FRAME}..={MAX_FRAME}"));
        }
        let mut b = vec![0u8; size];
        b[0..6].copy_from_slice(&dst);
        b[6..12].copy_from_slice(&src);
        b[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
        b[14..18].copy_from_slice(&MAGIC);
        for (i, x) in b[FILL_OFF..].iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(7).wrapping_add(3);
        }
        let base_sum = sum(&b[14..SEQ_OFF]).wrapping_add(sum(&b[FILL_OFF..]));
        Ok(Self { bytes: b, base_sum })
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes the frame with sequence `seq` into `out` (exactly `len()` bytes).
    #[inline]
    pub fn write(&self, out: &mut [u8], seq: u64) {
        out.copy_from_slice(&self.bytes);
        self.write_header(out, seq);
    }

    /// Writes only the headers, sequence and checksum: for a buffer that already
    /// holds this template's payload (a generator reusing its own buffers, which
    /// nobody else writes), as DPDK's txonly does.
    #[inline]
    pub fn write_header(&self, out: &mut [u8], seq: u64) {
        out[..SEQ_OFF].copy_from_slice(&self.bytes[..SEQ_OFF]);
        let s = seq.to_le_bytes();
        out[SEQ_OFF..SEQ_OFF + 8].copy_from_slice(&s);
        let c = self.base_sum.wrapping_add(sum(&s));
        out[CSUM_OFF..CSUM_OFF + 4].copy_from_slice(&c.to_le_bytes());
    }
}

/// What a receiver finds in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A test frame, intact, with this sequence number.
    Good(u64),
    /// Not a test frame (other ethertype or magic).
    Foreign,
    /// A test frame whose checksum does not match.
    Damaged,
}

/// Checks a received frame.
pub fn check(f: &[u8]) -> Check {
    if f.len() < MIN_FRAME || f[12..14] != ETHERTYPE.to_be_bytes() || f[14..18] != MAGIC {
        return Check::Foreign;
    }
    let mut c = [0u8; 4];
    c.copy_from_slice(&f[CSUM_OFF..CSUM_OFF + 4]);
    let want = u32::from_le_bytes(c);
    let got = sum(&f[14..CSUM_OFF]).wrapping_add(sum(&f[FILL_OFF..]));
    if got != want {
        return Check::Damaged;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&f[SEQ_OFF..SEQ_OFF + 8]);
    Check::Good(u64::from_le_bytes(s))
}

/// The sequence number of a test frame, unchecked (for fast paths).
pub fn seq_of(f: &[u8]) -> Option<u64> {
    let s: [u8; 8] = f.get(SEQ_OFF..SEQ_OFF + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

/// Turns a received frame into a reply from `mac`: its source becomes the destination
/// and `mac` the source (what a reflector with a MAC of its own does).
#[inline]
pub fn reply_from(f: &mut [u8], mac: &[u8; 6]) {
    if f.len() >= 12 {
        f.copy_within(6..12, 0);
        f[6..12].copy_from_slice(mac);
    }
}

/// Writes `mac` as the frame's source MAC (a forwarder sending as itself).
#[inline]
pub fn set_src(f: &mut [u8], mac: &[u8; 6]) {
    if let Some(s) = f.get_mut(6..12) {
        s.copy_from_slice(mac);
    }
}

/// Writes `mac` as the frame's destination MAC.
#[inline]
pub fn set_dst(f: &mut [u8], mac: &[u8; 6]) {
    if let Some(d) = f.get_mut(0..6) {
        d.copy_from_slice(mac);
    }
}

/// The MAC `n` after `base`, counting in its low three bytes (wrapping there): the
/// `n`th of a run of hosts that share `base`'s first three bytes.
#[inline]
pub fn nth_mac(base: &[u8; 6], n: u32) -> [u8; 6] {
    let low = u32::from_be_bytes([0, base[3], base[4], base[5]]).wrapping_add(n) & 0x00ff_ffff;
    let l = low.to_be_bytes();
    [base[0], base[1], base[2], l[1], l[2], l[3]]
}

/// Swaps source and destination MAC.
#[inline]
pub fn macswap(f: &mut [u8]) {
    if f.len() >= 12 {
        let mut d = [0u8; 6];
        d.copy_from_slice(&f[0..6]);
        f.copy_within(6..12, 0);
        f[6..12].copy_from_slice(&d);
    }
}

/// Counts lost and reordered frames from their sequence numbers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqTracker {
    /// Next expected sequence.
    pub next: u64,
    /// Gaps seen (frames never arrived, so far).
    pub lost: u64,
    /// Frames older than the newest seen.
    pub reordered: u64,
}

impl SeqTracker {
    /// Accounts for one frame.
    pub fn see(&mut self, seq: u64) {
        match seq.cmp(&self.next) {
            std::cmp::Ordering::Equal => self.next += 1,
            std::cmp::Ordering::Greater => {
                self.lost += seq - self.next;
                self.next = seq + 1;
            }
            std::cmp::Ordering::Less => {
                self.reordered += 1;
                self.lost = self.lost.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_mac_counts_in_the_low_three_bytes() {
        let base = [2, 0xaa, 0, 0, 0xff, 0xfe];
        assert_eq!(nth_mac(&base, 0), base);
        assert_eq!(nth_mac(&base, 1), [2, 0xaa, 0, 0, 0xff, 0xff]);
        assert_eq!(nth_mac(&base, 2), [2, 0xaa, 0, 1, 0, 0]);
        assert_eq!(nth_mac(&[2, 0, 0, 0xff, 0xff, 0xff], 1), [2, 0, 0, 0, 0, 0]);
        let mut f = vec![0u8; 64];
        Template::new(64, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]).unwrap().write(&mut f, 7);
        set_dst(&mut f, &[4; 6]);
        set_src(&mut f, &[6; 6]);
        assert_eq!(&f[..12], &[4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6]);
        assert_eq!(check(&f), Check::Good(7), "the MACs are outside the checksum");
    }

    #[test]
    fn frames_check_and_detect_damage() {
        let t = Template::new(64, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]).unwrap();
        let mut f = vec![0u8; 64];
        t.write(&mut f, 42);
        assert_eq!(check(&f), Check::Good(42));
        f[50] ^= 1;
        assert_eq!(check(&f), Check::Damaged);
        f[12] = 8;
        assert_eq!(check(&f), Check::Foreign);
        assert!(Template::new(59, [0; 6], [0; 6]).is_err());
        assert!(Template::new(9019, [0; 6], [0; 6]).is_err());
        let jumbo = Template::new(9018, [1; 6], [2; 6]).unwrap();
        let mut f = vec![0u8; 9018];
        jumbo.write(&mut f, 7);
        assert_eq!(check(&f), Check::Good(7));
    }

    #[test]
    fn seq_tracker_counts() {
        let mut s = SeqTracker::default();
        for q in [0, 1, 3, 2, 4, 7] {
            s.see(q);
        }
        assert_eq!(s.lost, 2);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.next, 8);
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00").unwrap_err().to_string().contains("6 parts"));
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
        let mut f = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2];
        macswap(&mut f);
        assert_eq!(f[0], 2);
        assert_eq!(f[6], 1);
        let me = [2, 0, 0, 0, 0, 9];
        reply_from(&mut f, &me);
        assert_eq!(f, [1, 1, 1, 1, 1, 1, 2, 0, 0, 0, 0, 9]);
        set_src(&mut f, &[2, 0, 0, 0, 0, 7]);
        assert_eq!(f, [1, 1, 1, 1, 1, 1, 2, 0, 0, 0, 0, 7]);
        // Too short to have addresses: left alone.
        let mut runt = [5u8; 8];
        reply_from(&mut runt, &me);
        set_src(&mut runt, &me);
        assert_eq!(runt, [5; 8]);
    }
}
