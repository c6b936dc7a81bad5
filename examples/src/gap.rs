// Gaps in a stream of frames: the time between one frame's arrival and the next one's, the
// longest so far, and which gaps are long enough to report (sink --gaps, the restart bench).
//! Gaps between received frames.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tracks the time between received bursts and says which gaps exceed a threshold.
#[derive(Debug)]
pub struct Gaps {
    threshold: Duration,
    last: Option<Instant>,
    longest: Duration,
}

impl Gaps {
    /// Gaps longer than `threshold` are reported by [`Gaps::frame`].
    pub fn new(threshold: Duration) -> Self {
        Self { threshold, last: None, longest: Duration::ZERO }
    }

    /// A threshold in milliseconds from a flag: finite and not negative, else an error
    /// naming `flag` and the value.
    pub fn threshold_ms(flag: &str, ms: f64) -> Result<Duration, String> {
        Duration::try_from_secs_f64(ms / 1000.0)
            .map_err(|_| format!("{flag} {ms}: must be a finite number of milliseconds, 0 or more"))
    }

    /// Frames arrived at `now`: the gap since the previous arrival if it is longer than
    /// the threshold (`None` for the first arrival).
    pub fn frame(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last.replace(now)?);
        self.longest = self.longest.max(gap);
        (gap > self.threshold).then_some(gap)
    }

    /// The longest gap seen between two arrivals.
    pub fn longest(&self) -> Duration {
        self.longest
    }
}

/// CLOCK_REALTIME in nanoseconds since the epoch (0 if the clock is before it).
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_gaps_over_the_threshold_and_keeps_the_longest() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = Gaps::new(ms(2));
        assert_eq!(g.frame(t0), None, "the first arrival has no gap");
        assert_eq!(g.frame(t0 + ms(1)), None);
        assert_eq!(g.frame(t0 + ms(51)), Some(ms(50)));
        assert_eq!(g.frame(t0 + ms(53)), None, "exactly the threshold is not over it");
        assert_eq!(g.frame(t0 + ms(60)), Some(ms(7)));
        assert_eq!(g.longest(), ms(50));
    }

    #[test]
    fn a_threshold_must_be_finite_and_not_negative() {
        assert_eq!(Gaps::threshold_ms("--gaps", 2.5), Ok(Duration::from_micros(2500)));
        assert_eq!(Gaps::threshold_ms("--gaps", 0.0), Ok(Duration::ZERO));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = Gaps::threshold_ms("--gaps", bad).unwrap_err();
            assert!(e.starts_with("--gaps "), "{e}");
        }
    }
}
