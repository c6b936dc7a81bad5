// fastpath-hook: the OCI hook that gives an annotated container exclusive cores, its own
// hugetlbfs, a vhost-user port, VF device nodes and the netlib config; and takes them back.
//! The fastpath OCI hook, as a library: the binary (`main.rs`) only parses arguments.
//!
//! Stages: `createRuntime` (host namespaces: validate, reserve in the [`ledger`], add the
//! switch port, write the cgroup limits and RLIMIT_MEMLOCK), `createContainer` (the
//! container's mount namespace before `pivot_root`: the mounts and `/run/fastpath/config.json`),
//! `poststop` (release what the ledger says), and `gc` (release what dead containers held).
//! Every call into the kernel that needs root goes through [`sys::Sys`], so the logic is
//! unit-tested as a normal user with a test double (`sys::fake::FakeSys`, in test builds).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod annotations;
pub mod cdi;
pub mod cgroup;
pub mod cores;
pub mod devices;
pub mod error;
pub mod hostconfig;
pub mod hugetlb;
pub mod install;
pub mod kubelet;
pub mod labels;
pub mod ledger;
pub mod mounts;
pub mod numa;
/// PCI devices through sysfs (VFs, vfio-pci), shared with `fastpathctl vf`.
pub use fastpath_host::pci;
pub mod shim;
pub mod stages;
pub mod switch;
pub mod sys;

pub use error::{Error, Result};
