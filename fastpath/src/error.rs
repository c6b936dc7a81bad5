// What the switch refuses, as one typed error: the control socket turns each
// variant into an error code, so that no client has to read our messages.
//! The switch's errors.

use std::path::PathBuf;

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
    /// The port's socket could not be opened.
    #[error("port '{port}': {why}")]
    Open {
        /// The port.
        port: String,
        /// What failed.
        why: String,
    },
}
