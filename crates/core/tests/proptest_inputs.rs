//! What the parsers do with any input at all (the issue's "no panic, no
//! hang"), run in CI by `cargo test`: the openReq JSON, form bodies, payment
//! records under both rules, upload bodies and pre-sign strings.
//!
//! Each parser gets arbitrary bytes and text, JSON of every shape (duplicate
//! keys, huge numbers, control characters, lone surrogates, nesting), and
//! near-valid inputs: the real test data with fields mutated. Whatever it is
//! fed, a parser returns; a refusal names at least one problem; a valid input
//! is accepted; and what is accepted, written again, is accepted again as the
//! same thing. Every case runs under a timeout, so a hang fails the test.
//! The `fuzz/` directory has cargo-fuzz targets for the same parsers.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use customs179_core::{
    Amount, FormError, GoodsItem, Guid, OpenReq, OpenReqError, ParsedUpload, PayHead, PayOrder, PayType,
    PaymentRecord, Pointer, PreSign, Problems, RecordRules, UploadBody, VerDept, form_field, write_record,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

const COMPLETE_RECORD: &str = include_str!("../../../tests/data/complete-record.json");
const A_PRESIGN: &str = include_str!("../../../tests/data/vectors/a.presign.txt");
const B_PRESIGN: &str = include_str!("../../../tests/data/vectors/b.presign.txt");
const C_PRESIGN: &str = include_str!("../../../tests/data/vectors/c.presign.txt");
const B_UPLOAD: &str = include_str!("../../../tests/data/vectors/b.upload.json");
const C_UPLOAD: &str = include_str!("../../../tests/data/vectors/c.upload.json");

/// Many cases, run in a forked test process that fails any case taking
/// longer than the timeout (a hang), so that CI never waits forever.
fn config(cases: u32) -> Config {
    Config {
        cases,
        timeout: 20_000,
        // Found failures are kept in tests/proptest_inputs.proptest-regressions.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    }
}

/// Runs `f` on a thread of its own and fails when it has not returned
/// within `limit`: for the inputs built to be slow.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    thread::spawn(move || done.send(f()));
    match result.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still running after {limit:?}: a hang"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("panicked (see above)"),
    }
}

const LIMIT: Duration = Duration::from_secs(30);

// ---- What must hold of every answer ----------------------------------------

/// A refusal always says what is wrong, at a place inside `at`.
fn check_problems(problems: &Problems, at: &Pointer) -> Result<(), TestCaseError> {
    prop_assert!(!problems.0.is_empty(), "refused without a problem");
    for problem in &problems.0 {
        prop_assert!(problem.pointer.as_str().starts_with(at.as_str()), "{} is outside {}", problem, at);
        prop_assert!(!problem.message.is_empty());
    }
    Ok(())
}

fn check_open_req(text: &str) -> Result<(), TestCaseError> {
    let Ok(req) = OpenReq::parse(text) else { return Ok(()) };
    prop_assert!(!req.session_id.is_empty() && !req.order_no.is_empty());
    let session = serde_json::to_string(&req.session_id).unwrap();
    let order = serde_json::to_string(&req.order_no).unwrap();
    for time in [req.service_time.to_string(), format!("\"{}\"", req.service_time)] {
        let again = format!(r#"{{"orderNo":{order},"serviceTime":{time},"sessionID":{session}}}"#);
        prop_assert_eq!(OpenReq::parse(&again), Ok(req.clone()));
    }
    Ok(())
}

/// Both rules; what is accepted is written canonically and read back as the
/// same record; a complete record also makes a pre-sign string and an upload
/// body that read back to the same bytes and the same record.
fn check_record(text: &str) -> Result<(), TestCaseError> {
    for rules in [RecordRules::COMPLETE, RecordRules::PLATFORM] {
        match PaymentRecord::parse(text, rules) {
            Ok(record) => check_accepted_record(&record, rules)?,
            Err(problems) => check_problems(&problems, &Pointer::root())?,
        }
    }
    Ok(())
}

fn check_accepted_record(record: &PaymentRecord, rules: RecordRules) -> Result<(), TestCaseError> {
    let canonical = write_record(record);
    prop_assert_eq!(PaymentRecord::parse(&canonical, rules), Ok(record.clone()));
    if rules == RecordRules::PLATFORM {
        prop_assert!(record.head.guid.is_none());
        return Ok(());
    }
    let presign = PreSign::build(record, "S||1", 1_533_271_903_898).unwrap();
    prop_assert_eq!(PreSign::parse(presign.as_str()), Ok(presign.clone()));
    let upload = presign.upload_body("03000000000cde6f", "c2ln");
    let parsed = UploadBody::parse(upload.as_str()).unwrap();
    check_parsed_upload(upload.as_str(), &parsed)?;
    prop_assert_eq!(&parsed.presign, &presign);
    prop_assert_eq!(parsed.record(), Ok(record.clone()));
    let mut pushed = record.clone();
    pushed.head.guid = None;
    prop_assert_eq!(PaymentRecord::parse(&write_record(&pushed), RecordRules::PLATFORM), Ok(pushed));
    Ok(())
}

/// An accepted upload: head, lists and time are its own bytes, the pre-sign
/// string reads back as itself, and the body rebuilt from it reads back the same.
fn check_parsed_upload(text: &str, parsed: &ParsedUpload) -> Result<(), TestCaseError> {
    let presign = &parsed.presign;
    prop_assert!(text.contains(presign.head_json()));
    prop_assert!(text.contains(presign.lists_json()));
    prop_assert!(text.contains(presign.service_time()));
    prop_assert_eq!(PreSign::parse(presign.as_str()), Ok(presign.clone()));
    let again = presign.upload_body(&parsed.cert_no, &parsed.sign_value);
    prop_assert_eq!(UploadBody::parse(again.as_str()), Ok(parsed.clone()));
    if let Err(problems) = parsed.record() {
        check_problems(&problems, &Pointer::root())?;
    }
    Ok(())
}

fn check_upload_and_presign(text: &str) -> Result<(), TestCaseError> {
    match UploadBody::parse(text) {
        Ok(parsed) => check_parsed_upload(text, &parsed)?,
        Err(problems) => check_problems(&problems, &Pointer::root())?,
    }
    if let Ok(presign) = PreSign::parse(text) {
        prop_assert_eq!(presign.as_str(), text);
        let body = presign.upload_body("cert", "sig");
        let parsed = UploadBody::parse(body.as_str()).unwrap();
        prop_assert_eq!(&parsed.presign, &presign);
        check_parsed_upload(body.as_str(), &parsed)?;
    }
    Ok(())
}

fn check_form(body: &[u8], name: &str) -> Result<(), TestCaseError> {
    match form_field(body, name) {
        Ok(value) => {
            let field = format!("{}={}", encode_all(name), encode_all(&value));
            prop_assert_eq!(form_field(field.as_bytes(), name), Ok(value.clone()));
            let mut twice = body.to_vec();
            twice.extend_from_slice(format!("&{field}").as_bytes());
            prop_assert_eq!(form_field(&twice, name), Err(FormError::Repeated(name.to_owned())));
            check_open_req(&value)?;
        }
        Err(FormError::Missing(n) | FormError::Repeated(n) | FormError::NotUtf8(n)) => {
            prop_assert_eq!(n, name)
        }
    }
    Ok(())
}

/// Every byte that is not alphanumeric as `%XX`.
fn encode_all(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

// ---- Strategies ---------------------------------------------------------------

/// Bytes, weighted towards the ones JSON and forms give meaning to.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        2 => any::<u8>(),
        3 => prop::sample::select(b"{}[]\":,\\ 0123456789.eE-+tfnul%&=\n\xc3\xa9\xe6\xb5\x8b\xff".to_vec()),
    ];
    prop::collection::vec(byte, 0..400)
}

const AWKWARD_CHARS: [char; 18] = [
    '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}', '\u{2028}', '测', '😀', '|', '&', '=',
    '+', '%', ' ',
];

/// Text, weighted towards what escaping and the formats care about.
fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    let interesting = prop_oneof![
        4 => any::<char>(),
        1 => prop::sample::select(AWKWARD_CHARS.to_vec()),
    ];
    prop::collection::vec(interesting, min..=max).prop_map(|chars| chars.into_iter().collect())
}

/// A record's text: [`text`] without a NUL, which no field may hold (each drawn is put
/// back as U+001F).
fn field_text(min: usize, max: usize) -> impl Strategy<Value = String> {
    text(min, max).prop_map(|s| s.replace('\0', "\u{1f}"))
}

/// An id as customs may send one: [`text`] without control characters,
/// which an id never holds (each drawn is put back as a middle dot).
fn id_text(min: usize, max: usize) -> impl Strategy<Value = String> {
    text(min, max).prop_map(|s| s.chars().map(|c| if c.is_ascii_control() { '·' } else { c }).collect())
}

/// A JSON string token, including escapes serde_json reads and lone
/// surrogates (`\ud800`), which a raw JSON value lets through.
fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => text(0, 8).prop_map(|s| {
            let token = serde_json::to_string(&s).unwrap();
            token[1..token.len() - 1].to_owned()
        }),
        1 => prop::sample::select(vec![
            "\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\u001F", "\\/", "\\b", "\\f", "||", "\\\"",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// A JSON number token: ordinary, huge, tiny, negative, with exponents.
fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (any::<u32>(), 0u32..100_000).prop_map(|(i, f)| format!("{i}.{f:05}")),
        (1usize..400).prop_map(|n| "9".repeat(n)),
        (1u32..9, -999_999i64..999_999).prop_map(|(m, e)| format!("{m}e{e}")),
        prop::sample::select(vec!["-0", "0.0", "5.0", "1E+2", "1e-6", "99999999999999.99999", "1e400", "-1"])
            .prop_map(str::to_owned),
    ]
}

const KEYS: [&str; 24] = [
    "payExchangeInfoHead",
    "payExchangeInfoLists",
    "guid",
    "initalRequest",
    "ebpCode",
    "payCode",
    "totalAmount",
    "currency",
    "verDept",
    "payType",
    "tradingTime",
    "note",
    "orderNo",
    "goodsInfo",
    "recpAccount",
    "gname",
    "itemLink",
    "sessionID",
    "serviceTime",
    "certNo",
    "signValue",
    "x",
    "",
    "a/b~c",
];

/// Any JSON text, as text: keys repeat, numbers are any size.
fn json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
        json_number(),
        json_string(),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        let key =
            prop_oneof![prop::sample::select(KEYS.to_vec()).prop_map(|k| format!("\"{k}\"")), json_string()];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((key, inner), 0..6).prop_map(|members| {
                let members: Vec<String> = members.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// Whitespace JSON allows between tokens.
fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t", "\r\n  "])
}

/// Nested arrays or objects, `depth` deep, around `inner`.
fn nested(depth: usize, inner: &str, objects: bool) -> String {
    if objects {
        format!("{}{inner}{}", "{\"x\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// Values the fields of the formats take, or nearly.
const FIELD_VALUES: [&str; 27] = [
    "\"\"",
    "\"142\"",
    "\"1\"",
    "\"4\"",
    "\"20240229235959\"",
    "\"20230229235959\"",
    "100",
    "\"100\"",
    "\"100.5\"",
    "1e-5",
    "\"9D55BA71-22DE-41F4-8B50-C36C83B3B530\"",
    "\"9d55ba71-22de-41f4-8b50-c36c83b3b530\"",
    "[]",
    "{}",
    "[{}]",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "1533271903898",
    "\"1533271903898\"",
    "18446744073709551615",
    "18446744073709551616",
    "\"SO 1\"",
    "\"SO1\"",
    "\"fe2374-8fnejf97-32839218\"",
    "[{\"gname\":\"g\",\"itemLink\":\"l\"}]",
    "\"4404840022\"",
    "\"2018121222001354081010726129\"",
];

/// A JSON value meant to upset a parser: any JSON, deep nesting, a huge
/// number, a long string, or one of the record's own values.
fn nasty_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => json(),
        1 => (1usize..2_000, any::<bool>()).prop_map(|(depth, objects)| nested(depth, "1", objects)),
        1 => (1usize..3_000).prop_map(|n| format!("\"{}\"", "测".repeat(n))),
        1 => (1usize..3_000).prop_map(|n| "1".repeat(n)),
        2 => prop::sample::select(FIELD_VALUES.to_vec()).prop_map(str::to_owned),
    ]
}

/// A JSON object as its members, each value as raw text, so that mutations
/// can repeat keys and keep values byte-exact.
#[derive(Debug, Clone)]
struct Members(Vec<(String, String)>);

impl Members {
    fn of(text: &str) -> Members {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap();
        Members(object.into_iter().map(|(k, v)| (k, v.to_string())).collect())
    }

    fn get(&self, key: &str) -> &str {
        &self.0.iter().find(|(k, _)| k == key).unwrap().1
    }

    fn write(&self) -> String {
        let members: Vec<String> =
            self.0.iter().map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap())).collect();
        format!("{{{}}}", members.join(","))
    }

    fn apply(&mut self, mutation: &Mutation) {
        let n = self.0.len();
        match mutation {
            Mutation::Set(i, value) if n > 0 => self.0[i % n].1 = value.clone(),
            Mutation::Remove(i) if n > 0 => drop(self.0.remove(i % n)),
            Mutation::Repeat(i, value) if n > 0 => {
                let key = self.0[i % n].0.clone();
                self.0.insert(i % (n + 1), (key, value.clone()));
            }
            Mutation::Insert(key, value) => self.0.push((key.clone(), value.clone())),
            Mutation::Swap(i, j) if n > 0 => self.0.swap(i % n, j % n),
            _ => {}
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, String),
    Remove(usize),
    Repeat(usize, String),
    Insert(String, String),
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let key = prop_oneof![prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned), text(0, 6)];
    prop_oneof![
        5 => (any::<usize>(), nasty_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => (any::<usize>(), nasty_value()).prop_map(|(i, v)| Mutation::Repeat(i, v)),
        1 => (key, nasty_value()).prop_map(|(k, v)| Mutation::Insert(k, v)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Swap(i, j)),
    ]
}

/// Where in a record a mutation applies.
#[derive(Debug, Clone, Copy)]
enum Place {
    Top,
    Head,
    Order,
    Goods,
}

/// The valid complete record with a few of its fields mutated.
fn near_valid_record() -> impl Strategy<Value = String> {
    let place = prop::sample::select(vec![Place::Top, Place::Head, Place::Head, Place::Order, Place::Goods]);
    prop::collection::vec((place, mutation()), 1..4).prop_map(|mutations| {
        let mut top = Members::of(COMPLETE_RECORD);
        let mut head = Members::of(top.get("payExchangeInfoHead"));
        let lists: Vec<serde_json::Value> = serde_json::from_str(top.get("payExchangeInfoLists")).unwrap();
        let mut order = Members::of(&lists[0].to_string());
        let goods_list: Vec<serde_json::Value> = serde_json::from_str(order.get("goodsInfo")).unwrap();
        let mut goods = Members::of(&goods_list[0].to_string());
        for (place, mutation) in &mutations {
            match place {
                Place::Head => head.apply(mutation),
                Place::Order => order.apply(mutation),
                Place::Goods => goods.apply(mutation),
                Place::Top => {}
            }
        }
        if let Some(at) = order.0.iter().position(|(k, _)| k == "goodsInfo") {
            order.0[at].1 = format!("[{}]", goods.write());
        }
        if let Some(at) = top.0.iter().position(|(k, _)| k == "payExchangeInfoHead") {
            top.0[at].1 = head.write();
        }
        if let Some(at) = top.0.iter().position(|(k, _)| k == "payExchangeInfoLists") {
            top.0[at].1 = format!("[{}]", order.write());
        }
        for (place, mutation) in &mutations {
            if let Place::Top = place {
                top.apply(mutation);
            }
        }
        top.write()
    })
}

/// Text with a few characters inserted, removed or replaced.
fn edited(base: &'static str) -> impl Strategy<Value = String> {
    let edit = (
        any::<usize>(),
        0usize..3,
        prop_oneof![
            any::<char>(),
            prop::sample::select(vec!['"', '|', '{', '}', '[', ']', ',', ':', '\\', '5'])
        ],
    );
    prop::collection::vec(edit, 1..4).prop_map(move |edits| {
        let mut chars: Vec<char> = base.chars().collect();
        for (at, kind, c) in edits {
            let at = at % (chars.len() + 1);
            match kind {
                0 => chars.insert(at, c),
                1 if at < chars.len() => drop(chars.remove(at)),
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

/// A real upload body with members mutated.
fn near_valid_upload() -> impl Strategy<Value = String> {
    (prop::sample::select(vec![B_UPLOAD, C_UPLOAD]), prop::collection::vec(mutation(), 1..3)).prop_map(
        |(base, mutations)| {
            let raw: &serde_json::value::RawValue = serde_json::from_str(base).unwrap();
            let members: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(raw.get()).unwrap();
            // Keep head and lists byte-exact (`5.0`): cut them from the text.
            let mut upload = Members(members.keys().map(|k| (k.clone(), raw_member(base, k))).collect());
            for mutation in &mutations {
                upload.apply(mutation);
            }
            upload.write()
        },
    )
}

/// The raw text of a top-level member of an object without duplicates.
fn raw_member(object: &str, key: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Any(std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>);
    let Any(members) = serde_json::from_str(object).unwrap();
    members[key].get().to_owned()
}

// ---- Valid inputs, written in any of the ways JSON allows ----------------------

fn guid() -> impl Strategy<Value = Guid> {
    any::<[u8; 16]>().prop_map(Guid::from_random_bytes)
}

fn goods_item() -> impl Strategy<Value = GoodsItem> {
    (field_text(1, 12), field_text(1, 30)).prop_map(|(gname, item_link)| GoodsItem { gname, item_link })
}

fn order(index: usize) -> impl Strategy<Value = PayOrder> {
    (
        field_text(1, 10),
        prop::collection::vec(goods_item(), 1..3),
        field_text(1, 20),
        field_text(0, 18),
        field_text(1, 30),
    )
        .prop_map(move |(order_no, goods_info, recp_account, recp_code, recp_name)| PayOrder {
            order_no: format!("{index}-{order_no}"),
            goods_info,
            recp_account,
            recp_code,
            recp_name,
        })
}

/// A trading time that exists, leap days included.
fn trading_time() -> impl Strategy<Value = String> {
    (1u32..=9999, 1u32..=12, 1u32..=31, 0u32..24, 0u32..60, 0u32..60).prop_map(|(y, mo, d, h, mi, s)| {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days = match mo {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        format!("{y:04}{mo:02}{:02}{h:02}{mi:02}{s:02}", (d - 1) % days + 1)
    })
}

fn record() -> impl Strategy<Value = PaymentRecord> {
    let head = (
        guid(),
        (field_text(1, 60), field_text(1, 60), field_text(1, 18), field_text(1, 18), field_text(1, 60)),
        0u64..10_000_000_000_000_000_000,
        (0u32..1000).prop_map(|n| format!("{n:03}")),
        prop::sample::select(vec![VerDept::UnionPay, VerDept::NetsUnion, VerDept::Other]),
        prop::option::of(prop::sample::select(vec![
            PayType::App,
            PayType::Pc,
            PayType::QrScan,
            PayType::Other,
        ])),
        trading_time(),
        field_text(0, 40),
    );
    let lists = (1usize..4).prop_flat_map(|n| (0..n).map(order).collect::<Vec<_>>());
    (head, lists).prop_map(
        |(
            (guid, (req, resp, ebp, pay_code, txn), units, currency, ver_dept, pay_type, trading_time, note),
            lists,
        )| {
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
                    trading_time,
                    note,
                },
                lists,
            }
        },
    )
}

/// The ways of writing an amount that all mean `amount`.
fn spellings(amount: Amount) -> Vec<String> {
    let canonical = amount.to_string();
    let units = amount.units();
    let mut all = vec![
        canonical.clone(),
        format!("\"{canonical}\""),
        format!("{units}e-5"),
        if canonical.contains('.') { format!("{canonical}000") } else { format!("{canonical}.000") },
    ];
    if units == 0 {
        all.push("-0".to_owned());
    } else {
        all.push(format!("{units}0E-6"));
    }
    all
}

/// How a generated record is written: member order, whitespace, amount.
#[derive(Debug, Clone)]
struct Layout {
    seed: Vec<usize>,
    spaces: Vec<&'static str>,
    amount: usize,
    omit_empty: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::collection::vec(any::<usize>(), 64),
        prop::collection::vec(ws(), 64),
        any::<usize>(),
        any::<bool>(),
    )
        .prop_map(|(seed, spaces, amount, omit_empty)| Layout { seed, spaces, amount, omit_empty })
}

impl Layout {
    /// An object of `members` in a shuffled order with whitespace around the tokens.
    fn object(&self, salt: usize, mut members: Vec<(&str, String)>) -> String {
        for i in (1..members.len()).rev() {
            members.swap(i, self.seed[(i + salt) % self.seed.len()] % (i + 1));
        }
        let sp = |i: usize| self.spaces[(i + salt) % self.spaces.len()];
        let members: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                format!(
                    "{}{}{}:{}{v}{}",
                    sp(4 * i),
                    serde_json::to_string(k).unwrap(),
                    sp(4 * i + 1),
                    sp(4 * i + 2),
                    sp(4 * i + 3)
                )
            })
            .collect();
        format!("{{{}}}", members.join(","))
    }

    fn record(&self, record: &PaymentRecord, with_guid: bool) -> String {
        let s = |v: &str| serde_json::to_string(v).unwrap();
        let h = &record.head;
        let amounts = spellings(h.total_amount);
        let mut head = vec![
            ("initalRequest", s(&h.inital_request)),
            ("initalResponse", s(&h.inital_response)),
            ("ebpCode", s(h.ebp_code.as_deref().unwrap())),
            ("payCode", s(&h.pay_code)),
            ("payTransactionId", s(&h.pay_transaction_id)),
            ("totalAmount", amounts[self.amount % amounts.len()].clone()),
            ("currency", s(&h.currency)),
            ("verDept", s(h.ver_dept.code())),
            ("tradingTime", s(&h.trading_time)),
        ];
        if with_guid {
            head.push(("guid", s(h.guid.as_ref().unwrap().as_str())));
        }
        if !(self.omit_empty && h.pay_type.is_none()) {
            head.push(("payType", s(h.pay_type.map_or("", PayType::code))));
        }
        if !(self.omit_empty && h.note.is_empty()) {
            head.push(("note", s(&h.note)));
        }
        let orders: Vec<String> = record
            .lists
            .iter()
            .enumerate()
            .map(|(i, order)| {
                let goods: Vec<String> = order
                    .goods_info
                    .iter()
                    .enumerate()
                    .map(|(j, g)| {
                        self.object(i * 7 + j, vec![("gname", s(&g.gname)), ("itemLink", s(&g.item_link))])
                    })
                    .collect();
                let mut members = vec![
                    ("orderNo", s(&order.order_no)),
                    ("goodsInfo", format!("[{}]", goods.join(","))),
                    ("recpAccount", s(&order.recp_account)),
                    ("recpName", s(&order.recp_name)),
                ];
                if !(self.omit_empty && order.recp_code.is_empty()) {
                    members.push(("recpCode", s(&order.recp_code)));
                }
                self.object(i * 3 + 1, members)
            })
            .collect();
        let head = self.object(5, head);
        self.object(
            11,
            vec![("payExchangeInfoHead", head), ("payExchangeInfoLists", format!("[{}]", orders.join(",")))],
        )
    }
}

/// A form component for `text`, each character written literally (where
/// that is unambiguous), as `+` (a space) or percent-escaped in either case.
fn form_encoded(text: String) -> impl Strategy<Value = (String, String)> {
    let n = text.len();
    prop::collection::vec(0u8..4, n).prop_map(move |choices| {
        let mut out = String::new();
        for (i, c) in text.char_indices() {
            match choices[i] {
                0 if !matches!(c, '&' | '=' | '+' | '%') => out.push(c),
                1 if c == ' ' => out.push('+'),
                how => {
                    for b in c.to_string().bytes() {
                        out.push_str(&if how == 2 { format!("%{b:02x}") } else { format!("%{b:02X}") });
                    }
                }
            }
        }
        (text.clone(), out)
    })
}

/// A form field name other than `openReq`.
fn other_key() -> impl Strategy<Value = String> {
    text(1, 8).prop_filter("another field", |k| k != "openReq")
}

/// Percent-escapes that decode to bytes that are not UTF-8.
const NOT_UTF8: [&str; 8] = ["%FF", "%C3", "%C3%28", "%C0%AF", "%ED%A0%80", "%F4%90%80%80", "%E6%B5", "%80"];

// ---- The properties -------------------------------------------------------------
//
// The bodies are functions below the `proptest!` blocks, where rustfmt reaches them.

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn any_bytes_are_answered(data in bytes()) {
        any_bytes(&data)?;
    }

    #[test]
    fn any_json_is_answered(doc in json()) {
        check_open_req(&doc)?;
        check_record(&doc)?;
        check_upload_and_presign(&doc)?;
    }

    #[test]
    fn near_valid_records_are_answered(doc in near_valid_record()) {
        check_record(&doc)?;
        check_record(&format!("[{doc}]"))?;
    }

    #[test]
    fn near_valid_uploads_and_presigns_are_answered(
        upload in near_valid_upload(),
        edited_upload in edited(B_UPLOAD),
        edited_presign in prop_oneof![edited(A_PRESIGN), edited(B_PRESIGN), edited(C_PRESIGN)],
    ) {
        check_upload_and_presign(&upload)?;
        check_upload_and_presign(&edited_upload)?;
        check_upload_and_presign(&edited_presign)?;
    }

    #[test]
    fn near_valid_open_reqs_are_answered(mutations in prop::collection::vec(mutation(), 0..3)) {
        near_valid_open_req(&mutations)?;
    }

    #[test]
    fn any_form_is_answered(
        pairs in prop::collection::vec((text(0, 8), text(0, 20), 0u8..3), 0..8),
        name in prop::sample::select(vec!["openReq", "", "a b", "测"]),
    ) {
        any_form(&pairs, name)?;
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn valid_records_are_accepted_however_written(record in record(), layout in layout()) {
        valid_record(&record, &layout)?;
    }

    #[test]
    fn valid_open_reqs_are_accepted_however_written(
        req in (id_text(1, 40), id_text(1, 40), any::<u64>())
            .prop_map(|(session_id, order_no, service_time)| OpenReq { session_id, order_no, service_time }),
        time_as_string in any::<bool>(),
        extra in prop::collection::vec((text(0, 8), nasty_value()), 0..4),
        seed in prop::collection::vec(any::<usize>(), 8),
        spaces in prop::collection::vec(ws(), 8),
        repeat in any::<Option<usize>>(),
    ) {
        valid_open_req(req, time_as_string, extra, &seed, &spaces, repeat)?;
    }

    #[test]
    fn valid_forms_decode_to_their_values(
        (value, encoded) in text(0, 60).prop_flat_map(form_encoded),
        others in prop::collection::vec((other_key(), text(0, 8)), 0..4),
        at in any::<usize>(),
        bad in prop::sample::select(NOT_UTF8.to_vec()),
    ) {
        valid_form(&value, &encoded, &others, at, bad)?;
    }
}

fn any_bytes(data: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(data).into_owned();
    check_form(data, "openReq")?;
    check_form(data, "")?;
    check_open_req(&text)?;
    check_record(&text)?;
    check_upload_and_presign(&text)
}

fn near_valid_open_req(mutations: &[Mutation]) -> Result<(), TestCaseError> {
    let mut req = Members(vec![
        ("sessionID".into(), "\"fe2374-8fnejf97-32839218\"".into()),
        ("orderNo".into(), "\"SO1\"".into()),
        ("serviceTime".into(), "1533271903898".into()),
    ]);
    for mutation in mutations {
        req.apply(mutation);
    }
    check_open_req(&req.write())
}

fn any_form(pairs: &[(String, String, u8)], name: &str) -> Result<(), TestCaseError> {
    // Components written raw, with `+`s, or percent-escaped with an escape that is not UTF-8.
    let component = |s: &str, how: u8| match how {
        0 => s.to_owned(),
        1 => s.replace(' ', "+"),
        _ => format!("{}{}", encode_all(s), NOT_UTF8[s.len() % NOT_UTF8.len()]),
    };
    let body: Vec<String> =
        pairs.iter().map(|(k, v, how)| format!("{}={}", component(k, *how), component(v, *how))).collect();
    check_form(body.join("&").as_bytes(), name)
}

fn valid_record(record: &PaymentRecord, layout: &Layout) -> Result<(), TestCaseError> {
    let complete = layout.record(record, true);
    let parsed = PaymentRecord::parse(&complete, RecordRules::COMPLETE);
    prop_assert_eq!(parsed.as_ref(), Ok(record), "{}", complete);
    check_accepted_record(record, RecordRules::COMPLETE)?;
    // Pushed by the platform: no guid.
    let pushed_text = layout.record(record, false);
    let mut pushed = record.clone();
    pushed.head.guid = None;
    prop_assert_eq!(PaymentRecord::parse(&pushed_text, RecordRules::PLATFORM), Ok(pushed));
    // With one from the platform, or without one when complete: refused, with the reason.
    let Err(problems) = PaymentRecord::parse(&complete, RecordRules::PLATFORM) else {
        return Err(TestCaseError::fail("a guid accepted from the platform"));
    };
    prop_assert_eq!(problems.0.len(), 1);
    prop_assert_eq!(problems.0[0].pointer.as_str(), "/payExchangeInfoHead/guid");
    prop_assert!(PaymentRecord::parse(&pushed_text, RecordRules::COMPLETE).is_err());
    Ok(())
}

fn valid_open_req(
    req: OpenReq,
    time_as_string: bool,
    extra: Vec<(String, String)>,
    seed: &[usize],
    spaces: &[&str],
    repeat: Option<usize>,
) -> Result<(), TestCaseError> {
    const NAMES: [&str; 3] = ["sessionID", "orderNo", "serviceTime"];
    let s = |v: &str| serde_json::to_string(v).unwrap();
    let time = req.service_time;
    let time = if time_as_string { format!("\"{time}\"") } else { time.to_string() };
    let mut members =
        vec![(s(NAMES[0]), s(&req.session_id)), (s(NAMES[1]), s(&req.order_no)), (s(NAMES[2]), time)];
    members.extend(extra.into_iter().filter(|(k, _)| !NAMES.contains(&k.as_str())).map(|(k, v)| (s(&k), v)));
    let extra_keys: std::collections::HashSet<&String> = members[3..].iter().map(|(k, _)| k).collect();
    let unique = extra_keys.len() == members.len() - 3;
    for i in (1..members.len()).rev() {
        members.swap(i, seed[i % seed.len()] % (i + 1));
    }
    let write = |members: &[(String, String)]| {
        let sp = |i: usize| spaces[i % spaces.len()];
        let members: Vec<String> =
            members.iter().enumerate().map(|(i, (k, v))| format!("{}{k}{}:{v}", sp(i), sp(i + 3))).collect();
        format!("{}{{{}}}{}", sp(5), members.join(","), sp(6))
    };
    let text = write(&members);
    if unique {
        prop_assert_eq!(OpenReq::parse(&text), Ok(req), "{}", text);
    }
    check_open_req(&text)?;
    // Any key given twice is refused.
    if let Some(i) = repeat {
        members.push(members[i % members.len()].clone());
        let twice = write(&members);
        prop_assert!(matches!(OpenReq::parse(&twice), Err(OpenReqError::Duplicate(_))), "{}", twice);
    }
    Ok(())
}

fn valid_form(
    value: &str,
    encoded: &str,
    others: &[(String, String)],
    at: usize,
    bad: &str,
) -> Result<(), TestCaseError> {
    let field = |pairs: &[String], name: &str| form_field(pairs.join("&").as_bytes(), name);
    let mut pairs: Vec<String> =
        others.iter().map(|(k, v)| format!("{}={}", encode_all(k), encode_all(v))).collect();
    let at = at % (pairs.len() + 1);
    pairs.insert(at, format!("openReq={encoded}"));
    prop_assert_eq!(field(&pairs, "openReq"), Ok(value.to_owned()));
    for (k, v) in others {
        if others.iter().filter(|(k2, _)| k2 == k).count() == 1 {
            prop_assert_eq!(field(&pairs, k), Ok(v.clone()));
        }
    }
    pairs[at] = format!("openReq={encoded}{bad}");
    prop_assert_eq!(field(&pairs, "openReq"), Err(FormError::NotUtf8("openReq".into())));
    pairs[at] = format!("openReq={encoded}");
    pairs.push("openReq=".to_owned());
    prop_assert_eq!(field(&pairs, "openReq"), Err(FormError::Repeated("openReq".into())));
    Ok(())
}

#[test]
fn form_encoded_values_decode_to_the_text() {
    assert_eq!(form_field(b"openReq=%e6%b5%8B+a%2B%26%3D%25", "openReq").unwrap(), "测 a+&=%");
}

// ---- Inputs built to be slow or deep ---------------------------------------------

const DEEP: usize = 100_000;

#[test]
fn deep_nesting_is_answered() {
    within(LIMIT, || {
        for objects in [false, true] {
            let deep = nested(DEEP, "1", objects);
            let req = format!(r#"{{"sessionID":"S","orderNo":"O","serviceTime":1,"extra":{deep}}}"#);
            assert_eq!(OpenReq::parse(&req).unwrap().order_no, "O");
            let unclosed =
                format!(r#"{{"sessionID":"S","orderNo":"O","serviceTime":1,"extra":{}"#, "[".repeat(DEEP));
            assert!(matches!(OpenReq::parse(&unclosed), Err(OpenReqError::NotJson(_))));
            assert!(OpenReq::parse(&deep).is_err());

            let record = COMPLETE_RECORD.replace("\"note\": \"批量订单\"", &format!("\"note\": {deep}"));
            let Err(problems) = PaymentRecord::parse(&record, RecordRules::COMPLETE) else {
                panic!("accepted")
            };
            assert_eq!(problems.0[0].pointer.as_str(), "/payExchangeInfoHead/note");
            assert!(PaymentRecord::parse(&deep, RecordRules::PLATFORM).is_err());

            let upload = B_UPLOAD.replacen(r#"{"guid":"#, &format!(r#"{{"deep":{deep},"guid":"#), 1);
            let parsed = UploadBody::parse(&upload).unwrap();
            assert!(parsed.record().is_err());
            let presign = parsed.presign.clone();
            assert_eq!(PreSign::parse(presign.as_str()), Ok(presign));
            assert!(UploadBody::parse(&deep).is_err());
            assert!(
                PreSign::parse(&format!("\"sessionID\":\"S\"||\"payExchangeInfoHead\":\"{deep}")).is_err()
            );
        }
    });
}

/// Bodies as large as the payments endpoint takes (8 MiB by default) must
/// be answered in time, whatever they hold.
#[test]
fn many_members_are_answered_in_linear_time() {
    within(LIMIT, || {
        let keys: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":0")).collect();
        let wide = format!(r#"{{"sessionID":"S","orderNo":"O","serviceTime":1,{}}}"#, keys.join(","));
        assert_eq!(OpenReq::parse(&wide).unwrap().session_id, "S");
        let wide_upload = B_UPLOAD.replacen('{', &format!("{{{},", keys.join(",")), 1);
        assert_eq!(UploadBody::parse(&wide_upload).unwrap_err().0.len(), keys.len());
        let wide_head = COMPLETE_RECORD.replacen("\"guid\"", &format!("{},\"guid\"", keys.join(",")), 1);
        assert_eq!(PaymentRecord::parse(&wide_head, RecordRules::COMPLETE).unwrap_err().0.len(), keys.len());
    });
}

#[test]
fn many_orders_are_answered_in_linear_time() {
    within(LIMIT, || {
        let record: serde_json::Value = serde_json::from_str(COMPLETE_RECORD).unwrap();
        let order = record["payExchangeInfoLists"][0].to_string();
        let orders: Vec<String> =
            (0..30_000).map(|i| order.replace("SO1710301150602574003", &format!("SO{i}"))).collect();
        let text = format!(
            r#"{{"payExchangeInfoHead":{},"payExchangeInfoLists":[{}]}}"#,
            record["payExchangeInfoHead"],
            orders.join(",")
        );
        assert_eq!(PaymentRecord::parse(&text, RecordRules::COMPLETE).unwrap().lists.len(), orders.len());
        let twice = text.replace("\"SO1\"", "\"SO0\"");
        let Err(problems) = PaymentRecord::parse(&twice, RecordRules::COMPLETE) else { panic!("accepted") };
        assert_eq!(problems.0.len(), 1);
        assert!(problems.0[0].message.contains("(also at /payExchangeInfoLists/0)"), "{problems}");
    });
}

/// Every field of the valid record, set to each value a parser may trip on.
#[test]
fn every_field_takes_every_awkward_value() {
    let values = [
        "null",
        "true",
        "0",
        "-0",
        "1e400",
        "-1",
        "5.0",
        "\"\"",
        "\" \"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\udfff\\ud800\"",
        "\"\\ud83d\\ude00\"",
        "\"||\"",
        "[]",
        "[\"1\"]",
        "{}",
        "{\"a\":1,\"a\":2}",
    ];
    let long = [format!("\"{}\"", "x".repeat(8001)), "9".repeat(5000), nested(1000, "\"1\"", false)];
    let top = Members::of(COMPLETE_RECORD);
    let head = Members::of(top.get("payExchangeInfoHead"));
    let order: serde_json::Value = serde_json::from_str(COMPLETE_RECORD).unwrap();
    let order = Members::of(&order["payExchangeInfoLists"][0].to_string());
    for value in values.iter().map(|v| v.to_string()).chain(long) {
        for (i, (key, _)) in head.0.iter().enumerate() {
            let mut changed = head.clone();
            changed.0[i].1 = value.clone();
            let doc = format!(
                r#"{{"payExchangeInfoHead":{},"payExchangeInfoLists":{}}}"#,
                changed.write(),
                top.get("payExchangeInfoLists")
            );
            check_record(&doc).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        }
        for (i, (key, _)) in order.0.iter().enumerate() {
            let mut changed = order.clone();
            changed.0[i].1 = value.clone();
            let doc = format!(
                r#"{{"payExchangeInfoHead":{},"payExchangeInfoLists":[{}]}}"#,
                top.get("payExchangeInfoHead"),
                changed.write()
            );
            check_record(&doc).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        }
        for key in ["sessionID", "orderNo", "serviceTime"] {
            let req = Members(vec![
                ("sessionID".into(), "\"S\"".into()),
                ("orderNo".into(), "\"O\"".into()),
                ("serviceTime".into(), "1".into()),
            ]);
            let mut changed = req.clone();
            changed.0.iter_mut().find(|(k, _)| k == key).unwrap().1 = value.clone();
            check_open_req(&changed.write()).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        }
    }
}
