// OCI containers with fastpath-hook for the end-to-end tests and for `cargo xtask bench|demo`:
// the contract's annotations and the modules `bundle`, `rootfs` and `hook_config`, re-exported.
//! OCI containers with fastpath-hook: one config.json template, one rootfs, one hook.toml.
//!
//! The integration tests (`integration/tests/hook_common`, the soak) and xtask's demo and
//! `hook_start` bench case all run unprivileged containers under runc, crun or podman with
//! fastpath-hook at the OCI hook stages. What such a container looks like is written here,
//! once:
//! - [`write_bundle`] writes a bundle's `config.json` from a [`Spec`] (uid/gid [`APP_UID`],
//!   no capabilities, no new privileges, its own namespaces), [`hook_stages`] the `hooks`
//!   object that runs fastpath-hook at each stage;
//! - [`make_rootfs`] builds a busybox-static root with static apps in `/bin`;
//! - [`HookConfig`] is the hook's `hook.toml`.
//!
//! ```no_run
//! use std::path::Path;
//! use fastpath_oci::{hook_stages, make_rootfs, write_bundle, Spec, CONTRACT};
//! let rootfs = Path::new("/tmp/demo/rootfs");
//! make_rootfs(rootfs, &[(Path::new("target/static/x86_64-unknown-linux-gnu/release/sink"), "sink")])?;
//! let hooks = hook_stages(Path::new("/usr/local/bin/fastpath-hook"), Path::new("/tmp/demo/hook.toml"));
//! let spec = Spec { annotations: &CONTRACT, hooks: Some(&hooks), ..Spec::new("demo", rootfs, &["sink", "--json"]) };
//! write_bundle(Path::new("/tmp/demo/bundle"), &spec)?;
//! # Ok::<(), fastpath_oci::Error>(())
//! ```

mod bundle;
mod error;
mod hook_config;
mod rootfs;

pub use bundle::*;
pub use error::Error;
pub use hook_config::HookConfig;
pub use rootfs::*;

/// The annotations of the hook's contract: one exclusive core, 64 MiB of hugepages, a port on br0.
pub const CONTRACT: [(&str, &str); 3] =
    [("fastpath.io/cores", "1"), ("fastpath.io/hugepages", "64Mi"), ("fastpath.io/vhost-user", "br0")];
/// The bridge the contract's containers ask for (and the tests' fastpathd creates).
pub const BRIDGE: &str = "br0";
/// The uid and gid the containers run as (the `app` user of [`make_rootfs`]).
pub const APP_UID: u32 = 1000;
