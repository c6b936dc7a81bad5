// The client side of fastpathd's control socket, once for fastpathctl and the hook: connect,
// one JSON line each way within a timeout, and the reply's version and code checked.
//! The control client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::version::encode_request;
use super::{ErrorCode, Request, Response, VersionMismatch, VERSION};

/// Why a call to fastpathd failed. The messages leave out the socket, which the caller names.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket.
    #[error("not answering ({source}): is fastpathd running?")]
    Connect {
        /// The OS error.
        source: std::io::Error,
    },
    /// The request could not be written as JSON (a socket path that is not UTF-8).
    #[error("cannot write the request as JSON: {source}")]
    Encode {
        /// The cause.
        source: serde_json::Error,
    },
    /// Sending failed.
    #[error("sending: {source}")]
    Send {
        /// The OS error.
        source: std::io::Error,
    },
    /// No reply in time.
    #[error("no answer within {timeout:?}: {source}")]
    Receive {
        /// How long was waited.
        timeout: Duration,
        /// The OS error.
        source: std::io::Error,
    },
    /// The switch closed the connection without a reply.
    #[error("closed the connection without answering")]
    Closed,
    /// The reply is not a reply.
    #[error("bad answer '{answer}': {source}")]
    Decode {
        /// What came back.
        answer: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// The switch refused the request.
    #[error("{message}")]
    Refused {
        /// Why, for programs.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// The switch speaks another protocol version.
    #[error(transparent)]
    Version(#[from] VersionMismatch),
}

impl ClientError {
    /// The switch's error code, when it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Version(_) => Some(ErrorCode::VersionMismatch),
            _ => None,
        }
    }
}

/// A client of the fastpathd control socket at one path.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
    /// The version to put on every request (tests of version handling); `None`: each
    /// request's own [`Request::min_version`].
    version: Option<u32>,
}

impl Client {
    /// A client of the switch at `path`; sending and waiting for the reply each take at
    /// most `timeout`.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self { path: path.into(), timeout, version: None }
    }

    /// Tags every request with protocol `version` instead of the request's own
    /// [`Request::min_version`] (for tests of version handling).
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// The control socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request and returns the reply when it succeeded. A refusal is
    /// [`ClientError::Refused`] with its code; a reply from a switch whose version does
    /// not meet ours ([`ErrorCode::VersionMismatch`], or no `version` at all: protocol 1,
    /// which refuses our `version` field as unknown) is [`ClientError::Version`].
    pub fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let version = self.version.unwrap_or_else(|| req.min_version().min(VERSION));
        let line = encode_request(req, version).map_err(|source| ClientError::Encode { source })?;
        let s = UnixStream::connect(&self.path).map_err(|source| ClientError::Connect { source })?;
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .and_then(|()| (&s).write_all(line.as_bytes()))
            .map_err(|source| ClientError::Send { source })?;
        let mut answer = String::new();
        let n = BufReader::new(&s)
            .read_line(&mut answer)
            .map_err(|source| ClientError::Receive { timeout: self.timeout, source })?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        check_reply(&answer, version)
    }
}

/// Reads the reply line `answer` to a request of protocol `version`: the reply when it
/// succeeded, else why not (as [`Client::call`] says).
pub fn check_reply(answer: &str, version: u32) -> Result<Response, ClientError> {
    let r: Response = serde_json::from_str(answer.trim())
        .map_err(|source| ClientError::Decode { answer: answer.trim().into(), source })?;
    if r.version.is_none() || r.code == Some(ErrorCode::VersionMismatch) {
        return Err(VersionMismatch { switch: r.version.unwrap_or(1), client: version }.into());
    }
    if r.ok {
        return Ok(r);
    }
    Err(ClientError::Refused {
        code: r.code.unwrap_or(ErrorCode::Unknown),
        message: r.error.unwrap_or_else(|| "refused without a reason".into()),
    })
}

#[cfg(test)]
mod tests;
