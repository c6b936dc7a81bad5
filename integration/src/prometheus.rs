// fastpathd's metrics endpoint and a real Prometheus scraping it: the address fastpathd says
// it serves on, a plain HTTP GET, Debian's prometheus started on a free port with a generated
// scrape config and its own storage, and its query API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::{find_in_path, wait_until, Proc, TestDir};

/// What fastpathd logs when its metrics server is up (then the URL).
pub const METRICS_LOG: &str = "metrics on http://";

/// The address fastpathd (started with `--metrics ADDR:0`) serves its metrics on, from its
/// log; waits up to `t` for the line.
pub fn metrics_addr(fpd: &mut Proc, t: Duration) -> Result<SocketAddr, String> {
    if !fpd.wait_for_stderr(METRICS_LOG, t) {
        return Err(format!("fastpathd: expected '{METRICS_LOG}...' within {t:?}:\n{}", fpd.describe(20, 0)));
    }
    let log = fpd.stderr();
    let url = log.split(METRICS_LOG).nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default();
    let addr = url.split('/').next().unwrap_or_default();
    addr.parse().map_err(|e| format!("fastpathd: metrics address '{addr}' in '{url}': {e}"))
}

/// A free TCP port on 127.0.0.1 (bound and let go: free unless someone takes it first).
pub fn free_tcp_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// `GET path` on `addr` (HTTP/1.0, so the server closes the connection after the answer):
/// the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str, t: Duration) -> Result<(u16, String), String> {
    let what = format!("GET http://{addr}{path}");
    let mut c = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("{what}: {e}"))?;
    c.set_read_timeout(Some(t)).and_then(|()| c.set_write_timeout(Some(t))).map_err(|e| format!("{what}: {e}"))?;
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("{what}: {e}"))?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).map_err(|e| format!("{what}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{what}: no HTTP answer: {text}"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    code.map(|c| (c, body.to_string())).ok_or_else(|| format!("{what}: bad status line in {head}"))
}

/// fastpathd's metrics at `addr` (a 200 answer's body).
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    match http_get(addr, "/metrics", Duration::from_secs(5))? {
        (200, body) => Ok(body),
        (code, body) => Err(format!("GET /metrics on {addr}: {code}: {body}")),
    }
}

/// `s` percent-encoded for a URL's query (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The Prometheus scrape config for one fastpathd at `target`: every second, job `fastpath`.
pub fn scrape_config(target: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fastpath\n    \
         scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
    )
}

/// A Prometheus server of the test's own: its config and storage in the test directory,
/// listening on a free port of 127.0.0.1 (killed with the test).
#[derive(Debug)]
pub struct Prometheus {
    /// The server.
    pub proc: Proc,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
}

/// Where Debian's `prometheus` is, or why it is not there.
pub fn find_prometheus() -> Result<PathBuf, String> {
    find_in_path("prometheus").ok_or_else(|| {
        "prometheus not found in PATH (cargo xtask setup installs it: apt-get install prometheus)".to_string()
    })
}

impl Prometheus {
    /// Starts `prometheus` scraping fastpathd's metrics at `target`; waits until it is ready.
    pub fn start(dir: &TestDir, target: SocketAddr) -> Result<Self, String> {
        let bin = find_prometheus()?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(target)).map_err(|e| format!("{}: {e}", config.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()?).parse().map_err(|e| format!("{e}"))?;
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()),
            format!("--web.listen-address={addr}"),
            "--log.level=warn".to_string(),
        ];
        let mut proc = Proc::spawn("prometheus", dir, &bin, &args, &[]);
        let ready = wait_until(Duration::from_secs(30), || {
            proc.try_status().is_none()
                && http_get(addr, "/-/ready", Duration::from_secs(2)).is_ok_and(|(c, _)| c == 200)
        });
        if !ready {
            return Err(format!("prometheus: not ready on {addr} within 30 s:\n{}", proc.describe(30, 0)));
        }
        Ok(Self { proc, addr })
    }

    /// The result of the instant query `q` (`data.result`: one object per series, with
    /// `metric` (its labels) and `value` ([time, "value"])).
    pub fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(q));
        let (code, body) = http_get(self.addr, &path, Duration::from_secs(5))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("query {q}: {code}: not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!("query {q}: {code}: {body}"));
        }
        v["data"]["result"].as_array().cloned().ok_or_else(|| format!("query {q}: no data.result in {body}"))
    }

    /// The value of the one series `q` returns, as a whole number (`None`: no series, or not one).
    pub fn value(&self, q: &str) -> Result<Option<u64>, String> {
        let r = self.query(q)?;
        match r.as_slice() {
            [] => Ok(None),
            [one] => one["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|f| Some(f as u64))
                .ok_or_else(|| format!("query {q}: no value in {one}")),
            more => Err(format!("query {q}: expected one series, got {}: {more:?}", more.len())),
        }
    }

    /// Waits up to `t` until `q` has the value `want`; the last value seen on failure.
    pub fn wait_value(&self, q: &str, want: u64, t: Duration) -> Result<(), String> {
        let mut last = Ok(None);
        if wait_until(t, || {
            last = self.value(q);
            matches!(last, Ok(Some(v)) if v == want)
        }) {
            return Ok(());
        }
        Err(format!("prometheus: expected {q} = {want} within {t:?}; last: {last:?}; targets: {}", self.targets()))
    }

    /// The scrape targets' state, for failure messages.
    pub fn targets(&self) -> String {
        match http_get(self.addr, "/api/v1/targets", Duration::from_secs(5)) {
            Ok((_, body)) => body,
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded_and_the_config_names_the_target() {
        assert_eq!(url_encode("a_b{port=\"p 1\"}"), "a_b%7Bport%3D%22p%201%22%7D");
        let c = scrape_config("127.0.0.1:9469".parse().unwrap());
        assert!(c.contains("scrape_interval: 1s") && c.contains("targets: ['127.0.0.1:9469']"), "{c}");
    }
}
