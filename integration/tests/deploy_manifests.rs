// The Kubernetes manifests (deploy/kubernetes), the node image's Containerfile and install
// script against each other and against the built binaries: every YAML file parses, kinds and
// apiVersions are sane, pods are consistent (unique container names, every volumeMount has a
// volume), the configs parse as the binaries read them, and every binary, subcommand and flag
// named exists in that binary's `--help`.
//! Deploy manifest consistency tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration::{bin_dir, skip_or_fail, workspace_dir, TestDir};
use serde::Deserialize as _;
use serde_yaml::Value;

/// The kinds the manifests may hold, with their apiVersion.
const KINDS: &[(&str, &str)] = &[
    ("Namespace", "v1"),
    ("ConfigMap", "v1"),
    ("Pod", "v1"),
    ("DaemonSet", "apps/v1"),
    ("NetworkAttachmentDefinition", "k8s.cni.cncf.io/v1"),
];

/// The host paths the DaemonSet must mount (issue 16: the switch's sockets and state,
/// hugepages, the hook's config, the CNI, CDI and hooks directories).
const HOST_PATHS: &[&str] = &[
    "/run/fastpath",
    "/dev/hugepages",
    "/etc/fastpath",
    "/opt/cni/bin",
    "/etc/cni/net.d",
    "/etc/cdi",
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];

/// The CNI network config every file names (the CNI plugin's contract).
const NET_CONF: &str = r#"{"cniVersion":"1.0.0","name":"fastpath-net","type":"fastpath-cni","bridge":"br0","socketDir":"/run/fastpath/cni"}"#;

/// Our binaries the manifests may run.
const BINARIES: &[&str] = &["fastpathd", "fastpathctl", "fastpath-hook", "fastpath-cni"];

/// What other branches of issue 16 add (the lead merges them with this one): a subcommand,
/// flag, binary or hook.toml key named here that the build lacks is skipped with a loud
/// message instead of failing. Anything else missing fails.
const PENDING: &[(&str, &str)] = &[
    ("cdi", "`fastpath-hook cdi generate` (branch cdi)"),
    ("--output", "`fastpath-hook cdi generate --output` (branch cdi)"),
    ("fastpath-cni", "the fastpath-cni binary (branch cni)"),
    ("cores_from", "hook.toml's cores_from (branch cdi)"),
];

/// Prints a loud note that `what` was not checked because it is not in this build yet.
fn pending(what: &str) {
    let why = PENDING.iter().find(|(k, _)| *k == what).map_or(what, |(_, v)| v);
    let stars = "*".repeat(72);
    let msg = format!("\n{stars}\nNOT CHECKED: {why} is not in this build yet\n{stars}\n");
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

fn deploy_dir() -> PathBuf {
    workspace_dir().join("deploy")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One YAML document of a manifest file.
struct Doc {
    file: String,
    v: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.v["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.v["metadata"]["name"].as_str().unwrap_or("")
    }

    /// The pod spec of a Pod or a DaemonSet.
    fn pod_spec(&self) -> Option<&Value> {
        match self.kind() {
            "Pod" => Some(&self.v["spec"]),
            "DaemonSet" => Some(&self.v["spec"]["template"]["spec"]),
            _ => None,
        }
    }
}

/// Every document of every `deploy/kubernetes/*.yaml`; panics naming the file that does not parse.
fn docs() -> Vec<Doc> {
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let text = read(&f);
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                out.push(Doc { file: f.file_name().unwrap().to_string_lossy().into_owned(), v });
            }
        }
    }
    out
}

fn one<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected in deploy/kubernetes, found {}", found.len());
    found[0]
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], Vec::as_slice)
}

fn strs(v: &Value) -> Vec<String> {
    seq(v).iter().map(|s| s.as_str().map_or_else(|| panic!("not a string: {s:?}"), String::from)).collect()
}

/// initContainers then containers.
fn containers(spec: &Value) -> Vec<&Value> {
    seq(&spec["initContainers"]).iter().chain(seq(&spec["containers"])).collect()
}

/// A DNS-1123 label (what Kubernetes requires of most names).
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[test]
fn manifests_parse_with_sane_kinds_and_names() {
    let docs = docs();
    let mut seen = BTreeSet::new();
    for d in &docs {
        let want = KINDS.iter().find(|(k, _)| *k == d.kind());
        let (_, api) = want.unwrap_or_else(|| panic!("{}: unexpected kind {:?}", d.file, d.v["kind"]));
        assert_eq!(d.v["apiVersion"].as_str(), Some(*api), "{}: {} apiVersion", d.file, d.kind());
        assert!(dns_label(d.name()), "{}: {} name {:?} is not a DNS-1123 label", d.file, d.kind(), d.name());
        let ns = d.v["metadata"]["namespace"].as_str().unwrap_or("");
        if d.kind() != "Namespace" {
            assert!(dns_label(ns), "{}: {} {} has no namespace", d.file, d.kind(), d.name());
        }
        assert!(
            seen.insert((d.kind().to_string(), ns.to_string(), d.name().to_string())),
            "{}: {} {ns}/{} twice",
            d.file,
            d.kind(),
            d.name()
        );
    }
    for (k, _) in KINDS {
        assert!(docs.iter().any(|d| d.kind() == *k), "no {k} in deploy/kubernetes");
    }
    // Namespaces that objects live in exist (or are Kubernetes' own default).
    let namespaces: BTreeSet<&str> = docs.iter().filter(|d| d.kind() == "Namespace").map(Doc::name).collect();
    for d in &docs {
        if let Some(ns) = d.v["metadata"]["namespace"].as_str() {
            assert!(ns == "default" || namespaces.contains(ns), "{}: namespace {ns} is not defined", d.file);
        }
    }
}

#[test]
fn pods_have_unique_containers_and_every_mount_a_volume() {
    let docs = docs();
    let mut pods = 0;
    for d in &docs {
        let Some(spec) = d.pod_spec() else { continue };
        pods += 1;
        let volumes: Vec<&str> = seq(&spec["volumes"]).iter().filter_map(|v| v["name"].as_str()).collect();
        let unique: BTreeSet<&str> = volumes.iter().copied().collect();
        assert_eq!(unique.len(), volumes.len(), "{}: volume names repeat: {volumes:?}", d.file);
        let mut names = BTreeSet::new();
        let mut used = BTreeSet::new();
        for c in containers(spec) {
            let name = c["name"].as_str().unwrap_or_else(|| panic!("{}: a container has no name", d.file));
            assert!(dns_label(name), "{}: container name {name:?}", d.file);
            assert!(names.insert(name), "{}: container name {name} twice", d.file);
            assert!(c["image"].as_str().is_some_and(|i| !i.is_empty()), "{}: {name} has no image", d.file);
            let mut paths = BTreeSet::new();
            for m in seq(&c["volumeMounts"]) {
                let v = m["name"].as_str().unwrap_or("");
                assert!(unique.contains(v), "{}: {name} mounts volume {v:?}, which the pod does not declare", d.file);
                let p = m["mountPath"].as_str().unwrap_or("");
                assert!(p.starts_with('/'), "{}: {name}: mountPath {p:?}", d.file);
                assert!(paths.insert(p), "{}: {name} mounts two volumes at {p}", d.file);
                used.insert(v);
            }
        }
        let unused: Vec<&&str> = unique.iter().filter(|v| !used.contains(**v)).collect();
        assert!(unused.is_empty(), "{}: volumes no container mounts: {unused:?}", d.file);
        if d.kind() == "DaemonSet" {
            let sel = &d.v["spec"]["selector"]["matchLabels"];
            let labels = &d.v["spec"]["template"]["metadata"]["labels"];
            let sel = sel.as_mapping().unwrap_or_else(|| panic!("{}: no selector.matchLabels", d.file));
            for (k, v) in sel {
                assert_eq!(&labels[k], v, "{}: the selector's {k:?} is not on the template", d.file);
            }
        }
    }
    assert!(pods >= 2, "a DaemonSet and an example Pod expected");
}

/// The hostPath volumes of a pod spec: volume name -> path.
fn host_paths(spec: &Value) -> BTreeMap<String, String> {
    seq(&spec["volumes"])
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?.to_string(), v["hostPath"]["path"].as_str()?.to_string())))
        .collect()
}

/// The tag `deploy/build-image.sh` gives the image when not told another.
fn image_tag() -> String {
    let script = read(&deploy_dir().join("build-image.sh"));
    let line = script.lines().find(|l| l.starts_with("tag=")).expect("build-image.sh sets tag=");
    line.trim_start_matches("tag=${1:-").trim_end_matches('}').to_string()
}

#[test]
fn daemonset_mounts_the_node_paths_at_their_own_paths() {
    let docs = docs();
    let ds = one(&docs, "DaemonSet");
    let spec = ds.pod_spec().unwrap();
    let hp = host_paths(spec);
    let paths: BTreeSet<&str> = hp.values().map(String::as_str).collect();
    for p in HOST_PATHS {
        assert!(paths.contains(p), "the DaemonSet does not mount the node's {p}: {paths:?}");
    }
    let tag = image_tag();
    for c in containers(spec) {
        let name = c["name"].as_str().unwrap();
        assert_eq!(c["image"].as_str(), Some(tag.as_str()), "{name}: not the image build-image.sh builds");
        // A host directory at its own path: paths written into hooks.d files, configs and
        // sockets are the node's.
        for m in seq(&c["volumeMounts"]) {
            if let Some(p) = hp.get(m["name"].as_str().unwrap()) {
                assert_eq!(m["mountPath"].as_str(), Some(p.as_str()), "{name}: hostPath {p} mounted elsewhere");
            }
        }
    }
    // Its ConfigMap volumes name the ConfigMap.
    let cm = one(&docs, "ConfigMap");
    for v in seq(&spec["volumes"]) {
        if let Some(n) = v["configMap"]["name"].as_str() {
            assert_eq!(n, cm.name(), "volume {:?} names ConfigMap {n}", v["name"]);
        }
    }
    // The README tells how to build it and what it mounts.
    let readme = read(&workspace_dir().join("README.md"));
    let at = readme.find("\n## Kubernetes: the node image").expect("README: a 'Kubernetes: the node image' section");
    let section = &readme[at..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    for p in HOST_PATHS.iter().chain(&["deploy/build-image.sh", "fastpath-hook gc"]) {
        assert!(section.contains(p), "README's node image section does not mention {p}");
    }
}

#[test]
fn configs_parse_and_agree() {
    let docs = docs();
    let cm = one(&docs, "ConfigMap");
    let data = &cm.v["data"];
    let dir = TestDir::new("deploy-cfg");
    // hook.toml, as the hook reads it.
    let hook_toml = data["hook.toml"].as_str().expect("ConfigMap data hook.toml");
    let hook = match fastpath_hook::hostconfig::HostConfig::parse(hook_toml, Some(Path::new("hook.toml")), "0-7") {
        Ok(c) => c,
        // Only a build that does not know the key yet; a value it rejects fails.
        Err(e) if e.to_string().contains("unknown field `cores_from`") => {
            pending("cores_from");
            let rest: String =
                hook_toml.lines().filter(|l| !l.starts_with("cores_from")).flat_map(|l| [l, "\n"]).collect();
            fastpath_hook::hostconfig::HostConfig::parse(&rest, Some(Path::new("hook.toml")), "0-7")
                .unwrap_or_else(|e| panic!("ConfigMap hook.toml: {e}"))
        }
        Err(e) => panic!("ConfigMap hook.toml: {e}"),
    };
    // fastpathd.toml, as fastpathd reads it.
    let f = dir.join("fastpathd.toml");
    std::fs::write(&f, data["fastpathd.toml"].as_str().expect("ConfigMap data fastpathd.toml")).unwrap();
    let sw = fastpath::config::Config::load(&f).unwrap_or_else(|e| panic!("ConfigMap fastpathd.toml: {e}"));
    assert_eq!(hook.switch_socket, sw.ctl_socket, "the hook's switch_socket is not fastpathd's ctl_socket");
    assert_eq!(sw.state_dir(), hook.state_dir, "fastpathd keeps its state (and reads the ledger) elsewhere");
    assert_eq!(
        hook.lib_dir,
        Path::new("/opt/fastpath/lib"),
        "hook.toml lib_dir is not where install.sh puts the library"
    );
    // The CNI network: the ConfigMap's file, the NetworkAttachmentDefinition and the contract agree.
    let want: serde_json::Value = serde_json::from_str(NET_CONF).unwrap();
    let conf: serde_json::Value =
        serde_json::from_str(data["fastpath-net.conf"].as_str().expect("ConfigMap fastpath-net.conf"))
            .unwrap_or_else(|e| panic!("ConfigMap fastpath-net.conf: {e}"));
    assert_eq!(conf, want, "ConfigMap fastpath-net.conf");
    let nad = one(&docs, "NetworkAttachmentDefinition");
    let nad_conf: serde_json::Value = serde_json::from_str(nad.v["spec"]["config"].as_str().expect("spec.config"))
        .unwrap_or_else(|e| panic!("{}: {e}", nad.file));
    assert_eq!(nad_conf, want, "{}: spec.config", nad.file);
    assert_eq!(nad.name(), want["name"], "the NetworkAttachmentDefinition is not named after its network");
    assert!(sw.bridges.iter().any(|b| *b == want["bridge"]), "fastpathd does not make the network's bridge");
    // The socket directory is on the node's /run/fastpath, which fastpathd mounts, and the
    // example pod mounts it.
    let sock_dir = want["socketDir"].as_str().unwrap();
    let ds = one(&docs, "DaemonSet");
    let ds_paths: Vec<String> = host_paths(ds.pod_spec().unwrap()).into_values().collect();
    assert!(ds_paths.iter().any(|p| sock_dir.starts_with(p.as_str())), "{sock_dir} is on no hostPath of the DaemonSet");
    let pod = one(&docs, "Pod");
    assert!(
        host_paths(pod.pod_spec().unwrap()).values().any(|p| p == sock_dir),
        "the example pod does not mount {sock_dir}"
    );
    // What install.sh reads from the ConfigMap is in it.
    let script = read(&deploy_dir().join("install.sh"));
    for key in ["hook.toml", "fastpath-net.conf"] {
        assert!(script.contains(&format!("$CONFIG/{key}")), "install.sh does not install {key}");
        assert!(data[key].is_string(), "install.sh reads {key}, which the ConfigMap lacks");
    }
    assert!(
        script.contains(&hook.lib_dir.join("libfastpath_net.so").display().to_string()),
        "install.sh puts the library elsewhere"
    );
}

#[test]
fn example_pod_is_guaranteed_with_exclusive_cores_and_hugepages() {
    let docs = docs();
    let pod = one(&docs, "Pod");
    let spec = pod.pod_spec().unwrap();
    for c in containers(spec) {
        let name = c["name"].as_str().unwrap();
        let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
        assert!(req.is_mapping() && req == lim, "{name}: requests {req:?} != limits {lim:?} (not Guaranteed)");
        let cpu = match &lim["cpu"] {
            Value::String(s) => s.parse::<u32>().ok(),
            Value::Number(n) => n.as_u64().map(|n| n as u32),
            _ => None,
        };
        assert!(cpu.is_some_and(|n| n > 0), "{name}: cpu {:?} is not a whole number of CPUs", lim["cpu"]);
        assert!(lim["memory"].is_string(), "{name}: no memory limit");
        assert!(lim["hugepages-2Mi"].is_string(), "{name}: no hugepages-2Mi");
        assert_eq!(c["securityContext"]["capabilities"]["drop"], Value::from(vec!["ALL"]), "{name}: capabilities");
    }
    let huge = seq(&spec["volumes"]).iter().find(|v| v["emptyDir"]["medium"] == "HugePages-2Mi");
    let huge = huge.expect("an emptyDir of medium HugePages-2Mi");
    let mounted = containers(spec)
        .iter()
        .flat_map(|c| seq(&c["volumeMounts"]))
        .any(|m| m["name"] == huge["name"] && m["mountPath"] == "/dev/hugepages");
    assert!(mounted, "the hugepages volume is not mounted at /dev/hugepages");
    assert!(spec["securityContext"]["runAsUser"].as_u64().is_some_and(|u| u != 0), "the example runs as root");
    // Multus: the annotation names a NetworkAttachmentDefinition of the pod's namespace.
    let nets =
        pod.v["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"].as_str().expect("a Multus networks annotation");
    let nad = one(&docs, "NetworkAttachmentDefinition");
    let ns = pod.v["metadata"]["namespace"].as_str().unwrap();
    let named = nets.split(',').map(str::trim).any(|n| {
        let (nns, nn) = n.split_once('/').unwrap_or((ns, n));
        nn == nad.name() && nad.v["metadata"]["namespace"].as_str() == Some(nns)
    });
    assert!(named, "k8s.v1.cni.cncf.io/networks {nets:?} does not name {}", nad.name());
}

/// A command line: where it was found, then its words.
type CmdLine = (String, Vec<String>);

/// Every command line that runs one of our binaries: containers' command+args and exec
/// probes, the Containerfile's ENTRYPOINT+CMD, and install.sh's lines.
fn command_lines(docs: &[Doc]) -> Vec<CmdLine> {
    let mut out = Vec::new();
    for d in docs {
        let Some(spec) = d.pod_spec() else { continue };
        for c in containers(spec) {
            let name = c["name"].as_str().unwrap_or("");
            let mut words = strs(&c["command"]);
            words.extend(strs(&c["args"]));
            if !words.is_empty() {
                out.push((format!("{} {name}", d.file), words));
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let w = strs(&c[probe]["exec"]["command"]);
                if !w.is_empty() {
                    out.push((format!("{} {name} {probe}", d.file), w));
                }
            }
        }
    }
    let cf = read(&deploy_dir().join("Containerfile"));
    let json_of = |key: &str| -> Vec<String> {
        cf.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|j| serde_json::from_str(j.trim()).unwrap_or_else(|e| panic!("Containerfile {key}: {e}")))
            .unwrap_or_default()
    };
    let mut entry = json_of("ENTRYPOINT ");
    entry.extend(json_of("CMD "));
    out.push(("Containerfile ENTRYPOINT+CMD".into(), entry));
    // install.sh: the lines that run the hook ("$HOOK" is /opt/fastpath/bin/fastpath-hook).
    let script = read(&deploy_dir().join("install.sh"));
    assert!(script.contains("HOOK=/opt/fastpath/bin/fastpath-hook"), "install.sh: HOOK is not the installed hook");
    for (i, l) in script.lines().enumerate() {
        let l = l.trim();
        if l.starts_with("\"$HOOK\"") {
            let words = l
                .split_whitespace()
                .map(|w| w.trim_matches('"'))
                .map(|w| if w == "$HOOK" { "fastpath-hook".to_string() } else { w.to_string() })
                .collect();
            out.push((format!("install.sh:{}", i + 1), words));
        }
    }
    out
}

/// What a `--help` text offers: each flag (and whether it takes a value) and the subcommands.
#[derive(Default)]
struct Help {
    flags: BTreeMap<String, bool>,
    commands: BTreeSet<String>,
}

fn parse_help(text: &str) -> Help {
    let mut h = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if !line.starts_with(' ') {
            in_commands = false;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if in_commands {
            if let Some(w) = words.first() {
                h.commands.insert((*w).to_string());
            }
            continue;
        }
        // Only an option line's leading flags (`  -c, --config <CONFIG>  Text...`), not
        // flags quoted in text (`Example: fastpathd --ctl /tmp/fp.sock`).
        if !line.starts_with(' ') {
            continue;
        }
        for (i, w) in words.iter().enumerate().take_while(|(_, w)| w.starts_with('-')) {
            if let Some(f) = w.strip_prefix("--") {
                let f = f.trim_end_matches(',');
                let takes = words.get(i + 1).is_some_and(|n| n.starts_with('<'));
                h.flags.insert(format!("--{f}"), takes);
            }
        }
    }
    h
}

fn help_of(bin: &Path, sub: &[String]) -> String {
    let o = Command::new(bin).args(sub).arg("--help").output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(o.status.success(), "{} {} --help: {}", bin.display(), sub.join(" "), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Checks `words` (a binary and its arguments) against the binary's `--help` and its
/// subcommands' `--help`; returns what was checked, for the test's log.
fn check_words(bin: &Path, at: &str, words: &[String]) -> String {
    let mut sub: Vec<String> = Vec::new();
    let mut help = parse_help(&help_of(bin, &sub));
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if let Some(flag) = w.strip_prefix("--") {
            let (flag, inline) = flag.split_once('=').map_or((flag, false), |(f, _)| (f, true));
            let flag = format!("--{flag}");
            match help.flags.get(&flag) {
                Some(&takes) => i += usize::from(takes && !inline),
                None if PENDING.iter().any(|(k, _)| *k == flag) => pending(&flag),
                None => panic!(
                    "{at}: {} {} has no {flag} (its --help: {:?})",
                    bin.display(),
                    sub.join(" "),
                    help.flags.keys()
                ),
            }
        } else if help.commands.contains(w.as_str()) {
            sub.push(w.clone());
            help = parse_help(&help_of(bin, &sub));
        } else if PENDING.iter().any(|(k, _)| k == w) && sub.is_empty() {
            pending(w);
            return format!("{at}: {} (pending)", words.join(" "));
        } else {
            panic!("{at}: {} {}: {w:?} is neither a flag nor a subcommand", bin.display(), sub.join(" "));
        }
        i += 1;
    }
    format!("{at}: {} {}", bin.file_name().unwrap().to_string_lossy(), words.join(" "))
}

#[test]
fn every_binary_subcommand_and_flag_exists() {
    let test = "every_binary_subcommand_and_flag_exists";
    let dir = bin_dir();
    for b in ["fastpathd", "fastpathctl", "fastpath-hook"] {
        if !dir.join(b).is_file() {
            skip_or_fail(
                test,
                &format!("{} is missing (cargo build --release --workspace --bins)", dir.join(b).display()),
            );
            return;
        }
    }
    let image_script = read(&deploy_dir().join("build-image.sh"));
    let docs = docs();
    let mut checked = Vec::new();
    for (at, words) in command_lines(&docs) {
        let (prog, args) = words.split_first().unwrap_or_else(|| panic!("{at}: an empty command"));
        if prog == "/usr/share/fastpath/install.sh" {
            assert!(
                deploy_dir().join("install.sh").is_file() && image_script.contains("deploy/install.sh"),
                "{at}: {prog} is not in the image"
            );
            continue;
        }
        let name = Path::new(prog).file_name().unwrap().to_string_lossy().into_owned();
        assert!(BINARIES.contains(&name.as_str()), "{at}: {prog} is not one of our binaries {BINARIES:?}");
        assert!(
            prog == &name || prog == &format!("/usr/local/bin/{name}"),
            "{at}: the image has {name} in /usr/local/bin, not {prog}"
        );
        assert!(image_script.contains(&name), "{at}: build-image.sh does not put {name} in the image");
        let bin = dir.join(&name);
        if !bin.is_file() && PENDING.iter().any(|(k, _)| *k == name) {
            pending(&name);
            continue;
        }
        checked.push(check_words(&bin, &at, args));
    }
    assert!(checked.len() >= 4, "too few command lines found: {checked:?}");
    eprintln!("{test}: checked\n  {}", checked.join("\n  "));
}

#[test]
fn help_parsing_finds_flags_values_and_commands() {
    let h = parse_help(
        "Usage: x [OPTIONS] <COMMAND>\n\nCommands:\n  gc       Release\n  install  Write\n\nOptions:\n      --config <CONFIG>  Host\n      --json             JSON\n  -h, --help             Print help\n\nExample: x --config /tmp/a --json --quiet\n",
    );
    assert_eq!(h.commands, ["gc", "install"].iter().map(ToString::to_string).collect());
    assert_eq!(h.flags.get("--config"), Some(&true));
    assert_eq!(h.flags.get("--json"), Some(&false));
    assert_eq!(h.flags.get("--help"), Some(&false));
    assert_eq!(h.flags.get("--quiet"), None, "a flag in the example text is not an option");
    assert!(dns_label("fastpath-net") && !dns_label("Fast") && !dns_label("-a") && !dns_label(""));
}
