// When frames came, as a receiver saw it: the longest gap between frames (only the
// time it was looking and found none) and the frames of each fixed window of time.
//! Gaps between frames and per-window rates, for the sink.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A receive loop's view of time: call [`Timeline::empty`] after a poll that found
/// nothing and [`Timeline::frames`] after one that found frames.
///
/// A gap is measured from the poll that found the last frame to the last poll that
/// still found none before the next frame: the time the receiver *saw* no traffic. A
/// receiver that was not running (descheduled) saw nothing either way, so its own
/// scheduling delays never count as gaps; a sender or switch that stalled does.
#[derive(Debug)]
pub struct Timeline {
    last_frames: Option<Instant>,
    last_empty: Option<Instant>,
    max_gap: Duration,
    window: Option<Window>,
}

/// One window of time: frames and the longest gap that ended in it.
#[derive(Debug, Clone, Copy)]
struct Window {
    every: Duration,
    start: Instant,
    frames: u64,
    max_gap: Duration,
}

/// What a finished window saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReport {
    /// Wall-clock time at its end, in milliseconds since the Unix epoch (to line it up
    /// with what other processes did meanwhile).
    pub end_unix_ms: u64,
    /// Its length in seconds.
    pub secs: f64,
    /// Frames received in it.
    pub frames: u64,
    /// The longest gap that ended in it.
    pub max_gap: Duration,
    /// The gap still open at its end (no frame since): a stall that has not ended yet.
    pub open_gap: Duration,
}

impl Timeline {
    /// A timeline that reports a window every `every` (`None`: no windows).
    pub fn new(every: Option<Duration>, now: Instant) -> Self {
        Self {
            last_frames: None,
            last_empty: None,
            max_gap: Duration::ZERO,
            window: every.filter(|d| !d.is_zero()).map(|every| Window {
                every,
                start: now,
                frames: 0,
                max_gap: Duration::ZERO,
            }),
        }
    }

    /// A poll at `now` found nothing.
    #[inline]
    pub fn empty(&mut self, now: Instant) {
        self.last_empty = Some(now);
    }

    /// A poll at `now` found `n` frames.
    #[inline]
    pub fn frames(&mut self, now: Instant, n: u64) {
        if let (Some(f), Some(e)) = (self.last_frames, self.last_empty) {
            let gap = e.saturating_duration_since(f);
            self.max_gap = self.max_gap.max(gap);
            if let Some(w) = &mut self.window {
                w.max_gap = w.max_gap.max(gap);
            }
        }
        self.last_frames = Some(now);
        if let Some(w) = &mut self.window {
            w.frames += n;
        }
    }

    /// The longest gap so far.
    pub fn max_gap(&self) -> Duration {
        self.max_gap
    }

    /// The window that ended by `now`, if one did (the next one starts at `now`).
    #[inline]
    pub fn window_due(&mut self, now: Instant) -> Option<WindowReport> {
        let w = self.window.as_mut()?;
        let secs = now.saturating_duration_since(w.start);
        if secs < w.every {
            return None;
        }
        let end_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let open_gap = match (self.last_frames, self.last_empty) {
            (Some(f), Some(e)) => e.saturating_duration_since(f),
            _ => Duration::ZERO,
        };
        let r = WindowReport { end_unix_ms, secs: secs.as_secs_f64(), frames: w.frames, max_gap: w.max_gap, open_gap };
        *w = Window { start: now, frames: 0, max_gap: Duration::ZERO, ..*w };
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_gap_is_the_time_the_receiver_saw_nothing() {
        let t0 = Instant::now();
        let mut t = Timeline::new(None, t0);
        t.frames(t0, 1);
        t.empty(t0 + ms(1));
        t.empty(t0 + ms(7));
        t.frames(t0 + ms(8), 3);
        assert_eq!(t.max_gap(), ms(7));
        // Descheduled for 50 ms right after a frame: it saw no empty poll, so no gap.
        t.frames(t0 + ms(58), 1);
        assert_eq!(t.max_gap(), ms(7));
        // A longer stall while it kept looking.
        t.empty(t0 + ms(60));
        t.empty(t0 + ms(78));
        t.frames(t0 + ms(79), 1);
        assert_eq!(t.max_gap(), ms(20));
        assert!(t.window_due(t0 + ms(1000)).is_none(), "no windows asked for");
    }

    #[test]
    fn windows_count_frames_and_their_own_longest_gap() {
        let t0 = Instant::now();
        let mut t = Timeline::new(Some(ms(100)), t0);
        t.frames(t0, 2);
        t.empty(t0 + ms(30));
        t.frames(t0 + ms(31), 5);
        assert!(t.window_due(t0 + ms(99)).is_none());
        let w = t.window_due(t0 + ms(100)).unwrap();
        assert_eq!((w.frames, w.max_gap), (7, ms(30)));
        assert!((w.secs - 0.1).abs() < 1e-9 && w.end_unix_ms > 0);
        t.frames(t0 + ms(150), 1);
        let w = t.window_due(t0 + ms(200)).unwrap();
        assert_eq!((w.frames, w.max_gap, w.open_gap), (1, ms(0), ms(0)));
        assert_eq!(t.max_gap(), ms(30));
        // A stall that has not ended: no frame in the window, the gap still open.
        t.empty(t0 + ms(299));
        let w = t.window_due(t0 + ms(300)).unwrap();
        assert_eq!((w.frames, w.max_gap, w.open_gap), (0, ms(0), ms(149)));
    }
}
