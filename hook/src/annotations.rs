// Reads the fastpath.io/* annotations into a request and checks it against the host's policy,
// before anything is allocated; every refusal names the annotation and the value.
//! Annotations.

use crate::cores::format_list;
use crate::hostconfig::HostConfig;
use crate::hugetlb::{format_size, parse_size};
use crate::{Error, Result};
use netlib::pci::PciAddress;
use std::collections::BTreeMap;

/// The prefix every fastpath annotation has.
pub const PREFIX: &str = "fastpath.io/";
/// Number of exclusive cores.
pub const CORES: &str = "fastpath.io/cores";
/// Bytes of hugepages.
pub const HUGEPAGES: &str = "fastpath.io/hugepages";
/// Hugepage size.
pub const HUGEPAGE_SIZE: &str = "fastpath.io/hugepage-size";
/// Switch bridge(s) for vhost-user ports, comma-separated.
pub const VHOST_USER: &str = "fastpath.io/vhost-user";
/// VF PCI address(es) or pool name(s), comma-separated.
pub const VF: &str = "fastpath.io/vf";
/// Mount libfastpath_net read-only.
pub const INJECT: &str = "fastpath.io/inject";
/// The access VLAN of the container's switch ports.
pub const VLAN: &str = "fastpath.io/vlan";
/// The MTU of the container's switch ports.
pub const MTU: &str = "fastpath.io/mtu";
/// Every annotation this hook knows.
pub const KNOWN: [&str; 8] = [CORES, HUGEPAGES, HUGEPAGE_SIZE, VHOST_USER, VF, INJECT, VLAN, MTU];

/// The environment variable that says what annotation `key` says, for containers that get
/// fastpath through CDI (which can't set annotations): `fastpath.io/vhost-user` →
/// `FASTPATH_IO_VHOST_USER`.
pub fn env_name(key: &str) -> String {
    key.replace(['.', '/', '-'], "_").to_ascii_uppercase()
}

/// The fastpath annotations a process environment (`KEY=VALUE` each) carries through
/// [`env_name`] variables; other variables are ignored.
pub fn from_env(env: &[String]) -> BTreeMap<String, String> {
    KNOWN
        .iter()
        .filter_map(|k| {
            let name = env_name(k);
            env.iter()
                .rev()
                .find_map(|e| e.strip_prefix(name.as_str()).and_then(|v| v.strip_prefix('=')))
                .map(|v| ((*k).to_string(), v.to_string()))
        })
        .collect()
}

/// Hugepages asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugeRequest {
    /// Total bytes (a multiple of `page_size`).
    pub bytes: u64,
    /// Page size in bytes.
    pub page_size: u64,
}

/// What a container asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Exclusive cores.
    pub cores: usize,
    /// Its own hugetlbfs.
    pub hugepages: Option<HugeRequest>,
    /// One vhost-user port per bridge.
    pub bridges: Vec<String>,
    /// VF PCI addresses (written in full, as sysfs names them) or pool names.
    pub vfs: Vec<String>,
    /// Mount libfastpath_net.
    pub inject: bool,
    /// The access VLAN of its switch ports (none: no VLAN).
    pub vlan: Option<u16>,
    /// The MTU of its switch ports (none: the switch's default).
    pub mtu: Option<u16>,
}

/// Whether a string is a PCI address ([`PciAddress`]: `0000:81:10.0`, or `81:10.0`).
pub fn is_pci_address(s: &str) -> bool {
    s.parse::<PciAddress>().is_ok()
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn list(key: &str, v: &str, max: usize, what: &str) -> Result<Vec<String>> {
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
    if items.iter().any(String::is_empty) {
        return Err(Error::annotation(key, v, format!("has an empty {what} (write e.g. br0 or br0,br1)")));
    }
    for (i, a) in items.iter().enumerate() {
        if items[..i].contains(a) {
            return Err(Error::annotation(key, v, format!("names {what} '{a}' twice")));
        }
    }
    if items.len() > max {
        return Err(Error::annotation(
            key,
            v,
            format!("asks for {} {what}s; this host allows {max} per container", items.len()),
        ));
    }
    Ok(items)
}

/// Parses and checks the annotations. `Ok(None)`: none of them is a fastpath annotation
/// (the hook has nothing to do).
pub fn parse(ann: &BTreeMap<String, String>, cfg: &HostConfig) -> Result<Option<Request>> {
    let ours: BTreeMap<&str, &str> =
        ann.iter().filter(|(k, _)| k.starts_with(PREFIX)).map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if ours.is_empty() {
        return Ok(None);
    }
    if let Some((k, v)) = ours.iter().find(|(k, _)| !KNOWN.contains(k)) {
        return Err(Error::annotation(k, v, format!("is not a fastpath annotation (known: {})", KNOWN.join(", "))));
    }
    // Checked cores, hugepage-size, hugepages, vhost-user, vf, inject, vlan, mtu: of two wrong
    // annotations, the first of these is named.
    let cores = ours.get(CORES).map_or(Ok(0), |v| cores(v, cfg))?;
    let page_size = match ours.get(HUGEPAGE_SIZE) {
        Some(v) => hugepage_size(v, ours.contains_key(HUGEPAGES), cfg)?,
        None => cfg.default_hugepage_size,
    };
    Ok(Some(Request {
        cores,
        hugepages: ours.get(HUGEPAGES).map(|v| hugepages(v, page_size, cfg)).transpose()?,
        bridges: ours.get(VHOST_USER).map_or(Ok(vec![]), |v| bridges(v, cfg))?,
        vfs: ours.get(VF).map_or(Ok(vec![]), |v| vfs(v, cfg))?,
        inject: ours.get(INJECT).map_or(Ok(false), |v| inject(v))?,
        vlan: ours.get(VLAN).map(|v| vlan(v, ours.contains_key(VHOST_USER))).transpose()?,
        mtu: ours.get(MTU).map(|v| mtu(v, ours.contains_key(VHOST_USER))).transpose()?,
    }))
}

/// `fastpath.io/cores`: a number of cores, at least 1, within the pool and `max_cores`.
fn cores(v: &str, cfg: &HostConfig) -> Result<usize> {
    let n: usize =
        v.trim().parse().map_err(|_| Error::annotation(CORES, v, "is not a number of cores (try \"1\" or \"2\")"))?;
    if n == 0 {
        return Err(Error::annotation(CORES, v, "must be 1 or more (leave the annotation out for no cores)"));
    }
    if n > cfg.cores.len() {
        return Err(Error::annotation(
            CORES,
            v,
            format!(
                "is more cores than the pool has: pool {} ({} cores, cores in {})",
                format_list(&cfg.cores),
                cfg.cores.len(),
                cfg.shown()
            ),
        ));
    }
    if n > cfg.max_cores {
        return Err(Error::annotation(
            CORES,
            v,
            format!("is more than the {} cores per container {} allows (max_cores)", cfg.max_cores, cfg.shown()),
        ));
    }
    Ok(n)
}

/// `fastpath.io/hugepage-size`: a page size the host allows; only with `fastpath.io/hugepages`.
fn hugepage_size(v: &str, with_hugepages: bool, cfg: &HostConfig) -> Result<u64> {
    let ps = parse_size(v).ok_or_else(|| Error::annotation(HUGEPAGE_SIZE, v, "is not a page size (try 2Mi or 1Gi)"))?;
    if !cfg.hugepage_sizes.contains(&ps) {
        let allowed: Vec<String> = cfg.hugepage_sizes.iter().map(|&s| format_size(s)).collect();
        return Err(Error::annotation(
            HUGEPAGE_SIZE,
            v,
            format!("is not a hugepage size this host allows ({})", allowed.join(", ")),
        ));
    }
    if !with_hugepages {
        return Err(Error::annotation(HUGEPAGE_SIZE, v, format!("needs {HUGEPAGES} too (how much memory)")));
    }
    Ok(ps)
}

/// `fastpath.io/hugepages`: a size, a whole number of `page_size` pages, within `max_hugepages`.
fn hugepages(v: &str, page_size: u64, cfg: &HostConfig) -> Result<HugeRequest> {
    let bytes = parse_size(v)
        .filter(|&b| b > 0)
        .ok_or_else(|| Error::annotation(HUGEPAGES, v, "is not a size (try 64Mi or 1Gi)"))?;
    if bytes % page_size != 0 {
        return Err(Error::annotation(
            HUGEPAGES,
            v,
            format!("is not a whole number of {} pages", format_size(page_size)),
        ));
    }
    if bytes > cfg.max_hugepages {
        return Err(Error::annotation(
            HUGEPAGES,
            v,
            format!(
                "is more than the {} per container {} allows (max_hugepages)",
                format_size(cfg.max_hugepages),
                cfg.shown()
            ),
        ));
    }
    Ok(HugeRequest { bytes, page_size })
}

/// `fastpath.io/vhost-user`: bridge names, at most `max_ports`.
fn bridges(v: &str, cfg: &HostConfig) -> Result<Vec<String>> {
    let bridges = list(VHOST_USER, v, cfg.max_ports, "bridge")?;
    if let Some(b) = bridges.iter().find(|b| !is_name(b)) {
        return Err(Error::annotation(VHOST_USER, v, format!("'{b}' is not a bridge name (letters, digits, - _ .)")));
    }
    Ok(bridges)
}

/// `fastpath.io/vf`: PCI addresses (written in full) or pool names, at most `max_vfs`.
fn vfs(v: &str, cfg: &HostConfig) -> Result<Vec<String>> {
    let vfs: Vec<String> = list(VF, v, cfg.max_vfs, "VF")?
        .into_iter()
        .map(|a| a.parse::<PciAddress>().map_or(a, |pci| pci.to_string()))
        .collect();
    if let Some(b) = vfs.iter().find(|b| !is_pci_address(b) && !cfg.vf_pools.contains_key(b.as_str())) {
        return Err(Error::annotation(
            VF,
            v,
            format!("'{b}' is neither a PCI address (0000:81:10.0) nor a VF pool in {}", cfg.shown()),
        ));
    }
    Ok(vfs)
}

/// `fastpath.io/inject`: `true` or `false`.
fn inject(v: &str) -> Result<bool> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::annotation(INJECT, v, "is not \"true\" or \"false\"")),
    }
}

/// `fastpath.io/vlan`: a VLAN id, 1 to 4094; only with `fastpath.io/vhost-user`.
fn vlan(v: &str, with_ports: bool) -> Result<u16> {
    let id = v
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|id| fastpath_host::proto::VLAN_IDS.contains(id))
        .ok_or_else(|| Error::annotation(VLAN, v, "is not a VLAN id (1 to 4094, e.g. \"100\")"))?;
    if !with_ports {
        return Err(Error::annotation(VLAN, v, format!("needs {VHOST_USER} too (the ports on that VLAN)")));
    }
    Ok(id)
}

/// `fastpath.io/mtu`: an MTU the switch takes (68 to 9198), for the container's switch ports.
fn mtu(v: &str, with_ports: bool) -> Result<u16> {
    let range = fastpath_host::proto::MTUS;
    let m = v.trim().parse::<u16>().ok().filter(|m| range.contains(m)).ok_or_else(|| {
        Error::annotation(MTU, v, format!("is not an MTU ({} to {}, e.g. \"9000\")", range.start(), range.end()))
    })?;
    if !with_ports {
        return Err(Error::annotation(MTU, v, format!("needs {VHOST_USER} too (the ports of that MTU)")));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HostConfig {
        HostConfig::parse("cores = \"2-3\"\nmax_hugepages = \"1Gi\"\n[vf_pools]\nfast = []\n", None, "0-3").unwrap()
    }

    fn p(pairs: &[(&str, &str)]) -> Result<Option<Request>> {
        parse(&pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(), &cfg())
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        p(pairs).unwrap_err().to_string()
    }

    #[test]
    fn none_without_fastpath_keys() {
        assert_eq!(p(&[("io.kubernetes.x", "y")]).unwrap(), None);
    }

    #[test]
    fn the_contract_example() {
        let r = p(&[(CORES, "1"), (HUGEPAGES, "64Mi"), (VHOST_USER, "br0"), (INJECT, "true")]).unwrap().unwrap();
        assert_eq!(r.cores, 1);
        assert_eq!(r.hugepages, Some(HugeRequest { bytes: 64 << 20, page_size: 2 << 20 }));
        assert_eq!(r.bridges, vec!["br0"]);
        assert!(r.inject);
        let r = p(&[(VHOST_USER, "br0, br1"), (VF, "0000:81:10.0,fast")]).unwrap().unwrap();
        assert_eq!(r.bridges, vec!["br0", "br1"]);
        assert_eq!(r.vfs, vec!["0000:81:10.0", "fast"]);
        let r = p(&[(VF, "81:10.2,0000:81:0A.1")]).unwrap().unwrap();
        assert_eq!(r.vfs, vec!["0000:81:10.2", "0000:81:0a.1"]);
    }

    #[test]
    fn refusals_name_annotation_and_value() {
        assert_eq!(
            err(&[(HUGEPAGES, "64Mx")]),
            "annotation fastpath.io/hugepages: '64Mx' is not a size (try 64Mi or 1Gi)"
        );
        let e = err(&[("fastpath.io/cpus", "1")]);
        assert!(e.starts_with("annotation fastpath.io/cpus: '1' is not a fastpath annotation"), "{e}");
        let e = err(&[(CORES, "3")]);
        assert!(e.starts_with("annotation fastpath.io/cores: '3' is more cores than the pool has: pool 2-3"), "{e}");
        assert!(err(&[(CORES, "x")]).contains("'x' is not a number"));
        assert!(err(&[(CORES, "0")]).contains("'0' must be 1 or more"));
        assert!(err(&[(HUGEPAGES, "3Mi")]).contains("whole number of 2Mi pages"));
        assert!(err(&[(HUGEPAGES, "2Gi")]).contains("max_hugepages"));
        assert!(err(&[(HUGEPAGES, "0")]).contains("not a size"));
        assert!(err(&[(HUGEPAGES, "1Gi"), (HUGEPAGE_SIZE, "4Mi")])
            .contains("not a hugepage size this host allows (2Mi, 1Gi)"));
        assert!(err(&[(HUGEPAGE_SIZE, "1Gi")]).contains("needs fastpath.io/hugepages"));
        assert!(err(&[(VHOST_USER, "br0,br0")]).contains("twice"));
        assert!(err(&[(VHOST_USER, "br0,")]).contains("empty bridge"));
        assert!(err(&[(VHOST_USER, "a,b,c,d,e")]).contains("allows 4"));
        assert!(err(&[(VHOST_USER, "br/0")]).contains("'br/0' is not a bridge name"));
        assert!(err(&[(VF, "slow")]).contains("neither a PCI address"));
        assert_eq!(
            err(&[(VHOST_USER, "br0"), (MTU, "9999")]),
            "annotation fastpath.io/mtu: '9999' is not an MTU (68 to 9198, e.g. \"9000\")"
        );
        assert!(err(&[(VHOST_USER, "br0"), (MTU, "jumbo")]).contains("'jumbo' is not an MTU"));
        assert!(err(&[(MTU, "9000")]).contains("needs fastpath.io/vhost-user"));
        assert!(err(&[(INJECT, "yes")]).contains("'yes' is not \"true\""));
        assert_eq!(
            err(&[(VHOST_USER, "br0"), (VLAN, "4095")]),
            "annotation fastpath.io/vlan: '4095' is not a VLAN id (1 to 4094, e.g. \"100\")"
        );
        assert!(err(&[(VHOST_USER, "br0"), (VLAN, "0")]).contains("'0' is not a VLAN id"));
        assert!(err(&[(VHOST_USER, "br0"), (VLAN, "vlan100")]).contains("'vlan100' is not a VLAN id"));
        assert!(err(&[(VLAN, "100")]).contains("needs fastpath.io/vhost-user"));
        assert_eq!(p(&[(VHOST_USER, "br0"), (VLAN, " 100 ")]).unwrap().unwrap().vlan, Some(100));
        assert_eq!(p(&[(VHOST_USER, "br0"), (MTU, "9000")]).unwrap().unwrap().mtu, Some(9000));
    }

    #[test]
    fn of_two_wrong_annotations_the_first_checked_is_named() {
        let all_wrong = [
            (CORES, "x"),
            (HUGEPAGE_SIZE, "3Mi"),
            (HUGEPAGES, "0"),
            (VHOST_USER, ","),
            (VF, "slow"),
            (INJECT, "yes"),
            (VLAN, "x"),
        ];
        for (i, (key, _)) in all_wrong.iter().enumerate() {
            let e = err(&all_wrong[i..]);
            assert!(e.starts_with(&format!("annotation {key}:")), "{e}");
        }
    }

    #[test]
    fn environment_names() {
        assert_eq!(env_name(VHOST_USER), "FASTPATH_IO_VHOST_USER");
        assert_eq!(env_name(HUGEPAGE_SIZE), "FASTPATH_IO_HUGEPAGE_SIZE");
        let env =
            ["PATH=/bin", "FASTPATH_IO_VHOST_USER=br0", "FASTPATH_IO_HUGEPAGES=64Mi", "FASTPATH_IO_VHOST_USERX=no"]
                .map(String::from);
        let a = from_env(&env);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!((a[VHOST_USER].as_str(), a[HUGEPAGES].as_str()), ("br0", "64Mi"));
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:81:10.0"));
        assert!(!is_pci_address("0000:81:10"));
        assert!(!is_pci_address("0000-81:10.0"));
        assert!(!is_pci_address("000g:81:10.0"));
        assert!(is_pci_address("81:10.0"));
        assert!(!is_pci_address("0000:81:20.0"));
    }
}
