// A port's place in its bridge's VLANs: which VLAN each frame it sends belongs to,
// which VLANs go out of it, and how a frame's tag changes from one port to another.
//! VLAN membership.

use netlib::vhost::{TagEdit, TPID_8021Q};

use crate::config::PortConfig;

/// VLAN ids, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VlanSet([u64; 64]);

impl VlanSet {
    /// The set of `ids` (each below 4096).
    fn of(ids: &[u16]) -> Self {
        let mut s = Self([0; 64]);
        for &id in ids {
            s.0[usize::from(id >> 6) & 63] |= 1 << (id & 63);
        }
        s
    }

    #[inline]
    fn has(&self, id: u16) -> bool {
        self.0[usize::from(id >> 6) & 63] >> (id & 63) & 1 != 0
    }
}

/// Which VLANs a port is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Membership {
    /// No VLAN (VLAN 0): its frames go as they are, as on a bridge without VLANs.
    #[default]
    Untagged,
    /// An access port: its frames, untagged, belong to this VLAN.
    Access(u16),
    /// A trunk: it carries these VLANs, tagged.
    Trunk(Box<VlanSet>),
}

impl Membership {
    /// The membership `cfg` asks for (its `vlan` and `trunk`, checked by
    /// [`PortConfig::check_vlans`]).
    pub(super) fn of(cfg: &PortConfig) -> Self {
        match (cfg.vlan, &cfg.trunk) {
            (_, Some(t)) => Self::Trunk(Box::new(VlanSet::of(t))),
            (Some(v), None) if v != 0 => Self::Access(v & 0xfff),
            _ => Self::Untagged,
        }
    }

    /// Whether the port is on a VLAN (its bridge then sorts frames by VLAN).
    pub(super) fn is_vlan(&self) -> bool {
        *self != Self::Untagged
    }

    /// The VLAN a frame the port sent belongs to, from its first bytes `head` (16 of
    /// them when the frame is that long). `None`: the frame is not on the port's VLANs
    /// (untagged or a tag not carried, on a trunk; tagged, on an access port), and is
    /// dropped.
    #[inline]
    pub(super) fn ingress(&self, head: &[u8]) -> Option<u16> {
        let tag = match head.get(12..16) {
            Some(t) if t[..2] == TPID_8021Q => Some(u16::from_be_bytes([t[2], t[3]]) & 0xfff),
            _ => None,
        };
        match (self, tag) {
            (Self::Untagged, _) => Some(0),
            (Self::Access(v), None) => Some(*v),
            (Self::Trunk(set), Some(v)) if set.has(v) => Some(v),
            _ => None,
        }
    }

    /// Whether frames of VLAN `vlan` go out of the port.
    #[inline]
    pub(super) fn carries(&self, vlan: u16) -> bool {
        match self {
            Self::Untagged => vlan == 0,
            Self::Access(v) => *v == vlan,
            Self::Trunk(set) => vlan != 0 && set.has(vlan),
        }
    }

    /// How a frame's tag changes from this port to `to` (a port on the frame's VLAN):
    /// pushed from an access port to a trunk, popped from a trunk to an access port.
    #[inline]
    pub(super) fn edit_to(&self, to: &Self) -> TagEdit {
        match (self, to) {
            (Self::Access(v), Self::Trunk(_)) => TagEdit::Push(*v),
            (Self::Trunk(_), Self::Access(_) | Self::Untagged) => TagEdit::Pop,
            _ => TagEdit::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(tag: Option<u16>) -> Vec<u8> {
        let mut h = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if let Some(t) = tag {
            h.extend_from_slice(&TPID_8021Q);
            h.extend_from_slice(&t.to_be_bytes());
        } else {
            h.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        }
        h
    }

    #[test]
    fn frames_belong_to_the_vlan_their_port_and_tag_say() {
        let p = PortConfig::new("a", "br0", "/x");
        let (none, access, trunk) = (
            Membership::of(&p),
            Membership::of(&PortConfig { vlan: Some(100), ..p.clone() }),
            Membership::of(&PortConfig { trunk: Some(vec![100, 4094]), ..p.clone() }),
        );
        assert!(!none.is_vlan() && access.is_vlan() && trunk.is_vlan());
        assert_eq!((none.ingress(&head(None)), none.ingress(&head(Some(7)))), (Some(0), Some(0)));
        assert_eq!((access.ingress(&head(None)), access.ingress(&head(Some(100)))), (Some(100), None));
        assert_eq!(trunk.ingress(&head(Some(100))), Some(100));
        assert_eq!(trunk.ingress(&head(Some(0x7000 | 0xffe))), Some(4094), "the priority bits are not the VLAN");
        assert_eq!((trunk.ingress(&head(Some(200))), trunk.ingress(&head(None))), (None, None));
        assert_eq!(trunk.ingress(&head(Some(100))[..14]), None, "a runt tag is no tag");
        assert!(none.carries(0) && !none.carries(100));
        assert!(access.carries(100) && !access.carries(200) && !access.carries(0));
        assert!(trunk.carries(100) && trunk.carries(4094) && !trunk.carries(200) && !trunk.carries(0));
        assert_eq!(access.edit_to(&trunk), TagEdit::Push(100));
        assert_eq!(trunk.edit_to(&access), TagEdit::Pop);
        assert_eq!(
            (access.edit_to(&access), trunk.edit_to(&trunk), none.edit_to(&none)),
            (TagEdit::Keep, TagEdit::Keep, TagEdit::Keep)
        );
    }
}
