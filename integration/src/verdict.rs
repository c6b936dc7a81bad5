// Checking results: the JSON result lines of our binaries (`last_json_line`, `field`),
// the sink's result (`check_sink`), and `Verdict`, which collects a run's problems and
// fails with all of them and every process's output.

use std::fmt::Write as _;

use serde_json::Value;

use crate::{dump, machine_note, Proc};

/// The last line of `s` that parses as a JSON object.
pub fn last_json_line(s: &str) -> Option<Value> {
    s.lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(Value::is_object))
}

/// A `u64` field of a JSON object (missing or not a number: `None`).
pub fn field(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Checks the sink's result: every one of `n` frames arrived intact and in order
/// (received == n, bad == 0, lost == 0, reordered == 0, next_seq == n).
pub fn check_sink(sink: Option<&Value>, n: u64) -> Result<(), String> {
    let Some(v) = sink else {
        return Err(format!(
            "sink: expected a JSON result with received={n} bad=0 lost=0 reordered=0 next_seq={n}; got no JSON line on its stdout"
        ));
    };
    let f = |k| field(v, k).map_or_else(|| "?".to_string(), |x| x.to_string());
    let ok = field(v, "received") == Some(n)
        && field(v, "bad") == Some(0)
        && field(v, "lost") == Some(0)
        && field(v, "reordered") == Some(0)
        && field(v, "next_seq") == Some(n);
    if ok {
        return Ok(());
    }
    Err(format!(
        "sink: expected every frame intact and in order: received={n} bad=0 lost=0 reordered=0 next_seq={n}; \
         got received={} bad={} foreign={} lost={} reordered={} next_seq={}",
        f("received"),
        f("bad"),
        f("foreign"),
        f("lost"),
        f("reordered"),
        f("next_seq")
    ))
}

/// Checks the sink's result when frames took several queues: every one of `n` frames
/// arrived intact (received == n, bad == 0), and each flow in order (flow_reordered == 0;
/// frames of different flows may interleave).
pub fn check_sink_per_flow(sink: Option<&Value>, n: u64) -> Result<(), String> {
    let Some(v) = sink else {
        return Err(format!("sink: expected a JSON result with received={n} bad=0 flow_reordered=0; got no JSON line"));
    };
    let f = |k| field(v, k).map_or_else(|| "?".to_string(), |x| x.to_string());
    if field(v, "received") == Some(n) && field(v, "bad") == Some(0) && field(v, "flow_reordered") == Some(0) {
        return Ok(());
    }
    Err(format!(
        "sink: expected every frame intact and each flow in order: received={n} bad=0 flow_reordered=0; got \
         received={} bad={} foreign={} flows={} flow_reordered={} (reordered across flows: {})",
        f("received"),
        f("bad"),
        f("foreign"),
        f("flows"),
        f("flow_reordered"),
        f("reordered")
    ))
}

/// Collects the problems of a run, then fails with all of them and every process's output.
#[derive(Debug)]
pub struct Verdict {
    test: String,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl Verdict {
    /// An empty verdict for `test`.
    pub fn new(test: &str) -> Self {
        Self { test: test.to_owned(), problems: Vec::new(), notes: Vec::new() }
    }

    /// Records a problem unless `ok`.
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }

    /// Records the error of `r`, if any.
    pub fn check_result(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.problems.push(e);
        }
    }

    /// Records a problem.
    pub fn fail(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// Context printed with the problems (e.g. counters).
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Whether there is no problem so far.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Panics with every problem, note and process output if there was a problem.
    pub fn finish(self, procs: &mut [&mut Proc]) {
        if self.problems.is_empty() {
            return;
        }
        let mut s = format!("{} FAILED:\n", self.test);
        for p in &self.problems {
            let _ = writeln!(s, "  * {p}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "  {n}");
        }
        let _ = writeln!(s, "  {}", machine_note());
        s.push_str(&dump(procs));
        panic!("{s}");
    }

    /// Fails now (setup went wrong) with the problem and every process's output.
    pub fn abort(mut self, problem: impl Into<String>, procs: &mut [&mut Proc]) -> ! {
        self.problems.push(problem.into());
        self.finish(procs);
        unreachable!("finish panics when there are problems")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_last_json_and_checks_sink() {
        let out = "noise\n{\"event\":\"first_packet\"}\n{\"role\":\"sink\",\"received\":5,\"bad\":0,\"foreign\":0,\"lost\":0,\"reordered\":0,\"next_seq\":5}\n";
        let j = last_json_line(out).unwrap();
        assert!(check_sink(Some(&j), 5).is_ok());
        let e = check_sink(Some(&j), 6).unwrap_err();
        assert!(e.contains("received=6") && e.contains("got received=5"), "{e}");
        assert!(check_sink(None, 5).is_err());
    }
}
