// The doctor's core checks: the hook's core pool (hook.toml) against the kernel's isolcpus,
// nohz_full and rcu_nocbs, and against the core fastpathd pins its worker to.
//! Core pool checks.

use std::collections::BTreeSet;

use fastpath_hook::cores::{format_list, parse_list};
use fastpath_hook::hostconfig::HostConfig;
use fastpath_host::proto::SwitchStatus;

use super::{Check, Host};

/// The hook's configuration as the hook would read it (defaults when the file is absent).
pub fn hook_config(host: &Host) -> Result<HostConfig, String> {
    let online = host.read("/sys/devices/system/cpu/online").unwrap_or_else(|| "0".into());
    match std::fs::read_to_string(&host.hook_config) {
        Ok(text) => HostConfig::parse(&text, Some(&host.hook_config), &online).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            HostConfig::parse("", None, &online).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("{}: {e}", host.hook_config.display())),
    }
}

/// The CPUs a kernel parameter names (`isolcpus=domain,managed_irq,2-3`: its flags skipped).
fn cmdline_cpus(cmdline: &str, param: &str) -> BTreeSet<usize> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(param)?.strip_prefix('='))
        .flat_map(|v| {
            let list: Vec<&str> = v.split(',').filter(|t| !t.starts_with(|c: char| c.is_ascii_alphabetic())).collect();
            parse_list(&list.join(",")).unwrap_or_default()
        })
        .collect()
}

/// cores.pool, cores.isolcpus, cores.nohz_full, cores.rcu_nocbs, cores.switch.
pub fn checks(host: &Host, switch: Option<&SwitchStatus>) -> Vec<Check> {
    let edit = format!("fix 'cores' in {}", host.hook_config.display());
    let cfg = match hook_config(host) {
        Ok(c) => c,
        Err(e) => return vec![Check::fail("cores.pool", format!("the hook's configuration is refused: {e}"), edit)],
    };
    let pool = format_list(&cfg.cores);
    let from = cfg.path.as_ref().map_or_else(|| "defaults: online CPUs but 0".into(), |p| p.display().to_string());
    let mut out = vec![if cfg.cores.is_empty() {
        Check::fail("cores.pool", format!("the hook's core pool is empty ({from})"), edit)
    } else {
        Check::ok("cores.pool", format!("the hook gives containers cores {pool} ({from})"))
    }];
    let cmdline = host.read("/proc/cmdline").unwrap_or_default();
    for (param, why) in [
        ("isolcpus", "the scheduler may put other tasks on them"),
        ("nohz_full", "the timer tick interrupts their polling loops"),
        ("rcu_nocbs", "RCU callbacks run on them"),
    ] {
        let name = format!("cores.{param}");
        let missing: BTreeSet<usize> = cfg.cores.difference(&cmdline_cpus(&cmdline, param)).copied().collect();
        out.push(if missing.is_empty() {
            Check::ok(&name, format!("{param} covers the pool ({pool})"))
        } else {
            Check::warn(
                &name,
                format!("cores {} of the pool are not in {param} on the kernel command line: {why}", format_list(&missing)),
                format!(
                    "add 'isolcpus={pool} nohz_full={pool} rcu_nocbs={pool}' to GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub && reboot"
                ),
            )
        });
    }
    let cpus = switch.map(SwitchStatus::worker_cpus);
    let inside: Vec<usize> = cpus.iter().flatten().copied().filter(|c| cfg.cores.contains(c)).collect();
    out.push(match cpus.as_deref() {
        None => Check::warn(
            "cores.switch",
            "fastpathd does not answer: its worker's core is not known",
            "start fastpathd (see the fastpathd check)",
        ),
        Some([]) => Check::warn(
            "cores.switch",
            "fastpathd's worker is not pinned: it competes with the containers for cores",
            "set 'core = N' (a core outside the hook's pool) in /etc/fastpath/fastpathd.toml and restart fastpathd",
        ),
        Some(_) if !inside.is_empty() => {
            let c = format_list(&inside);
            Check::fail(
                "cores.switch",
                format!(
                    "fastpathd's worker is pinned to CPU {c}, which is in the hook's pool ({pool}): a container may get it"
                ),
                format!(
                    "remove {c} from 'cores' in {} (or pin fastpathd to a core outside it)",
                    host.hook_config.display()
                ),
            )
        }
        Some([c]) => Check::ok("cores.switch", format!("fastpathd's worker is on CPU {c}, outside the pool")),
        Some(many) => Check::ok(
            "cores.switch",
            format!("fastpathd's {} workers are on CPUs {}, outside the pool", many.len(), format_list(many)),
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::super::tree::Tree;
    use super::super::Status;
    use super::*;

    fn status(core: Option<usize>) -> SwitchStatus {
        SwitchStatus {
            pid: 1,
            ports: 0,
            state_file: None,
            took_over_from: None,
            first_frame_ms: None,
            core,
            cores: vec![],
        }
    }

    fn names_and_statuses(c: &[Check]) -> Vec<(&str, Status)> {
        c.iter().map(|c| (c.name.as_str(), c.status)).collect()
    }

    #[test]
    fn parses_kernel_cpu_lists_with_flags() {
        let c = "quiet isolcpus=domain,managed_irq,2-3,5 nohz_full=2-3 rcu_nocbs=1";
        assert_eq!(cmdline_cpus(c, "isolcpus"), BTreeSet::from([2, 3, 5]));
        assert_eq!(cmdline_cpus(c, "nohz_full"), BTreeSet::from([2, 3]));
        assert!(cmdline_cpus(c, "irqaffinity").is_empty());
    }

    #[test]
    fn an_isolated_pool_and_a_switch_outside_it_are_ok() {
        let t = Tree::new("cores-ok");
        t.write("/sys/devices/system/cpu/online", "0-3\n")
            .write("/proc/cmdline", "isolcpus=2-3 nohz_full=2-3 rcu_nocbs=2-3\n")
            .write("/etc/fastpath/hook.toml", "cores = \"2-3\"\n");
        let c = checks(&t.host(), Some(&status(Some(1))));
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
    }

    #[test]
    fn a_pool_not_isolated_and_the_switch_inside_it() {
        let t = Tree::new("cores-bad");
        t.write("/sys/devices/system/cpu/online", "0-3\n").write("/proc/cmdline", "quiet nohz_full=1-3\n");
        let c = checks(&t.host(), Some(&status(Some(2))));
        assert_eq!(
            names_and_statuses(&c),
            [
                ("cores.pool", Status::Ok),
                ("cores.isolcpus", Status::Warn),
                ("cores.nohz_full", Status::Ok),
                ("cores.rcu_nocbs", Status::Warn),
                ("cores.switch", Status::Fail)
            ]
        );
        assert!(c[0].detail.contains("1-3 (defaults"), "{}", c[0].detail);
        assert!(c[1].fix.as_deref().unwrap().contains("isolcpus=1-3 nohz_full=1-3 rcu_nocbs=1-3"));
        assert!(c[4].detail.contains("CPU 2"), "{}", c[4].detail);
        assert_eq!(checks(&t.host(), Some(&status(None)))[4].status, Status::Warn);
        // Two workers, one of them inside the pool: named.
        let two = SwitchStatus { cores: vec![0, 3], ..status(Some(0)) };
        let c = checks(&t.host(), Some(&two));
        assert_eq!(c[4].status, Status::Fail);
        assert!(c[4].detail.contains("CPU 3,") && !c[4].detail.contains("CPU 0"), "{}", c[4].detail);
        let outside = SwitchStatus { cores: vec![0, 4], ..status(Some(0)) };
        let c = checks(&t.host(), Some(&outside));
        assert_eq!(
            (c[4].status, c[4].detail.as_str()),
            (Status::Ok, "fastpathd's 2 workers are on CPUs 0,4, outside the pool")
        );
        assert_eq!(checks(&t.host(), None)[4].status, Status::Warn);
    }

    #[test]
    fn a_bad_hook_config_fails_naming_it() {
        let t = Tree::new("cores-badcfg");
        t.write("/etc/fastpath/hook.toml", "cores = \"x\"\n");
        let c = checks(&t.host(), None);
        assert_eq!(names_and_statuses(&c), [("cores.pool", Status::Fail)]);
        assert!(c[0].detail.contains("hook.toml"), "{}", c[0].detail);
    }
}
