//! `customs179 serve` as a real process, killed while customs' calls are in
//! flight: every call answered 10000 must be in the database afterwards.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

mod common;

use common::{closed_port, developer_overrides, http_client, listed_requests, now_ms, stored_session_ids};

const ADMIN_TOKEN: &str = "kill-tests-admin-token-0123456789";
/// Distinctive, so that finding it in a log cannot be a coincidence.
const PIN: &str = "pin-7f3a9c1e";
const INTAKE_PATH: &str = "/platDataOpen";
const SENDERS: usize = 6;

// ---------------------------------------------------------------------------
// Helpers.

/// A `serve` process; killed when dropped, so a failing test leaves none behind.
struct Serve {
    child: Child,
    intake_port: u16,
    admin_port: u16,
    stderr: PathBuf,
}

impl Serve {
    /// Writes a configuration for `db` with fresh ports into `dir` and starts
    /// `customs179 serve` on it, returning once it says it has started.
    async fn start(dir: &Path, db: &Path, name: &str) -> Serve {
        let mut serve = Serve::spawn(dir, db, name).await;
        serve.wait_until_started().await;
        serve
    }

    /// Like [`Serve::start`], but returns as soon as both ports accept connections.
    async fn spawn(dir: &Path, db: &Path, name: &str) -> Serve {
        let (intake_port, admin_port) = (closed_port(), closed_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[intake]
listen = "127.0.0.1:{intake_port}"
path = "{INTAKE_PATH}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{ADMIN_TOKEN}"

[store]
path = {db:?}

[enterprise]
ebp_code = "1234567890"

[signer]
pin = "{PIN}"

[customs]
environment = "test"

[log]
level = "info"
"#,
                db = db.to_str().unwrap()
            ),
        )
        .unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_customs179"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap());
        for name in developer_overrides() {
            command.env_remove(name);
        }
        let mut serve = Serve { child: command.spawn().unwrap(), intake_port, admin_port, stderr };
        serve.wait_until_listening().await;
        serve
    }

    async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.intake_port, self.admin_port] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("serve exited ({status}) before listening:\n{}", self.log());
                }
                assert!(Instant::now() < deadline, "serve does not listen on {port}:\n{}", self.log());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// The ports accept connections as soon as they are bound, before
    /// start-up has ended (and before SIGTERM is handled): wait for the log.
    async fn wait_until_started(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains("customs179 started") {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited ({status}) during start-up:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "serve does not say it started:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn intake_url(&self) -> String {
        format!("http://127.0.0.1:{}{INTAKE_PATH}", self.intake_port)
    }

    fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    async fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client() -> reqwest::Client {
    http_client(Some(Duration::from_secs(15)))
}

/// Sends customs calls with unique sessionIDs until one fails, returning the
/// sessionIDs answered HTTP 200 with code 10000.
async fn send_until_failure(
    client: reqwest::Client,
    url: String,
    prefix: String,
    answered_count: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut answered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let session_id = format!("{prefix}-{i}");
        let open_req =
            serde_json::json!({ "orderNo": "SO-kill", "sessionID": session_id, "serviceTime": now_ms() })
                .to_string();
        let Ok(response) = client.post(&url).form(&[("openReq", open_req)]).send().await else {
            break;
        };
        let status = response.status();
        let Ok(body) = response.bytes().await else {
            break;
        };
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && answer["code"] == "10000" {
            answered.push(session_id);
            answered_count.fetch_add(1, Ordering::Relaxed);
        } else {
            assert_ne!(answer["code"], "10000", "10000 with HTTP {status}");
            break;
        }
    }
    answered
}

/// Starts `SENDERS` senders against `url`.
fn start_senders(
    client: &reqwest::Client,
    url: &str,
    prefix: &str,
) -> (JoinSet<Vec<String>>, Arc<AtomicUsize>) {
    let answered_count = Arc::new(AtomicUsize::new(0));
    let mut senders = JoinSet::new();
    for sender in 0..SENDERS {
        senders.spawn(send_until_failure(
            client.clone(),
            url.to_owned(),
            format!("{prefix}-{sender}"),
            answered_count.clone(),
        ));
    }
    (senders, answered_count)
}

async fn wait_for_answers(answered_count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered_count.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "fewer than {at_least} calls answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn join_senders(mut senders: JoinSet<Vec<String>>) -> HashSet<String> {
    let mut answered = HashSet::new();
    let deadline = Duration::from_secs(20);
    while let Some(result) = tokio::time::timeout(deadline, senders.join_next()).await.expect("senders stop")
    {
        answered.extend(result.unwrap());
    }
    answered
}

fn assert_all_stored(answered: &HashSet<String>, stored: &HashSet<String>) {
    let mut lost: Vec<&String> = answered.difference(stored).collect();
    lost.sort();
    assert!(lost.is_empty(), "{} answered 10000 but not stored: {lost:?}", lost.len());
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("customs179.db");
    let client = client();

    let mut serve = Serve::start(dir.path(), &db, "first").await;
    let (senders, answered_count) = start_senders(&client, &serve.intake_url(), "S-kill");
    wait_for_answers(&answered_count, 200).await;
    serve.kill();
    let answered = join_senders(senders).await;
    assert!(answered.len() >= 200, "only {} answered", answered.len());

    let stored = stored_session_ids(&db).await;
    assert_all_stored(&answered, &stored);

    // Restarted on the same database, the service lists them all.
    let mut serve = Serve::start(dir.path(), &db, "second").await;
    let listed = listed_requests(&client, &serve.admin_url(), ADMIN_TOKEN).await;
    let listed_ids: HashSet<String> =
        listed.iter().map(|r| r["session_id"].as_str().unwrap().to_owned()).collect();
    assert_all_stored(&answered, &listed_ids);
    assert_eq!(listed_ids, stored, "the admin API lists what the database holds");
    assert!(listed.iter().all(|r| r["state"] == "waiting"));
    let status = serve.terminate().await;
    assert!(status.success(), "{status}:\n{}", serve.log());
}

/// A SIGTERM that comes while `serve` is still starting (its ports already
/// listen, so customs' calls are already being answered) must stop it
/// gracefully too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_as_soon_as_the_ports_listen_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("customs179.db");
    let mut serve = Serve::spawn(dir.path(), &db, "serve").await;
    let status = serve.terminate().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_with_status_0_keeping_every_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("customs179.db");
    let client = client();

    let mut serve = Serve::start(dir.path(), &db, "serve").await;
    let (senders, answered_count) = start_senders(&client, &serve.intake_url(), "S-term");
    wait_for_answers(&answered_count, 50).await;
    let status = serve.terminate().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", serve.log());
    let answered = join_senders(senders).await;
    assert!(answered.len() >= 50, "only {} answered", answered.len());

    assert_all_stored(&answered, &stored_session_ids(&db).await);
    // The log names what it did, and never a secret.
    let log = serve.log();
    let one = answered.iter().next().unwrap();
    assert!(log.contains("customs179 started") && log.contains(one.as_str()), "{log}");
    assert!(!log.contains(PIN) && !log.contains(ADMIN_TOKEN), "a secret is in the log:\n{log}");
    // The port is released: nothing answers any more.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", serve.intake_port)).await.is_err());
}
