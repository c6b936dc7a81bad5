// How loaded the worker is: its passes that moved frames against those that found none, and
// how big each burst it took from a port was; plain adds on the worker's own memory.
//! Worker load counters.

use netlib::pool::BURST;

/// The worker's load since the switch started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// Passes over every port that moved at least one frame.
    pub busy_polls: u64,
    /// Passes that found no frame anywhere.
    pub idle_polls: u64,
    /// Bursts taken from a port, by size: `bursts[n]` counts bursts of `n` frames (1 to
    /// [`BURST`]; `bursts[0]` stays 0).
    pub bursts: [u64; BURST + 1],
}

impl Default for Load {
    fn default() -> Self {
        Self { busy_polls: 0, idle_polls: 0, bursts: [0; BURST + 1] }
    }
}

impl Load {
    /// Counts a pass that moved `moved` frames.
    #[inline]
    pub fn pass(&mut self, moved: usize) {
        if moved == 0 {
            self.idle_polls += 1;
        } else {
            self.busy_polls += 1;
        }
    }

    /// Counts a burst of `n` frames taken from a port (0: nothing taken, not a burst).
    #[inline]
    pub fn burst(&mut self, n: usize) {
        if n > 0 {
            self.bursts[n.min(BURST)] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_and_bursts_are_counted_by_what_they_moved() {
        let mut l = Load::default();
        for moved in [0, 0, 3, 40] {
            l.pass(moved);
        }
        for n in [0, 1, 1, BURST, BURST + 5] {
            l.burst(n);
        }
        assert_eq!((l.busy_polls, l.idle_polls), (2, 2));
        assert_eq!((l.bursts[0], l.bursts[1], l.bursts[BURST]), (0, 2, 2));
        assert_eq!(l.bursts.iter().sum::<u64>(), 4);
    }
}
