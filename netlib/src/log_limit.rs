// A per-source limit on repeated log lines (`LogLimit`): a few lines per window, the rest
// counted and reported with the next line let through ("... 812 more like this in 1 s").
//! Rate limiting of repeated log lines.

use std::time::{Duration, Instant};

/// Lines let through per window unless told otherwise.
pub const DEFAULT_BURST: u32 = 5;
/// The default window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

/// Lets `burst` lines through per `window`; counts the others.
#[derive(Debug, Clone)]
pub struct LogLimit {
    burst: u32,
    window: Duration,
    start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
    suppressed_since: Option<Instant>,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new(DEFAULT_BURST, DEFAULT_WINDOW)
    }
}

impl LogLimit {
    /// A limit of `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self { burst, window, start: None, in_window: 0, suppressed: 0, suppressed_since: None }
    }

    /// Whether a line may be logged at `now`: `Some("")` to log it as is, `Some(note)` to log
    /// it with `note` appended (how many lines were held back before it, and over how
    /// long), `None` to drop it (it is counted).
    pub fn admit(&mut self, now: Instant) -> Option<String> {
        if self.start.is_none_or(|s| now.duration_since(s) >= self.window) {
            self.start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.burst {
            self.suppressed += 1;
            self.suppressed_since.get_or_insert(now);
            return None;
        }
        self.in_window += 1;
        let note = match self.suppressed_since.take() {
            Some(since) => {
                let secs = now.duration_since(since).as_secs_f64().max(self.window.as_secs_f64());
                format!(" (... {} more like this in {secs:.0} s)", std::mem::take(&mut self.suppressed))
            }
            None => String::new(),
        };
        Some(note)
    }

    /// Lines held back and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_cut_to_the_burst_and_counted_on_the_next_line() {
        let mut l = LogLimit::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.admit(t0), Some(String::new()));
        assert_eq!(l.admit(t0), Some(String::new()));
        for i in 0..812 {
            assert_eq!(l.admit(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(l.suppressed(), 812);
        let next = l.admit(t0 + Duration::from_secs(1)).expect("a new window lets a line through");
        assert_eq!(next, " (... 812 more like this in 1 s)");
        assert_eq!(l.suppressed(), 0);
        assert_eq!(l.admit(t0 + Duration::from_millis(1001)), Some(String::new()));
    }
}
