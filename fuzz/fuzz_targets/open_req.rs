//! `OpenReq::parse`, the `openReq` JSON of a customs call.
#![no_main]

use customs179_core::OpenReq;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(req) = OpenReq::parse(text) {
        assert!(!req.session_id.is_empty() && !req.order_no.is_empty());
        customs179_fuzz::check_open_req(&req);
    }
});
