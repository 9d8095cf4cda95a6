//! `form_field`, the intake's decoding of a form body, then `OpenReq::parse`
//! of the `openReq` field, as the intake does.
#![no_main]

use customs179_core::{FormError, OpenReq, form_field};
use customs179_fuzz::percent_encode;
use libfuzzer_sys::fuzz_target;

fn check(body: &[u8], name: &str) {
    match form_field(body, name) {
        Ok(value) => {
            // Encoded again, alone, it decodes to the same value...
            let field = format!("{}={}", percent_encode(name), percent_encode(&value));
            assert_eq!(form_field(field.as_bytes(), name).as_ref(), Ok(&value));
            // ...and given a second time it is refused.
            let mut twice = body.to_vec();
            twice.extend_from_slice(format!("&{field}").as_bytes());
            assert_eq!(form_field(&twice, name), Err(FormError::Repeated(name.to_owned())));
        }
        Err(FormError::Missing(n) | FormError::Repeated(n) | FormError::NotUtf8(n)) => assert_eq!(n, name),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, "openReq");
    if let Ok(value) = form_field(data, "openReq") {
        let _ = OpenReq::parse(&value);
    }
    // Any field name: the input's first line names it.
    if let Some(at) = data.iter().position(|&b| b == b'\n')
        && let Ok(name) = std::str::from_utf8(&data[..at])
    {
        check(&data[at + 1..], name);
    }
});
