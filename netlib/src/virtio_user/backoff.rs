// When a down port tries its backend again: at once, then after a delay that starts short
// and doubles on every failed try up to a cap, so that a restarted switch is found quickly.
//! virtio-user's reconnect back-off.

use std::time::{Duration, Instant};

/// The delay after the first failed try.
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(2);
/// The longest delay between two tries.
pub(super) const RETRY_MAX: Duration = Duration::from_millis(128);

/// The schedule of a down port's tries: a try is due at once after the port went down,
/// then `RETRY_FIRST` after a failed one, doubling on each further failure up to
/// `RETRY_MAX`. A switch restarted by systemd listens again within tens of milliseconds:
/// the short first delays find it then, and the cap bounds both the extra outage of a
/// slow restart and the cost of trying (a `connect` and a failed one costs a few µs).
#[derive(Debug, Default)]
pub(super) struct Backoff {
    last: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    /// Whether a try is due at `now`; if so, it is counted as made at `now`.
    pub(super) fn due(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < self.delay) {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// The try that was due failed: wait [`RETRY_FIRST`] after the first failure, then
    /// twice as long as the last time (up to [`RETRY_MAX`]) before the next try.
    pub(super) fn failed(&mut self) {
        self.delay = if self.delay.is_zero() { RETRY_FIRST } else { (self.delay * 2).min(RETRY_MAX) };
    }

    /// The try found nothing to do yet (a server-mode port with no backend waiting to be
    /// accepted: a cheap, expected miss): try again after [`RETRY_FIRST`].
    pub(super) fn nothing_yet(&mut self) {
        self.delay = RETRY_FIRST;
    }

    /// The port went down (or came up): the next try is due at once, then the delays
    /// start again from [`RETRY_FIRST`].
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }

    /// The delay before the next try.
    #[cfg(test)]
    pub(super) fn delay(&self) -> Duration {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_try_at_once_then_doubling_delays_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.due(t0), "the first try is due at once");
        let mut at = t0;
        let mut delays = vec![];
        for _ in 0..10 {
            b.failed();
            delays.push(b.delay().as_millis());
            assert!(!b.due(at + b.delay().saturating_sub(Duration::from_micros(1))), "not due before the delay");
            at += b.delay();
            assert!(b.due(at), "due once the delay has passed");
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 128, 128, 128]);
    }

    #[test]
    fn reset_makes_a_try_due_at_once_and_starts_the_delays_again() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.due(t0));
        for _ in 0..8 {
            b.failed();
        }
        assert_eq!(b.delay(), RETRY_MAX);
        assert!(!b.due(t0 + Duration::from_millis(1)));
        b.reset();
        assert!(b.due(t0 + Duration::from_millis(1)), "due at once after a reset");
        b.failed();
        assert_eq!(b.delay(), RETRY_FIRST);
        b.failed();
        b.nothing_yet();
        assert_eq!(b.delay(), RETRY_FIRST, "a server's empty accept queue does not grow the delay");
    }

    #[test]
    fn a_clock_read_before_the_last_try_is_not_due() {
        let earlier = Instant::now();
        let mut b = Backoff::default();
        assert!(b.due(earlier + Duration::from_secs(1)));
        b.failed();
        assert!(!b.due(earlier), "an earlier instant counts as no time passed");
    }
}
