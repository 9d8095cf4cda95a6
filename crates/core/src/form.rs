//! `application/x-www-form-urlencoded` bodies, read strictly as UTF-8.
//!
//! Customs' Apache HttpClient may declare ISO-8859-1 or no charset at all;
//! the values are ASCII in practice, so the body is decoded as UTF-8 whatever
//! is declared, and bytes that are not UTF-8 are an error, not replaced.

use percent_encoding::percent_decode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the form field {0} is missing")]
    Missing(String),
    #[error("the form field {0} appears more than once")]
    Repeated(String),
    #[error("the form field {0} is not valid UTF-8")]
    NotUtf8(String),
}

/// The value of the one field `name` of a form body.
pub fn form_field(body: &[u8], name: &str) -> Result<String, FormError> {
    let mut found = None;
    for pair in body.split(|&b| b == b'&') {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        if decode(key).as_deref() != Some(name) {
            continue;
        }
        if found.is_some() {
            return Err(FormError::Repeated(name.to_owned()));
        }
        found = Some(decode(value).ok_or_else(|| FormError::NotUtf8(name.to_owned()))?);
    }
    found.ok_or_else(|| FormError::Missing(name.to_owned()))
}

fn decode(component: &[u8]) -> Option<String> {
    let plus_as_space: Vec<u8> = component.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    let bytes: Vec<u8> = percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields() {
        let body = b"a=1&openReq=%7B%22orderNo%22%3A%22SO+1%22%7D&b";
        assert_eq!(form_field(body, "openReq").unwrap(), r#"{"orderNo":"SO 1"}"#);
        assert_eq!(form_field(body, "b").unwrap(), "");
        assert_eq!(form_field("x=%E6%B5%8B".as_bytes(), "x").unwrap(), "测");
        assert_eq!(form_field("x=测".as_bytes(), "x").unwrap(), "测");
    }

    #[test]
    fn refuses_missing_repeated_and_non_utf8_fields() {
        assert_eq!(form_field(b"", "openReq"), Err(FormError::Missing("openReq".into())));
        assert_eq!(form_field(b"openReq=1&openReq=2", "openReq"), Err(FormError::Repeated("openReq".into())));
        assert_eq!(form_field(b"openReq=%FF", "openReq"), Err(FormError::NotUtf8("openReq".into())));
        assert_eq!(form_field(b"open%20Req=1", "openReq"), Err(FormError::Missing("openReq".into())));
    }
}
