// The doctor's fastpathd check: whether the switch answers `status` on its control socket
// (and the status, which the core checks read the worker's core from).
//! fastpathd check.

use std::time::Duration;

use fastpath_host::proto::{Client, ClientError, Request, SwitchStatus};

use super::{Check, Host};

/// fastpathd's status, asked on the host's control socket.
pub fn status(host: &Host) -> Result<SwitchStatus, String> {
    let c = Client::new(&host.ctl, Duration::from_secs(2));
    match c.call(&Request::Status) {
        Ok(r) => r.status.map(|s| *s).ok_or_else(|| "answered without a status".into()),
        Err(e @ ClientError::Connect { .. }) => Err(e.to_string()),
        Err(e) => Err(format!("answered badly: {e}")),
    }
}

/// fastpathd: whether it answers.
pub fn check(host: &Host, status: &Result<SwitchStatus, String>) -> Check {
    let ctl = host.ctl.display();
    match status {
        Ok(s) => Check::ok(
            "fastpathd",
            format!(
                "pid {} answers on {ctl}: {} ports, {}",
                s.pid,
                s.ports,
                match (s.core, s.cores.as_slice()) {
                    (_, many @ [_, _, ..]) =>
                        format!("{} workers on CPUs {}", many.len(), fastpath_hook::cores::format_list(many)),
                    (Some(c), _) => format!("worker on CPU {c}"),
                    (None, _) => "worker not pinned".into(),
                }
            ),
        ),
        Err(e) => {
            let fix = if host.ctl == host.file("/run/fastpath/fastpathd.sock") {
                "systemctl start fastpathd".to_string()
            } else {
                let dir = host.ctl.parent().map_or_else(|| ".".into(), |d| d.display().to_string());
                format!("fastpathd --ctl {ctl} --state-dir {dir} &")
            };
            Check::fail("fastpathd", format!("{ctl}: {e}"), fix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::Tree;
    use super::super::Status;
    use super::*;
    use fastpath_host::proto::fake::FakeSocket;
    use fastpath_host::proto::Response;

    #[test]
    fn no_switch_fails_with_the_command_that_starts_one() {
        let t = Tree::new("sw-none");
        let h = t.host();
        let c = check(&h, &status(&h));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("is fastpathd running?"), "{}", c.detail);
        assert_eq!(c.fix, Some(format!("fastpathd --ctl {} --state-dir {} &", h.ctl.display(), t.root.display())));
        let mut d = h.clone();
        d.ctl = t.path("/run/fastpath/fastpathd.sock");
        assert_eq!(check(&d, &status(&d)).fix.as_deref(), Some("systemctl start fastpathd"));
    }

    #[test]
    fn a_switch_that_answers_is_ok() {
        let t = Tree::new("sw-ok");
        let sock = FakeSocket::answering("doctor-status", |_| {
            let mut r = Response::ok();
            r.status = Some(Box::new(SwitchStatus {
                pid: 42,
                ports: 3,
                state_file: None,
                took_over_from: None,
                first_frame_ms: None,
                core: Some(0),
                cores: vec![],
            }));
            Some(serde_json::to_string(&r).unwrap() + "\n")
        });
        let mut h = t.host();
        h.ctl = sock.path().to_path_buf();
        let s = status(&h);
        let c = check(&h, &s);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("pid 42 answers") && c.detail.contains("worker on CPU 0"), "{}", c.detail);
    }
}
