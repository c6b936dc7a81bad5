// What fastpathd says about itself: the reply to `status`, and to `handover` (the old switch's
// last word before it exits): its pid, ports, state file, and how soon it forwarded a frame.
//! Switch status.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A switch's account of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchStatus {
    /// Its process id.
    pub pid: u32,
    /// How many ports it holds.
    pub ports: usize,
    /// The file it keeps its ports in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// The pid of the switch it took over from (`fastpathd --takeover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_over_from: Option<u32>,
    /// Milliseconds from its start (when it took over: from the old switch stopping) to the
    /// first frame it forwarded; `None` until one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_ms: Option<f64>,
    /// The CPU its polling worker is pinned to (`None`: not pinned, or a switch too old to say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<usize>,
    /// The CPU of each of its workers when it runs several (`fastpathd --cores`; `core` is
    /// the first); empty with one worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<usize>,
}

impl SwitchStatus {
    /// The CPUs its workers are pinned to: `cores`, else `core` (empty: not pinned).
    pub fn worker_cpus(&self) -> Vec<usize> {
        if self.cores.is_empty() {
            self.core.into_iter().collect()
        } else {
            self.cores.clone()
        }
    }
}
