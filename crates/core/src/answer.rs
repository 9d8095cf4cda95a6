//! Customs' answer to an upload (spec 1.2), and what to do about it.

use serde::Deserialize;

/// What an upload's answer means for the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerClass {
    /// 10000: stored; never resend.
    Delivered,
    /// 20006: this sessionID was stored by an earlier attempt.
    AlreadyStored,
    /// 20004: certNo not registered, or it belongs to another enterprise than
    /// ebpCode. Retrying cannot help: stop and alert.
    ConfigurationError { message: String },
    /// 20000, HTTP failures and unreadable answers: try again later.
    Retryable { reason: String },
    /// A code customs never documented: retried like a failure, and shown.
    Unknown { code: String, message: String },
}

/// The parts of customs' JSON answer the classification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomsAnswer {
    pub code: String,
    pub message: String,
}

#[derive(Deserialize)]
struct Wire {
    code: serde_json::Value,
    #[serde(default)]
    message: Option<serde_json::Value>,
}

impl CustomsAnswer {
    /// Reads an answer body; the code may come as a string or a number.
    pub fn parse(body: &str) -> Option<CustomsAnswer> {
        let wire: Wire = serde_json::from_str(body).ok()?;
        let code = match wire.code {
            serde_json::Value::String(code) => code,
            serde_json::Value::Number(code) => code.to_string(),
            _ => return None,
        };
        let message = match wire.message {
            Some(serde_json::Value::String(message)) => message,
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        Some(CustomsAnswer { code, message })
    }
}

/// Classifies what customs answered to an upload: its HTTP status and body.
pub fn classify(http_status: u16, body: &str) -> AnswerClass {
    if !(200..300).contains(&http_status) {
        return AnswerClass::Retryable {
            reason: format!("HTTP {http_status} from customs: {}", excerpt(body)),
        };
    }
    let Some(answer) = CustomsAnswer::parse(body) else {
        return AnswerClass::Retryable {
            reason: format!("unreadable answer from customs: {}", excerpt(body)),
        };
    };
    let CustomsAnswer { code, message } = answer;
    match code.as_str() {
        "10000" => AnswerClass::Delivered,
        "20006" => AnswerClass::AlreadyStored,
        "20004" => AnswerClass::ConfigurationError { message },
        "20000" => AnswerClass::Retryable { reason: format!("customs answered 20000: {message}") },
        // Codes of the reserved range 20001–21000 and anything else alike.
        _ => AnswerClass::Unknown { code, message },
    }
}

/// The start of an answer, for reasons kept and shown to operators, and for the simulators'
/// messages, which quote answers the same way.
pub fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_owned();
    }
    match trimmed.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &trimmed[..at]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_documented_answer() {
        let b = include_str!("../../../tests/data/vectors/b.customs-response.json");
        assert_eq!(classify(200, b), AnswerClass::Delivered);
        assert_eq!(classify(200, r#"{"code":10000}"#), AnswerClass::Delivered);
        assert_eq!(
            classify(200, r#"{"code":"20006","message":"上传失败,入库失败 违反唯一约束条件"}"#),
            AnswerClass::AlreadyStored
        );
        assert_eq!(
            classify(200, r#"{"code":"20004","message":"企业实时数据获取验签证书未在服务系统注册"}"#),
            AnswerClass::ConfigurationError {
                message: "企业实时数据获取验签证书未在服务系统注册".into()
            }
        );
        assert_eq!(
            classify(200, r#"{"code":"20000","message":"上传失败"}"#),
            AnswerClass::Retryable { reason: "customs answered 20000: 上传失败".into() }
        );
        assert_eq!(
            classify(200, r#"{"code":"20017","message":"x"}"#),
            AnswerClass::Unknown { code: "20017".into(), message: "x".into() }
        );
        assert_eq!(
            classify(200, r#"{"code":"9","message":null}"#),
            AnswerClass::Unknown { code: "9".into(), message: String::new() }
        );
    }

    #[test]
    fn transport_failures_are_retryable() {
        for (status, body) in
            [(502, "Bad Gateway"), (200, "<html>"), (200, ""), (200, r#"{"code":true}"#), (404, "")]
        {
            assert!(matches!(classify(status, body), AnswerClass::Retryable { .. }), "{status} {body}");
        }
        let AnswerClass::Retryable { reason } = classify(503, &"x".repeat(1000)) else { panic!() };
        assert!(reason.len() < 300, "{reason}");
    }
}
