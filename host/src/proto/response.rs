// fastpathd's reply to one request: success or a refusal with its code and message, the
// switch's protocol version, and the ports, bridges or status asked for.
//! Control replies.

use serde::{Deserialize, Serialize};

use super::{ErrorCode, MirrorInfo, PortInfo, SwitchStatus, VERSION};

/// A control reply.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The protocol version the switch speaks (absent: version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Why it was refused, for programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Why it was refused, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ports (for `list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortInfo>>,
    /// Bridges (for `bridges`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridges: Option<Vec<String>>,
    /// The switch's status (for `status` and `handover`; boxed: most replies have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<SwitchStatus>>,
    /// Mirrors (for `mirrors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<Vec<MirrorInfo>>,
}

impl Response {
    /// Success, from a switch of this protocol version.
    pub fn ok() -> Self {
        Self { ok: true, version: Some(VERSION), ..Self::default() }
    }

    /// A refusal with its code and message, from a switch of this protocol version.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { ok: false, version: Some(VERSION), code: Some(code), error: Some(message.into()), ..Self::default() }
    }

    /// The reply as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_else(|_| r#"{"ok":false}"#.into());
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_json_shape() {
        assert_eq!(Response::ok().to_line(), format!("{{\"ok\":true,\"version\":{VERSION}}}\n"));
        let r = Response::error(ErrorCode::NoSuchPort, "port 'x' does not exist");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!(r#"{{"ok":false,"version":{VERSION},"code":"no_such_port","error":"port 'x' does not exist"}}"#)
        );
        // What a switch of protocol 1 answers still reads.
        let old: Response = serde_json::from_str(r#"{"ok":true,"bridges":["br0"]}"#).unwrap();
        assert_eq!((old.ok, old.version, old.code, old.bridges), (true, None, None, Some(vec!["br0".to_string()])));
    }
}
