//! The channels that carry alerts: where each `[[alerts]]` entry sends, and
//! which alerts it takes.
//!
//! Every URL, key, signing secret and password here is a [`Secret`]: robot
//! URLs carry their access token, so neither a URL nor any of these may
//! appear in a log, an error, an API answer or the page.

mod error;
mod http;
mod mail;
mod sign;
mod text;

use std::fmt;
use std::time::Duration;

use customs179_core::Secret;
use reqwest::{Client, Url};

pub use error::{ChannelError, DeliveryError};
pub use mail::parse_address;
pub use sign::{dingtalk_sign, feishu_sign, webhook_signature};

use crate::message::render;
use crate::{Alert, AlertKind, Language, Severity};
use http::Answer;
use mail::MailSender;
use text::Redactor;

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

/// A channel ready to send: its configuration, and the HTTP client or SMTP
/// transport made from it.
pub struct Channel {
    config: ChannelConfig,
    sender: Sender,
    /// Every secret of the channel, taken out of any error's text.
    redactor: Redactor,
}

enum Sender {
    Webhook { client: Client, url: Url, secret: Option<Secret> },
    Wecom { client: Client, url: Url },
    Dingtalk { client: Client, url: Url, secret: Secret },
    Feishu { client: Client, url: Url, secret: Option<Secret> },
    Mail(MailSender),
}

/// Not derived: the configuration's secrets are redacted, but the parsed URL
/// would print its key.
impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.config.name)
            .field("kind", &self.config.target.kind())
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel whose every delivery gives up after `timeout`.
    pub fn new(config: ChannelConfig, timeout: Duration) -> Result<Channel, ChannelError> {
        let mut redactor = Redactor::default();
        match &config.target {
            Target::Webhook { secret: Some(secret), .. }
            | Target::Dingtalk { secret, .. }
            | Target::Feishu { secret: Some(secret), .. } => redactor.add(secret.expose()),
            Target::Mail(Mail { login: Some((_, password)), .. }) => redactor.add(password.expose()),
            _ => {}
        }
        let mut url = |configured: &Secret| {
            let url = parse_url(configured.expose())?;
            redactor.add_url(configured.expose(), &url);
            Ok(url)
        };
        // The URL before the client: a bad URL is the likelier mistake.
        let sender = match &config.target {
            Target::Webhook { url: u, secret } => {
                Sender::Webhook { url: url(u)?, client: http_client(timeout)?, secret: secret.clone() }
            }
            Target::Wecom { url: u } => Sender::Wecom { url: url(u)?, client: http_client(timeout)? },
            Target::Dingtalk { url: u, secret } => {
                Sender::Dingtalk { url: url(u)?, client: http_client(timeout)?, secret: secret.clone() }
            }
            Target::Feishu { url: u, secret } => {
                Sender::Feishu { url: url(u)?, client: http_client(timeout)?, secret: secret.clone() }
            }
            Target::Mail(mail) => Sender::Mail(MailSender::new(mail, timeout)?),
        };
        Ok(Channel { config, sender, redactor })
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// One attempt to deliver `alert`; `now_ms` is the robots' signing time.
    /// No retry here: the outbox retries, with backoff, within the
    /// channel's rate.
    pub async fn send(&self, alert: &Alert, now_ms: i64) -> Result<(), DeliveryError> {
        self.attempt(alert, now_ms).await.map_err(|e| e.map_text(|text| self.redactor.clean(text)))
    }

    async fn attempt(&self, alert: &Alert, now_ms: i64) -> Result<(), DeliveryError> {
        let rendered = render(alert, self.config.language);
        match &self.sender {
            Sender::Webhook { client, url, secret } => {
                let secret = secret.as_ref().map(Secret::expose);
                let request = http::webhook_request(url, secret, alert, &rendered)?;
                http::post(client, request, Answer::Webhook).await
            }
            Sender::Wecom { client, url } => {
                http::post(client, http::wecom_request(url, &rendered.text)?, Answer::Errcode).await
            }
            Sender::Dingtalk { client, url, secret } => {
                let request = http::dingtalk_request(url, secret.expose(), &rendered.text, now_ms)?;
                http::post(client, request, Answer::Errcode).await
            }
            Sender::Feishu { client, url, secret } => {
                let secret = secret.as_ref().map(Secret::expose);
                let request = http::feishu_request(url, secret, &rendered.text, now_ms)?;
                http::post(client, request, Answer::Feishu).await
            }
            Sender::Mail(mail) => mail.send(&rendered).await,
        }
    }
}

/// An http or https URL with a host, as every HTTP channel needs (the
/// configuration checks its URLs with this too). The error does not say
/// which part is wrong: any part may be the robot's key.
pub fn parse_url(url: &str) -> Result<Url, ChannelError> {
    match Url::parse(url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(ChannelError::Url),
    }
}

fn http_client(timeout: Duration) -> Result<Client, ChannelError> {
    Client::builder()
        .timeout(timeout)
        // A redirect would carry the alert (and the webhook's signature) to
        // wherever the answer points; a receiver that moved is a failure.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ChannelError::HttpClient(e.without_url().to_string()))
}
