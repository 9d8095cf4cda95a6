use serde_json::{Value, json};

use super::*;

/// A valid complete record; each test breaks one thing of it.
fn valid() -> Value {
    serde_json::from_str(include_str!("../../../../tests/data/complete-record.json")).unwrap()
}

fn problems_of(doc: &Value, rules: RecordRules) -> Vec<(String, String)> {
    match PaymentRecord::parse(&doc.to_string(), rules) {
        Ok(_) => Vec::new(),
        Err(Problems(problems)) => {
            problems.into_iter().map(|p| (p.pointer.as_str().to_owned(), p.message)).collect()
        }
    }
}

/// Applies `change` to a valid record and expects exactly one problem, at
/// `pointer`, whose message contains `says`.
fn refused(change: impl FnOnce(&mut Value), pointer: &str, says: &str) {
    let mut doc = valid();
    change(&mut doc);
    let problems = problems_of(&doc, RecordRules::COMPLETE);
    assert_eq!(problems.len(), 1, "expected one problem at {pointer}, got {problems:?}");
    assert_eq!(problems[0].0, pointer, "{problems:?}");
    assert!(problems[0].1.contains(says), "{pointer}: {:?} should say {says:?}", problems[0].1);
}

fn head(doc: &mut Value) -> &mut serde_json::Map<String, Value> {
    doc["payExchangeInfoHead"].as_object_mut().unwrap()
}

fn order(doc: &mut Value) -> &mut serde_json::Map<String, Value> {
    doc["payExchangeInfoLists"][0].as_object_mut().unwrap()
}

#[test]
fn a_valid_record_parses_to_its_values() {
    let record = PaymentRecord::parse(&valid().to_string(), RecordRules::COMPLETE).unwrap();
    assert_eq!(record.head.guid.as_ref().unwrap().as_str(), "9D55BA71-22DE-41F4-8B50-C36C83B3B530");
    assert_eq!(record.head.total_amount.to_string(), "100");
    assert_eq!(record.head.ver_dept, VerDept::Other);
    assert_eq!(record.head.pay_type, Some(PayType::App));
    assert_eq!(record.lists[0].goods_info[0].gname, "lhy-gnsku3");
    assert_eq!(record.order_nos().collect::<Vec<_>>(), ["SO1710301150602574003"]);
    assert_eq!(record.payment_key(), ("312226T001", "2018121222001354081010726129"));
}

#[test]
fn optional_fields_may_be_absent() {
    let mut doc = valid();
    head(&mut doc).remove("payType");
    head(&mut doc).remove("note");
    order(&mut doc).remove("recpCode");
    let record = PaymentRecord::parse(&doc.to_string(), RecordRules::COMPLETE).unwrap();
    assert_eq!(record.head.pay_type, None);
    assert_eq!(record.head.note, "");
    assert_eq!(record.lists[0].recp_code, "");
}

#[test]
fn every_required_field_is_required() {
    for key in HEAD_KEYS.iter().filter(|k| !["payType", "note"].contains(k)) {
        refused(|d| drop(head(d).remove(*key)), &format!("/payExchangeInfoHead/{key}"), "is required");
    }
    for key in ["orderNo", "goodsInfo", "recpAccount", "recpName"] {
        refused(|d| drop(order(d).remove(key)), &format!("/payExchangeInfoLists/0/{key}"), "is required");
    }
    for key in GOODS_KEYS {
        refused(
            |d| drop(d["payExchangeInfoLists"][0]["goodsInfo"][0].as_object_mut().unwrap().remove(key)),
            &format!("/payExchangeInfoLists/0/goodsInfo/0/{key}"),
            "is required",
        );
    }
    refused(
        |d| drop(d.as_object_mut().unwrap().remove("payExchangeInfoHead")),
        "/payExchangeInfoHead",
        "is required",
    );
    refused(
        |d| drop(d.as_object_mut().unwrap().remove("payExchangeInfoLists")),
        "/payExchangeInfoLists",
        "is required",
    );
}

#[test]
fn required_text_must_not_be_empty() {
    refused(|d| head(d)["payCode"] = json!(""), "/payExchangeInfoHead/payCode", "must not be empty");
    refused(|d| order(d)["recpName"] = json!(""), "/payExchangeInfoLists/0/recpName", "must not be empty");
}

#[test]
fn no_text_may_hold_a_nul() {
    let nul = "holds a NUL character (U+0000)";
    refused(|d| order(d)["orderNo"] = json!("SO\u{0}1"), "/payExchangeInfoLists/0/orderNo", nul);
    refused(|d| head(d)["note"] = json!("a\u{0}"), "/payExchangeInfoHead/note", nul);
    refused(
        |d| order(d)["goodsInfo"][0]["gname"] = json!("\u{0}"),
        "/payExchangeInfoLists/0/goodsInfo/0/gname",
        nul,
    );
}

#[test]
fn lengths_count_unicode_characters() {
    // 250 CJK characters are 750 bytes and still fit gname's C..250.
    let mut doc = valid();
    doc["payExchangeInfoLists"][0]["goodsInfo"][0]["gname"] = json!("面".repeat(250));
    assert!(problems_of(&doc, RecordRules::COMPLETE).is_empty());
    let limits: [(&str, usize); 8] = [
        ("initalRequest", 8000),
        ("initalResponse", 8000),
        ("ebpCode", 18),
        ("payCode", 18),
        ("payTransactionId", 60),
        ("currency", 4),
        ("tradingTime", 14),
        ("note", 1000),
    ];
    for (key, max) in limits {
        refused(
            |d| head(d)[key] = json!("面".repeat(max + 1)),
            &format!("/payExchangeInfoHead/{key}"),
            &format!("is {} characters long; at most {max}", max + 1),
        );
    }
    for (key, max) in [("orderNo", 60), ("recpAccount", 60), ("recpCode", 18), ("recpName", 100)] {
        refused(
            |d| order(d)[key] = json!("😀".repeat(max + 1)),
            &format!("/payExchangeInfoLists/0/{key}"),
            &format!("at most {max}"),
        );
    }
    refused(
        |d| d["payExchangeInfoLists"][0]["goodsInfo"][0]["itemLink"] = json!("x".repeat(3001)),
        "/payExchangeInfoLists/0/goodsInfo/0/itemLink",
        "at most 3000",
    );
    refused(
        |d| d["payExchangeInfoLists"][0]["goodsInfo"][0]["gname"] = json!("x".repeat(251)),
        "/payExchangeInfoLists/0/goodsInfo/0/gname",
        "at most 250",
    );
    refused(|d| head(d)["verDept"] = json!("33"), "/payExchangeInfoHead/verDept", "at most 1");
    refused(|d| head(d)["payType"] = json!("11"), "/payExchangeInfoHead/payType", "at most 1");
}

#[test]
fn text_fields_must_be_json_strings() {
    refused(
        |d| head(d)["currency"] = json!(142),
        "/payExchangeInfoHead/currency",
        "must be a JSON string, not a number",
    );
    refused(|d| head(d)["verDept"] = json!(3), "/payExchangeInfoHead/verDept", "not a number");
    refused(|d| head(d)["note"] = Value::Null, "/payExchangeInfoHead/note", "not null");
    refused(|d| order(d)["recpCode"] = json!(false), "/payExchangeInfoLists/0/recpCode", "not a boolean");
    refused(|d| order(d)["orderNo"] = json!(["SO1"]), "/payExchangeInfoLists/0/orderNo", "not an array");
}

#[test]
fn unknown_and_duplicate_keys_are_refused() {
    refused(
        |d| drop(head(d).insert("amount".into(), json!("1"))),
        "/payExchangeInfoHead/amount",
        "unknown field",
    );
    refused(
        |d| drop(order(d).insert("x/y".into(), json!("1"))),
        "/payExchangeInfoLists/0/x~1y",
        "unknown field",
    );
    refused(
        |d| drop(d.as_object_mut().unwrap().insert("sessionID".into(), json!("1"))),
        "/sessionID",
        "unknown",
    );
    let text = valid().to_string().replace(r#""currency":"142""#, r#""currency":"142","currency":"502""#);
    let Err(Problems(problems)) = PaymentRecord::parse(&text, RecordRules::COMPLETE) else { panic!() };
    assert_eq!(problems[0].pointer.as_str(), "/payExchangeInfoHead/currency");
    assert!(problems[0].message.contains("more than once"));
}

#[test]
fn codes_are_checked() {
    for bad in ["14", "1420", "CNY", "14a"] {
        refused(|d| head(d)["currency"] = json!(bad), "/payExchangeInfoHead/currency", "three digits");
    }
    for bad in ["0", "4", "a"] {
        refused(|d| head(d)["verDept"] = json!(bad), "/payExchangeInfoHead/verDept", "must be \"1\"");
    }
    for bad in ["0", "5", "x"] {
        refused(|d| head(d)["payType"] = json!(bad), "/payExchangeInfoHead/payType", "or empty");
    }
    for good in ["1", "2", "3", "4", ""] {
        let mut doc = valid();
        head(&mut doc)["payType"] = json!(good);
        assert!(problems_of(&doc, RecordRules::COMPLETE).is_empty(), "payType {good}");
    }
}

#[test]
fn trading_time_must_exist() {
    refused(
        |d| head(d)["tradingTime"] = json!("201812120418030"),
        "/payExchangeInfoHead/tradingTime",
        "at most 14",
    );
    for bad in [
        "2018121204180",
        "20181312041803",
        "20180230041803",
        "20190229000000",
        "20181212241803",
        "20181212046003",
        "20181212041860",
        "2018121204180a",
        "00001212041803",
    ] {
        refused(
            |d| head(d)["tradingTime"] = json!(bad),
            "/payExchangeInfoHead/tradingTime",
            "yyyyMMddHHmmss",
        );
    }
    for good in ["20200229235959", "20000229000000", "20181231000000"] {
        let mut doc = valid();
        head(&mut doc)["tradingTime"] = json!(good);
        assert!(problems_of(&doc, RecordRules::COMPLETE).is_empty(), "{good}");
    }
    refused(
        |d| head(d)["tradingTime"] = json!("19000229000000"),
        "/payExchangeInfoHead/tradingTime",
        "real date",
    );
}

#[test]
fn guid_rules() {
    refused(
        |d| head(d)["guid"] = json!("9d55ba71-22de-41f4-8b50-c36c83b3b530"),
        "/payExchangeInfoHead/guid",
        "lower-case",
    );
    refused(
        |d| head(d)["guid"] = json!("9D55BA71"),
        "/payExchangeInfoHead/guid",
        "exactly 36 characters, not 8",
    );
    let mut doc = valid();
    head(&mut doc)["guid"] = json!("IHWESX-WEASLEY-20230712210643-X7E4PL");
    assert!(problems_of(&doc, RecordRules::COMPLETE).is_empty());
    let guid = Guid::from_random_bytes([0xab; 16]);
    assert_eq!(guid.as_str(), "ABABABAB-ABAB-4BAB-ABAB-ABABABABABAB");
    assert!(Guid::parse(guid.as_str()).is_ok());
}

#[test]
fn platform_records_must_not_carry_a_guid() {
    let problems = problems_of(&valid(), RecordRules::PLATFORM);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, "/payExchangeInfoHead/guid");
    assert!(problems[0].1.contains("new guid is generated for every upload"));
    let mut doc = valid();
    head(&mut doc).remove("guid");
    head(&mut doc).remove("ebpCode");
    let record = PaymentRecord::parse(&doc.to_string(), RecordRules::PLATFORM).unwrap();
    assert_eq!((record.head.guid, record.head.ebp_code), (None, None));
}

#[test]
fn amounts_are_exact_and_bounded() {
    let amount_of = |raw: &str| {
        let text = valid().to_string().replace(r#""totalAmount":100"#, &format!(r#""totalAmount":{raw}"#));
        PaymentRecord::parse(&text, RecordRules::COMPLETE).map(|r| r.head.total_amount.to_string())
    };
    assert_eq!(amount_of("12345678901234.12345").unwrap(), "12345678901234.12345");
    assert_eq!(amount_of(r#""0.50""#).unwrap(), "0.5");
    assert_eq!(amount_of("1e2").unwrap(), "100");
    for (raw, says) in [
        ("-1", "negative"),
        ("0.123456", "fraction"),
        ("123456789012345", "integer"),
        (r#""abc""#, "not a decimal"),
        ("null", "must be a number, not null"),
        ("true", "not a boolean"),
    ] {
        let Err(Problems(problems)) = amount_of(raw) else { panic!("{raw} accepted") };
        assert_eq!(problems[0].pointer.as_str(), "/payExchangeInfoHead/totalAmount");
        assert!(problems[0].message.contains(says), "{raw}: {}", problems[0].message);
    }
}

#[test]
fn lists_need_orders_and_goods() {
    refused(|d| d["payExchangeInfoLists"] = json!([]), "/payExchangeInfoLists", "at least one order");
    refused(
        |d| d["payExchangeInfoLists"] = json!({}),
        "/payExchangeInfoLists",
        "must be an array, not an object",
    );
    refused(
        |d| order(d)["goodsInfo"] = json!([]),
        "/payExchangeInfoLists/0/goodsInfo",
        "at least one goods item",
    );
    refused(|d| d["payExchangeInfoLists"][0] = json!("SO1"), "/payExchangeInfoLists/0", "must be an object");
    refused(|d| d["payExchangeInfoHead"] = json!([]), "/payExchangeInfoHead", "must be an object");
    refused(
        |d| {
            let first = d["payExchangeInfoLists"][0].clone();
            d["payExchangeInfoLists"].as_array_mut().unwrap().push(first);
        },
        "/payExchangeInfoLists/1/orderNo",
        "listed twice in this payment (also at /payExchangeInfoLists/0)",
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut doc = valid();
    head(&mut doc)["currency"] = json!("CNY");
    head(&mut doc).remove("payCode");
    doc["payExchangeInfoLists"][0]["goodsInfo"][0]["gname"] = json!(7);
    order(&mut doc)["recpName"] = json!("");
    let pointers: Vec<String> = problems_of(&doc, RecordRules::COMPLETE).into_iter().map(|p| p.0).collect();
    assert_eq!(
        pointers,
        [
            "/payExchangeInfoHead/payCode",
            "/payExchangeInfoHead/currency",
            "/payExchangeInfoLists/0/goodsInfo/0/gname",
            "/payExchangeInfoLists/0/recpName",
        ]
    );
}

#[test]
fn non_json_and_wrong_shapes_are_explained() {
    assert_eq!(
        problems_of(&json!([1]), RecordRules::COMPLETE),
        [(String::new(), "must be an object, not an array".to_owned())]
    );
    let Err(Problems(problems)) = PaymentRecord::parse("{", RecordRules::COMPLETE) else { panic!() };
    assert!(problems[0].message.starts_with("not valid JSON"));
    assert_eq!(problems[0].to_string().split(':').next(), Some("(document)"));
}

#[test]
fn a_lone_surrogate_is_a_problem_where_it_is() {
    // Regression (tests/proptest_inputs.rs): a totalAmount string escaping a lone surrogate
    // was refused with no problem at all; text fields said "must be a JSON
    // string, not a string".
    let text = include_str!("../../../../tests/data/complete-record.json");
    for (from, to, pointer) in [
        (r#""totalAmount": 100"#, r#""totalAmount": "\ud800""#, "/payExchangeInfoHead/totalAmount"),
        (r#""note": "批量订单""#, r#""note": "a\udfffb""#, "/payExchangeInfoHead/note"),
        (r#""recpCode": """#, r#""recpCode": "\udc00\ud800""#, "/payExchangeInfoLists/0/recpCode"),
    ] {
        let bad = text.replace(from, to);
        assert_ne!(bad, text);
        let Err(Problems(problems)) = PaymentRecord::parse(&bad, RecordRules::COMPLETE) else {
            panic!("{to}")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].pointer.as_str(), pointer);
        assert!(problems[0].message.contains("lone surrogate"), "{problems:?}");
    }
}

#[test]
fn a_repeated_order_among_many_is_found_in_linear_time() {
    // Regression (tests/proptest_inputs.rs): each order number was compared with every one
    // before it; a payments push of 8 MiB holds tens of thousands of orders.
    let mut doc = valid();
    let order = doc["payExchangeInfoLists"][0].clone();
    let lists: Vec<Value> = (0..30_000)
        .map(|i| {
            let mut order = order.clone();
            order["orderNo"] = json!(format!("SO{}", i % 29_999));
            order
        })
        .collect();
    doc["payExchangeInfoLists"] = Value::Array(lists);
    let problems = problems_of(&doc, RecordRules::COMPLETE);
    assert_eq!(
        problems,
        [(
            "/payExchangeInfoLists/29999/orderNo".to_owned(),
            "order SO0 is listed twice in this payment (also at /payExchangeInfoLists/0)".to_owned()
        )]
    );
}
