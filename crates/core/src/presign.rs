//! The pre-sign string (spec 3.1) and the upload body (spec 3.4).
//!
//! Head and list JSON are written once, by [`write_record_parts`], into the
//! pre-sign string; the upload body is assembled from the very same bytes.
//! Going the other way, an upload body is taken apart without re-serialising
//! anything, so a pre-sign string rebuilt from it is exactly what was signed
//! (vector `b` signs `"totalAmount":5.0`, which no canonical writer produces).

use std::fmt;
use std::ops::Range;

use serde_json::value::RawValue;

use crate::json::{self, Pointer, RawObject};
use crate::record::{PayHead, PayOrder, PaymentRecord, Problem, Problems, RecordRules};

/// The exact text the card signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreSign {
    text: String,
    /// The sessionID as a JSON string token, quotes included.
    session_id: Range<usize>,
    head: Range<usize>,
    lists: Range<usize>,
    /// The serviceTime digits.
    service_time: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the record has no {0}, which the upload needs")]
    Missing(&'static str),
    #[error("sessionID must not be empty")]
    EmptySessionId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a pre-sign string: {0}")]
pub struct PreSignError(String);

const SESSION_KEY: &str = "\"sessionID\":";
const HEAD_SEPARATOR: &str = "||\"payExchangeInfoHead\":\"";
const LISTS_SEPARATOR: &str = "\"||\"payExchangeInfoLists\":\"";
const TIME_SEPARATOR: &str = "\"||\"serviceTime\":\"";

impl PreSign {
    /// Builds the pre-sign string of one upload of `record` (which must carry
    /// its guid and ebpCode) for the customs request `session_id`.
    pub fn build(record: &PaymentRecord, session_id: &str, service_time: u64) -> Result<PreSign, BuildError> {
        if record.head.guid.is_none() {
            return Err(BuildError::Missing("guid"));
        }
        if record.head.ebp_code.is_none() {
            return Err(BuildError::Missing("ebpCode"));
        }
        if session_id.is_empty() {
            return Err(BuildError::EmptySessionId);
        }
        let mut session_token = String::new();
        json::write_str(&mut session_token, session_id);
        let (head, lists) = write_record_parts(record);
        Ok(PreSign::assemble(&session_token, &head, &lists, &service_time.to_string()))
    }

    fn assemble(session_token: &str, head: &str, lists: &str, service_time: &str) -> PreSign {
        let mut text =
            String::with_capacity(session_token.len() + head.len() + lists.len() + service_time.len() + 80);
        let mut push = |part: &str| {
            let start = text.len();
            text.push_str(part);
            start..text.len()
        };
        push(SESSION_KEY);
        let session_id = push(session_token);
        push(HEAD_SEPARATOR);
        let head = push(head);
        push(LISTS_SEPARATOR);
        let lists = push(lists);
        push(TIME_SEPARATOR);
        let service_time = push(service_time);
        push("\"");
        PreSign { text, session_id, head, lists, service_time }
    }

    /// Reads back a pre-sign string (as stored, or as given by a user),
    /// finding its parts by parsing JSON tokens, never by searching for
    /// `||`, which may occur inside any text field.
    pub fn parse(text: &str) -> Result<PreSign, PreSignError> {
        let mut cursor = Cursor { text, at: 0 };
        cursor.expect(SESSION_KEY)?;
        let session_id = cursor.json_value("sessionID", |raw| raw.starts_with('"'))?;
        cursor.expect(HEAD_SEPARATOR)?;
        let head = cursor.json_value("payExchangeInfoHead", |raw| raw.starts_with('{'))?;
        cursor.expect(LISTS_SEPARATOR)?;
        let lists = cursor.json_value("payExchangeInfoLists", |raw| raw.starts_with('['))?;
        cursor.expect(TIME_SEPARATOR)?;
        let digits = text[cursor.at..].bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(PreSignError("serviceTime must be digits".into()));
        }
        let service_time = cursor.at..cursor.at + digits;
        cursor.at += digits;
        cursor.expect("\"")?;
        if cursor.at != text.len() {
            return Err(PreSignError(format!("unexpected text after serviceTime at byte {}", cursor.at)));
        }
        Ok(PreSign { text: text.to_owned(), session_id, head, lists, service_time })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }

    /// The bytes the card signs: the UTF-8 of the whole string.
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The sessionID, unescaped.
    pub fn session_id(&self) -> String {
        serde_json::from_str(&self.text[self.session_id.clone()]).unwrap_or_default()
    }

    pub fn head_json(&self) -> &str {
        &self.text[self.head.clone()]
    }

    pub fn lists_json(&self) -> &str {
        &self.text[self.lists.clone()]
    }

    pub fn service_time(&self) -> &str {
        &self.text[self.service_time.clone()]
    }

    /// The upload body carrying this pre-sign string's parts byte for byte.
    pub fn upload_body(&self, cert_no: &str, sign_value: &str) -> UploadBody {
        let mut text = String::with_capacity(self.text.len() + sign_value.len() + 64);
        text.push_str("{\"sessionID\":");
        text.push_str(&self.text[self.session_id.clone()]);
        text.push_str(",\"payExchangeInfoHead\":");
        text.push_str(self.head_json());
        text.push_str(",\"payExchangeInfoLists\":");
        text.push_str(self.lists_json());
        text.push_str(",\"serviceTime\":\"");
        text.push_str(self.service_time());
        text.push_str("\",\"certNo\":");
        json::write_str(&mut text, cert_no);
        text.push_str(",\"signValue\":");
        json::write_str(&mut text, sign_value);
        text.push('}');
        UploadBody(text)
    }
}

impl fmt::Display for PreSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn expect(&mut self, literal: &str) -> Result<(), PreSignError> {
        if self.text[self.at..].starts_with(literal) {
            self.at += literal.len();
            Ok(())
        } else {
            Err(PreSignError(format!("expected `{literal}` at byte {}", self.at)))
        }
    }

    /// The one JSON value starting here; `shape` checks it is the kind wanted.
    fn json_value(&mut self, name: &str, shape: fn(&str) -> bool) -> Result<Range<usize>, PreSignError> {
        let rest = &self.text[self.at..];
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
        match values.next() {
            Some(Ok(raw)) if shape(raw.get()) && rest.starts_with(raw.get()) => {
                let range = self.at..self.at + raw.get().len();
                self.at = range.end;
                Ok(range)
            }
            _ => Err(PreSignError(format!("{name} at byte {} is not the JSON expected", self.at))),
        }
    }
}

/// The `payExInfoStr` JSON sent to customs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadBody(String);

/// An upload body taken apart: the pre-sign string it was signed over, and
/// the signature it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUpload {
    pub presign: PreSign,
    pub cert_no: String,
    pub sign_value: String,
}

const UPLOAD_KEYS: [&str; 6] =
    ["sessionID", "payExchangeInfoHead", "payExchangeInfoLists", "serviceTime", "certNo", "signValue"];

impl UploadBody {
    /// Wraps an upload body kept as text (e.g. read back from storage).
    pub fn from_string(text: String) -> UploadBody {
        UploadBody(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Takes an upload body apart, keeping the raw bytes of head and lists.
    pub fn parse(text: &str) -> Result<ParsedUpload, Problems> {
        let root = Pointer::root();
        let problem = |at: &Pointer, message: String| Problems(vec![Problem::new(at.clone(), message)]);
        let raw: &RawValue =
            serde_json::from_str(text).map_err(|e| problem(&root, format!("not valid JSON: {e}")))?;
        let object = RawObject::parse(raw)
            .ok_or_else(|| problem(&root, format!("must be an object, not {}", json::type_name(raw))))?;
        let mut problems = Vec::new();
        for (key, _) in &object.members {
            if !UPLOAD_KEYS.contains(&key.as_str()) {
                problems.push(Problem::new(root.key(key), "unknown field"));
            }
        }
        if let Some(key) = &object.duplicate {
            problems.push(Problem::new(root.key(key), "appears more than once"));
        }
        let mut field = |key: &str, wanted: &str, shape: fn(&str) -> bool| match object.get(key) {
            Some(raw) if shape(raw.get()) => Some(raw.get()),
            Some(raw) => {
                let message = format!("must be {wanted}, not {}", json::type_name(raw));
                problems.push(Problem::new(root.key(key), message));
                None
            }
            None => {
                problems.push(Problem::new(root.key(key), "is required"));
                None
            }
        };
        let is_string = |raw: &str| raw.starts_with('"');
        let session_id = field("sessionID", "a string", is_string);
        let head = field("payExchangeInfoHead", "an object", |raw| raw.starts_with('{'));
        let lists = field("payExchangeInfoLists", "an array", |raw| raw.starts_with('['));
        let service_time = field("serviceTime", "epoch milliseconds as a string or number", |raw| {
            let digits = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        });
        let cert_no = field("certNo", "a string", is_string);
        let sign_value = field("signValue", "a string", is_string);
        let (Some(session_id), Some(head), Some(lists), Some(service_time), Some(cert_no), Some(sign_value)) =
            (session_id, head, lists, service_time, cert_no, sign_value)
        else {
            return Err(Problems(problems));
        };
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        let service_time = service_time.trim_matches('"');
        let unquote = |raw: &str| serde_json::from_str::<String>(raw).unwrap_or_default();
        Ok(ParsedUpload {
            presign: PreSign::assemble(session_id, head, lists, service_time),
            cert_no: unquote(cert_no),
            sign_value: unquote(sign_value),
        })
    }
}

impl fmt::Display for UploadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ParsedUpload {
    /// The payment record the upload carries, validated as a complete record.
    pub fn record(&self) -> Result<PaymentRecord, Problems> {
        let text = format!(
            "{{\"payExchangeInfoHead\":{},\"payExchangeInfoLists\":{}}}",
            self.presign.head_json(),
            self.presign.lists_json()
        );
        PaymentRecord::parse(&text, RecordRules::COMPLETE)
    }
}

/// Writes head and lists as the compact JSON of spec 3.2: keys in the order
/// of section 2, every key present, absent optional values as "". A head
/// without guid or ebpCode leaves those keys out, which only the stored
/// form of a platform's record (never a pre-sign string) relies on.
pub fn write_record_parts(record: &PaymentRecord) -> (String, String) {
    (write_head(&record.head), write_lists(&record.lists))
}

/// The canonical JSON of a record, as stored and compared for identity.
pub fn write_record(record: &PaymentRecord) -> String {
    let (head, lists) = write_record_parts(record);
    format!("{{\"payExchangeInfoHead\":{head},\"payExchangeInfoLists\":{lists}}}")
}

fn write_head(head: &PayHead) -> String {
    let mut out = String::with_capacity(512 + head.inital_request.len() + head.inital_response.len());
    out.push('{');
    let mut first = true;
    let mut text = |out: &mut String, key: &str, value: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        json::write_str(out, key);
        out.push(':');
        json::write_str(out, value);
    };
    if let Some(guid) = &head.guid {
        text(&mut out, "guid", guid.as_str());
    }
    text(&mut out, "initalRequest", &head.inital_request);
    text(&mut out, "initalResponse", &head.inital_response);
    if let Some(ebp_code) = &head.ebp_code {
        text(&mut out, "ebpCode", ebp_code);
    }
    text(&mut out, "payCode", &head.pay_code);
    text(&mut out, "payTransactionId", &head.pay_transaction_id);
    out.push_str(",\"totalAmount\":");
    out.push_str(&head.total_amount.to_string());
    text(&mut out, "currency", &head.currency);
    text(&mut out, "verDept", head.ver_dept.code());
    text(&mut out, "payType", head.pay_type.map_or("", |t| t.code()));
    text(&mut out, "tradingTime", &head.trading_time);
    text(&mut out, "note", &head.note);
    out.push('}');
    out
}

fn write_lists(lists: &[PayOrder]) -> String {
    let mut out = String::with_capacity(256 * lists.len());
    out.push('[');
    for (i, order) in lists.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"orderNo\":");
        json::write_str(&mut out, &order.order_no);
        out.push_str(",\"goodsInfo\":[");
        for (j, goods) in order.goods_info.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"gname\":");
            json::write_str(&mut out, &goods.gname);
            out.push_str(",\"itemLink\":");
            json::write_str(&mut out, &goods.item_link);
            out.push('}');
        }
        out.push_str("],\"recpAccount\":");
        json::write_str(&mut out, &order.recp_account);
        out.push_str(",\"recpCode\":");
        json::write_str(&mut out, &order.recp_code);
        out.push_str(",\"recpName\":");
        json::write_str(&mut out, &order.recp_name);
        out.push('}');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests;
