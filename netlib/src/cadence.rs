// When a polling port looks at its control path (a socket, a mailbox register):
// seldom, by the clock, so that the syscall or trap it costs stays out of the
// packet latency tail.
//! Control-path cadence for polling ports.

use std::time::{Duration, Instant};

/// How often a port that is up looks at its control path. A `recvmsg` on the
/// control socket or a mailbox register read costs 1-2 µs on a VM: once per
/// millisecond or more it touches a packet's round trip rarely enough to stay out
/// of the 99th percentile, and a peer that went away is still noticed at once.
pub(crate) const CONTROL_PERIOD: Duration = Duration::from_millis(5);

/// Calls between two looks at the clock (the clock read itself costs ~20-50 ns).
const CLOCK_EVERY: u32 = 256;

/// Says when the control path is due: every [`CONTROL_PERIOD`], judged on every
/// [`CLOCK_EVERY`]th call.
#[derive(Debug)]
pub(crate) struct Cadence {
    calls: u32,
    last: Instant,
    period: Duration,
}

impl Default for Cadence {
    fn default() -> Self {
        Self::new(CONTROL_PERIOD)
    }
}

impl Cadence {
    /// Due every `period`.
    pub(crate) fn new(period: Duration) -> Self {
        Self { calls: 0, last: Instant::now(), period }
    }

    /// Call once per rx/tx call; true when the control path should be looked at.
    #[inline]
    pub(crate) fn due(&mut self) -> bool {
        self.calls = self.calls.wrapping_add(1);
        if !self.calls.is_multiple_of(CLOCK_EVERY) {
            return false;
        }
        let now = Instant::now();
        if now.duration_since(self.last) < self.period {
            return false;
        }
        self.last = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_only_after_the_period_and_on_a_clock_call() {
        let mut c = Cadence::new(Duration::from_millis(20));
        assert!(!(0..10 * CLOCK_EVERY).any(|_| c.due()), "not within the period");
        std::thread::sleep(Duration::from_millis(25));
        let first = (1..=CLOCK_EVERY).find(|_| c.due());
        assert!(first.is_some(), "due within one clock interval after the period");
        assert!(!(0..2 * CLOCK_EVERY).any(|_| c.due()), "and not again right away");
        let mut zero = Cadence::new(Duration::ZERO);
        assert_eq!((0..CLOCK_EVERY * 4).filter(|_| zero.due()).count(), 4, "a zero period: every clock call");
    }
}
