//! A stand-in for EportClient's signing WebSocket (`CnEport.Pub.WebSocketServer.exe`) with a
//! software card, so the signing path can be tested, and its failure handling rehearsed,
//! without a Windows machine, a reader or a real card.
//!
//! It speaks the frames of [`customs179_eport::frames`] and answers what the real control
//! answers where that is known (the protocol notes in `eportclient-websocket.md`). Where the
//! real texts are unpublished (wrong PIN, locked card, unknown method) it answers with texts
//! and `Err:Sim…` tags of its own, deliberately outside the allow-list the service keys on,
//! so the service must treat them as it would treat the real unknown answers: pause signing.
//!
//! Faults (latency, reader errors 50070 and 50200, forced wrong-PIN answers, dropped and
//! unanswered requests) are set at start through [`EportSimOptions::faults`] and at runtime
//! through the HTTP control endpoint or [`RunningEportSim::update_faults`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use customs179_core::{CertNo, SignatureVerifier};
use customs179_eport::frames::{Method, Outcome, Reply, RequestFrame};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use x509_cert::der::DateTime;

pub use crate::keys::Algo;
use crate::keys::{CardKeys, CertValidity, KeyError};
use crate::server::{self, Background, stopped};

/// Wrong PINs in a row after which the card locks, as real cards do after "a few".
pub const MAX_WRONG_PINS: u32 = 3;

/// Tag of a wrong-PIN answer (the real one is unpublished).
pub const TAG_WRONG_PIN: &str = "Err:Sim61001";
/// Tag of every Sign answer once the card is locked (the real one is unpublished).
pub const TAG_LOCKED: &str = "Err:Sim61002";
/// Tag of an answer to a method the simulator does not know.
pub const TAG_UNKNOWN_METHOD: &str = "Err:Sim60404";
/// Tag of an answer to a frame that is not a request.
pub const TAG_BAD_FRAME: &str = "Err:Sim60400";
/// Tag of a Verify whose signature does not hold.
pub const TAG_VERIFY_FAILED: &str = "Err:Sim62001";
/// Tag of a Verify whose `certDataPEM` cannot be used.
pub const TAG_BAD_CERT: &str = "Err:Sim62002";
/// Tag of a signing failure inside the software card (not expected to happen).
pub const TAG_CARD_ERROR: &str = "Err:Sim69999";

/// The reader errors seen in the wild, word for word.
const READER_50070: (&str, &str) = ("[读卡器底层库]复位读卡器失败:错误码=50070", "Err:Custom50070");
const READER_50200: (&str, &str) = ("打开读卡器失败：错误码=50200", "Err:Custom50200");

/// Beijing time, which the Windows machines running the real control use.
const CHINA_OFFSET: Duration = Duration::from_secs(8 * 3_600);

/// Faults to inject. Counts are of upcoming calls and go down by one each time the fault
/// fires; a count of 0 means the fault is off.
///
/// When several are set, a request meets them in this order: `drop`, `hang` (any request),
/// then for a Sign call that passed the argument check: `reader_error_50070`,
/// `reader_error_50200`, `latency_ms`, `wrong_pin`, then (the PIN checked) `bad_signature`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// Delay in ms before each Sign call that reaches the card is answered (reader errors
    /// are answered at once). The card is one serial device: concurrent calls wait in turn.
    pub latency_ms: u64,
    /// Upcoming Sign calls answered `["[读卡器底层库]复位读卡器失败:错误码=50070","Err:Custom50070"]`.
    pub reader_error_50070: u64,
    /// Upcoming Sign calls answered `["打开读卡器失败：错误码=50200","Err:Custom50200"]`.
    pub reader_error_50200: u64,
    /// Upcoming Sign calls answered with the wrong-PIN failure whatever the PIN; these do not
    /// count towards locking the card.
    pub wrong_pin: u64,
    /// Upcoming requests (any frame) on which the connection is closed without an answer.
    pub drop: u64,
    /// Upcoming requests (any frame) that are never answered; the connection stays open.
    pub hang: u64,
    /// Upcoming Sign calls with the right PIN answered `Result: true` with a signature of
    /// other bytes: one that does not verify, as a failing card or control might give.
    #[serde(default)]
    pub bad_signature: u64,
}

/// A change to [`Faults`]: the fields given replace the current values, the others stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_error_50070: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_error_50200: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrong_pin: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_signature: Option<u64>,
}

impl Faults {
    pub fn apply(&mut self, update: &FaultsUpdate) {
        let fields = [
            (&mut self.latency_ms, update.latency_ms),
            (&mut self.reader_error_50070, update.reader_error_50070),
            (&mut self.reader_error_50200, update.reader_error_50200),
            (&mut self.wrong_pin, update.wrong_pin),
            (&mut self.drop, update.drop),
            (&mut self.hang, update.hang),
            (&mut self.bad_signature, update.bad_signature),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                *field = value;
            }
        }
    }
}

/// What the simulator has seen since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// WebSocket connections accepted.
    pub connections: u64,
    /// Frames received (text or binary, parseable or not; pings and closes excluded).
    pub requests: u64,
    /// Sign requests received, whatever became of them (dropped and hung ones excluded).
    pub sign_requests: u64,
    /// Signatures handed out.
    pub signatures: u64,
    /// Sign calls answered with the wrong-PIN failure, forced ones included.
    pub wrong_pins: u64,
    /// Whether wrong PINs have locked the card (until the simulator restarts).
    pub locked: bool,
    /// How long the card has been busy with Sign calls (latency and signing), in
    /// microseconds: what a benchmark compares with wall time.
    pub busy_micros: u64,
    /// Requests whose `_id` was already used on the same connection: a client
    /// that reuses ids could take a late answer for another request's.
    #[serde(default)]
    pub reused_ids: u64,
}

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct EportSimOptions {
    /// The WebSocket address; port 0 picks a free port (see [`RunningEportSim::ws_addr`]).
    pub listen: SocketAddr,
    pub algo: Algo,
    /// The card's PIN.
    pub pin: String,
    /// Where the card's key and certificate are kept (made on first start).
    pub state_dir: PathBuf,
    /// The HTTP control endpoint's address, if wanted; port 0 picks a free port.
    pub control: Option<SocketAddr>,
    /// Faults in force from the start.
    pub faults: Faults,
    /// The certificate's validity; a stored card whose certificate says otherwise is
    /// renewed. None: ten years from when the card is made.
    pub cert_validity: Option<CertValidity>,
}

impl EportSimOptions {
    /// Options without a control endpoint or faults.
    pub fn new(
        listen: SocketAddr,
        algo: Algo,
        pin: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        EportSimOptions {
            listen,
            algo,
            pin: pin.into(),
            state_dir: state_dir.into(),
            control: None,
            faults: Faults::default(),
            cert_validity: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("the simulated card's certificate is unusable: {0}")]
    Certificate(String),
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the key task failed: {0}")]
    Task(String),
}

/// A started simulator. Dropping it stops it too, without waiting.
pub struct RunningEportSim {
    ws_addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    background: Background,
}

impl RunningEportSim {
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// `ws://ADDR/`, what a client is configured with.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.ws_addr)
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    pub fn cert_no(&self) -> &CertNo {
        self.shared.keys.cert_no()
    }

    pub fn keys(&self) -> &CardKeys {
        &self.shared.keys
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Changes faults as `POST /faults` does and returns the faults now in force.
    pub fn update_faults(&self, update: &FaultsUpdate) -> Faults {
        self.shared.update_faults(update)
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops accepting, closes every connection and the control endpoint, and waits for them.
    pub async fn stop(self) {
        self.background.stop().await;
    }
}

/// Loads (or makes) the card, binds both listeners and serves in the background.
pub async fn start(options: EportSimOptions) -> Result<RunningEportSim, SimError> {
    let EportSimOptions { listen, algo, pin, state_dir, control, faults, cert_validity } = options;
    // RSA key generation takes a while: off the async threads.
    let dir = state_dir.clone();
    let keys = tokio::task::spawn_blocking(move || CardKeys::load_or_create(&dir, algo, cert_validity))
        .await
        .map_err(|e| SimError::Task(e.to_string()))??;
    let verifier =
        SignatureVerifier::from_bytes(keys.cert_der()).map_err(|e| SimError::Certificate(e.to_string()))?;

    let (listener, ws_addr) = server::bind(listen).await.map_err(|source| SimError::Bind {
        what: "WebSocket",
        addr: listen,
        source,
    })?;
    let control_listener = match control {
        Some(addr) => Some(server::bind(addr).await.map_err(|source| SimError::Bind {
            what: "control endpoint",
            addr,
            source,
        })?),
        None => None,
    };

    let shared = Arc::new(Shared {
        keys,
        verifier,
        pin,
        faults: Mutex::new(faults.clone()),
        card: tokio::sync::Mutex::new(CardState { wrong_tries: 0 }),
        counters: Counters::default(),
    });
    let (mut background, stop_rx) = Background::new();
    let on_connection = shared.clone();
    background.spawn(server::accept_loop(listener, stop_rx.clone(), move |stream, peer, stop| {
        serve_connection(stream, peer, on_connection.clone(), stop)
    }));
    let control_addr = control_listener.as_ref().map(|(_, addr)| *addr);
    if let Some((listener, _)) = control_listener {
        background.spawn(serve_control(listener, shared.clone(), stop_rx));
    }

    tracing::info!(
        url = %format!("ws://{ws_addr}/"),
        control = %control_addr.map_or_else(|| "none".to_owned(), |addr| format!("http://{addr}/")),
        %algo,
        cert_no = %shared.keys.cert_no(),
        state_dir = %state_dir.display(),
        ?faults,
        "EportClient simulator listening"
    );
    Ok(RunningEportSim { ws_addr, control_addr, shared, background })
}

/// Serves until `until` completes, then stops cleanly.
pub async fn run_until(options: EportSimOptions, until: impl Future<Output = ()>) -> Result<(), SimError> {
    server::run_until(start(options), until, "EportClient simulator", RunningEportSim::stop).await
}

/// Serves until Ctrl-C (or SIGTERM), on a runtime of its own: for synchronous callers such as
/// the command line. Must not be called from inside an async runtime.
pub fn run(options: EportSimOptions) -> Result<(), SimError> {
    server::block_on(run_until(options, server::stop_signal()), SimError::Runtime)
}

struct Shared {
    keys: CardKeys,
    /// Verify without `certDataPEM` checks against the card's own certificate.
    verifier: SignatureVerifier,
    pin: String,
    faults: Mutex<Faults>,
    /// The card is one serial device: holding this lock is using the reader.
    card: tokio::sync::Mutex<CardState>,
    counters: Counters,
}

struct CardState {
    /// Wrong PINs in a row; a right PIN resets it, as on ISO 7816 cards.
    wrong_tries: u32,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    sign_requests: AtomicU64,
    signatures: AtomicU64,
    wrong_pins: AtomicU64,
    locked: AtomicBool,
    busy_micros: AtomicU64,
    reused_ids: AtomicU64,
}

/// Adds the time the card was held to the busy counter when dropped.
struct Busy<'a> {
    since: std::time::Instant,
    micros: &'a AtomicU64,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let micros = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Which one-shot fault to consume.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Drop,
    Hang,
    Reader50070,
    Reader50200,
    WrongPin,
    BadSignature,
}

impl Shared {
    fn lock_faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        // Faults are plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> Faults {
        self.lock_faults().clone()
    }

    fn update_faults(&self, update: &FaultsUpdate) -> Faults {
        let mut faults = self.lock_faults();
        faults.apply(update);
        tracing::info!(faults = ?*faults, "faults changed");
        faults.clone()
    }

    /// Consumes one occurrence of the fault; true when it fires.
    fn take(&self, fault: Fault) -> bool {
        let mut faults = self.lock_faults();
        let count = match fault {
            Fault::Drop => &mut faults.drop,
            Fault::Hang => &mut faults.hang,
            Fault::Reader50070 => &mut faults.reader_error_50070,
            Fault::Reader50200 => &mut faults.reader_error_50200,
            Fault::WrongPin => &mut faults.wrong_pin,
            Fault::BadSignature => &mut faults.bad_signature,
        };
        if *count == 0 {
            return false;
        }
        *count -= 1;
        tracing::info!(?fault, left = *count, "fault fired");
        true
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            sign_requests: c.sign_requests.load(Ordering::Relaxed),
            signatures: c.signatures.load(Ordering::Relaxed),
            wrong_pins: c.wrong_pins.load(Ordering::Relaxed),
            locked: c.locked.load(Ordering::Relaxed),
            busy_micros: c.busy_micros.load(Ordering::Relaxed),
            reused_ids: c.reused_ids.load(Ordering::Relaxed),
        }
    }

    async fn answer(&self, text: &str) -> Reply {
        let request: RequestFrame = match serde_json::from_str(text) {
            Ok(request) => request,
            Err(e) => return malformed(text, &e.to_string()),
        };
        tracing::debug!(id = request.id, method = %request.method, "request");
        let outcome = match Method::from_name(&request.method) {
            Some(Method::Sign) => self.sign(&request).await,
            Some(Method::GetCertNo) => Outcome::ok(vec![self.keys.cert_no().to_string()]),
            Some(Method::GetSignCert) => Outcome::ok(vec![self.keys.cert_base64()]),
            Some(Method::GetValidTime) => {
                let (from, to) = self.keys.validity();
                Outcome::ok(vec![china_time(from), china_time(to)])
            }
            Some(Method::Verify) => self.verify(&request),
            None => Outcome::failed(&format!("[sim] 不支持的方法: {}", request.method), TAG_UNKNOWN_METHOD),
        };
        Reply::to(&request, outcome)
    }

    async fn sign(&self, request: &RequestFrame) -> Outcome {
        bump(&self.counters.sign_requests);
        let in_data = match required(request, "inData") {
            Ok(value) => value,
            Err(outcome) => return outcome,
        };
        let passwd = match required(request, "passwd") {
            Ok(value) => value,
            Err(outcome) => return outcome,
        };
        if self.take(Fault::Reader50070) {
            return Outcome::failed(READER_50070.0, READER_50070.1);
        }
        if self.take(Fault::Reader50200) {
            return Outcome::failed(READER_50200.0, READER_50200.1);
        }

        let mut card = self.card.lock().await;
        let _busy = Busy { since: std::time::Instant::now(), micros: &self.counters.busy_micros };
        let latency = self.lock_faults().latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if self.take(Fault::WrongPin) {
            bump(&self.counters.wrong_pins);
            return wrong_pin(MAX_WRONG_PINS.saturating_sub(card.wrong_tries));
        }
        if card.wrong_tries >= MAX_WRONG_PINS {
            return Outcome::failed(
                &format!("[sim] 卡已锁定: 口令连续错误 {MAX_WRONG_PINS} 次, 重启模拟器解锁"),
                TAG_LOCKED,
            );
        }
        if passwd != self.pin {
            card.wrong_tries += 1;
            bump(&self.counters.wrong_pins);
            let left = MAX_WRONG_PINS.saturating_sub(card.wrong_tries);
            if left == 0 {
                self.counters.locked.store(true, Ordering::Relaxed);
                tracing::warn!("wrong PIN {MAX_WRONG_PINS} times in a row: the simulated card is locked");
            } else {
                tracing::warn!(left, "wrong PIN");
            }
            return wrong_pin(left);
        }
        card.wrong_tries = 0;
        let signed: &[u8] = if self.take(Fault::BadSignature) { b"other bytes" } else { in_data.as_bytes() };
        match self.keys.sign(signed) {
            Ok(signature) => {
                bump(&self.counters.signatures);
                Outcome::ok(vec![signature, self.keys.cert_no().to_string()])
            }
            Err(e) => Outcome::failed(&format!("[sim] 签名失败: {e}"), TAG_CARD_ERROR),
        }
    }

    fn verify(&self, request: &RequestFrame) -> Outcome {
        let in_data = match required(request, "inData") {
            Ok(value) => value,
            Err(outcome) => return outcome,
        };
        let sign_data = match required(request, "signData") {
            Ok(value) => value,
            Err(outcome) => return outcome,
        };
        let other;
        let verifier = match request.arg("certDataPEM").filter(|cert| !cert.trim().is_empty()) {
            Some(cert) => match SignatureVerifier::from_bytes(cert.as_bytes()) {
                Ok(verifier) => {
                    other = verifier;
                    &other
                }
                Err(e) => return Outcome::failed(&format!("[sim] 证书无法使用: {e}"), TAG_BAD_CERT),
            },
            None => &self.verifier,
        };
        match verifier.verify(in_data.as_bytes(), sign_data) {
            Ok(()) => Outcome::ok(Vec::new()),
            Err(e) => Outcome::failed(&format!("[sim] 验签失败: {e}"), TAG_VERIFY_FAILED),
        }
    }
}

/// A required string argument, or the real control's Base50000 answer naming it.
fn required<'a>(request: &'a RequestFrame, name: &str) -> Result<&'a str, Outcome> {
    request.arg(name).filter(|value| !value.trim().is_empty()).ok_or_else(|| {
        Outcome::failed(&format!("参数检查失败,传入的args中必须包含必要的非空白参数:{name}"), "Err:Base50000")
    })
}

fn wrong_pin(left: u32) -> Outcome {
    Outcome::failed(&format!("[sim] 口令错误, 剩余尝试次数 {left}"), TAG_WRONG_PIN)
}

/// The answer to a frame that is not a request: echoes `_id` and `_method` when they can be
/// read, so a client matching on `_id` still finds its answer.
fn malformed(text: &str, reason: &str) -> Reply {
    let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let field = |name: &str| value.as_ref().and_then(|v| v.get(name));
    Reply {
        id: field("_id").and_then(serde_json::Value::as_u64),
        method: field("_method").and_then(serde_json::Value::as_str).map(str::to_owned),
        status: Some("00".to_owned()),
        args: Some(Outcome::failed(&format!("[sim] 请求帧无法解析: {reason}"), TAG_BAD_FRAME)),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time. The real control's format is unpublished; this is a
/// guess shaped like the dates EportClient shows elsewhere.
fn china_time(unix_seconds: i64) -> String {
    let seconds = u64::try_from(unix_seconds).unwrap_or(0);
    match DateTime::from_unix_duration(Duration::from_secs(seconds) + CHINA_OFFSET) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minutes(),
            t.seconds()
        ),
        Err(_) => unix_seconds.to_string(),
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tokio::select! {
        _ = stopped(&mut stop) => return,
        handshake = tokio_tungstenite::accept_async(stream) => handshake,
    };
    let mut ws = match handshake {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "WebSocket handshake failed");
            return;
        }
    };
    bump(&shared.counters.connections);
    tracing::debug!(%peer, "connection opened");
    if send(&mut ws, &Reply::greeting()).await.is_err() {
        return;
    }
    let mut ids_seen = std::collections::HashSet::new();
    loop {
        let message = tokio::select! {
            _ = stopped(&mut stop) => break,
            message = ws.next() => message,
        };
        let text = match message {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection failed");
                break;
            }
            Some(Ok(Message::Text(text))) => Some(text),
            Some(Ok(Message::Binary(_))) => None,
            // Pings are answered and closes completed by tungstenite itself.
            Some(Ok(_)) => continue,
        };
        bump(&shared.counters.requests);
        let id =
            text.as_deref().and_then(|text| serde_json::from_str::<RequestFrame>(text).ok()).map(|r| r.id);
        if let Some(id) = id
            && !ids_seen.insert(id)
        {
            bump(&shared.counters.reused_ids);
        }
        if shared.take(Fault::Drop) {
            tracing::info!(%peer, "fault: closing the connection without answering");
            // Dropping the stream closes the socket with no close frame, like a crashed control.
            return;
        }
        if shared.take(Fault::Hang) {
            tracing::info!(%peer, "fault: leaving a request unanswered");
            continue;
        }
        let reply = match text {
            Some(text) => tokio::select! {
                _ = stopped(&mut stop) => break,
                reply = shared.answer(text.as_str()) => reply,
            },
            None => malformed("", "binary frames are not requests"),
        };
        if send(&mut ws, &reply).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
    tracing::debug!(%peer, "connection closed");
}

async fn send(ws: &mut WebSocketStream<TcpStream>, reply: &Reply) -> Result<(), ()> {
    let text =
        serde_json::to_string(reply).map_err(|e| tracing::warn!(error = %e, "cannot encode a reply"))?;
    ws.send(Message::text(text)).await.map_err(|e| tracing::debug!(error = %e, "cannot send a reply"))
}

async fn serve_control(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let router = Router::new()
        .route("/faults", get(get_faults).post(post_faults))
        .route("/stats", get(get_stats))
        .with_state(shared);
    let served =
        axum::serve(listener, router).with_graceful_shutdown(async move { stopped(&mut stop).await }).await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the control endpoint failed");
    }
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.faults())
}

async fn post_faults(State(shared): State<Arc<Shared>>, Json(update): Json<FaultsUpdate>) -> Json<Faults> {
    Json(shared.update_faults(&update))
}

async fn get_stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_replace_only_the_fields_given() {
        let mut faults = Faults { latency_ms: 5, drop: 2, ..Faults::default() };
        let update: FaultsUpdate = serde_json::from_str(r#"{"drop":0,"reader_error_50070":3}"#).unwrap();
        faults.apply(&update);
        assert_eq!(faults, Faults { latency_ms: 5, reader_error_50070: 3, ..Faults::default() });
        assert!(serde_json::from_str::<FaultsUpdate>(r#"{"dorp":1}"#).is_err(), "typos are refused");
    }

    #[test]
    fn valid_times_are_beijing_time() {
        assert_eq!(china_time(1_795_924_800), "2026-11-29 12:00:00");
        assert_eq!(china_time(-1), "1970-01-01 08:00:00");
    }

    #[test]
    fn malformed_frames_keep_what_can_be_read() {
        let reply = malformed(r#"{"_id":4,"_method":"m","args":[]}"#, "args");
        assert_eq!((reply.id, reply.method.as_deref()), (Some(4), Some("m")));
        assert_eq!(reply.args.as_ref().and_then(Outcome::error_tag), Some(TAG_BAD_FRAME));
        assert_eq!(malformed("nonsense", "x").id, None);
    }
}
