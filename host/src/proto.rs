// fastpathd's control protocol, defined once for the switch, fastpathctl and the hook: the
// requests and replies (serde types), error codes, the protocol version and the client.
//! fastpathd's control protocol.
//!
//! One JSON object per line each way over a unix socket. A request names its command in
//! `cmd` (`{"cmd":"add-port","name":..,"bridge":..,"socket":..}`, `del-port`, `list`,
//! `bridges`, `status`, `handover`, `capture`, `mirror-add`, `mirror-del`, `mirrors`) and carries the client's protocol [`VERSION`] in `version`; a reply is
//! `{"ok":..,"version":..,"code":..,"error":..,"ports":..,"bridges":..}`. A refusal has a
//! stable [`ErrorCode`] next to the human message: clients act on the code, never on the
//! text.
//!
//! Version 1 is the protocol before versions (no `version` field): fastpathd still serves
//! such requests. A fastpathd of version 1 refuses the `version` field as unknown, and
//! [`Client`] turns that, like a [`ErrorCode::VersionMismatch`] from a newer fastpathd,
//! into an error naming both versions.

mod client;
mod code;
/// A control socket answered by a closure, for tests of clients (the `test-utils` feature).
#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
mod port;
mod request;
mod response;
mod status;
mod version;
mod watch;

pub use client::{check_reply, Client, ClientError};
pub use code::ErrorCode;
pub use port::{
    check_vlan_id, ByteSize, PortConfig, PortInfo, PortKind, PortMode, PortSecurity, PortStats, MTUS, QUEUE_PAIRS,
    VLAN_IDS,
};
pub use request::Request;
pub use response::Response;
pub use status::SwitchStatus;
pub use version::{decode_request, encode_request, Served, VersionMismatch, OLDEST_VERSION, VERSION};
pub use watch::{CaptureSpec, Direction, MirrorConfig, MirrorInfo, DEFAULT_SLOTS, DEFAULT_SNAPLEN};
