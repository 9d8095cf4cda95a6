//! The EportClient simulator through real sockets: a tokio-tungstenite client on the
//! WebSocket, raw HTTP/1.1 on the control endpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use customs179_core::SignatureVerifier;
use customs179_eport::frames::{FailureClass, Outcome, Reply};
use customs179_sim::eport::{
    self, Algo, EportSimOptions, Faults, FaultsUpdate, RunningEportSim, SimError, Stats, TAG_BAD_FRAME,
    TAG_LOCKED, TAG_UNKNOWN_METHOD, TAG_WRONG_PIN,
};
use customs179_sim::keys::{CERT_FILE, KEY_FILE, KeyError};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const PIN: &str = "88888888";
const SIGN: &str = "cus-sec_SpcSignDataAsPEM";
/// A pre-sign string with non-ASCII text: the card signs its UTF-8 bytes.
const IN_DATA: &str =
    r#""sessionID":"S-1"||"payExchangeInfoHead":{"guid":"G","note":"支付 ✓"}||"serviceTime":"1""#;
const NO_ANSWER: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start_sim(algo: Algo, dir: &Path, faults: Faults) -> RunningEportSim {
    let mut options = EportSimOptions::new(any_port(), algo, PIN, dir);
    options.control = Some(any_port());
    options.faults = faults;
    eport::start(options).await.expect("the simulator starts")
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Client {
    /// Connects and returns the greeting, which must be the first frame.
    async fn connect(sim: &RunningEportSim) -> (Client, Reply) {
        let (ws, _) = tokio_tungstenite::connect_async(sim.ws_url()).await.expect("connects");
        let mut client = Client { ws, next_id: 1 };
        let greeting = client.recv(WAIT).await.expect("a greeting");
        (client, greeting)
    }

    async fn send(&mut self, method: &str, args: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"_method": method, "_id": id, "args": args});
        self.ws.send(Message::text(frame.to_string())).await.expect("sends");
        id
    }

    async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.expect("sends");
    }

    /// The next text frame, or None when nothing came within `wait` or the connection ended.
    async fn recv(&mut self, wait: Duration) -> Option<Reply> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(Reply::parse(text.as_str()).expect("a reply frame"));
                }
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Whether the server closed the connection within `wait` (without answering).
    async fn closed(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(Message::Text(text)))) => panic!("answered instead of closing: {text}"),
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn call(&mut self, method: &str, args: Value) -> Outcome {
        let id = self.send(method, args).await;
        let reply = self.recv(WAIT).await.expect("an answer");
        assert_eq!(reply.id, Some(id));
        assert_eq!(reply.method.as_deref(), Some(method));
        assert_eq!(reply.status.as_deref(), Some("00"), "_status is 00 even on failure");
        reply.args.expect("_args")
    }

    async fn sign(&mut self, passwd: &str) -> Outcome {
        self.call(SIGN, json!({"inData": IN_DATA, "passwd": passwd})).await
    }
}

fn error_texts(outcome: &Outcome) -> Vec<&str> {
    outcome.error.iter().filter_map(Value::as_str).collect()
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("control connects");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("request written");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response read");
    let status = response.get(9..12).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

async fn control_stats(sim: &RunningEportSim) -> Stats {
    let (status, body) = http(sim.control_addr().expect("control"), "GET", "/stats", "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("stats JSON")
}

#[tokio::test]
async fn signatures_verify_with_the_core_verifier_and_every_cert_no_agrees() {
    for (algo, length) in [(Algo::Sm2, 88), (Algo::Rsa, 172)] {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_sim(algo, dir.path(), Faults::default()).await;
        let (mut client, greeting) = Client::connect(&sim).await;
        assert!(greeting.is_greeting(), "{greeting:?}");
        assert_eq!(greeting.id, Some(0));

        let signed = client.sign(PIN).await;
        assert!(signed.result, "{algo}: {signed:?}");
        let signature = signed.data_str(0).expect("signature").to_owned();
        assert_eq!(signature.len(), length, "{algo}");
        let sign_cert_no = signed.data_str(1).expect("certNo").to_owned();

        let cert_no = client.call("cus-sec_SpcGetCertNo", json!({})).await;
        assert!(cert_no.result);
        let cert_no = cert_no.data_str(0).expect("certNo").to_owned();
        assert_eq!(cert_no.len(), 16, "{algo}: {cert_no}");
        assert!(cert_no.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{cert_no}");
        assert_eq!(cert_no, sign_cert_no);
        assert_eq!(cert_no, sim.cert_no().as_str());

        let one_line = client.call("cus-sec_SpcGetSignCertAsPEM", json!({})).await;
        let one_line = one_line.data_str(0).expect("certificate").to_owned();
        assert!(!one_line.contains(['\n', '-']), "one line of base64, no armour");
        let pem = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        for source in [pem.as_slice(), one_line.as_bytes()] {
            let verifier = SignatureVerifier::from_bytes(source).expect("the certificate loads");
            assert_eq!(verifier.cert_no().map(|c| c.as_str()), Some(cert_no.as_str()), "{algo}");
            verifier.verify(IN_DATA.as_bytes(), &signature).expect("the signature verifies");
            assert!(verifier.verify(b"other bytes", &signature).is_err());
        }

        let valid = client.call("cus-sec_SpcGetValidTimeFromCert", json!({})).await;
        assert!(valid.result);
        assert_eq!(valid.data.len(), 2);
        for date in [valid.data_str(0).unwrap(), valid.data_str(1).unwrap()] {
            assert_eq!(date.len(), "2026-11-29 04:00:00".len(), "{date}");
            assert_eq!((&date[4..5], &date[10..11], &date[13..14]), ("-", " ", ":"), "{date}");
        }

        let verified =
            client.call("cus-sec_SpcVerifySignData", json!({"inData": IN_DATA, "signData": signature})).await;
        assert!(verified.result, "{verified:?}");
        let with_cert = json!({"inData": IN_DATA, "signData": signature, "certDataPEM": one_line});
        assert!(client.call("cus-sec_SpcVerifySignData", with_cert).await.result);
        let tampered = json!({"inData": format!("{IN_DATA} "), "signData": signature});
        assert!(!client.call("cus-sec_SpcVerifySignData", tampered).await.result);

        let stats = sim.stats();
        assert_eq!((stats.connections, stats.requests, stats.sign_requests, stats.signatures), (1, 7, 1, 1));
        sim.stop().await;
    }
}

#[tokio::test]
async fn blank_or_missing_arguments_are_base50000() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults::default()).await;
    let (mut client, _) = Client::connect(&sim).await;
    for args in
        [json!({"inData": " \n", "passwd": PIN}), json!({"passwd": PIN}), json!({"inData": 5, "passwd": PIN})]
    {
        let outcome = client.call(SIGN, args).await;
        assert!(!outcome.result);
        assert_eq!(
            error_texts(&outcome),
            ["参数检查失败,传入的args中必须包含必要的非空白参数:inData", "Err:Base50000"]
        );
        assert_eq!(outcome.failure_class(), FailureClass::BadArguments);
    }
    let no_pin = client.call(SIGN, json!({"inData": IN_DATA, "passwd": ""})).await;
    assert_eq!(
        error_texts(&no_pin),
        ["参数检查失败,传入的args中必须包含必要的非空白参数:passwd", "Err:Base50000"]
    );
    // A bad request is no wrong PIN.
    assert_eq!(sim.stats().wrong_pins, 0);
    assert!(client.sign(PIN).await.result);
}

#[tokio::test]
async fn three_wrong_pins_lock_the_card_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults::default()).await;
    let (mut client, _) = Client::connect(&sim).await;

    let wrong = client.sign("12345678").await;
    assert!(!wrong.result);
    assert_eq!(error_texts(&wrong), ["[sim] 口令错误, 剩余尝试次数 2", TAG_WRONG_PIN]);
    assert_eq!(wrong.failure_class(), FailureClass::Refused, "outside the allow-list");
    // A right PIN resets the count, as on real cards.
    assert!(client.sign(PIN).await.result);

    for left in [2, 1, 0] {
        let wrong = client.sign("00000000").await;
        assert_eq!(
            error_texts(&wrong),
            [format!("[sim] 口令错误, 剩余尝试次数 {left}").as_str(), TAG_WRONG_PIN]
        );
    }
    for passwd in [PIN, "00000000"] {
        let locked = client.sign(passwd).await;
        assert!(!locked.result);
        assert_eq!(locked.error_tag(), Some(TAG_LOCKED));
        assert_eq!(locked.failure_class(), FailureClass::Refused);
    }
    // Other methods still work on a locked card.
    assert!(client.call("cus-sec_SpcGetCertNo", json!({})).await.result);
    let stats = control_stats(&sim).await;
    assert!(stats.locked);
    assert_eq!((stats.wrong_pins, stats.signatures, stats.sign_requests), (4, 1, 7));
    sim.stop().await;

    let sim = start_sim(Algo::Sm2, dir.path(), Faults::default()).await;
    let (mut client, _) = Client::connect(&sim).await;
    assert!(client.sign(PIN).await.result, "a restart unlocks");
    assert!(!sim.stats().locked);
}

#[tokio::test]
async fn latency_delays_each_signature() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Rsa, dir.path(), Faults { latency_ms: 400, ..Faults::default() }).await;
    let (mut client, _) = Client::connect(&sim).await;
    let started = Instant::now();
    assert!(client.sign(PIN).await.result);
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());

    sim.update_faults(&FaultsUpdate { latency_ms: Some(0), ..FaultsUpdate::default() });
    let started = Instant::now();
    assert!(client.sign(PIN).await.result);
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
}

#[tokio::test]
async fn reader_errors_answer_the_next_sign_calls_then_stop() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults { reader_error_50070: 2, reader_error_50200: 1, ..Faults::default() };
    let sim = start_sim(Algo::Sm2, dir.path(), faults).await;
    let (mut client, _) = Client::connect(&sim).await;
    // Only Sign calls meet the reader faults.
    assert!(client.call("cus-sec_SpcGetCertNo", json!({})).await.result);
    for _ in 0..2 {
        let outcome = client.sign(PIN).await;
        assert_eq!(error_texts(&outcome), ["[读卡器底层库]复位读卡器失败:错误码=50070", "Err:Custom50070"]);
        assert_eq!(outcome.failure_class(), FailureClass::ReaderUnwell);
    }
    let outcome = client.sign(PIN).await;
    assert_eq!(error_texts(&outcome), ["打开读卡器失败：错误码=50200", "Err:Custom50200"]);
    assert_eq!(outcome.failure_class(), FailureClass::ReaderUnwell);
    assert!(client.sign(PIN).await.result);
    assert_eq!(sim.faults(), Faults::default(), "every count used up");
}

#[tokio::test]
async fn forced_wrong_pins_do_not_lock() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults { wrong_pin: 4, ..Faults::default() }).await;
    let (mut client, _) = Client::connect(&sim).await;
    for _ in 0..4 {
        let outcome = client.sign(PIN).await;
        assert_eq!(error_texts(&outcome), ["[sim] 口令错误, 剩余尝试次数 3", TAG_WRONG_PIN]);
    }
    assert!(client.sign(PIN).await.result);
    let stats = sim.stats();
    assert_eq!((stats.wrong_pins, stats.locked), (4, false));
}

#[tokio::test]
async fn drop_closes_the_connection_without_answering() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults { drop: 1, ..Faults::default() }).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.send(SIGN, json!({"inData": IN_DATA, "passwd": PIN})).await;
    assert!(client.closed(WAIT).await, "the connection closes");

    let (mut client, greeting) = Client::connect(&sim).await;
    assert!(greeting.is_greeting());
    assert!(client.sign(PIN).await.result, "the next connection is served");
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.requests, stats.sign_requests, stats.signatures), (2, 2, 1, 1));
}

#[tokio::test]
async fn hang_leaves_a_request_unanswered_and_serves_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults { hang: 1, ..Faults::default() }).await;
    let (mut client, _) = Client::connect(&sim).await;
    client.send(SIGN, json!({"inData": IN_DATA, "passwd": PIN})).await;
    assert!(client.recv(NO_ANSWER).await.is_none(), "no answer");
    let outcome = client.sign(PIN).await;
    assert!(outcome.result, "the next request is answered on the same connection");
}

#[tokio::test]
async fn several_requests_in_flight_are_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults::default()).await;
    let (mut client, _) = Client::connect(&sim).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.send(SIGN, json!({"inData": IN_DATA, "passwd": PIN})).await);
    }
    ids.push(client.send("cus-sec_SpcGetCertNo", json!({})).await);
    let mut answered = Vec::new();
    for _ in 0..4 {
        let reply = client.recv(WAIT).await.expect("an answer");
        assert!(reply.args.expect("_args").result);
        answered.push(reply.id.expect("_id"));
    }
    answered.sort_unstable();
    assert_eq!(answered, ids);
}

#[tokio::test]
async fn unknown_methods_and_bad_frames_get_failures() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults::default()).await;
    let (mut client, _) = Client::connect(&sim).await;
    let unknown = client.call("cus-sec_SpcGetCardID", json!({})).await;
    assert!(!unknown.result);
    assert_eq!(unknown.error_tag(), Some(TAG_UNKNOWN_METHOD));

    client.send_raw(r#"{"_method":"cus-sec_SpcSignDataAsPEM","_id":77,"args":["x"]}"#).await;
    let reply = client.recv(WAIT).await.expect("an answer");
    assert_eq!(reply.id, Some(77), "the id is echoed when it can be read");
    assert_eq!(reply.args.expect("_args").error_tag(), Some(TAG_BAD_FRAME));
    client.send_raw("not json").await;
    let reply = client.recv(WAIT).await.expect("an answer");
    assert_eq!((reply.id, reply.args.expect("_args").error_tag()), (None, Some(TAG_BAD_FRAME)));

    // Pings are answered by the WebSocket layer.
    client.ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(WAIT, client.ws.next()).await.expect("a pong");
    assert!(matches!(pong, Some(Ok(Message::Pong(payload))) if payload.as_ref() == b"p"));
    assert!(client.sign(PIN).await.result);
}

#[tokio::test]
async fn the_control_endpoint_reads_and_sets_faults_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults { drop: 3, ..Faults::default() }).await;
    let control = sim.control_addr().expect("control");

    let (status, body) = http(control, "GET", "/faults", "").await;
    assert_eq!(status, 200);
    let faults: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        faults,
        json!({"latency_ms":0,"reader_error_50070":0,"reader_error_50200":0,"wrong_pin":0,"drop":3,"hang":0,"bad_signature":0})
    );

    let (status, body) =
        http(control, "POST", "/faults", r#"{"drop":0,"reader_error_50200":1,"latency_ms":5}"#).await;
    assert_eq!(status, 200, "{body}");
    let expected = Faults { reader_error_50200: 1, latency_ms: 5, ..Faults::default() };
    assert_eq!(serde_json::from_str::<Faults>(&body).unwrap(), expected);
    let (_, body) = http(control, "GET", "/faults", "").await;
    assert_eq!(serde_json::from_str::<Faults>(&body).unwrap(), expected);

    let (status, _) = http(control, "POST", "/faults", r#"{"dorp":1}"#).await;
    assert!((400..500).contains(&status), "unknown fields are refused: {status}");
    let (status, _) = http(control, "POST", "/faults", r#"{"drop":-1}"#).await;
    assert!((400..500).contains(&status), "negative counts are refused: {status}");
    assert_eq!(sim.faults(), expected);

    let (mut client, _) = Client::connect(&sim).await;
    assert_eq!(client.sign(PIN).await.error_tag(), Some("Err:Custom50200"));
    assert!(client.sign("bad").await.error_tag() == Some(TAG_WRONG_PIN));
    assert!(client.sign(PIN).await.result);
    let stats = control_stats(&sim).await;
    // The card was busy for the two calls that reached it (the 50200 came before it).
    assert!(stats.busy_micros > 0, "{stats:?}");
    assert_eq!(
        stats,
        Stats {
            connections: 1,
            requests: 3,
            sign_requests: 3,
            signatures: 1,
            wrong_pins: 1,
            locked: false,
            busy_micros: stats.busy_micros,
            reused_ids: 0,
        }
    );
    let (status, body) = http(control, "GET", "/stats", "").await;
    assert_eq!(status, 200);
    let keys: Vec<String> =
        serde_json::from_str::<serde_json::Map<String, Value>>(&body).unwrap().keys().cloned().collect();
    for key in
        ["connections", "requests", "sign_requests", "signatures", "wrong_pins", "locked", "busy_micros"]
    {
        assert!(keys.iter().any(|k| k == key), "{key} in {body}");
    }
}

#[tokio::test]
async fn keys_are_kept_and_reused_across_restarts() {
    for algo in [Algo::Sm2, Algo::Rsa] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let sim = start_sim(algo, &state, Faults::default()).await;
        let cert_no = sim.cert_no().clone();
        let key = std::fs::read_to_string(state.join(KEY_FILE)).unwrap();
        let cert = std::fs::read(state.join(CERT_FILE)).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8: {}", &key[..30]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(state.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
        }
        sim.stop().await;

        let sim = start_sim(algo, &state, Faults::default()).await;
        assert_eq!(sim.cert_no(), &cert_no, "{algo}");
        assert_eq!(std::fs::read(state.join(CERT_FILE)).unwrap(), cert);
        let (mut client, _) = Client::connect(&sim).await;
        let signed = client.sign(PIN).await;
        assert_eq!(signed.data_str(1), Some(cert_no.as_str()));
        let verifier = SignatureVerifier::from_bytes(&cert).unwrap();
        verifier.verify(IN_DATA.as_bytes(), signed.data_str(0).unwrap()).expect("old certificate, same key");
        sim.stop().await;

        let other = if algo == Algo::Sm2 { Algo::Rsa } else { Algo::Sm2 };
        let options = EportSimOptions::new(any_port(), other, PIN, &state);
        let err = eport::start(options).await.err().expect("another algorithm is refused");
        assert!(
            matches!(&err, SimError::Keys(KeyError::AlgoMismatch { stored, requested, .. }) if *stored == algo && *requested == other),
            "{err:?}"
        );
        assert!(err.to_string().contains(&format!("--algo {algo}")), "{err}");
    }
}

#[tokio::test]
async fn a_half_written_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults::default()).await;
    sim.stop().await;
    std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
    let err = eport::start(EportSimOptions::new(any_port(), Algo::Sm2, PIN, dir.path()))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, SimError::Keys(KeyError::Incomplete { .. })), "{err:?}");
}

#[tokio::test]
async fn stopping_closes_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(Algo::Sm2, dir.path(), Faults::default()).await;
    let addr = sim.ws_addr();
    let (mut client, _) = Client::connect(&sim).await;
    sim.stop().await;
    assert!(client.closed(WAIT).await);
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
}
