// The plugin's one error type: a CNI error object (code, msg, details) with the spec's codes
// and ours from 100 on, every message naming the field or variable and its value.
//! CNI errors.

use serde_json::{json, Value};

/// The spec's code for an incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// The spec's code for a container the plugin does not know (CHECK without ADD).
pub const UNKNOWN_CONTAINER: u32 = 3;
/// The spec's code for invalid necessary environment variables.
pub const INVALID_ENV: u32 = 4;
/// The spec's code for an I/O failure.
pub const IO_FAILURE: u32 = 5;
/// The spec's code for a network config (stdin) that is not JSON.
pub const DECODE: u32 = 6;
/// The spec's code for an invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// The spec's code for a transient failure (fastpathd not answering, say).
pub const TRY_AGAIN: u32 = 11;
/// The spec's (1.1) code for a plugin that cannot serve now (STATUS).
pub const NOT_AVAILABLE: u32 = 50;
/// Ours: the hook's host configuration (hook.toml) is unusable.
pub const HOST_CONFIG: u32 = 100;
/// Ours: fastpathd refused a request.
pub const SWITCH: u32 = 101;
/// Ours: the host cannot give what was asked (cores, hugepages), or the attachment exists.
pub const REFUSED: u32 = 102;
/// Ours: the ledger could not be read or written.
pub const LEDGER: u32 = 103;
/// Ours: CHECK found the attachment not as ADD left it.
pub const CHECK_FAILED: u32 = 104;
/// Ours: the delegated IPAM plugin failed.
pub const IPAM: u32 = 105;

/// A CNI error: what the plugin prints on stdout before exiting non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// The code (the spec's below 100, ours from 100).
    pub code: u32,
    /// What went wrong, naming the field or variable and its value.
    pub msg: String,
    /// More: the underlying error, where there is one.
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg` and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: String::new() }
    }

    /// The same error with `details`.
    #[must_use]
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error object the spec prescribes, for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details })
    }
}

impl From<fastpath_hook::Error> for CniError {
    fn from(e: fastpath_hook::Error) -> Self {
        use fastpath_hook::Error as E;
        let code = match &e {
            E::HostConfig { .. } => HOST_CONFIG,
            E::Switch { .. } => SWITCH,
            E::Ledger { .. } => LEDGER,
            E::Io { .. } => IO_FAILURE,
            E::Refused(_) | E::Annotation { .. } | E::Oci(_) => REFUSED,
        };
        Self::new(code, e.to_string())
    }
}

/// Result with [`CniError`].
pub type Result<T, E = CniError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_have_the_spec_shape() {
        let e = CniError::new(INVALID_CONFIG, "vlan: 5000 is not a VLAN id").details("more");
        let v = e.to_json("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "vlan: 5000 is not a VLAN id");
        assert_eq!(v["details"], "more");
        assert_eq!(v.as_object().unwrap().len(), 4);
        let hook = fastpath_hook::Error::Switch { socket: "/s".into(), msg: "full".into() };
        assert_eq!(CniError::from(hook).code, SWITCH);
    }
}
