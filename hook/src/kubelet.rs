// What the runtime already set in config.json for the kubelet's managers: exclusive cores
// (linux.resources.cpu.cpus) and hugetlb limits (linux.resources.hugepageLimits).
//! The runtime's resources (the kubelet's CPU and hugepage managers).

use crate::annotations::{HugeRequest, CORES, HUGEPAGES};
use crate::cores::{format_list, parse_list};
use crate::hostconfig::{CoresFrom, HostConfig};
use crate::hugetlb::{format_size, parse_cgroup_name};
use crate::{Error, Result};
use oci_spec::runtime::Spec;
use std::collections::{BTreeMap, BTreeSet};

/// Where a container's cores come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSource {
    /// This many from the hook's pool (0: none).
    Pool(usize),
    /// These, which the runtime set (`linux.resources.cpu.cpus`).
    Runtime(Vec<usize>),
}

/// The runtime's `linux.resources.cpu.cpus`, parsed; `None` when absent or empty.
pub fn cpus(spec: &Spec) -> Result<Option<BTreeSet<usize>>> {
    let Some(s) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| c.cpus().clone())
    else {
        return Ok(None);
    };
    let set = parse_list(&s).map_err(|e| Error::Oci(format!("config.json linux.resources.cpu.cpus: {e}")))?;
    Ok((!set.is_empty()).then_some(set))
}

/// The runtime's non-zero hugetlb limits (`linux.resources.hugepageLimits`), bytes by page size.
pub fn hugepage_limits(spec: &Spec) -> Result<BTreeMap<u64, u64>> {
    let limits = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.hugepage_limits().clone())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for l in limits.iter().filter(|l| l.limit() != 0) {
        let ps = parse_cgroup_name(l.page_size()).ok_or_else(|| {
            Error::Oci(format!(
                "config.json linux.resources.hugepageLimits: pageSize '{}' is not a page size (2MB, 1GB)",
                l.page_size()
            ))
        })?;
        let bytes = u64::try_from(l.limit()).map_err(|_| {
            Error::Oci(format!(
                "config.json linux.resources.hugepageLimits: limit {} for {} is negative",
                l.limit(),
                l.page_size()
            ))
        })?;
        out.insert(ps, bytes);
    }
    Ok(out)
}

/// Decides where the cores come from under `cores_from`: `wanted` is what
/// `fastpath.io/cores` asked for (0: absent; `value` its text), `online` the host's online
/// CPU list. The runtime's cores must be online, and at least as many as asked for.
pub fn core_source(cfg: &HostConfig, spec: &Spec, wanted: usize, value: &str, online: &str) -> Result<CoreSource> {
    let runtime = match cfg.cores_from {
        CoresFrom::Pool => None,
        CoresFrom::Runtime | CoresFrom::Auto => cpus(spec)?,
    };
    let Some(runtime) = runtime else {
        if cfg.cores_from == CoresFrom::Runtime && wanted > 0 {
            return Err(Error::annotation(
                CORES,
                value,
                format!(
                    "cannot be met: cores_from = \"runtime\" in {} and config.json has no linux.resources.cpu.cpus (the kubelet's static CPU manager sets it for Guaranteed pods with whole CPUs)",
                    cfg.shown()
                ),
            ));
        }
        return Ok(CoreSource::Pool(wanted));
    };
    let online = parse_list(online).map_err(|e| Error::Oci(format!("the host's online CPUs: {e}")))?;
    let offline: Vec<usize> = runtime.difference(&online).copied().collect();
    if !offline.is_empty() {
        return Err(Error::Oci(format!(
            "config.json linux.resources.cpu.cpus = '{}' names CPUs that are not online here: {} (online: {})",
            format_list(&runtime),
            format_list(&offline),
            format_list(&online)
        )));
    }
    if wanted > runtime.len() {
        return Err(Error::annotation(
            CORES,
            value,
            format!(
                "asks for more cores than the runtime gave the container (linux.resources.cpu.cpus = '{}', {} cores)",
                format_list(&runtime),
                runtime.len()
            ),
        ));
    }
    Ok(CoreSource::Runtime(runtime.into_iter().collect()))
}

/// The hugepages the container gets: with `fastpath.io/hugepages` (`asked`, `value` its
/// text), what it asked for, refused when that is more than the runtime's limit for the
/// page size; without, the runtime's limit (for `default_hugepage_size`, else the first
/// page size hook.toml allows), within `max_hugepages`.
pub fn hugepages(
    cfg: &HostConfig,
    spec: &Spec,
    asked: Option<HugeRequest>,
    value: &str,
) -> Result<Option<HugeRequest>> {
    let limits = hugepage_limits(spec)?;
    if let Some(h) = asked {
        return match limits.get(&h.page_size) {
            Some(&limit) if h.bytes > limit => Err(Error::annotation(
                HUGEPAGES,
                value,
                format!(
                    "is more than the runtime's hugetlb limit for {} pages (linux.resources.hugepageLimits: {}): ask for at most that, or raise the pod's hugepages-{} resource",
                    format_size(h.page_size),
                    format_size(limit),
                    format_size(h.page_size)
                ),
            )),
            _ => Ok(Some(h)),
        };
    }
    let mut sizes = std::iter::once(cfg.default_hugepage_size).chain(cfg.hugepage_sizes.iter().copied());
    let Some((page_size, limit)) = sizes.find_map(|ps| limits.get(&ps).map(|&l| (ps, l))) else {
        return Ok(None);
    };
    let bytes = limit - limit % page_size;
    if bytes == 0 {
        return Ok(None);
    }
    if bytes > cfg.max_hugepages {
        return Err(Error::Oci(format!(
            "config.json linux.resources.hugepageLimits: {} of {} pages is more than the {} per container {} allows (max_hugepages)",
            format_size(bytes),
            format_size(page_size),
            format_size(cfg.max_hugepages),
            cfg.shown()
        )));
    }
    Ok(Some(HugeRequest { bytes, page_size }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cpus: Option<&str>, huge: &[(&str, i64)]) -> Spec {
        let mut res = serde_json::json!({});
        if let Some(c) = cpus {
            res["cpu"] = serde_json::json!({ "cpus": c });
        }
        if !huge.is_empty() {
            res["hugepageLimits"] =
                huge.iter().map(|(ps, l)| serde_json::json!({"pageSize": ps, "limit": l})).collect();
        }
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"}, "linux": {"resources": res}
        }))
        .unwrap()
    }

    fn cfg(from: &str) -> HostConfig {
        HostConfig::parse(&format!("cores = \"1-3\"\nmax_hugepages = \"1Gi\"\ncores_from = \"{from}\"\n"), None, "0-7")
            .unwrap()
    }

    #[test]
    fn cores_follow_cores_from() {
        let s = spec(Some("4-5"), &[]);
        assert_eq!(core_source(&cfg("auto"), &s, 0, "", "0-7").unwrap(), CoreSource::Runtime(vec![4, 5]));
        assert_eq!(core_source(&cfg("auto"), &s, 2, "2", "0-7").unwrap(), CoreSource::Runtime(vec![4, 5]));
        assert_eq!(core_source(&cfg("runtime"), &s, 1, "1", "0-7").unwrap(), CoreSource::Runtime(vec![4, 5]));
        assert_eq!(core_source(&cfg("pool"), &s, 1, "1", "0-7").unwrap(), CoreSource::Pool(1));
        let none = spec(None, &[]);
        assert_eq!(core_source(&cfg("auto"), &none, 1, "1", "0-7").unwrap(), CoreSource::Pool(1));
        assert_eq!(core_source(&cfg("runtime"), &none, 0, "", "0-7").unwrap(), CoreSource::Pool(0));
        assert_eq!(core_source(&cfg("auto"), &spec(Some(""), &[]), 1, "1", "0-7").unwrap(), CoreSource::Pool(1));
    }

    #[test]
    fn core_refusals_name_the_field_and_the_values() {
        let e = core_source(&cfg("runtime"), &spec(None, &[]), 1, "1", "0-7").unwrap_err().to_string();
        assert!(e.starts_with("annotation fastpath.io/cores: '1' cannot be met: cores_from = \"runtime\""), "{e}");
        assert!(e.contains("linux.resources.cpu.cpus"), "{e}");
        let e = core_source(&cfg("auto"), &spec(Some("4-5"), &[]), 3, "3", "0-7").unwrap_err().to_string();
        assert!(e.contains("'3' asks for more cores") && e.contains("'4-5', 2 cores"), "{e}");
        let e = core_source(&cfg("auto"), &spec(Some("6-9"), &[]), 0, "", "0-7").unwrap_err().to_string();
        assert!(e.contains("'6-9' names CPUs that are not online here: 8-9 (online: 0-7)"), "{e}");
        let e = core_source(&cfg("auto"), &spec(Some("x"), &[]), 0, "", "0-7").unwrap_err().to_string();
        assert!(e.contains("linux.resources.cpu.cpus") && e.contains("'x'"), "{e}");
        assert!(core_source(&cfg("pool"), &spec(Some("x"), &[]), 0, "", "0-7").is_ok());
    }

    #[test]
    fn hugepages_from_the_runtime_limit() {
        let c = cfg("auto");
        let s = spec(None, &[("1GB", 0), ("2MB", 64 << 20)]);
        assert_eq!(hugepages(&c, &s, None, "").unwrap(), Some(HugeRequest { bytes: 64 << 20, page_size: 2 << 20 }));
        let asked = HugeRequest { bytes: 32 << 20, page_size: 2 << 20 };
        assert_eq!(hugepages(&c, &s, Some(asked), "32Mi").unwrap(), Some(asked));
        let e = hugepages(&c, &s, Some(HugeRequest { bytes: 128 << 20, page_size: 2 << 20 }), "128Mi")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("annotation fastpath.io/hugepages: '128Mi' is more than the runtime's hugetlb limit for 2Mi pages (linux.resources.hugepageLimits: 64Mi)"), "{e}");
        // A limit of another page size doesn't bound the annotation's.
        let big = HugeRequest { bytes: 1 << 30, page_size: 1 << 30 };
        assert_eq!(hugepages(&c, &s, Some(big), "1Gi").unwrap(), Some(big));
        assert_eq!(hugepages(&c, &spec(None, &[("2MB", 0)]), None, "").unwrap(), None);
        assert_eq!(hugepages(&c, &spec(None, &[]), None, "").unwrap(), None);
        let g = spec(None, &[("1GB", 1 << 30)]);
        assert_eq!(hugepages(&c, &g, None, "").unwrap(), Some(HugeRequest { bytes: 1 << 30, page_size: 1 << 30 }));
        let e = hugepages(&c, &spec(None, &[("2MB", 2 << 30)]), None, "").unwrap_err().to_string();
        assert!(e.contains("2Gi of 2Mi pages is more than the 1Gi") && e.contains("max_hugepages"), "{e}");
        let e = hugepages(&c, &spec(None, &[("2XB", 1)]), None, "").unwrap_err().to_string();
        assert!(e.contains("pageSize '2XB'"), "{e}");
    }
}
