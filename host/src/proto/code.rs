// Why fastpathd refused a request, as a stable code next to the human message: clients
// decide on the code (a missing port at poststop is fine), never on the message's words.
//! Error codes.

use serde::{Deserialize, Serialize};

/// What kind of refusal a reply is; written as a snake_case string (`no_such_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No port of that name.
    NoSuchPort,
    /// A port of that name exists already.
    PortExists,
    /// The request names a bridge the switch does not have.
    NoSuchBridge,
    /// Another port has that socket.
    SocketInUse,
    /// Every port slot is taken.
    SwitchFull,
    /// The request is not JSON, or not a request this switch knows.
    BadRequest,
    /// The port's socket could not be opened or given to its owner.
    OpenFailed,
    /// The client and the switch speak protocol versions that do not meet.
    VersionMismatch,
    /// The switch itself failed (its worker is not running, its state could not be saved).
    Internal,
    /// The switch is handing its ports over to a new one and takes no more requests (ask
    /// the new one).
    ShuttingDown,
    /// No mirror from that port to that port.
    NoSuchMirror,
    /// That port is mirrored to that port already.
    MirrorExists,
    /// A code this client does not know (from a newer fastpathd), or none (from a
    /// fastpathd of protocol 1).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSuchPort => "no_such_port",
            Self::PortExists => "port_exists",
            Self::NoSuchBridge => "no_such_bridge",
            Self::SocketInUse => "socket_in_use",
            Self::SwitchFull => "switch_full",
            Self::BadRequest => "bad_request",
            Self::OpenFailed => "open_failed",
            Self::VersionMismatch => "version_mismatch",
            Self::Internal => "internal",
            Self::ShuttingDown => "shutting_down",
            Self::NoSuchMirror => "no_such_mirror",
            Self::MirrorExists => "mirror_exists",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 13] = [
        ErrorCode::NoSuchPort,
        ErrorCode::PortExists,
        ErrorCode::NoSuchBridge,
        ErrorCode::SocketInUse,
        ErrorCode::SwitchFull,
        ErrorCode::BadRequest,
        ErrorCode::OpenFailed,
        ErrorCode::VersionMismatch,
        ErrorCode::Internal,
        ErrorCode::ShuttingDown,
        ErrorCode::NoSuchMirror,
        ErrorCode::MirrorExists,
        ErrorCode::Unknown,
    ];

    #[test]
    fn codes_are_stable_strings() {
        for c in ALL {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&format!("\"{c}\"")).unwrap(), c);
        }
        assert_eq!(serde_json::to_string(&ErrorCode::NoSuchPort).unwrap(), r#""no_such_port""#);
        // A code from a newer switch still reads.
        assert_eq!(serde_json::from_str::<ErrorCode>(r#""disk_on_fire""#).unwrap(), ErrorCode::Unknown);
    }
}
