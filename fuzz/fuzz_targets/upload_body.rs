//! `UploadBody::parse` and `PreSign::parse`, fed the same bytes.
#![no_main]

use customs179_core::{Pointer, PreSign, UploadBody};
use customs179_fuzz::{check_parsed_upload, check_presign, check_problems};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match UploadBody::parse(text) {
        Ok(parsed) => check_parsed_upload(text, &parsed),
        Err(problems) => check_problems(&problems, &Pointer::root()),
    }
    if let Ok(presign) = PreSign::parse(text) {
        check_presign(text, &presign);
    }
});
