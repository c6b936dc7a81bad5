// The docker runtime shim: called exactly as containerd-shim calls runc; on `create`/`run` of
// a bundle with fastpath.io/ annotations it adds the hook to config.json, then execs the runtime.
//! Runtime shim.

use crate::install::{oci_hooks, STAGES};
use crate::{error::io, Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The shim's own options, then the runtime's arguments untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    /// The real runtime (`runc`, `crun`, or a path).
    pub runtime: PathBuf,
    /// The hook binary to put in config.json.
    pub hook: PathBuf,
    /// The hook's host configuration, passed on as `--config`.
    pub config: Option<PathBuf>,
    /// Everything for the runtime.
    pub rest: Vec<String>,
}

/// Splits `[--runtime P] [--hook P] [--config P] [--] RUNTIME-ARGS...`. The first argument
/// that is not one of the shim's own starts the runtime's.
pub fn parse_args(args: &[String], self_exe: &Path) -> Result<ShimArgs> {
    let mut s = ShimArgs { runtime: "runc".into(), hook: self_exe.into(), config: None, rest: vec![] };
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (args[i].as_str(), None),
        };
        let slot = match flag {
            "--runtime" => &mut s.runtime,
            "--hook" => &mut s.hook,
            "--config" => s.config.get_or_insert_with(PathBuf::new),
            "--" => {
                i += 1;
                break;
            }
            _ => break,
        };
        let v = if let Some(v) = inline {
            v
        } else {
            i += 1;
            args.get(i).cloned().ok_or_else(|| Error::Oci(format!("shim: {flag} needs a value")))?
        };
        *slot = v.into();
        i += 1;
    }
    s.rest = args[i..].to_vec();
    Ok(s)
}

/// runc's global options that take a value (so their value is not taken for the command).
const GLOBAL_WITH_VALUE: [&str; 5] = ["--root", "--log", "--log-format", "--criu", "--rootless"];

/// The runtime command and the bundle directory, when the call creates a container.
pub fn bundle_of(rest: &[String]) -> Option<PathBuf> {
    let mut i = 0;
    while i < rest.len() && rest[i].starts_with('-') {
        let takes = GLOBAL_WITH_VALUE.contains(&rest[i].as_str());
        i += if takes { 2 } else { 1 };
    }
    let cmd = rest.get(i)?;
    if cmd != "create" && cmd != "run" {
        return None;
    }
    let mut bundle = None;
    let mut j = i + 1;
    while j < rest.len() {
        let a = &rest[j];
        if a == "--bundle" || a == "-b" {
            bundle = rest.get(j + 1).map(PathBuf::from);
            j += 2;
            continue;
        }
        if let Some(v) = a.strip_prefix("--bundle=") {
            bundle = Some(v.into());
        }
        j += 1;
    }
    Some(bundle.unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| ".".into())))
}

/// Adds the hook to `config` when it has fastpath.io/ annotations and does not have the hook
/// yet. Returns whether it changed. Every other field is kept as it was.
pub fn add_hooks(config: &mut Value, hook: &Path, host_config: Option<&Path>) -> bool {
    let ours = config["annotations"].as_object().is_some_and(|a| a.keys().any(|k| k.starts_with("fastpath.io/")));
    if !ours {
        return false;
    }
    let Some(root) = config.as_object_mut() else { return false };
    let hooks = root.entry("hooks").or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(hooks) = hooks.as_object_mut() else { return false };
    let add = oci_hooks(hook, host_config);
    let mut changed = false;
    for s in STAGES {
        let list = hooks.entry(s).or_insert_with(|| Value::Array(vec![]));
        let Some(list) = list.as_array_mut() else { continue };
        let present = list.iter().any(|h| h["path"] == add[s][0]["path"]);
        if !present {
            list.push(add[s][0].clone());
            changed = true;
        }
    }
    changed
}

/// Rewrites the bundle's config.json with the hook (atomically), if it asks for fastpath.
pub fn prepare_bundle(bundle: &Path, hook: &Path, host_config: Option<&Path>) -> Result<bool> {
    let p = bundle.join("config.json");
    let text = std::fs::read_to_string(&p).map_err(io(format!("shim: reading {}", p.display())))?;
    let mut v: Value = serde_json::from_str(&text).map_err(|e| Error::Oci(format!("shim: {}: {e}", p.display())))?;
    if !add_hooks(&mut v, hook, host_config) {
        return Ok(false);
    }
    let tmp = bundle.join(".config.json.fastpath.tmp");
    let out = serde_json::to_string(&v).map_err(|e| Error::Oci(e.to_string()))?;
    std::fs::write(&tmp, out)
        .and_then(|()| std::fs::rename(&tmp, &p))
        .map_err(io(format!("shim: writing {}", p.display())))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn splits_shim_and_runtime_args() {
        let a = parse_args(
            &s(&[
                "--runtime",
                "/usr/sbin/runc",
                "--config=/h.toml",
                "--root",
                "/r",
                "--log",
                "/l",
                "create",
                "--bundle",
                "/b",
                "x",
            ]),
            Path::new("/self"),
        )
        .unwrap();
        assert_eq!(a.runtime, PathBuf::from("/usr/sbin/runc"));
        assert_eq!(a.config, Some(PathBuf::from("/h.toml")));
        assert_eq!(a.hook, PathBuf::from("/self"));
        assert_eq!(a.rest, s(&["--root", "/r", "--log", "/l", "create", "--bundle", "/b", "x"]));
        assert_eq!(bundle_of(&a.rest), Some(PathBuf::from("/b")));
        assert_eq!(bundle_of(&s(&["--root", "/r", "start", "x"])), None);
        assert_eq!(bundle_of(&s(&["--debug", "create", "--bundle=/c", "x"])), Some(PathBuf::from("/c")));
    }

    #[test]
    fn adds_hooks_once_and_only_when_asked() {
        let mut c = json!({"ociVersion": "1.0.2", "x-unknown": 1, "annotations": {"fastpath.io/cores": "1"},
                           "hooks": {"poststop": [{"path": "/other"}]}});
        assert!(add_hooks(&mut c, Path::new("/h"), Some(Path::new("/h.toml"))));
        assert_eq!(c["hooks"]["poststop"].as_array().unwrap().len(), 2);
        assert_eq!(
            c["hooks"]["createRuntime"][0]["args"],
            json!(["fastpath-hook", "--config", "/h.toml", "createRuntime"])
        );
        assert_eq!(c["x-unknown"], 1);
        assert!(!add_hooks(&mut c, Path::new("/h"), None));
        let mut plain = json!({"annotations": {"a": "b"}});
        assert!(!add_hooks(&mut plain, Path::new("/h"), None));
        assert!(plain.get("hooks").is_none());
    }
}
