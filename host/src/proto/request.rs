// The requests fastpathd's control socket takes, as one serde enum tagged by `cmd`: the JSON
// shape every client (fastpathctl, the hook, the tests, `cargo xtask demo`) writes.
//! Control requests.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::PortMode;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Add a port.
    AddPort {
        /// Port name.
        name: String,
        /// Bridge.
        bridge: String,
        /// Socket path.
        socket: PathBuf,
        /// Who listens (default: the switch).
        #[serde(default = "server")]
        mode: PortMode,
        /// Give the socket file to this uid (so a non-root container can connect).
        #[serde(default)]
        uid: Option<u32>,
        /// ... and this gid.
        #[serde(default)]
        gid: Option<u32>,
    },
    /// Remove a port.
    DelPort {
        /// Port name.
        name: String,
    },
    /// Ports with their counters.
    List,
    /// Bridge names.
    Bridges,
}

fn server() -> PortMode {
    PortMode::Server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_shape() {
        let r: Request = serde_json::from_str(r#"{"cmd":"add-port","name":"a","bridge":"br0","socket":"/x"}"#).unwrap();
        assert_eq!(
            r,
            Request::AddPort {
                name: "a".into(),
                bridge: "br0".into(),
                socket: "/x".into(),
                mode: PortMode::Server,
                uid: None,
                gid: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert_eq!(serde_json::to_string(&Request::List).unwrap(), r#"{"cmd":"list"}"#);
    }
}
