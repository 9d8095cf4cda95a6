//! A stand-in for customs: its upload endpoint (spec 1.2, `realTimeDataUpload`), and its first
//! call to the platform (spec 1.1, `platDataOpen`), so both directions can be tested and
//! failures rehearsed without customs.
//!
//! The upload endpoint answers what customs answers (codes 10000, 20000, 20004, 20006 with
//! customs' texts), and like customs it stores an upload whose signature does not verify. It
//! also checks what customs never says: it rebuilds the pre-sign bytes from the raw body,
//! verifies `signValue` against the registered certificate of `certNo` and applies every field
//! rule. What it found goes into a [`Report`] of every upload received, so a test can see the
//! mistakes customs would have swallowed; with [`CustomsSimOptions::strict`] such an upload is
//! refused instead.
//!
//! Faults (HTTP 503, code 20000, a timeout before storing, an answer lost after storing) are
//! set at start through [`CustomsSimOptions::faults`] and at runtime through `POST /faults` or
//! [`RunningCustomsSim::update_faults`], as shares drawn from a seeded generator or as
//! deterministic counts of upcoming uploads.
//!
//! The control routes (`GET /report`, `GET`/`POST /faults`) share the upload listener: customs
//! serves nothing else there, so nothing real is shadowed, and a test needs one address only.
//! Plain HTTP without auth: keep the simulator on loopback.
//!
//! [`call`] plays customs' first call: `openReq` form posts with customs' user agent, checking
//! each answer as customs' review does.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use customs179_core::answer::excerpt;
use customs179_core::{SignatureVerifier, UploadBody, form_field};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::server::{self, Background, stopped};

/// Customs' upload path, the same in production and in the joint-debugging environment.
pub const UPLOAD_PATH: &str = "/ceb2grab/grab/realTimeDataUpload";
/// The form field holding the upload JSON.
pub const UPLOAD_FIELD: &str = "payExInfoStr";
/// The form field of customs' first call.
pub const OPEN_REQ_FIELD: &str = "openReq";
/// Customs' HTTP client, as platforms see it (some WAFs block it, which the call must reveal).
pub const CUSTOMS_USER_AGENT: &str = "Apache-HttpClient/4.5.3 (Java/1.8.0_60)";

/// The code and text of a stored upload.
pub const CODE_STORED: &str = "10000";
pub const MESSAGE_STORED: &str = "上传成功";
/// The generic failure; customs' reasons after the colon are unpublished, the simulator's are
/// its own.
pub const CODE_FAILED: &str = "20000";
pub const MESSAGE_FAILED: &str = "上传失败";
/// certNo not registered, or ebpCode not of the certificate's enterprise.
pub const CODE_NOT_REGISTERED: &str = "20004";
pub const MESSAGE_NOT_REGISTERED: &str = "企业实时数据获取验签证书未在服务系统注册";
/// The sessionID was stored before. Customs' text carries an Oracle unique-constraint error;
/// the constraint name here is invented.
pub const CODE_ALREADY_STORED: &str = "20006";
pub const MESSAGE_ALREADY_STORED: &str =
    "上传失败,入库失败 ORA-00001: 违反唯一约束条件 (CEB2GRAB.UK_SIM_SESSION_ID)";

/// How long a timeout fault keeps the client waiting unless told otherwise: longer than the
/// usual client timeouts, so the client gives up first, as it would with customs.
pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;

/// What a gateway in front of customs answers when customs is down.
const UNAVAILABLE_BODY: &str = "<html><head><title>503 Service Unavailable</title></head><body><h1>503 Service Unavailable</h1></body></html>";
/// Anything larger in the certificate directory is not a certificate; not reading it keeps a
/// stray dump from filling memory.
const MAX_CERT_FILE_BYTES: u64 = 1 << 20;

/// Faults to inject into uploads.
///
/// The `next_*` counts apply to upcoming uploads and go down by one each time they fire;
/// tests use them because they are deterministic. The shares (each in \[0, 1\]) are drawn
/// from the seeded generator: two draws per upload received, whatever the faults, so the
/// same seed and the same uploads give the same run.
///
/// Every POST to the upload path counts as an upload, malformed or not. Before anything is
/// stored an upload meets, in this order: `next_http_5xx`, `next_20000`, `next_timeout`, then
/// the shares `http_5xx`, `code_20000`, `timeout_before_store` (shares of all uploads; if
/// they add up to more than 1 the later ones get what is left). `next_lost` and
/// `lost_after_store` apply to uploads that were stored (answered 10000) only: there is
/// nothing to lose otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomsFaults {
    /// Share of uploads answered HTTP 503 (an HTML page, as a gateway sends) without storing.
    pub http_5xx: f64,
    /// Share of uploads answered code 20000 without storing.
    pub code_20000: f64,
    /// Share of uploads not stored and left unanswered for `timeout_ms`, after which the
    /// connection is closed: from the client's side a timeout.
    pub timeout_before_store: f64,
    /// Share of stored uploads whose answer is lost: the connection is closed at once
    /// without a response, so the client cannot know the upload got through.
    pub lost_after_store: f64,
    /// How long a timeout fault waits before closing the connection.
    pub timeout_ms: u64,
    /// The next N uploads are answered HTTP 503.
    pub next_http_5xx: u64,
    /// The next N uploads are answered 20000.
    pub next_20000: u64,
    /// The next N uploads time out.
    pub next_timeout: u64,
    /// The answers to the next N stored uploads are lost.
    pub next_lost: u64,
}

impl Default for CustomsFaults {
    fn default() -> Self {
        CustomsFaults {
            http_5xx: 0.0,
            code_20000: 0.0,
            timeout_before_store: 0.0,
            lost_after_store: 0.0,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            next_http_5xx: 0,
            next_20000: 0,
            next_timeout: 0,
            next_lost: 0,
        }
    }
}

/// A change to [`CustomsFaults`]: the fields given replace the current values, the others
/// stay. Unknown fields are refused, so a typo does not silently leave a fault off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomsFaultsUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_5xx: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_20000: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_before_store: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_after_store: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_http_5xx: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_20000: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_lost: Option<u64>,
}

/// Why faults were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    #[error("{name} must be a share between 0 and 1, not {value}")]
    Share { name: &'static str, value: f64 },
}

/// Which fault an upload met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultKind {
    #[serde(rename = "http_5xx")]
    Http5xx,
    #[serde(rename = "code_20000")]
    Code20000,
    #[serde(rename = "timeout_before_store")]
    TimeoutBeforeStore,
    #[serde(rename = "lost_after_store")]
    LostAfterStore,
}

impl CustomsFaults {
    /// Checks every share is in \[0, 1\] (NaN is not).
    pub fn validate(&self) -> Result<(), FaultsError> {
        let shares = [
            ("http_5xx", self.http_5xx),
            ("code_20000", self.code_20000),
            ("timeout_before_store", self.timeout_before_store),
            ("lost_after_store", self.lost_after_store),
        ];
        for (name, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultsError::Share { name, value });
            }
        }
        Ok(())
    }

    /// Applies an update, all or nothing: a bad share leaves the faults as they were.
    pub fn apply(&mut self, update: &CustomsFaultsUpdate) -> Result<(), FaultsError> {
        let mut next = self.clone();
        let shares = [
            (&mut next.http_5xx, update.http_5xx),
            (&mut next.code_20000, update.code_20000),
            (&mut next.timeout_before_store, update.timeout_before_store),
            (&mut next.lost_after_store, update.lost_after_store),
        ];
        for (field, value) in shares {
            if let Some(value) = value {
                *field = value;
            }
        }
        let counts = [
            (&mut next.timeout_ms, update.timeout_ms),
            (&mut next.next_http_5xx, update.next_http_5xx),
            (&mut next.next_20000, update.next_20000),
            (&mut next.next_timeout, update.next_timeout),
            (&mut next.next_lost, update.next_lost),
        ];
        for (field, value) in counts {
            if let Some(value) = value {
                *field = value;
            }
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// The fault an upload meets before it could be stored, consuming a count if one fires.
    /// `roll` is uniform in \[0, 1).
    fn take_before_store(&mut self, roll: f64) -> Option<FaultKind> {
        let counts = [
            (&mut self.next_http_5xx, FaultKind::Http5xx),
            (&mut self.next_20000, FaultKind::Code20000),
            (&mut self.next_timeout, FaultKind::TimeoutBeforeStore),
        ];
        for (count, kind) in counts {
            if *count > 0 {
                *count -= 1;
                return Some(kind);
            }
        }
        let shares = [
            (self.http_5xx, FaultKind::Http5xx),
            (self.code_20000, FaultKind::Code20000),
            (self.timeout_before_store, FaultKind::TimeoutBeforeStore),
        ];
        let mut edge = 0.0;
        for (share, kind) in shares {
            edge += share;
            if roll < edge {
                return Some(kind);
            }
        }
        None
    }

    /// Whether the answer to a stored upload is lost, consuming a count if one fires.
    fn take_after_store(&mut self, roll: f64) -> bool {
        if self.next_lost > 0 {
            self.next_lost -= 1;
            return true;
        }
        roll < self.lost_after_store
    }
}

/// One upload as the simulator received and handled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedUpload {
    /// When it arrived, epoch ms.
    pub time_ms: u64,
    /// None when the body could not be read far enough to find it.
    pub session_id: Option<String>,
    pub guid: Option<String>,
    pub cert_no: Option<String>,
    pub ebp_code: Option<String>,
    /// The HTTP status sent; None when the client got no answer (timeout, lost).
    pub http_status: Option<u16>,
    /// The code of the JSON answer sent; None for a 503 and when no answer was sent.
    pub code: Option<String>,
    pub message: Option<String>,
    /// The fault the upload met, if any.
    pub fault: Option<FaultKind>,
    /// Everything wrong with the upload, whether or not customs would say so: an unreadable
    /// body, an unregistered certNo or ebpCode, a signature that does not verify, each
    /// broken field rule (`/payExchangeInfoHead/currency: …`).
    pub violations: Vec<String>,
    /// Whether it was stored: a later upload of its sessionID gets 20006.
    pub stored: bool,
}

/// Counts over every upload received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub received: u64,
    pub stored: u64,
    /// Uploads per JSON code answered.
    pub by_code: BTreeMap<String, u64>,
    /// Uploads answered HTTP 503.
    pub http_5xx: u64,
    /// Uploads the client got no answer to (timeouts and lost answers).
    pub unanswered: u64,
    /// Uploads with at least one violation.
    pub with_violations: u64,
}

/// What `GET /report` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The seed of the fault generator, to run the same faults again (`--seed`).
    pub seed: u64,
    pub strict: bool,
    /// The registered certNos (from the certificate directory) and ebpCodes.
    pub cert_nos: Vec<String>,
    pub ebp_codes: Vec<String>,
    /// Every upload received, in the order handled (kept in memory while the simulator runs).
    pub uploads: Vec<ReceivedUpload>,
    pub totals: Totals,
}

/// How to run the customs simulator.
#[derive(Debug, Clone)]
pub struct CustomsSimOptions {
    /// The address of the upload endpoint and the control routes; port 0 picks a free port
    /// (see [`RunningCustomsSim::addr`]).
    pub listen: SocketAddr,
    /// Every certificate in this directory (PEM or DER) is registered under its certNo.
    pub certs_dir: PathBuf,
    /// The registered platforms' ebpCodes.
    pub ebp_codes: Vec<String>,
    /// Refuse (20000, nothing stored) any upload with a violation, instead of storing it as
    /// customs does.
    pub strict: bool,
    /// Faults in force from the start.
    pub faults: CustomsFaults,
    /// The fault generator's seed; None picks one (shown in the log and the report).
    pub seed: Option<u64>,
}

impl CustomsSimOptions {
    /// Options without faults, not strict, with a random seed.
    pub fn new<C: Into<String>>(
        listen: SocketAddr,
        certs_dir: impl Into<PathBuf>,
        ebp_codes: impl IntoIterator<Item = C>,
    ) -> Self {
        CustomsSimOptions {
            listen,
            certs_dir: certs_dir.into(),
            ebp_codes: ebp_codes.into_iter().map(Into::into).collect(),
            strict: false,
            faults: CustomsFaults::default(),
            seed: None,
        }
    }
}

/// Why the customs simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum CustomsSimError {
    #[error("cannot read the certificate directory {}: {source}", path.display())]
    CertsDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Faults(#[from] FaultsError),
    #[error("cannot listen on {addr} for the customs simulator: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the certificate loading task failed: {0}")]
    Task(String),
}

/// A file of the certificate directory that was not registered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub reason: String,
}

/// A started customs simulator. Dropping it stops it too, without waiting.
pub struct RunningCustomsSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    skipped: Vec<SkippedFile>,
    background: Background,
}

impl RunningCustomsSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/ceb2grab/grab/realTimeDataUpload`, what the service is configured with.
    pub fn upload_url(&self) -> String {
        format!("http://{}{UPLOAD_PATH}", self.addr)
    }

    /// `http://ADDR`, the base of `/report` and `/faults`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The certNos registered from the certificate directory, in order.
    pub fn cert_nos(&self) -> Vec<String> {
        self.shared.certs.keys().cloned().collect()
    }

    /// The files of the certificate directory that were not registered.
    pub fn skipped_files(&self) -> &[SkippedFile] {
        &self.skipped
    }

    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The same data as `GET /report`.
    pub fn report(&self) -> Report {
        self.shared.report()
    }

    pub fn faults(&self) -> CustomsFaults {
        self.shared.lock().faults.clone()
    }

    /// Changes faults as `POST /faults` does and returns the faults now in force.
    pub fn update_faults(&self, update: &CustomsFaultsUpdate) -> Result<CustomsFaults, FaultsError> {
        self.shared.update_faults(update)
    }

    /// Stops accepting, ends every connection (a timeout fault in progress closes its
    /// connection at once) and waits for them.
    pub async fn stop(self) {
        self.background.stop().await;
    }
}

/// Registers the certificates, binds the listener and serves in the background.
pub async fn start(options: CustomsSimOptions) -> Result<RunningCustomsSim, CustomsSimError> {
    let CustomsSimOptions { listen, certs_dir, ebp_codes, strict, faults, seed } = options;
    faults.validate()?;
    let dir = certs_dir.clone();
    let (certs, skipped) = tokio::task::spawn_blocking(move || load_certs(&dir))
        .await
        .map_err(|e| CustomsSimError::Task(e.to_string()))??;
    if certs.is_empty() {
        tracing::warn!(
            dir = %certs_dir.display(),
            "no certificate in the certificate directory: every upload will be answered 20004"
        );
    }
    let mut registered = Vec::new();
    for code in ebp_codes.iter().map(|code| code.trim()).filter(|code| !code.is_empty()) {
        if !registered.iter().any(|known| known == code) {
            registered.push(code.to_owned());
        }
    }
    if registered.is_empty() {
        tracing::warn!("no ebpCode registered: every upload will be answered 20004");
    }
    let seed = match seed {
        Some(seed) => seed,
        None => getrandom::u64().map_err(|e| CustomsSimError::Random(e.to_string()))?,
    };

    let (listener, addr) =
        server::bind(listen).await.map_err(|source| CustomsSimError::Bind { addr: listen, source })?;

    let (mut background, stop_rx) = Background::new();
    let shared = Arc::new(Shared {
        certs,
        ebp_codes: registered,
        strict,
        seed,
        state: Mutex::new(SimState {
            faults: faults.clone(),
            rng: StdRng::seed_from_u64(seed),
            stored: HashSet::new(),
            uploads: Vec::new(),
            totals: Totals::default(),
        }),
        stop: stop_rx.clone(),
    });
    let router = router(shared.clone());
    background.spawn(server::accept_loop(listener, stop_rx, move |stream, peer, stop| {
        serve_connection(stream, peer, router.clone(), stop)
    }));

    tracing::info!(
        url = %format!("http://{addr}{UPLOAD_PATH}"),
        report = %format!("http://{addr}/report"),
        cert_nos = ?shared.certs.keys().collect::<Vec<_>>(),
        ebp_codes = ?shared.ebp_codes,
        strict,
        seed,
        ?faults,
        "customs simulator listening"
    );
    Ok(RunningCustomsSim { addr, shared, skipped, background })
}

/// Serves until `until` completes, then stops cleanly.
pub async fn run_until(
    options: CustomsSimOptions,
    until: impl Future<Output = ()>,
) -> Result<(), CustomsSimError> {
    server::run_until(start(options), until, "customs simulator", RunningCustomsSim::stop).await
}

/// Serves until Ctrl-C (or SIGTERM), on a runtime of its own: for synchronous callers such as
/// the command line. Must not be called from inside an async runtime.
pub fn run(options: CustomsSimOptions) -> Result<(), CustomsSimError> {
    server::block_on(run_until(options, server::stop_signal()), CustomsSimError::Runtime)
}

/// Registers every certificate of `dir` under its certNo. Anything else (private keys, bare
/// public keys, which carry no serial, notes) is skipped with a warning and never loaded:
/// operators keep a card's files together, and a key must not become a registration.
fn load_certs(
    dir: &Path,
) -> Result<(BTreeMap<String, SignatureVerifier>, Vec<SkippedFile>), CustomsSimError> {
    let unreadable = |source| CustomsSimError::CertsDir { path: dir.to_owned(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        paths.push(entry.map_err(unreadable)?.path());
    }
    // Sorted, so which of two files with the same certNo wins does not depend on the disk.
    paths.sort();
    let mut certs = BTreeMap::new();
    let mut skipped = Vec::new();
    for path in paths {
        let reason = match load_cert(&path) {
            Ok(None) => continue,
            Ok(Some((cert_no, verifier))) => match certs.entry(cert_no) {
                Entry::Occupied(entry) => {
                    format!("certNo {} is already registered by another file", entry.key())
                }
                Entry::Vacant(entry) => {
                    tracing::info!(
                        path = %path.display(),
                        cert_no = %entry.key(),
                        algorithm = %verifier.algorithm(),
                        "registered a certificate"
                    );
                    entry.insert(verifier);
                    continue;
                }
            },
            Err(reason) => reason,
        };
        tracing::warn!(path = %path.display(), %reason, "skipped a file of the certificate directory");
        skipped.push(SkippedFile { path, reason });
    }
    Ok((certs, skipped))
}

/// The certificate in one file; None for what is not a file (directories are not
/// registrations and need no warning).
fn load_cert(path: &Path) -> Result<Option<(String, SignatureVerifier)>, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !metadata.is_file() {
        return Ok(None);
    }
    if metadata.len() > MAX_CERT_FILE_BYTES {
        return Err(format!("{} bytes is too large for a certificate", metadata.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let verifier = SignatureVerifier::from_bytes(&bytes).map_err(|e| e.to_string())?;
    match verifier.cert_no() {
        Some(cert_no) => Ok(Some((cert_no.to_string(), verifier))),
        None => Err("a bare public key has no serial, so no certNo to register: use the certificate".into()),
    }
}

struct Shared {
    /// Registered certificates by certNo, compared as text as customs does (lower case).
    certs: BTreeMap<String, SignatureVerifier>,
    ebp_codes: Vec<String>,
    strict: bool,
    seed: u64,
    state: Mutex<SimState>,
    /// Lets a timeout fault in progress end at once when the simulator stops.
    stop: watch::Receiver<bool>,
}

/// Everything that changes, under one lock so that deciding, storing and recording an upload
/// is one step: two uploads of one sessionID cannot both be stored.
struct SimState {
    faults: CustomsFaults,
    rng: StdRng,
    /// sessionIDs stored, customs' unique key.
    stored: HashSet<String>,
    uploads: Vec<ReceivedUpload>,
    totals: Totals,
}

/// What the body says and what is wrong with it, found before any decision.
#[derive(Debug, Default)]
struct Analysis {
    session_id: Option<String>,
    guid: Option<String>,
    cert_no: Option<String>,
    ebp_code: Option<String>,
    refusal: Option<Refusal>,
    violations: Vec<String>,
}

#[derive(Debug)]
enum Refusal {
    /// Not an upload customs could store: 20000 with the reason.
    Malformed(String),
    /// certNo or ebpCode not registered: 20004.
    NotRegistered,
}

/// How to answer an upload.
#[derive(Debug)]
enum Reply {
    Answer { code: &'static str, message: String },
    Unavailable,
    Timeout(Duration),
    Lost,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // Every change under this lock is completed before it is released, and no code
        // under it can panic on input: a poisoned lock holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_faults(&self, update: &CustomsFaultsUpdate) -> Result<CustomsFaults, FaultsError> {
        let mut state = self.lock();
        state.faults.apply(update)?;
        tracing::info!(faults = ?state.faults, "faults changed");
        Ok(state.faults.clone())
    }

    fn report(&self) -> Report {
        let state = self.lock();
        Report {
            seed: self.seed,
            strict: self.strict,
            cert_nos: self.certs.keys().cloned().collect(),
            ebp_codes: self.ebp_codes.clone(),
            uploads: state.uploads.clone(),
            totals: state.totals.clone(),
        }
    }

    /// Reads the body as customs does, and checks everything customs does not tell.
    fn analyse(&self, body: &[u8]) -> Analysis {
        let text = match form_field(body, UPLOAD_FIELD) {
            Ok(text) => text,
            Err(e) => return Analysis::malformed(e.to_string()),
        };
        let parsed = match UploadBody::parse(&text) {
            Ok(parsed) => parsed,
            Err(problems) => {
                let mut analysis = Analysis::loose(&text);
                analysis.violations = problems.0.iter().map(ToString::to_string).collect();
                analysis.refusal = Some(Refusal::Malformed(format!("not an upload body: {problems}")));
                return analysis;
            }
        };
        let head = serde_json::from_str::<Value>(parsed.presign.head_json()).ok();
        let head_text = |key: &str| {
            head.as_ref().and_then(|head| head.get(key)).and_then(Value::as_str).map(str::to_owned)
        };
        let session_id = parsed.presign.session_id();
        let mut analysis = Analysis {
            guid: head_text("guid"),
            ebp_code: head_text("ebpCode"),
            cert_no: Some(parsed.cert_no.clone()),
            ..Analysis::default()
        };
        if session_id.is_empty() {
            // Oracle stores '' as NULL, which customs' unique key refuses.
            analysis.violations.push("/sessionID: must not be empty".into());
            analysis.refusal = Some(Refusal::Malformed("sessionID is empty".into()));
            return analysis;
        }
        analysis.session_id = Some(session_id);

        match self.certs.get(&parsed.cert_no) {
            Some(verifier) => {
                if let Err(e) = verifier.verify(parsed.presign.as_bytes(), &parsed.sign_value) {
                    analysis.violations.push(format!(
                        "{e} (certNo {}, over the pre-sign string rebuilt from the body)",
                        parsed.cert_no
                    ));
                }
            }
            None => {
                analysis.violations.push(format!("certNo {:?} is not registered", parsed.cert_no));
                analysis.refusal = Some(Refusal::NotRegistered);
            }
        }
        match &analysis.ebp_code {
            Some(code) if self.ebp_codes.contains(code) => {}
            Some(code) => {
                analysis.violations.push(format!("ebpCode {code:?} is not registered"));
                analysis.refusal = Some(Refusal::NotRegistered);
            }
            None => {
                analysis.violations.push("no ebpCode: the certificate's enterprise cannot be checked".into());
                analysis.refusal = Some(Refusal::NotRegistered);
            }
        }
        if let Err(problems) = parsed.record() {
            analysis.violations.extend(problems.0.iter().map(ToString::to_string));
        }
        analysis
    }

    /// Decides, stores and records one upload, in one step.
    fn decide(&self, analysis: Analysis, time_ms: u64) -> Reply {
        let mut guard = self.lock();
        let state = &mut *guard;
        // Two draws whatever happens, so the sequence depends on the uploads only.
        let before: f64 = state.rng.random();
        let after: f64 = state.rng.random();
        let fault = state.faults.take_before_store(before);
        let mut stored = false;
        let mut lost = false;
        let reply = match (fault, &analysis.refusal) {
            (Some(FaultKind::Http5xx), _) => Reply::Unavailable,
            (Some(FaultKind::Code20000), _) => failed(MESSAGE_FAILED.to_owned()),
            (Some(_), _) => Reply::Timeout(Duration::from_millis(state.faults.timeout_ms)),
            (None, Some(Refusal::Malformed(reason))) => failed(format!("{MESSAGE_FAILED}: {reason}")),
            (None, Some(Refusal::NotRegistered)) => answer(CODE_NOT_REGISTERED, MESSAGE_NOT_REGISTERED),
            (None, None) if self.strict && !analysis.violations.is_empty() => {
                failed(format!("{MESSAGE_FAILED}: {}", analysis.violations.join("; ")))
            }
            (None, None) => {
                // Malformed uploads are refused above, so there is a sessionID here.
                let session_id = analysis.session_id.clone().unwrap_or_default();
                if state.stored.insert(session_id) {
                    stored = true;
                    lost = state.faults.take_after_store(after);
                    if lost { Reply::Lost } else { answer(CODE_STORED, MESSAGE_STORED) }
                } else {
                    answer(CODE_ALREADY_STORED, MESSAGE_ALREADY_STORED)
                }
            }
        };
        let fault = if lost { Some(FaultKind::LostAfterStore) } else { fault };
        let (http_status, code, message) = match &reply {
            Reply::Answer { code, message } => (Some(200), Some((*code).to_owned()), Some(message.clone())),
            Reply::Unavailable => (Some(503), None, None),
            Reply::Timeout(_) | Reply::Lost => (None, None, None),
        };

        let totals = &mut state.totals;
        totals.received += 1;
        totals.stored += u64::from(stored);
        if let Some(code) = &code {
            *totals.by_code.entry(code.clone()).or_default() += 1;
        }
        totals.http_5xx += u64::from(http_status == Some(503));
        totals.unanswered += u64::from(http_status.is_none());
        totals.with_violations += u64::from(!analysis.violations.is_empty());

        tracing::info!(
            session_id = analysis.session_id.as_deref().unwrap_or("-"),
            cert_no = analysis.cert_no.as_deref().unwrap_or("-"),
            http_status = http_status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
            code = code.as_deref().unwrap_or("-"),
            ?fault,
            stored,
            violations = ?analysis.violations,
            "upload"
        );
        state.uploads.push(ReceivedUpload {
            time_ms,
            session_id: analysis.session_id,
            guid: analysis.guid,
            cert_no: analysis.cert_no,
            ebp_code: analysis.ebp_code,
            http_status,
            code,
            message,
            fault,
            violations: analysis.violations,
            stored,
        });
        reply
    }
}

impl Analysis {
    fn malformed(reason: String) -> Analysis {
        Analysis {
            violations: vec![reason.clone()],
            refusal: Some(Refusal::Malformed(reason)),
            ..Analysis::default()
        }
    }

    /// What can still be read of a body that is not an upload, for the report.
    fn loose(text: &str) -> Analysis {
        let value = serde_json::from_str::<Value>(text).ok();
        let text_at = |pointer: &str| {
            value.as_ref().and_then(|v| v.pointer(pointer)).and_then(Value::as_str).map(str::to_owned)
        };
        Analysis {
            session_id: text_at("/sessionID"),
            guid: text_at("/payExchangeInfoHead/guid"),
            cert_no: text_at("/certNo"),
            ebp_code: text_at("/payExchangeInfoHead/ebpCode"),
            ..Analysis::default()
        }
    }
}

fn answer(code: &'static str, message: &str) -> Reply {
    Reply::Answer { code, message: message.to_owned() }
}

fn failed(message: String) -> Reply {
    Reply::Answer { code: CODE_FAILED, message }
}

/// Customs' answer, keys in customs' order.
#[derive(Serialize)]
struct AnswerBody<'a> {
    code: &'a str,
    message: &'a str,
    total: u64,
    #[serde(rename = "serviceTime")]
    service_time: u64,
}

fn json_answer(code: &str, message: &str) -> Response {
    let body = AnswerBody { code, message, total: 0, service_time: now_ms() };
    match serde_json::to_string(&body) {
        Ok(text) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json;charset=UTF-8")], text).into_response()
        }
        // Serialising strings and numbers cannot fail; answer like a broken customs if it does.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Closes the connection a request came on without answering it: the only way to make a
/// client see what a lost answer or a timeout looks like on the wire.
#[derive(Clone)]
struct ConnectionAbort(Arc<Notify>);

impl ConnectionAbort {
    async fn close(&self) -> Response {
        self.0.notify_one();
        // The connection task drops this handler with the connection.
        std::future::pending().await
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(UPLOAD_PATH, post(upload))
        .route("/report", get(get_report))
        .route("/faults", get(get_faults).post(post_faults))
        .with_state(shared)
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Extension(abort): Extension<ConnectionAbort>,
    body: Bytes,
) -> Response {
    let time_ms = now_ms();
    let analysis = shared.analyse(&body);
    match shared.decide(analysis, time_ms) {
        Reply::Answer { code, message } => json_answer(code, &message),
        Reply::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/html")], UNAVAILABLE_BODY)
                .into_response()
        }
        Reply::Timeout(wait) => {
            let mut stop = shared.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut stop) => {}
            }
            abort.close().await
        }
        Reply::Lost => abort.close().await,
    }
}

async fn get_report(State(shared): State<Arc<Shared>>) -> Json<Report> {
    Json(shared.report())
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<CustomsFaults> {
    Json(shared.lock().faults.clone())
}

async fn post_faults(
    State(shared): State<Arc<Shared>>,
    Json(update): Json<CustomsFaultsUpdate>,
) -> Result<Json<CustomsFaults>, (StatusCode, String)> {
    shared.update_faults(&update).map(Json).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// Serves one HTTP/1.1 connection (customs' endpoint is reached over HTTP/1.1), giving each
/// request the means to close it unanswered.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    let abort = ConnectionAbort(notify.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(abort.clone());
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // With a timer, hyper's 30 s limit on reading request headers applies.
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection failed");
                }
                break;
            }
            _ = notify.notified() => {
                // Dropping the connection closes the socket without a response.
                tracing::debug!(%peer, "closing a connection without answering");
                break;
            }
            _ = stopped(&mut stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// How to play customs' first call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// The platform's registered endpoint (customs uses `http://` on port 80).
    pub url: String,
    /// The order customs asks about.
    pub order_no: String,
    /// How many calls, each with a new sessionID.
    pub count: u64,
    /// Calls started per second; calls run concurrently when answers are slower.
    pub rate: f64,
    /// How long to wait for each answer. Customs' own limit is unpublished; answers are
    /// expected in milliseconds.
    pub timeout: Duration,
}

impl CallOptions {
    /// One call, at most 10 s for its answer.
    pub fn new(url: impl Into<String>, order_no: impl Into<String>) -> Self {
        CallOptions {
            url: url.into(),
            order_no: order_no.into(),
            count: 1,
            rate: 1.0,
            timeout: Duration::from_secs(10),
        }
    }
}

/// One call and what the platform answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// 1-based, in the order the calls were started.
    pub index: u64,
    pub session_id: String,
    /// None when no HTTP answer came.
    pub http_status: Option<u16>,
    /// The answer's `code` (a number shown as its digits); None when there is none.
    pub code: Option<String>,
    pub message: Option<String>,
    pub elapsed_ms: u64,
    /// Why the call failed customs' check; None when it passed (HTTP 200, code "10000").
    pub failure: Option<String>,
}

impl CallResult {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Every call, in the order started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSummary {
    pub results: Vec<CallResult>,
}

impl CallSummary {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.ok()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Whether there were calls and every one was answered 10000, as customs' review demands.
    pub fn all_ok(&self) -> bool {
        !self.results.is_empty() && self.failed() == 0
    }

    pub fn slowest_ms(&self) -> u64 {
        self.results.iter().map(|r| r.elapsed_ms).max().unwrap_or(0)
    }
}

/// Why calls could not be made at all (as opposed to calls that failed the check).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{url:?} is not an http:// or https:// URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the order number must not be empty")]
    EmptyOrder,
    #[error("the count must be at least 1")]
    NoCalls,
    #[error("the rate must be a positive number of calls per second, not {0}")]
    BadRate(f64),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Makes the calls and returns every result; see [`call_with`].
pub async fn call(options: CallOptions) -> Result<CallSummary, CallError> {
    call_with(options, |_| {}).await
}

/// Makes `count` calls at `rate` per second, as customs does: a form POST of `openReq` =
/// `{"orderNo":…,"sessionID":<new upper-case UUID>,"serviceTime":<now ms, a number>}` with
/// customs' user agent, directly (no proxy), redirects not followed. Each call passes when answered HTTP 200 with
/// JSON whose `code` is the string "10000" (the spec's form; a number is reported as a
/// failure, since customs' acceptance of it is unknown).
///
/// `on_result` sees each result as it comes, for progress output. When the first call cannot
/// connect at all, the remaining ones are not made: [`CallError::Unreachable`].
pub async fn call_with(
    options: CallOptions,
    mut on_result: impl FnMut(&CallResult),
) -> Result<CallSummary, CallError> {
    let CallOptions { url, order_no, count, rate, timeout } = options;
    let bad_url = |reason: String| CallError::BadUrl { url: url.clone(), reason };
    let parsed = reqwest::Url::parse(&url).map_err(|e| bad_url(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad_url(format!("the scheme is {}", parsed.scheme())));
    }
    if order_no.is_empty() {
        return Err(CallError::EmptyOrder);
    }
    if count == 0 {
        return Err(CallError::NoCalls);
    }
    // The last call's start must be a representable delay.
    if !(rate.is_finite() && rate > 0.0) || Duration::try_from_secs_f64((count - 1) as f64 / rate).is_err() {
        return Err(CallError::BadRate(rate));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent(CUSTOMS_USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Customs connects directly; a proxy from the environment would test another path.
        .no_proxy()
        .build()
        .map_err(CallError::Client)?;

    let order_no: Arc<str> = order_no.into();
    let started = tokio::time::Instant::now();
    let mut calls = JoinSet::new();
    let mut results = Vec::new();
    let mut finish = |(result, unreachable): (CallResult, Option<String>)| {
        on_result(&result);
        if let (1, Some(reason)) = (result.index, unreachable) {
            return Err(CallError::Unreachable { url: url.clone(), reason });
        }
        results.push(result);
        Ok(())
    };
    for index in 1..=count {
        let due = started + Duration::try_from_secs_f64((index - 1) as f64 / rate).unwrap_or(Duration::ZERO);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                Some(done) = calls.join_next(), if !calls.is_empty() => {
                    if let Ok(done) = done {
                        finish(done)?;
                    }
                }
            }
        }
        calls.spawn(one_call(client.clone(), parsed.clone(), order_no.clone(), index));
    }
    while let Some(done) = calls.join_next().await {
        if let Ok(done) = done {
            finish(done)?;
        }
    }
    results.sort_by_key(|result| result.index);
    Ok(CallSummary { results })
}

/// `openReq` with keys in the order of the official sample.
#[derive(Serialize)]
struct OpenReqBody<'a> {
    #[serde(rename = "orderNo")]
    order_no: &'a str,
    #[serde(rename = "sessionID")]
    session_id: &'a str,
    #[serde(rename = "serviceTime")]
    service_time: u64,
}

/// One call; the second value is set when it could not connect at all.
async fn one_call(
    client: reqwest::Client,
    url: reqwest::Url,
    order_no: Arc<str>,
    index: u64,
) -> (CallResult, Option<String>) {
    let session_id = uuid::Uuid::new_v4().to_string().to_uppercase();
    let mut result = CallResult {
        index,
        session_id,
        http_status: None,
        code: None,
        message: None,
        elapsed_ms: 0,
        failure: None,
    };
    let open_req =
        OpenReqBody { order_no: &order_no, session_id: &result.session_id, service_time: now_ms() };
    let open_req = match serde_json::to_string(&open_req) {
        Ok(text) => text,
        Err(e) => {
            result.failure = Some(format!("cannot write openReq: {e}"));
            return (result, None);
        }
    };
    let began = Instant::now();
    let sent = client.post(url).form(&[(OPEN_REQ_FIELD, open_req.as_str())]).send().await;
    let elapsed = |began: Instant| u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            result.elapsed_ms = elapsed(began);
            let reason = transport_reason(&e);
            result.failure = Some(format!("no answer: {reason}"));
            return (result, e.is_connect().then_some(reason));
        }
    };
    let status = response.status().as_u16();
    result.http_status = Some(status);
    let body = response.text().await;
    result.elapsed_ms = elapsed(began);
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            result.failure = Some(format!("HTTP {status}, the answer was cut off: {}", transport_reason(&e)));
            return (result, None);
        }
    };
    let value = serde_json::from_str::<Value>(&body).ok();
    let code = value.as_ref().and_then(|v| v.get("code"));
    result.code = match code {
        Some(Value::String(code)) => Some(code.clone()),
        Some(Value::Number(code)) => Some(code.to_string()),
        _ => None,
    };
    result.message = value.as_ref().and_then(|v| v.get("message")).and_then(Value::as_str).map(str::to_owned);
    result.failure = if status != 200 {
        Some(format!("HTTP {status}, not 200: {}", excerpt(&body)))
    } else if value.is_none() {
        Some(format!("the answer is not JSON: {}", excerpt(&body)))
    } else {
        match code {
            Some(Value::String(code)) if code == CODE_STORED => None,
            Some(Value::Number(code)) => {
                Some(format!("code is the number {code}; customs expects the string \"10000\""))
            }
            Some(Value::String(code)) => {
                Some(format!("code {code}, not 10000: {}", result.message.as_deref().unwrap_or("")))
            }
            _ => Some(format!("the answer has no code: {}", excerpt(&body))),
        }
    };
    (result, None)
}

/// A reqwest error with its causes, which hold the useful part ("connection refused").
fn transport_reason(error: &reqwest::Error) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_replace_only_the_fields_given_and_refuse_bad_shares() {
        let mut faults = CustomsFaults { next_lost: 2, http_5xx: 0.5, ..CustomsFaults::default() };
        let update: CustomsFaultsUpdate =
            serde_json::from_str(r#"{"next_lost":0,"code_20000":0.25,"timeout_ms":300}"#).unwrap();
        faults.apply(&update).unwrap();
        assert_eq!(
            faults,
            CustomsFaults { http_5xx: 0.5, code_20000: 0.25, timeout_ms: 300, ..CustomsFaults::default() }
        );
        for bad in [-0.1, 1.5, f64::NAN] {
            let before = faults.clone();
            let update =
                CustomsFaultsUpdate { http_5xx: Some(bad), next_20000: Some(3), ..Default::default() };
            assert!(faults.apply(&update).is_err(), "{bad}");
            assert_eq!(faults, before, "a refused update changes nothing");
        }
        assert!(
            serde_json::from_str::<CustomsFaultsUpdate>(r#"{"http5xx":1}"#).is_err(),
            "typos are refused"
        );
    }

    #[test]
    fn counts_come_before_shares_and_shares_partition_the_roll() {
        let mut faults = CustomsFaults {
            next_20000: 1,
            next_http_5xx: 1,
            http_5xx: 0.2,
            code_20000: 0.3,
            ..Default::default()
        };
        assert_eq!(faults.take_before_store(0.99), Some(FaultKind::Http5xx));
        assert_eq!(faults.take_before_store(0.99), Some(FaultKind::Code20000));
        assert_eq!(faults.take_before_store(0.99), None);
        assert_eq!(faults.take_before_store(0.1), Some(FaultKind::Http5xx));
        assert_eq!(faults.take_before_store(0.4), Some(FaultKind::Code20000));
        assert_eq!(faults.take_before_store(0.5), None);
        faults.timeout_before_store = 1.0;
        assert_eq!(faults.take_before_store(0.999), Some(FaultKind::TimeoutBeforeStore));
        assert!(!faults.take_after_store(0.0), "no lost share");
        faults.next_lost = 1;
        assert!(faults.take_after_store(0.99));
        assert!(!faults.take_after_store(0.99));
    }

    #[test]
    fn default_faults_are_off_with_a_long_timeout() {
        let mut faults = CustomsFaults::default();
        assert_eq!(faults.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(faults.take_before_store(0.0), None);
        assert!(!faults.take_after_store(0.0));
        let partial: CustomsFaults = serde_json::from_str(r#"{"next_lost":1}"#).unwrap();
        assert_eq!(partial, CustomsFaults { next_lost: 1, ..CustomsFaults::default() });
    }

    #[test]
    fn answers_have_customs_keys_in_order() {
        let body = AnswerBody { code: "10000", message: MESSAGE_STORED, total: 0, service_time: 7 };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"code":"10000","message":"上传成功","total":0,"serviceTime":7}"#
        );
        let open_req = OpenReqBody { order_no: "SO1", session_id: "S", service_time: 1533271903898 };
        assert_eq!(
            serde_json::to_string(&open_req).unwrap(),
            r#"{"orderNo":"SO1","sessionID":"S","serviceTime":1533271903898}"#
        );
    }

    #[test]
    fn unreadable_bodies_keep_what_can_be_read() {
        let loose = Analysis::loose(r#"{"sessionID":"S1","payExchangeInfoHead":{"guid":"G"},"certNo":"c"}"#);
        assert_eq!(
            (loose.session_id.as_deref(), loose.guid.as_deref(), loose.cert_no.as_deref(), loose.ebp_code),
            (Some("S1"), Some("G"), Some("c"), None)
        );
        assert_eq!(Analysis::loose("nonsense").session_id, None);
    }
}
