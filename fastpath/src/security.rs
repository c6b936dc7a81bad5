// Port security: a port may only send as itself. The MAC (and optionally the IPv4
// address) the hook assigned is checked on every frame the port sends; frames that
// claim another's are dropped and counted, never learned.
//! Port security.

use std::net::Ipv4Addr;

use crate::mactable::Mac;

pub use fastpath_host::proto::PortSecurity;

/// A port's identity as the switch enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guard {
    /// The port's MAC, when frames are checked against it.
    pub mac: Option<Mac>,
    /// The port's IPv4 address, when ARP and IPv4 are checked against it.
    pub ip: Option<Ipv4Addr>,
}

/// Bytes of a frame the guard reads: Ethernet, and ARP's sender or IPv4's source.
pub const GUARD_BYTES: usize = 32;

const ETH_ARP: [u8; 2] = [0x08, 0x06];
const ETH_IPV4: [u8; 2] = [0x08, 0x00];

impl Guard {
    /// The guard for `mode` with the port's `mac` and `ip`; `Err` names what is missing.
    pub fn new(mode: PortSecurity, mac: Option<Mac>, ip: Option<Ipv4Addr>) -> Result<Self, String> {
        match (mode, mac, ip) {
            (PortSecurity::Off, ..) => Ok(Self::default()),
            (PortSecurity::Mac, Some(m), _) => Ok(Self { mac: Some(m), ip: None }),
            (PortSecurity::MacIp, Some(m), Some(i)) => Ok(Self { mac: Some(m), ip: Some(i) }),
            (PortSecurity::Mac | PortSecurity::MacIp, None, _) => {
                Err(format!("port_security = \"{}\" needs the port's mac", mode.label()))
            }
            (PortSecurity::MacIp, Some(_), None) => Err("port_security = \"mac+ip\" needs the port's ip".into()),
        }
    }

    /// Whether the guard checks anything.
    #[inline]
    pub fn is_off(&self) -> bool {
        self.mac.is_none()
    }

    /// Whether the IPv4 checks need the bytes past the Ethernet header.
    #[inline]
    pub fn reads_ip(&self) -> bool {
        self.ip.is_some()
    }

    /// Whether a frame whose first bytes are `head` (at least the 12 address bytes;
    /// [`GUARD_BYTES`] when [`Self::reads_ip`]) may come from this port.
    #[inline]
    pub fn allows(&self, head: &[u8]) -> bool {
        let Some(mac) = self.mac else { return true };
        if head.get(6..12) != Some(&mac[..]) {
            return false;
        }
        let Some(ip) = self.ip else { return true };
        let ip = ip.octets();
        match head.get(12..14) {
            // ARP: the sender's hardware and protocol addresses.
            Some(t) if t == ETH_ARP => head.get(22..28) == Some(&mac[..]) && head.get(28..32) == Some(&ip[..]),
            // IPv4: the source address (0.0.0.0 for DHCP before it has one).
            Some(t) if t == ETH_IPV4 => matches!(head.get(26..30), Some(s) if s == ip || s == [0; 4]),
            _ => true,
        }
    }
}

/// Parses a MAC written `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let bad = || format!("mac '{s}' is not six hex bytes separated by colons (aa:bb:cc:dd:ee:ff)");
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// The guard of port `p`: its own `port_security`, else `default`, with its MAC and IP.
pub fn guard_for(p: &crate::config::PortConfig, default: PortSecurity) -> Result<Guard, String> {
    let mac = p.mac.as_deref().map(parse_mac).transpose()?;
    Guard::new(p.port_security.unwrap_or(default), mac, p.ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Mac = [2, 0, 0, 0, 0, 1];
    const OTHER: Mac = [2, 0, 0, 0, 0, 2];

    fn eth(src: Mac, ethertype: [u8; 2], rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(rest);
        f.resize(GUARD_BYTES.max(f.len()), 0);
        f
    }

    fn arp(sha: Mac, spa: [u8; 4]) -> Vec<u8> {
        let mut body = vec![0, 1, 8, 0, 6, 4, 0, 1];
        body.extend_from_slice(&sha);
        body.extend_from_slice(&spa);
        eth(sha, ETH_ARP, &body)
    }

    fn ipv4(src: Mac, sip: [u8; 4]) -> Vec<u8> {
        let mut body = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        body.extend_from_slice(&sip);
        eth(src, ETH_IPV4, &body)
    }

    #[test]
    fn mac_mode_checks_the_source_mac_only() {
        let g = Guard::new(PortSecurity::Mac, Some(ME), None).unwrap();
        assert!(g.allows(&eth(ME, [0x88, 0xb5], &[])));
        assert!(!g.allows(&eth(OTHER, [0x88, 0xb5], &[])));
        assert!(g.allows(&ipv4(ME, [9, 9, 9, 9])), "no IP check in mac mode");
        assert!(!g.reads_ip());
    }

    #[test]
    fn mac_ip_mode_checks_arp_and_ipv4_senders() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let g = Guard::new(PortSecurity::MacIp, Some(ME), Some(ip)).unwrap();
        assert!(g.allows(&arp(ME, ip.octets())));
        assert!(!g.allows(&arp(ME, [10, 0, 0, 2])), "ARP claiming another IP");
        let mut lie = arp(ME, ip.octets());
        lie[22..28].copy_from_slice(&OTHER);
        assert!(!g.allows(&lie), "ARP claiming another MAC inside");
        assert!(g.allows(&ipv4(ME, ip.octets())));
        assert!(g.allows(&ipv4(ME, [0; 4])), "DHCP before an address");
        assert!(!g.allows(&ipv4(ME, [10, 0, 0, 2])));
        assert!(!g.allows(&ipv4(OTHER, ip.octets())));
        assert!(g.allows(&eth(ME, [0x86, 0xdd], &[])), "IPv6 is not checked");
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01").unwrap(), [2, 0, 0x0a, 0xff, 0, 1]);
        for bad in ["02:00:0a:ff:00", "02:00:0a:ff:00:01:02", "2:0:a:ff:0:1", "zz:00:0a:ff:00:01", ""] {
            assert!(parse_mac(bad).unwrap_err().contains(&format!("'{bad}'")), "{bad}");
        }
    }

    #[test]
    fn modes_need_their_addresses() {
        assert!(Guard::new(PortSecurity::Mac, None, None).unwrap_err().contains("needs the port's mac"));
        assert!(Guard::new(PortSecurity::MacIp, Some(ME), None).unwrap_err().contains("ip"));
        assert!(Guard::new(PortSecurity::Off, None, None).unwrap().is_off());
    }
}
