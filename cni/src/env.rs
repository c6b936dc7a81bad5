// The CNI_* environment variables a runtime sets: the command, the container id, the network
// namespace, the interface name, CNI_ARGS (K=V;K=V) and CNI_PATH, each checked by name.
//! The runtime's environment.

use crate::error::{CniError, Result, INVALID_ENV};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A CNI command (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach (idempotent).
    Del,
    /// Verify an attachment.
    Check,
    /// The versions this plugin speaks.
    Version,
    /// Release attachments the runtime no longer knows (1.1).
    Gc,
    /// Whether the plugin can serve ADDs now (1.1).
    Status,
}

impl Command {
    /// Reads `CNI_COMMAND`'s value.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            _ => {
                return Err(CniError::new(
                    INVALID_ENV,
                    format!("CNI_COMMAND '{s}' is not ADD, DEL, CHECK, VERSION, GC or STATUS"),
                ))
            }
        })
    }
}

/// What ADD, DEL and CHECK are called with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, as key → value.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`: where the runtime keeps plugins (for a delegated IPAM plugin).
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// `K8S_POD_NAME` from `CNI_ARGS`.
    pub fn pod_name(&self) -> Option<String> {
        self.args.get("K8S_POD_NAME").filter(|s| !s.is_empty()).cloned()
    }

    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`.
    pub fn pod_namespace(&self) -> Option<String> {
        self.args.get("K8S_POD_NAMESPACE").filter(|s| !s.is_empty()).cloned()
    }

    /// Reads the variables for `cmd` through `var`; the netns is required but on DEL.
    pub fn parse(cmd: Command, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let need = |k: &str| var(k).filter(|v| !v.is_empty()).ok_or_else(|| missing(k));
        let container_id = need("CNI_CONTAINERID")?;
        check_container_id(&container_id)?;
        let ifname = need("CNI_IFNAME")?;
        check_ifname(&ifname)?;
        let netns = match cmd {
            Command::Del => var("CNI_NETNS").unwrap_or_default(),
            _ => need("CNI_NETNS")?,
        };
        Ok(Self {
            container_id,
            netns: netns.into(),
            ifname,
            args: parse_args(&var("CNI_ARGS").unwrap_or_default())?,
            path: std::env::split_paths(&var("CNI_PATH").unwrap_or_default())
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        })
    }
}

fn missing(k: &str) -> CniError {
    CniError::new(INVALID_ENV, format!("{k} is not set (the runtime sets it for ADD, DEL and CHECK)"))
}

/// The spec's rule for a container id: alphanumerics, `_`, `.`, `-`, starting alphanumeric.
/// It names files and ports here, so it is also held to 128 characters.
fn check_container_id(id: &str) -> Result<()> {
    let ok = id.len() <= 128
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!("CNI_CONTAINERID '{id}' is not a container id (1-128 of [A-Za-z0-9_.-], starting alphanumeric)"),
        ))
    }
}

/// The spec's rule for an interface name: 1-15 bytes, no `/`, `:` or white space, not `.` or `..`.
fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.bytes().any(|c| c == b'/' || c == b':' || c.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!(
                "CNI_IFNAME '{name}' is not an interface name (1-15 bytes, no '/', ':' or spaces, not '.' or '..')"
            ),
        ))
    }
}

/// Reads `CNI_ARGS` (`K=V;K=V`); a part without `=` is an error naming it.
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CniError::new(INVALID_ENV, format!("CNI_ARGS '{s}': '{p}' is not KEY=VALUE")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_string())
    }

    #[test]
    fn variables_are_read_and_checked_by_name() {
        let ok = [
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=prod"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ];
        let e = CniEnv::parse(Command::Add, env(&ok)).unwrap();
        assert_eq!((e.pod_name().unwrap(), e.pod_namespace().unwrap()), ("web".into(), "prod".into()));
        assert_eq!(e.path, [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
        let no_ns = [("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "net1")];
        assert!(CniEnv::parse(Command::Del, env(&no_ns)).is_ok(), "DEL needs no netns");
        let e = CniEnv::parse(Command::Add, env(&no_ns)).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.starts_with("CNI_NETNS is not set"), "{e}");
        let bad_id = [("CNI_CONTAINERID", "../x"), ("CNI_IFNAME", "net1")];
        let e = CniEnv::parse(Command::Del, env(&bad_id)).unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID '../x'"), "{e}");
        let bad_if = [("CNI_CONTAINERID", "a"), ("CNI_IFNAME", "a/b")];
        assert!(CniEnv::parse(Command::Del, env(&bad_if)).unwrap_err().msg.contains("CNI_IFNAME 'a/b'"));
        let bad_args = [("CNI_CONTAINERID", "a"), ("CNI_IFNAME", "e"), ("CNI_ARGS", "A=1;junk")];
        assert!(CniEnv::parse(Command::Del, env(&bad_args)).unwrap_err().msg.contains("'junk' is not KEY=VALUE"));
        assert_eq!(Command::parse("ADD").unwrap(), Command::Add);
        assert!(Command::parse("add").unwrap_err().msg.contains("CNI_COMMAND 'add'"));
    }
}
