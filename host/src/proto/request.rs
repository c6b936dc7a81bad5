// The requests fastpathd's control socket takes, as one serde enum tagged by `cmd`: the JSON
// shape every client (fastpathctl, the hook, the tests, `cargo xtask demo`) writes.
//! Control requests.

use serde::{Deserialize, Serialize};

use super::{CaptureSpec, MirrorConfig, PortConfig};

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
    /// Capture a port's frames into a shared ring: the reply carries the ring's memfd
    /// (SCM_RIGHTS), and the capture lasts until the client closes the connection.
    Capture(CaptureSpec),
    /// Copy a port's frames to another port as well (kept in the state file).
    MirrorAdd(MirrorConfig),
    /// Stop a mirror.
    MirrorDel {
        /// The mirrored port.
        from: String,
        /// The port the copies go to.
        to: String,
    },
    /// Mirrors with their counters.
    Mirrors,
}

impl Request {
    /// The protocol version a client puts on this request: the oldest a switch must speak to
    /// serve it. Requests of protocols 1 and 2 go out as 2 (a client always sends `version`,
    /// which protocol 1 refuses), so that a newer client still drives an older switch with
    /// them; `status` and `handover` came with 3, a port's labels (its container's name, its
    /// pod), `capture` and the mirrors with 4: a port without labels goes out as 2, which every
    /// switch takes.
    pub fn min_version(&self) -> u32 {
        match self {
            Self::AddPort(p) if p.has_labels() => 4,
            Self::AddPort(_) | Self::DelPort { .. } | Self::List | Self::Bridges => 2,
            Self::Status | Self::Handover => 3,
            Self::Capture(_) | Self::MirrorAdd(_) | Self::MirrorDel { .. } | Self::Mirrors => 4,
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
        let c: Request = serde_json::from_str(r#"{"cmd":"capture","port":"p","direction":"tx","snaplen":96}"#).unwrap();
        let Request::Capture(spec) = &c else { panic!("{c:?}") };
        assert_eq!((spec.port.as_str(), spec.snaplen, spec.direction.tx()), ("p", 96, true));
        assert_eq!(c.min_version(), 4);
        let m: Request = serde_json::from_str(r#"{"cmd":"mirror-del","from":"a","to":"b"}"#).unwrap();
        assert_eq!(m, Request::MirrorDel { from: "a".into(), to: "b".into() });
        assert_eq!(serde_json::to_string(&Request::Mirrors).unwrap(), r#"{"cmd":"mirrors"}"#);
    }
}
