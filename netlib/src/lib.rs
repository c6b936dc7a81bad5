//! netlib: what a fastpath workload links.
//!
//! Hugepage-backed memory regions ([`mem`]), a packet buffer pool carved from one
//! region ([`pool`]), the [`Port`] trait, the virtio-user PMD (a vhost-user
//! frontend, [`virtio_user`]) and the vhost-user backend ([`vhost`]) that the
//! switch and the benchmarks use. `unsafe` lives only in [`mem`] and [`ring`].
#![deny(missing_docs)]

pub mod config;
pub mod mem;
pub mod pool;
pub mod port;
pub mod ring;
pub mod spec;
pub mod vfio;
pub mod vhost;
pub mod vhost_user;
pub mod virtio_user;

pub use pool::{Packet, PktPool};
pub use port::{open_port, LinkState, Port, PortCounters, PortSpec};
