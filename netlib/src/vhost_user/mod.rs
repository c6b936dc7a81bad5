// The vhost-user protocol: message types and the socket that carries them
// with their file descriptors. Both the frontend and the backend use this.
//! vhost-user messages and connections.

pub mod conn;
pub mod message;

pub use conn::{Conn, ConnError};
pub use message::{Header, MemRegion, Msg, MsgError, Request, VringAddr, VringState};
