// How the host-side daemons log: `--log-format text` (the default, one human line per event)
// or `json` (one object per line, stable field names), both to stderr, for fastpathd and the hook.
//! Log formats.
//!
//! With [`LogFormat::Json`] every event is one JSON object on one line with these fields:
//! `timestamp` (RFC 3339, UTC), `level` (`TRACE` .. `ERROR`), `target` (the module path),
//! `message`, the event's own fields next to them (flattened, under their own names),
//! `span` (the innermost span the event is in, its name and fields, when there is one) and
//! `spans` (every span it is in, outermost first).

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// The shape of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A `--log-format` value that is neither `text` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("--log-format '{0}' is not a log format (text or json)")]
pub struct BadLogFormat(String);

impl FromStr for LogFormat {
    type Err = BadLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(BadLogFormat(s.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Installs the global subscriber: events at the level `$env` names (an `EnvFilter`
/// directive), else `default_level`, written to stderr in `format`. Does nothing when a
/// subscriber is installed already.
pub fn init(format: LogFormat, env: &str, default_level: &str) {
    let filter = EnvFilter::try_from_env(env).unwrap_or_else(|_| EnvFilter::new(default_level));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).with_current_span(true).with_span_list(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_and_names_a_bad_one() {
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::default().to_string(), "text");
        let e = "yaml".parse::<LogFormat>().unwrap_err().to_string();
        assert!(e.contains("'yaml'") && e.contains("text or json"), "{e}");
    }
}
