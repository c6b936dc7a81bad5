// The control protocol's version: what this code speaks, what fastpathd serves, the switch's
// side of the check (reading a request line), and the error naming both versions.
//! Protocol versions.

use serde_json::Value;

use super::{ErrorCode, Request, Response};

/// The newest protocol version this code speaks: 3 added `status` and `handover`, 4 a port's
/// labels (`container_name`, `pod_name`, `pod_namespace`), `capture` and the mirrors. A client
/// tags each request with [`Request::min_version`], so it still drives older switches with
/// the requests they know.
pub const VERSION: u32 = 4;
/// The oldest version fastpathd serves: 1, the protocol from before versions (a request
/// without `version`), which differs from 2 only in that field.
pub const OLDEST_VERSION: u32 = 1;

/// A client and a switch whose protocol versions do not meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "fastpathd speaks control protocol {switch}{}, this client {client}: upgrade {}",
    if *switch == 1 { " (from before versions)" } else { "" },
    if switch < client { "fastpathd" } else { "this client" }
)]
pub struct VersionMismatch {
    /// The version the switch speaks.
    pub switch: u32,
    /// The version the client speaks.
    pub client: u32,
}

/// The protocol versions a switch serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The oldest.
    pub oldest: u32,
    /// The newest, which its replies carry.
    pub newest: u32,
}

impl Served {
    /// What this fastpathd serves.
    pub const THIS: Served = Served { oldest: OLDEST_VERSION, newest: VERSION };

    /// Reads one request line: its version (absent: 1) and the request, or the reply that
    /// refuses it (`bad_request`, or `version_mismatch` naming both versions).
    pub fn decode(&self, line: &str) -> Result<(u32, Request), Response> {
        let refuse = |code, msg: String| Response { version: Some(self.newest), ..Response::error(code, msg) };
        let bad = |e: &dyn std::fmt::Display| refuse(ErrorCode::BadRequest, format!("bad request: {e}"));
        let mut v: Value = serde_json::from_str(line).map_err(|e| bad(&e))?;
        let version = match v.as_object_mut().and_then(|o| o.remove("version")) {
            None => 1,
            Some(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(&format!("version {n} is not a protocol version number")))?,
        };
        if !(self.oldest..=self.newest).contains(&version) {
            let m = VersionMismatch { switch: self.newest, client: version };
            return Err(refuse(ErrorCode::VersionMismatch, m.to_string()));
        }
        serde_json::from_value(v).map(|r| (version, r)).map_err(|e| bad(&e))
    }
}

/// Reads one request line as this fastpathd does ([`Served::THIS`]).
pub fn decode_request(line: &str) -> Result<(u32, Request), Response> {
    Served::THIS.decode(line)
}

/// One request line of protocol `version`, newline included.
pub fn encode_request(req: &Request, version: u32) -> serde_json::Result<String> {
    let mut v = serde_json::to_value(req)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("version".into(), version.into());
    }
    let mut line = serde_json::to_string(&v)?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_version_and_old_ones_still_read() {
        assert_eq!(
            encode_request(&Request::List, VERSION).unwrap(),
            format!("{{\"cmd\":\"list\",\"version\":{VERSION}}}\n")
        );
        assert_eq!(
            decode_request(&encode_request(&Request::Bridges, VERSION).unwrap()).unwrap(),
            (VERSION, Request::Bridges)
        );
        // A client from before versions (the tests, `cargo xtask demo`, an older hook).
        assert_eq!(decode_request(r#"{"cmd":"list"}"#).unwrap(), (1, Request::List));
        let (v, r) = decode_request(r#"{"cmd":"del-port","name":"a","version":1}"#).unwrap();
        assert_eq!((v, r), (1, Request::DelPort { name: "a".into() }));
    }

    fn refusal(r: Result<(u32, Request), Response>) -> (Option<ErrorCode>, String, Option<u32>) {
        let r = r.unwrap_err();
        assert!(!r.ok);
        (r.code, r.error.unwrap(), r.version)
    }

    #[test]
    fn a_newer_client_is_told_to_upgrade_fastpathd() {
        let newer = VERSION + 1;
        let (code, msg, v) = refusal(decode_request(&format!(r#"{{"cmd":"list","version":{newer}}}"#)));
        assert_eq!(code, Some(ErrorCode::VersionMismatch));
        assert_eq!(msg, format!("fastpathd speaks control protocol {VERSION}, this client {newer}: upgrade fastpathd"));
        assert_eq!(v, Some(VERSION));
    }

    #[test]
    fn an_older_client_is_told_to_upgrade_itself_by_a_newer_switch() {
        let newer = Served { oldest: 3, newest: 3 };
        let (code, msg, v) = refusal(newer.decode(r#"{"cmd":"list","version":2}"#));
        assert_eq!(code, Some(ErrorCode::VersionMismatch));
        assert_eq!(msg, "fastpathd speaks control protocol 3, this client 2: upgrade this client");
        assert_eq!(v, Some(3));
        let (_, msg, _) = refusal(newer.decode(r#"{"cmd":"list"}"#));
        assert_eq!(msg, "fastpathd speaks control protocol 3, this client 1: upgrade this client");
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (line, want) in [
            ("{", "bad request: EOF while parsing an object"),
            (r#"{"cmd":"explode","version":2}"#, "bad request: unknown variant `explode`"),
            (r#"{"cmd":"list","version":"2"}"#, "bad request: version \"2\" is not a protocol version number"),
            (r#"{"cmd":"list","version":-1}"#, "bad request: version -1 is not a protocol version number"),
            (r#"{"cmd":"del-port","name":"a","colour":1}"#, "bad request: unknown field `colour`"),
            (r#""list""#, "bad request: invalid type: string \"list\""),
        ] {
            let (code, msg, _) = refusal(decode_request(line));
            assert_eq!(code, Some(ErrorCode::BadRequest));
            assert!(msg.starts_with(want), "{line}: {msg}");
        }
    }
}
