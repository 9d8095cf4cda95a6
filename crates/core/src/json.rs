//! The small pieces of JSON handling the wire formats need beyond serde_json:
//! objects read as ordered raw members (so no value is re-serialised and
//! duplicate keys are caught), JSON Pointers, and the one string writer.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's members in document order, each value as its exact bytes.
#[derive(Debug)]
pub(crate) struct RawObject {
    pub members: Vec<(String, Box<RawValue>)>,
    /// The first key that appeared twice, if any: JSON parsers disagree on
    /// which occurrence wins, so a document with one is refused.
    pub duplicate: Option<String>,
}

impl RawObject {
    pub fn parse(raw: &RawValue) -> Option<RawObject> {
        serde_json::from_str(raw.get()).ok()
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }
}

impl<'de> serde::Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut object = RawObject { members: Vec::new(), duplicate: None };
                // A set, not a scan of the members so far: an object of many
                // keys (a payments push may be megabytes) must not take
                // quadratic time.
                let mut keys = HashSet::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    if object.duplicate.is_none() && !keys.insert(key.clone()) {
                        object.duplicate = Some(key.clone());
                    }
                    object.members.push((key, value));
                }
                Ok(object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// The elements of a raw JSON array, or None when the value is not an array.
pub(crate) fn raw_array(raw: &RawValue) -> Option<Vec<Box<RawValue>>> {
    serde_json::from_str(raw.get()).ok()
}

/// The content of a raw JSON string, or None when the value is not a string.
pub(crate) fn raw_string(raw: &RawValue) -> Option<String> {
    if raw.get().starts_with('"') { serde_json::from_str(raw.get()).ok() } else { None }
}

/// A short name for the JSON type of a raw value, for error messages.
pub(crate) fn type_name(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Appends `s` as a JSON string the way spec 3.2 wants it: raw UTF-8, `/`
/// unescaped, only the escapes JSON requires, control characters as
/// serde_json writes them (`\n` etc., else `\u00xx` with lower-case hex).
pub(crate) fn write_str(out: &mut String, s: &str) {
    // serde_json's string serialiser is exactly the escaping the spec
    // describes; writing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// A JSON Pointer (RFC 6901) to a place in a document, built as it is walked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pointer(String);

impl Pointer {
    pub fn root() -> Pointer {
        Pointer(String::new())
    }

    pub fn key(&self, key: &str) -> Pointer {
        Pointer(format!("{}/{}", self.0, key.replace('~', "~0").replace('/', "~1")))
    }

    pub fn index(&self, index: usize) -> Pointer {
        Pointer(format!("{}/{index}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("(document)") } else { f.write_str(&self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn raw_object_keeps_order_bytes_and_duplicates() {
        let object = RawObject::parse(&raw(r#"{"b":5.0,"a":{"x" : 1},"b":2}"#)).unwrap();
        let keys: Vec<_> = object.members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "b"]);
        assert_eq!(object.get("b").unwrap().get(), "5.0");
        assert_eq!(object.get("a").unwrap().get(), r#"{"x" : 1}"#);
        assert_eq!(object.duplicate.as_deref(), Some("b"));
        assert!(RawObject::parse(&raw("[1]")).is_none());
    }

    #[test]
    fn raw_object_finds_a_duplicate_among_many_keys_in_linear_time() {
        // Regression (tests/proptest_inputs.rs): each key was compared with every key before
        // it, so 100 000 keys took minutes.
        let keys: Vec<String> = (0..200_000).map(|i| format!("\"k{i}\":0")).collect();
        let object = RawObject::parse(&raw(&format!("{{{},\"k7\":1}}", keys.join(",")))).unwrap();
        assert_eq!(object.members.len(), 200_001);
        assert_eq!(object.duplicate.as_deref(), Some("k7"));
        assert_eq!(object.get("k199999").unwrap().get(), "0");
    }

    #[test]
    fn pointers_escape_keys() {
        let p = Pointer::root().key("a/b").key("m~n").index(3);
        assert_eq!(p.as_str(), "/a~1b/m~0n/3");
        assert_eq!(Pointer::root().to_string(), "(document)");
    }

    #[test]
    fn string_writer_escapes_only_what_json_requires() {
        let cases = [
            ("plain", r#""plain""#),
            ("a\"b", r#""a\"b""#),
            ("a\\b", r#""a\\b""#),
            ("line\nbreak\r\ttab", r#""line\nbreak\r\ttab""#),
            ("\u{8}\u{c}", r#""\b\f""#),
            ("\u{0}\u{1f}\u{1b}", r#""\u0000\u001f\u001b""#),
            ("\u{7f}", "\"\u{7f}\""),
            ("http://a/b?c=d&e=f", r#""http://a/b?c=d&e=f""#),
            ("<xml a='1'>&amp;</xml>", r#""<xml a='1'>&amp;</xml>""#),
            ("济州花梨精华面膜", r#""济州花梨精华面膜""#),
            ("emoji 😀 𝄞", "\"emoji 😀 𝄞\""),
            ("\u{2028}\u{2029}", "\"\u{2028}\u{2029}\""),
        ];
        for (input, expected) in cases {
            let mut out = String::new();
            write_str(&mut out, input);
            assert_eq!(out, expected, "input {input:?}");
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn type_names() {
        for (text, name) in [
            (r#""x""#, "a string"),
            ("{}", "an object"),
            ("[]", "an array"),
            ("true", "a boolean"),
            ("null", "null"),
            ("-1.5", "a number"),
        ] {
            assert_eq!(type_name(&raw(text)), name);
        }
    }
}
