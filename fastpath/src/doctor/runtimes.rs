// The doctor's runtime checks: which of runc, crun, podman, docker and containerd are installed,
// and for each whether fastpath-hook is wired in (hooks.d for podman, the shim for docker).
//! Runtime and hook checks.

use fastpath_hook::install::STAGES;

use super::{Check, Host};

/// The runtimes looked for.
const RUNTIMES: [&str; 5] = ["runc", "crun", "podman", "docker", "containerd"];

/// One check per runtime (`runtime.NAME`), and `runtimes` when none is installed.
pub fn checks(host: &Host) -> Vec<Check> {
    let hook = host.which("fastpath-hook");
    let hook_name = hook.as_ref().map_or_else(|| "fastpath-hook".into(), |p| p.display().to_string());
    let mut out = Vec::new();
    let mut any = false;
    for rt in RUNTIMES {
        let name = format!("runtime.{rt}");
        let Some(at) = host.which(rt) else {
            out.push(Check::ok(&name, "not installed"));
            continue;
        };
        any = true;
        let at = at.display();
        out.push(match rt {
            "podman" => {
                let missing: Vec<String> = STAGES
                    .iter()
                    .map(|s| format!("fastpath-{s}.json"))
                    .filter(|f| !host.hooks_dir.join(f).is_file())
                    .collect();
                if missing.is_empty() {
                    Check::ok(&name, format!("{at}; the hook is in {}", host.hooks_dir.display()))
                } else {
                    Check::fail(
                        &name,
                        format!(
                            "{at}; the hook is not installed: {} missing from {}",
                            missing.join(", "),
                            host.hooks_dir.display()
                        ),
                        format!("{hook_name} install --hooks-dir {}", host.hooks_dir.display()),
                    )
                }
            }
            "docker" | "containerd" => {
                let (conf, how) = if rt == "docker" {
                    ("/etc/docker/daemon.json", format!("add {{\"runtimes\":{{\"fastpath\":{{\"path\":\"{hook_name}\",\"runtimeArgs\":[\"shim\"]}}}}}} to /etc/docker/daemon.json, then systemctl restart docker, and run containers with --runtime fastpath"))
                } else {
                    ("/etc/containerd/config.toml", format!("give a runc runtime in /etc/containerd/config.toml a BinaryName that runs '{hook_name} shim \"$@\"', then systemctl restart containerd"))
                };
                if host.read(conf).is_some_and(|t| t.contains("fastpath-hook")) {
                    Check::ok(&name, format!("{at}; {conf} runs the hook's shim"))
                } else {
                    Check::warn(&name, format!("{at}; {conf} has no runtime through fastpath-hook's shim"), how)
                }
            }
            _ if hook.is_none() => Check::warn(
                &name,
                format!("{at}; fastpath-hook is not on PATH, which a bundle's hooks name"),
                "install -m 755 target/release/fastpath-hook /usr/local/bin/",
            ),
            _ => Check::ok(
                &name,
                format!("{at}; the hook ({hook_name}) goes in each bundle's config.json ('fastpath-hook install --print-only' prints it)"),
            ),
        });
    }
    if !any {
        out.push(Check::fail("runtimes", "no OCI runtime installed", "apt-get install crun runc podman"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tree::Tree;
    use super::super::Status;
    use super::*;

    fn by_name<'a>(c: &'a [Check], n: &str) -> &'a Check {
        c.iter().find(|c| c.name == n).unwrap()
    }

    #[test]
    fn none_installed_fails() {
        let t = Tree::new("rt-none");
        let c = checks(&t.host());
        assert_eq!(c.len(), 6);
        assert_eq!(by_name(&c, "runtime.crun").detail, "not installed");
        assert_eq!(by_name(&c, "runtimes").status, Status::Fail);
    }

    #[test]
    fn each_runtime_with_and_without_the_hook() {
        let t = Tree::new("rt-all");
        for r in RUNTIMES {
            t.write(&format!("/usr/bin/{r}"), "");
        }
        let h = t.host();
        let c = checks(&h);
        assert_eq!(c.len(), 5);
        assert_eq!(by_name(&c, "runtime.runc").status, Status::Warn);
        let p = by_name(&c, "runtime.podman");
        assert_eq!(p.status, Status::Fail);
        assert_eq!(
            p.fix.as_deref(),
            Some(format!("fastpath-hook install --hooks-dir {}", h.hooks_dir.display()).as_str())
        );
        assert!(p
            .detail
            .contains("fastpath-createRuntime.json, fastpath-createContainer.json, fastpath-poststop.json"));
        assert_eq!(by_name(&c, "runtime.docker").status, Status::Warn);
        assert_eq!(by_name(&c, "runtime.containerd").status, Status::Warn);
        t.write("/usr/bin/fastpath-hook", "")
            .write("/etc/docker/daemon.json", r#"{"runtimes":{"fastpath":{"path":"/usr/bin/fastpath-hook"}}}"#)
            .write("/etc/containerd/config.toml", "BinaryName = \"/usr/local/bin/fastpath-hook-shim\"\n");
        for s in STAGES {
            t.write(&format!("/usr/share/containers/oci/hooks.d/fastpath-{s}.json"), "{}");
        }
        let c = checks(&t.host());
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
    }
}
