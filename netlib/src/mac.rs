// Ethernet MAC addresses as apps and the hook's config.json write them (aa:bb:cc:dd:ee:ff):
// parsing with an error that names the text, and the checks a source address must pass.
//! MAC addresses.

/// A MAC address.
pub type Mac = [u8; 6];

/// Why a text is not a MAC address (the message names the text and what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMac(String);

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<Mac, BadMac> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(BadMac(format!("MAC '{s}' must have 6 parts like 02:00:00:00:00:01")));
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(&parts) {
        let hex = (1..=2).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_hexdigit());
        *b = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| hex)
            .ok_or_else(|| BadMac(format!("MAC '{s}': '{p}' is not a hex byte")))?;
    }
    Ok(m)
}

/// Parses a MAC a port sends with: like [`parse_mac`], and unicast (a multicast source
/// address is not a station's).
pub fn parse_source_mac(s: &str) -> Result<Mac, BadMac> {
    let m = parse_mac(s)?;
    if m[0] & 1 != 0 {
        return Err(BadMac(format!(
            "MAC '{s}' is a multicast address; a source MAC must be unicast, like 02:00:00:00:00:01"
        )));
    }
    Ok(m)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_what_is_wrong() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert_eq!(parse_mac("02:AB:00:00:00:0a").unwrap(), [2, 0xab, 0, 0, 0, 10]);
        assert!(parse_mac("02:00").unwrap_err().to_string().contains("6 parts"));
        let e = parse_mac("zz:00:00:00:00:00").unwrap_err().to_string();
        assert!(e.contains("'zz' is not a hex byte"), "{e}");
        assert!(parse_mac("02:00:00:00:00:").is_err());
        assert!(parse_mac("02:00:00:00:00:+1").is_err());
        assert!(parse_mac("02:00:00:00:00:001").is_err());
    }

    #[test]
    fn a_source_mac_is_unicast_and_prints_back() {
        let m = parse_source_mac("02:1a:2b:3c:4d:5e").unwrap();
        assert_eq!(format_mac(&m), "02:1a:2b:3c:4d:5e");
        let e = parse_source_mac("01:00:5e:00:00:01").unwrap_err().to_string();
        assert!(e.contains("multicast") && e.contains("01:00:5e:00:00:01"), "{e}");
    }
}
