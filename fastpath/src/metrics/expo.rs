// Prometheus's text exposition format 0.0.4: metric families written once each (HELP and
// TYPE, then every sample of the family together), label values and help text escaped.
//! The text exposition format.

use std::fmt::Write as _;

/// The `Content-Type` of a rendering.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Only goes up (its name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Counts of observations in cumulative buckets (`_bucket{le=..}`, `_sum`, `_count`).
    Histogram,
}

impl Type {
    /// Its name on a `# TYPE` line.
    pub fn label(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A metric family: its name, type and help text.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// The name (a counter's ends in `_total`).
    pub name: &'static str,
    /// Its type.
    pub kind: Type,
    /// What it measures.
    pub help: &'static str,
}

/// Labels of one sample: name, value (names are the code's, values anything).
pub type Labels<'a> = [(&'a str, &'a str)];

/// A rendering under way: the samples of each family, kept together whatever order they
/// come in, written out by [`Exposition::finish`] in the order the families were first used.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<(&'static Family, String)>,
}

impl Exposition {
    /// An empty rendering.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sample lines of `f` (one per name: a second family of the same name is the first).
    fn body(&mut self, f: &'static Family) -> &mut String {
        let i = if let Some(i) = self.families.iter().position(|(g, _)| g.name == f.name) {
            i
        } else {
            self.families.push((f, String::new()));
            self.families.len() - 1
        };
        &mut self.families[i].1
    }

    /// One sample of the counter or gauge `f`.
    pub fn sample(&mut self, f: &'static Family, labels: &Labels<'_>, value: u64) {
        let line = sample_line(f.name, labels, None, value);
        self.body(f).push_str(&line);
    }

    /// One histogram of `f`: `buckets` are (upper bound, observations at most that), in
    /// ascending order; `+Inf` is `count`.
    pub fn histogram(&mut self, f: &'static Family, labels: &Labels<'_>, buckets: &[(u64, u64)], sum: u64, count: u64) {
        let mut lines = String::new();
        let bucket = format!("{}_bucket", f.name);
        for &(le, n) in buckets {
            lines.push_str(&sample_line(&bucket, labels, Some(&le.to_string()), n));
        }
        lines.push_str(&sample_line(&bucket, labels, Some("+Inf"), count));
        lines.push_str(&sample_line(&format!("{}_sum", f.name), labels, None, sum));
        lines.push_str(&sample_line(&format!("{}_count", f.name), labels, None, count));
        self.body(f).push_str(&lines);
    }

    /// The text: each family's `# HELP` and `# TYPE` once, then its samples.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for (f, body) in self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.label());
            out.push_str(&body);
        }
        out
    }
}

/// `name{labels,le="..."} value\n`.
fn sample_line(name: &str, labels: &Labels<'_>, le: Option<&str>, value: u64) -> String {
    let mut s = String::from(name);
    let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
    for (i, (k, v)) in all.enumerate() {
        s.push(if i == 0 { '{' } else { ',' });
        let _ = write!(s, "{k}=\"{}\"", escape_label(v));
    }
    if !labels.is_empty() || le.is_some() {
        s.push('}');
    }
    let _ = writeln!(s, " {value}");
    s
}

/// A label value as the format wants it: `\`, `"` and line feeds escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// Help text as the format wants it: `\` and line feeds escaped.
pub fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKETS: Family = Family { name: "t_packets_total", kind: Type::Counter, help: "Packets \\ seen\nby us." };
    static UP: Family = Family { name: "t_up", kind: Type::Gauge, help: "Up." };
    static SIZES: Family = Family { name: "t_size", kind: Type::Histogram, help: "Sizes." };

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
        let mut e = Exposition::new();
        e.sample(&PACKETS, &[("port", "we\"ird\\\n")], 7);
        let t = e.finish();
        assert_eq!(
            t,
            "# HELP t_packets_total Packets \\\\ seen\\nby us.\n# TYPE t_packets_total counter\n\
             t_packets_total{port=\"we\\\"ird\\\\\\n\"} 7\n"
        );
    }

    #[test]
    fn each_family_is_written_once_with_its_samples_together() {
        let mut e = Exposition::new();
        e.sample(&PACKETS, &[("port", "a")], 1);
        e.sample(&UP, &[], 1);
        e.sample(&PACKETS, &[("port", "b")], 2);
        e.histogram(&SIZES, &[("worker", "0")], &[(1, 2), (4, 3)], 9, 4);
        let t = e.finish();
        assert_eq!(t.matches("# HELP t_packets_total ").count(), 1);
        assert_eq!(t.matches("# TYPE t_packets_total counter").count(), 1);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2..4], ["t_packets_total{port=\"a\"} 1", "t_packets_total{port=\"b\"} 2"]);
        assert_eq!(lines[4..7], ["# HELP t_up Up.", "# TYPE t_up gauge", "t_up 1"]);
        assert_eq!(
            lines[7..],
            [
                "# HELP t_size Sizes.",
                "# TYPE t_size histogram",
                "t_size_bucket{worker=\"0\",le=\"1\"} 2",
                "t_size_bucket{worker=\"0\",le=\"4\"} 3",
                "t_size_bucket{worker=\"0\",le=\"+Inf\"} 4",
                "t_size_sum{worker=\"0\"} 9",
                "t_size_count{worker=\"0\"} 4",
            ]
        );
    }

    #[test]
    fn metric_names_are_checked() {
        assert!(valid_name("fastpath_port_rx_packets_total") && valid_name("a:b_1"));
        assert!(!valid_name("") && !valid_name("1a") && !valid_name("a-b") && !valid_name("a b"));
    }
}
