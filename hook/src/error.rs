// The hook's one error type: every message names the stage's resource, the value and,
// where there is one, what to do about it.
//! Errors.

use std::path::PathBuf;

/// Result with the hook's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the hook refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `fastpath.io/*` annotation that cannot be honoured as written.
    #[error("annotation {key}: '{value}' {reason}")]
    Annotation {
        /// The annotation key, e.g. `fastpath.io/hugepages`.
        key: String,
        /// Its value as given.
        value: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The host cannot give what was asked (pool empty, no free hugepages, ...).
    #[error("{0}")]
    Refused(String),
    /// The host configuration file is wrong.
    #[error("host config {path}: {msg}")]
    HostConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path or resource.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The switch control socket refused or did not answer.
    #[error("fastpathd at {socket}: {msg}")]
    Switch {
        /// The control socket.
        socket: PathBuf,
        /// What happened.
        msg: String,
    },
    /// The ledger could not be read, locked or written.
    #[error("ledger {path}: {msg}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// What happened.
        msg: String,
    },
    /// The OCI state or bundle is not usable.
    #[error("{0}")]
    Oci(String),
}

impl Error {
    /// An [`Error::Annotation`].
    pub fn annotation(key: &str, value: &str, reason: impl Into<String>) -> Self {
        Self::Annotation { key: key.into(), value: value.into(), reason: reason.into() }
    }
}

/// Maps an `io::Error` to [`Error::Io`] with a description of what was being done.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
