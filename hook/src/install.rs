// `fastpath-hook install`: the hooks.d files podman and CRI-O read (one per stage, matching
// on fastpath.io/ annotations), and the config.json "hooks" block for runc and crun users.
//! Installation.

use crate::{error::io, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Where podman and CRI-O look for hooks by default.
pub const DEFAULT_HOOKS_DIR: &str = "/usr/share/containers/oci/hooks.d";
/// The stages the hook runs at.
pub const STAGES: [&str; 3] = ["createRuntime", "createContainer", "poststop"];

/// The hook's argv at `stage`: `fastpath-hook [--config CONFIG] STAGE`.
pub(crate) fn args(stage: &str, config: Option<&Path>) -> Vec<String> {
    let mut a = vec!["fastpath-hook".to_string()];
    if let Some(c) = config {
        a.push("--config".into());
        a.push(c.display().to_string());
    }
    a.push(stage.into());
    a
}

/// The hooks.d files: (file name, JSON). One per stage, since a hooks.d hook is told its
/// stage only through its arguments.
pub fn hooks_d_files(hook: &Path, config: Option<&Path>) -> Vec<(String, Value)> {
    STAGES
        .iter()
        .map(|s| {
            (
                format!("fastpath-{s}.json"),
                json!({
                    "version": "1.0.0",
                    "hook": {"path": hook, "args": args(s, config)},
                    "when": {"annotations": {"^fastpath\\.io/": ".*"}},
                    "stages": [s],
                }),
            )
        })
        .collect()
}

/// The `hooks` object for a bundle's config.json (runc, crun).
pub fn oci_hooks(hook: &Path, config: Option<&Path>) -> Value {
    let mut m = serde_json::Map::new();
    for s in STAGES {
        m.insert(s.into(), json!([{"path": hook, "args": args(s, config), "timeout": 30}]));
    }
    Value::Object(m)
}

/// Writes the hooks.d files into `dir` (each replaced atomically); returns their paths.
pub fn write_hooks_d(dir: &Path, hook: &Path, config: Option<&Path>) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut out = Vec::new();
    for (name, v) in hooks_d_files(hook, config) {
        let p = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let text = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(io(format!("writing {}", p.display())))?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_stage_matching_our_annotations() {
        let f = hooks_d_files(Path::new("/usr/local/bin/fastpath-hook"), Some(Path::new("/etc/h.toml")));
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].0, "fastpath-createRuntime.json");
        assert_eq!(f[0].1["stages"], json!(["createRuntime"]));
        assert_eq!(f[0].1["when"]["annotations"]["^fastpath\\.io/"], ".*");
        assert_eq!(f[2].1["hook"]["args"], json!(["fastpath-hook", "--config", "/etc/h.toml", "poststop"]));
        let h = oci_hooks(Path::new("/h"), None);
        assert_eq!(h["createContainer"][0]["args"], json!(["fastpath-hook", "createContainer"]));
    }
}
