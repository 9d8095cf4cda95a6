//! Never lock the card, never miss a deadline because of a crash: `customs179 serve` as a real
//! process against the EportClient and customs simulators, with slow cards, wrong PINs,
//! locked cards, unusable signatures, SIGKILLs and a second `serve` on the same database.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use customs179_eport::SignerClient;
use customs179_sim::customs::{CustomsFaultsUpdate, RunningCustomsSim};
use customs179_sim::eport::{self, Algo, EportSimOptions, FaultsUpdate, RunningEportSim, Stats};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::postgres::Schema;
use common::serve::ServeProcess;
use common::{ADMIN_TOKEN, Api, loopback, now_ms};

const PIN: &str = "pin-5d81c2e7";
const WRONG_PIN: &str = "pin-00000000";
const WAIT: Duration = Duration::from_secs(20);

/// The card and customs, both simulated, in this process: they outlive the service's kills.
struct Rig {
    dir: TempDir,
    card_dir: TempDir,
    card: RunningEportSim,
    customs: RunningCustomsSim,
    /// Every `serve`'s database, when the test runs on PostgreSQL.
    schema: Option<Schema>,
}

impl Rig {
    async fn start() -> Rig {
        let (dir, card_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let card = start_card(loopback(), card_dir.path()).await;
        let customs = common::customs_registering(&card, &dir.path().join("certs")).await;
        Rig { dir, card_dir, card, customs, schema: Schema::for_backend().await }
    }

    /// A `serve` signing with `pin`, each Sign given `timeout_ms`; started by the caller.
    fn serve(&self, pin: &str, timeout_ms: u64) -> ServeProcess {
        ServeProcess::configure(
            self.dir.path(),
            &format!(
                r#"
[signer]
url = "{}"
pin = "{pin}"
timeout_ms = {timeout_ms}

[customs]
environment = "test"
upload_url = "{}"
timeout_ms = 1000
retry_max_secs = 1
"#,
                self.card.ws_url(),
                self.customs.upload_url()
            ),
        )
        .on_schema(self.schema.as_ref())
    }

    fn card_faults(&self, update: FaultsUpdate) {
        self.card.update_faults(&update);
    }

    async fn wait_for_card(&self, what: &str, check: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.card.stats();
            if check(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "the card never saw {what}: {stats:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many uploads of `session_id` customs stored.
    fn stored_at_customs(&self, session_id: &str) -> usize {
        let report = self.customs.report();
        report.uploads.iter().filter(|u| u.stored && u.session_id.as_deref() == Some(session_id)).count()
    }
}

async fn start_card(addr: SocketAddr, dir: &Path) -> RunningEportSim {
    eport::start(EportSimOptions::new(addr, Algo::Sm2, PIN, dir)).await.unwrap()
}

impl Api {
    /// customs asks for order `SO-{n}` and the platform pays it: ready to sign.
    async fn paid_request(&self, n: &str) -> String {
        let session_id = format!("S-{n}");
        self.customs_call(&format!("SO-{n}"), &session_id).await;
        self.platform_pays(&format!("T-{n}"), &[&format!("SO-{n}")]).await;
        session_id
    }

    async fn signing_control(&self) -> Value {
        // The card's own pause: what a PIN problem sets.
        self.controls().await["cards"][0]["signing"].clone()
    }

    /// Waits until signing is paused and returns its reason.
    async fn wait_signing_paused(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let signing = self.signing_control().await;
            if signing["paused"] == true {
                return signing["reason"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "signing never paused: {signing}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn resume_signing(&self) {
        let (status, answer) = self.post("/api/control/cards/card/signing/resume", "{}").await;
        assert_eq!(status, 200, "{answer}");
    }
}

fn attempts_of(detail: &Value, step: &str) -> Vec<(String, String)> {
    detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"] == step)
        .map(|a| (a["outcome"].as_str().unwrap().to_owned(), a["detail"].as_str().unwrap_or("").to_owned()))
        .collect()
}

both_stores! {
async fn a_slow_card_and_a_wrong_pin_get_one_try_and_the_pause_survives_a_restart() {
    let rig = Rig::start().await;
    // The card answers after the service has given up on it.
    rig.card_faults(FaultsUpdate { latency_ms: Some(1_500), ..FaultsUpdate::default() });
    let mut serve = rig.serve(WRONG_PIN, 1_000);
    serve.start().await;
    let first = serve.paid_request("1").await;
    serve.paid_request("2").await;
    let reason = serve.wait_signing_paused().await;
    assert!(reason.contains("unproven PIN") && reason.contains("no answer within 1000 ms"), "{reason}");
    // The card did count the wrong PIN, once; nothing more carrying it is sent.
    rig.wait_for_card("the wrong PIN", |s| s.wrong_pins == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = rig.card.stats();
    assert_eq!((stats.sign_requests, stats.wrong_pins, stats.locked), (1, 1, false), "{stats:?}");
    let detail = serve.detail(&first).await;
    assert_eq!(detail["state"], "ready", "waits to be signed, not failed: {detail:#}");

    // A restart (even a graceful one) does not forget it.
    let status = serve.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}:\n{}", serve.log());
    serve.start().await;
    assert_eq!(serve.signing_control().await["reason"], reason.as_str());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.card.stats().sign_requests, 1);
    let log = serve.log();
    assert!(!log.contains(WRONG_PIN) && !log.contains(ADMIN_TOKEN), "a secret is in the log:\n{log}");
}
}

both_stores! {
async fn a_slow_card_with_a_proven_pin_is_retried_and_everything_is_delivered() {
    let rig = Rig::start().await;
    let mut serve = rig.serve(PIN, 1_000);
    serve.start().await;
    let first = serve.paid_request("1").await;
    serve.wait_for_state(&first, "delivered", WAIT).await;

    // Proven now: a Sign without an answer is an outage, retried with backoff.
    rig.card_faults(FaultsUpdate { latency_ms: Some(1_500), ..FaultsUpdate::default() });
    let slow: Vec<String> = [serve.paid_request("2").await, serve.paid_request("3").await].into();
    rig.wait_for_card("two slow Signs", |s| s.sign_requests >= 3).await;
    serve.wait_until(&slow[0], WAIT, |d| attempts_of(d, "sign").iter().any(|(o, _)| o == "retry")).await;
    rig.card_faults(FaultsUpdate { latency_ms: Some(0), ..FaultsUpdate::default() });
    for session_id in &slow {
        serve.wait_for_state(session_id, "delivered", WAIT).await;
        assert_eq!(rig.stored_at_customs(session_id), 1);
    }
    let retried = attempts_of(&serve.detail(&slow[0]).await, "sign");
    assert!(retried.iter().any(|(o, d)| o == "retry" && d.contains("got no answer")), "{retried:?}");
    assert_eq!(serve.signing_control().await["paused"], false);
    assert_eq!(rig.card.stats().wrong_pins, 0);
}
}

both_stores! {
async fn a_wrong_pin_and_a_locked_card_pause_signing_at_the_first_refusal() {
    let rig = Rig::start().await;
    let mut serve = rig.serve(WRONG_PIN, 2_000);
    serve.start().await;
    for n in 1..=3 {
        serve.paid_request(&n.to_string()).await;
    }
    let reason = serve.wait_signing_paused().await;
    assert!(reason.contains("the card refused") && reason.contains("Err:Sim61001"), "{reason}");
    let card = serve.get("/api/status").await["cards"][0].clone();
    assert_eq!(card["paused"]["reason"], reason.as_str(), "{card}");
    assert!(card["last_error"].as_str().is_some_and(|e| e.contains("Err:Sim61001")), "{card}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((rig.card.stats().sign_requests, rig.card.stats().wrong_pins), (1, 1));
    // Each resume is one more try: the operator decides, the service never retries alone.
    serve.resume_signing().await;
    serve.wait_signing_paused().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((rig.card.stats().sign_requests, rig.card.stats().wrong_pins), (2, 2));
    serve.kill();

    // Someone else locked the card meanwhile; the right PIN meets a locked card.
    let client = SignerClient::new(rig.card.ws_url(), Duration::from_secs(5));
    assert!(client.sign("x", WRONG_PIN).await.is_err());
    assert!(rig.card.stats().locked);
    let mut serve = rig.serve(PIN, 2_000);
    serve.start().await;
    serve.resume_signing().await;
    let reason = serve.wait_signing_paused().await;
    assert!(reason.contains("Err:Sim61002"), "{reason}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.card.stats().sign_requests, 4, "one Sign met the locked card, then none");
}
}

both_stores! {
async fn a_kill_while_an_unproven_pin_is_in_flight_pauses_the_next_start() {
    let rig = Rig::start().await;
    rig.card_faults(FaultsUpdate { latency_ms: Some(3_000), ..FaultsUpdate::default() });
    let mut serve = rig.serve(PIN, 10_000);
    serve.start().await;
    let session_id = serve.paid_request("1").await;
    rig.wait_for_card("the Sign", |s| s.sign_requests == 1).await;
    serve.kill();

    rig.card_faults(FaultsUpdate { latency_ms: Some(0), ..FaultsUpdate::default() });
    serve.start().await;
    let reason = serve.signing_control().await["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("unproven PIN") && reason.contains(rig.card.cert_no().as_str()), "{reason}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.card.stats().sign_requests, 1, "nothing carrying the PIN is sent while paused");
    assert!(serve.log().contains("SIGNING PAUSED at start"), "{}", serve.log());

    // The operator checks the PIN and resumes: the request goes through.
    serve.resume_signing().await;
    serve.wait_for_state(&session_id, "delivered", WAIT).await;
    assert_eq!(rig.stored_at_customs(&session_id), 1);
}
}

both_stores! {
async fn work_claimed_by_a_killed_process_resumes_within_a_second_of_the_restart() {
    let rig = Rig::start().await;
    let mut serve = rig.serve(PIN, 10_000);
    serve.start().await;
    // One request held at customs (which does not answer), one at the card.
    rig.customs
        .update_faults(&CustomsFaultsUpdate {
            next_timeout: Some(100),
            timeout_ms: Some(5_000),
            ..CustomsFaultsUpdate::default()
        })
        .unwrap();
    let at_customs = serve.paid_request("1").await;
    serve.wait_for_state(&at_customs, "signed", WAIT).await;
    // Proven by that signature, so a kill mid-Sign leaves no mark.
    rig.card_faults(FaultsUpdate { latency_ms: Some(5_000), ..FaultsUpdate::default() });
    let at_card = serve.paid_request("2").await;
    rig.wait_for_card("the Sign", |s| s.sign_requests == 2).await;
    let report_wait = Instant::now() + WAIT;
    while rig.customs.report().totals.received == 0 {
        assert!(Instant::now() < report_wait, "the upload never reached customs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    serve.kill();

    rig.card_faults(FaultsUpdate { latency_ms: Some(0), ..FaultsUpdate::default() });
    rig.customs
        .update_faults(&CustomsFaultsUpdate { next_timeout: Some(0), ..CustomsFaultsUpdate::default() })
        .unwrap();
    let restarted = now_ms();
    serve.start().await;
    // Taken up again at once: the leases were 120 s (card) and 3 s (customs) long. The card
    // itself may still be busy with the dead process's Sign, so look at when work reached it.
    rig.wait_for_card("the Sign again", |s| s.sign_requests == 3).await;
    let resigned = now_ms() - restarted;
    assert!(resigned < 2_000, "the claimed Sign was sent again {resigned} ms after the restart");
    for session_id in [&at_card, &at_customs] {
        serve.wait_for_state(session_id, "delivered", Duration::from_secs(15)).await;
        assert_eq!(rig.stored_at_customs(session_id), 1);
    }
    let reuploaded = rig
        .customs
        .report()
        .uploads
        .iter()
        .filter(|u| u.session_id.as_deref() == Some(at_customs.as_str()))
        .map(|u| i64::try_from(u.time_ms).unwrap() - restarted)
        .find(|&after| after > 0)
        .unwrap();
    assert!(reuploaded < 2_000, "the claimed upload was sent again {reuploaded} ms after the restart");
    assert!(serve.log().contains("released"), "{}", serve.log());
    assert_eq!(serve.signing_control().await["paused"], false);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_a_sqlite_database_in_use_exits_2_and_the_first_keeps_working() {
    let rig = Rig::start().await;
    let mut first = rig.serve(PIN, 5_000);
    first.start().await;
    let mut second = rig.serve(PIN, 5_000);
    assert_eq!(first.db, second.db);
    second.spawn();
    let status = second.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(2), "{}", second.log());
    let log = second.log();
    assert!(log.contains("another customs179 serve is using the database"), "{log}");
    // It bound nothing: its ports are free, and the first serves on.
    assert!(tokio::net::TcpStream::connect(second.intake.trim_start_matches("http://")).await.is_err());
    let session_id = first.paid_request("1").await;
    first.wait_for_state(&session_id, "delivered", WAIT).await;
}

/// Which instance the status says drives the card ("" for none).
fn driver(status: &Value) -> String {
    status["cards"][0]["driven_by"].as_str().unwrap_or_default().to_owned()
}

/// Two `serve` on the rig's database: the first drives the card (its name is returned), the
/// second stands by.
async fn driver_and_standby(rig: &Rig) -> (ServeProcess, String, ServeProcess) {
    let mut first = rig.serve(PIN, 5_000);
    first.start().await;
    let first_name = common::eventually("the first drives the card", WAIT, || async {
        let name = driver(&first.get("/api/status").await);
        if name.is_empty() { Err("no driver".to_owned()) } else { Ok(name) }
    })
    .await;
    let mut second = rig.serve(PIN, 5_000);
    second.start().await;
    common::eventually("the second sees the first drive the card", WAIT, || async {
        let status = second.get("/api/status").await;
        let alive = status["instances"].as_array().unwrap().iter().filter(|i| i["alive"] == true).count();
        let standing_by = second.log().contains("another instance drives the card; this one stands by");
        if driver(&status) == first_name && alive == 2 && standing_by {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
    (first, first_name, second)
}

/// The instance driving the card dies while the card checks an unproven PIN: the instance
/// that takes the card over pauses its signing and sends nothing, where a second Sign could
/// be a second wrong PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_taken_over_from_an_instance_killed_mid_pin_is_paused_not_tried_again() {
    common::postgres::on_store(common::postgres::Backend::Postgres, async {
        let rig = Rig::start().await;
        rig.card_faults(FaultsUpdate { latency_ms: Some(3_000), ..FaultsUpdate::default() });
        let (mut first, first_name, second) = driver_and_standby(&rig).await;
        let session_id = first.paid_request("1").await;
        rig.wait_for_card("the Sign", |s| s.sign_requests == 1).await;
        first.kill();
        rig.card_faults(FaultsUpdate { latency_ms: Some(0), ..FaultsUpdate::default() });

        let reason = common::eventually("the survivor pauses the card", WAIT, || async {
            let signing = second.signing_control().await;
            match signing["reason"].as_str() {
                Some(reason) => Ok(reason.to_owned()),
                None => Err(signing.to_string()),
            }
        })
        .await;
        assert!(reason.contains("unproven PIN") && reason.contains(&first_name), "{reason}");
        let status = common::eventually("the survivor drives the card", WAIT, || async {
            let status = second.get("/api/status").await;
            if driver(&status).is_empty() || driver(&status) == first_name {
                Err(status.to_string())
            } else {
                Ok(status)
            }
        })
        .await;
        assert_eq!(status["cards"][0]["driver_alive"], true, "{status:#}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rig.card.stats().sign_requests, 1, "nothing carrying the PIN is sent again while paused");

        // The operator checks the PIN and resumes: the request goes through the survivor.
        second.resume_signing().await;
        second.wait_for_state(&session_id, "delivered", WAIT).await;
        assert_eq!(rig.stored_at_customs(&session_id), 1);
    })
    .await
}

/// On PostgreSQL a second `serve` is a second instance: it stands by for the card the first
/// drives, and a clean stop of the first hands the card over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_postgresql_stands_by_for_the_card_and_takes_it_at_the_first_ones_stop() {
    common::postgres::on_store(common::postgres::Backend::Postgres, async {
        let rig = Rig::start().await;
        let (mut first, first_name, second) = driver_and_standby(&rig).await;
        let session_id = second.paid_request("1").await;
        second.wait_for_state(&session_id, "delivered", WAIT).await;
        let signed_by_first = rig.card.stats().signatures;

        let stopped_at = Instant::now();
        assert!(first.terminate(WAIT).await.success());
        let session_id = second.paid_request("2").await;
        second.wait_for_state(&session_id, "delivered", WAIT).await;
        assert!(
            stopped_at.elapsed() < Duration::from_secs(4),
            "taken over at once, not after the heartbeat's TTL"
        );
        assert!(rig.card.stats().signatures > signed_by_first);
        let status = second.get("/api/status").await;
        assert_ne!(driver(&status), first_name, "{status:#}");
        assert_eq!(rig.card.stats().wrong_pins, 0);
        assert_eq!(rig.stored_at_customs(&session_id), 1);
    })
    .await
}

both_stores! {
async fn the_eportclient_restarting_mid_run_loses_nothing() {
    let rig = Rig::start().await;
    let mut serve = rig.serve(PIN, 2_000);
    serve.start().await;
    let first = serve.paid_request("1").await;
    serve.wait_for_state(&first, "delivered", WAIT).await;
    let addr = rig.card.ws_addr();
    let Rig { dir, card_dir, card, customs, schema } = rig;
    card.stop().await;
    let during: Vec<String> = [serve.paid_request("2").await, serve.paid_request("3").await].into();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The same card (its key is kept in its directory) comes back at the same address.
    let card = start_card(addr, card_dir.path()).await;
    let rig = Rig { dir, card_dir, card, customs, schema };
    for session_id in &during {
        serve.wait_for_state(session_id, "delivered", WAIT).await;
        assert_eq!(rig.stored_at_customs(session_id), 1);
    }
    assert_eq!(serve.signing_control().await["paused"], false);
}
}

both_stores! {
async fn unusable_signatures_in_a_row_trip_the_breaker_and_their_requests_wait() {
    let rig = Rig::start().await;
    rig.card_faults(FaultsUpdate { bad_signature: Some(3), ..FaultsUpdate::default() });
    let mut serve = rig.serve(PIN, 2_000);
    serve.start().await;
    let requests: Vec<String> = [serve.paid_request("1").await, serve.paid_request("2").await].into();
    let reason = serve.wait_signing_paused().await;
    assert!(reason.contains("3 requests in a row got an unusable signature"), "{reason}");
    assert!(reason.contains("does not verify"), "{reason}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(rig.card.stats().sign_requests, 3);
    for session_id in &requests {
        let detail = serve.detail(session_id).await;
        assert_eq!(detail["state"], "ready", "back in the queue, not failed: {detail:#}");
    }
    serve.resume_signing().await;
    for session_id in &requests {
        serve.wait_for_state(session_id, "delivered", WAIT).await;
        assert_eq!(rig.stored_at_customs(session_id), 1);
    }
    let violations: usize = rig.customs.report().uploads.iter().map(|u| u.violations.len()).sum();
    assert_eq!(violations, 0, "no unusable signature reached customs");
}
}

both_stores! {
async fn a_replay_from_the_command_line_is_noticed_within_a_second() {
    let rig = Rig::start().await;
    let mut serve = rig.serve(PIN, 2_000);
    serve.start().await;
    let session_id = serve.paid_request("1").await;
    serve.wait_for_state(&session_id, "delivered", WAIT).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["replay", "--config"])
        .arg(&serve.config)
        .args(["--session", &session_id])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", common::output_text(&output));
    let replayed = Instant::now();
    let detail = serve
        .wait_until(&session_id, WAIT, |d| {
            d["state"] == "delivered" && d["uploads"].as_array().unwrap().len() == 2
        })
        .await;
    // Noticed within a second, then prepared, signed and uploaded (the full sweep would be 30 s).
    assert!(replayed.elapsed() < Duration::from_secs(4), "{:?}: {detail:#}", replayed.elapsed());
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_the_database_refuses_at_the_stop_exits_non_zero_and_the_next_start_pauses() {
    use sqlx::Connection as _;

    let rig = Rig::start().await;
    rig.card_faults(FaultsUpdate { latency_ms: Some(2_000), ..FaultsUpdate::default() });
    let mut serve = rig.serve(WRONG_PIN, 10_000);
    serve.start().await;
    serve.paid_request("1").await;
    rig.wait_for_card("the Sign", |s| s.sign_requests == 1).await;
    // While the card checks the PIN, the database stops taking writes.
    let mut blocker = common::open_db(&serve.db).await;
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut blocker).await.unwrap();
    rig.wait_for_card("the wrong PIN", |s| s.wrong_pins == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = serve.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{}", serve.log());
    assert!(serve.log().contains("could not be stored"), "{}", serve.log());
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    blocker.close().await.unwrap();

    serve.start().await;
    // The card's pause the database refused comes back as a pause of all signing (the safe
    // side), and the mark it should have cleared pauses the card itself.
    let signing = serve.signing_control().await;
    assert_eq!(signing["paused"], true, "{signing}");
    let all = serve.controls().await["signing"].clone();
    assert!(all["reason"].as_str().unwrap_or_default().contains("the card refused"), "{all}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rig.card.stats().sign_requests, 1);
}

both_stores! {
async fn no_secret_reaches_the_log_even_at_trace_level() {
    const PAYMENTS_TOKEN: &str = "payments-token-3e9b1f77c0";
    let rig = Rig::start().await;
    let mut serve = ServeProcess::configure(
        rig.dir.path(),
        &format!(
            r#"
[signer]
url = "{}"
pin = "{PIN}"

[customs]
environment = "test"
upload_url = "{}"

[payments]
token = "{PAYMENTS_TOKEN}"

[log]
level = "trace"
"#,
            rig.card.ws_url(),
            rig.customs.upload_url()
        ),
    );
    serve.start().await;
    let session_id = serve.paid_request("1").await;
    serve.wait_for_state(&session_id, "delivered", WAIT).await;
    // The payments token and wrong tokens go through the API too.
    let (status, _) = serve.post_as(Some(PAYMENTS_TOKEN), "/api/payments", "[]").await;
    assert_ne!(status, 401);
    let (status, _) = serve.get_as(Some("not-the-admin-token-0000"), "/api/control").await;
    assert_eq!(status, 401);
    let status = serve.terminate(Duration::from_secs(20)).await;
    assert!(status.success());

    let log = serve.log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the level is in force:\n{log}");
    for secret in [PIN, ADMIN_TOKEN, PAYMENTS_TOKEN, "not-the-admin-token-0000"] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
    // Other crates stay at info: the WebSocket crate would print every frame.
    let noisy: Vec<&str> = log
        .lines()
        .filter(|line| (line.contains("TRACE") || line.contains("DEBUG")) && !line.contains("customs179"))
        .collect();
    assert!(noisy.is_empty(), "{:?}", &noisy[..noisy.len().min(5)]);
}
}

both_stores! {
async fn the_status_shows_counts_risk_the_last_hour_the_card_customs_and_the_tasks() {
    let rig = Rig::start().await;
    let mut serve = ServeProcess::configure(
        rig.dir.path(),
        &format!(
            "[signer]\nurl = \"{}\"\npin = \"{PIN}\"\n[customs]\nenvironment = \"test\"\nupload_url = \"{}\"\n\
             at_risk_secs = 200\n",
            rig.card.ws_url(),
            rig.customs.upload_url()
        ),
    );
    serve.start().await;
    let delivered = serve.paid_request("1").await;
    serve.wait_for_state(&delivered, "delivered", WAIT).await;
    // Its payment never comes: pending, and with a 120 s deadline under 200 s, at risk.
    serve.customs_call("SO-unpaid", "S-unpaid").await;

    let status = serve.get("/api/status").await;
    assert_eq!(
        (status["states"]["delivered"].as_i64(), status["states"]["waiting"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!((status["at_risk"].as_i64(), status["late"].as_i64()), (Some(1), Some(0)), "{status:#}");
    assert!(status["oldest_pending_ms"].as_i64().is_some_and(|age| (0..60_000).contains(&age)), "{status:#}");
    let hour = &status["last_hour"];
    assert_eq!(hour["delivered"], 1);
    assert_eq!(
        hour["delivered_per_minute"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        1
    );
    assert!(hour["p99_ms"].as_i64().is_some_and(|ms| ms > 0 && ms < 120_000), "{hour}");
    assert_eq!(hour["deadline_ms"], 120_000);
    let card = &status["cards"][0];
    assert_eq!(
        (&card["connected"], &card["cert_no"], &card["algorithm"]),
        (&json!(true), &json!(rig.card.cert_no().as_str()), &json!("SM2"))
    );
    assert!(card["days_left"].as_i64().is_some_and(|days| days > 0), "{card}");
    assert!(card["last_signature_at"].as_i64().is_some(), "{card}");
    assert!(card["paused"].is_null(), "{card}");
    let customs = &status["customs"];
    assert_eq!(
        (&customs["environment"], &customs["answers_last_hour"]),
        (&json!("test"), &json!({"10000": 1}))
    );
    assert!(customs["last_success_at"].as_i64().is_some() && customs["stopped"].is_null(), "{customs}");
    let tasks = status["tasks"].as_array().unwrap();
    assert!(tasks.len() >= 8 && tasks.iter().all(|t| t["state"] == "ok"), "{tasks:?}");
}
}
