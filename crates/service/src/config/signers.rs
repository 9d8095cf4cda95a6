//! `[[signer]]`: several cards, each an EportClient WebSocket with its own
//! PIN. The PIN is never shown in a problem: only the entry and the key are
//! named. The single `[signer]` table is read with the other sections.

use toml::{Table, Value};

use super::{Secret, SignerConfig, shown, url};

/// The keys of an entry.
const KEYS: &[&str] = &["name", "url", "pin", "timeout_ms", "breaker_after"];

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_BREAKER_AFTER: u64 = 3;
/// Names appear in the API's paths, metric labels and store keys.
const MAX_NAME_CHARS: usize = 32;

/// Every entry of `[[signer]]`, in order, or the problems, each naming its entry.
pub(super) fn signers(value: &Value) -> Result<Vec<SignerConfig>, Vec<String>> {
    let Value::Array(items) = value else {
        return Err(vec![format!(
            "signer: must be a table [signer] or an array of tables ([[signer]] entries), got {}",
            shown(value)
        )]);
    };
    if items.is_empty() {
        return Err(vec![
            "signer: no entries (give at least one [[signer]] entry, or a single [signer] table)".to_owned(),
        ]);
    }
    let mut problems = Vec::new();
    let mut signers = Vec::new();
    // (entry number, name or url) of the entries read so far, refused or not,
    // so that a duplicate is reported even when the first one has problems.
    let mut names: Vec<(usize, String)> = Vec::new();
    let mut urls: Vec<(usize, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let number = i + 1;
        let Value::Table(entry) = item else {
            problems.push(format!("signer: entry {number}: must be a table, got {}", type_of(item)));
            continue;
        };
        let mut reader = Entry {
            entry,
            at: format!("signer: entry {number}"),
            name: None,
            url: None,
            problems: Vec::new(),
        };
        let signer = reader.signer();
        if let Some(name) = &reader.name {
            match names.iter().find(|(_, seen)| seen.eq_ignore_ascii_case(name)) {
                Some((first, seen)) if seen == name => {
                    reader.problem("name", format!("used by entry {first} too (give each card its own name)"))
                }
                Some((first, seen)) => reader.problem(
                    "name",
                    format!(
                        "differs only in case from entry {first}'s {seen:?} (give each card its own name)"
                    ),
                ),
                None => names.push((number, name.clone())),
            }
        }
        if let Some(url) = &reader.url {
            match urls.iter().find(|(_, seen)| address(seen) == address(url)) {
                Some((first, _)) => reader.problem(
                    "url",
                    format!("the same EportClient as entry {first} (one card, one entry), got {url:?}"),
                ),
                None => urls.push((number, url.clone())),
            }
        }
        match signer {
            Some(signer) if reader.problems.is_empty() => signers.push(signer),
            _ => problems.extend(reader.problems),
        }
    }
    if problems.is_empty() { Ok(signers) } else { Err(problems) }
}

/// What a value is, without showing it: in place of an entry, it may be a PIN.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// A URL as an address to compare: the host in lower case, no trailing '/'.
fn address(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    format!("{scheme}://{}/{}", authority.to_ascii_lowercase(), path.trim_end_matches('/'))
}

/// Letters, digits, '-' and '_', 1 to 32 of them.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

struct Entry<'a> {
    entry: &'a Table,
    /// "signer: entry 2" or "signer: entry 2 (\"card-b\")", for problems.
    at: String,
    /// The entry's name and URL once accepted, for the duplicate checks.
    name: Option<String>,
    url: Option<String>,
    problems: Vec<String>,
}

impl Entry<'_> {
    fn problem(&mut self, key: &str, reason: String) {
        self.problems.push(format!("{}: {key}: {reason}", self.at));
    }

    fn signer(&mut self) -> Option<SignerConfig> {
        self.name = self.name();
        if let Some(name) = &self.name {
            self.at = format!("{} ({name:?})", self.at);
        }
        let mut unknown: Vec<&str> =
            self.entry.keys().map(String::as_str).filter(|k| !KEYS.contains(k)).collect();
        unknown.sort_unstable();
        for key in unknown {
            // Its value is not shown: a misspelt pin is still a PIN.
            self.problem(
                key,
                format!("unknown key (the keys of a [[signer]] entry are {})", KEYS.join(", ")),
            );
        }
        self.url = self.url();
        let pin = self.pin();
        let timeout_ms = self.integer("timeout_ms", DEFAULT_TIMEOUT_MS);
        let breaker_after = self.integer("breaker_after", DEFAULT_BREAKER_AFTER);
        Some(SignerConfig {
            name: self.name.clone()?,
            url: self.url.clone()?,
            pin: pin?,
            timeout_ms: timeout_ms?,
            breaker_after: breaker_after?,
        })
    }

    fn name(&mut self) -> Option<String> {
        match self.entry.get("name") {
            None => {
                self.problem("name", "missing: the card's name, such as \"card-a\"".to_owned());
                None
            }
            Some(Value::String(name)) if valid_name(name) => Some(name.clone()),
            Some(got) => {
                let reason = format!(
                    "must be 1 to {MAX_NAME_CHARS} letters, digits, '-' or '_' (it appears in URLs, metrics and \
                     the store), got {}",
                    shown(got)
                );
                self.problem("name", reason);
                None
            }
        }
    }

    fn url(&mut self) -> Option<String> {
        match self.entry.get("url") {
            None => {
                self.problem(
                    "url",
                    "missing: the card's EportClient WebSocket, such as \"ws://127.0.0.1:61232/\"".to_owned(),
                );
                None
            }
            Some(Value::String(s)) => match url(s, &["ws://", "wss://"]) {
                Ok(url) => Some(url),
                Err(reason) => {
                    self.problem("url", format!("{reason}, got {s:?}"));
                    None
                }
            },
            Some(got) => {
                self.problem("url", format!("must be a string, got {}", shown(got)));
                None
            }
        }
    }

    /// Never shown, whatever its type.
    fn pin(&mut self) -> Option<Secret> {
        match self.entry.get("pin") {
            None => self.problem("pin", "missing: the card's PIN".to_owned()),
            Some(Value::String(pin)) if !pin.is_empty() => return Some(Secret::new(pin)),
            Some(Value::String(_)) => self.problem("pin", "must not be empty".to_owned()),
            Some(_) => self.problem("pin", "must be a string".to_owned()),
        }
        None
    }

    fn integer(&mut self, key: &str, default: u64) -> Option<u64> {
        match self.entry.get(key) {
            None => Some(default),
            Some(Value::Integer(n)) if *n > 0 => u64::try_from(*n).ok(),
            Some(got) => {
                self.problem(key, format!("must be a positive integer, got {}", shown(got)));
                None
            }
        }
    }
}
