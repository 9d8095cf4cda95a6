//! `[[alerts]]`: the channels alerts are sent through. Their URLs (robots'
//! URLs carry the access token), secrets and passwords are never shown in a
//! problem: only the entry and the key are named.

use customs179_alerts::channel::{self, ChannelConfig, Mail, MailTls, Target};
use customs179_alerts::{AlertKind, Language, Severity};
use toml::{Table, Value};

use super::{Secret, shown};

/// The keys every entry may have, and those of each kind.
const COMMON_KEYS: &[&str] = &["name", "kind", "kinds", "min_severity", "language", "per_minute"];
const KIND_KEYS: &[(&str, &[&str])] = &[
    ("webhook", &["url", "secret"]),
    ("wecom", &["url"]),
    ("dingtalk", &["url", "secret"]),
    ("feishu", &["url", "secret"]),
    ("mail", &["host", "port", "tls", "username", "password", "from", "to"]),
];
/// Keys whose values are never shown.
const SECRET_KEYS: &[&str] = &["url", "secret", "password"];

/// The robots take about 20 messages a minute; a webhook or mail server is
/// the operator's own, but a storm of messages helps nobody either.
const DEFAULT_PER_MINUTE: i64 = 15;

/// Every entry of `[[alerts]]`, or the problems, each naming its entry.
pub(super) fn channels(value: &Value) -> Result<Vec<ChannelConfig>, Vec<String>> {
    let Value::Array(items) = value else {
        return Err(vec![format!(
            "alerts: must be an array of tables ([[alerts]] entries), got {}",
            shown(value)
        )]);
    };
    let mut problems = Vec::new();
    let mut channels: Vec<ChannelConfig> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Table(entry) = item else {
            problems.push(format!("alerts: entry {} must be a table, got {}", i + 1, shown(item)));
            continue;
        };
        let mut reader = Entry { entry, at: format!("alerts: entry {}", i + 1), problems: Vec::new() };
        if let Some(channel) = reader.channel() {
            if channels.iter().any(|c| c.name == channel.name) {
                reader.problem(format!(
                    "the name {:?} is used twice (give each entry its own name)",
                    channel.name
                ));
            } else {
                channels.push(channel);
            }
        }
        problems.extend(reader.problems);
    }
    if problems.is_empty() { Ok(channels) } else { Err(problems) }
}

struct Entry<'a> {
    entry: &'a Table,
    /// "alerts: entry 2" or "alerts: entry 2 (\"ops\")", for problems.
    at: String,
    problems: Vec<String>,
}

impl Entry<'_> {
    fn problem(&mut self, reason: String) {
        self.problems.push(format!("{}: {reason}", self.at));
    }

    fn channel(&mut self) -> Option<ChannelConfig> {
        let kind = match self.entry.get("kind") {
            Some(Value::String(kind)) if KIND_KEYS.iter().any(|(k, _)| k == kind) => kind.clone(),
            got => {
                let kinds: Vec<&str> = KIND_KEYS.iter().map(|(k, _)| *k).collect();
                let got = got.map_or("nothing".to_owned(), shown);
                self.problem(format!("kind must be one of {}, got {got}", kinds.join(", ")));
                return None;
            }
        };
        let name = match self.entry.get("name") {
            None => kind.clone(),
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            Some(got) => {
                self.problem(format!("name must be a non-empty string, got {}", shown(got)));
                return None;
            }
        };
        self.at = format!("{} ({name:?})", self.at);
        let own = KIND_KEYS.iter().find(|(k, _)| *k == kind).map_or(&[][..], |(_, keys)| keys);
        for key in self.entry.keys() {
            if !COMMON_KEYS.contains(&key.as_str()) && !own.contains(&key.as_str()) {
                let keys: Vec<&str> = COMMON_KEYS.iter().chain(own).copied().collect();
                self.problem(format!(
                    "unknown key {key} (the keys of a {kind} entry are {})",
                    keys.join(", ")
                ));
            }
        }
        let kinds = self.kinds();
        let min_severity =
            self.choice("min_severity", Severity::Warning, Severity::parse, "info, warning or critical");
        let language = self.choice("language", Language::ZhCn, Language::parse, "zh-CN or en");
        let per_minute = self.per_minute();
        let target = match kind.as_str() {
            "webhook" => {
                let url = self.url();
                let secret = self.secret("secret", false);
                Target::Webhook { url: url?, secret }
            }
            "wecom" => Target::Wecom { url: self.url()? },
            "dingtalk" => {
                let url = self.url();
                let secret = self.secret("secret", true);
                Target::Dingtalk { url: url?, secret: secret? }
            }
            "feishu" => {
                let url = self.url();
                let secret = self.secret("secret", false);
                Target::Feishu { url: url?, secret }
            }
            _ => Target::Mail(self.mail()?),
        };
        if !self.problems.is_empty() {
            return None;
        }
        Some(ChannelConfig {
            name,
            target,
            kinds: kinds?,
            min_severity: min_severity?,
            language: language?,
            per_minute: per_minute?,
        })
    }

    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.entry.get(key) {
            None if required => {
                self.problem(format!("missing {key}"));
                None
            }
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(got) => {
                let got =
                    if SECRET_KEYS.contains(&key) { String::new() } else { format!(", got {}", shown(got)) };
                self.problem(format!("{key} must be a non-empty string{got}"));
                None
            }
        }
    }

    fn url(&mut self) -> Option<Secret> {
        let url = self.string("url", true)?;
        if channel::parse_url(&url).is_ok() {
            Some(Secret::new(url))
        } else {
            self.problem("url must be an http:// or https:// URL (not shown: it may hold a key)".to_owned());
            None
        }
    }

    fn secret(&mut self, key: &str, required: bool) -> Option<Secret> {
        self.string(key, required).map(Secret::new)
    }

    fn choice<T>(&mut self, key: &str, default: T, parse: fn(&str) -> Option<T>, allowed: &str) -> Option<T> {
        match self.entry.get(key) {
            None => Some(default),
            Some(Value::String(s)) if parse(s).is_some() => parse(s),
            Some(got) => {
                self.problem(format!("{key} must be {allowed}, got {}", shown(got)));
                None
            }
        }
    }

    fn kinds(&mut self) -> Option<Vec<AlertKind>> {
        let Some(value) = self.entry.get("kinds") else { return Some(AlertKind::ALL.to_vec()) };
        let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
        let kinds = value.as_array().and_then(|items| {
            items.iter().map(|item| item.as_str().and_then(AlertKind::parse)).collect::<Option<Vec<_>>>()
        });
        match kinds {
            Some(kinds) if !kinds.is_empty() => Some(kinds),
            _ => {
                self.problem(format!(
                    "kinds must be a non-empty array of {}, got {}",
                    all.join(", "),
                    shown(value)
                ));
                None
            }
        }
    }

    fn integer(&mut self, key: &str, max: i64) -> Option<Option<i64>> {
        match self.entry.get(key) {
            None => Some(None),
            Some(Value::Integer(n)) if (1..=max).contains(n) => Some(Some(*n)),
            Some(got) => {
                self.problem(format!("{key} must be an integer from 1 to {max}, got {}", shown(got)));
                None
            }
        }
    }

    fn per_minute(&mut self) -> Option<u32> {
        let n = self.integer("per_minute", 600)?.unwrap_or(DEFAULT_PER_MINUTE);
        u32::try_from(n).ok()
    }

    fn mail(&mut self) -> Option<Mail> {
        let host = self.string("host", true);
        let tls = self.choice("tls", MailTls::Starttls, MailTls::parse, "starttls, tls or none");
        let port = self.integer("port", 65_535);
        let username = self.string("username", false);
        let password = self.secret("password", false);
        let login = match (username, password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => {
                self.problem("username and password go together: give both, or neither".to_owned());
                None
            }
        };
        let from = self.address("from");
        let to = match self.entry.get("to") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|item| match item.as_str() {
                    Some(address) if channel::parse_address(address).is_ok() => Some(address.to_owned()),
                    _ => {
                        self.problem(format!("to: {} is not a mail address", shown(item)));
                        None
                    }
                })
                // Every address is checked (each bad one its own problem) before any is refused.
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Option<Vec<_>>>(),
            got => {
                let got = got.map_or("nothing".to_owned(), shown);
                self.problem(format!("to must be a non-empty array of mail addresses, got {got}"));
                None
            }
        };
        let tls = tls?;
        let port = port?.map_or(tls.default_port(), |p| u16::try_from(p).unwrap_or(u16::MAX));
        Some(Mail { host: host?, port, tls, login, from: from?, to: to? })
    }

    fn address(&mut self, key: &str) -> Option<String> {
        let address = self.string(key, true)?;
        if channel::parse_address(&address).is_ok() {
            Some(address)
        } else {
            self.problem(format!("{key}: {address:?} is not a mail address"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Vec<ChannelConfig>, Vec<String>> {
        let table: Table = toml.parse().unwrap();
        channels(&table["alerts"])
    }

    const SECRET_URL: &str = "https://oapi.dingtalk.com/robot/send?access_token=tok-0123456789";

    #[test]
    fn each_kind_of_entry_is_read_with_its_defaults() {
        let channels = parse(&format!(
            r#"
            [[alerts]]
            kind = "webhook"
            url = "http://127.0.0.1:9/hook"
            secret = "hook-secret"
            [[alerts]]
            name = "ops"
            kind = "dingtalk"
            url = "{SECRET_URL}"
            secret = "SEC0123"
            kinds = ["signing_paused", "late"]
            min_severity = "critical"
            language = "en"
            per_minute = 5
            [[alerts]]
            kind = "wecom"
            url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
            [[alerts]]
            kind = "feishu"
            url = "https://open.feishu.cn/open-apis/bot/v2/hook/x"
            [[alerts]]
            kind = "mail"
            host = "smtp.example.com"
            tls = "tls"
            username = "ops@example.com"
            password = "mail-password"
            from = "customs179 <ops@example.com>"
            to = ["a@example.com", "b@example.com"]
            "#
        ))
        .unwrap();
        let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["webhook", "ops", "wecom", "feishu", "mail"]);
        let hook = &channels[0];
        assert_eq!(
            (hook.min_severity, hook.language, hook.per_minute),
            (Severity::Warning, Language::ZhCn, 15)
        );
        assert_eq!(hook.kinds, AlertKind::ALL);
        assert!(
            matches!(&hook.target, Target::Webhook { secret: Some(s), .. } if s.expose() == "hook-secret")
        );
        let ops = &channels[1];
        assert_eq!(ops.kinds, [AlertKind::SigningPaused, AlertKind::Late]);
        assert_eq!((ops.min_severity, ops.language, ops.per_minute), (Severity::Critical, Language::En, 5));
        assert!(matches!(&ops.target, Target::Dingtalk { url, .. } if url.expose() == SECRET_URL));
        assert!(matches!(&channels[3].target, Target::Feishu { secret: None, .. }));
        let Target::Mail(mail) = &channels[4].target else { panic!("a mail entry") };
        assert_eq!((mail.port, mail.tls), (465, MailTls::Tls));
        assert_eq!(mail.to, ["a@example.com", "b@example.com"]);
        assert_eq!(
            mail.login.as_ref().map(|(user, pw)| (user.as_str(), pw.expose())),
            Some(("ops@example.com", "mail-password"))
        );
        assert!(
            !format!("{channels:?}").contains("mail-password")
                && !format!("{channels:?}").contains("tok-0123")
        );
    }

    #[test]
    fn bad_entries_are_refused_by_entry_and_key_without_their_secrets() {
        let problems = parse(&format!(
            r#"
            [[alerts]]
            kind = "pager"
            [[alerts]]
            name = "ops"
            kind = "dingtalk"
            url = "ftp://{SECRET_URL}"
            kinds = ["signing_paused", "everything"]
            min_severity = "loud"
            to = ["x@example.com"]
            [[alerts]]
            kind = "mail"
            host = "smtp.example.com"
            password = "mail-password"
            from = "nobody"
            to = []
            [[alerts]]
            kind = "wecom"
            url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
            [[alerts]]
            kind = "wecom"
            url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k2"
            "#
        ))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "alerts: entry 1: kind must be one of webhook, wecom, dingtalk, feishu, mail, got \"pager\"",
                "alerts: entry 2 (\"ops\"): unknown key to (the keys of a dingtalk entry are name, kind, kinds, \
                 min_severity, language, per_minute, url, secret)",
                "alerts: entry 2 (\"ops\"): kinds must be a non-empty array of signing_paused, uploads_stopped, \
                 signer_unreachable, at_risk, late, certificate, customs_errors, requests_failed, got an array",
                "alerts: entry 2 (\"ops\"): min_severity must be info, warning or critical, got \"loud\"",
                "alerts: entry 2 (\"ops\"): url must be an http:// or https:// URL (not shown: it may hold a key)",
                "alerts: entry 2 (\"ops\"): missing secret",
                "alerts: entry 3 (\"mail\"): username and password go together: give both, or neither",
                "alerts: entry 3 (\"mail\"): from: \"nobody\" is not a mail address",
                "alerts: entry 3 (\"mail\"): to must be a non-empty array of mail addresses, got an array",
                "alerts: entry 5 (\"wecom\"): the name \"wecom\" is used twice (give each entry its own name)",
            ]
        );
        let all = problems.join("\n");
        assert!(!all.contains("tok-0123") && !all.contains("mail-password"), "{all}");
        let not_array = channels(&Value::String("x".into())).unwrap_err();
        assert_eq!(not_array, ["alerts: must be an array of tables ([[alerts]] entries), got \"x\""]);
    }
}
