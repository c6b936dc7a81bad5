// The one rule the hook's gc and fastpathd at start reconcile a switch's ports with the ledger
// by: the hook's ports that no live container holds go, a live container's missing ports come back.
//! Reconciling switch ports with the ledger.

use std::collections::BTreeSet;

use super::{Entry, LedgerData, Status, PORT_PREFIX};
use crate::proto::PortConfig;

/// A port the switch holds, as reconciliation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldPort<'a> {
    /// Its name.
    pub name: &'a str,
    /// The container it says it belongs to, if the holder knows.
    pub container: Option<&'a str>,
}

impl HeldPort<'_> {
    /// Whether the port is the hook's: it names a container, or has the hook's name prefix.
    pub fn is_hooks(&self) -> bool {
        self.container.is_some() || self.name.starts_with(PORT_PREFIX)
    }
}

/// What to change on the switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ports to remove: the hook's, held by no live container.
    pub remove: Vec<String>,
    /// Ports to add: those of live, ready containers that the switch lacks.
    pub add: Vec<PortConfig>,
}

/// The changes that bring the switch's ports `held` in line with `ledger`, where `alive`
/// tells whether an entry's container still runs. A container still being created keeps its
/// ports but gets none added (its createRuntime adds them); other ports are left alone.
pub fn plan(ledger: &LedgerData, held: &[HeldPort<'_>], alive: impl Fn(&Entry) -> bool) -> Plan {
    let live: Vec<&Entry> = ledger.containers.values().filter(|e| alive(e)).collect();
    let wanted: BTreeSet<&str> = live.iter().flat_map(|e| e.ports.iter().map(|p| p.name.as_str())).collect();
    let have: BTreeSet<&str> = held.iter().map(|p| p.name).collect();
    Plan {
        remove: held.iter().filter(|p| p.is_hooks() && !wanted.contains(p.name)).map(|p| p.name.to_string()).collect(),
        add: live
            .iter()
            .filter(|e| e.status == Status::Ready)
            .flat_map(|e| e.ports.iter().filter(|p| !have.contains(p.name.as_str())).map(|p| e.port_config(p)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{HugeAlloc, PortAlloc};
    use crate::proto::{ByteSize, PortSecurity};

    fn entry(id: &str, pid: i32, status: Status) -> Entry {
        Entry {
            status,
            gid: 1001,
            hugepages: Some(HugeAlloc { bytes: 64 << 20, page_size: 2 << 20 }),
            ports: vec![PortAlloc {
                name: format!("fp-{id}-br0"),
                bridge: "br0".into(),
                socket: format!("/run/fastpath/sock/{id}/br0.sock").into(),
                mac: "02:00:00:00:00:01".into(),
                port_security: Some(PortSecurity::Mac),
                vlan: Some(100),
                mtu: None,
            }],
            ..Entry::new(id, pid, 7, 1000)
        }
    }

    fn held<'a>(name: &'a str, container: Option<&'a str>) -> HeldPort<'a> {
        HeldPort { name, container }
    }

    #[test]
    fn dead_and_unknown_containers_lose_their_ports_and_live_ones_get_theirs_back() {
        let mut l = LedgerData::empty();
        for (id, pid, status) in [("up", 1, Status::Ready), ("gone", 2, Status::Ready), ("new", 3, Status::Creating)] {
            l.containers.insert(id.into(), entry(id, pid, status));
        }
        let ports = [
            held("fp-gone-br0", Some("gone")),
            held("fp-new-br0", Some("new")),
            held("fp-stray-br0", None),
            held("byhand", Some("elsewhere")),
            held("uplink", None),
        ];
        let p = plan(&l, &ports, |e| e.pid != 2);
        assert_eq!(p.remove, ["fp-gone-br0", "fp-stray-br0", "byhand"]);
        let want = PortConfig {
            uid: Some(1000),
            gid: Some(1001),
            container: Some("up".into()),
            mac: Some("02:00:00:00:00:01".into()),
            port_security: Some(PortSecurity::Mac),
            vlan: Some(100),
            max_memory: Some(ByteSize((64 << 20) + (64 << 20))),
            ..PortConfig::new("fp-up-br0", "br0", "/run/fastpath/sock/up/br0.sock")
        };
        assert_eq!(p.add, [want]);
        // Everything in place: nothing to do.
        let all = [held("fp-up-br0", Some("up")), held("fp-new-br0", Some("new")), held("uplink", None)];
        assert_eq!(plan(&l, &all, |e| e.pid != 2), Plan::default());
    }
}
