// fastpath-hook: parses the command line, reads the OCI state on stdin for the hook stages,
// and calls the library; errors go to stderr naming the stage and the container.
//! The `fastpath-hook` binary.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fastpath_hook::hostconfig::HostConfig;
use fastpath_hook::stages::{self, Ctx};
use fastpath_hook::switch::UnixSwitch;
use fastpath_hook::sys::RealSys;
use fastpath_hook::{cdi, install, shim};
use fastpath_host::logging::{self, LogFormat};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "fastpath's OCI hook: exclusive cores, own hugetlbfs, vhost-user ports and VFs for annotated containers"
)]
struct Cli {
    /// Host configuration (default: $FASTPATH_HOOK_CONFIG, else /etc/fastpath/hook.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log lines on stderr as `text` or `json` (one object per line: timestamp, level, target,
    /// message, the event's fields, span and spans). The level comes from FASTPATH_HOOK_LOG
    /// (default warn). Before the subcommand: `fastpath-hook --log-format json createRuntime`
    /// (after `shim`, `--log-format` is the runtime's own).
    #[arg(long, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Hook stage (host namespaces): validate, reserve, add ports, write cgroup limits.
    #[command(name = "createRuntime")]
    CreateRuntime,
    /// Older name of the same stage.
    #[command(name = "prestart")]
    Prestart,
    /// Hook stage (container mount namespace, before pivot_root): mounts and config.json.
    #[command(name = "createContainer")]
    CreateContainer,
    /// Hook stage: release what the ledger says the container holds.
    #[command(name = "poststop")]
    Poststop,
    /// Release what containers that no longer exist still hold, and give live containers back
    /// the switch ports the switch lost.
    Gc {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the hooks.d files (podman, CRI-O) and print the config.json hooks block (runc, crun).
    Install {
        /// hooks.d directory.
        #[arg(long, default_value = install::DEFAULT_HOOKS_DIR)]
        hooks_dir: PathBuf,
        /// The hook binary's path as the runtimes will run it (default: this binary).
        #[arg(long)]
        hook: Option<PathBuf>,
        /// Only print, write nothing.
        #[arg(long)]
        print_only: bool,
    },
    /// CDI specs for podman and containerd 1.7+ (`cdi generate`).
    Cdi {
        #[command(subcommand)]
        cmd: CdiCmd,
    },
    /// Docker runtime shim: `shim [--runtime runc] [--hook PATH] [--config P] RUNC-ARGS...`.
    Shim {
        /// Everything, parsed by the shim itself.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CdiCmd {
    /// Write the CDI specs: kind fastpath.io/port (a device per bridge) at --output, and kind
    /// fastpath.io/vf (a device per VF of vf_pools) beside it as <name>-vf.<ext>. JSON, which
    /// is YAML too.
    Generate {
        /// The port spec's path (`-`: print both specs to stdout).
        #[arg(long, default_value = "/etc/cdi/fastpath.io.yaml")]
        output: PathBuf,
        /// A bridge to make a fastpath.io/port device for (repeatable; added to `bridges` in hook.toml).
        #[arg(long)]
        bridge: Vec<String>,
        /// The hugetlbfs a port device gives (`none`: the runtime's hugetlb limit, the kubelet's
        /// hugepages-2Mi, decides).
        #[arg(long, default_value = "64Mi")]
        hugepages: String,
        /// The hook binary's path as the runtimes will run it (default: this binary).
        #[arg(long)]
        hook: Option<PathBuf>,
    },
}

fn cdi_generate(cli_config: Option<&std::path::Path>, cmd: CdiCmd) -> Result<()> {
    let CdiCmd::Generate { output, bridge, hugepages, hook } = cmd;
    let cfg = HostConfig::load(cli_config)?;
    let hook = hook.unwrap_or_else(self_exe);
    let mut bridges = cfg.bridges.clone();
    bridges.extend(bridge.into_iter().filter(|b| !cfg.bridges.contains(b)));
    if bridges.is_empty() {
        bail!("cdi generate: no bridges: name them with --bridge or `bridges` in {}", cfg.shown());
    }
    let huge = match hugepages.as_str() {
        "none" => None,
        h if fastpath_hook::hugetlb::parse_size(h).is_some_and(|b| b > 0) => Some(h),
        h => bail!("cdi generate: --hugepages '{h}' is not a size (try 64Mi, or none)"),
    };
    let port = cdi::port_spec(&bridges, huge, &hook, cli_config);
    let (vf, skipped) = cdi::vf_spec(&fastpath_hook::pci::Pci::new(), &cfg, &hook, cli_config);
    for s in skipped {
        eprintln!("cdi generate: warning: {s}");
    }
    // Podman and containerd look each CDI device node up when they apply the spec, before
    // any hook runs: a VF's /dev/vfio/GROUP must exist by then, so it must be on vfio-pci.
    let pci = fastpath_hook::pci::Pci::new();
    for d in vf["devices"].as_array().into_iter().flatten() {
        let addr = d["name"].as_str().unwrap_or_default();
        let driver = pci.driver(addr);
        if driver.as_deref() != Some(fastpath_hook::pci::VFIO_PCI) {
            eprintln!(
                "cdi generate: warning: VF {addr} is on {}, not vfio-pci: a runtime applying fastpath.io/vf={addr} \
                 will not find its /dev/vfio node; bind it first (fastpathctl vf bind {addr})",
                driver.as_deref().unwrap_or("no driver")
            );
        }
    }
    let has_vfs = vf["devices"].as_array().is_some_and(|d| !d.is_empty());
    if output.as_os_str() == "-" {
        println!("{}", serde_json::to_string_pretty(&port)?);
        if has_vfs {
            println!("{}", serde_json::to_string_pretty(&vf)?);
        }
        return Ok(());
    }
    let mut files = vec![(output.clone(), port)];
    if has_vfs {
        files.push((cdi::vf_path(&output), vf));
    }
    for (p, v) in files {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&v)? + "\n")
            .and_then(|()| std::fs::rename(&tmp, &p))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn read_state() -> Result<oci_spec::runtime::State> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading the OCI state on stdin")?;
    Ok(stages::parse_state(&text)?)
}

fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "fastpath-hook".into())
}

fn run_stage(cfg: &HostConfig, stage: &str) -> Result<()> {
    let state = read_state()?;
    let id = state.id().clone();
    // Every event of the stage carries its name and the container (`span` in JSON logs).
    let span = tracing::info_span!("hook", stage, container = %id);
    let _entered = span.enter();
    tracing::debug!("running");
    let sys = RealSys;
    let sw = UnixSwitch::new(&cfg.switch_socket, Duration::from_millis(cfg.switch_timeout_ms));
    let ctx = Ctx::new(cfg, &sys, &sw);
    let r: Result<()> = (|| {
        match stage {
            "createRuntime" => {
                let spec = stages::load_spec(&state)?;
                if let Some(e) = stages::create_runtime(&ctx, &state, &spec)? {
                    tracing::info!("container {id}: cores {:?}, ports {:?}", e.cores, e.ports);
                    // Runtimes drop a successful hook's stderr: the shortfall goes to the log too.
                    if let Some(note) = e.config.as_ref().and_then(|c| c.memlock.as_ref()).and_then(|m| m.note.as_ref())
                    {
                        log_failure(cfg, &format!("fastpath-hook createRuntime: container {id}: warning: {note}"));
                    }
                    if let Some(note) = &e.numa_note {
                        log_failure(cfg, &format!("fastpath-hook createRuntime: container {id}: warning: {note}"));
                    }
                }
            }
            "createContainer" => {
                let spec = stages::load_spec(&state)?;
                stages::create_container(&ctx, &state, &spec)?;
            }
            _ => {
                if let Some((_, warnings)) = stages::poststop(&ctx, &id)? {
                    for w in warnings {
                        eprintln!("fastpath-hook poststop: container {id}: warning: {w}");
                    }
                }
            }
        }
        Ok(())
    })();
    let r = r.with_context(|| format!("fastpath-hook {stage}: container {id}"));
    if let Err(e) = &r {
        // crun (and podman over crun) drop a hook's stderr: keep the reason where a person finds it.
        log_failure(cfg, &format!("{e:#}"));
    }
    r
}

/// Appends one line to `<state_dir>/hook.log`; best effort.
fn log_failure(cfg: &HostConfig, msg: &str) {
    use std::io::Write;
    let _ = std::fs::create_dir_all(&cfg.state_dir);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let path = cfg.state_dir.join("hook.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 1 << 20) {
        let _ = std::fs::rename(&path, cfg.state_dir.join("hook.log.1"));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        // One write(2) per line: hooks of containers started together append to the same
        // file, and O_APPEND keeps a single write whole, where writeln! would issue several.
        let line = format!("{now} {msg}\n");
        let _ = f.write_all(line.as_bytes());
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format, "FASTPATH_HOOK_LOG", "warn");
    match cli.cmd {
        Cmd::Shim { args } => {
            let mut a = shim::parse_args(&args, &self_exe())?;
            if a.config.is_none() {
                a.config = cli.config;
            }
            if let Some(bundle) = shim::bundle_of(&a.rest) {
                shim::prepare_bundle(&bundle, &a.hook, a.config.as_deref())?;
            }
            let err = std::process::Command::new(&a.runtime).args(&a.rest).exec();
            bail!("shim: exec {}: {err}", a.runtime.display());
        }
        Cmd::Install { hooks_dir, hook, print_only } => {
            let hook = hook.unwrap_or_else(self_exe);
            let cfg = cli.config.as_deref();
            if print_only {
                for (name, v) in install::hooks_d_files(&hook, cfg) {
                    println!("# {}\n{}", hooks_dir.join(name).display(), serde_json::to_string_pretty(&v)?);
                }
            } else {
                for p in install::write_hooks_d(&hooks_dir, &hook, cfg)? {
                    eprintln!("wrote {}", p.display());
                }
            }
            println!("# runc / crun: add to the bundle's config.json:");
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "hooks": install::oci_hooks(&hook, cfg) }))?
            );
            Ok(())
        }
        Cmd::Cdi { cmd } => cdi_generate(cli.config.as_deref(), cmd),
        Cmd::Gc { json } => {
            let cfg = HostConfig::load(cli.config.as_deref())?;
            let sys = RealSys;
            let sw = UnixSwitch::new(&cfg.switch_socket, Duration::from_millis(cfg.switch_timeout_ms));
            let r = stages::gc(&Ctx::new(&cfg, &sys, &sw)).context("fastpath-hook gc")?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"released": r.released, "orphan_ports": r.orphan_ports,
                                       "restored_ports": r.restored_ports, "orphan_dirs": r.orphan_dirs,
                                       "warnings": r.warnings})
                );
            } else {
                for c in &r.released {
                    println!("released container {c}");
                }
                for p in &r.orphan_ports {
                    println!("deleted orphan port {p}");
                }
                for p in &r.restored_ports {
                    println!("added back port {p} (the switch had lost it)");
                }
                for d in &r.orphan_dirs {
                    println!("removed orphan {}", d.display());
                }
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
            }
            Ok(())
        }
        Cmd::CreateRuntime | Cmd::Prestart => run_stage(&HostConfig::load(cli.config.as_deref())?, "createRuntime"),
        Cmd::CreateContainer => run_stage(&HostConfig::load(cli.config.as_deref())?, "createContainer"),
        Cmd::Poststop => run_stage(&HostConfig::load(cli.config.as_deref())?, "poststop"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_goes_before_the_stage_and_a_shims_is_the_runtimes() {
        let c = Cli::try_parse_from(["fastpath-hook", "--log-format", "json", "createRuntime"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let c =
            Cli::try_parse_from(["fastpath-hook", "shim", "--root", "/r", "--log-format", "json", "create"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let Cmd::Shim { args } = c.cmd else { panic!("{:?}", c.cmd) };
        assert_eq!(args, ["--root", "/r", "--log-format", "json", "create"]);
        assert!(Cli::try_parse_from(["fastpath-hook", "--log-format", "yaml", "gc"]).is_err());
    }
}
