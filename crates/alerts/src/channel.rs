//! The channels that carry alerts: where each `[[alerts]]` entry sends, and
//! which alerts it takes.
//!
//! Every URL, key, signing secret and password here is a [`Secret`]: robot
//! URLs carry their access token, so neither a URL nor any of these may
//! appear in a log, an error, an API answer or the page.

use customs179_core::Secret;

use crate::{AlertKind, Language, Severity};

/// One `[[alerts]]` entry.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Unique among the entries; deliveries are recorded under it.
    pub name: String,
    pub target: Target,
    /// The kinds it takes (every kind when the entry names none).
    pub kinds: Vec<AlertKind>,
    pub min_severity: Severity,
    pub language: Language,
    /// Messages it may be sent in any 60 seconds: the robots accept about 20.
    pub per_minute: u32,
}

impl ChannelConfig {
    /// Whether an alert of `kind` at `severity` goes to this channel.
    pub fn wants(&self, kind: AlertKind, severity: Severity) -> bool {
        self.kinds.contains(&kind) && severity >= self.min_severity
    }
}

/// Where a channel sends.
#[derive(Debug, Clone)]
pub enum Target {
    /// A JSON POST of the alert; with a secret, `X-Customs179-Signature:
    /// sha256=<hex HMAC-SHA256 of the body>`.
    Webhook {
        url: Secret,
        secret: Option<Secret>,
    },
    /// A WeCom group robot: the key is in the URL.
    Wecom {
        url: Secret,
    },
    /// A DingTalk robot with a signing secret.
    Dingtalk {
        url: Secret,
        secret: Secret,
    },
    /// A Feishu robot, with a signature when it has a secret.
    Feishu {
        url: Secret,
        secret: Option<Secret>,
    },
    Mail(Mail),
}

/// An SMTP server and the message's addresses.
#[derive(Debug, Clone)]
pub struct Mail {
    pub host: String,
    pub port: u16,
    pub tls: MailTls,
    /// Login, when the server wants one.
    pub login: Option<(String, Secret)>,
    pub from: String,
    pub to: Vec<String>,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTls {
    /// Plain, then STARTTLS; the server must offer it (no fallback to plain text).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

impl MailTls {
    pub fn as_str(self) -> &'static str {
        match self {
            MailTls::Starttls => "starttls",
            MailTls::Tls => "tls",
            MailTls::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<MailTls> {
        [MailTls::Starttls, MailTls::Tls, MailTls::None].into_iter().find(|v| v.as_str() == s)
    }

    /// The usual port.
    pub fn default_port(self) -> u16 {
        match self {
            MailTls::Starttls => 587,
            MailTls::Tls => 465,
            MailTls::None => 25,
        }
    }
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Wecom { .. } => "wecom",
            Target::Dingtalk { .. } => "dingtalk",
            Target::Feishu { .. } => "feishu",
            Target::Mail(_) => "mail",
        }
    }
}
