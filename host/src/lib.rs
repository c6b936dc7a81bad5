// fastpath-host: the code fastpath's host-side programs share (fastpathd, fastpathctl, the OCI
// hook): PCI devices through sysfs, fastpathd's control protocol, and the hook's ledger.
//! What the host-side binaries share.
//!
//! [`pci`]: SR-IOV VFs through sysfs (listing, creating, binding to vfio-pci, the
//! `/dev/vfio` nodes), for the hook's `fastpath.io/vf` and `fastpathctl vf`. [`proto`]:
//! fastpathd's control protocol (requests, replies, error codes, versions) and its client,
//! for fastpathd, `fastpathctl` and the hook. [`ledger`]: the hook's record of what each
//! container holds, which fastpathd reads to reconcile its ports with at start. [`logging`]:
//! `--log-format text|json` for fastpathd and the hook. [`fdtable`]: fastpathd's fd table grown
//! once at start, so that a tenant's fds never make the worker wait for it to grow.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod fdtable;
pub mod ledger;
pub mod logging;
pub mod pci;
pub mod proto;
