// What the switch says about its ports (`list`, `stats`): the control protocol's port types,
// defined once in fastpath-host, here under their old path.
//! Port information for the control protocol.

pub use fastpath_host::proto::{PortInfo, PortStats};
