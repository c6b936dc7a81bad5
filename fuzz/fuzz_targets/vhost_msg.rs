// Fuzz target: the vhost-user message decoder and the backend's protocol state
// machine, fed arbitrary headers and payloads (fds counted but never real).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlib::vhost::VhostDevice;
use netlib::vhost_user::conn::RawMsg;
use netlib::vhost_user::{Header, Msg};

fuzz_target!(|data: &[u8]| {
    // A sequence of messages: [nfds:1][header:12][payload:size] ...
    let mut dev = VhostDevice::default();
    let mut rest = data;
    while rest.len() >= 13 {
        let nfds = (rest[0] % 10) as usize;
        let mut h = [0u8; 12];
        h.copy_from_slice(&rest[1..13]);
        let header = Header::decode(&h);
        rest = &rest[13..];
        let size = (header.size as usize).min(rest.len()).min(8192);
        let payload = &rest[..size];
        rest = &rest[size..];
        let _ = Msg::decode(&header, payload, nfds);
        // The state machine only ever sees messages that came without fds here:
        // fds are real descriptors, which a fuzzer can't make up.
        let raw = RawMsg { header, payload: payload.to_vec(), fds: Vec::new() };
        if dev.handle(raw).is_err() {
            dev = VhostDevice::default();
        }
    }
});
