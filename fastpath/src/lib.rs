// fastpath: the host data plane. A polling vhost-user switch (learning bridges
// of vhost-user backend ports), its configuration, control protocol and durable state.
//! The fastpathd switch as a library (the binaries are thin).
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![allow(clippy::trivially_copy_pass_by_ref)]

pub mod capture;
pub mod config;
pub mod control;
pub mod doctor;
pub mod error;
pub mod fleet;
pub mod info;
pub mod link;
pub mod mactable;
pub mod metrics;
pub mod port;
pub mod security;
pub mod state;
pub mod switch;
pub mod worker;
