//! The webhook and the robots: their bodies, their signatures' place, and
//! how their answers say success.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, StatusCode, Url};
use serde_json::{Value, json};

use super::DeliveryError;
use super::sign::{dingtalk_sign, feishu_sign, webhook_signature};
use super::text::truncate_utf8;
use crate::Alert;
use crate::message::Rendered;

/// WeCom refuses a text message longer than this, in bytes of UTF-8.
const WECOM_MAX_BYTES: usize = 2_048;
/// DingTalk's and Feishu's limits are larger; 4 KiB is well within both.
const DINGTALK_MAX_BYTES: usize = 4_096;
const FEISHU_MAX_BYTES: usize = 4_096;

/// The most of an answer read: a robot's JSON is small, and an error page
/// is only quoted in part, so a huge answer is not kept in memory.
const ANSWER_MAX_BYTES: usize = 64 * 1024;

const SIGNATURE_HEADER: &str = "X-Customs179-Signature";

/// An HTTP request ready to go: where, the body, and the signature header.
pub(crate) struct Request {
    url: Url,
    body: Vec<u8>,
    signature: Option<String>,
}

fn to_json(value: &Value) -> Result<Vec<u8>, DeliveryError> {
    serde_json::to_vec(value).map_err(|e| DeliveryError::Message(e.to_string()))
}

pub(crate) fn webhook_request(
    url: &Url,
    secret: Option<&str>,
    alert: &Alert,
    rendered: &Rendered,
) -> Result<Request, DeliveryError> {
    let body = to_json(&json!({ "alert": alert, "subject": rendered.subject, "text": rendered.text }))?;
    let signature = secret.map(|secret| webhook_signature(secret, &body));
    Ok(Request { url: url.clone(), body, signature })
}

/// The text message of WeCom and DingTalk, cut to `max_bytes`.
fn text_message(text: &str, max_bytes: usize) -> Result<Vec<u8>, DeliveryError> {
    to_json(&json!({ "msgtype": "text", "text": { "content": truncate_utf8(text, max_bytes) } }))
}

pub(crate) fn wecom_request(url: &Url, text: &str) -> Result<Request, DeliveryError> {
    Ok(Request { url: url.clone(), body: text_message(text, WECOM_MAX_BYTES)?, signature: None })
}

pub(crate) fn dingtalk_request(
    url: &Url,
    secret: &str,
    text: &str,
    now_ms: i64,
) -> Result<Request, DeliveryError> {
    let mut url = url.clone();
    url.query_pairs_mut()
        .append_pair("timestamp", &now_ms.to_string())
        .append_pair("sign", &dingtalk_sign(secret, now_ms));
    Ok(Request { url, body: text_message(text, DINGTALK_MAX_BYTES)?, signature: None })
}

pub(crate) fn feishu_request(
    url: &Url,
    secret: Option<&str>,
    text: &str,
    now_ms: i64,
) -> Result<Request, DeliveryError> {
    let mut body = json!({
        "msg_type": "text",
        "content": { "text": truncate_utf8(text, FEISHU_MAX_BYTES) },
    });
    if let Some(secret) = secret {
        let timestamp_s = now_ms.div_euclid(1_000);
        body["timestamp"] = Value::String(timestamp_s.to_string());
        body["sign"] = Value::String(feishu_sign(secret, timestamp_s));
    }
    Ok(Request { url: url.clone(), body: to_json(&body)?, signature: None })
}

/// How a receiver says that it took the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Any 2xx; the body is not read.
    Webhook,
    /// HTTP 200 and `{"errcode": 0, "errmsg": ...}` (WeCom, DingTalk).
    Errcode,
    /// HTTP 200 and `{"code": 0, "msg": ...}`, or the older
    /// `{"StatusCode": 0, "StatusMessage": ...}`.
    Feishu,
}

/// Whether the answer `status` + `body` is a success.
pub(crate) fn check_answer(answer: Answer, status: u16, body: &[u8]) -> Result<(), DeliveryError> {
    let failed = || DeliveryError::Status { status, body: String::from_utf8_lossy(body).into_owned() };
    match answer {
        Answer::Webhook if (200..300).contains(&status) => return Ok(()),
        Answer::Errcode | Answer::Feishu if status == 200 => {}
        _ => return Err(failed()),
    }
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| DeliveryError::Answer(format!("not JSON: {}", String::from_utf8_lossy(body))))?;
    let (field, code, message) = match answer {
        Answer::Feishu if json.get("code").is_none() && json.get("StatusCode").is_some() => {
            ("StatusCode", &json["StatusCode"], &json["StatusMessage"])
        }
        Answer::Feishu => ("code", &json["code"], &json["msg"]),
        _ => ("errcode", &json["errcode"], &json["errmsg"]),
    };
    match code.as_i64() {
        Some(0) => Ok(()),
        Some(code) => Err(DeliveryError::Refused {
            field,
            code,
            message: message.as_str().map_or_else(|| message.to_string(), str::to_owned),
        }),
        None => Err(DeliveryError::Answer(format!("no {field} in {json}"))),
    }
}

/// Sends `request` and reads its answer (the first [`ANSWER_MAX_BYTES`] of it).
pub(crate) async fn post(client: &Client, request: Request, answer: Answer) -> Result<(), DeliveryError> {
    let mut builder = client.post(request.url).header(CONTENT_TYPE, "application/json").body(request.body);
    if let Some(signature) = request.signature {
        builder = builder.header(SIGNATURE_HEADER, signature);
    }
    let mut response = builder.send().await.map_err(from_reqwest)?;
    let status = response.status();
    if answer == Answer::Webhook && status.is_success() {
        return Ok(());
    }
    let mut body = Vec::new();
    while body.len() < ANSWER_MAX_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            // A failure's status says enough even when its body breaks off.
            Err(_) if status != StatusCode::OK => break,
            Err(e) => return Err(from_reqwest(e)),
        }
    }
    check_answer(answer, status.as_u16(), &body)
}

/// The error's text, with its causes but without its URL.
fn from_reqwest(e: reqwest::Error) -> DeliveryError {
    if e.is_timeout() {
        return DeliveryError::Timeout;
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    DeliveryError::Transport(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(answer: Answer, body: &str) -> DeliveryError {
        check_answer(answer, 200, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_webhook_takes_any_2xx() {
        assert_eq!(check_answer(Answer::Webhook, 204, b""), Ok(()));
        let e = check_answer(Answer::Webhook, 302, b"moved").unwrap_err();
        assert_eq!(e.code(), "HTTP 302");
    }

    #[test]
    fn errcode_robots_succeed_on_errcode_0_only() {
        assert_eq!(check_answer(Answer::Errcode, 200, br#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
        let e = refused(Answer::Errcode, r#"{"errcode":310000,"errmsg":"sign not match"}"#);
        assert_eq!(e.code(), "errcode 310000");
        assert_eq!(e.to_string(), "errcode 310000: sign not match");
        assert_eq!(refused(Answer::Errcode, r#"{"ok":true}"#).code(), "answer");
        assert_eq!(refused(Answer::Errcode, "<html>").code(), "answer");
        let e = check_answer(Answer::Errcode, 500, br#"{"errcode":0}"#).unwrap_err();
        assert_eq!(e.code(), "HTTP 500");
        assert_eq!(check_answer(Answer::Errcode, 204, b"").unwrap_err().code(), "HTTP 204");
    }

    #[test]
    fn feishu_succeeds_on_code_0_or_the_older_status_code_0() {
        assert_eq!(check_answer(Answer::Feishu, 200, br#"{"code":0,"msg":"success","data":{}}"#), Ok(()));
        assert_eq!(
            check_answer(Answer::Feishu, 200, br#"{"StatusCode":0,"StatusMessage":"success"}"#),
            Ok(())
        );
        let e = refused(Answer::Feishu, r#"{"code":19021,"msg":"sign match fail"}"#);
        assert_eq!(e.to_string(), "code 19021: sign match fail");
        assert_eq!(
            refused(Answer::Feishu, r#"{"StatusCode":9499,"StatusMessage":"bad"}"#).code(),
            "StatusCode 9499"
        );
        assert_eq!(refused(Answer::Feishu, r#"{"errcode":0}"#).code(), "answer");
        assert_eq!(check_answer(Answer::Feishu, 400, br#"{"code":9499}"#).unwrap_err().code(), "HTTP 400");
    }

    #[test]
    fn robot_bodies_have_the_documented_shapes() {
        let url = Url::parse("https://oapi.dingtalk.com/robot/send?access_token=abc").unwrap();
        let r = dingtalk_request(&url, "SEC0123456789abcdef", "hi", 1_700_000_000_000).unwrap();
        let sign: String = r.url.query_pairs().find(|(k, _)| k == "sign").unwrap().1.into_owned();
        assert_eq!(sign, "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk=");
        assert!(r.url.as_str().contains(
            "access_token=abc&timestamp=1700000000000&sign=TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D"
        ));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"msgtype": "text", "text": {"content": "hi"}}));

        let r = feishu_request(&url, Some("fs-secret-0123"), "hi", 1_700_000_000_999).unwrap();
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"timestamp": "1700000000", "sign": "/FHomnObThduB5bV2JVb/4ytE5uE9b52WlluwYxdop0=",
                   "msg_type": "text", "content": {"text": "hi"}})
        );
        let r = feishu_request(&url, None, "hi", 1_700_000_000_999).unwrap();
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"msg_type": "text", "content": {"text": "hi"}}));
    }
}
