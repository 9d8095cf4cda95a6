//! The customs call `platDataOpen` (spec 1.1): the `openReq` JSON.

use serde_json::value::RawValue;

use crate::json::{self, RawObject};

/// What customs asks for: the payment data of one order, to be echoed under
/// its sessionID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReq {
    /// Opaque; its shape is not validated (spec 1.1), but for control
    /// characters, which no id holds and PostgreSQL's text cannot (a NUL).
    pub session_id: String,
    pub order_no: String,
    /// Customs' clock, epoch milliseconds.
    pub service_time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenReqError {
    #[error("openReq is not valid JSON: {0}")]
    NotJson(String),
    #[error("openReq must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("openReq has no {0}")]
    Missing(&'static str),
    #[error("openReq {0} is empty")]
    Empty(&'static str),
    #[error("openReq {0} holds a control character (U+0000 to U+001F, U+007F)")]
    ControlCharacter(&'static str),
    #[error("openReq {0} must be a JSON string, not {1}")]
    NotAString(&'static str, &'static str),
    #[error("openReq serviceTime must be epoch milliseconds, as a number or a string of digits")]
    BadServiceTime,
    #[error("openReq has {0} more than once")]
    Duplicate(String),
}

/// Whether `text` may be an id customs sends (a sessionID, an order number):
/// none holds a control character (U+0000 to U+001F, U+007F), and
/// PostgreSQL's text cannot hold a NUL.
pub fn may_be_id(text: &str) -> bool {
    !text.chars().any(|c| c.is_ascii_control())
}

impl OpenReq {
    /// Parses the value of the `openReq` form field. Unknown keys are
    /// tolerated: customs may add some, and refusing them would fail its call.
    pub fn parse(text: &str) -> Result<OpenReq, OpenReqError> {
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| OpenReqError::NotJson(e.to_string()))?;
        let object = RawObject::parse(raw).ok_or(OpenReqError::NotAnObject(json::type_name(raw)))?;
        if let Some(key) = object.duplicate {
            return Err(OpenReqError::Duplicate(key));
        }
        let text_field = |key: &'static str| -> Result<String, OpenReqError> {
            let raw = object.get(key).ok_or(OpenReqError::Missing(key))?;
            let value = json::raw_string(raw).ok_or(OpenReqError::NotAString(key, json::type_name(raw)))?;
            if value.is_empty() {
                return Err(OpenReqError::Empty(key));
            }
            if !may_be_id(&value) {
                return Err(OpenReqError::ControlCharacter(key));
            }
            Ok(value)
        };
        let session_id = text_field("sessionID")?;
        let order_no = text_field("orderNo")?;
        let raw_time = object.get("serviceTime").ok_or(OpenReqError::Missing("serviceTime"))?;
        let time_text = match json::raw_string(raw_time) {
            Some(text) => text,
            None => raw_time.get().to_owned(),
        };
        if time_text.is_empty() || !time_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OpenReqError::BadServiceTime);
        }
        let service_time = time_text.parse().map_err(|_| OpenReqError::BadServiceTime)?;
        Ok(OpenReq { session_id, order_no, service_time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_official_sample_and_string_times() {
        let req = OpenReq::parse(
            r#"{"orderNo":"SO1","sessionID":"fe2374-8fnejf97-32839218","serviceTime":1533271903898}"#,
        )
        .unwrap();
        assert_eq!(
            req,
            OpenReq {
                session_id: "fe2374-8fnejf97-32839218".into(),
                order_no: "SO1".into(),
                service_time: 1533271903898
            }
        );
        let req =
            OpenReq::parse(r#"{"sessionID":"A","orderNo":"B","serviceTime":"1533271903898","extra":1}"#)
                .unwrap();
        assert_eq!(req.service_time, 1533271903898);
    }

    #[test]
    fn says_exactly_what_is_wrong() {
        use OpenReqError::*;
        let cases = [
            (r#"[1]"#, NotAnObject("an array")),
            (r#"{"orderNo":"B","serviceTime":1}"#, Missing("sessionID")),
            (r#"{"sessionID":"A","serviceTime":1}"#, Missing("orderNo")),
            (r#"{"sessionID":"A","orderNo":"B"}"#, Missing("serviceTime")),
            (r#"{"sessionID":"","orderNo":"B","serviceTime":1}"#, Empty("sessionID")),
            (r#"{"sessionID":"A","orderNo":"","serviceTime":1}"#, Empty("orderNo")),
            (r#"{"sessionID":"A\u0000","orderNo":"B","serviceTime":1}"#, ControlCharacter("sessionID")),
            (r#"{"sessionID":"A","orderNo":"B\tC","serviceTime":1}"#, ControlCharacter("orderNo")),
            (r#"{"sessionID":"A\u007f","orderNo":"B","serviceTime":1}"#, ControlCharacter("sessionID")),
            (r#"{"sessionID":5,"orderNo":"B","serviceTime":1}"#, NotAString("sessionID", "a number")),
            (r#"{"sessionID":"A","orderNo":null,"serviceTime":1}"#, NotAString("orderNo", "null")),
            (r#"{"sessionID":"A","orderNo":"B","serviceTime":-1}"#, BadServiceTime),
            (r#"{"sessionID":"A","orderNo":"B","serviceTime":1.5}"#, BadServiceTime),
            (r#"{"sessionID":"A","orderNo":"B","serviceTime":"x"}"#, BadServiceTime),
            (r#"{"sessionID":"A","orderNo":"B","serviceTime":""}"#, BadServiceTime),
            (r#"{"sessionID":"A","orderNo":"B","serviceTime":99999999999999999999999}"#, BadServiceTime),
            (
                r#"{"sessionID":"A","sessionID":"C","orderNo":"B","serviceTime":1}"#,
                Duplicate("sessionID".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(OpenReq::parse(input), Err(expected), "input {input}");
        }
        assert!(matches!(OpenReq::parse("{"), Err(NotJson(_))));
        assert!(matches!(OpenReq::parse(""), Err(NotJson(_))));
    }
}
