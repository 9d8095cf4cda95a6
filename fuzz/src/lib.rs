//! What the fuzz targets share: the round-trip checks, and the service's
//! array-or-object reading of a payments push (`parse_records` is private to
//! customs179-service, so it is mirrored here from core's public API).

use customs179_core::{
    OpenReq, ParsedUpload, PaymentRecord, Pointer, PreSign, Problems, RecordRules, UploadBody, write_record,
};
use serde_json::value::RawValue;

/// Percent-encodes every byte that is not unreserved, as a form encoder may.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An accepted openReq written again, with the time as a number and as a
/// string, parses to the same request.
pub fn check_open_req(req: &OpenReq) {
    let session = serde_json::to_string(&req.session_id).unwrap();
    let order = serde_json::to_string(&req.order_no).unwrap();
    for time in [req.service_time.to_string(), format!("\"{}\"", req.service_time)] {
        let text = format!(r#"{{"orderNo":{order},"serviceTime":{time},"sessionID":{session}}}"#);
        assert_eq!(OpenReq::parse(&text).as_ref(), Ok(req), "{text}");
    }
}

/// A refusal always says what is wrong, at a place inside `at`.
pub fn check_problems(problems: &Problems, at: &Pointer) {
    assert!(!problems.0.is_empty(), "refused without a problem");
    for problem in &problems.0 {
        assert!(problem.pointer.as_str().starts_with(at.as_str()), "{problem} is outside {at}");
    }
}

/// An accepted record: its canonical JSON reads back as the same record
/// under the same rules; a complete one also builds a pre-sign string and
/// an upload body that read back to the very same bytes and record.
pub fn check_record(record: &PaymentRecord, rules: RecordRules) {
    let canonical = write_record(record);
    assert_eq!(PaymentRecord::parse(&canonical, rules).as_ref(), Ok(record), "{canonical}");
    if rules == RecordRules::COMPLETE {
        assert!(record.head.guid.is_some() && record.head.ebp_code.is_some());
        let presign = PreSign::build(record, "S||1", 1_533_271_903_898).unwrap();
        assert_eq!(PreSign::parse(presign.as_str()).as_ref(), Ok(&presign));
        let parsed = check_upload(&presign.upload_body("0123abcd", "c2ln"));
        assert_eq!(parsed.presign, presign);
        assert_eq!(parsed.record().as_ref(), Ok(record));
        // The same payment pushed by the platform: without its guid.
        let mut pushed = record.clone();
        pushed.head.guid = None;
        assert_eq!(PaymentRecord::parse(&write_record(&pushed), RecordRules::PLATFORM), Ok(pushed));
    } else if rules == RecordRules::PLATFORM {
        assert!(record.head.guid.is_none());
    }
}

/// An upload body that must be accepted, and what it carries.
fn check_upload(body: &UploadBody) -> ParsedUpload {
    let parsed = UploadBody::parse(body.as_str()).unwrap();
    check_parsed_upload(body.as_str(), &parsed);
    parsed
}

/// An accepted upload body: head and lists are its own bytes, the pre-sign
/// string reads back as itself, and the body rebuilt from it reads back to
/// the same pre-sign string and signature.
pub fn check_parsed_upload(text: &str, parsed: &ParsedUpload) {
    let presign = &parsed.presign;
    assert!(text.contains(presign.head_json()) && text.contains(presign.lists_json()));
    assert!(text.contains(presign.service_time()));
    assert_eq!(PreSign::parse(presign.as_str()).as_ref(), Ok(presign));
    let again = presign.upload_body(&parsed.cert_no, &parsed.sign_value);
    let reparsed = UploadBody::parse(again.as_str()).unwrap();
    assert_eq!(&reparsed, parsed);
    // What it carries may or may not be a valid record; reading it must not fail.
    if let Err(problems) = parsed.record() {
        check_problems(&problems, &Pointer::root());
    }
}

/// An accepted pre-sign string is exactly the input, and an upload body
/// built from it carries it byte for byte.
pub fn check_presign(text: &str, presign: &PreSign) {
    assert_eq!(presign.as_str(), text);
    let body = presign.upload_body("cert", "sig");
    assert_eq!(&check_upload(&body).presign, presign);
}

/// The service's reading of `POST /api/payments`: one record or a non-empty
/// array of them, each validated under the platform's rules.
pub fn parse_records(text: &str) -> Result<Vec<PaymentRecord>, Problems> {
    let root = Pointer::root();
    let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) else {
        return Err(Problems(Vec::new()));
    };
    let items: Vec<(Box<RawValue>, Pointer)> = if raw.get().starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(raw.get()).expect("a raw array reads as one");
        items.into_iter().enumerate().map(|(i, item)| (item, root.index(i))).collect()
    } else {
        vec![(raw, root)]
    };
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for (item, at) in &items {
        match PaymentRecord::from_raw(item, at, RecordRules::PLATFORM) {
            Ok(record) => records.push(record),
            Err(e) => {
                check_problems(&e, at);
                problems.extend(e.0);
            }
        }
    }
    if problems.is_empty() { Ok(records) } else { Err(Problems(problems)) }
}
