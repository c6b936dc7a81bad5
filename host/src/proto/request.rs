// The requests fastpathd's control socket takes, as one serde enum tagged by `cmd`: the JSON
// shape every client (fastpathctl, the hook, the tests, `cargo xtask demo`) writes.
//! Control requests.

use serde::{Deserialize, Serialize};

use super::PortConfig;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Add a port (its whole description: the same type as a config file's ports).
    AddPort(PortConfig),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_shape() {
        let r: Request = serde_json::from_str(r#"{"cmd":"add-port","name":"a","bridge":"br0","socket":"/x"}"#).unwrap();
        assert_eq!(r, Request::AddPort(PortConfig::new("a", "br0", "/x")));
        let e =
            serde_json::from_str::<Request>(r#"{"cmd":"add-port","name":"a","bridge":"br0","socket":"/x","colour":1}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("colour"), "{e}");
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert_eq!(serde_json::to_string(&Request::List).unwrap(), r#"{"cmd":"list"}"#);
    }
}
