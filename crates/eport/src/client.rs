//! [`SignerClient`]: one long-lived connection to EportClient, one request
//! in flight, a timeout per request, reconnection with backoff, and the
//! card's certificate fetched after every connect so that each signature is
//! verified locally before anyone relies on it.

use std::time::Duration;

use customs179_core::{CertNo, SignatureVerifier};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::frames::{FailureClass, Method, Outcome, Reply, RequestFrame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Reconnection backoff: doubles from the first delay up to the cap.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum SignerError {
    /// The control cannot be reached, or failed before anything carrying the
    /// PIN was sent: try again later.
    #[error("the signer is unavailable: {0}")]
    Unavailable(String),
    /// A Sign was sent (or may have been) and no readable answer came: a
    /// timeout, a closed connection, an unreadable reply. The card may have
    /// checked the PIN.
    #[error("the Sign got no answer (the card may have checked the PIN): {0}")]
    NoAnswer(String),
    /// The control answered with a failure; `class` says what to do.
    #[error("the control answered a failure: {message}")]
    Failed { class: FailureClass, message: String },
    /// The card's own certificate and certNo disagree, or it cannot be read:
    /// signing with it would be worthless.
    #[error("the card's certificate is unusable: {0}")]
    Certificate(String),
    /// The card answered `Result: true` with something unusable: no
    /// signature, another certNo, or a signature that does not verify
    /// against the card's certificate. The item must not be uploaded.
    #[error("the card's signature is unusable: {0}")]
    BadSignature(String),
}

impl SignerError {
    /// What went wrong, as a code operators find requests by (the `code` of
    /// `GET /api/requests`; OPERATIONS.md lists them).
    pub fn code(&self) -> &'static str {
        match self {
            SignerError::Unavailable(_) => "signer_unavailable",
            SignerError::NoAnswer(_) => "signer_no_answer",
            SignerError::Failed { class: FailureClass::ReaderUnwell, .. } => "reader_unwell",
            SignerError::Failed { class: FailureClass::BadArguments, .. } => "item_refused",
            SignerError::Failed { class: FailureClass::Refused, .. } => "card_refused",
            SignerError::Certificate(_) => "certificate",
            SignerError::BadSignature(_) => "bad_signature",
        }
    }
}

/// The card as last seen after a connect.
#[derive(Debug, Clone)]
pub struct CardIdentity {
    pub cert_no: CertNo,
    /// The one-line base64 DER certificate as the card gave it.
    pub certificate: String,
    pub verifier: SignatureVerifier,
}

/// A signature made by the card and verified locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSignature {
    pub sign_value: String,
    pub cert_no: String,
}

struct Connection {
    socket: Socket,
    identity: CardIdentity,
    /// `_id`s count up per connection and are never reused on it, so a late
    /// answer can never be taken for another request's.
    next_id: u64,
}

impl Connection {
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

struct State {
    connection: Option<Connection>,
    failures: u32,
    retry_at: Option<Instant>,
    /// The card (certNo) on which the PIN is proven: a signature made with
    /// it verified. Memory only, for the life of this client: no PIN or hash
    /// of it is kept anywhere.
    proven_on: Option<CertNo>,
}

/// A client of the EportClient WebSocket. Cheap to share behind an `Arc`;
/// calls are serialised: the card is one serial device.
pub struct SignerClient {
    url: String,
    timeout: Duration,
    state: Mutex<State>,
}

/// The card, connected and held for one Sign: nothing else reaches it
/// until the session ends. Lets the caller see, before anything carrying
/// the PIN is sent, whether the PIN is proven on this card (and so commit
/// a "PIN in flight" mark first when it is not).
pub struct CardSession<'a> {
    client: &'a SignerClient,
    state: MutexGuard<'a, State>,
}

impl CardSession<'_> {
    /// The connected card.
    pub fn identity(&self) -> Option<&CardIdentity> {
        self.state.connection.as_ref().map(|c| &c.identity)
    }

    /// Whether a signature made with the PIN has verified on this very card.
    pub fn pin_proven(&self) -> bool {
        let cert_no = self.identity().map(|identity| &identity.cert_no);
        cert_no.is_some() && self.state.proven_on.as_ref() == cert_no
    }

    /// Signs exactly `text` with the card and verifies the signature against
    /// the card's certificate before returning it. A verified signature
    /// proves the PIN on this card; a refusal ends the proof.
    pub async fn sign(mut self, text: &str, pin: &str) -> Result<CardSignature, SignerError> {
        let mut args = Map::new();
        args.insert("inData".into(), Value::String(text.to_owned()));
        args.insert("passwd".into(), Value::String(pin.to_owned()));
        let state = &mut *self.state;
        let Some(connection) = state.connection.as_mut() else {
            return Err(SignerError::Unavailable("not connected".into()));
        };
        let identity = connection.identity.clone();
        let request = RequestFrame::new(Method::Sign, connection.next_id(), args);
        let outcome = match exchange(&mut connection.socket, &request, self.client.timeout).await {
            Ok(outcome) => outcome,
            Err(reason) => {
                self.client.lost(state, &reason);
                return Err(SignerError::NoAnswer(reason));
            }
        };
        if !outcome.result {
            let class = outcome.failure_class();
            if class == FailureClass::Refused {
                state.proven_on = None;
            }
            return Err(SignerError::Failed { class, message: outcome.error_text() });
        }
        let sign_value = outcome
            .data_str(0)
            .ok_or_else(|| SignerError::BadSignature("the answer holds no signature".into()))?
            .to_owned();
        let cert_no = outcome.data_str(1).unwrap_or(identity.cert_no.as_str()).to_owned();
        if cert_no != identity.cert_no.as_str() {
            return Err(SignerError::BadSignature(format!(
                "the signature names certNo {cert_no}, the card's certificate is {}",
                identity.cert_no
            )));
        }
        identity
            .verifier
            .verify(text.as_bytes(), &sign_value)
            .map_err(|e| SignerError::BadSignature(format!("it does not verify: {e}")))?;
        state.proven_on = Some(identity.cert_no);
        Ok(CardSignature { sign_value, cert_no })
    }
}

impl SignerClient {
    pub fn new(url: impl Into<String>, timeout: Duration) -> SignerClient {
        SignerClient {
            url: url.into(),
            timeout,
            state: Mutex::new(State { connection: None, failures: 0, retry_at: None, proven_on: None }),
        }
    }

    /// Connects (with backoff after failures) and holds the card for one
    /// Sign. Nothing carrying the PIN has been sent when this fails.
    pub async fn session(&self) -> Result<CardSession<'_>, SignerError> {
        let mut state = self.state.lock().await;
        self.connected(&mut state).await?;
        Ok(CardSession { client: self, state })
    }

    /// One Sign in its own session, for callers that keep no "PIN in
    /// flight" mark (tests, benchmarks).
    pub async fn sign(&self, text: &str, pin: &str) -> Result<CardSignature, SignerError> {
        self.session().await?.sign(text, pin).await
    }

    /// The card's identity, connecting first if needed.
    pub async fn identity(&self) -> Result<CardIdentity, SignerError> {
        let mut state = self.state.lock().await;
        self.connected(&mut state).await.map(|c| c.identity.clone())
    }

    /// One call of a method that carries no PIN, for tools (the doctor, the
    /// validity check).
    pub async fn call(&self, method: Method, args: Map<String, Value>) -> Result<Outcome, SignerError> {
        let mut state = self.state.lock().await;
        let connection = self.connected(&mut state).await?;
        let request = RequestFrame::new(method, connection.next_id(), args);
        match exchange(&mut connection.socket, &request, self.timeout).await {
            Ok(outcome) if outcome.result => Ok(outcome),
            Ok(outcome) => {
                Err(SignerError::Failed { class: outcome.failure_class(), message: outcome.error_text() })
            }
            Err(reason) => {
                self.lost(&mut state, &reason);
                Err(SignerError::Unavailable(reason))
            }
        }
    }

    /// The live connection, made (with backoff after failures) if needed.
    /// A card with another certNo than the one the PIN was proven on makes
    /// the PIN unproven again.
    async fn connected<'s>(&self, state: &'s mut State) -> Result<&'s mut Connection, SignerError> {
        if state.connection.is_none() {
            if let Some(at) = state.retry_at {
                tokio::time::sleep_until(at).await;
            }
            match self.connect().await {
                Ok(connection) => {
                    tracing::info!(url = self.url, cert_no = %connection.identity.cert_no, "signer: connected");
                    if state.proven_on.as_ref().is_some_and(|proven| *proven != connection.identity.cert_no) {
                        tracing::warn!(
                            cert_no = %connection.identity.cert_no,
                            "signer: another card answers; its PIN is unproven"
                        );
                        state.proven_on = None;
                    }
                    state.connection = Some(connection);
                    state.failures = 0;
                    state.retry_at = None;
                }
                Err(e) => {
                    self.lost(state, &e.to_string());
                    return Err(e);
                }
            }
        }
        state.connection.as_mut().ok_or_else(|| SignerError::Unavailable("not connected".into()))
    }

    /// After a timeout, a close or garbage the connection's state is unknown
    /// (a late answer could match a later request): start over.
    fn lost(&self, state: &mut State, reason: &str) {
        state.connection = None;
        state.failures = state.failures.saturating_add(1);
        let delay = FIRST_RETRY.saturating_mul(1 << state.failures.min(10).saturating_sub(1)).min(MAX_RETRY);
        state.retry_at = Some(Instant::now() + delay);
        tracing::warn!(
            url = self.url,
            error = reason,
            retry_in_ms = delay.as_millis(),
            "signer: connection lost"
        );
    }

    /// Connects and reads the card's certificate and certNo.
    async fn connect(&self) -> Result<Connection, SignerError> {
        let (socket, _) = tokio::time::timeout(self.timeout, connect_async(self.url.as_str()))
            .await
            .map_err(|_| {
                SignerError::Unavailable(format!("no connection within {} ms", self.timeout.as_millis()))
            })?
            .map_err(|e| SignerError::Unavailable(format!("cannot connect: {e}")))?;
        let (mut socket, mut next_id) = (socket, 1);
        let timeout = self.timeout;
        let mut ask = async |method: Method| {
            let request = RequestFrame::new(method, next_id, Map::new());
            next_id += 1;
            match exchange(&mut socket, &request, timeout).await.map_err(SignerError::Unavailable)? {
                outcome if outcome.result => Ok(outcome),
                outcome => {
                    Err(SignerError::Failed { class: outcome.failure_class(), message: outcome.error_text() })
                }
            }
        };
        let certificate = ask(Method::GetSignCert).await?;
        let card_cert_no = ask(Method::GetCertNo).await?;
        let certificate = certificate
            .data_str(0)
            .ok_or_else(|| SignerError::Certificate("the card gave no certificate".into()))?
            .trim()
            .to_owned();
        let verifier = SignatureVerifier::from_bytes(certificate.as_bytes())
            .map_err(|e| SignerError::Certificate(e.to_string()))?;
        let serial = verifier
            .cert_no()
            .cloned()
            .ok_or_else(|| SignerError::Certificate("the card's certificate has no serial".into()))?;
        match card_cert_no.data_str(0) {
            Some(cert_no) if cert_no == serial.as_str() => {}
            other => {
                return Err(SignerError::Certificate(format!(
                    "the card reports certNo {}, its certificate's serial is {serial}",
                    other.unwrap_or("(none)")
                )));
            }
        }
        Ok(Connection { socket, identity: CardIdentity { cert_no: serial, certificate, verifier }, next_id })
    }
}

/// Sends one request and reads frames until its answer: the greeting and
/// answers to other requests (another `_id` or `_method`) are skipped; a bare
/// answer (no `_id`) is taken as the answer to the one request in flight.
/// Any failure (a send that failed, a close, an unreadable frame, no answer
/// in time) is returned as its reason: what became of the request is unknown.
async fn exchange(socket: &mut Socket, request: &RequestFrame, timeout: Duration) -> Result<Outcome, String> {
    let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
    // The frame itself is never logged: a Sign carries the PIN.
    tracing::debug!(id = request.id, method = request.method, bytes = text.len(), "signer: request sent");
    let work = async {
        socket.send(Message::text(text)).await.map_err(|e| format!("cannot send: {e}"))?;
        loop {
            let frame = match socket.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(format!("connection failed: {e}")),
                None => return Err("the connection was closed".to_owned()),
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Close(_) => return Err("the control closed the connection".to_owned()),
                // Pings are answered by tungstenite itself.
                _ => continue,
            };
            let reply = Reply::parse(text.as_str())
                .ok_or_else(|| "the control sent a frame that is not a reply".to_owned())?;
            if !reply.answers(request) {
                tracing::debug!(id = ?reply.id, method = ?reply.method, "signer: a frame for another request skipped");
                continue;
            }
            tracing::debug!(id = request.id, "signer: answer received");
            return reply.args.ok_or_else(|| "the control's reply holds no result".to_owned());
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}
