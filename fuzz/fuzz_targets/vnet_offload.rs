// Fuzz target: a virtio-net header with the frame after it, both the fuzzer's, parsed
// and delivered (as is, checksum finished, or segmented) to a destination without offloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlib::vhost::offload::Offloader;
use netlib::vhost::Frame;
use netlib::vnet_hdr::{VnetHdr, HDR_FIELDS_LEN, OFFLOAD_FEATURES};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Some((raw, frame)) = rest.split_first_chunk::<HDR_FIELDS_LEN>() else { return };
    let Ok(hdr) = VnetHdr::parse(raw, frame.len()) else { return };
    let features = u64::from(pick) & OFFLOAD_FEATURES;
    let mut total = 0usize;
    let _ = Offloader::default().deliver(Frame::Local(frame), &hdr, features, |h, f| {
        let len = f.len() as usize;
        assert!(len <= frame.len(), "a segment longer than its frame: {len}");
        assert!(VnetHdr::parse(h[..HDR_FIELDS_LEN].try_into().unwrap_or(&[0; HDR_FIELDS_LEN]), len).is_ok());
        total += 1;
        total <= netlib::gso::MAX_SEGMENTS
    });
});
