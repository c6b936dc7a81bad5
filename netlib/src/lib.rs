//! netlib: what a fastpath workload links.
//!
//! Hugepage-backed memory regions ([`mem`]), a packet buffer pool carved from one
//! region ([`pool`]), the [`Port`] trait, the virtio-user PMD (a vhost-user
//! frontend, [`virtio_user`]), the vhost-user backend ([`vhost`]) that the
//! switch and the benchmarks use, and the SR-IOV VF poll-mode driver
//! ([`igbvf`], over [`vfio`], IOVA == VA). [`pci`] parses PCI addresses and reads a
//! device's IOMMU group, for VFIO here and for the host tools. [`vnet_hdr`] parses
//! the virtio-net header's offload requests, [`csum`] finishes checksums and [`gso`]
//! segments TCP in software for destinations without the offload. [`flow`] hashes a frame's
//! flow to pick one of several queue pairs.
//!
//! `unsafe` lives only in [`mem`] (mappings, foreign memory), [`ring`] (virtqueue
//! memory), [`vfio::sys`] (VFIO ioctls, BAR mmap), [`igbvf::mmio`] (BAR0 registers)
//! and [`igbvf::desc`] (descriptor ring memory).
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod cadence;
pub mod config;
pub mod csum;
pub mod flow;
pub mod gso;
pub mod igbvf;
pub mod log_limit;
pub mod mac;
pub mod mem;
pub mod pci;
pub mod pool;
pub mod port;
pub mod port_spec;
mod prefetch;
pub mod ring;
pub mod spec;
pub mod vfio;
pub mod vhost;
pub mod vhost_user;
pub mod virtio_user;
pub mod vnet_hdr;

pub use pool::{Packet, PktPool};
pub use port::{LinkState, Port, PortCounters};
pub use port_spec::{open_port, PortSpec};
