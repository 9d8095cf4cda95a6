//! The configuration of `customs179 serve`: a TOML file, any key of which an
//! environment variable `CUSTOMS179_<SECTION>_<KEY>` overrides. The arrays of
//! tables (`[[alerts]]`, `[[signer]]` for several cards) are read apart, in
//! submodules, and have no variables: with `[[signer]]` entries, the
//! `CUSTOMS179_SIGNER_*` variables of the single `[signer]` table are refused.
//!
//! The file is walked by hand against a table of known keys rather than
//! deserialised with serde: an operator fixing a configuration wants every
//! problem at once, each named by its key, and serde stops at the first.
//! Secrets (the card PIN, API tokens) never appear in a problem, in `Debug`
//! or in [`Config::summary`]: configuration errors end up in logs and tickets.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::{Table, Value};

pub use customs179_core::Secret;

mod alerts;
mod signers;

/// Where customs takes uploads in production.
pub const PRODUCTION_UPLOAD_URL: &str = "https://customs.chinaport.gov.cn/ceb2grab/grab/realTimeDataUpload";
/// Where customs takes uploads during joint debugging.
pub const TEST_UPLOAD_URL: &str = "https://swapptest.singlewindow.cn/ceb2grab/grab/realTimeDataUpload";

/// Only environment variables with this prefix are read; all of them must be known keys.
pub const ENV_PREFIX: &str = "CUSTOMS179_";

/// The whole configuration of `customs179 serve`, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub intake: IntakeConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub enterprise: EnterpriseConfig,
    /// The cards, in the order configured: one per `[[signer]]` entry, or the
    /// single `[signer]` table as a card named [`SINGLE_CARD`]. Never empty.
    pub signers: Vec<SignerConfig>,
    pub customs: CustomsConfig,
    pub payments: PaymentsConfig,
    pub log: LogConfig,
    pub alerts: AlertsConfig,
    /// How long a stop may take, whatever clients do.
    pub shutdown_timeout_secs: u64,
}

/// `[[alerts]]` channels and the `[alerting]` thresholds.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    pub channels: Vec<customs179_alerts::channel::ChannelConfig>,
    pub rules: customs179_alerts::condition::Rules,
}

/// The public endpoint customs calls with its 179 requests.
#[derive(Clone, Debug)]
pub struct IntakeConfig {
    pub listen: SocketAddr,
    pub path: String,
    pub max_body_bytes: usize,
    /// `None` accepts any address; customs calls from addresses it does not publish.
    pub allow_from: Option<Vec<IpNet>>,
    /// Load balancers in front of intake: from a connection of one of these, the
    /// caller's address is taken from `X-Forwarded-For`; from any other, the header
    /// is ignored (anyone can write it).
    pub trusted_proxies: Vec<IpNet>,
    pub connections: ConnectionLimits,
}

/// The operators' API and status page; loopback by default because it can stop signing.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Who may call it: `[admin] token` (an operator named "admin") and every
    /// `[[admin.tokens]]` entry. At least one.
    pub tokens: Vec<AdminToken>,
    pub connections: ConnectionLimits,
}

/// A bearer token of the admin API, with the name its actions are audited under.
#[derive(Clone, Debug)]
pub struct AdminToken {
    pub name: String,
    pub token: Secret,
    pub role: Role,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Reads, and replays, pauses and resumes.
    Operator,
}

/// What a listener allows its clients while it reads their requests: no client can hold a
/// connection, or the listener, without sending a request in good time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a request's first byte to its last header.
    pub header_timeout_secs: u64,
    /// From a request's headers to the last byte of its body.
    pub body_timeout_secs: u64,
    /// How long an open connection may wait for its next request.
    pub idle_timeout_secs: u64,
    /// Open connections at most; the next one closes the one idle longest.
    pub max_connections: u64,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The SQLite file, unless `url` names a PostgreSQL database.
    pub path: PathBuf,
    /// `[store] url`: a PostgreSQL database, which may carry a password.
    pub url: Option<Secret>,
}

impl StoreConfig {
    /// Where the store is: the PostgreSQL database when `url` is set, else
    /// the SQLite file.
    pub fn location(&self) -> customs179_store::Location {
        match &self.url {
            Some(url) => customs179_store::Location::Postgres(url.clone()),
            None => customs179_store::Location::Sqlite(self.path.clone()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EnterpriseConfig {
    /// The platform's customs registration code, `ebpCode` in every upload.
    pub ebp_code: String,
}

/// The name of the card a single `[signer]` table configures.
pub const SINGLE_CARD: &str = "card";

/// One card: the EportClient WebSocket that signs with it.
#[derive(Clone, Debug)]
pub struct SignerConfig {
    /// How the card is named in the status, the API, the logs and alerts.
    pub name: String,
    pub url: String,
    pub pin: Secret,
    pub timeout_ms: u64,
    /// Items in a row whose signature is unusable (does not verify, no data, another
    /// certNo) after which signing pauses.
    pub breaker_after: u64,
}

#[derive(Clone, Debug)]
pub struct CustomsConfig {
    pub environment: Environment,
    /// Replaces the environment's URL, for a simulator or a proxy; see [`CustomsConfig::upload_url`].
    pub upload_url: Option<String>,
    /// How long after customs' call its data must be uploaded.
    pub deadline_secs: u64,
    /// A pending request with less than this left before its deadline is at risk.
    pub at_risk_secs: u64,
    pub timeout_ms: u64,
    /// Extra CA certificates to trust for the upload URL.
    pub ca_file: Option<PathBuf>,
    pub retry_max_secs: u64,
    pub give_up_after_secs: u64,
}

/// Seconds as the store's milliseconds (saturating: configured values are bounded by u64).
fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl CustomsConfig {
    /// `at_risk_secs`, in ms: pending with less than this left is at risk.
    pub fn at_risk_ms(&self) -> i64 {
        secs_ms(self.at_risk_secs)
    }

    /// Where uploads go: the override if there is one, else the environment's URL.
    pub fn upload_url(&self) -> &str {
        self.upload_url.as_deref().unwrap_or(self.environment.upload_url())
    }

    /// Which upload URL is in use and why, for the start-up log: an override
    /// pointed at the wrong place is the first thing to rule out.
    pub fn endpoint_description(&self) -> String {
        match &self.upload_url {
            None => format!("{} environment ({})", self.environment, self.environment.upload_url()),
            Some(url) => format!("override ({url}) for {} environment", self.environment),
        }
    }
}

/// The payment platform's side: data pushed to the payments API, or pulled from its URL.
#[derive(Clone, Debug)]
pub struct PaymentsConfig {
    pub token: Option<Secret>,
    pub max_body_bytes: usize,
    /// Contains `{orderNo}`, replaced by the order whose payment data is wanted.
    pub pull_url: Option<String>,
    pub pull_token: Option<Secret>,
    pub pull_interval_secs: u64,
    pub give_up_after_secs: u64,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `customs179=debug,info`.
    pub level: String,
    /// Where the log is written: standard error, or daily files in a folder.
    pub to: LogTo,
}

/// Daily log files kept when `[log] max_files` is not set.
pub const DEFAULT_MAX_LOG_FILES: usize = 30;

/// Where the log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTo {
    /// Standard error, for systemd's journal or a terminal.
    Stderr,
    /// `customs179.YYYY-MM-DD.log` in `dir`, a new file each day (UTC), the
    /// newest `max_files` kept: for a Windows service, which has no stderr.
    Files { dir: PathBuf, max_files: usize },
}

impl std::fmt::Display for LogTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogTo::Stderr => f.write_str("standard error"),
            LogTo::Files { dir, max_files } => {
                write!(f, "daily files in {} (the newest {max_files} kept)", dir.display())
            }
        }
    }
}

/// Which customs system receives the uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Test,
    Production,
}

impl Environment {
    pub fn upload_url(self) -> &'static str {
        match self {
            Environment::Test => TEST_UPLOAD_URL,
            Environment::Production => PRODUCTION_UPLOAD_URL,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Test => "test",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every problem found in a configuration, one per line, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Reads the configuration file at `path` with the process's `CUSTOMS179_*`
    /// environment variables applied on top.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            match value.into_string() {
                Ok(value) => env.push((name.to_owned(), value)),
                Err(_) => problems.push(format!("{name}: the value is not UTF-8")),
            }
        }
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some(text),
                Err(_) => {
                    problems.push(format!("{}: not UTF-8 text", path.display()));
                    None
                }
            },
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", path.display()));
                None
            }
        };
        let source = format!("{}: ", path.display());
        parse(text.as_deref(), &source, env, problems)
    }

    /// Parses a configuration from TOML text; of `env`, only the entries named
    /// `CUSTOMS179_*` are read, and they override the text.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let env = env.into_iter().filter(|(name, _)| name.starts_with(ENV_PREFIX)).collect();
        parse(Some(text), "", env, Vec::new())
    }

    /// The effective configuration in a few lines, secrets only as set or not set.
    pub fn summary(&self) -> String {
        fn set(secret: &Option<Secret>) -> &'static str {
            if secret.is_some() { "set" } else { "not set" }
        }
        let intake = &self.intake;
        let allow_from = match &intake.allow_from {
            None => "any address".to_owned(),
            Some(nets) => nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        };
        let customs = &self.customs;
        let payments = &self.payments;
        let pull = match &payments.pull_url {
            None => "none".to_owned(),
            Some(url) => format!(
                "{url} every {} s, pull token {}",
                payments.pull_interval_secs,
                set(&payments.pull_token)
            ),
        };
        let lines = [
            format!(
                "intake: {}, path {}, bodies up to {} bytes, from {allow_from}",
                intake.listen, intake.path, intake.max_body_bytes
            ),
            format!(
                "admin: {}, tokens: {}",
                self.admin.listen,
                self.admin
                    .tokens
                    .iter()
                    .map(|t| format!(
                        "{} ({})",
                        t.name,
                        if t.role == Role::Operator { "operator" } else { "viewer" }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("store: {}", self.store.location().describe()),
            format!("enterprise: ebpCode {}", self.enterprise.ebp_code),
            format!(
                "signers: {}",
                self.signers
                    .iter()
                    .map(|s| format!("{} at {}, pin: set, timeout {} ms", s.name, s.url, s.timeout_ms))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            format!(
                "customs: {}, deadline {} s, timeout {} ms, CA file {}",
                customs.endpoint_description(),
                customs.deadline_secs,
                customs.timeout_ms,
                customs.ca_file.as_ref().map_or("none".to_owned(), |p| p.display().to_string()),
            ),
            format!(
                "customs retries: backoff up to {} s, give up after {} s",
                customs.retry_max_secs, customs.give_up_after_secs
            ),
            format!(
                "payments: token {}, bodies up to {} bytes, pull {pull}, give up after {} s",
                set(&payments.token),
                payments.max_body_bytes,
                payments.give_up_after_secs
            ),
            format!("log: {} format, level {}, to {}", self.log.format, self.log.level, self.log.to),
            format!(
                "alerts: {}; signer unreachable after {} s, {} customs errors or failures within {} s",
                if self.alerts.channels.is_empty() {
                    "no channel (shown in the console only)".to_owned()
                } else {
                    self.alerts
                        .channels
                        .iter()
                        .map(|c| {
                            format!("{} ({}, {} and above)", c.name, c.target.kind(), c.min_severity.as_str())
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                self.alerts.rules.signer_unreachable_ms / 1000,
                self.alerts.rules.customs_errors,
                self.alerts.rules.window_ms / 1000,
            ),
        ];
        let mut summary = lines.join("\n");
        summary.push('\n');
        summary
    }
}

/// How a key's value is written: what the file must hold, and how an
/// environment variable's text is converted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string; the environment's text as is.
    Text,
    /// A string never shown: in problems only its key is named.
    Secret,
    /// A positive integer; the environment's text parsed.
    Integer,
    /// An array of strings; the environment's text split at commas.
    List,
    /// An array of `{name, token, role}` tables; the environment's text as
    /// comma-separated `name:role:token`. Never shown: tokens are secrets.
    Tokens,
}

struct Key {
    /// `section.key`
    name: &'static str,
    kind: Kind,
}

impl Key {
    const fn new(name: &'static str, kind: Kind) -> Key {
        Key { name, kind }
    }

    fn section(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(section, _)| section)
    }

    fn env_var(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.replacen('.', "_", 1).to_ascii_uppercase())
    }
}

const INTAKE_LISTEN: Key = Key::new("intake.listen", Kind::Text);
const INTAKE_PATH: Key = Key::new("intake.path", Kind::Text);
const INTAKE_MAX_BODY_BYTES: Key = Key::new("intake.max_body_bytes", Kind::Integer);
const INTAKE_ALLOW_FROM: Key = Key::new("intake.allow_from", Kind::List);
const INTAKE_TRUSTED_PROXIES: Key = Key::new("intake.trusted_proxies", Kind::List);
const INTAKE_HEADER_TIMEOUT_SECS: Key = Key::new("intake.header_timeout_secs", Kind::Integer);
const INTAKE_BODY_TIMEOUT_SECS: Key = Key::new("intake.body_timeout_secs", Kind::Integer);
const INTAKE_IDLE_TIMEOUT_SECS: Key = Key::new("intake.idle_timeout_secs", Kind::Integer);
const INTAKE_MAX_CONNECTIONS: Key = Key::new("intake.max_connections", Kind::Integer);
const ADMIN_LISTEN: Key = Key::new("admin.listen", Kind::Text);
const ADMIN_TOKEN: Key = Key::new("admin.token", Kind::Secret);
const ADMIN_TOKENS: Key = Key::new("admin.tokens", Kind::Tokens);
const ADMIN_HEADER_TIMEOUT_SECS: Key = Key::new("admin.header_timeout_secs", Kind::Integer);
const ADMIN_BODY_TIMEOUT_SECS: Key = Key::new("admin.body_timeout_secs", Kind::Integer);
const ADMIN_IDLE_TIMEOUT_SECS: Key = Key::new("admin.idle_timeout_secs", Kind::Integer);
const ADMIN_MAX_CONNECTIONS: Key = Key::new("admin.max_connections", Kind::Integer);
const SHUTDOWN_TIMEOUT_SECS: Key = Key::new("shutdown.timeout_secs", Kind::Integer);
const STORE_PATH: Key = Key::new("store.path", Kind::Text);
const STORE_URL: Key = Key::new("store.url", Kind::Secret);
const ENTERPRISE_EBP_CODE: Key = Key::new("enterprise.ebp_code", Kind::Text);
const SIGNER_URL: Key = Key::new("signer.url", Kind::Text);
const SIGNER_PIN: Key = Key::new("signer.pin", Kind::Secret);
const SIGNER_TIMEOUT_MS: Key = Key::new("signer.timeout_ms", Kind::Integer);
const SIGNER_BREAKER_AFTER: Key = Key::new("signer.breaker_after", Kind::Integer);
const CUSTOMS_ENVIRONMENT: Key = Key::new("customs.environment", Kind::Text);
const CUSTOMS_UPLOAD_URL: Key = Key::new("customs.upload_url", Kind::Text);
const CUSTOMS_DEADLINE_SECS: Key = Key::new("customs.deadline_secs", Kind::Integer);
const CUSTOMS_AT_RISK_SECS: Key = Key::new("customs.at_risk_secs", Kind::Integer);
const CUSTOMS_TIMEOUT_MS: Key = Key::new("customs.timeout_ms", Kind::Integer);
const CUSTOMS_CA_FILE: Key = Key::new("customs.ca_file", Kind::Text);
const CUSTOMS_RETRY_MAX_SECS: Key = Key::new("customs.retry_max_secs", Kind::Integer);
const CUSTOMS_GIVE_UP_AFTER_SECS: Key = Key::new("customs.give_up_after_secs", Kind::Integer);
const PAYMENTS_TOKEN: Key = Key::new("payments.token", Kind::Secret);
const PAYMENTS_MAX_BODY_BYTES: Key = Key::new("payments.max_body_bytes", Kind::Integer);
const PAYMENTS_PULL_URL: Key = Key::new("payments.pull_url", Kind::Text);
const PAYMENTS_PULL_TOKEN: Key = Key::new("payments.pull_token", Kind::Secret);
const PAYMENTS_PULL_INTERVAL_SECS: Key = Key::new("payments.pull_interval_secs", Kind::Integer);
const PAYMENTS_GIVE_UP_AFTER_SECS: Key = Key::new("payments.give_up_after_secs", Kind::Integer);
const LOG_FORMAT: Key = Key::new("log.format", Kind::Text);
const LOG_LEVEL: Key = Key::new("log.level", Kind::Text);
const LOG_DIR: Key = Key::new("log.dir", Kind::Text);
const LOG_MAX_FILES: Key = Key::new("log.max_files", Kind::Integer);
const ALERTING_SIGNER_UNREACHABLE_SECS: Key = Key::new("alerting.signer_unreachable_secs", Kind::Integer);
const ALERTING_CUSTOMS_ERRORS: Key = Key::new("alerting.customs_errors", Kind::Integer);
const ALERTING_WINDOW_SECS: Key = Key::new("alerting.window_secs", Kind::Integer);

/// Every key there is; anything else in the file or the environment is a problem.
const KEYS: &[&Key] = &[
    &INTAKE_LISTEN,
    &INTAKE_PATH,
    &INTAKE_MAX_BODY_BYTES,
    &INTAKE_ALLOW_FROM,
    &INTAKE_TRUSTED_PROXIES,
    &INTAKE_HEADER_TIMEOUT_SECS,
    &INTAKE_BODY_TIMEOUT_SECS,
    &INTAKE_IDLE_TIMEOUT_SECS,
    &INTAKE_MAX_CONNECTIONS,
    &ADMIN_LISTEN,
    &ADMIN_TOKEN,
    &ADMIN_TOKENS,
    &ADMIN_HEADER_TIMEOUT_SECS,
    &ADMIN_BODY_TIMEOUT_SECS,
    &ADMIN_IDLE_TIMEOUT_SECS,
    &ADMIN_MAX_CONNECTIONS,
    &STORE_PATH,
    &STORE_URL,
    &ENTERPRISE_EBP_CODE,
    &SIGNER_URL,
    &SIGNER_PIN,
    &SIGNER_TIMEOUT_MS,
    &SIGNER_BREAKER_AFTER,
    &CUSTOMS_ENVIRONMENT,
    &CUSTOMS_UPLOAD_URL,
    &CUSTOMS_DEADLINE_SECS,
    &CUSTOMS_AT_RISK_SECS,
    &CUSTOMS_TIMEOUT_MS,
    &CUSTOMS_CA_FILE,
    &CUSTOMS_RETRY_MAX_SECS,
    &CUSTOMS_GIVE_UP_AFTER_SECS,
    &PAYMENTS_TOKEN,
    &PAYMENTS_MAX_BODY_BYTES,
    &PAYMENTS_PULL_URL,
    &PAYMENTS_PULL_TOKEN,
    &PAYMENTS_PULL_INTERVAL_SECS,
    &PAYMENTS_GIVE_UP_AFTER_SECS,
    &LOG_FORMAT,
    &LOG_LEVEL,
    &LOG_DIR,
    &LOG_MAX_FILES,
    &ALERTING_SIGNER_UNREACHABLE_SECS,
    &ALERTING_CUSTOMS_ERRORS,
    &ALERTING_WINDOW_SECS,
    &SHUTDOWN_TIMEOUT_SECS,
];

const SECTIONS: &[&str] = &[
    "intake",
    "admin",
    "store",
    "enterprise",
    "signer",
    "customs",
    "payments",
    "log",
    "alerting",
    "shutdown",
];

const MIN_TOKEN_CHARS: usize = 16;
const MAX_EBP_CODE_CHARS: usize = 18;

fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|key| key.name == name)
}

fn keys_of(section: &str) -> String {
    let keys: Vec<&str> = KEYS
        .iter()
        .filter(|key| key.section() == section)
        .filter_map(|key| key.name.split_once('.').map(|(_, key)| key))
        .collect();
    keys.join(", ")
}

/// A value of the kind its key demands, not yet checked for meaning.
enum Raw {
    Text(String),
    Integer(u64),
    List(Vec<String>),
    /// (name, role, token) of each entry.
    Tokens(Vec<(String, String, String)>),
}

struct Setting {
    raw: Raw,
    /// The environment variable it came from; `None` for the file.
    var: Option<String>,
}

/// The settings found so far and the problems with them.
#[derive(Default)]
struct Settings {
    /// By key name; `None` when the key was given but its value was refused,
    /// so that it is not also reported as missing.
    values: HashMap<&'static str, Option<Setting>>,
    /// `[[alerts]]`, read apart: an array of tables of several kinds.
    channels: Vec<customs179_alerts::channel::ChannelConfig>,
    /// `[[signer]]` entries, read apart; `None` for a single `[signer]` table
    /// or none. Empty when the entries were refused (the problems recorded).
    signer_entries: Option<Vec<SignerConfig>>,
    problems: Vec<String>,
}

fn parse(
    text: Option<&str>,
    source: &str,
    env: Vec<(String, String)>,
    problems: Vec<String>,
) -> Result<Config, ConfigErrors> {
    let mut settings = Settings { problems, ..Settings::default() };
    // Windows editors (Notepad before 2019 among them) begin UTF-8 files with a byte order mark.
    let text = text.map(|text| text.strip_prefix('\u{feff}').unwrap_or(text));
    let table = match text.map(str::parse::<Table>) {
        Some(Ok(table)) => Some(table),
        Some(Err(e)) => {
            // The error's Display quotes the offending line, which may hold a secret.
            let at = text.and_then(|text| e.span().and_then(|span| line_column(text, span.start)));
            let at = at.map_or(String::new(), |(line, column)| format!(" at line {line}, column {column}"));
            settings.problems.push(format!("{source}invalid TOML{at}: {}", e.message()));
            None
        }
        None => None,
    };
    // `CUSTOMS179_SIGNER_*` apply to a single `[signer]` table only.
    let signer_entries = table.as_ref().and_then(|table| table.get("signer")).is_some_and(Value::is_array);
    // The environment before the file, so that file values it overrides are not judged.
    let env_problems = settings.read_env(env, signer_entries);
    let Some(table) = table else {
        settings.problems.extend(env_problems);
        return Err(ConfigErrors(settings.problems));
    };
    settings.read_file(&table);
    settings.problems.extend(env_problems);
    settings.build()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some((before.matches('\n').count() + 1, before[line_start..].chars().count() + 1))
}

/// How a refused value is shown: strings quoted, other scalars as written,
/// arrays, tables and dates by their type.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(_) => "a date-time".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

fn kind_reason(kind: Kind) -> &'static str {
    match kind {
        Kind::Text | Kind::Secret => "must be a string",
        Kind::Integer => "must be a positive integer",
        Kind::List => "must be an array of strings",
        Kind::Tokens => "must be an array of tables with the strings name, token and role",
    }
}

impl Settings {
    /// Records that `key`'s value is refused: `got` is shown unless the key is a secret.
    fn refuse(&mut self, key: &Key, reason: &str, got: Option<&str>, var: Option<&str>) {
        let mut problem = format!("{}: {reason}", key.name);
        if let Some(got) = got
            && !matches!(key.kind, Kind::Secret | Kind::Tokens)
        {
            problem.push_str(&format!(", got {got}"));
        }
        if let Some(var) = var {
            problem.push_str(&format!(" (from {var})"));
        }
        self.problems.push(problem);
    }

    /// Takes the `CUSTOMS179_*` variables; returns their problems, which
    /// are reported after the file's. With `signer_entries` (the file has
    /// `[[signer]]` entries), the `[signer]` variables are refused.
    fn read_env(&mut self, mut env: Vec<(String, String)>, signer_entries: bool) -> Vec<String> {
        // A stable order of problems; of duplicates, the last one given wins.
        env.sort_by(|a, b| a.0.cmp(&b.0));
        let before = self.problems.len();
        for (var, text) in env {
            let Some(key) = KEYS.iter().copied().find(|key| key.env_var() == var) else {
                self.problems.push(unknown_var(&var));
                continue;
            };
            if signer_entries && key.section() == "signer" {
                // Its value is not shown: it may be the PIN.
                self.problems.push(format!(
                    "{var}: applies to a single [signer] table; with [[signer]] entries, set each card's keys in its entry"
                ));
                continue;
            }
            let raw = match key.kind {
                Kind::Text | Kind::Secret => Some(Raw::Text(text.clone())),
                Kind::Integer => text.parse::<u64>().ok().filter(|n| *n > 0).map(Raw::Integer),
                Kind::List => Some(Raw::List(
                    text.split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )),
                Kind::Tokens => text
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| {
                        let mut parts = item.splitn(3, ':');
                        match (parts.next(), parts.next(), parts.next()) {
                            (Some(name), Some(role), Some(token)) => {
                                Some((name.to_owned(), role.to_owned(), token.to_owned()))
                            }
                            _ => None,
                        }
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(Raw::Tokens),
            };
            if raw.is_none() {
                self.refuse(key, kind_reason(key.kind), Some(&format!("{text:?}")), Some(&var));
            }
            self.values.insert(key.name, raw.map(|raw| Setting { raw, var: Some(var) }));
        }
        self.problems.split_off(before)
    }

    fn read_file(&mut self, table: &Table) {
        for (section, value) in table {
            if section == "alerts" {
                match alerts::channels(value) {
                    Ok(channels) => self.channels = channels,
                    Err(problems) => self.problems.extend(problems),
                }
                continue;
            }
            if section == "signer" && value.is_array() {
                self.signer_entries = Some(signers::signers(value).unwrap_or_else(|problems| {
                    self.problems.extend(problems);
                    Vec::new()
                }));
                continue;
            }
            if !SECTIONS.contains(&section.as_str()) {
                let problem = if value.is_table() {
                    format!("[{section}]: unknown section (the sections are {})", SECTIONS.join(", "))
                } else {
                    format!("{section}: unknown key outside any section (keys belong in a section)")
                };
                self.problems.push(problem);
                continue;
            }
            let Value::Table(entries) = value else {
                let entries =
                    if section == "signer" { " or an array of tables ([[signer]] entries)" } else { "" };
                self.problems
                    .push(format!("{section}: must be a table [{section}]{entries}, got {}", shown(value)));
                continue;
            };
            for (name, value) in entries {
                let Some(key) = find_key(&format!("{section}.{name}")) else {
                    self.problems.push(format!(
                        "{section}.{name}: unknown key (the keys of [{section}] are {})",
                        keys_of(section)
                    ));
                    continue;
                };
                if self.values.contains_key(key.name) {
                    continue; // overridden by the environment
                }
                let raw = match (key.kind, value) {
                    (Kind::Text | Kind::Secret, Value::String(s)) => Some(Raw::Text(s.clone())),
                    (Kind::Integer, Value::Integer(n)) => {
                        u64::try_from(*n).ok().filter(|n| *n > 0).map(Raw::Integer)
                    }
                    (Kind::List, Value::Array(items)) => items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .map(Raw::List),
                    (Kind::Tokens, Value::Array(items)) => items
                        .iter()
                        .map(|item| {
                            let entry = item.as_table().filter(|t| {
                                t.len() == 3 && ["name", "token", "role"].iter().all(|k| t.contains_key(*k))
                            })?;
                            let field =
                                |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
                            Some((field("name")?, field("role")?, field("token")?))
                        })
                        .collect::<Option<Vec<_>>>()
                        .map(Raw::Tokens),
                    _ => None,
                };
                if raw.is_none() {
                    let got = match value {
                        Value::Array(items) => match items.iter().find(|item| !item.is_str()) {
                            Some(item) => format!("an array holding {}", shown(item)),
                            None => shown(value),
                        },
                        _ => shown(value),
                    };
                    self.refuse(key, kind_reason(key.kind), Some(&got), None);
                }
                self.values.insert(key.name, raw.map(|raw| Setting { raw, var: None }));
            }
        }
    }

    /// A string key's value through `check`, or `None` when it is not set or
    /// refused (the problem recorded).
    fn text<T>(&mut self, key: &Key, check: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let Some(Some(Setting { raw: Raw::Text(text), var })) = self.values.get(key.name) else {
            return None;
        };
        match check(text) {
            Ok(value) => Some(value),
            Err(reason) => {
                let (got, var) = (format!("{text:?}"), var.clone());
                self.refuse(key, &reason, Some(&got), var.as_deref());
                None
            }
        }
    }

    /// A required string key: missing is a problem too.
    fn required<T>(
        &mut self,
        key: &Key,
        what: &str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if !self.values.contains_key(key.name) {
            self.problems.push(format!(
                "{}: missing: {what} (set it in [{}] or in {})",
                key.name,
                key.section(),
                key.env_var()
            ));
            return None;
        }
        self.text(key, check)
    }

    /// `[[admin.tokens]]`, each checked; None when given but refused.
    fn admin_tokens(&mut self) -> Option<Vec<AdminToken>> {
        let (entries, var) = match self.values.get(ADMIN_TOKENS.name) {
            None => return Some(Vec::new()),
            Some(Some(Setting { raw: Raw::Tokens(entries), var })) => (entries.clone(), var.clone()),
            Some(_) => return None,
        };
        let mut tokens = Vec::new();
        let mut ok = true;
        for (i, (name, role, secret)) in entries.into_iter().enumerate() {
            let mut refuse = |settings: &mut Settings, reason: String| {
                settings.refuse(
                    &ADMIN_TOKENS,
                    &format!("entry {} ({name:?}): {reason}", i + 1),
                    None,
                    var.as_deref(),
                );
                ok = false;
            };
            let role = match role.as_str() {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                _ => {
                    refuse(self, format!("role must be \"viewer\" or \"operator\", got {role:?}"));
                    continue;
                }
            };
            if name.trim().is_empty() {
                refuse(self, "name must not be empty".to_owned());
                continue;
            }
            match token(&secret) {
                Ok(token) => tokens.push(AdminToken { name, token, role }),
                Err(reason) => refuse(self, format!("token {reason}")),
            }
        }
        ok.then_some(tokens)
    }

    /// Names and tokens are each used once: actions are audited by name, and
    /// a token shared by two names could not tell them apart.
    fn check_distinct_tokens(&mut self, tokens: &[AdminToken]) {
        for (i, a) in tokens.iter().enumerate() {
            for b in &tokens[..i] {
                if a.name == b.name {
                    self.refuse(&ADMIN_TOKENS, &format!("the name {:?} is used twice", a.name), None, None);
                } else if a.token == b.token {
                    let reason = format!("{:?} and {:?} have the same token", b.name, a.name);
                    self.refuse(&ADMIN_TOKENS, &reason, None, None);
                }
            }
        }
    }

    fn integer(&mut self, key: &Key, default: u64) -> u64 {
        match self.values.get(key.name) {
            Some(Some(Setting { raw: Raw::Integer(n), .. })) => *n,
            _ => default,
        }
    }

    fn size(&mut self, key: &Key, default: usize) -> usize {
        let Some(Some(Setting { raw: Raw::Integer(n), var })) = self.values.get(key.name) else {
            return default;
        };
        match usize::try_from(*n) {
            Ok(size) => size,
            Err(_) => {
                let (got, var) = (n.to_string(), var.clone());
                self.refuse(key, "is too large for this machine", Some(&got), var.as_deref());
                default
            }
        }
    }

    /// A list key, each item through `check` (each refused item its own problem).
    fn list<T>(&mut self, key: &Key, check: impl Fn(&str) -> Result<T, String>) -> Option<Vec<T>> {
        let Some(Some(Setting { raw: Raw::List(items), var })) = self.values.get(key.name) else {
            return None;
        };
        let var = var.clone();
        if items.is_empty() {
            self.refuse(
                key,
                "must not be empty (leave the key out to accept any address)",
                None,
                var.as_deref(),
            );
            return None;
        }
        let mut refused = Vec::new();
        let values: Vec<T> = items
            .iter()
            .filter_map(|item| check(item).map_err(|reason| refused.push((reason, format!("{item:?}")))).ok())
            .collect();
        let ok = refused.is_empty();
        for (reason, got) in refused {
            self.refuse(key, &reason, Some(&got), var.as_deref());
        }
        ok.then_some(values)
    }

    /// The single `[signer]` table (or none: its defaults, the PIN from the
    /// environment) as the card named [`SINGLE_CARD`].
    fn single_signer(&mut self) -> Option<SignerConfig> {
        let url = self
            .text(&SIGNER_URL, |s| url(s, &["ws://", "wss://"]))
            .unwrap_or_else(|| "ws://127.0.0.1:61232/".to_owned());
        let pin = self.required(&SIGNER_PIN, "the card's PIN", |s| {
            if s.is_empty() { Err("must not be empty".to_owned()) } else { Ok(Secret::new(s)) }
        });
        Some(SignerConfig {
            name: SINGLE_CARD.to_owned(),
            url,
            pin: pin?,
            timeout_ms: self.integer(&SIGNER_TIMEOUT_MS, 10_000),
            breaker_after: self.integer(&SIGNER_BREAKER_AFTER, 3),
        })
    }

    fn build(mut self) -> Result<Config, ConfigErrors> {
        let intake = IntakeConfig {
            listen: self
                .text(&INTAKE_LISTEN, socket_addr)
                .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80)),
            path: self.text(&INTAKE_PATH, url_path).unwrap_or_else(|| "/platDataOpen".to_owned()),
            max_body_bytes: self.size(&INTAKE_MAX_BODY_BYTES, 65_536),
            allow_from: self.list(&INTAKE_ALLOW_FROM, network),
            trusted_proxies: self.list(&INTAKE_TRUSTED_PROXIES, network).unwrap_or_default(),
            connections: ConnectionLimits {
                header_timeout_secs: self.integer(&INTAKE_HEADER_TIMEOUT_SECS, 10),
                // A customs call is a few KB: 10 s is generous even on a poor line.
                body_timeout_secs: self.integer(&INTAKE_BODY_TIMEOUT_SECS, 10),
                idle_timeout_secs: self.integer(&INTAKE_IDLE_TIMEOUT_SECS, 30),
                max_connections: self.integer(&INTAKE_MAX_CONNECTIONS, 4_096),
            },
        };
        let admin_connections = ConnectionLimits {
            header_timeout_secs: self.integer(&ADMIN_HEADER_TIMEOUT_SECS, 10),
            // Payment pushes may be megabytes.
            body_timeout_secs: self.integer(&ADMIN_BODY_TIMEOUT_SECS, 60),
            idle_timeout_secs: self.integer(&ADMIN_IDLE_TIMEOUT_SECS, 60),
            max_connections: self.integer(&ADMIN_MAX_CONNECTIONS, 256),
        };
        let shutdown_timeout_secs = self.integer(&SHUTDOWN_TIMEOUT_SECS, 10);
        let admin_listen = self
            .text(&ADMIN_LISTEN, socket_addr)
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8179));
        // `[admin] token` is required unless named tokens stand in for it.
        let named_tokens = self.admin_tokens();
        let admin_tokens: Option<Vec<AdminToken>> = if named_tokens.as_ref().is_some_and(|t| !t.is_empty())
            && !self.values.contains_key(ADMIN_TOKEN.name)
        {
            named_tokens
        } else {
            self.required(&ADMIN_TOKEN, "a random token of at least 16 characters", token).map(|admin| {
                let admin = AdminToken { name: "admin".to_owned(), token: admin, role: Role::Operator };
                std::iter::once(admin).chain(named_tokens.unwrap_or_default()).collect()
            })
        };
        if let Some(tokens) = &admin_tokens {
            self.check_distinct_tokens(tokens);
        }
        if self.values.contains_key(STORE_PATH.name) && self.values.contains_key(STORE_URL.name) {
            self.problems.push(
                "store.path and store.url: give one (path: a SQLite file; url: a PostgreSQL database)"
                    .to_owned(),
            );
        }
        let store = StoreConfig {
            path: self.text(&STORE_PATH, path).unwrap_or_else(|| PathBuf::from("data/customs179.sqlite")),
            url: self.text(&STORE_URL, |s| {
                customs179_store::Location::postgres(s).map(|_| Secret::new(s)).map_err(|e| e.to_string())
            }),
        };
        let ebp_code = self.required(&ENTERPRISE_EBP_CODE, "the platform's customs code (ebpCode)", ebp_code);
        let signers = match self.signer_entries.take() {
            // Empty only when refused, the problems recorded.
            Some(entries) => Some(entries).filter(|entries| !entries.is_empty()),
            None => self.single_signer().map(|signer| vec![signer]),
        };
        let environment = self.required(&CUSTOMS_ENVIRONMENT, "\"test\" or \"production\"", |s| match s {
            "test" => Ok(Environment::Test),
            "production" => Ok(Environment::Production),
            _ => Err("must be \"test\" or \"production\"".to_owned()),
        });
        let upload_url = self.text(&CUSTOMS_UPLOAD_URL, |s| url(s, &["http://", "https://"]));
        let at_risk_secs = self.integer(&CUSTOMS_AT_RISK_SECS, 60);
        let customs_rest = (
            self.integer(&CUSTOMS_DEADLINE_SECS, 120),
            self.integer(&CUSTOMS_TIMEOUT_MS, 10_000),
            self.text(&CUSTOMS_CA_FILE, path),
            self.integer(&CUSTOMS_RETRY_MAX_SECS, 300),
            self.integer(&CUSTOMS_GIVE_UP_AFTER_SECS, 86_400),
        );
        let payments_token = self.text(&PAYMENTS_TOKEN, token);
        if let (Some(admin), Some(payments)) = (&admin_tokens, &payments_token)
            && admin.iter().any(|admin| admin.token == *payments)
        {
            self.refuse(
                &PAYMENTS_TOKEN,
                "must differ from admin.token and every admin.tokens token",
                None,
                None,
            );
        }
        let payments = PaymentsConfig {
            token: payments_token,
            max_body_bytes: self.size(&PAYMENTS_MAX_BODY_BYTES, 8_388_608),
            pull_url: self.text(&PAYMENTS_PULL_URL, pull_url),
            pull_token: self.text(&PAYMENTS_PULL_TOKEN, |s| {
                if s.is_empty() { Err("must not be empty".to_owned()) } else { Ok(Secret::new(s)) }
            }),
            pull_interval_secs: self.integer(&PAYMENTS_PULL_INTERVAL_SECS, 5),
            give_up_after_secs: self.integer(&PAYMENTS_GIVE_UP_AFTER_SECS, 86_400),
        };
        let log = LogConfig {
            format: self
                .text(&LOG_FORMAT, |s| match s {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err("must be \"text\" or \"json\"".to_owned()),
                })
                .unwrap_or(LogFormat::Text),
            level: self
                .text(&LOG_LEVEL, |s| {
                    if s.trim().is_empty() { Err("must not be empty".to_owned()) } else { Ok(s.to_owned()) }
                })
                .unwrap_or_else(|| "info".to_owned()),
            to: match self.text(&LOG_DIR, path) {
                Some(dir) => {
                    LogTo::Files { dir, max_files: self.size(&LOG_MAX_FILES, DEFAULT_MAX_LOG_FILES) }
                }
                None => LogTo::Stderr,
            },
        };

        let alerts = AlertsConfig {
            channels: std::mem::take(&mut self.channels),
            rules: customs179_alerts::condition::Rules {
                signer_unreachable_ms: secs_ms(self.integer(&ALERTING_SIGNER_UNREACHABLE_SECS, 60)),
                customs_errors: i64::try_from(self.integer(&ALERTING_CUSTOMS_ERRORS, 10)).unwrap_or(i64::MAX),
                window_ms: secs_ms(self.integer(&ALERTING_WINDOW_SECS, 600)),
            },
        };

        let (Some(admin_tokens), Some(ebp_code), Some(signers), Some(environment), true) =
            (admin_tokens, ebp_code, signers, environment, self.problems.is_empty())
        else {
            return Err(ConfigErrors(self.problems));
        };
        let (deadline_secs, timeout_ms, ca_file, retry_max_secs, give_up_after_secs) = customs_rest;
        Ok(Config {
            intake,
            admin: AdminConfig { listen: admin_listen, tokens: admin_tokens, connections: admin_connections },
            store,
            enterprise: EnterpriseConfig { ebp_code },
            signers,
            customs: CustomsConfig {
                environment,
                upload_url,
                deadline_secs,
                at_risk_secs,
                timeout_ms,
                ca_file,
                retry_max_secs,
                give_up_after_secs,
            },
            payments,
            log,
            alerts,
            shutdown_timeout_secs,
        })
    }
}

/// Why a `CUSTOMS179_*` name is not a key, with the name that was probably meant.
fn unknown_var(var: &str) -> String {
    let rest = var.strip_prefix(ENV_PREFIX).unwrap_or(var).to_ascii_lowercase();
    let hint = match rest.split_once('_') {
        None => "expected CUSTOMS179_<SECTION>_<KEY>".to_owned(),
        Some((section, key)) => match find_key(&format!("{section}.{key}")) {
            Some(known) => format!("did you mean {}?", known.env_var()),
            None if SECTIONS.contains(&section) => {
                format!("no key {section}.{key}; the keys of [{section}] are {}", keys_of(section))
            }
            None => format!("no section [{section}]; the sections are {}", SECTIONS.join(", ")),
        },
    };
    format!("{var}: unknown environment variable ({hint})")
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| "must be an IP address and port, such as 0.0.0.0:80 or [::]:80".to_owned())
}

fn url_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') { Ok(s.to_owned()) } else { Err("must start with '/'".to_owned()) }
}

fn path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else if s.chars().any(char::is_control) {
        // "C:\new" in double quotes holds a line break: TOML read the backslash as an escape.
        Err("must not hold control characters (write Windows paths in single quotes: 'C:\\data')".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

/// An IP network, or a bare address as a network of one.
fn network(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err("must be an IP address or a CIDR network such as 10.0.0.0/8".to_owned()),
        },
    };
    // "10.1.2.3/8" is more likely a slip for /32 than a wish for all of 10/8.
    if net.trunc() != net {
        return Err(format!("has host bits set (the network would be {})", net.trunc()));
    }
    Ok(net)
}

fn token(s: &str) -> Result<Secret, String> {
    if s.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!("must be at least {MIN_TOKEN_CHARS} characters"));
    }
    Ok(Secret::new(s))
}

fn ebp_code(s: &str) -> Result<String, String> {
    match s.chars().count() {
        0 => Err("must not be empty".to_owned()),
        n if n > MAX_EBP_CODE_CHARS => Err(format!("must be at most {MAX_EBP_CODE_CHARS} characters")),
        _ => Ok(s.to_owned()),
    }
}

/// A URL with one of `schemes` and something after it; deeper checks are left
/// to the client that uses it.
fn url(s: &str, schemes: &[&str]) -> Result<String, String> {
    let rest = schemes.iter().find_map(|scheme| s.strip_prefix(scheme));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !s.contains(char::is_whitespace) => {
            Ok(s.to_owned())
        }
        _ => Err(format!("must be a {} URL", schemes.join(" or "))),
    }
}

fn pull_url(s: &str) -> Result<String, String> {
    let url = url(s, &["http://", "https://"])?;
    if !url.contains("{orderNo}") {
        return Err("must contain {orderNo}, where the order number goes".to_owned());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const EXAMPLE: &str = include_str!("../../../config/customs179.example.toml");

    const ADMIN_TOKEN_VALUE: &str = "ADMINSECRET-0123456789";
    const PIN_VALUE: &str = "PINSECRET-8888";
    const PAYMENTS_TOKEN_VALUE: &str = "PAYSECRET-0123456789";
    const PULL_TOKEN_VALUE: &str = "PULLSECRET-abc";

    /// The required keys, as TOML values.
    fn base() -> BTreeMap<String, String> {
        [
            ("admin.token", format!("{ADMIN_TOKEN_VALUE:?}")),
            ("enterprise.ebp_code", "\"1234567890ABCDEFGH\"".to_owned()),
            ("signer.pin", format!("{PIN_VALUE:?}")),
            ("customs.environment", "\"test\"".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// A TOML document: the required keys with `changes` applied (`None` removes a key).
    fn doc(changes: &[(&str, Option<&str>)]) -> String {
        let mut values = base();
        for (key, value) in changes {
            match value {
                Some(value) => values.insert((*key).to_owned(), (*value).to_owned()),
                None => values.remove(*key),
            };
        }
        let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in values {
            let (section, key) = name.split_once('.').unwrap();
            sections.entry(section.to_owned()).or_default().push(format!("{key} = {value}"));
        }
        sections.into_iter().map(|(section, lines)| format!("[{section}]\n{}\n", lines.join("\n"))).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    fn parse(changes: &[(&str, Option<&str>)]) -> Config {
        Config::from_toml_str(&doc(changes), []).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems_with_env(changes: &[(&str, Option<&str>)], vars: &[(&str, &str)]) -> Vec<String> {
        match Config::from_toml_str(&doc(changes), env(vars)) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(errors) => errors.0,
        }
    }

    fn problems(changes: &[(&str, Option<&str>)]) -> Vec<String> {
        problems_with_env(changes, &[])
    }

    /// Exactly one problem, returned.
    fn problem(changes: &[(&str, Option<&str>)]) -> String {
        let problems = problems(changes);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems.into_iter().next().unwrap()
    }

    fn assert_no_secret(text: &str) {
        for secret in [ADMIN_TOKEN_VALUE, PIN_VALUE, PAYMENTS_TOKEN_VALUE, PULL_TOKEN_VALUE, "short-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn defaults() {
        let config = parse(&[]);
        assert_eq!(config.intake.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(config.intake.path, "/platDataOpen");
        assert_eq!(config.intake.max_body_bytes, 65536);
        assert_eq!(config.intake.allow_from, None);
        assert_eq!(config.admin.listen, "127.0.0.1:8179".parse().unwrap());
        assert_eq!(config.admin.tokens[0].token.expose(), ADMIN_TOKEN_VALUE);
        assert_eq!(config.store.path, PathBuf::from("data/customs179.sqlite"));
        assert_eq!(config.enterprise.ebp_code, "1234567890ABCDEFGH");
        assert_eq!(config.signers[0].url, "ws://127.0.0.1:61232/");
        assert_eq!(config.signers[0].pin.expose(), PIN_VALUE);
        assert_eq!(config.signers[0].timeout_ms, 10_000);
        assert_eq!(config.signers[0].breaker_after, 3);
        let limits = |header, body, idle, max| ConnectionLimits {
            header_timeout_secs: header,
            body_timeout_secs: body,
            idle_timeout_secs: idle,
            max_connections: max,
        };
        assert_eq!(config.intake.connections, limits(10, 10, 30, 4_096));
        assert_eq!(config.admin.connections, limits(10, 60, 60, 256));
        assert_eq!(config.shutdown_timeout_secs, 10);
        assert_eq!(config.customs.environment, Environment::Test);
        assert_eq!(config.customs.upload_url, None);
        assert_eq!(config.customs.upload_url(), TEST_UPLOAD_URL);
        assert_eq!(config.customs.deadline_secs, 120);
        assert_eq!(config.customs.timeout_ms, 10_000);
        assert_eq!(config.customs.ca_file, None);
        assert_eq!(config.customs.retry_max_secs, 300);
        assert_eq!(config.customs.give_up_after_secs, 86_400);
        assert_eq!(config.payments.token, None);
        assert_eq!(config.payments.max_body_bytes, 8_388_608);
        assert_eq!(config.payments.pull_url, None);
        assert_eq!(config.payments.pull_token, None);
        assert_eq!(config.payments.pull_interval_secs, 5);
        assert_eq!(config.payments.give_up_after_secs, 86_400);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.to, LogTo::Stderr);
    }

    #[test]
    fn every_key_is_set_from_the_file() {
        let config = parse(&[
            ("intake.listen", Some("\"[::]:8080\"")),
            ("intake.path", Some("\"/x\"")),
            ("intake.max_body_bytes", Some("1000")),
            ("intake.allow_from", Some("[\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::1\"]")),
            ("admin.listen", Some("\"127.0.0.1:9000\"")),
            ("store.path", Some("\"/var/lib/customs179/db.sqlite\"")),
            ("signer.url", Some("\"wss://card.example:61231\"")),
            ("signer.timeout_ms", Some("5000")),
            ("customs.environment", Some("\"production\"")),
            ("customs.upload_url", Some("\"http://127.0.0.1:8180/up\"")),
            ("customs.deadline_secs", Some("60")),
            ("customs.timeout_ms", Some("3000")),
            ("customs.ca_file", Some("\"ca.pem\"")),
            ("customs.retry_max_secs", Some("30")),
            ("customs.give_up_after_secs", Some("600")),
            ("payments.token", Some(&format!("{PAYMENTS_TOKEN_VALUE:?}"))),
            ("payments.max_body_bytes", Some("2000")),
            ("payments.pull_url", Some("\"https://pay.example/{orderNo}?x=1\"")),
            ("payments.pull_token", Some(&format!("{PULL_TOKEN_VALUE:?}"))),
            ("payments.pull_interval_secs", Some("7")),
            ("payments.give_up_after_secs", Some("900")),
            ("log.format", Some("\"json\"")),
            ("log.level", Some("\"customs179=debug,info\"")),
            ("log.dir", Some("\"logs\"")),
            ("log.max_files", Some("7")),
        ]);
        assert_eq!(config.intake.listen, "[::]:8080".parse().unwrap());
        assert_eq!(config.intake.path, "/x");
        assert_eq!(config.intake.max_body_bytes, 1000);
        let nets: Vec<String> = config.intake.allow_from.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::1/128"]);
        assert_eq!(config.admin.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.store.path, PathBuf::from("/var/lib/customs179/db.sqlite"));
        assert_eq!(config.signers[0].url, "wss://card.example:61231");
        assert_eq!(config.signers[0].timeout_ms, 5000);
        assert_eq!(config.customs.environment, Environment::Production);
        assert_eq!(config.customs.upload_url(), "http://127.0.0.1:8180/up");
        assert_eq!(config.customs.deadline_secs, 60);
        assert_eq!(config.customs.timeout_ms, 3000);
        assert_eq!(config.customs.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.customs.retry_max_secs, 30);
        assert_eq!(config.customs.give_up_after_secs, 600);
        assert_eq!(config.payments.token.as_ref().map(Secret::expose), Some(PAYMENTS_TOKEN_VALUE));
        assert_eq!(config.payments.max_body_bytes, 2000);
        assert_eq!(config.payments.pull_url.as_deref(), Some("https://pay.example/{orderNo}?x=1"));
        assert_eq!(config.payments.pull_token.as_ref().map(Secret::expose), Some(PULL_TOKEN_VALUE));
        assert_eq!(config.payments.pull_interval_secs, 7);
        assert_eq!(config.payments.give_up_after_secs, 900);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "customs179=debug,info");
        assert_eq!(config.log.to, LogTo::Files { dir: PathBuf::from("logs"), max_files: 7 });
    }

    #[test]
    fn a_windows_file_with_crlf_and_a_byte_order_mark_reads_the_same() {
        let unix = Config::from_toml_str(EXAMPLE, []).unwrap_or_else(|e| panic!("{e}"));
        let windows = format!("\u{feff}{}", EXAMPLE.replace('\n', "\r\n"));
        let windows = Config::from_toml_str(&windows, []).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(windows.summary(), unix.summary());
        assert_eq!(windows.signers[0].pin.expose(), unix.signers[0].pin.expose());
    }

    #[test]
    fn the_example_parses_and_documents_every_key() {
        let config = Config::from_toml_str(EXAMPLE, []).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.customs.environment, Environment::Test);
        // Every key appears in its section, set or commented out.
        let mut section = "";
        let mut documented = Vec::new();
        for line in EXAMPLE.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some((key, _)) = line.split_once(" = ") {
                documented.push(format!("{section}.{key}"));
            }
        }
        for key in KEYS {
            assert!(documented.contains(&key.name.to_owned()), "{} is not in the example", key.name);
        }
    }

    #[test]
    fn named_tokens_with_roles() {
        let tokens = r#"[{ name = "alice", token = "alice-token-0123456789", role = "operator" },
                          { name = "watch", token = "watch-token-0123456789", role = "viewer" }]"#;
        let config = parse(&[("admin.tokens", Some(tokens))]);
        let names: Vec<(&str, Role)> =
            config.admin.tokens.iter().map(|t| (t.name.as_str(), t.role)).collect();
        assert_eq!(names, [("admin", Role::Operator), ("alice", Role::Operator), ("watch", Role::Viewer)]);
        // Without [admin] token, the named ones are enough.
        let config = parse(&[("admin.token", None), ("admin.tokens", Some(tokens))]);
        assert_eq!(config.admin.tokens.len(), 2);
        // From the environment: name:role:token, comma-separated.
        let config = Config::from_toml_str(
            &doc(&[("admin.token", None)]),
            env(&[(
                "CUSTOMS179_ADMIN_TOKENS",
                "ops:operator:ops-token-0123456789abc, ro:viewer:ro-token-0123456789abc",
            )]),
        )
        .unwrap();
        assert_eq!(config.admin.tokens[1].role, Role::Viewer);
        assert_eq!(config.admin.tokens[1].token.expose(), "ro-token-0123456789abc");
    }

    #[test]
    fn bad_named_tokens() {
        let bad = |tokens: &str| problems(&[("admin.tokens", Some(tokens))]);
        assert_eq!(
            bad(r#"[{ name = "a", token = "a-token-0123456789", role = "root" }]"#),
            [r#"admin.tokens: entry 1 ("a"): role must be "viewer" or "operator", got "root""#]
        );
        assert_eq!(
            bad(r#"[{ name = "a", token = "short", role = "viewer" }]"#),
            [r#"admin.tokens: entry 1 ("a"): token must be at least 16 characters"#]
        );
        assert_eq!(
            bad(r#"[{ name = "admin", token = "b-token-0123456789", role = "viewer" }]"#),
            [r#"admin.tokens: the name "admin" is used twice"#]
        );
        let same = format!(r#"[{{ name = "b", token = "{ADMIN_TOKEN_VALUE}", role = "viewer" }}]"#);
        assert_eq!(bad(&same), [r#"admin.tokens: "admin" and "b" have the same token"#]);
        let wrong = bad(r#"[{ name = "a", token = "a-token-0123456789" }]"#);
        assert_eq!(wrong, ["admin.tokens: must be an array of tables with the strings name, token and role"]);
        assert!(!wrong[0].contains("a-token-0123456789"), "tokens are never shown");
    }

    #[test]
    fn the_key_table_is_consistent() {
        for key in KEYS {
            assert!(SECTIONS.contains(&key.section()), "{}", key.name);
            assert!(!key.section().contains('_'), "{}: sections have no underscore", key.name);
        }
        for section in SECTIONS {
            assert!(KEYS.iter().any(|key| key.section() == *section), "{section}");
        }
        assert_eq!(INTAKE_MAX_BODY_BYTES.env_var(), "CUSTOMS179_INTAKE_MAX_BODY_BYTES");
    }

    #[test]
    fn the_environment_overrides_each_kind() {
        let config = Config::from_toml_str(
            &doc(&[("intake.path", Some("\"/file\""))]),
            env(&[
                ("CUSTOMS179_INTAKE_PATH", "/env"),
                ("CUSTOMS179_INTAKE_MAX_BODY_BYTES", "1234"),
                ("CUSTOMS179_INTAKE_ALLOW_FROM", "10.0.0.0/8, 192.168.1.7,,"),
                ("CUSTOMS179_SIGNER_PIN", "env-pin"),
                ("CUSTOMS179_PAYMENTS_TOKEN", "env-payments-token-0123"),
                ("PATH", "/usr/bin"),
                ("OTHER_CUSTOMS179_X", "ignored"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.intake.path, "/env");
        assert_eq!(config.intake.max_body_bytes, 1234);
        let nets: Vec<String> = config.intake.allow_from.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.1.7/32"]);
        assert_eq!(config.signers[0].pin.expose(), "env-pin");
        assert_eq!(config.payments.token.as_ref().map(Secret::expose), Some("env-payments-token-0123"));
    }

    #[test]
    fn the_environment_supplies_missing_keys_and_replaces_bad_ones() {
        let text = doc(&[("admin.token", None), ("intake.max_body_bytes", Some("\"big\""))]);
        let config = Config::from_toml_str(
            &text,
            env(&[("CUSTOMS179_ADMIN_TOKEN", ADMIN_TOKEN_VALUE), ("CUSTOMS179_INTAKE_MAX_BODY_BYTES", "99")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.admin.tokens[0].token.expose(), ADMIN_TOKEN_VALUE);
        assert_eq!(config.intake.max_body_bytes, 99);
        // The last of duplicate entries wins.
        let config = Config::from_toml_str(
            &doc(&[]),
            env(&[("CUSTOMS179_LOG_LEVEL", "debug"), ("CUSTOMS179_LOG_LEVEL", "warn")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.log.level, "warn");
    }

    #[test]
    fn bad_environment_values_name_key_and_variable() {
        let problems = problems_with_env(
            &[],
            &[
                ("CUSTOMS179_INTAKE_MAX_BODY_BYTES", "abc"),
                ("CUSTOMS179_SIGNER_TIMEOUT_MS", "0"),
                ("CUSTOMS179_INTAKE_ALLOW_FROM", "10.0.0.0/8,nonsense"),
                ("CUSTOMS179_INTAKE_LISTEN", "localhost:80"),
                ("CUSTOMS179_ADMIN_TOKEN", "short-secret"),
            ],
        );
        assert_eq!(
            problems,
            [
                "intake.max_body_bytes: must be a positive integer, got \"abc\" (from CUSTOMS179_INTAKE_MAX_BODY_BYTES)",
                "signer.timeout_ms: must be a positive integer, got \"0\" (from CUSTOMS179_SIGNER_TIMEOUT_MS)",
                "intake.listen: must be an IP address and port, such as 0.0.0.0:80 or [::]:80, got \"localhost:80\" (from CUSTOMS179_INTAKE_LISTEN)",
                "intake.allow_from: must be an IP address or a CIDR network such as 10.0.0.0/8, got \"nonsense\" (from CUSTOMS179_INTAKE_ALLOW_FROM)",
                "admin.token: must be at least 16 characters (from CUSTOMS179_ADMIN_TOKEN)",
            ]
        );
    }

    #[test]
    fn an_empty_allow_from_is_refused() {
        assert!(
            problem(&[("intake.allow_from", Some("[]"))]).starts_with("intake.allow_from: must not be empty")
        );
        let problems = problems_with_env(&[], &[("CUSTOMS179_INTAKE_ALLOW_FROM", " , ")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("intake.allow_from: must not be empty"));
    }

    #[test]
    fn unknown_section() {
        let problems =
            Config::from_toml_str(&format!("{}\n[intak]\nlisten = \"0.0.0.0:80\"\n", doc(&[])), [])
                .unwrap_err()
                .0;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("[intak]: unknown section (the sections are intake, admin"),
            "{problems:?}"
        );
        let problems = Config::from_toml_str(&format!("listen = 1\n{}", doc(&[])), []).unwrap_err().0;
        assert_eq!(problems, ["listen: unknown key outside any section (keys belong in a section)"]);
    }

    #[test]
    fn a_section_that_is_not_a_table() {
        let problems = Config::from_toml_str(&format!("log = \"json\"\n{}", doc(&[])), []).unwrap_err().0;
        assert_eq!(problems, ["log: must be a table [log], got \"json\""]);
    }

    #[test]
    fn unknown_key() {
        assert_eq!(
            problem(&[("intake.max_body", Some("5"))]),
            "intake.max_body: unknown key (the keys of [intake] are listen, path, max_body_bytes, allow_from, trusted_proxies, header_timeout_secs, body_timeout_secs, idle_timeout_secs, max_connections)"
        );
    }

    #[test]
    fn unknown_variables() {
        let problems = problems_with_env(
            &[],
            &[
                ("CUSTOMS179_INTAKE_MAX_BODY", "5"),
                ("CUSTOMS179_INTAK_LISTEN", "x"),
                ("CUSTOMS179_intake_listen", "0.0.0.0:80"),
                ("CUSTOMS179_LISTEN", "x"),
            ],
        );
        assert_eq!(
            problems,
            [
                "CUSTOMS179_INTAKE_MAX_BODY: unknown environment variable (no key intake.max_body; the keys of [intake] are listen, path, max_body_bytes, allow_from, trusted_proxies, header_timeout_secs, body_timeout_secs, idle_timeout_secs, max_connections)",
                "CUSTOMS179_INTAK_LISTEN: unknown environment variable (no section [intak]; the sections are intake, admin, store, enterprise, signer, customs, payments, log, alerting, shutdown)",
                "CUSTOMS179_LISTEN: unknown environment variable (expected CUSTOMS179_<SECTION>_<KEY>)",
                "CUSTOMS179_intake_listen: unknown environment variable (did you mean CUSTOMS179_INTAKE_LISTEN?)",
            ]
        );
    }

    #[test]
    fn wrong_types() {
        let problems = problems(&[
            ("intake.max_body_bytes", Some("\"65536\"")),
            ("intake.path", Some("5")),
            ("intake.allow_from", Some("\"10.0.0.0/8\"")),
            ("store.path", Some("[\"a\"]")),
            ("customs.deadline_secs", Some("1.5")),
            ("customs.timeout_ms", Some("true")),
            ("payments.max_body_bytes", Some("-1")),
            ("log.level", Some("{ x = 1 }")),
            ("customs.ca_file", Some("1979-05-27")),
        ]);
        assert_eq!(
            problems,
            [
                "customs.ca_file: must be a string, got a date-time",
                "customs.deadline_secs: must be a positive integer, got 1.5",
                "customs.timeout_ms: must be a positive integer, got true",
                "intake.allow_from: must be an array of strings, got \"10.0.0.0/8\"",
                "intake.max_body_bytes: must be a positive integer, got \"65536\"",
                "intake.path: must be a string, got 5",
                "log.level: must be a string, got a table",
                "payments.max_body_bytes: must be a positive integer, got -1",
                "store.path: must be a string, got an array",
            ]
        );
        assert_eq!(
            problem(&[("intake.allow_from", Some("[\"10.0.0.0/8\", 7]"))]),
            "intake.allow_from: must be an array of strings, got an array holding 7"
        );
        // A secret of the wrong type is not shown either.
        assert_eq!(problem(&[("signer.pin", Some("88888888"))]), "signer.pin: must be a string");
    }

    #[test]
    fn listen_not_an_address() {
        assert_eq!(
            problem(&[("admin.listen", Some("\"localhost:8179\""))]),
            "admin.listen: must be an IP address and port, such as 0.0.0.0:80 or [::]:80, got \"localhost:8179\""
        );
        assert!(problem(&[("intake.listen", Some("\"0.0.0.0\""))]).starts_with("intake.listen: "));
    }

    #[test]
    fn path_without_slash() {
        assert_eq!(
            problem(&[("intake.path", Some("\"platDataOpen\""))]),
            "intake.path: must start with '/', got \"platDataOpen\""
        );
    }

    #[test]
    fn zero_max_body_bytes() {
        assert_eq!(
            problem(&[("intake.max_body_bytes", Some("0"))]),
            "intake.max_body_bytes: must be a positive integer, got 0"
        );
    }

    #[test]
    fn bad_cidrs() {
        let problems = problems(&[("intake.allow_from", Some("[\"10.0.0.0/33\", \"ok\", \"10.1.2.3/8\"]"))]);
        assert_eq!(
            problems,
            [
                "intake.allow_from: must be an IP address or a CIDR network such as 10.0.0.0/8, got \"10.0.0.0/33\"",
                "intake.allow_from: must be an IP address or a CIDR network such as 10.0.0.0/8, got \"ok\"",
                "intake.allow_from: has host bits set (the network would be 10.0.0.0/8), got \"10.1.2.3/8\"",
            ]
        );
    }

    #[test]
    fn short_admin_token() {
        assert_eq!(
            problem(&[("admin.token", Some("\"short-secret\""))]),
            "admin.token: must be at least 16 characters"
        );
        // Characters, not bytes.
        assert!(problems(&[("admin.token", Some("\"口令口令口令口令口令\""))])[0].starts_with("admin.token"));
        parse(&[("admin.token", Some("\"口令口令口令口令口令口令口令口令\""))]);
    }

    #[test]
    fn missing_admin_token() {
        assert_eq!(
            problem(&[("admin.token", None)]),
            "admin.token: missing: a random token of at least 16 characters (set it in [admin] or in CUSTOMS179_ADMIN_TOKEN)"
        );
    }

    #[test]
    fn missing_ebp_code() {
        assert!(
            problem(&[("enterprise.ebp_code", None)]).starts_with("enterprise.ebp_code: missing: "),
            "{:?}",
            problems(&[("enterprise.ebp_code", None)])
        );
        assert_eq!(
            problem(&[("enterprise.ebp_code", Some("\"\""))]),
            "enterprise.ebp_code: must not be empty, got \"\""
        );
    }

    #[test]
    fn too_long_ebp_code() {
        assert_eq!(
            problem(&[("enterprise.ebp_code", Some("\"1234567890ABCDEFGHI\""))]),
            "enterprise.ebp_code: must be at most 18 characters, got \"1234567890ABCDEFGHI\""
        );
    }

    #[test]
    fn signer_url_not_ws() {
        assert_eq!(
            problem(&[("signer.url", Some("\"http://127.0.0.1:61232/\""))]),
            "signer.url: must be a ws:// or wss:// URL, got \"http://127.0.0.1:61232/\""
        );
        assert!(problem(&[("signer.url", Some("\"ws://\""))]).starts_with("signer.url: "));
    }

    #[test]
    fn missing_pin() {
        assert_eq!(
            problem(&[("signer.pin", None)]),
            "signer.pin: missing: the card's PIN (set it in [signer] or in CUSTOMS179_SIGNER_PIN)"
        );
        assert_eq!(problem(&[("signer.pin", Some("\"\""))]), "signer.pin: must not be empty");
    }

    /// The required keys without `[signer]`, then `entries` (`[[signer]]` tables).
    fn with_entries(entries: &str) -> String {
        format!("{}{entries}", doc(&[("signer.pin", None)]))
    }

    fn entries_problems(entries: &str, vars: &[(&str, &str)]) -> Vec<String> {
        match Config::from_toml_str(&with_entries(entries), env(vars)) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(errors) => errors.0,
        }
    }

    fn entry(name: &str, url: &str) -> String {
        format!("[[signer]]\nname = {name:?}\nurl = {url:?}\npin = {PIN_VALUE:?}\n")
    }

    #[test]
    fn the_single_signer_table_is_the_card_named_card() {
        let config =
            parse(&[("signer.url", Some("\"ws://10.0.0.5:61232/\"")), ("signer.breaker_after", Some("5"))]);
        assert_eq!(config.signers.len(), 1);
        let card = &config.signers[0];
        assert_eq!((card.name.as_str(), card.url.as_str()), (SINGLE_CARD, "ws://10.0.0.5:61232/"));
        assert_eq!((card.timeout_ms, card.breaker_after), (10_000, 5));
        // No [signer] section at all: its defaults, and the PIN from the environment.
        let config = Config::from_toml_str(
            &doc(&[("signer.pin", None)]),
            env(&[("CUSTOMS179_SIGNER_PIN", PIN_VALUE), ("CUSTOMS179_SIGNER_TIMEOUT_MS", "2500")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let card = &config.signers[0];
        assert_eq!((card.name.as_str(), card.url.as_str()), (SINGLE_CARD, "ws://127.0.0.1:61232/"));
        assert_eq!((card.pin.expose(), card.timeout_ms, card.breaker_after), (PIN_VALUE, 2500, 3));
        assert!(
            config.summary().contains("signers: card at ws://127.0.0.1:61232/, pin: set, timeout 2500 ms\n"),
            "{}",
            config.summary()
        );
    }

    #[test]
    fn two_signer_entries_in_order_with_defaults() {
        let text = with_entries(
            "[[signer]]\nname = \"card-b\"\nurl = \"ws://10.0.0.6:61232/\"\npin = \"pin-b\"\n\
             [[signer]]\nname = \"card_a\"\nurl = \"wss://10.0.0.5:61231\"\npin = \"pin-a\"\n",
        );
        let config = Config::from_toml_str(&text, []).unwrap_or_else(|e| panic!("{e}"));
        let cards: Vec<(&str, &str, &str, u64, u64)> = config
            .signers
            .iter()
            .map(|s| (s.name.as_str(), s.url.as_str(), s.pin.expose(), s.timeout_ms, s.breaker_after))
            .collect();
        assert_eq!(
            cards,
            [
                ("card-b", "ws://10.0.0.6:61232/", "pin-b", 10_000, 3),
                ("card_a", "wss://10.0.0.5:61231", "pin-a", 10_000, 3),
            ]
        );
        assert!(
            config.summary().contains(
                "signers: card-b at ws://10.0.0.6:61232/, pin: set, timeout 10000 ms; \
                 card_a at wss://10.0.0.5:61231, pin: set, timeout 10000 ms\n"
            ),
            "{}",
            config.summary()
        );
    }

    #[test]
    fn four_signer_entries_in_order() {
        let text = with_entries(&format!(
            "{}{}timeout_ms = 2500\n{}breaker_after = 1\n{}timeout_ms = 30000\nbreaker_after = 9\n",
            entry("A1", "ws://10.0.0.1:61232/"),
            entry("a2", "ws://10.0.0.2:61232/"),
            entry("card-3", "ws://10.0.0.3:61232/"),
            entry("0123456789abcdef0123456789abcdef", "wss://card4.example:61231/"),
        ));
        let config = Config::from_toml_str(&text, []).unwrap_or_else(|e| panic!("{e}"));
        let cards: Vec<(&str, &str, u64, u64)> = config
            .signers
            .iter()
            .map(|s| (s.name.as_str(), s.url.as_str(), s.timeout_ms, s.breaker_after))
            .collect();
        assert_eq!(
            cards,
            [
                ("A1", "ws://10.0.0.1:61232/", 10_000, 3),
                ("a2", "ws://10.0.0.2:61232/", 2500, 3),
                ("card-3", "ws://10.0.0.3:61232/", 10_000, 1),
                ("0123456789abcdef0123456789abcdef", "wss://card4.example:61231/", 30_000, 9),
            ]
        );
        assert!(config.signers.iter().all(|s| s.pin.expose() == PIN_VALUE));
    }

    #[test]
    fn bad_signer_entries_are_refused_by_entry_and_key() {
        let problems = entries_problems(
            &format!(
                "{}colour = \"red\"\npinn = {PIN_VALUE:?}\n\
                 [[signer]]\nurl = \"http://x/\"\npin = \"\"\ntimeout_ms = \"10\"\nbreaker_after = 0\n\
                 [[signer]]\nname = \"card b\"\nurl = 61232\npin = 88888888\ntimeout_ms = -1\n\
                 [[signer]]\nname = \"0123456789abcdef0123456789abcdefg\"\nurl = \"ws://\"\n\
                 [[signer]]\nname = \"卡\"\npin = {PIN_VALUE:?}\n\
                 [[signer]]\nname = 7\nurl = \"ws://10.0.0.9:61232/\"\npin = {PIN_VALUE:?}\n\
                 {}{}{}",
                entry("card-a", "ws://10.0.0.5:61232/"),
                entry("card-a", "ws://10.0.0.6:61232/"),
                entry("CARD-A", "ws://10.0.0.7:61232/"),
                entry("card-c", "ws://10.0.0.5:61232"),
            ),
            &[],
        );
        assert_eq!(
            problems,
            [
                r#"signer: entry 1 ("card-a"): colour: unknown key (the keys of a [[signer]] entry are name, url, pin, timeout_ms, breaker_after)"#,
                r#"signer: entry 1 ("card-a"): pinn: unknown key (the keys of a [[signer]] entry are name, url, pin, timeout_ms, breaker_after)"#,
                r#"signer: entry 2: name: missing: the card's name, such as "card-a""#,
                r#"signer: entry 2: url: must be a ws:// or wss:// URL, got "http://x/""#,
                r#"signer: entry 2: pin: must not be empty"#,
                r#"signer: entry 2: timeout_ms: must be a positive integer, got "10""#,
                r#"signer: entry 2: breaker_after: must be a positive integer, got 0"#,
                r#"signer: entry 3: name: must be 1 to 32 letters, digits, '-' or '_' (it appears in URLs, metrics and the store), got "card b""#,
                r#"signer: entry 3: url: must be a string, got 61232"#,
                r#"signer: entry 3: pin: must be a string"#,
                r#"signer: entry 3: timeout_ms: must be a positive integer, got -1"#,
                r#"signer: entry 4: name: must be 1 to 32 letters, digits, '-' or '_' (it appears in URLs, metrics and the store), got "0123456789abcdef0123456789abcdefg""#,
                r#"signer: entry 4: url: must be a ws:// or wss:// URL, got "ws://""#,
                r#"signer: entry 4: pin: missing: the card's PIN"#,
                r#"signer: entry 5: name: must be 1 to 32 letters, digits, '-' or '_' (it appears in URLs, metrics and the store), got "卡""#,
                r#"signer: entry 5: url: missing: the card's EportClient WebSocket, such as "ws://127.0.0.1:61232/""#,
                r#"signer: entry 6: name: must be 1 to 32 letters, digits, '-' or '_' (it appears in URLs, metrics and the store), got 7"#,
                r#"signer: entry 7 ("card-a"): name: used by entry 1 too (give each card its own name)"#,
                r#"signer: entry 8 ("CARD-A"): name: differs only in case from entry 1's "card-a" (give each card its own name)"#,
                r#"signer: entry 9 ("card-c"): url: the same EportClient as entry 1 (one card, one entry), got "ws://10.0.0.5:61232""#,
            ]
        );
        assert_no_secret(&problems.join("\n"));
        assert!(!problems.join("\n").contains("88888888"), "a PIN of the wrong type is not shown either");
    }

    #[test]
    fn signer_entries_that_are_not_tables_or_none() {
        let problems = |signer: &str| {
            Config::from_toml_str(&format!("signer = {signer}\n{}", doc(&[("signer.pin", None)])), [])
                .unwrap_err()
                .0
        };
        // Not shown: a string or a number in place of an entry may be a PIN.
        let not_tables = problems(&format!(
            "[1, {{ name = \"a\", url = \"ws://x/\", pin = {PIN_VALUE:?} }}, {PIN_VALUE:?}]"
        ));
        assert_eq!(
            not_tables,
            [
                "signer: entry 1: must be a table, got an integer",
                "signer: entry 3: must be a table, got a string"
            ]
        );
        assert_eq!(
            problems("[]"),
            ["signer: no entries (give at least one [[signer]] entry, or a single [signer] table)"]
        );
        assert_eq!(
            problems("5")[0],
            "signer: must be a table [signer] or an array of tables ([[signer]] entries), got 5"
        );
    }

    #[test]
    fn signer_variables_are_refused_with_signer_entries() {
        let text =
            format!("{}{}", entry("card-a", "ws://10.0.0.5:61232/"), entry("card-b", "ws://10.0.0.6:61232/"));
        let problems = entries_problems(
            &text,
            &[
                ("CUSTOMS179_SIGNER_PIN", PIN_VALUE),
                ("CUSTOMS179_SIGNER_TIMEOUT_MS", "0"),
                ("CUSTOMS179_SIGNER_URL", "ws://10.0.0.9:61232/"),
            ],
        );
        assert_eq!(
            problems,
            [
                "CUSTOMS179_SIGNER_PIN: applies to a single [signer] table; with [[signer]] entries, set each card's keys in its entry",
                "CUSTOMS179_SIGNER_TIMEOUT_MS: applies to a single [signer] table; with [[signer]] entries, set each card's keys in its entry",
                "CUSTOMS179_SIGNER_URL: applies to a single [signer] table; with [[signer]] entries, set each card's keys in its entry",
            ]
        );
        assert_no_secret(&problems.join("\n"));
        // Other variables still apply.
        let config = Config::from_toml_str(&with_entries(&text), env(&[("CUSTOMS179_LOG_LEVEL", "debug")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((config.log.level.as_str(), config.signers.len()), ("debug", 2));
    }

    #[test]
    fn signer_entries_never_show_their_pins() {
        let config = Config::from_toml_str(
            &with_entries(&format!(
                "{}{}",
                entry("card-a", "ws://10.0.0.5:61232/"),
                entry("card-b", "ws://10.0.0.6:61232/")
            )),
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.signers[1].pin.expose(), PIN_VALUE);
        assert_no_secret(&format!("{config:?}"));
        assert_no_secret(&config.summary());
        // Refused entries: a duplicate name and URL beside a PIN, a PIN under an
        // unknown key, a PIN of the wrong type, a PIN in the environment.
        let problems = entries_problems(
            &format!(
                "{}{}pin_2 = {PIN_VALUE:?}\n[[signer]]\nname = \"x\"\nurl = \"ws://x/\"\npin = 88888888\n",
                entry("card-a", "ws://10.0.0.5:61232/"),
                entry("card-a", "ws://10.0.0.5:61232/"),
            ),
            &[("CUSTOMS179_SIGNER_PIN", PIN_VALUE)],
        );
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert_no_secret(&problems.join("\n"));
        assert_no_secret(&format!("{:?}", ConfigErrors(problems)));
    }

    #[test]
    fn environment_not_test_or_production() {
        assert_eq!(
            problem(&[("customs.environment", Some("\"prod\""))]),
            "customs.environment: must be \"test\" or \"production\", got \"prod\""
        );
        assert!(problem(&[("customs.environment", None)]).starts_with("customs.environment: missing: "));
    }

    #[test]
    fn upload_url_not_http() {
        assert_eq!(
            problem(&[("customs.upload_url", Some("\"ftp://x/\""))]),
            "customs.upload_url: must be a http:// or https:// URL, got \"ftp://x/\""
        );
    }

    #[test]
    fn pull_url_without_order_no() {
        assert_eq!(
            problem(&[("payments.pull_url", Some("\"https://pay.example/orders\""))]),
            "payments.pull_url: must contain {orderNo}, where the order number goes, got \"https://pay.example/orders\""
        );
        assert!(problem(&[("payments.pull_url", Some("\"pay.example/{orderNo}\""))]).contains("http://"));
    }

    #[test]
    fn payments_token_equal_to_admin_token() {
        assert_eq!(
            problem(&[("payments.token", Some(&format!("{ADMIN_TOKEN_VALUE:?}")))]),
            "payments.token: must differ from admin.token and every admin.tokens token"
        );
        assert_eq!(
            problem(&[("payments.token", Some("\"short-secret\""))]),
            "payments.token: must be at least 16 characters"
        );
        assert_eq!(
            problem(&[("payments.pull_token", Some("\"\""))]),
            "payments.pull_token: must not be empty"
        );
    }

    #[test]
    fn trusted_proxies_are_networks_and_none_by_default() {
        assert!(parse(&[]).intake.trusted_proxies.is_empty());
        let config = parse(&[("intake.trusted_proxies", Some("[\"10.0.0.2\", \"10.0.1.0/24\"]"))]);
        let nets: Vec<String> = config.intake.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.2/32", "10.0.1.0/24"]);
        assert!(
            problem(&[("intake.trusted_proxies", Some("[\"haproxy\"]"))])
                .starts_with("intake.trusted_proxies: must be an IP address or a CIDR network")
        );
    }

    #[test]
    fn a_postgresql_store_is_its_address_never_shown_with_its_password() {
        let url = "postgres://svc:pg-pass-5e1f@db.example:5433/queue";
        let config = parse(&[("store.url", Some(&format!("{url:?}")))]);
        assert_eq!(config.store.url.as_ref().map(Secret::expose), Some(url));
        let location = config.store.location();
        assert!(matches!(location, customs179_store::Location::Postgres(_)));
        assert_eq!(location.describe(), "postgres://svc@db.example:5433/queue");
        assert!(!format!("{config:?}").contains("pg-pass-5e1f"));
        assert!(matches!(parse(&[]).store.location(), customs179_store::Location::Sqlite(_)));

        let refused = problem(&[("store.url", Some("\"mysql://svc:pg-pass-5e1f@db/queue\""))]);
        assert_eq!(
            refused,
            "store.url: the PostgreSQL address is not valid: expected postgres://user[:password]@host[:port]/database"
        );
        let both = problem(&[("store.url", Some(&format!("{url:?}"))), ("store.path", Some("\"q.sqlite\""))]);
        assert!(both.starts_with("store.path and store.url: give one"), "{both}");
        let from_env = Config::from_toml_str(&doc(&[]), env(&[("CUSTOMS179_STORE_URL", url)])).unwrap();
        assert_eq!(from_env.store.url.as_ref().map(Secret::expose), Some(url));
    }

    #[test]
    fn bad_log_settings() {
        assert_eq!(
            problem(&[("log.format", Some("\"yaml\""))]),
            "log.format: must be \"text\" or \"json\", got \"yaml\""
        );
        assert_eq!(problem(&[("log.level", Some("\" \""))]), "log.level: must not be empty, got \" \"");
        assert_eq!(
            problem(&[("store.path", Some(r#""D:\new.sqlite""#))]),
            format!(
                "store.path: must not hold control characters (write Windows paths in single quotes: 'C:\\data'), got {:?}",
                "D:\new.sqlite"
            )
        );
        let windows = parse(&[("store.path", Some(r"'D:\new\db.sqlite'")), ("log.dir", Some(r"'D:\logs'"))]);
        assert_eq!(windows.store.path, PathBuf::from(r"D:\new\db.sqlite"));
    }

    #[test]
    fn invalid_toml_is_one_problem_without_the_line() {
        let text = format!("[admin]\ntoken = \"{ADMIN_TOKEN_VALUE}\nx = 1\n");
        let problems = Config::from_toml_str(&text, env(&[("CUSTOMS179_NOPE_X", "1")])).unwrap_err().0;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("invalid TOML at line 2, column "), "{problems:?}");
        assert!(problems[1].starts_with("CUSTOMS179_NOPE_X: unknown environment variable"));
        assert_no_secret(&problems.join("\n"));
    }

    #[test]
    fn several_problems_are_reported_together() {
        let problems = problems_with_env(
            &[
                ("admin.token", None),
                ("enterprise.ebp_code", Some("\"1234567890ABCDEFGHIJ\"")),
                ("intake.path", Some("\"x\"")),
                ("intake.colour", Some("\"red\"")),
                ("log.format", Some("\"xml\"")),
                ("payments.max_body_bytes", Some("0")),
            ],
            &[("CUSTOMS179_SIGNER_URL", "http://x/"), ("CUSTOMS179_FOO_BAR", "1")],
        );
        let text = problems.join("\n");
        for key in [
            "admin.token: missing",
            "enterprise.ebp_code: must be at most 18",
            "intake.path: must start with '/'",
            "intake.colour: unknown key",
            "log.format: must be",
            "payments.max_body_bytes: must be a positive integer",
            "signer.url: must be a ws:// or wss:// URL, got \"http://x/\" (from CUSTOMS179_SIGNER_URL)",
            "CUSTOMS179_FOO_BAR: unknown environment variable",
        ] {
            assert!(text.contains(key), "{key} not in:\n{text}");
        }
        assert_eq!(problems.len(), 8, "{text}");
        assert_eq!(ConfigErrors(problems).to_string(), text, "one problem a line");
    }

    #[test]
    fn secrets_never_appear() {
        // Every way a secret could be refused, at once.
        let secret = |value: &str| format!("{value:?}");
        let errors = Config::from_toml_str(
            &doc(&[
                ("admin.token", Some(&secret("short-secret"))),
                ("payments.pull_token", Some(&secret(PULL_TOKEN_VALUE))),
                ("payments.pull_url", Some("\"nope\"")),
                ("payments.tokn", Some(&secret(PAYMENTS_TOKEN_VALUE))),
                ("signer.pin", Some(&secret(PIN_VALUE))),
                ("unknown.pin", Some(&secret(PIN_VALUE))),
            ]),
            env(&[
                ("CUSTOMS179_PAYMENTS_TOKN", PAYMENTS_TOKEN_VALUE),
                ("CUSTOMS179_SIGNER_PINN", PIN_VALUE),
                ("CUSTOMS179_SIGNER_TIMEOUT_MS", "x"),
            ]),
        )
        .unwrap_err();
        assert_eq!(errors.0.len(), 7, "{errors}");
        assert_no_secret(&errors.to_string());
        assert_no_secret(&format!("{errors:?}"));
        let errors = problems(&[
            ("admin.token", Some(&secret(PAYMENTS_TOKEN_VALUE))),
            ("payments.token", Some(&secret(PAYMENTS_TOKEN_VALUE))),
        ]);
        assert_no_secret(&errors.join("\n"));

        let config = parse(&[
            ("payments.token", Some(&secret(PAYMENTS_TOKEN_VALUE))),
            ("payments.pull_url", Some("\"https://pay.example/{orderNo}\"")),
            ("payments.pull_token", Some(&secret(PULL_TOKEN_VALUE))),
        ]);
        let debug = format!("{config:?}");
        assert_no_secret(&debug);
        assert!(debug.contains("[redacted]"));
        let summary = config.summary();
        assert_no_secret(&summary);
        assert!(summary.contains("tokens: admin (operator)"), "{summary}");
        assert!(summary.contains("pin: set"), "{summary}");
        assert!(summary.contains("payments: token set"), "{summary}");
        assert!(summary.contains("pull token set"), "{summary}");
    }

    #[test]
    fn summary_describes_the_effective_config() {
        let summary = parse(&[("customs.environment", Some("\"production\""))]).summary();
        assert!(summary.contains("intake: 0.0.0.0:80, path /platDataOpen,"), "{summary}");
        assert!(summary.contains(&format!("customs: production environment ({PRODUCTION_UPLOAD_URL})")));
        assert!(summary.contains("payments: token not set"), "{summary}");
        assert!(summary.contains("from any address"), "{summary}");
        assert!(summary.ends_with('\n'));
    }

    #[test]
    fn endpoint_description_says_which_url_and_why() {
        let config = parse(&[]);
        assert_eq!(config.customs.endpoint_description(), format!("test environment ({TEST_UPLOAD_URL})"));
        let config = parse(&[
            ("customs.environment", Some("\"production\"")),
            ("customs.upload_url", Some("\"http://127.0.0.1:1/up\"")),
        ]);
        assert_eq!(config.customs.upload_url(), "http://127.0.0.1:1/up");
        assert_eq!(
            config.customs.endpoint_description(),
            "override (http://127.0.0.1:1/up) for production environment"
        );
    }

    #[test]
    fn secret_prints_redacted_and_compares_by_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(secret, Secret::new("hunter2"));
        assert_ne!(secret, Secret::new("hunter3"));
        assert_ne!(secret, Secret::new("hunter"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let problems = Config::load(&missing).unwrap_err().0;
        assert!(problems.iter().any(|p| p.starts_with(&format!("cannot read {}", missing.display()))));
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "[admin\n").unwrap();
        let problems = Config::load(&broken).unwrap_err().0;
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{}: invalid TOML at line 1", broken.display()))),
            "{problems:?}"
        );
        let binary = dir.path().join("binary.toml");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        let problems = Config::load(&binary).unwrap_err().0;
        assert!(
            problems.iter().any(|p| p == &format!("{}: not UTF-8 text", binary.display())),
            "{problems:?}"
        );
    }
}
