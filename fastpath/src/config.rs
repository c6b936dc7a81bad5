// fastpathd's configuration: a TOML file and/or command-line flags naming the
// worker core, the control socket, bridges, and ports to create at start.
//! Switch configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Whether the switch listens on a port's socket or connects to it (a control protocol type).
pub use fastpath_host::proto::PortMode;

/// One port to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    /// Port name (unique).
    pub name: String,
    /// Bridge it belongs to.
    pub bridge: String,
    /// vhost-user socket path.
    pub socket: PathBuf,
    /// Who listens.
    #[serde(default = "default_mode")]
    pub mode: PortMode,
}

fn default_mode() -> PortMode {
    PortMode::Server
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Control socket path.
    #[serde(default = "default_ctl")]
    pub ctl_socket: PathBuf,
    /// CPU the polling worker is pinned to (none: not pinned).
    #[serde(default)]
    pub core: Option<usize>,
    /// Bridge names.
    #[serde(default = "default_bridges")]
    pub bridges: Vec<String>,
    /// Sleep on the ports' kicks when idle instead of polling.
    #[serde(default)]
    pub interrupt: bool,
    /// MAC entries age out after this many seconds.
    #[serde(default = "default_age")]
    pub mac_age_secs: u32,
    /// Ports to create at start.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

fn default_ctl() -> PathBuf {
    "/run/fastpath/fastpathd.sock".into()
}
fn default_bridges() -> Vec<String> {
    vec!["br0".into()]
}
fn default_age() -> u32 {
    300
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ctl_socket: default_ctl(),
            core: None,
            interrupt: false,
            bridges: default_bridges(),
            mac_age_secs: default_age(),
            ports: Vec::new(),
        }
    }
}

/// A bad configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Can't read the file.
    #[error("config {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Can't parse it.
    #[error("config {path}: {source}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: toml::de::Error,
    },
    /// A --port flag that doesn't parse.
    #[error("--port '{0}' is not BRIDGE:NAME:vhost:PATH or BRIDGE:NAME:vhost-client:PATH")]
    PortFlag(String),
    /// Inconsistent contents.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.into(), source: e })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), source: e })
    }

    /// Checks names and references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for b in &self.bridges {
            if b.is_empty() || !seen.insert(b) {
                return Err(ConfigError::Invalid(format!("bridge name '{b}' is empty or repeated")));
            }
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.ports {
            if !self.bridges.contains(&p.bridge) {
                return Err(ConfigError::Invalid(format!(
                    "port '{}': bridge '{}' does not exist (bridges: {})",
                    p.name,
                    p.bridge,
                    self.bridges.join(", ")
                )));
            }
            if !names.insert(&p.name) {
                return Err(ConfigError::Invalid(format!("port name '{}' is repeated", p.name)));
            }
        }
        Ok(())
    }
}

/// Parses `BRIDGE:NAME:vhost:PATH` / `BRIDGE:NAME:vhost-client:PATH`.
pub fn parse_port_flag(s: &str) -> Result<PortConfig, ConfigError> {
    let mut it = s.splitn(4, ':');
    let (Some(bridge), Some(name), Some(kind), Some(path)) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(ConfigError::PortFlag(s.into()));
    };
    let mode = match kind {
        "vhost" | "server" => PortMode::Server,
        "vhost-client" | "client" => PortMode::Client,
        _ => return Err(ConfigError::PortFlag(s.into())),
    };
    if bridge.is_empty() || name.is_empty() || path.is_empty() {
        return Err(ConfigError::PortFlag(s.into()));
    }
    Ok(PortConfig { name: name.into(), bridge: bridge.into(), socket: path.into(), mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_and_flags() {
        let c: Config = toml::from_str(
            r#"
            ctl_socket = "/tmp/c.sock"
            core = 0
            bridges = ["br0", "br1"]
            [[ports]]
            name = "a"
            bridge = "br1"
            socket = "/tmp/a.sock"
            mode = "client"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ports[0].mode, PortMode::Client);
        let p = parse_port_flag("br0:x:vhost:/tmp/x.sock").unwrap();
        assert_eq!(p.socket, PathBuf::from("/tmp/x.sock"));
        assert!(parse_port_flag("br0:x:tap:/tmp").is_err());
        let mut bad = c.clone();
        bad.ports[0].bridge = "nope".into();
        assert!(bad.validate().unwrap_err().to_string().contains("'nope' does not exist"));
        assert!(toml::from_str::<Config>("colour = 1").is_err());
    }
}
