// The requests fastpathd's control socket takes, as one serde enum tagged by `cmd`: the JSON
// shape every client (fastpathctl, the hook, the tests, `cargo xtask demo`) writes.
//! Control requests.

use serde::{Deserialize, Serialize};

use super::PortConfig;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
// A port's whole description is most of a request's size: one request is made per control
// message, never held in bulk, so a box would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// The switch's pid, port count, state file and first frame ([`super::SwitchStatus`]).
    Status,
    /// Hand the ports over to a new switch (`fastpathd --takeover`): the switch closes every
    /// port, saves its state, answers with its status and exits, leaving the control socket
    /// to the new one. Requests that come after it are refused (`shutting_down`).
    Handover,
}

impl Request {
    /// The protocol version a client puts on this request: the oldest a switch must speak to
    /// serve it. Requests of protocols 1 and 2 go out as 2 (a client always sends `version`,
    /// which protocol 1 refuses), so that a newer client still drives an older switch with
    /// them; `status` and `handover` came with 3, a port's labels (its container's name, its
    /// pod) with 4: a port without them goes out as 2, which every switch takes.
    pub fn min_version(&self) -> u32 {
        match self {
            Self::AddPort(p) if p.has_labels() => 4,
            Self::AddPort(_) | Self::DelPort { .. } | Self::List | Self::Bridges => 2,
            Self::Status | Self::Handover => 3,
        }
    }
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
        assert_eq!(serde_json::to_string(&Request::Handover).unwrap(), r#"{"cmd":"handover"}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(), Request::Status);
        assert_eq!((Request::List.min_version(), Request::Handover.min_version()), (2, 3));
        let labelled = PortConfig { pod_name: Some("web-0".into()), ..PortConfig::new("a", "br0", "/x") };
        assert_eq!(Request::AddPort(labelled.clone()).min_version(), 4);
        assert_eq!(Request::AddPort(labelled.without_labels()).min_version(), 2);
    }
}
