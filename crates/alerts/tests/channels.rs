//! The channels against local receivers: an HTTP server that checks each
//! robot's body and signature the way the robot would (recomputing the HMAC
//! from the documented formula, not with the crate's functions), and a
//! minimal SMTP server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use customs179_alerts::channel::{
    Channel, ChannelConfig, ChannelError, DeliveryError, Mail, MailTls, Target,
};
use customs179_alerts::message::render;
use customs179_alerts::{Alert, AlertKind, Event, Language, Severity};
use customs179_core::Secret;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(5);

fn setup() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn alert() -> Alert {
    Alert {
        id: 42,
        kind: AlertKind::SigningPaused,
        severity: Severity::Critical,
        event: Event::Raised,
        card: String::new(),
        level: String::new(),
        count: 0,
        detail: "the card refused: PIN".into(),
        since: 1_796_112_187_123,
        at: 1_796_112_187_123 + 60_000,
        source: "E1".into(),
    }
}

fn config(target: Target, language: Language) -> ChannelConfig {
    ChannelConfig {
        name: "ops".into(),
        target,
        kinds: AlertKind::ALL.to_vec(),
        min_severity: Severity::Info,
        language,
        per_minute: 20,
    }
}

/// Neither the error nor its Debug holds any of `secrets`.
#[track_caller]
fn assert_secret_free(error: &DeliveryError, secrets: &[&str]) {
    let shown = format!("{error} {error:?}");
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret:?} in {shown}");
    }
}

/// One request as the receiver saw it.
struct Received {
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

struct Shared {
    answer: (StatusCode, String),
    received: Vec<Received>,
}

/// An HTTP receiver on 127.0.0.1 whose answer the test sets.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let shared =
            Arc::new(Mutex::new(Shared { answer: (StatusCode::OK, String::new()), received: Vec::new() }));
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, shared }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    fn answer(&self, status: u16, body: impl Into<String>) {
        self.shared.lock().unwrap().answer = (StatusCode::from_u16(status).unwrap(), body.into());
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut self.shared.lock().unwrap().received)
    }
}

async fn record(
    State(shared): State<Arc<Mutex<Shared>>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut shared = shared.lock().unwrap();
    shared.received.push(Received { path: uri.path().to_owned(), query, headers, body: body.to_vec() });
    shared.answer.clone()
}

// --- webhook -------------------------------------------------------------

#[tokio::test]
async fn a_webhook_gets_the_alert_signed_over_the_exact_body() {
    setup();
    let receiver = Receiver::start().await;
    let url = receiver.url("/hooks/wh-path-token-5f3a?key=wh-query-key-77");
    let target =
        Target::Webhook { url: Secret::new(url.clone()), secret: Some(Secret::new("wh-signing-secret")) };
    let channel = Channel::new(config(target, Language::En), TIMEOUT).unwrap();
    let secrets = [url.as_str(), "wh-path-token-5f3a", "wh-query-key-77", "wh-signing-secret"];
    assert!(!format!("{channel:?}").contains("wh-"), "{channel:?}");

    receiver.answer(204, "");
    channel.send(&alert(), now_ms()).await.unwrap();
    let [request] = receiver.take().try_into().ok().unwrap();
    assert_eq!(request.path, "/hooks/wh-path-token-5f3a");
    assert_eq!(request.query["key"], "wh-query-key-77");
    assert_eq!(request.headers["content-type"], "application/json");
    let expected: String =
        hmac_sha256(b"wh-signing-secret", &request.body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(request.headers["x-customs179-signature"], format!("sha256={expected}").as_str());
    let rendered = render(&alert(), Language::En);
    assert_eq!(
        request.json(),
        json!({
            "alert": {
                "id": 42, "kind": "signing_paused", "severity": "critical", "event": "raised",
                "card": "", "level": "", "count": 0, "detail": "the card refused: PIN",
                "since": 1_796_112_187_123_i64, "at": 1_796_112_247_123_i64, "source": "E1",
            },
            "subject": rendered.subject,
            "text": rendered.text,
        })
    );

    // The receiver's error page quotes what it was sent.
    receiver.answer(500, format!("boom: {url} wh-signing-secret"));
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "HTTP 500");
    assert!(error.to_string().contains("boom: [redacted] [redacted]"), "{error}");
    assert_secret_free(&error, &secrets);
}

#[tokio::test]
async fn a_webhook_without_a_secret_is_unsigned() {
    setup();
    let receiver = Receiver::start().await;
    let target = Target::Webhook { url: Secret::new(receiver.url("/hook")), secret: None };
    let channel = Channel::new(config(target, Language::ZhCn), TIMEOUT).unwrap();
    receiver.answer(200, "ok");
    channel.send(&alert(), now_ms()).await.unwrap();
    let [request] = receiver.take().try_into().ok().unwrap();
    assert!(request.headers.get("x-customs179-signature").is_none());
    assert_eq!(request.json()["text"], render(&alert(), Language::ZhCn).text.as_str());
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    setup();
    let receiver = Receiver::start().await;
    let target = Target::Webhook { url: Secret::new(receiver.url("/hook")), secret: None };
    let channel = Channel::new(config(target, Language::En), TIMEOUT).unwrap();
    receiver.answer(307, "");
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "HTTP 307");
    assert_eq!(receiver.take().len(), 1);
}

#[tokio::test]
async fn no_answer_is_a_timeout_and_no_server_a_transport_error() {
    setup();
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=silent-token-123", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let target = Target::Webhook { url: Secret::new(url.clone()), secret: None };
    let channel = Channel::new(config(target, Language::En), Duration::from_millis(300)).unwrap();
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "timeout");
    assert_secret_free(&error, &[url.as_str(), "silent-token-123"]);

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=closed-token-456", closed.local_addr().unwrap());
    drop(closed);
    let target = Target::Webhook { url: Secret::new(url.clone()), secret: None };
    let channel = Channel::new(config(target, Language::En), TIMEOUT).unwrap();
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "transport", "{error}");
    assert_secret_free(&error, &[url.as_str(), "closed-token-456", "127.0.0.1"]);
}

#[test]
fn a_bad_url_is_refused_without_quoting_it() {
    setup();
    let target = Target::Wecom { url: Secret::new("ftp://qyapi.example.com/send?key=bad-url-key-1") };
    let error = Channel::new(config(target, Language::En), TIMEOUT).unwrap_err();
    assert_eq!(error, ChannelError::Url);
    let target = Target::Wecom { url: Secret::new("not a url bad-url-key-2") };
    let error = Channel::new(config(target, Language::En), TIMEOUT).unwrap_err();
    assert!(!format!("{error} {error:?}").contains("bad-url-key"));
}

#[test]
fn a_delivery_can_run_on_any_task() {
    fn spawnable<T: Send + Sync + 'static>(_: &T) {}
    fn sendable<F: std::future::Future + Send>(_: F) {}
    setup();
    let target = Target::Wecom { url: Secret::new("https://qyapi.example.com/send?key=k") };
    let channel = Channel::new(config(target, Language::En), TIMEOUT).unwrap();
    spawnable(&channel);
    let alert = alert();
    sendable(channel.send(&alert, 0));
}

// --- WeCom ---------------------------------------------------------------

#[tokio::test]
async fn wecom_gets_the_text_and_its_errcode_decides() {
    setup();
    let receiver = Receiver::start().await;
    let url = receiver.url("/cgi-bin/webhook/send?key=wecom-key-0f1e2d3c");
    let channel =
        Channel::new(config(Target::Wecom { url: Secret::new(url.clone()) }, Language::ZhCn), TIMEOUT)
            .unwrap();
    let secrets = [url.as_str(), "wecom-key-0f1e2d3c"];

    receiver.answer(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    channel.send(&alert(), now_ms()).await.unwrap();
    let [request] = receiver.take().try_into().ok().unwrap();
    assert_eq!(request.query["key"], "wecom-key-0f1e2d3c");
    assert!(request.headers.get("x-customs179-signature").is_none());
    assert_eq!(
        request.json(),
        json!({"msgtype": "text", "text": {"content": render(&alert(), Language::ZhCn).text}})
    );

    receiver.answer(200, r#"{"errcode":93000,"errmsg":"invalid webhook url, key wecom-key-0f1e2d3c"}"#);
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "errcode 93000");
    assert_eq!(error.to_string(), "errcode 93000: invalid webhook url, key [redacted]");
    assert_secret_free(&error, &secrets);

    receiver.answer(500, format!("upstream {url}"));
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "HTTP 500");
    assert_secret_free(&error, &secrets);

    receiver.answer(200, "<html>maintenance</html>");
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "answer");
}

#[tokio::test]
async fn wecom_gets_a_long_chinese_text_cut_to_2048_bytes_on_a_char_boundary() {
    setup();
    let receiver = Receiver::start().await;
    let channel = Channel::new(
        config(Target::Wecom { url: Secret::new(receiver.url("/send?key=k")) }, Language::ZhCn),
        TIMEOUT,
    )
    .unwrap();
    let mut long = alert();
    long.source = "海关".repeat(600);
    long.detail = "口令错误".repeat(200);
    let full = render(&long, Language::ZhCn).text;
    assert!(full.len() > 4_000);

    receiver.answer(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    channel.send(&long, now_ms()).await.unwrap();
    let [request] = receiver.take().try_into().ok().unwrap();
    let content = request.json()["text"]["content"].as_str().unwrap().to_owned();
    assert!(content.len() <= 2_048, "{}", content.len());
    assert!(content.len() > 2_048 - 6, "cut no shorter than needed: {}", content.len());
    let kept = content.strip_suffix('…').expect("a cut text ends with …");
    assert!(full.starts_with(kept));
}

// --- DingTalk ------------------------------------------------------------

#[tokio::test]
async fn dingtalk_gets_a_signed_url_and_its_errcode_decides() {
    setup();
    let receiver = Receiver::start().await;
    let url = receiver.url("/robot/send?access_token=dt-access-token-9a8b");
    let secret = "SEC0123456789abcdef";
    let target = Target::Dingtalk { url: Secret::new(url.clone()), secret: Secret::new(secret) };
    let channel = Channel::new(config(target, Language::ZhCn), TIMEOUT).unwrap();
    let secrets = [url.as_str(), "dt-access-token-9a8b", secret];

    receiver.answer(200, r#"{"errcode":0,"errmsg":"ok"}"#);
    let now = now_ms();
    channel.send(&alert(), now).await.unwrap();
    let [request] = receiver.take().try_into().ok().unwrap();
    assert_eq!(request.path, "/robot/send");
    assert_eq!(request.query["access_token"], "dt-access-token-9a8b");
    let timestamp: i64 = request.query["timestamp"].parse().unwrap();
    assert!((timestamp - now).abs() < 1_000, "{timestamp} vs {now}");
    // The receiver's side: the query is URL-decoded, then compared.
    let expected =
        STANDARD.encode(hmac_sha256(secret.as_bytes(), format!("{timestamp}\n{secret}").as_bytes()));
    assert_eq!(request.query["sign"], expected);
    assert_eq!(
        request.json(),
        json!({"msgtype": "text", "text": {"content": render(&alert(), Language::ZhCn).text}})
    );

    receiver.answer(200, format!(r#"{{"errcode":310000,"errmsg":"sign not match, more: {url}"}}"#));
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "errcode 310000");
    assert!(error.to_string().starts_with("errcode 310000: sign not match"), "{error}");
    assert_secret_free(&error, &secrets);

    receiver.answer(500, format!("{secret} dt-access-token-9a8b"));
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "HTTP 500");
    assert_secret_free(&error, &secrets);
}

// --- Feishu --------------------------------------------------------------

#[tokio::test]
async fn feishu_gets_a_signed_body_and_its_code_decides() {
    setup();
    let receiver = Receiver::start().await;
    let url = receiver.url("/open-apis/bot/v2/hook/fs-hook-token-4c5d6e");
    let secret = "fs-secret-0123";
    let target = Target::Feishu { url: Secret::new(url.clone()), secret: Some(Secret::new(secret)) };
    let channel = Channel::new(config(target, Language::En), TIMEOUT).unwrap();
    let secrets = [url.as_str(), "fs-hook-token-4c5d6e", secret];

    receiver.answer(200, r#"{"code":0,"msg":"success","data":{}}"#);
    let now = now_ms();
    channel.send(&alert(), now).await.unwrap();
    let [request] = receiver.take().try_into().ok().unwrap();
    let body = request.json();
    let timestamp: i64 = body["timestamp"].as_str().expect("the timestamp is a string").parse().unwrap();
    assert!((timestamp - now / 1_000).abs() <= 1, "{timestamp} vs {now}");
    let expected = STANDARD.encode(hmac_sha256(format!("{timestamp}\n{secret}").as_bytes(), b""));
    assert_eq!(
        body,
        json!({
            "timestamp": timestamp.to_string(), "sign": expected,
            "msg_type": "text", "content": {"text": render(&alert(), Language::En).text},
        })
    );

    receiver.answer(200, r#"{"StatusCode":0,"StatusMessage":"success"}"#);
    channel.send(&alert(), now_ms()).await.unwrap();

    receiver.answer(200, r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time, hook fs-hook-token-4c5d6e"}"#);
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "code 19021");
    assert_secret_free(&error, &secrets);

    receiver.answer(200, r#"{"StatusCode":9499,"StatusMessage":"Bad Request"}"#);
    assert_eq!(channel.send(&alert(), now_ms()).await.unwrap_err().code(), "StatusCode 9499");

    receiver.answer(500, format!("at {url}"));
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "HTTP 500");
    assert_secret_free(&error, &secrets);
}

#[tokio::test]
async fn feishu_without_a_secret_sends_no_signature() {
    setup();
    let receiver = Receiver::start().await;
    let target = Target::Feishu { url: Secret::new(receiver.url("/open-apis/bot/v2/hook/x")), secret: None };
    let channel = Channel::new(config(target, Language::En), TIMEOUT).unwrap();
    receiver.answer(200, r#"{"code":0,"msg":"success"}"#);
    channel.send(&alert(), now_ms()).await.unwrap();
    let [request] = receiver.take().try_into().ok().unwrap();
    assert_eq!(
        request.json(),
        json!({"msg_type": "text", "content": {"text": render(&alert(), Language::En).text}})
    );
}

// --- mail ----------------------------------------------------------------

/// What the SMTP server was told.
#[derive(Default)]
struct Transcript {
    /// Every line the client sent, for checking what never was.
    lines: Vec<String>,
    auth: Option<(String, String)>,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// A minimal SMTP server: no STARTTLS, AUTH with `mechanisms`, accepting
/// the login `user`/`password` and refusing any other (quoting it, as a
/// careless server might).
async fn smtp_server(
    mechanisms: &'static str,
    user: &'static str,
    password: &'static str,
) -> (u16, Arc<Mutex<Transcript>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let transcript = Arc::new(Mutex::new(Transcript::default()));
    let shared = transcript.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut next = async || {
                    let line = lines.next_line().await.ok().flatten();
                    if let Some(line) = &line {
                        shared.lock().unwrap().lines.push(line.clone());
                    }
                    line
                };
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                while let Some(line) = next().await {
                    let upper = line.to_ascii_uppercase();
                    let decode = |b64: &str| String::from_utf8(STANDARD.decode(b64.trim()).unwrap()).unwrap();
                    let login = if let Some(initial) = upper.strip_prefix("AUTH PLAIN ").map(|_| &line[11..])
                    {
                        let plain = decode(initial);
                        let mut parts = plain.split('\0').skip(1);
                        Some((parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned()))
                    } else if upper == "AUTH LOGIN" {
                        write.write_all(b"334 VXNlcm5hbWU6\r\n").await.unwrap();
                        let name = decode(&next().await.unwrap());
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await.unwrap();
                        Some((name, decode(&next().await.unwrap())))
                    } else {
                        None
                    };
                    let reply = if let Some((name, pass)) = login {
                        let ok = name == user && pass == password;
                        shared.lock().unwrap().auth = Some((name.clone(), pass.clone()));
                        if ok {
                            "235 2.7.0 accepted".into()
                        } else {
                            format!("535 5.7.8 bad login {name}:{pass}")
                        }
                    } else if upper.starts_with("EHLO") {
                        format!("250-test\r\n250-8BITMIME\r\n250-AUTH {mechanisms}\r\n250 SIZE 1000000")
                    } else if upper.starts_with("MAIL FROM:") {
                        shared.lock().unwrap().mail_from = address(&line);
                        "250 2.1.0 ok".into()
                    } else if upper.starts_with("RCPT TO:") {
                        shared.lock().unwrap().rcpt_to.push(address(&line));
                        "250 2.1.5 ok".into()
                    } else if upper == "DATA" {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Some(line) = next().await {
                            if line == "." {
                                break;
                            }
                            data.push_str(line.strip_prefix('.').unwrap_or(&line));
                            data.push('\n');
                        }
                        shared.lock().unwrap().data = data;
                        "250 2.0.0 queued".into()
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        "502 5.5.2 not implemented".into()
                    };
                    write.write_all(format!("{reply}\r\n").as_bytes()).await.unwrap();
                }
            });
        }
    });
    (port, transcript)
}

/// The address between `<` and `>`.
fn address(line: &str) -> String {
    line.split_once('<').and_then(|(_, rest)| rest.split_once('>')).unwrap().0.to_owned()
}

fn mail(port: u16, tls: MailTls, password: &str) -> Target {
    Target::Mail(Mail {
        host: "127.0.0.1".into(),
        port,
        tls,
        login: Some(("alerts@example.com".into(), Secret::new(password))),
        from: "customs179 <alerts@example.com>".into(),
        to: vec!["ops@example.com".into(), "oncall@example.org".into()],
    })
}

#[tokio::test]
async fn mail_logs_in_and_sends_the_text_to_every_recipient() {
    for mechanisms in ["PLAIN LOGIN", "LOGIN"] {
        let (port, transcript) = smtp_server(mechanisms, "alerts@example.com", "mail-pass-Zq9").await;
        let channel =
            Channel::new(config(mail(port, MailTls::None, "mail-pass-Zq9"), Language::En), TIMEOUT).unwrap();
        assert!(!format!("{channel:?}").contains("mail-pass"));
        channel.send(&alert(), now_ms()).await.unwrap();

        let transcript = transcript.lock().unwrap();
        assert_eq!(
            transcript.auth,
            Some(("alerts@example.com".into(), "mail-pass-Zq9".into())),
            "{mechanisms}"
        );
        assert_eq!(transcript.mail_from, "alerts@example.com");
        assert_eq!(transcript.rcpt_to, ["ops@example.com", "oncall@example.org"]);
        let (headers, body) = transcript.data.split_once("\n\n").expect("headers, then the body");
        let rendered = render(&alert(), Language::En);
        assert!(headers.contains(&format!("Subject: {}\n", rendered.subject)), "{headers}");
        assert!(headers.contains("To: ops@example.com, oncall@example.org\n"), "{headers}");
        assert!(headers.contains("Content-Type: text/plain; charset=utf-8\n"), "{headers}");
        assert_eq!(body.trim_end(), rendered.text);
    }
}

#[tokio::test]
async fn a_refused_login_is_an_smtp_error_without_the_password() {
    let (port, transcript) = smtp_server("PLAIN LOGIN", "alerts@example.com", "the-right-one").await;
    let channel =
        Channel::new(config(mail(port, MailTls::None, "mail-pass-Zq9"), Language::En), TIMEOUT).unwrap();
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "smtp 535", "{error}");
    assert!(error.to_string().contains("bad login alerts@example.com:[redacted]"), "{error}");
    assert_secret_free(&error, &["mail-pass-Zq9"]);
    assert!(transcript.lock().unwrap().rcpt_to.is_empty());
}

#[tokio::test]
async fn starttls_is_required_so_a_server_without_it_never_gets_the_login() {
    setup();
    let (port, transcript) = smtp_server("PLAIN LOGIN", "alerts@example.com", "mail-pass-Zq9").await;
    let channel =
        Channel::new(config(mail(port, MailTls::Starttls, "mail-pass-Zq9"), Language::En), TIMEOUT).unwrap();
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "smtp", "{error}");
    assert_secret_free(&error, &["mail-pass-Zq9"]);

    let transcript = transcript.lock().unwrap();
    assert!(
        transcript.lines.iter().any(|line| line.starts_with("EHLO")),
        "the client spoke: {:?}",
        transcript.lines
    );
    let plain = STANDARD.encode("\0alerts@example.com\0mail-pass-Zq9");
    let login = STANDARD.encode("mail-pass-Zq9");
    for line in &transcript.lines {
        assert!(!line.to_ascii_uppercase().starts_with("AUTH"), "{line}");
        assert!(
            !line.contains("mail-pass-Zq9") && !line.contains(&plain) && !line.contains(&login),
            "{line}"
        );
    }
    assert!(transcript.auth.is_none() && transcript.mail_from.is_empty());
}

#[tokio::test]
async fn a_silent_smtp_server_is_a_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let channel = Channel::new(
        config(mail(port, MailTls::None, "mail-pass-Zq9"), Language::En),
        Duration::from_millis(300),
    )
    .unwrap();
    let error = channel.send(&alert(), now_ms()).await.unwrap_err();
    assert_eq!(error.code(), "timeout");
}

#[test]
fn a_mail_channel_needs_valid_addresses_and_a_recipient() {
    setup();
    let Target::Mail(mut m) = mail(25, MailTls::None, "p") else { unreachable!() };
    m.to.clear();
    let error = Channel::new(config(Target::Mail(m.clone()), Language::En), TIMEOUT).unwrap_err();
    assert_eq!(error, ChannelError::NoRecipient);
    m.to = vec!["not an address".into()];
    let error = Channel::new(config(Target::Mail(m), Language::En), TIMEOUT).unwrap_err();
    assert!(
        matches!(error, ChannelError::Address { ref address, .. } if address == "not an address"),
        "{error}"
    );
}
