//! Frames of the EportClient WebSocket, one JSON text frame each way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The methods the 179 flow uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Signs `inData` (the pre-sign text itself; the card hashes) with the card's PIN.
    Sign,
    GetCertNo,
    /// The signing certificate as one line of base64 DER.
    GetSignCert,
    GetValidTime,
    Verify,
}

impl Method {
    pub const ALL: [Method; 5] =
        [Method::Sign, Method::GetCertNo, Method::GetSignCert, Method::GetValidTime, Method::Verify];

    pub fn name(self) -> &'static str {
        match self {
            Method::Sign => "cus-sec_SpcSignDataAsPEM",
            Method::GetCertNo => "cus-sec_SpcGetCertNo",
            Method::GetSignCert => "cus-sec_SpcGetSignCertAsPEM",
            Method::GetValidTime => "cus-sec_SpcGetValidTimeFromCert",
            Method::Verify => "cus-sec_SpcVerifySignData",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A request: `{"_method":…,"_id":…,"args":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    #[serde(rename = "_method")]
    pub method: String,
    #[serde(rename = "_id")]
    pub id: u64,
    #[serde(default)]
    pub args: Map<String, Value>,
}

impl RequestFrame {
    pub fn new(method: Method, id: u64, args: Map<String, Value>) -> RequestFrame {
        RequestFrame { method: method.name().to_owned(), id, args }
    }

    /// A string argument, if present and a string.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args.get(name).and_then(Value::as_str)
    }
}

/// `_args` of a reply: success is `Result == true` only (`_status` is "00" even on failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(rename = "Result")]
    pub result: bool,
    #[serde(rename = "Data", default)]
    pub data: Vec<Value>,
    #[serde(rename = "Error", default)]
    pub error: Vec<Value>,
}

impl Outcome {
    pub fn ok(data: Vec<String>) -> Outcome {
        Outcome { result: true, data: data.into_iter().map(Value::String).collect(), error: Vec::new() }
    }

    pub fn failed(message: &str, tag: &str) -> Outcome {
        Outcome {
            result: false,
            data: Vec::new(),
            error: vec![Value::String(message.into()), Value::String(tag.into())],
        }
    }

    /// `Data[i]` as text.
    pub fn data_str(&self, i: usize) -> Option<&str> {
        self.data.get(i).and_then(Value::as_str)
    }

    /// The error texts joined, for reasons shown to operators.
    pub fn error_text(&self) -> String {
        let parts: Vec<String> =
            self.error.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
        if parts.is_empty() { "no error text".to_owned() } else { parts.join(" ") }
    }

    /// The `Err:<Family><code>` tag of a failure.
    pub fn error_tag(&self) -> Option<&str> {
        self.error.iter().filter_map(Value::as_str).find(|text| text.starts_with("Err:"))
    }

    /// What a failed outcome means, by the allow-list of the spec.
    pub fn failure_class(&self) -> FailureClass {
        match self.error_tag() {
            // The single-window pages treat 50200 and 51590 alike: "insert the key bound
            // to this user".
            Some("Err:Custom50070" | "Err:Custom50200" | "Err:Custom51590") => FailureClass::ReaderUnwell,
            Some("Err:Base50000") => FailureClass::BadArguments,
            _ => FailureClass::Refused,
        }
    }
}

/// How to react to a failed call. Anything not known to be harmless is
/// treated as a possible wrong PIN or locked card: guessing from error
/// texts could burn the card's last PIN tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// 50070 / 50200 / 51590: the reader, the key or the control is unwell; retry later.
    ReaderUnwell,
    /// Base50000: the request lacked an argument; the item fails.
    BadArguments,
    /// Anything else: pause all signing until an operator resumes.
    Refused,
}

/// The `_method` of the greeting the server pushes on connect.
const GREETING: &str = "open";

/// A frame from the server: a reply to a request, or the greeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(rename = "_id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(rename = "_method", default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(rename = "_status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "_args", default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Outcome>,
}

impl Reply {
    pub fn to(request: &RequestFrame, outcome: Outcome) -> Reply {
        Reply {
            id: Some(request.id),
            method: Some(request.method.clone()),
            status: Some("00".to_owned()),
            args: Some(outcome),
        }
    }

    /// The greeting the server pushes on connect. It carries `_args` like
    /// every reply: the official client.js reads `_args` of every frame.
    pub fn greeting() -> Reply {
        Reply {
            id: Some(0),
            method: Some(GREETING.to_owned()),
            status: Some("00".to_owned()),
            args: Some(Outcome::ok(Vec::new())),
        }
    }

    pub fn is_greeting(&self) -> bool {
        self.method.as_deref() == Some(GREETING)
    }

    /// Whether this reply answers `request`: its `_id` and, when given, its
    /// `_method` match. A bare reply (no `_id`) answers the one request in flight.
    pub fn answers(&self, request: &RequestFrame) -> bool {
        !self.is_greeting()
            && self.id.is_none_or(|id| id == request.id)
            && self.method.as_deref().is_none_or(|method| method == request.method)
    }

    /// Reads a server frame. The greeting is recognised by its `_method`
    /// alone: what a real control puts in it is unpublished. Some clients
    /// accept a bare `{"Result":…,"Data":…,"Error":…}` without the `_args`
    /// wrapper; it carries no `_id` and answers the one request in flight.
    pub fn parse(text: &str) -> Option<Reply> {
        let value: Value = serde_json::from_str(text).ok()?;
        let object = value.as_object()?;
        if object.get("_method").and_then(Value::as_str) == Some(GREETING) {
            return Some(Reply {
                id: object.get("_id").and_then(Value::as_u64),
                method: Some(GREETING.to_owned()),
                status: object.get("_status").and_then(Value::as_str).map(str::to_owned),
                args: object.get("_args").and_then(|args| serde_json::from_value(args.clone()).ok()),
            });
        }
        if object.contains_key("Result") && !object.contains_key("_args") {
            let outcome: Outcome = serde_json::from_value(value).ok()?;
            return Some(Reply { id: None, method: None, status: None, args: Some(outcome) });
        }
        serde_json::from_value(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_answer_their_request_by_id_and_method() {
        let sign = RequestFrame::new(Method::Sign, 5, Map::new());
        let reply = |id: Option<u64>, method: Option<&str>| Reply {
            id,
            method: method.map(str::to_owned),
            status: Some("00".into()),
            args: Some(Outcome::ok(Vec::new())),
        };
        assert!(reply(Some(5), Some(Method::Sign.name())).answers(&sign));
        assert!(reply(None, None).answers(&sign), "a bare reply answers the one in flight");
        assert!(reply(Some(5), None).answers(&sign));
        assert!(!reply(Some(4), Some(Method::Sign.name())).answers(&sign), "another id");
        assert!(!reply(Some(5), Some(Method::GetCertNo.name())).answers(&sign), "another method");
        assert!(!Reply::greeting().answers(&RequestFrame::new(Method::Sign, 0, Map::new())));
    }

    #[test]
    fn requests_are_written_as_the_js_client_writes_them() {
        let mut args = Map::new();
        args.insert("inData".into(), Value::String("\"sessionID\":\"S\"||…".into()));
        args.insert("passwd".into(), Value::String("88888888".into()));
        let frame = RequestFrame::new(Method::Sign, 7, args);
        let text = serde_json::to_string(&frame).unwrap();
        assert!(text.starts_with(r#"{"_method":"cus-sec_SpcSignDataAsPEM","_id":7,"args":{"#), "{text}");
        assert_eq!(serde_json::from_str::<RequestFrame>(&text).unwrap(), frame);
        let bare: RequestFrame =
            serde_json::from_str(r#"{"_method":"cus-sec_SpcGetCertNo","_id":2}"#).unwrap();
        assert!(bare.args.is_empty());
        assert_eq!(Method::from_name(&bare.method), Some(Method::GetCertNo));
    }

    #[test]
    fn replies_parse_wrapped_bare_and_greeting() {
        let wrapped = Reply::parse(
            r#"{"_id":1,"_method":"cus-sec_SpcSignDataAsPEM","_status":"00","_args":{"Result":true,"Data":["c2ln","03000000000cde6f"],"Error":[]}}"#,
        )
        .unwrap();
        assert_eq!(wrapped.id, Some(1));
        let outcome = wrapped.args.unwrap();
        assert!(outcome.result);
        assert_eq!(outcome.data_str(1), Some("03000000000cde6f"));

        let bare = Reply::parse(r#"{"Result":false,"Data":[],"Error":["x","Err:Base50000"]}"#).unwrap();
        assert_eq!(bare.id, None);
        assert_eq!(bare.args.unwrap().failure_class(), FailureClass::BadArguments);

        let greeting = Reply::parse(r#"{"_id":0,"_method":"open","_status":"00","extra":{"v":1}}"#).unwrap();
        assert!(greeting.is_greeting());
        // Whatever a real control's greeting holds, it is the greeting.
        for args in [r#""hello""#, r#"{"ver":"1.5.12"}"#, "null", "[1,2]", r#"{"Result":"yes"}"#] {
            let text = format!(r#"{{"_id":0,"_method":"open","_status":"00","_args":{args}}}"#);
            assert!(Reply::parse(&text).is_some_and(|r| r.is_greeting()), "{text}");
        }
        let text = serde_json::to_string(&Reply::greeting()).unwrap();
        assert!(text.contains(r#""_args":{"Result":true"#), "{text}");
        assert!(Reply::parse("not json").is_none());
        assert!(Reply::parse("[1]").is_none());
        assert_eq!(
            Reply::parse(&serde_json::to_string(&Reply::greeting()).unwrap()).unwrap(),
            Reply::greeting()
        );
    }

    #[test]
    fn failures_are_classified_by_the_allow_list_only() {
        let class = |error: &str| {
            let outcome: Outcome =
                serde_json::from_str(&format!(r#"{{"Result":false,"Data":[],"Error":{error}}}"#)).unwrap();
            outcome.failure_class()
        };
        assert_eq!(
            class(r#"["[读卡器底层库]复位读卡器失败:错误码\u003d50070","Err:Custom50070"]"#),
            FailureClass::ReaderUnwell
        );
        assert_eq!(
            class(r#"["…打开读卡器失败：错误码=50200","Err:Custom50200"]"#),
            FailureClass::ReaderUnwell
        );
        assert_eq!(class(r#"["请插入当前用户绑定的Key","Err:Custom51590"]"#), FailureClass::ReaderUnwell);
        assert_eq!(class(r#"["参数检查失败","Err:Base50000"]"#), FailureClass::BadArguments);
        // Unknown texts, unknown tags and no tag at all may be a wrong PIN.
        assert_eq!(class(r#"["口令错误","Err:Custom50111"]"#), FailureClass::Refused);
        assert_eq!(class(r#"["card locked"]"#), FailureClass::Refused);
        assert_eq!(class(r#"[]"#), FailureClass::Refused);
        assert_eq!(class(r#"["复位读卡器失败 50070"]"#), FailureClass::Refused, "a text is no tag");
    }
}
