// fastpath-cni: the CNI plugin (spec 1.0.0, GC and STATUS of 1.1) that gives a pod's network
// attachment a fastpathd vhost-user port, with the hook's host config, ledger and switch client.
//! The fastpath CNI plugin, as a library: the binary (`main.rs`) only does the I/O.
//!
//! [`env`]: the `CNI_*` variables; [`netconf`]: the network config on stdin and the pod's
//! overrides; [`plugin`]: ADD, DEL, CHECK, GC, STATUS; [`result`]: what they print and the
//! device-info file; [`ipam`]: delegating addresses to an IPAM plugin; [`error`]: CNI error
//! objects. The ledger, the switch client, hook.toml, the core pool and sizes are the hook's.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod env;
pub mod error;
pub mod ipam;
pub mod netconf;
pub mod plugin;
pub mod result;

use error::{CniError, Result};
use fastpath_hook::hostconfig::{self, HostConfig};
use fastpath_hook::switch::UnixSwitch;
use fastpath_hook::sys::RealSys;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Runs the command `CNI_COMMAND` names (`var` reads the environment) on the network config
/// `stdin`; returns what to print on success (`None`: nothing).
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &str) -> Result<Option<Value>> {
    let cmd = env::Command::parse(&var("CNI_COMMAND").unwrap_or_default())?;
    if cmd == env::Command::Version {
        return Ok(Some(result::version_result(netconf::version_of(stdin).as_deref())));
    }
    let conf = netconf::parse(stdin)?;
    let attach = |cmd| env::CniEnv::parse(cmd, &var);
    let cni_env = match cmd {
        env::Command::Add | env::Command::Del | env::Command::Check => attach(cmd)?,
        _ => env::CniEnv::default(),
    };
    let cfg = host_config(conf.hook_config.as_deref())?;
    let sw = UnixSwitch::new(&cfg.switch_socket, Duration::from_millis(cfg.switch_timeout_ms));
    let ctx = plugin::Ctx::new(&cfg, &RealSys, &sw);
    match cmd {
        env::Command::Add => plugin::add(&ctx, &conf, &cni_env, stdin).map(Some),
        env::Command::Del => plugin::del(&ctx, &conf, &cni_env, stdin).map(|()| None),
        env::Command::Check => plugin::check(&ctx, &conf, &cni_env).map(|()| None),
        env::Command::Gc => plugin::gc(&ctx, &conf).map(|_| None),
        env::Command::Status => plugin::status(&ctx, &conf).map(|()| None),
        env::Command::Version => unreachable!("answered above"),
    }
}

/// The hook's host configuration: `hookConfig` if the network config names one other than
/// the hook's default path, else the hook's own lookup (`$FASTPATH_HOOK_CONFIG`, then the
/// default path, whose absence means the defaults).
fn host_config(explicit: Option<&Path>) -> Result<HostConfig> {
    let explicit = explicit.filter(|p| *p != Path::new(hostconfig::DEFAULT_PATH));
    HostConfig::load(explicit).map_err(|e| {
        let field = if explicit.is_some() { "hookConfig: " } else { "" };
        CniError::new(error::HOST_CONFIG, format!("{field}{e}"))
    })
}
