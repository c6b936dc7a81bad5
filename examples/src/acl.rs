// The firewall's logic: a stateless ACL parsed from a rules file, matched first-match-wins
// against each frame's 5-tuple, with packet and byte counters per rule.
//! Stateless ACL.
//!
//! Rules file, one rule a line, `#` starts a comment:
//!
//! ```text
//! allow udp 10.0.0.0/8 any -> 192.168.1.0/24 53
//! deny  tcp any any -> any 22
//! allow any 10.1.2.3 1024-65535 -> any any
//! default deny
//! ```
//!
//! `ACTION PROTO SRC SPORT -> DST DPORT`: ACTION is `allow` or `deny`; PROTO is
//! `tcp`, `udp`, `icmp`, `any` or a protocol number; SRC and DST are `any`, an
//! address or a CIDR prefix; SPORT and DPORT are `any`, a port or a range
//! `LO-HI`. A rule that names a port matches only TCP/UDP packets whose ports
//! can be read. `default allow|deny` sets what happens to packets no rule
//! matches (default: deny); frames that are not IPv4 get the default action.

use std::fmt;

use crate::flow::{parse, FiveTuple, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the frame.
    Allow,
    /// Drop the frame.
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

/// An address prefix (`any` is `/0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    addr: u32,
    mask: u32,
}

impl Prefix {
    #[inline]
    fn matches(self, a: u32) -> bool {
        a & self.mask == self.addr
    }

    fn parse(s: &str) -> Result<Self, String> {
        if s == "any" {
            return Ok(Self { addr: 0, mask: 0 });
        }
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => {
                let len: u32 = l
                    .parse()
                    .ok()
                    .filter(|l| *l <= 32)
                    .ok_or_else(|| format!("'{s}': prefix length '{l}' is not 0..=32"))?;
                (a, len)
            }
            None => (s, 32),
        };
        let addr = crate::flow::parse_ip(a)?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        if addr & !mask != 0 {
            return Err(format!(
                "'{s}' has bits set past /{len} (did you mean {}/{len}?)",
                std::net::Ipv4Addr::from(addr & mask)
            ));
        }
        Ok(Self { addr, mask })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask == 0 {
            return f.write_str("any");
        }
        write!(f, "{}", std::net::Ipv4Addr::from(self.addr))?;
        if self.mask != u32::MAX {
            write!(f, "/{}", self.mask.count_ones())?;
        }
        Ok(())
    }
}

/// A port range (`any` is `0-65535` and also matches packets without ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    lo: u16,
    hi: u16,
}

impl Ports {
    const ANY: Ports = Ports { lo: 0, hi: u16::MAX };

    fn is_any(self) -> bool {
        self == Self::ANY
    }

    fn parse(s: &str) -> Result<Self, String> {
        if s == "any" {
            return Ok(Self::ANY);
        }
        let port = |p: &str| p.parse::<u16>().map_err(|_| format!("'{p}' is not a port (0..=65535 or any)"));
        let (lo, hi) = if let Some((a, b)) = s.split_once('-') {
            (port(a)?, port(b)?)
        } else {
            let p = port(s)?;
            (p, p)
        };
        if lo > hi {
            return Err(format!("port range '{s}' is backwards (try {hi}-{lo})"));
        }
        Ok(Self { lo, hi })
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("any")
        } else if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What a match does.
    pub verdict: Verdict,
    /// IP protocol, `None` for any.
    pub proto: Option<u8>,
    /// Source prefix.
    pub src: Prefix,
    /// Source ports.
    pub sport: Ports,
    /// Destination prefix.
    pub dst: Prefix,
    /// Destination ports.
    pub dport: Ports,
    /// Line of the rules file it came from.
    pub line: usize,
}

impl Rule {
    /// Whether the rule matches a packet; `has_ports`: the tuple's ports were read.
    #[inline]
    pub fn matches(&self, t: &FiveTuple, has_ports: bool) -> bool {
        if self.proto.is_some_and(|p| p != t.proto) || !self.src.matches(t.src) || !self.dst.matches(t.dst) {
            return false;
        }
        if self.sport.is_any() && self.dport.is_any() {
            return true;
        }
        has_ports
            && (self.sport.lo..=self.sport.hi).contains(&t.sport)
            && (self.dport.lo..=self.dport.hi).contains(&t.dport)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            None => "any".to_string(),
            Some(PROTO_TCP) => "tcp".into(),
            Some(PROTO_UDP) => "udp".into(),
            Some(PROTO_ICMP) => "icmp".into(),
            Some(n) => n.to_string(),
        };
        write!(f, "{} {proto} {} {} -> {} {}", self.verdict, self.src, self.sport, self.dst, self.dport)
    }
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A rule set with its counters.
#[derive(Debug, Clone)]
pub struct Acl {
    rules: Vec<Rule>,
    default: Verdict,
    /// Matches of each rule, in rule order.
    pub hits: Vec<Count>,
    /// IPv4 packets no rule matched.
    pub default_hits: Count,
    /// Frames that were not IPv4 (they get the default action).
    pub not_ipv4: Count,
}

impl Acl {
    /// Parses a rules file's text; `what` names it in errors ("rules.txt line 3: ...").
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut default = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |e: String| format!("{what} line {line}: {e}");
            let words: Vec<&str> = raw.split('#').next().unwrap_or("").split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["default", v] => {
                    if default.is_some() {
                        return Err(err("a second 'default' line (give it once)".into()));
                    }
                    default = Some(verdict(v).map_err(err)?);
                }
                ["default", ..] => return Err(err("expected 'default allow' or 'default deny'".into())),
                [v, proto, src, sport, "->", dst, dport] => rules.push(Rule {
                    verdict: verdict(v).map_err(err)?,
                    proto: protocol(proto).map_err(err)?,
                    src: Prefix::parse(src).map_err(|e| err(format!("source {e}")))?,
                    sport: Ports::parse(sport).map_err(|e| err(format!("source port {e}")))?,
                    dst: Prefix::parse(dst).map_err(|e| err(format!("destination {e}")))?,
                    dport: Ports::parse(dport).map_err(|e| err(format!("destination port {e}")))?,
                    line,
                }),
                [first, ..] => {
                    verdict(first).map_err(err)?;
                    return Err(err(format!(
                        "'{}' is not 'ACTION PROTO SRC SPORT -> DST DPORT' (e.g. allow udp 10.0.0.0/8 any -> any 53)",
                        raw.trim()
                    )));
                }
            }
        }
        let n = rules.len();
        Ok(Self {
            rules,
            default: default.unwrap_or(Verdict::Deny),
            hits: vec![Count::default(); n],
            default_hits: Count::default(),
            not_ipv4: Count::default(),
        })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What packets no rule matches get.
    pub fn default_verdict(&self) -> Verdict {
        self.default
    }

    /// Index of the first rule matching `t`, if any (no counting).
    #[inline]
    pub fn lookup(&self, t: &FiveTuple, has_ports: bool) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(t, has_ports))
    }

    /// Decides one frame and counts it.
    #[inline]
    pub fn check(&mut self, f: &[u8]) -> Verdict {
        let bytes = f.len() as u64;
        let Some(p) = parse(f) else {
            self.not_ipv4.packets += 1;
            self.not_ipv4.bytes += bytes;
            return self.default;
        };
        if let Some(i) = self.lookup(&p.tuple, p.l4.is_some()) {
            self.hits[i].packets += 1;
            self.hits[i].bytes += bytes;
            self.rules[i].verdict
        } else {
            self.default_hits.packets += 1;
            self.default_hits.bytes += bytes;
            self.default
        }
    }

    /// The counters as text, one line per rule, then the default and non-IPv4 lines.
    pub fn report(&self) -> String {
        use fmt::Write as _;
        let mut s = String::new();
        for (i, (r, c)) in self.rules.iter().zip(&self.hits).enumerate() {
            let _ = writeln!(
                s,
                "rule {:>3} (line {:>3}) {:<48} {:>12} packets {:>14} bytes",
                i + 1,
                r.line,
                r.to_string(),
                c.packets,
                c.bytes
            );
        }
        let _ = writeln!(
            s,
            "default {:<5} {:>68} packets {:>14} bytes",
            self.default.to_string(),
            self.default_hits.packets,
            self.default_hits.bytes
        );
        let _ = writeln!(
            s,
            "not IPv4 ({}) {:>66} packets {:>14} bytes",
            self.default, self.not_ipv4.packets, self.not_ipv4.bytes
        );
        s
    }

    /// The counters as JSON: `{"rules":[{"line","rule","packets","bytes"}...],"default":{...},"not_ipv4":{...}}`.
    pub fn json(&self) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = self
            .rules
            .iter()
            .zip(&self.hits)
            .map(|(r, c)| serde_json::json!({"line":r.line,"rule":r.to_string(),"packets":c.packets,"bytes":c.bytes}))
            .collect();
        serde_json::json!({
            "rules": rules,
            "default": {"action": self.default.to_string(), "packets": self.default_hits.packets, "bytes": self.default_hits.bytes},
            "not_ipv4": {"packets": self.not_ipv4.packets, "bytes": self.not_ipv4.bytes},
        })
    }
}

fn verdict(s: &str) -> Result<Verdict, String> {
    match s {
        "allow" => Ok(Verdict::Allow),
        "deny" => Ok(Verdict::Deny),
        _ => Err(format!("'{s}' is not allow or deny")),
    }
}

fn protocol(s: &str) -> Result<Option<u8>, String> {
    Ok(match s {
        "any" => None,
        "tcp" => Some(PROTO_TCP),
        "udp" => Some(PROTO_UDP),
        "icmp" => Some(PROTO_ICMP),
        n => Some(n.parse::<u8>().map_err(|_| format!("protocol '{n}' is not tcp, udp, icmp, any or 0..=255"))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{build, parse_ip, FrameSpec};

    const RULES: &str = "\
# test rules
allow udp 10.0.0.0/8 any -> 192.168.1.0/24 53
deny tcp any any -> any 22   # no ssh
allow tcp 172.16.0.0/12 1024-65535 -> any 80-443
deny icmp 10.9.9.9 any -> any any
allow any 10.9.0.0/16 any -> any any
default deny
";

    fn t(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> FiveTuple {
        FiveTuple { src: parse_ip(src).unwrap(), dst: parse_ip(dst).unwrap(), sport, dport, proto }
    }

    fn frame(tu: FiveTuple) -> Vec<u8> {
        let mut f = vec![0u8; 80];
        let s = FrameSpec { dst_mac: [2, 0, 0, 0, 0, 2], src_mac: [2, 0, 0, 0, 0, 1], tuple: tu, len: 80 };
        build(&mut f, &s, b"").unwrap();
        f
    }

    #[test]
    fn first_match_wins_with_counters() {
        let mut acl = Acl::parse(RULES, "rules.txt").unwrap();
        assert_eq!(acl.rules().len(), 5);
        let cases = [
            (t(PROTO_UDP, "10.1.2.3", 5555, "192.168.1.7", 53), Verdict::Allow, Some(0)),
            (t(PROTO_UDP, "10.1.2.3", 5555, "192.168.2.7", 53), Verdict::Deny, None),
            (t(PROTO_UDP, "10.1.2.3", 5555, "192.168.1.7", 54), Verdict::Deny, None),
            (t(PROTO_TCP, "10.9.1.1", 5555, "1.2.3.4", 22), Verdict::Deny, Some(1)),
            (t(PROTO_TCP, "172.20.0.1", 1024, "1.2.3.4", 443), Verdict::Allow, Some(2)),
            (t(PROTO_TCP, "172.20.0.1", 1023, "1.2.3.4", 443), Verdict::Deny, None),
            (t(PROTO_TCP, "172.32.0.1", 2000, "1.2.3.4", 80), Verdict::Deny, None),
            (t(PROTO_TCP, "10.9.1.1", 5555, "1.2.3.4", 23), Verdict::Allow, Some(4)),
        ];
        for (tu, want, rule) in cases {
            let f = frame(tu);
            assert_eq!(acl.check(&f), want, "{tu}");
            assert_eq!(acl.lookup(&tu, true), rule, "{tu}");
        }
        assert_eq!(acl.hits[0], Count { packets: 1, bytes: 80 });
        assert_eq!(acl.hits[1].packets, 1);
        assert_eq!(acl.hits[2].packets, 1);
        assert_eq!(acl.hits[4].packets, 1);
        assert_eq!(acl.default_hits.packets, 4);
        let j = acl.json();
        assert_eq!(j["rules"][0]["line"], 2);
        assert_eq!(j["default"]["packets"], 4);
        assert!(acl.report().contains("allow udp 10.0.0.0/8 any -> 192.168.1.0/24 53"));
    }

    #[test]
    fn port_rules_do_not_match_portless_packets() {
        let acl =
            Acl::parse("allow any any any -> any 53\nallow icmp 10.9.9.9 any -> any any\ndefault deny", "r").unwrap();
        let icmp = t(PROTO_ICMP, "10.9.9.9", 0, "1.1.1.1", 0);
        assert_eq!(acl.lookup(&icmp, false), Some(1));
        let frag = t(PROTO_UDP, "10.0.0.1", 0, "1.1.1.1", 0);
        assert_eq!(acl.lookup(&frag, false), None);
        assert_eq!(acl.lookup(&t(PROTO_UDP, "10.0.0.1", 9, "1.1.1.1", 53), true), Some(0));
    }

    #[test]
    fn icmp_and_non_ipv4_frames() {
        let mut acl = Acl::parse(RULES, "rules.txt").unwrap();
        // An ICMP frame built by hand: the builder only does TCP/UDP.
        let mut f = frame(t(PROTO_UDP, "10.9.9.9", 1, "1.1.1.1", 1));
        f[14 + 9] = PROTO_ICMP;
        assert_eq!(acl.check(&f), Verdict::Deny);
        assert_eq!(acl.hits[3].packets, 1);
        let mut arp = vec![0xffu8; 60];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(acl.check(&arp), Verdict::Deny);
        assert_eq!(acl.not_ipv4.packets, 1);
        let mut open = Acl::parse("default allow", "r").unwrap();
        assert_eq!(open.check(&arp), Verdict::Allow);
        assert_eq!(open.default_verdict(), Verdict::Allow);
    }

    #[test]
    fn errors_name_the_line_and_the_value() {
        let cases = [
            ("allw udp any any -> any 53", "rules.txt line 1: 'allw' is not allow or deny"),
            ("\n\nallow udpp any any -> any 53", "rules.txt line 3: protocol 'udpp' is not"),
            (
                "allow udp 10.0.0.1/8 any -> any 53",
                "line 1: source '10.0.0.1/8' has bits set past /8 (did you mean 10.0.0.0/8?)",
            ),
            ("allow udp 10.0.0.0/33 any -> any 53", "prefix length '33' is not 0..=32"),
            ("allow udp any any -> 300.1.1.1 53", "line 1: destination '300.1.1.1' is not an IPv4 address"),
            ("allow udp any 70000 -> any 53", "line 1: source port '70000' is not a port"),
            ("allow udp any any -> any 90-80", "line 1: destination port port range '90-80' is backwards"),
            ("allow udp any any any 53", "line 1: 'allow udp any any any 53' is not 'ACTION PROTO"),
            ("default maybe", "line 1: 'maybe' is not allow or deny"),
            ("default deny\ndefault allow", "line 2: a second 'default' line"),
            ("default", "line 1: expected 'default allow' or 'default deny'"),
        ];
        for (text, want) in cases {
            let e = Acl::parse(text, "rules.txt").unwrap_err();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
        assert_eq!(Acl::parse("", "r").unwrap().default_verdict(), Verdict::Deny);
    }
}
