//! The payment record: `{"payExchangeInfoHead":{…},"payExchangeInfoLists":[…]}`
//! as the platform hands it to us, validated against every rule of spec
//! section 2. Validation reports every problem at once, each at its JSON
//! Pointer, because an integrator fixing a feed wants the whole list.

use std::collections::HashMap;
use std::fmt;

use serde_json::value::RawValue;

use crate::amount::Amount;
use crate::json::{self, Pointer, RawObject};

/// One problem of a document, at the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pointer: Pointer,
    pub message: String,
}

impl Problem {
    pub fn new(pointer: Pointer, message: impl Into<String>) -> Problem {
        Problem { pointer, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// Every problem of a refused document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_problems(.0))]
pub struct Problems(pub Vec<Problem>);

fn display_problems(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ")
}

/// The upload's unique serial: 36 characters, no lower-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Guid(String);

impl Guid {
    pub const LEN: usize = 36;

    pub fn parse(text: &str) -> Result<Guid, String> {
        let len = text.chars().count();
        if len != Self::LEN {
            return Err(format!("must be exactly {} characters, not {len}", Self::LEN));
        }
        if text.chars().any(char::is_lowercase) {
            return Err("must not contain lower-case letters".to_owned());
        }
        Ok(Guid(text.to_owned()))
    }

    /// An upper-case UUID (version 4 layout) from 16 random bytes. The
    /// caller supplies the randomness so that this crate stays pure.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Guid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        Guid(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `verDept`: who cleared the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerDept {
    UnionPay,
    NetsUnion,
    Other,
}

impl VerDept {
    pub fn code(self) -> &'static str {
        match self {
            VerDept::UnionPay => "1",
            VerDept::NetsUnion => "2",
            VerDept::Other => "3",
        }
    }

    fn parse(code: &str) -> Option<VerDept> {
        match code {
            "1" => Some(VerDept::UnionPay),
            "2" => Some(VerDept::NetsUnion),
            "3" => Some(VerDept::Other),
            _ => None,
        }
    }
}

/// `payType`: how the buyer paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayType {
    App,
    Pc,
    QrScan,
    Other,
}

impl PayType {
    pub fn code(self) -> &'static str {
        match self {
            PayType::App => "1",
            PayType::Pc => "2",
            PayType::QrScan => "3",
            PayType::Other => "4",
        }
    }

    fn parse(code: &str) -> Option<PayType> {
        match code {
            "1" => Some(PayType::App),
            "2" => Some(PayType::Pc),
            "3" => Some(PayType::QrScan),
            "4" => Some(PayType::Other),
            _ => None,
        }
    }
}

/// `payExchangeInfoHead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayHead {
    pub guid: Option<Guid>,
    pub inital_request: String,
    pub inital_response: String,
    pub ebp_code: Option<String>,
    pub pay_code: String,
    pub pay_transaction_id: String,
    pub total_amount: Amount,
    pub currency: String,
    pub ver_dept: VerDept,
    pub pay_type: Option<PayType>,
    pub trading_time: String,
    pub note: String,
}

/// One item of `payExchangeInfoLists`: an order paid by this payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayOrder {
    pub order_no: String,
    pub goods_info: Vec<GoodsItem>,
    pub recp_account: String,
    pub recp_code: String,
    pub recp_name: String,
}

/// One item of `goodsInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodsItem {
    pub gname: String,
    pub item_link: String,
}

/// A payment and the orders it paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub head: PayHead,
    pub lists: Vec<PayOrder>,
}

/// Whether a field that depends on the caller may, must or must not appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
    /// Refused, with the reason shown to the sender.
    Forbidden(&'static str),
}

/// What the caller demands of `guid` and `ebpCode`, which differ between a
/// record that is signed as it is and one that the service completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    pub guid: Presence,
    pub ebp_code: Presence,
}

impl RecordRules {
    /// A complete record, signed as given (the `presign` command).
    pub const COMPLETE: RecordRules = RecordRules { guid: Presence::Required, ebp_code: Presence::Required };
    /// A record pushed by the platform: the service makes a new guid for
    /// every upload and fills in its own ebpCode.
    pub const PLATFORM: RecordRules = RecordRules {
        guid: Presence::Forbidden("leave guid out: a new guid is generated for every upload of this payment"),
        ebp_code: Presence::Optional,
    };
}

const HEAD: &str = "payExchangeInfoHead";
const LISTS: &str = "payExchangeInfoLists";
const HEAD_KEYS: [&str; 12] = [
    "guid",
    "initalRequest",
    "initalResponse",
    "ebpCode",
    "payCode",
    "payTransactionId",
    "totalAmount",
    "currency",
    "verDept",
    "payType",
    "tradingTime",
    "note",
];
const ORDER_KEYS: [&str; 5] = ["orderNo", "goodsInfo", "recpAccount", "recpCode", "recpName"];
const GOODS_KEYS: [&str; 2] = ["gname", "itemLink"];

impl PaymentRecord {
    /// Parses and validates a record from its JSON text.
    pub fn parse(text: &str, rules: RecordRules) -> Result<PaymentRecord, Problems> {
        match serde_json::from_str::<Box<RawValue>>(text) {
            Ok(raw) => Self::from_raw(&raw, &Pointer::root(), rules),
            Err(e) => Err(Problems(vec![Problem::new(Pointer::root(), format!("not valid JSON: {e}"))])),
        }
    }

    /// Parses and validates a record found at `at` inside a larger document.
    pub fn from_raw(raw: &RawValue, at: &Pointer, rules: RecordRules) -> Result<PaymentRecord, Problems> {
        let mut problems = Vec::new();
        let record = Walker { problems: &mut problems, rules }.record(raw, at);
        match record {
            Some(record) if problems.is_empty() => Ok(record),
            _ => Err(Problems(problems)),
        }
    }

    /// The orders this payment paid, in list order.
    pub fn order_nos(&self) -> impl Iterator<Item = &str> {
        self.lists.iter().map(|order| order.order_no.as_str())
    }

    /// The record's identity: a payment is one `payCode` + `payTransactionId`.
    pub fn payment_key(&self) -> (&str, &str) {
        (&self.head.pay_code, &self.head.pay_transaction_id)
    }
}

/// Collects problems while turning raw JSON into typed values. Each method
/// returns None when the value at hand is unusable; the problem is recorded.
struct Walker<'a> {
    problems: &'a mut Vec<Problem>,
    rules: RecordRules,
}

impl Walker<'_> {
    fn problem(&mut self, at: &Pointer, message: impl Into<String>) {
        self.problems.push(Problem::new(at.clone(), message));
    }

    /// An object with exactly the allowed keys (absent ones are for the
    /// field checks to judge).
    fn object(&mut self, raw: &RawValue, at: &Pointer, keys: &[&str]) -> Option<RawObject> {
        let Some(object) = RawObject::parse(raw) else {
            self.problem(at, format!("must be an object, not {}", json::type_name(raw)));
            return None;
        };
        for (key, _) in &object.members {
            if !keys.contains(&key.as_str()) {
                self.problem(&at.key(key), format!("unknown field; allowed here: {}", keys.join(", ")));
            }
        }
        if let Some(key) = &object.duplicate {
            self.problem(&at.key(key), "appears more than once");
        }
        Some(object)
    }

    fn array(&mut self, raw: Option<&RawValue>, at: &Pointer, what: &str) -> Option<Vec<Box<RawValue>>> {
        let Some(raw) = raw else {
            self.problem(at, "is required");
            return None;
        };
        let Some(items) = json::raw_array(raw) else {
            self.problem(at, format!("must be an array, not {}", json::type_name(raw)));
            return None;
        };
        if items.is_empty() {
            self.problem(at, format!("must hold at least one {what}"));
            return None;
        }
        Some(items)
    }

    /// A text field: a JSON string of at most `max` characters; a required
    /// one must not be empty, an absent optional one reads as "".
    fn text(
        &mut self,
        object: &RawObject,
        at: &Pointer,
        key: &str,
        max: usize,
        presence: Presence,
    ) -> Option<String> {
        let at = at.key(key);
        let Some(raw) = object.get(key) else {
            if presence == Presence::Required {
                self.problem(&at, "is required");
                return None;
            }
            return Some(String::new());
        };
        if let Presence::Forbidden(reason) = presence {
            self.problem(&at, reason);
            return None;
        }
        let Some(text) = json::raw_string(raw) else {
            self.problem(&at, not_text(raw));
            return None;
        };
        let len = text.chars().count();
        if len > max {
            self.problem(&at, format!("is {len} characters long; at most {max} are allowed"));
            return None;
        }
        if text.is_empty() && presence == Presence::Required {
            self.problem(&at, "must not be empty");
            return None;
        }
        // No payment data holds one, and it would end the text in many a C program (and
        // PostgreSQL's text cannot hold it).
        if text.contains('\0') {
            self.problem(&at, "holds a NUL character (U+0000), which no field may");
            return None;
        }
        Some(text)
    }

    fn required(&mut self, object: &RawObject, at: &Pointer, key: &str, max: usize) -> Option<String> {
        self.text(object, at, key, max, Presence::Required)
    }

    fn optional(&mut self, object: &RawObject, at: &Pointer, key: &str, max: usize) -> Option<String> {
        self.text(object, at, key, max, Presence::Optional)
    }

    /// A field the caller's rules govern; `Some(None)` when validly absent.
    fn governed(
        &mut self,
        object: &RawObject,
        at: &Pointer,
        key: &str,
        max: usize,
        presence: Presence,
    ) -> Option<Option<String>> {
        let text = self.text(object, at, key, max, presence)?;
        // An optional field given as "" is as good as absent: the service
        // fills it in.
        Some(if text.is_empty() { None } else { Some(text) })
    }

    fn record(&mut self, raw: &RawValue, at: &Pointer) -> Option<PaymentRecord> {
        let top = self.object(raw, at, &[HEAD, LISTS])?;
        let head = match top.get(HEAD) {
            Some(raw) => self.head(raw, &at.key(HEAD)),
            None => {
                self.problem(&at.key(HEAD), "is required");
                None
            }
        };
        let lists = self.lists(top.get(LISTS), &at.key(LISTS));
        Some(PaymentRecord { head: head?, lists: lists? })
    }

    fn head(&mut self, raw: &RawValue, at: &Pointer) -> Option<PayHead> {
        let head = self.object(raw, at, &HEAD_KEYS)?;
        let guid = self.governed(&head, at, "guid", Guid::LEN, self.rules.guid);
        let guid = match guid {
            Some(Some(text)) => match Guid::parse(&text) {
                Ok(guid) => Some(Some(guid)),
                Err(why) => {
                    self.problem(&at.key("guid"), why);
                    None
                }
            },
            Some(None) => Some(None),
            None => None,
        };
        let inital_request = self.required(&head, at, "initalRequest", 8000);
        let inital_response = self.required(&head, at, "initalResponse", 8000);
        let ebp_code = self.governed(&head, at, "ebpCode", 18, self.rules.ebp_code);
        let pay_code = self.required(&head, at, "payCode", 18);
        let pay_transaction_id = self.required(&head, at, "payTransactionId", 60);
        let total_amount = self.amount(&head, at);
        let currency = self.required(&head, at, "currency", 4).and_then(|currency| {
            if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_digit()) {
                Some(currency)
            } else {
                self.problem(
                    &at.key("currency"),
                    "must be a customs currency code of three digits (142 = CNY)",
                );
                None
            }
        });
        let ver_dept = self.required(&head, at, "verDept", 1).and_then(|code| {
            let parsed = VerDept::parse(&code);
            if parsed.is_none() {
                self.problem(
                    &at.key("verDept"),
                    "must be \"1\" (UnionPay), \"2\" (NetsUnion) or \"3\" (other)",
                );
            }
            parsed
        });
        let pay_type = self.optional(&head, at, "payType", 1).and_then(|code| {
            if code.is_empty() {
                return Some(None);
            }
            let parsed = PayType::parse(&code);
            if parsed.is_none() {
                self.problem(
                    &at.key("payType"),
                    "must be \"1\" (APP), \"2\" (PC), \"3\" (QR scan), \"4\" (other) or empty",
                );
            }
            parsed.map(Some)
        });
        let trading_time = self.required(&head, at, "tradingTime", 14).and_then(|time| {
            if is_trading_time(&time) {
                Some(time)
            } else {
                self.problem(&at.key("tradingTime"), "must be a real date and time written yyyyMMddHHmmss");
                None
            }
        });
        let note = self.optional(&head, at, "note", 1000);
        Some(PayHead {
            guid: guid?,
            inital_request: inital_request?,
            inital_response: inital_response?,
            ebp_code: ebp_code?,
            pay_code: pay_code?,
            pay_transaction_id: pay_transaction_id?,
            total_amount: total_amount?,
            currency: currency?,
            ver_dept: ver_dept?,
            pay_type: pay_type?,
            trading_time: trading_time?,
            note: note?,
        })
    }

    /// `totalAmount` as a JSON number (read from its raw text) or a string
    /// holding one; never through a float.
    fn amount(&mut self, head: &RawObject, at: &Pointer) -> Option<Amount> {
        let at = at.key("totalAmount");
        let Some(raw) = head.get("totalAmount") else {
            self.problem(&at, "is required");
            return None;
        };
        let text = match json::type_name(raw) {
            "a number" => raw.get().to_owned(),
            "a string" => match json::raw_string(raw) {
                Some(text) => text,
                None => {
                    self.problem(&at, not_text(raw));
                    return None;
                }
            },
            other => {
                self.problem(&at, format!("must be a number, not {other}"));
                return None;
            }
        };
        match Amount::parse(&text) {
            Ok(amount) => Some(amount),
            Err(e) => {
                self.problem(&at, e.to_string());
                None
            }
        }
    }

    fn lists(&mut self, raw: Option<&RawValue>, at: &Pointer) -> Option<Vec<PayOrder>> {
        let items = self.array(raw, at, "order")?;
        let mut orders = Vec::with_capacity(items.len());
        // Where each order number was first seen; a map, so that a push of
        // many orders takes linear time.
        let mut seen: HashMap<String, Pointer> = HashMap::new();
        for (i, raw) in items.iter().enumerate() {
            let order_at = at.index(i);
            let Some(order) = self.order(raw, &order_at) else {
                continue;
            };
            if let Some(first) = seen.get(&order.order_no) {
                let message =
                    format!("order {} is listed twice in this payment (also at {first})", order.order_no);
                self.problem(&order_at.key("orderNo"), message);
                continue;
            }
            seen.insert(order.order_no.clone(), order_at);
            orders.push(order);
        }
        (orders.len() == items.len()).then_some(orders)
    }

    fn order(&mut self, raw: &RawValue, at: &Pointer) -> Option<PayOrder> {
        let order = self.object(raw, at, &ORDER_KEYS)?;
        let order_no = self.required(&order, at, "orderNo", 60);
        let goods_info = self.goods(order.get("goodsInfo"), &at.key("goodsInfo"));
        let recp_account = self.required(&order, at, "recpAccount", 60);
        let recp_code = self.optional(&order, at, "recpCode", 18);
        let recp_name = self.required(&order, at, "recpName", 100);
        Some(PayOrder {
            order_no: order_no?,
            goods_info: goods_info?,
            recp_account: recp_account?,
            recp_code: recp_code?,
            recp_name: recp_name?,
        })
    }

    fn goods(&mut self, raw: Option<&RawValue>, at: &Pointer) -> Option<Vec<GoodsItem>> {
        let items = self.array(raw, at, "goods item")?;
        let goods: Vec<_> = items
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| {
                let at = at.index(i);
                let item = self.object(raw, &at, &GOODS_KEYS)?;
                let gname = self.required(&item, &at, "gname", 250);
                let item_link = self.required(&item, &at, "itemLink", 3000);
                Some(GoodsItem { gname: gname?, item_link: item_link? })
            })
            .collect();
        (goods.len() == items.len()).then_some(goods)
    }
}

/// Why a value is not the text wanted. A JSON string can fail to be text
/// only by escaping a lone surrogate (`"\ud800"`), which no UTF-8 can hold.
fn not_text(raw: &RawValue) -> String {
    match json::type_name(raw) {
        "a string" => {
            "must be text, but escapes a lone surrogate (\\uD800-\\uDFFF without its pair)".to_owned()
        }
        other => format!("must be a JSON string, not {other}"),
    }
}

/// `yyyyMMddHHmmss` naming a date and time that exists (leap years counted).
fn is_trading_time(text: &str) -> bool {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let field = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(u32::MAX);
    let (year, month, day) = (field(0..4), field(4..6), field(6..8));
    let (hour, minute, second) = (field(8..10), field(10..12), field(12..14));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days_in_month).contains(&day) && hour < 24 && minute < 60 && second < 60
}

#[cfg(test)]
mod tests;
