// What `capture` and the `mirror-*` requests carry: the direction of a port's traffic to
// watch, a mirror's description (as requests and the state file hold it) and its counters.
//! Capture and mirror descriptions.

use serde::{Deserialize, Serialize};

/// Which of a port's frames a capture or a mirror copies, as the switch sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Frames the switch received from the port.
    Rx,
    /// Frames the switch sent to the port.
    Tx,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    /// Whether frames received from the port are copied.
    pub fn rx(self) -> bool {
        matches!(self, Self::Rx | Self::Both)
    }

    /// Whether frames sent to the port are copied.
    pub fn tx(self) -> bool {
        matches!(self, Self::Tx | Self::Both)
    }

    /// `rx`, `tx` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rx => "rx",
            Self::Tx => "tx",
            Self::Both => "both",
        }
    }
}

impl std::str::FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rx" => Ok(Self::Rx),
            "tx" => Ok(Self::Tx),
            "both" => Ok(Self::Both),
            _ => Err(format!("direction '{s}' (want rx, tx or both)")),
        }
    }
}

/// The snaplen a capture gets when the request names none: a whole jumbo frame.
pub const DEFAULT_SNAPLEN: u32 = 16 * 1024;
/// The ring slots a capture gets when the request names none.
pub const DEFAULT_SLOTS: u32 = 4096;

fn default_snaplen() -> u32 {
    DEFAULT_SNAPLEN
}

fn default_slots() -> u32 {
    DEFAULT_SLOTS
}

/// A capture of one port (the `capture` request). The reply carries the capture rings' memfds
/// (SCM_RIGHTS): the port's own worker's first, then, for a port whose queue pairs other
/// workers poll, one of each such worker's (the frames the port sent on those pairs). The
/// capture lasts as long as the connection it was asked on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// The port.
    pub port: String,
    /// Which of its frames.
    #[serde(default)]
    pub direction: Direction,
    /// Bytes kept of each frame.
    #[serde(default = "default_snaplen")]
    pub snaplen: u32,
    /// Frames the ring holds before the switch drops (and counts) what it cannot copy.
    #[serde(default = "default_slots")]
    pub slots: u32,
}

/// A mirror: the switch copies the frames of `from` to `to` as well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The mirrored port.
    pub from: String,
    /// The port the copies go to.
    pub to: String,
    /// Which of `from`'s frames.
    #[serde(default)]
    pub direction: Direction,
}

/// A mirror with its counters (the `mirrors` reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorInfo {
    /// The mirror.
    #[serde(flatten)]
    pub mirror: MirrorConfig,
    /// Whether both ports exist (else it waits for them).
    pub active: bool,
    /// Copies `to` took.
    pub sent: u64,
    /// Copies `to` had no room for (dropped: the switch never waits for a mirror).
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_and_defaults() {
        let c: CaptureSpec = serde_json::from_str(r#"{"port":"p"}"#).unwrap();
        assert_eq!(
            c,
            CaptureSpec {
                port: "p".into(),
                direction: Direction::Both,
                snaplen: DEFAULT_SNAPLEN,
                slots: DEFAULT_SLOTS
            }
        );
        let m: MirrorConfig = serde_json::from_str(r#"{"from":"a","to":"b","direction":"rx"}"#).unwrap();
        assert_eq!((m.direction.rx(), m.direction.tx()), (true, false));
        let info = MirrorInfo { mirror: m, active: true, sent: 3, dropped: 1 };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"from":"a","to":"b","direction":"rx","active":true,"sent":3,"dropped":1}"#
        );
        assert_eq!("tx".parse::<Direction>(), Ok(Direction::Tx));
        assert_eq!("in".parse::<Direction>().unwrap_err(), "direction 'in' (want rx, tx or both)");
    }
}
