use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::amount::Amount;
use crate::record::{GoodsItem, Guid, PayType, VerDept};

const A_PRESIGN: &str = include_str!("../../../../tests/data/vectors/a.presign.txt");
const B_PRESIGN: &str = include_str!("../../../../tests/data/vectors/b.presign.txt");
const B_UPLOAD: &str = include_str!("../../../../tests/data/vectors/b.upload.json");
const C_PRESIGN: &str = include_str!("../../../../tests/data/vectors/c.presign.txt");
const C_UPLOAD: &str = include_str!("../../../../tests/data/vectors/c.upload.json");

fn record_of(presign: &PreSign) -> PaymentRecord {
    let text = format!(
        "{{\"payExchangeInfoHead\":{},\"payExchangeInfoLists\":{}}}",
        presign.head_json(),
        presign.lists_json()
    );
    PaymentRecord::parse(&text, RecordRules::COMPLETE).unwrap()
}

#[test]
fn upload_b_rebuilds_to_its_presign_exactly() {
    let parsed = UploadBody::parse(B_UPLOAD).unwrap();
    assert_eq!(parsed.presign.as_str(), B_PRESIGN);
    assert_eq!(parsed.cert_no, "03000000000cde6f");
    assert!(parsed.presign.head_json().contains(r#""totalAmount":5.0,"#));
    assert_eq!(parsed.presign.session_id(), "IHWESX-WEASLEY-20230712210643-X7E4PL");
    assert_eq!(parsed.presign.service_time(), "1601282210417");
}

#[test]
fn upload_c_rebuilds_to_its_presign_and_back() {
    let parsed = UploadBody::parse(C_UPLOAD).unwrap();
    assert_eq!(parsed.presign.as_str(), C_PRESIGN);
    let again = parsed.presign.upload_body(&parsed.cert_no, &parsed.sign_value);
    assert_eq!(again.as_str(), C_UPLOAD);
}

#[test]
fn building_from_the_records_of_a_and_c_gives_their_exact_bytes() {
    for vector in [A_PRESIGN, C_PRESIGN] {
        let stored = PreSign::parse(vector).unwrap();
        let record = record_of(&stored);
        let service_time: u64 = stored.service_time().parse().unwrap();
        let built = PreSign::build(&record, &stored.session_id(), service_time).unwrap();
        assert_eq!(built.as_str(), vector);
        assert_eq!(built, stored);
    }
}

#[test]
fn b_built_canonically_differs_only_in_the_amount() {
    let parsed = UploadBody::parse(B_UPLOAD).unwrap();
    let record = parsed.record().unwrap();
    let built = PreSign::build(&record, "IHWESX-WEASLEY-20230712210643-X7E4PL", 1601282210417).unwrap();
    assert_eq!(built.as_str(), B_PRESIGN.replace(r#""totalAmount":5.0"#, r#""totalAmount":5"#));
}

#[test]
fn presign_parse_finds_parts_by_tokens_not_separators() {
    let mut record = record_of(&PreSign::parse(A_PRESIGN).unwrap());
    record.head.note = "a\"||\"payExchangeInfoLists\":\"[]\"||\"serviceTime\":\"1".to_owned();
    let built = PreSign::build(&record, "S||1", 7).unwrap();
    let parsed = PreSign::parse(built.as_str()).unwrap();
    assert_eq!(parsed, built);
    assert_eq!(parsed.session_id(), "S||1");
    assert_eq!(parsed.service_time(), "7");
}

#[test]
fn presign_parse_refuses_other_text() {
    let bad = [
        "",
        "{}",
        &A_PRESIGN[1..],
        &A_PRESIGN[..A_PRESIGN.len() - 1],
        &format!("{A_PRESIGN}\n"),
        &A_PRESIGN.replace(r#""serviceTime":"1544519952469""#, r#""serviceTime":"""#),
        &A_PRESIGN.replace("||", ","),
        &A_PRESIGN.replacen(r#"":"[{"#, r#"":"{"#, 1),
    ];
    for text in bad {
        assert!(PreSign::parse(text).is_err(), "{text:?}");
    }
}

#[test]
fn build_needs_guid_ebp_code_and_session() {
    let mut record = record_of(&PreSign::parse(A_PRESIGN).unwrap());
    assert_eq!(PreSign::build(&record, "", 1), Err(BuildError::EmptySessionId));
    record.head.ebp_code = None;
    assert_eq!(PreSign::build(&record, "S", 1), Err(BuildError::Missing("ebpCode")));
    record.head.guid = None;
    assert_eq!(PreSign::build(&record, "S", 1), Err(BuildError::Missing("guid")));
    // The stored form of such a record leaves both keys out and reads back.
    let stored = write_record(&record);
    assert!(!stored.contains("guid") && !stored.contains("ebpCode"));
    assert_eq!(PaymentRecord::parse(&stored, RecordRules::PLATFORM).unwrap(), record);
}

#[test]
fn upload_parse_explains_bad_bodies() {
    let cases = [
        ("[]", "", "must be an object"),
        ("{", "", "not valid JSON"),
        (r#"{"sessionID":"S"}"#, "/payExchangeInfoHead", "is required"),
        (
            &B_UPLOAD.replace(r#""serviceTime":"1601282210417""#, r#""serviceTime":"16x""#),
            "/serviceTime",
            "epoch",
        ),
        (&B_UPLOAD.replace(r#"{"sessionID":"#, r#"{"extra":1,"sessionID":"#), "/extra", "unknown field"),
        (&B_UPLOAD.replace(r#""certNo":"03000000000cde6f""#, r#""certNo":3"#), "/certNo", "must be a string"),
    ];
    for (body, pointer, says) in cases {
        let Err(Problems(problems)) = UploadBody::parse(body) else { panic!("{body} accepted") };
        assert_eq!(problems[0].pointer.as_str(), pointer, "{problems:?}");
        assert!(problems[0].message.contains(says), "{problems:?}");
    }
    // A numeric serviceTime, as in the official sample, is fine.
    let numeric = B_UPLOAD.replace(r#""serviceTime":"1601282210417""#, r#""serviceTime":1601282210417"#);
    assert_eq!(UploadBody::parse(&numeric).unwrap().presign.as_str(), B_PRESIGN);
}

/// One record whose strings hold what escaping must get right.
#[test]
fn escaping_cases_survive_the_whole_trip() {
    let mut record = record_of(&PreSign::parse(A_PRESIGN).unwrap());
    record.head.inital_request = "<xml a='1'>&amp;\"q\" \\ /path\r\n\t\u{1}\u{1f}\u{8}\u{c}</xml>".to_owned();
    record.head.inital_response = "😀 𝄞 测试 \u{2028}".to_owned();
    record.lists[0].goods_info[0].item_link = "http://a.example/x?y=1&z=<2>".to_owned();
    let presign = PreSign::build(&record, "fe2374-8fnejf97-32839218", 1544519952469).unwrap();
    let head = presign.head_json();
    assert!(
        head.contains(r#""initalRequest":"<xml a='1'>&amp;\"q\" \\ /path\r\n\t\u0001\u001f\b\f</xml>""#),
        "{head}"
    );
    assert!(head.contains("\"initalResponse\":\"😀 𝄞 测试 \u{2028}\""), "{head}");
    assert!(presign.lists_json().contains(r#""itemLink":"http://a.example/x?y=1&z=<2>""#));
    let upload = presign.upload_body("03000000000cde6f", "c2ln");
    let parsed = UploadBody::parse(upload.as_str()).unwrap();
    assert_eq!(parsed.presign, presign);
    assert_eq!(parsed.record().unwrap(), record);
}

fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    // Any characters at all, weighted towards the ones escaping cares about.
    let interesting = prop_oneof![
        any::<char>(),
        Just('"'),
        Just('\\'),
        Just('/'),
        Just('\n'),
        // Control characters escaping must write as \u00XX (a record may not hold a NUL).
        Just('\u{1}'),
        Just('测'),
        Just('😀'),
        Just('|'),
    ];
    let no_nul = |c: char| if c == '\0' { '\u{1}' } else { c };
    prop::collection::vec(interesting, min..=max)
        .prop_map(move |chars| chars.into_iter().map(no_nul).collect())
}

fn guid() -> impl Strategy<Value = Guid> {
    any::<[u8; 16]>().prop_map(Guid::from_random_bytes)
}

fn goods() -> impl Strategy<Value = GoodsItem> {
    (text(1, 12), text(1, 30)).prop_map(|(gname, item_link)| GoodsItem { gname, item_link })
}

fn order(index: usize) -> impl Strategy<Value = PayOrder> {
    (text(1, 10), prop::collection::vec(goods(), 1..4), text(1, 20), text(0, 18), text(1, 30)).prop_map(
        move |(order_no, goods_info, recp_account, recp_code, recp_name)| PayOrder {
            // Distinct order numbers, as validation demands.
            order_no: format!("{index}-{order_no}"),
            goods_info,
            recp_account,
            recp_code,
            recp_name,
        },
    )
}

fn record() -> impl Strategy<Value = PaymentRecord> {
    let head = (
        guid(),
        (text(1, 60), text(1, 60), text(1, 18), text(1, 18), text(1, 60)),
        0u64..10_000_000_000_000_000_000,
        (0u32..1000).prop_map(|n| format!("{n:03}")),
        prop_oneof![Just(VerDept::UnionPay), Just(VerDept::NetsUnion), Just(VerDept::Other)],
        prop::option::of(prop_oneof![
            Just(PayType::App),
            Just(PayType::Pc),
            Just(PayType::QrScan),
            Just(PayType::Other)
        ]),
        text(0, 40),
    );
    let lists = (1usize..4).prop_flat_map(|n| (0..n).map(order).collect::<Vec<_>>());
    (head, lists).prop_map(
        |((guid, (req, resp, ebp, pay_code, txn), units, currency, ver_dept, pay_type, note), lists)| {
            PaymentRecord {
                head: PayHead {
                    guid: Some(guid),
                    inital_request: req,
                    inital_response: resp,
                    ebp_code: Some(ebp),
                    pay_code,
                    pay_transaction_id: txn,
                    total_amount: Amount::from_units(units).unwrap(),
                    currency,
                    ver_dept,
                    pay_type,
                    trading_time: "20240229235959".to_owned(),
                    note,
                },
                lists,
            }
        },
    )
}

fn as_value(record: &PaymentRecord) -> (Value, Value) {
    let (head, lists) = write_record_parts(record);
    (serde_json::from_str(&head).unwrap(), serde_json::from_str(&lists).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_valid_record_round_trips_exactly(record in record(), session in text(1, 20), time in any::<u64>()) {
        let presign = PreSign::build(&record, &session, time).unwrap();
        let upload = presign.upload_body("0123abcd", "c2lnbmF0dXJl");

        // The upload is JSON carrying the same values...
        let body: Value = serde_json::from_str(upload.as_str()).unwrap();
        let (head, lists) = as_value(&record);
        prop_assert_eq!(&body["sessionID"], &Value::String(session.clone()));
        prop_assert_eq!(&body["payExchangeInfoHead"], &head);
        prop_assert_eq!(&body["payExchangeInfoLists"], &lists);
        prop_assert_eq!(&body["serviceTime"], &Value::String(time.to_string()));
        // (serde_json's Value holds numbers as f64, so the amount is compared
        // as the raw text it is.)
        let raw_body: &RawValue = serde_json::from_str(upload.as_str()).unwrap();
        let raw_head = RawObject::parse(RawObject::parse(raw_body).unwrap().get("payExchangeInfoHead").unwrap()).unwrap();
        prop_assert_eq!(raw_head.get("totalAmount").unwrap().get(), record.head.total_amount.to_string());
        prop_assert_eq!(body.as_object().unwrap().len(), 6);

        // ...it rebuilds to the very bytes that were signed...
        let parsed = UploadBody::parse(upload.as_str()).unwrap();
        prop_assert_eq!(parsed.presign.as_str(), presign.as_str());
        prop_assert_eq!(PreSign::parse(presign.as_str()).unwrap(), presign.clone());
        prop_assert_eq!(parsed.presign.session_id(), session);

        // ...and what it carries is still a valid record with the same values.
        prop_assert_eq!(parsed.record().unwrap(), record);
    }
}
