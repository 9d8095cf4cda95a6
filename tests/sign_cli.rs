//! `customs179 sign` and `customs179 resume signing` as real processes, against the
//! EportClient simulator running in the test (the binary connects to its WebSocket) and the
//! SQLite file named by the configuration.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use customs179_core::SignatureVerifier;
use customs179_sim::eport::{self, Algo, EportSimOptions, RunningEportSim, TAG_WRONG_PIN};
use customs179_store::{Stage, Store};
use tokio::io::AsyncWriteExt as _;

mod common;

use common::postgres::Schema;
use common::{developer_overrides, stderr, stdout};

const PIN: &str = "88888888";
const WRONG_PIN: &str = "24681357";
/// Non-ASCII and no trailing newline: the card signs exactly these UTF-8 bytes.
const TEXT: &str = r#""sessionID":"S-cli"||"payExchangeInfoHead":{"note":"命令行 ✓"}||"serviceTime":"1""#;

async fn start_sim(dir: &Path) -> RunningEportSim {
    let options = EportSimOptions::new(([127, 0, 0, 1], 0).into(), Algo::Sm2, PIN, dir.join("card"));
    eport::start(options).await.expect("the simulator starts")
}

/// A configuration file, its database and a text file to sign, in a directory of their own.
struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    /// The database, when the test runs on PostgreSQL.
    schema: Option<Schema>,
    text: PathBuf,
}

impl Setup {
    async fn new(sim: &RunningEportSim, dir: tempfile::TempDir, pin: &str) -> Setup {
        let db = dir.path().join("customs179.sqlite");
        let (store, schema) = common::store_toml(&db).await;
        let config = dir.path().join("customs179.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[admin]
token = "admin-token-0123456789"

[store]
{store}

[enterprise]
ebp_code = "EBP4401960ABC"

[signer]
url = "{url}"
pin = "{pin}"
timeout_ms = 2000

[customs]
environment = "test"
"#,
                url = sim.ws_url(),
            ),
        )
        .unwrap();
        let text = dir.path().join("presign.txt");
        std::fs::write(&text, TEXT).unwrap();
        Setup { _dir: dir, config, db, schema, text }
    }

    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    async fn store(&self) -> Store {
        match &self.schema {
            Some(schema) => Store::connect(&schema.url()).await.unwrap(),
            None => Store::open(&self.db).await.unwrap(),
        }
    }

    /// The card's own signing pause: what a PIN problem sets.
    async fn signing_pause(&self) -> Option<customs179_store::Pause> {
        let store = self.store().await;
        let pause = store.card_pause_of("card", Stage::Signing).await.unwrap();
        store.close().await;
        pause
    }
}

/// Runs `customs179 ARGS` with `stdin`, without any CUSTOMS179_* variable of the test's own
/// environment.
async fn customs179(args: &[&str], stdin: &str) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_customs179"));
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for name in developer_overrides() {
        command.env_remove(name);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// The two lines of a successful `sign`: certNo, then signValue, which must verify.
fn assert_signed(output: &Output, sim: &RunningEportSim) {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    let out = stdout(output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], sim.cert_no().as_str());
    let verifier = SignatureVerifier::from_bytes(sim.keys().cert_der()).unwrap();
    verifier.verify(TEXT.as_bytes(), lines[1]).expect("the printed signature verifies");
}

both_stores! {
async fn sign_prints_cert_no_and_a_signature_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let setup = Setup::new(&sim, dir, PIN).await;
    let output = customs179(&["sign", "--config", setup.config(), setup.text.to_str().unwrap()], "").await;
    assert_signed(&output, &sim);
    // Standard input works the same.
    let output = customs179(&["sign", "--config", setup.config(), "-"], TEXT).await;
    assert_signed(&output, &sim);
    let stats = sim.stats();
    assert_eq!((stats.sign_requests, stats.signatures, stats.wrong_pins), (2, 2, 0));
    assert!(setup.signing_pause().await.is_none());
}
}

both_stores! {
async fn sign_refuses_while_signing_is_paused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let setup = Setup::new(&sim, dir, PIN).await;
    let store = setup.store().await;
    store.pause(Stage::Signing, "the operator is changing the card", 0).await.unwrap();
    store.close().await;

    let output = customs179(&["sign", "--config", setup.config(), setup.text.to_str().unwrap()], "").await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let err = stderr(&output);
    assert!(err.contains("paused") && err.contains("the operator is changing the card"), "{err}");
    assert!(err.contains("resume") && err.contains("--force"), "says how to go on: {err}");
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.sign_requests), (0, 0), "the card was not touched");

    let output =
        customs179(&["sign", "--config", setup.config(), "--force", setup.text.to_str().unwrap()], "").await;
    assert_signed(&output, &sim);
    assert_eq!(sim.stats().signatures, 1);
    let store = setup.store().await;
    let pause = store.pause_of(Stage::Signing).await.unwrap().expect("--force leaves the pause in place");
    store.close().await;
    assert_eq!(pause.reason, "the operator is changing the card");
}
}

both_stores! {
async fn a_wrong_pin_pauses_signing_and_resume_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let setup = Setup::new(&sim, dir, WRONG_PIN).await;

    let output = customs179(&["sign", "--config", setup.config(), setup.text.to_str().unwrap()], "").await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let err = stderr(&output);
    assert!(err.contains(TAG_WRONG_PIN) && err.contains("paused"), "{err}");
    assert!(!err.contains(WRONG_PIN) && !err.contains(PIN), "no PIN in: {err}");
    let stats = sim.stats();
    assert_eq!((stats.sign_requests, stats.wrong_pins, stats.signatures), (1, 1, 0));

    let pause = setup.signing_pause().await.expect("signing is paused in the store");
    assert!(pause.reason.contains(TAG_WRONG_PIN), "the card's answer: {}", pause.reason);
    assert!(!pause.reason.contains(WRONG_PIN), "{}", pause.reason);

    // The next run does not try the card again.
    let output = customs179(&["sign", "--config", setup.config(), setup.text.to_str().unwrap()], "").await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("paused"), "{}", stderr(&output));
    assert_eq!(sim.stats().sign_requests, 1, "no second wrong PIN");

    let output = customs179(&["resume", "--config", setup.config(), "signing", "--card", "nope"], "").await;
    assert_eq!(output.status.code(), Some(2), "an unknown card is bad input: {}", stderr(&output));
    let output = customs179(&["resume", "--config", setup.config(), "signing", "--card", "card"], "").await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("signing on card card resumed") && out.contains(&pause.reason), "{out}");
    assert!(setup.signing_pause().await.is_none(), "the pause is cleared");

    let output = customs179(&["resume", "--config", setup.config(), "signing", "--card", "card"], "").await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("was not paused"), "{}", stdout(&output));
    assert_eq!(sim.stats().wrong_pins, 1);
}
}

both_stores! {
async fn a_sign_without_an_answer_pauses_signing_since_the_pin_is_unproven() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    // Slower than the configured 2 s: the card may well check the PIN after we gave up.
    sim.update_faults(&eport::FaultsUpdate { latency_ms: Some(3_000), ..eport::FaultsUpdate::default() });
    let setup = Setup::new(&sim, dir, PIN).await;
    let output = customs179(&["sign", "--config", setup.config(), setup.text.to_str().unwrap()], "").await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("unproven PIN") && err.contains("paused"), "{err}");
    let pause = setup.signing_pause().await.expect("signing is paused in the store");
    assert!(pause.reason.contains("no answer within 2000 ms"), "{}", pause.reason);
    let store = setup.store().await;
    assert!(store.pins_in_flight().await.unwrap().is_empty(), "the pause replaced the mark");
    store.close().await;
    assert_eq!(sim.stats().sign_requests, 1);
}
}

both_stores! {
async fn a_mark_left_by_a_dead_process_pauses_signing_before_the_card_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let setup = Setup::new(&sim, dir, PIN).await;
    let store = setup.store().await;
    store.mark_pin_in_flight("the service (card card)", "card", sim.cert_no().as_str(), 1).await.unwrap();
    store.close().await;

    let output = customs179(&["sign", "--config", setup.config(), setup.text.to_str().unwrap()], "").await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("unproven PIN") && err.contains("the service"), "{err}");
    let pause = setup.signing_pause().await.expect("signing is paused in the store");
    assert!(pause.reason.contains(sim.cert_no().as_str()), "{}", pause.reason);
    assert_eq!(sim.stats().connections, 0, "the card was not touched");
}
}

both_stores! {
async fn doctor_obeys_the_pin_rule_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    sim.update_faults(&eport::FaultsUpdate { hang: Some(3), ..eport::FaultsUpdate::default() });
    let setup = Setup::new(&sim, dir, PIN).await;
    // The certificate calls hang too (no PIN in them): the doctor says the signer is down.
    let output = customs179(&["doctor", "--config", setup.config()], "").await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(setup.signing_pause().await.is_none(), "no PIN was sent, nothing to pause for");

    // Now the certificate calls go through and the test signature hangs.
    sim.update_faults(&eport::FaultsUpdate {
        hang: Some(0),
        latency_ms: Some(3_000),
        ..eport::FaultsUpdate::default()
    });
    let output = customs179(&["doctor", "--config", setup.config()], "").await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let out = stdout(&output);
    assert!(out.contains("[FAIL] test signature") && out.contains("unproven PIN"), "{out}");
    assert!(setup.signing_pause().await.is_some());
    assert!(!out.contains(PIN), "{out}");
}
}
