//! Telling people when something needs them: the service is watched at
//! night by nobody, so what needs a person is sent where people are.
//!
//! - [`condition`]: which conditions hold, from what the service observes
//!   (pure): one alert when a condition begins, one all-clear when it ends.
//! - [`message`]: an alert as plain text, in Chinese or English (pure).
//! - [`channel`]: the channels that carry them (webhook, WeCom, DingTalk,
//!   Feishu, mail), their signatures and their answers.

pub mod channel;
pub mod condition;
pub mod message;

use serde::Serialize;

/// What an alert is about. The names are those of `[[alerts]] kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Signing is paused (a PIN problem, the card's certificate, an operator).
    SigningPaused,
    /// Uploads are stopped (customs answered 20004, or an operator).
    UploadsStopped,
    /// The card's EportClient has not been reachable for a while.
    SignerUnreachable,
    /// Pending requests close to their deadline.
    AtRisk,
    /// Pending requests past their deadline.
    Late,
    /// The card's certificate expires soon, or has expired.
    Certificate,
    /// Customs answers errors above the configured rate.
    CustomsErrors,
    /// Requests failed recently.
    RequestsFailed,
    /// A test message (`customs179 alert-test`): held by no condition, and
    /// sent to every channel whatever its `kinds`.
    Test,
}

impl AlertKind {
    pub const ALL: [AlertKind; 8] = [
        AlertKind::SigningPaused,
        AlertKind::UploadsStopped,
        AlertKind::SignerUnreachable,
        AlertKind::AtRisk,
        AlertKind::Late,
        AlertKind::Certificate,
        AlertKind::CustomsErrors,
        AlertKind::RequestsFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SigningPaused => "signing_paused",
            AlertKind::UploadsStopped => "uploads_stopped",
            AlertKind::SignerUnreachable => "signer_unreachable",
            AlertKind::AtRisk => "at_risk",
            AlertKind::Late => "late",
            AlertKind::Certificate => "certificate",
            AlertKind::CustomsErrors => "customs_errors",
            AlertKind::RequestsFailed => "requests_failed",
            AlertKind::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

/// How urgent an alert is; channels take those at or above their minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical].into_iter().find(|v| v.as_str() == s)
    }
}

/// The language of a channel's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    #[default]
    ZhCn,
    En,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::ZhCn => "zh-CN",
            Language::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Language> {
        [Language::ZhCn, Language::En].into_iter().find(|v| v.as_str() == s)
    }
}

/// Whether an alert tells that a condition began or that it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Raised,
    Cleared,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Raised => "raised",
            Event::Cleared => "cleared",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        [Event::Raised, Event::Cleared].into_iter().find(|v| v.as_str() == s)
    }
}

/// One alert as it is sent: the webhook channel posts it as JSON, the
/// others send [`message::render`]'s text of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Its id in the store's outbox: the same on every retry, so that a
    /// receiver can tell a repeat (a delivery whose answer was lost is sent again).
    pub id: i64,
    pub kind: AlertKind,
    pub severity: Severity,
    pub event: Event,
    /// The card it is about (its `[[signer]]` name), for the conditions of
    /// one card (its signing paused, unreachable, its certificate); empty for
    /// the service's.
    pub card: String,
    /// The stage within the condition: the days-left threshold of a
    /// certificate alert ("30", "7", "1", "expired"); empty for the others.
    pub level: String,
    /// What the condition covers at the time (requests at risk, late,
    /// failed; customs errors); 0 where it counts nothing.
    pub count: i64,
    /// Why: a pause's reason, the card's last error. It may hold text from
    /// customs or the card, so receivers must treat it as untrusted text.
    pub detail: String,
    /// When the condition began, unix ms.
    pub since: i64,
    /// When this alert was made, unix ms.
    pub at: i64,
    /// The enterprise (its ebp code): several instances may share a channel.
    pub source: String,
}
