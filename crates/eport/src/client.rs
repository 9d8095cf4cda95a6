//! [`SignerClient`]: one long-lived connection to EportClient, one request
//! in flight, a timeout per request, reconnection with backoff, and the
//! card's certificate fetched after every connect so that each signature is
//! verified locally before anyone relies on it.

use std::time::Duration;

use customs179_core::{CertNo, SignatureVerifier};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
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
    /// The control cannot be reached or did not answer: try again later.
    #[error("the signer is unavailable: {0}")]
    Unavailable(String),
    /// The control answered with a failure; `class` says what to do.
    #[error("the control answered a failure: {message}")]
    Failed { class: FailureClass, message: String },
    /// The card's own certificate and certNo disagree, or it cannot be read:
    /// signing with it would be worthless.
    #[error("the card's certificate is unusable: {0}")]
    Certificate(String),
    /// A signature came back that does not verify against the card's
    /// certificate: the item must not be uploaded.
    #[error("the card's signature does not verify: {0}")]
    BadSignature(String),
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
}

struct State {
    connection: Option<Connection>,
    next_id: u64,
    failures: u32,
    retry_at: Option<Instant>,
}

/// A client of the EportClient WebSocket. Cheap to share behind an `Arc`;
/// calls are serialised: the card is one serial device.
pub struct SignerClient {
    url: String,
    timeout: Duration,
    state: Mutex<State>,
}

impl SignerClient {
    pub fn new(url: impl Into<String>, timeout: Duration) -> SignerClient {
        SignerClient {
            url: url.into(),
            timeout,
            state: Mutex::new(State { connection: None, next_id: 1, failures: 0, retry_at: None }),
        }
    }

    /// Signs exactly `text` with the card and verifies the signature against
    /// the card's certificate before returning it.
    pub async fn sign(&self, text: &str, pin: &str) -> Result<CardSignature, SignerError> {
        let mut args = Map::new();
        args.insert("inData".into(), Value::String(text.to_owned()));
        args.insert("passwd".into(), Value::String(pin.to_owned()));
        let mut state = self.state.lock().await;
        let outcome = self.call_locked(&mut state, Method::Sign, args).await?;
        let identity = state.connection.as_ref().map(|c| c.identity.clone());
        drop(state);
        let Some(identity) = identity else {
            return Err(SignerError::Unavailable("the connection closed while signing".into()));
        };
        let sign_value = outcome
            .data_str(0)
            .ok_or_else(|| SignerError::BadSignature("the answer holds no signature".into()))?
            .to_owned();
        let cert_no = outcome.data_str(1).unwrap_or(identity.cert_no.as_str()).to_owned();
        if cert_no != identity.cert_no.as_str() {
            return Err(SignerError::Certificate(format!(
                "the signature names certNo {cert_no}, the card's certificate is {}",
                identity.cert_no
            )));
        }
        identity
            .verifier
            .verify(text.as_bytes(), &sign_value)
            .map_err(|e| SignerError::BadSignature(e.to_string()))?;
        Ok(CardSignature { sign_value, cert_no })
    }

    /// The card's identity, connecting first if needed.
    pub async fn identity(&self) -> Result<CardIdentity, SignerError> {
        let mut state = self.state.lock().await;
        self.connected(&mut state).await.map(|c| c.identity.clone())
    }

    /// One call of any method, for tools (the doctor, the validity check).
    pub async fn call(&self, method: Method, args: Map<String, Value>) -> Result<Outcome, SignerError> {
        let mut state = self.state.lock().await;
        self.call_locked(&mut state, method, args).await
    }

    async fn call_locked(
        &self,
        state: &mut State,
        method: Method,
        args: Map<String, Value>,
    ) -> Result<Outcome, SignerError> {
        self.connected(state).await?;
        let id = state.next_id;
        state.next_id += 1;
        let Some(connection) = state.connection.as_mut() else {
            return Err(SignerError::Unavailable("not connected".into()));
        };
        match exchange(&mut connection.socket, &RequestFrame::new(method, id, args), self.timeout).await {
            Ok(outcome) if outcome.result => Ok(outcome),
            Ok(outcome) => {
                Err(SignerError::Failed { class: outcome.failure_class(), message: outcome.error_text() })
            }
            Err(e) => {
                // After a timeout, a close or garbage the connection's state is
                // unknown (a late answer could match a later request): start over.
                self.lost(state, &e);
                Err(e)
            }
        }
    }

    /// The live connection, made (with backoff after failures) if needed.
    async fn connected<'s>(&self, state: &'s mut State) -> Result<&'s mut Connection, SignerError> {
        if state.connection.is_none() {
            if let Some(at) = state.retry_at {
                tokio::time::sleep_until(at).await;
            }
            match self.connect().await {
                Ok(connection) => {
                    tracing::info!(url = self.url, cert_no = %connection.identity.cert_no, "signer: connected");
                    state.connection = Some(connection);
                    state.failures = 0;
                    state.retry_at = None;
                }
                Err(e) => {
                    self.lost(state, &e);
                    return Err(e);
                }
            }
        }
        state.connection.as_mut().ok_or_else(|| SignerError::Unavailable("not connected".into()))
    }

    fn lost(&self, state: &mut State, error: &SignerError) {
        state.connection = None;
        state.failures = state.failures.saturating_add(1);
        let delay = FIRST_RETRY.saturating_mul(1 << state.failures.min(10).saturating_sub(1)).min(MAX_RETRY);
        state.retry_at = Some(Instant::now() + delay);
        tracing::warn!(url = self.url, error = %error, retry_in_ms = delay.as_millis(), "signer: connection lost");
    }

    /// Connects and reads the card's certificate and certNo.
    async fn connect(&self) -> Result<Connection, SignerError> {
        let (mut socket, _) = tokio::time::timeout(self.timeout, connect_async(self.url.as_str()))
            .await
            .map_err(|_| {
                SignerError::Unavailable(format!("no connection within {} ms", self.timeout.as_millis()))
            })?
            .map_err(|e| SignerError::Unavailable(format!("cannot connect: {e}")))?;
        let mut ask = async |id: u64, method: Method| match exchange(
            &mut socket,
            &RequestFrame::new(method, id, Map::new()),
            self.timeout,
        )
        .await?
        {
            outcome if outcome.result => Ok(outcome),
            outcome => {
                Err(SignerError::Failed { class: outcome.failure_class(), message: outcome.error_text() })
            }
        };
        let certificate = ask(1, Method::GetSignCert).await?;
        let card_cert_no = ask(2, Method::GetCertNo).await?;
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
        Ok(Connection { socket, identity: CardIdentity { cert_no: serial, certificate, verifier } })
    }
}

/// Sends one request and reads frames until its answer: the greeting and
/// answers to other ids are skipped; a bare answer (no `_id`) is taken as
/// the answer to the one request in flight.
async fn exchange(
    socket: &mut Socket,
    request: &RequestFrame,
    timeout: Duration,
) -> Result<Outcome, SignerError> {
    let text = serde_json::to_string(request).map_err(|e| SignerError::Unavailable(e.to_string()))?;
    let work = async {
        socket
            .send(Message::text(text))
            .await
            .map_err(|e| SignerError::Unavailable(format!("cannot send: {e}")))?;
        loop {
            let frame = match socket.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(SignerError::Unavailable(format!("connection failed: {e}"))),
                None => return Err(SignerError::Unavailable("the connection was closed".into())),
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Close(_) => {
                    return Err(SignerError::Unavailable("the control closed the connection".into()));
                }
                // Pings are answered by tungstenite itself.
                _ => continue,
            };
            let reply = Reply::parse(text.as_str()).ok_or_else(|| {
                SignerError::Unavailable("the control sent a frame that is not a reply".into())
            })?;
            if reply.is_greeting() || reply.id.is_some_and(|id| id != request.id) {
                continue;
            }
            return reply
                .args
                .ok_or_else(|| SignerError::Unavailable("the control's reply holds no result".into()));
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| SignerError::Unavailable(format!("no answer within {} ms", timeout.as_millis())))?
}
