//! [`SignerClient`] against the EportClient simulator, over real sockets: signatures that
//! verify, requests kept one at a time on one connection, and every fault the simulator can
//! inject classified as the spec's allow-list says.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use customs179_core::SignatureVerifier;
use customs179_eport::{FailureClass, SignerClient, SignerError};
use customs179_sim::eport::{
    self, Algo, EportSimOptions, Faults, FaultsUpdate, RunningEportSim, TAG_WRONG_PIN,
};

const PIN: &str = "88888888";
/// A pre-sign string with non-ASCII text: the card signs its UTF-8 bytes.
const TEXT: &str =
    r#""sessionID":"S-client"||"payExchangeInfoHead":{"guid":"G","note":"支付 ✓"}||"serviceTime":"1""#;
/// Long enough for anything the simulator does without a latency fault.
const TIMEOUT: Duration = Duration::from_secs(5);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A port that was free a moment ago (nothing listens there).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind(any_port()).unwrap().local_addr().unwrap()
}

async fn start_sim_at(addr: SocketAddr, algo: Algo, dir: &Path, faults: Faults) -> RunningEportSim {
    let mut options = EportSimOptions::new(addr, algo, PIN, dir);
    options.faults = faults;
    eport::start(options).await.expect("the simulator starts")
}

async fn start_sim(dir: &Path, faults: Faults) -> RunningEportSim {
    start_sim_at(any_port(), Algo::Sm2, dir, faults).await
}

fn verifier(sim: &RunningEportSim) -> SignatureVerifier {
    SignatureVerifier::from_bytes(sim.keys().cert_der()).unwrap()
}

/// Asserts a good signature of `text` by the simulator's card.
fn assert_signed(
    sim: &RunningEportSim,
    text: &str,
    result: Result<customs179_eport::CardSignature, SignerError>,
) {
    let signature = result.unwrap_or_else(|e| panic!("not signed: {e:?}"));
    assert_eq!(signature.cert_no, sim.cert_no().as_str());
    verifier(sim).verify(text.as_bytes(), &signature.sign_value).expect("the signature verifies");
}

fn assert_failed(
    result: Result<customs179_eport::CardSignature, SignerError>,
    expected: FailureClass,
) -> String {
    match result {
        Err(SignerError::Failed { class, message }) if class == expected => message,
        other => panic!("expected Failed {{ class: {expected:?} }}, got {other:?}"),
    }
}

fn assert_unavailable(result: Result<customs179_eport::CardSignature, SignerError>) -> String {
    match result {
        Err(SignerError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A Sign that was sent and got no answer: the card may have checked the PIN.
fn assert_no_answer(result: Result<customs179_eport::CardSignature, SignerError>) -> String {
    match result {
        Err(SignerError::NoAnswer(message)) => message,
        other => panic!("expected NoAnswer, got {other:?}"),
    }
}

fn set(sim: &RunningEportSim, update: FaultsUpdate) {
    sim.update_faults(&update);
}

#[tokio::test]
async fn sign_returns_a_verified_signature_with_the_cards_cert_no() {
    for algo in [Algo::Sm2, Algo::Rsa] {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_sim_at(any_port(), algo, dir.path(), Faults::default()).await;
        let client = SignerClient::new(sim.ws_url(), TIMEOUT);
        let signature = client.sign(TEXT, PIN).await.unwrap();
        assert_eq!(signature.cert_no, sim.cert_no().as_str(), "{algo}");
        let expected_len = if algo == Algo::Sm2 { 88 } else { 172 };
        assert_eq!(signature.sign_value.len(), expected_len, "{algo}");
        verifier(&sim).verify(TEXT.as_bytes(), &signature.sign_value).expect("verifies");
        assert!(verifier(&sim).verify(format!("{TEXT} ").as_bytes(), &signature.sign_value).is_err());
        let stats = sim.stats();
        assert_eq!((stats.connections, stats.sign_requests, stats.signatures), (1, 1, 1), "{algo}");
        sim.stop().await;
    }
}

#[tokio::test]
async fn identity_is_the_cards_certificate_and_cert_no() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let client = SignerClient::new(sim.ws_url(), TIMEOUT);
    let identity = client.identity().await.unwrap();
    assert_eq!(&identity.cert_no, sim.cert_no());
    assert_eq!(identity.certificate, sim.keys().cert_base64());
    assert_eq!(identity.verifier.cert_no(), Some(sim.cert_no()));
    // Asking again uses the same connection; no signature was made.
    client.identity().await.unwrap();
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.sign_requests), (1, 0));
}

#[tokio::test]
async fn concurrent_calls_are_sent_one_at_a_time_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults { latency_ms: 200, ..Faults::default() }).await;
    let client = Arc::new(SignerClient::new(sim.ws_url(), TIMEOUT));
    client.identity().await.unwrap();
    let before = sim.stats().requests;

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..4 {
        let client = client.clone();
        calls.spawn(async move {
            let text = format!("{TEXT}||{i}");
            let result = client.sign(&text, PIN).await;
            (text, result)
        });
    }
    // The simulator counts a sign request when it arrives, before the card's latency: a
    // client that pipelined would have sent all four by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.stats().sign_requests, 1, "one request in flight");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.stats().sign_requests, 2, "the next one only after the first answer");

    let started = Instant::now();
    while let Some(joined) = calls.join_next().await {
        let (text, result) = joined.unwrap();
        assert_signed(&sim, &text, result);
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    let stats = sim.stats();
    assert_eq!(stats.connections, 1, "one connection");
    assert_eq!(stats.requests - before, 4, "nothing but the four signs");
    assert_eq!((stats.sign_requests, stats.signatures), (4, 4));
}

#[tokio::test]
async fn latency_makes_signing_slower_but_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults { latency_ms: 400, ..Faults::default() }).await;
    let client = SignerClient::new(sim.ws_url(), Duration::from_secs(2));
    client.identity().await.unwrap();
    let started = Instant::now();
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(sim.stats().connections, 1);
}

#[tokio::test]
async fn reader_errors_are_reader_unwell_and_the_next_call_succeeds() {
    for (update, code) in [
        (FaultsUpdate { reader_error_50070: Some(1), ..FaultsUpdate::default() }, "50070"),
        (FaultsUpdate { reader_error_50200: Some(1), ..FaultsUpdate::default() }, "50200"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_sim(dir.path(), Faults::default()).await;
        set(&sim, update);
        let client = SignerClient::new(sim.ws_url(), TIMEOUT);
        let message = assert_failed(client.sign(TEXT, PIN).await, FailureClass::ReaderUnwell);
        assert!(message.contains(&format!("Err:Custom{code}")), "{message}");
        assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
        let stats = sim.stats();
        // A failure answer leaves the connection usable.
        assert_eq!((stats.connections, stats.sign_requests, stats.signatures), (1, 2, 1), "{code}");
    }
}

#[tokio::test]
async fn a_wrong_pin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let client = SignerClient::new(sim.ws_url(), TIMEOUT);
    let message = assert_failed(client.sign(TEXT, "00000000").await, FailureClass::Refused);
    assert!(message.contains(TAG_WRONG_PIN), "{message}");
    assert!(!message.contains("00000000") && !message.contains(PIN), "no PIN in {message}");

    // The forced fault answers the same whatever the PIN.
    set(&sim, FaultsUpdate { wrong_pin: Some(1), ..FaultsUpdate::default() });
    let message = assert_failed(client.sign(TEXT, PIN).await, FailureClass::Refused);
    assert!(message.contains(TAG_WRONG_PIN), "{message}");
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.wrong_pins, stats.signatures, stats.locked), (1, 2, 1, false));
}

#[tokio::test]
async fn a_blank_text_is_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let client = SignerClient::new(sim.ws_url(), TIMEOUT);
    for text in ["", " \n\t"] {
        let message = assert_failed(client.sign(text, PIN).await, FailureClass::BadArguments);
        assert!(message.contains("Err:Base50000") && message.contains("inData"), "{message}");
    }
    let message = assert_failed(client.sign(TEXT, "").await, FailureClass::BadArguments);
    assert!(message.contains("passwd"), "{message}");
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.wrong_pins), (1, 0), "a bad request is no wrong PIN");
}

#[tokio::test]
async fn a_dropped_connection_is_no_answer_and_the_next_call_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let client = SignerClient::new(sim.ws_url(), TIMEOUT);
    client.identity().await.unwrap();
    set(&sim, FaultsUpdate { drop: Some(1), ..FaultsUpdate::default() });
    let started = Instant::now();
    assert_no_answer(client.sign(TEXT, PIN).await);
    assert!(started.elapsed() < TIMEOUT / 2, "a close is noticed at once: {:?}", started.elapsed());
    assert_eq!(sim.stats().connections, 1);

    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.signatures), (2, 1));
    // And the new connection stays.
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    assert_eq!(sim.stats().connections, 2);
}

#[tokio::test]
async fn an_unanswered_sign_is_no_answer_after_the_timeout_and_the_next_call_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let timeout = Duration::from_millis(300);
    let client = SignerClient::new(sim.ws_url(), timeout);
    client.identity().await.unwrap();
    set(&sim, FaultsUpdate { hang: Some(1), ..FaultsUpdate::default() });
    let started = Instant::now();
    let message = assert_no_answer(client.sign(TEXT, PIN).await);
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < timeout * 3, "{elapsed:?}");
    assert!(message.contains("300 ms"), "{message}");

    // A late answer on the old connection could be taken for a later request's: the
    // client starts over on a new connection.
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.signatures), (2, 1));
}

#[tokio::test]
async fn no_control_running_is_unavailable_at_once() {
    let addr = free_addr();
    let client = SignerClient::new(format!("ws://{addr}/"), TIMEOUT);
    let started = Instant::now();
    let message = assert_unavailable(client.sign(TEXT, PIN).await);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(message.contains("cannot connect"), "{message}");
    assert!(matches!(client.identity().await, Err(SignerError::Unavailable(_))));
}

#[tokio::test]
async fn a_control_started_later_is_connected_to_after_the_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let client = SignerClient::new(format!("ws://{addr}/"), TIMEOUT);
    assert_unavailable(client.sign(TEXT, PIN).await);
    let failed_at = Instant::now();

    let sim = start_sim_at(addr, Algo::Sm2, dir.path(), Faults::default()).await;
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    // The first retry comes 200 ms after the failure, not at once.
    let waited = failed_at.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.signatures), (1, 1));
}

#[tokio::test]
async fn backoff_grows_while_the_control_stays_away_and_resets_after_a_connect() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let client = SignerClient::new(format!("ws://{addr}/"), TIMEOUT);
    assert_unavailable(client.sign(TEXT, PIN).await);
    // 200 ms, then 400 ms, then 800 ms between attempts.
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        assert_unavailable(client.sign(TEXT, PIN).await);
        gaps.push(started.elapsed());
    }
    for (gap, expected) in gaps.iter().zip([200, 400, 800]) {
        let expected = Duration::from_millis(expected);
        assert!(*gap >= expected - Duration::from_millis(20), "{gaps:?}");
        assert!(*gap < expected + Duration::from_millis(500), "{gaps:?}");
    }

    let sim = start_sim_at(addr, Algo::Sm2, dir.path(), Faults::default()).await;
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    // After a good connect a single loss waits only the first delay again.
    set(&sim, FaultsUpdate { drop: Some(1), ..FaultsUpdate::default() });
    assert_no_answer(client.sign(TEXT, PIN).await);
    let started = Instant::now();
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    assert!(started.elapsed() < Duration::from_millis(700), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_pin_is_proven_by_a_verified_signature_on_this_card_and_ends_with_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let client = SignerClient::new(sim.ws_url(), TIMEOUT);
    assert!(!client.session().await.unwrap().pin_proven(), "a new client has proven nothing");
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    assert!(client.session().await.unwrap().pin_proven());

    // A reconnection to the same card keeps the proof.
    set(&sim, FaultsUpdate { drop: Some(1), ..FaultsUpdate::default() });
    assert_no_answer(client.sign(TEXT, PIN).await);
    let session = client.session().await.unwrap();
    assert!(session.pin_proven(), "the same certNo answers again");
    assert_signed(&sim, TEXT, session.sign(TEXT, PIN).await);
    assert_eq!(sim.stats().connections, 2);

    // A refusal ends it.
    set(&sim, FaultsUpdate { wrong_pin: Some(1), ..FaultsUpdate::default() });
    assert_failed(client.sign(TEXT, PIN).await, FailureClass::Refused);
    assert!(!client.session().await.unwrap().pin_proven());
    assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    assert!(client.session().await.unwrap().pin_proven());
}

#[tokio::test]
async fn another_card_at_the_same_address_makes_the_pin_unproven() {
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = start_sim(first_dir.path(), Faults::default()).await;
    let (addr, first_cert_no) = (first.ws_addr(), first.cert_no().clone());
    let client = SignerClient::new(first.ws_url(), TIMEOUT);
    assert_signed(&first, TEXT, client.sign(TEXT, PIN).await);
    assert!(client.session().await.unwrap().pin_proven());
    first.stop().await;

    // Another card (its own key and certificate) behind the same URL.
    let second = start_sim_at(addr, Algo::Sm2, second_dir.path(), Faults::default()).await;
    assert_ne!(*second.cert_no(), first_cert_no);
    // The old socket is found closed by the next Sign, which had been sent for all it knew.
    assert_no_answer(client.sign(TEXT, PIN).await);
    let session = client.session().await.unwrap();
    assert_eq!(session.identity().unwrap().cert_no, *second.cert_no());
    assert!(!session.pin_proven(), "proven on another certNo");
    assert_signed(&second, TEXT, session.sign(TEXT, PIN).await);
    assert!(client.session().await.unwrap().pin_proven());
}

#[tokio::test]
async fn ids_are_never_reused_on_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let client = SignerClient::new(sim.ws_url(), TIMEOUT);
    for _ in 0..5 {
        assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    }
    set(&sim, FaultsUpdate { drop: Some(1), ..FaultsUpdate::default() });
    assert_no_answer(client.sign(TEXT, PIN).await);
    for _ in 0..3 {
        assert_signed(&sim, TEXT, client.sign(TEXT, PIN).await);
    }
    let stats = sim.stats();
    // Two connections, each with the certificate, the certNo and its Signs.
    assert_eq!((stats.connections, stats.requests, stats.reused_ids), (2, 13, 0), "{stats:?}");
}

/// A control of our own, to send what the simulator never does: a greeting whose
/// `_args` is not an outcome, and a reply with the request's `_id` but another `_method`.
#[tokio::test]
async fn replies_are_matched_on_id_and_method_and_any_greeting_is_skipped() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let keys_dir = tempfile::tempdir().unwrap();
    let sim = start_sim(keys_dir.path(), Faults::default()).await;
    let (cert, cert_no) = (sim.keys().cert_base64(), sim.cert_no().to_string());
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let control = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let greeting = r#"{"_id":0,"_method":"open","_status":"00","_args":"EportClient 1.5.12"}"#;
        ws.send(Message::text(greeting)).await.unwrap();
        let mut ids = Vec::new();
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            let request: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            let (id, method) =
                (request["_id"].as_u64().unwrap(), request["_method"].as_str().unwrap().to_owned());
            ids.push(id);
            let data = match method.as_str() {
                "cus-sec_SpcGetSignCertAsPEM" => serde_json::json!([cert]),
                "cus-sec_SpcGetCertNo" => serde_json::json!([cert_no]),
                _ => serde_json::json!(["not-a-signature", cert_no]),
            };
            // First an answer that is someone else's: same _id, another _method.
            let stray = serde_json::json!({"_id": id, "_method": "cus-sec_SpcGetCardID", "_status": "00",
                "_args": {"Result": true, "Data": ["stray"], "Error": []}});
            ws.send(Message::text(stray.to_string())).await.unwrap();
            let reply = serde_json::json!({"_id": id, "_method": method, "_status": "00",
                "_args": {"Result": true, "Data": data, "Error": []}});
            ws.send(Message::text(reply.to_string())).await.unwrap();
        }
        ids
    });
    let client = SignerClient::new(url, TIMEOUT);
    let identity = client.identity().await.unwrap();
    assert_eq!(identity.cert_no.as_str(), sim.cert_no().as_str(), "the stray answers were skipped");
    // The signature is the control's made-up one: unusable, and said so.
    match client.sign(TEXT, PIN).await {
        Err(SignerError::BadSignature(message)) => assert!(message.contains("does not verify"), "{message}"),
        other => panic!("expected BadSignature, got {other:?}"),
    }
    drop(client);
    assert_eq!(control.await.unwrap(), [1, 2, 3]);
}
