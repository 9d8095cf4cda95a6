//! The signatures the receivers check: each robot has its own formula, and
//! the webhook's is ours (HMAC-SHA256 of the body, as GitHub's webhooks do).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// DingTalk's `sign` parameter, before URL-encoding:
/// `base64(HMAC-SHA256(key = secret, message = "{timestamp_ms}\n{secret}"))`.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    STANDARD.encode(hmac_sha256(secret.as_bytes(), format!("{timestamp_ms}\n{secret}").as_bytes()))
}

/// Feishu's `sign`: the key is `"{timestamp_s}\n{secret}"` and the message
/// empty (Feishu's formula, odd as it is).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    STANDARD.encode(hmac_sha256(format!("{timestamp_s}\n{secret}").as_bytes(), b""))
}

/// The `X-Customs179-Signature` header's value for `body`:
/// `sha256=<lower-case hex HMAC-SHA256(key = secret, message = body)>`.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let mut value = String::from("sha256=");
    for byte in hmac_sha256(secret.as_bytes(), body) {
        write!(value, "{byte:02x}").expect("writing to a String cannot fail");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dingtalk_sign_matches_the_documented_vector() {
        assert_eq!(
            dingtalk_sign("SEC0123456789abcdef", 1_700_000_000_000),
            "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk="
        );
    }

    #[test]
    fn feishu_sign_matches_the_documented_vector() {
        assert_eq!(
            feishu_sign("fs-secret-0123", 1_700_000_000),
            "/FHomnObThduB5bV2JVb/4ytE5uE9b52WlluwYxdop0="
        );
    }

    #[test]
    fn webhook_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            webhook_signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
