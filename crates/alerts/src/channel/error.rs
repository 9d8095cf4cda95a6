//! What goes wrong in making a channel or in one delivery. No variant holds
//! a source error: reqwest's and lettre's errors may carry a URL or the
//! server's words, so only their text, cleaned of the channel's secrets, is
//! kept.

/// A channel that cannot be made from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The URL is not an http(s) URL (which part is wrong is not said: any
    /// part of it may be the robot's key).
    #[error("the channel's URL is not a valid http or https URL")]
    Url,
    /// (Neither the HTTP client nor lettre's TLS settings are given a URL or
    /// a secret, so their errors' text holds none.)
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
    #[error("the mail address {address:?} is not valid: {reason}")]
    Address { address: String, reason: String },
    #[error("the mail channel has no recipient")]
    NoRecipient,
    #[error("the TLS settings for the SMTP server could not be built: {0}")]
    Tls(String),
}

/// One delivery that failed; the outbox retries it later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered an HTTP status other than success.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// A robot answered HTTP 200 but refused the message (`field` is the
    /// answer's name for its code: `errcode`, or Feishu's `code`).
    #[error("{field} {code}: {message}")]
    Refused { field: &'static str, code: i64, message: String },
    /// A robot's answer said neither success nor failure.
    #[error("unexpected answer: {0}")]
    Answer(String),
    #[error("timed out")]
    Timeout,
    /// The request did not get an answer (connection, TLS, protocol).
    #[error("transport: {0}")]
    Transport(String),
    /// The SMTP server refused, or the conversation with it failed; `code`
    /// is the server's reply code when it gave one.
    #[error("SMTP: {message}")]
    Smtp { code: Option<String>, message: String },
    /// The message could not be put together.
    #[error("the message could not be built: {0}")]
    Message(String),
}

impl DeliveryError {
    /// A short code for the outbox's history ("HTTP 500", "errcode 310000",
    /// "timeout", "transport", "smtp 535").
    pub fn code(&self) -> String {
        match self {
            DeliveryError::Status { status, .. } => format!("HTTP {status}"),
            DeliveryError::Refused { field, code, .. } => format!("{field} {code}"),
            DeliveryError::Answer(_) => "answer".into(),
            DeliveryError::Timeout => "timeout".into(),
            DeliveryError::Transport(_) => "transport".into(),
            DeliveryError::Smtp { code: Some(code), .. } => format!("smtp {code}"),
            DeliveryError::Smtp { code: None, .. } => "smtp".into(),
            DeliveryError::Message(_) => "message".into(),
        }
    }

    /// The same error with its text run through `clean`: every text that
    /// leaves a channel passes here.
    pub(crate) fn map_text(self, clean: impl Fn(&str) -> String) -> DeliveryError {
        match self {
            DeliveryError::Status { status, body } => DeliveryError::Status { status, body: clean(&body) },
            DeliveryError::Refused { field, code, message } => {
                DeliveryError::Refused { field, code, message: clean(&message) }
            }
            DeliveryError::Answer(text) => DeliveryError::Answer(clean(&text)),
            DeliveryError::Timeout => DeliveryError::Timeout,
            DeliveryError::Transport(text) => DeliveryError::Transport(clean(&text)),
            DeliveryError::Smtp { code, message } => DeliveryError::Smtp { code, message: clean(&message) },
            DeliveryError::Message(text) => DeliveryError::Message(clean(&text)),
        }
    }
}
