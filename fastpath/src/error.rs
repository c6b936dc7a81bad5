// What the switch refuses, as one typed error: the control socket turns each
// variant into an error code, so that no client has to read our messages.
//! The switch's errors.

use std::path::PathBuf;

use fastpath_host::proto::ErrorCode;

/// Why the switch refused a request about its ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    /// The port names a bridge the switch does not have.
    #[error("bridge '{bridge}' does not exist (bridges: {})", known.join(", "))]
    NoSuchBridge {
        /// The bridge asked for.
        bridge: String,
        /// The bridges there are.
        known: Vec<String>,
    },
    /// A port of that name exists already.
    #[error("port '{0}' already exists")]
    PortExists(String),
    /// Another port has that socket.
    #[error("socket {} is already port '{port}'", socket.display())]
    SocketInUse {
        /// The socket path.
        socket: PathBuf,
        /// The port that has it.
        port: String,
    },
    /// Every slot is taken.
    #[error("the switch is full ({0} ports)")]
    Full(usize),
    /// No port of that name.
    #[error("port '{0}' does not exist")]
    NoSuchPort(String),
    /// No mirror from that port to that port.
    #[error("no mirror from '{from}' to '{to}'")]
    NoSuchMirror {
        /// The mirrored port.
        from: String,
        /// The port the copies go to.
        to: String,
    },
    /// That port is mirrored to that port already.
    #[error("'{from}' is mirrored to '{to}' already")]
    MirrorExists {
        /// The mirrored port.
        from: String,
        /// The port the copies go to.
        to: String,
    },
    /// A mirror from a port to itself.
    #[error("a mirror from '{0}' to itself")]
    MirrorToItself(String),
    /// The port's socket could not be opened.
    #[error("port '{port}': {why}")]
    Open {
        /// The port.
        port: String,
        /// What failed.
        why: String,
    },
}

impl SwitchError {
    /// The control protocol's code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoSuchBridge { .. } => ErrorCode::NoSuchBridge,
            Self::PortExists(_) => ErrorCode::PortExists,
            Self::SocketInUse { .. } => ErrorCode::SocketInUse,
            Self::Full(_) => ErrorCode::SwitchFull,
            Self::NoSuchPort(_) => ErrorCode::NoSuchPort,
            Self::Open { .. } => ErrorCode::OpenFailed,
            Self::NoSuchMirror { .. } => ErrorCode::NoSuchMirror,
            Self::MirrorExists { .. } => ErrorCode::MirrorExists,
            Self::MirrorToItself(_) => ErrorCode::BadRequest,
        }
    }
}

impl From<SwitchError> for fastpath_host::proto::Response {
    fn from(e: SwitchError) -> Self {
        Self::error(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_code() {
        let cases = [
            (SwitchError::NoSuchBridge { bridge: "x".into(), known: vec!["br0".into()] }, "no_such_bridge"),
            (SwitchError::PortExists("a".into()), "port_exists"),
            (SwitchError::SocketInUse { socket: "/s".into(), port: "a".into() }, "socket_in_use"),
            (SwitchError::Full(64), "switch_full"),
            (SwitchError::NoSuchPort("a".into()), "no_such_port"),
            (SwitchError::Open { port: "a".into(), why: "EACCES".into() }, "open_failed"),
            (SwitchError::NoSuchMirror { from: "a".into(), to: "b".into() }, "no_such_mirror"),
            (SwitchError::MirrorExists { from: "a".into(), to: "b".into() }, "mirror_exists"),
            (SwitchError::MirrorToItself("a".into()), "bad_request"),
        ];
        for (e, code) in cases {
            assert_eq!(e.code().as_str(), code, "{e}");
            let r = fastpath_host::proto::Response::from(e.clone());
            assert_eq!((r.ok, r.code, r.error), (false, Some(e.code()), Some(e.to_string())));
        }
    }
}
