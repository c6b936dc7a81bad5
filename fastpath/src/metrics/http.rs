// The metrics server: a plain TcpListener and a tiny HTTP/1.1 handler, one connection at a
// time, each bounded in time and size: GET /metrics renders, other paths are 404.
//! The metrics HTTP server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::expo::CONTENT_TYPE;

/// The path metrics are served on.
pub const PATH: &str = "/metrics";
/// The largest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request or read the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status line, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Its reason phrase.
    pub reason: &'static str,
    /// The body's type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Answer {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Self { status, reason, content_type: "text/plain; charset=utf-8", body: body.into() }
    }

    /// The whole response, closing the connection.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// The answer to the request head `head` (its bytes up to the blank line, or all that came
/// if it was cut short); `metrics` renders the metrics, `None` when the switch did not answer.
pub fn answer(head: &[u8], metrics: impl FnOnce() -> Option<String>) -> Answer {
    let Some(line) = head.split(|&b| b == b'\n').next().and_then(|l| std::str::from_utf8(l).ok()) else {
        return Answer::text(400, "Bad Request", "bad request line\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Answer::text(400, "Bad Request", "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Answer::text(505, "HTTP Version Not Supported", "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != PATH {
        return Answer::text(404, "Not Found", format!("not found: metrics are on {PATH}\n"));
    }
    if method != "GET" {
        return Answer::text(405, "Method Not Allowed", "GET only\n");
    }
    match metrics() {
        Some(body) => Answer { status: 200, reason: "OK", content_type: CONTENT_TYPE, body },
        None => Answer::text(503, "Service Unavailable", "the switch worker did not answer\n"),
    }
}

/// Reads a request head: up to the blank line that ends it, at most [`MAX_REQUEST`] bytes.
/// `Err` with the answer when it is too long.
fn read_head(conn: &mut TcpStream) -> std::io::Result<Result<Vec<u8>, Answer>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return Ok(Err(Answer::text(431, "Request Header Fields Too Large", "request too large\n")));
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Ok(head))
}

/// Serves one connection: reads its request within [`TIMEOUT`], answers, closes.
pub fn serve_one(mut conn: TcpStream, metrics: impl FnOnce() -> Option<String>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    let a = match read_head(&mut conn)? {
        Ok(head) => answer(&head, metrics),
        Err(a) => a,
    };
    conn.write_all(&a.to_bytes())?;
    conn.flush()
}

/// Serves connections one after another, for good: a client that stalls is cut off by the
/// timeouts, and the worker is never waited on longer than `metrics` waits for it.
pub fn serve(listener: TcpListener, mut metrics: impl FnMut() -> Option<String>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Err(e) = serve_one(conn, &mut metrics) {
            tracing::debug!("metrics client {peer}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").into_bytes()
    }

    #[test]
    fn answers_by_path_method_and_version() {
        let ok = answer(&get("/metrics"), || Some("m 1\n".into()));
        assert_eq!((ok.status, ok.content_type, ok.body.as_str()), (200, CONTENT_TYPE, "m 1\n"));
        assert_eq!(answer(&get("/metrics?x=1"), || Some(String::new())).status, 200);
        assert_eq!(answer(&get("/"), || panic!("not rendered")).status, 404);
        assert_eq!(answer(&get("/metricsx"), || panic!("not rendered")).status, 404);
        assert_eq!(answer(b"POST /metrics HTTP/1.1\r\n\r\n", || panic!("not rendered")).status, 405);
        assert_eq!(answer(b"GET /metrics SPDY/3\r\n\r\n", || panic!("not rendered")).status, 505);
        assert_eq!(answer(b"GET\r\n\r\n", || panic!("not rendered")).status, 400);
        assert_eq!(answer(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", || panic!("not rendered")).status, 400);
        assert_eq!(answer(&get("/metrics"), || None).status, 503);
        let bytes = String::from_utf8(ok.to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\n") && bytes.contains("Content-Length: 4\r\n"), "{bytes}");
        assert!(bytes.ends_with("\r\n\r\nm 1\n"), "{bytes}");
    }

    /// Talks to a real listener: a scrape, a 404, and a request too large.
    #[test]
    fn serves_over_tcp_and_bounds_the_request() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || serve(l, || Some("fastpath_up 1\n".into())));
        let ask = |req: &[u8]| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = c.write_all(req);
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out
        };
        let r = ask(&get("/metrics"));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nfastpath_up 1\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{r}");
        assert!(ask(&get("/other")).starts_with("HTTP/1.1 404 Not Found\r\n"));
        // Exactly the bound without the blank line: all of it is read, none is left unread
        // (which would reset the connection under the answer).
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        assert!(ask(&big).starts_with("HTTP/1.1 431 "));
        // Still serving after all that.
        assert!(ask(&get("/metrics")).starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
