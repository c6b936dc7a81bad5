// Test-only: one raw transmit descriptor at any IOVA, which is how the fault test makes
// the IOMMU refuse a DMA. The PMD's own paths never do this.
//! igbvf's raw transmit probe.

use std::time::{Duration, Instant};

use super::desc::{self, Which};
use super::{regs, IgbVf};
use crate::pool::PktPool;

/// What the device did with a raw descriptor posted by [`IgbVf::post_raw_tx`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTxResult {
    /// Whether the descriptor's DD came back.
    pub dd: bool,
    /// TDH after the wait.
    pub tdh: u32,
    /// TDT we wrote.
    pub tdt: u32,
    /// How long until DD (or the timeout).
    pub waited: Duration,
}

impl IgbVf {
    /// Test-only: posts one transmit descriptor pointing at `iova` (which need
    /// not be mapped: this is how the fault test makes the IOMMU refuse a DMA),
    /// waits up to `wait` for DD and reports what the device did. The PMD's
    /// own paths never do this.
    #[doc(hidden)]
    pub fn post_raw_tx(&mut self, pool: &mut PktPool, iova: u64, len: u16, wait: Duration) -> RawTxResult {
        self.reclaim_tx(pool);
        assert!(self.tx_free() > 0, "post_raw_tx: transmit ring full");
        let i = self.tx_tail;
        self.rings.write(Which::Tx, i, desc::tx_data(iova, len));
        self.tx_slots[usize::from(i)] = None;
        self.tx_tail = (i + 1) & (self.n - 1);
        self.tx_inflight += 1;
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.mmio.write(regs::TDT, u32::from(self.tx_tail));
        let start = Instant::now();
        let mut dd = false;
        while start.elapsed() < wait {
            if desc::tx_done(self.rings.read_hi(Which::Tx, i)) {
                dd = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let waited = start.elapsed();
        self.reclaim_tx(pool);
        RawTxResult { dd, tdh: self.mmio.read(regs::TDH), tdt: u32::from(self.tx_tail), waited }
    }
}
