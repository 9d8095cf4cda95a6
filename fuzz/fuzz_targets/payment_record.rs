//! `PaymentRecord::parse` under both `RecordRules`, and the service's
//! one-record-or-an-array reading of a payments push.
#![no_main]

use customs179_core::{PaymentRecord, Pointer, RecordRules};
use customs179_fuzz::{check_problems, check_record, parse_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for rules in [RecordRules::COMPLETE, RecordRules::PLATFORM] {
        match PaymentRecord::parse(text, rules) {
            Ok(record) => check_record(&record, rules),
            Err(problems) => check_problems(&problems, &Pointer::root()),
        }
    }
    if let Ok(records) = parse_records(text) {
        for record in &records {
            check_record(record, RecordRules::PLATFORM);
        }
    }
});
