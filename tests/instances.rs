//! Two instances of `serve` on one PostgreSQL database, behind HAProxy (Debian's), as plain
//! processes: the layout of `deploy/several/docker-compose.yml` without containers. Two
//! simulated cards, both configured on both instances; the customs simulator registers both.
//! One instance is SIGKILLed during a burst of 2,000 customs calls: nothing answered is lost,
//! customs stores each sessionID once, every request is delivered within 120 s of its call,
//! the survivor takes the cards over (with no wrong PIN), and the counters equal a COUNT.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use customs179_sim::customs::{self, CustomsSimOptions, RunningCustomsSim};
use customs179_sim::eport::{self, Algo, EportSimOptions, FaultsUpdate, RunningEportSim};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::events::{Events, lists};
use common::haproxy::Haproxy;
use common::postgres::Schema;
use common::serve::ServeProcess;
use common::{ADMIN_TOKEN, EBP_CODE, eventually, http_client, loopback, now_ms};

const PIN: &str = "pin-5d1c0e7b";
const CALLS: usize = 2_000;
const ORDERS: usize = 50;
const SENDERS: usize = 16;

struct SimCard {
    name: &'static str,
    sim: RunningEportSim,
    _dir: TempDir,
}

async fn start_card(name: &'static str) -> SimCard {
    let dir = tempfile::tempdir().unwrap();
    let sim = eport::start(EportSimOptions::new(loopback(), Algo::Sm2, PIN, dir.path())).await.unwrap();
    sim.update_faults(&FaultsUpdate { latency_ms: Some(5), ..FaultsUpdate::default() });
    SimCard { name, sim, _dir: dir }
}

async fn start_customs(cards: &[SimCard]) -> (RunningCustomsSim, TempDir) {
    let certs = tempfile::tempdir().unwrap();
    for card in cards {
        std::fs::write(certs.path().join(format!("{}.pem", card.name)), card.sim.keys().cert_pem().unwrap())
            .unwrap();
    }
    let mut options = CustomsSimOptions::new(loopback(), certs.path(), [EBP_CODE]);
    options.seed = Some(15);
    (customs::start(options).await.unwrap(), certs)
}

fn instance_toml(cards: &[SimCard], customs: &RunningCustomsSim) -> String {
    let signers: String = cards
        .iter()
        .map(|card| {
            format!(
                "[[signer]]\nname = \"{}\"\nurl = \"{}\"\npin = \"{PIN}\"\ntimeout_ms = 2000\n\n",
                card.name,
                card.sim.ws_url()
            )
        })
        .collect();
    format!(
        "{signers}[customs]\nenvironment = \"test\"\nupload_url = \"{}\"\ntimeout_ms = 2000\n\
         [log]\nlevel = \"info\"\n",
        customs.upload_url()
    )
}

/// Two `serve` configured alike (`toml`) on `schema`, not started yet, each in a directory
/// of its own (returned, to be kept while they run).
fn two_instances(schema: &Schema, toml: &str) -> (ServeProcess, ServeProcess, [TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = ServeProcess::configure(dirs[0].path(), toml).on_schema(Some(schema));
    let b = ServeProcess::configure(dirs[1].path(), toml).on_schema(Some(schema));
    (a, b, dirs)
}

/// Calls customs' call for `session_id` until it is answered 10000, as customs would call
/// again: through the proxy, one instance may be gone mid-call. When it was first sent.
async fn call_until_answered(client: &reqwest::Client, url: &str, session_id: &str, order_no: &str) -> i64 {
    let first = now_ms();
    let open_req = json!({"orderNo": order_no, "sessionID": session_id, "serviceTime": first}).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.post(url).form(&[("openReq", open_req.clone())]).send().await {
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if answer["code"] == "10000" {
                assert_eq!(status, 200, "10000 with HTTP {status}");
                return first;
            }
        }
        assert!(Instant::now() < deadline, "{session_id} never answered 10000");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the instance's status says of each card: (driving instance, alive).
async fn card_drivers(instance: &ServeProcess) -> BTreeMap<String, (String, bool)> {
    let status = instance.get("/api/status").await;
    status["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|card| {
            let driver = card["driven_by"].as_str().unwrap_or_default().to_owned();
            let alive = card["driver_alive"].as_bool().unwrap_or(false);
            (card["name"].as_str().unwrap().to_owned(), (driver, alive))
        })
        .collect()
}

/// The name the instance goes by in the status: the one whose admin address is its own.
async fn instance_name(instance: &ServeProcess) -> String {
    let status = instance.get("/api/status").await;
    let admin = instance.admin.trim_start_matches("http://");
    let me = status["instances"].as_array().unwrap().iter().find(|i| i["admin"] == admin);
    me.unwrap_or_else(|| panic!("not in its own status: {status:#}"))["name"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_a_load_balancer_lose_nothing_when_one_is_killed() {
    let schema = Schema::create().await;
    let cards = [start_card("card-a").await, start_card("card-b").await];
    let (customs, _certs) = start_customs(&cards).await;
    let toml = instance_toml(&cards, &customs);
    let (mut a, mut b, dirs) = two_instances(&schema, &toml);
    a.start().await;
    let name_a = instance_name(&a).await;
    eventually("A drives both cards", Duration::from_secs(15), || async {
        let drivers = card_drivers(&a).await;
        let driven = drivers.values().filter(|(driver, alive)| *driver == name_a && *alive).count();
        if driven == 2 { Ok(()) } else { Err(format!("{drivers:?}")) }
    })
    .await;
    b.start().await;
    let name_b = instance_name(&b).await;
    assert_ne!(name_a, name_b);
    // B stands by for the cards; it shows the whole system, A's cards and both instances.
    eventually("B sees A drive the cards", Duration::from_secs(15), || async {
        let drivers = card_drivers(&b).await;
        let by_a = drivers.values().filter(|(driver, alive)| *driver == name_a && *alive).count();
        if by_a == 2 { Ok(()) } else { Err(format!("{drivers:?}")) }
    })
    .await;
    let instances = b.get("/api/status").await["instances"].clone();
    assert_eq!(
        instances.as_array().unwrap().iter().filter(|i| i["alive"] == true).count(),
        2,
        "{instances:#}"
    );

    // The platform's payment data is there before customs calls.
    for order in 0..ORDERS {
        let order_no = format!("O-{order}");
        let instance = if order % 2 == 0 { &a } else { &b };
        instance.platform_pays(&format!("T-{order}"), &[&order_no]).await;
    }

    let proxy = Haproxy::start(dirs[0].path(), [&a.intake, &b.intake]);
    let client = http_client(Some(Duration::from_secs(15)));
    eventually("the proxy answers", Duration::from_secs(15), || async {
        let probe = client.post(&proxy.url).form(&[("openReq", "{}")]).send().await;
        probe.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;

    let answered = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (client, url, answered, next) =
            (client.clone(), proxy.url.clone(), answered.clone(), next.clone());
        senders.spawn(async move {
            let mut called = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CALLS {
                    return called;
                }
                let session_id = format!("S-{i:04}");
                let first =
                    call_until_answered(&client, &url, &session_id, &format!("O-{}", i % ORDERS)).await;
                answered.fetch_add(1, Ordering::Relaxed);
                called.push((session_id, first));
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::Relaxed) < CALLS / 3 {
        assert!(Instant::now() < deadline, "the burst does not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = now_ms();
    assert!(a.kill().is_none(), "A had exited on its own:\n{}", a.log_tail());
    let mut first_calls: BTreeMap<String, i64> = BTreeMap::new();
    while let Some(called) = senders.join_next().await {
        first_calls.extend(called.unwrap());
    }
    assert_eq!(first_calls.len(), CALLS);

    // Every request delivered, each within 120 s of customs' first call.
    let mut conn = schema.connect().await;
    let delivered = eventually("every request delivered", Duration::from_secs(150), || async {
        let mut conn = schema.connect().await;
        let rows: Vec<(String, String, Option<i64>, i64)> =
            sqlx::query_as("SELECT session_id, state, delivered_at, received_at FROM requests")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let done = rows.iter().filter(|(_, state, ..)| state == "delivered").count();
        if done == CALLS {
            Ok(rows)
        } else {
            Err(format!("{done} of {CALLS} delivered ({} stored)", rows.len()))
        }
    })
    .await;
    let stored: HashSet<&String> = delivered.iter().map(|(session_id, ..)| session_id).collect();
    assert!(first_calls.keys().all(|session_id| stored.contains(session_id)), "an answered call was lost");
    for (session_id, _, delivered_at, received_at) in &delivered {
        let took = delivered_at.unwrap() - received_at.min(&first_calls[session_id]);
        assert!(took <= 120_000, "{session_id} took {took} ms from its call to customs' storing it");
    }

    // Customs stored each sessionID once, and found nothing wrong with any upload.
    let report = customs.report();
    let mut stored_at_customs: BTreeMap<&str, usize> = BTreeMap::new();
    for upload in &report.uploads {
        assert!(upload.violations.is_empty(), "{upload:?}");
        if upload.stored {
            *stored_at_customs.entry(upload.session_id.as_deref().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(stored_at_customs.len(), CALLS);
    assert!(stored_at_customs.values().all(|n| *n == 1), "a sessionID stored twice at customs");

    // B took both cards over once A was found dead; no card saw a wrong PIN, none is paused.
    let drivers = card_drivers(&b).await;
    assert!(drivers.values().all(|(driver, alive)| *driver == name_b && *alive), "{drivers:?}");
    for card in &cards {
        let stats = card.sim.stats();
        assert_eq!((stats.wrong_pins, stats.locked), (0, false), "{}: {stats:?}", card.name);
    }
    let log_b = b.log();
    assert!(log_b.contains("another instance drives the card; this one stands by"), "{log_b}");
    assert!(log_b.contains("another instance stopped beating; its claims were released"), "{log_b}");
    let status = b.get("/api/status").await;
    assert!(status["signing"].is_null(), "{status:#}");
    assert!(status["cards"].as_array().unwrap().iter().all(|card| card["paused"].is_null()), "{status:#}");
    let dead = status["instances"].as_array().unwrap().iter().find(|i| i["name"] == name_a.as_str()).cloned();
    let dead = dead.unwrap_or_else(|| panic!("A is not in the status: {status:#}"));
    assert_eq!(dead["alive"], false);
    assert_eq!(dead["stop_reason"], "no heartbeat for 5 s");
    assert!(dead["stopped_at"].as_i64().unwrap() - killed_at < 15_000, "A found dead within seconds: {dead}");

    // The counters are what a COUNT finds.
    let (kept, counted) = b.counts_kept_and_counted().await;
    assert_eq!(kept, counted);
    let attempts: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM attempts").fetch_one(&mut conn).await.unwrap();
    assert!(attempts >= i64::try_from(CALLS).unwrap());

    b.terminate(Duration::from_secs(20)).await;
    drop(proxy);
    customs.stop().await;
    for card in cards {
        card.sim.stop().await;
    }
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_on_one_instance_tells_of_the_requests_another_changed() {
    let schema = Schema::create().await;
    let toml = "[signer]\npin = \"1\"\n[customs]\nenvironment = \"test\"\n";
    let (mut a, mut b, _dirs) = two_instances(&schema, toml);
    a.start().await;
    b.start().await;
    let within = Duration::from_secs(5);
    let mut events = Events::open(&b, ADMIN_TOKEN).await;
    events.wait_for("snapshot", within, |_| true).await;

    a.customs_call("O-1", "S-on-a").await;
    events.wait_for("requests", within, |data| lists(data, "S-on-a", "waiting")).await;
    a.platform_pays("T-1", &["O-1"]).await;
    events.wait_for("requests", within, |data| lists(data, "S-on-a", "ready")).await;
    // And its own, as ever.
    b.customs_call("O-2", "S-on-b").await;
    events.wait_for("requests", within, |data| lists(data, "S-on-b", "waiting")).await;
    // Nobody watches any more: the database stops sending notices within seconds.
    drop(events);
    let mut conn = schema.connect().await;
    eventually("the notices stop", Duration::from_secs(10), || async {
        let mut conn = schema.connect().await;
        let listening: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM change_listeners").fetch_one(&mut conn).await.unwrap();
        if listening == 0 { Ok(()) } else { Err(format!("{listening} listening")) }
    })
    .await;
    let listed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests").fetch_one(&mut conn).await.unwrap();
    assert_eq!(listed, 2);
    a.terminate(Duration::from_secs(20)).await;
    b.terminate(Duration::from_secs(20)).await;
    schema.drop_now().await;
}

/// An instance that stalls past the heartbeat's TTL (SIGSTOP) is declared dead by the other;
/// woken again (SIGCONT), it finds that out at its next heartbeat and exits non-zero rather
/// than work on with claims and cards that may be another's.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_stalled_past_its_ttl_stops_when_it_wakes() {
    let schema = Schema::create().await;
    let toml = "[signer]\npin = \"1\"\n[customs]\nenvironment = \"test\"\n[log]\nlevel = \"info\"\n";
    let (mut a, mut b, _dirs) = two_instances(&schema, toml);
    a.start().await;
    b.start().await;
    let signal = |name: &str, pid: u32| {
        let sent = std::process::Command::new("kill").args([name, &pid.to_string()]).status().unwrap();
        assert!(sent.success());
    };
    let pid = a.pid().unwrap();
    signal("-STOP", pid);
    let dead = eventually("B declares A dead", Duration::from_secs(15), || async {
        let status = b.get("/api/status").await;
        let stopped =
            status["instances"].as_array().unwrap().iter().find(|i| i["stop_reason"].is_string()).cloned();
        stopped.ok_or_else(|| status.to_string())
    })
    .await;
    assert_eq!(dead["stop_reason"], "no heartbeat for 5 s", "{dead}");
    assert!(a.exited().is_none(), "stopped, not gone");
    signal("-CONT", pid);
    let status = a.wait_exit(Duration::from_secs(15)).await;
    assert!(!status.success(), "{status}");
    assert!(a.log().contains("INSTANCE DECLARED DEAD"), "{}", a.log_tail());
    b.terminate(Duration::from_secs(20)).await;
    schema.drop_now().await;
}

/// A bulk replay goes on when the instance that confirmed it dies mid-way: the other adopts it
/// once the dead one is declared so, and replays what was left, each request once. The test
/// holds the replay's items locked, so that the first instance is caught inside its first
/// chunk when it is killed (that chunk is rolled back with its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_replay_whose_instance_died_is_finished_by_another() {
    const FAILED: usize = 1_200;
    let schema = Schema::create().await;
    let store = customs179_store::Store::connect(&schema.url()).await.unwrap();
    let requests: Vec<customs179_store::NewRequest> = (0..FAILED)
        .map(|i| {
            let raw = format!(r#"{{"orderNo":"O-{i}","sessionID":"S-{i:04}","serviceTime":1}}"#);
            let open_req = customs179_core::OpenReq::parse(&raw).unwrap();
            customs179_store::NewRequest { open_req, raw, received_at: 10, deadline_at: 20 }
        })
        .collect();
    store.insert_requests(&requests).await.unwrap();
    let gave_up = customs179_store::Outcome::new("no_payment_data", "no payment data for this order");
    assert_eq!(store.give_up_waiting(10, &gave_up, 30).await.unwrap().len(), FAILED);
    store.close().await;

    let toml = "[signer]\npin = \"1\"\n[customs]\nenvironment = \"test\"\n[log]\nlevel = \"info\"\n";
    let (mut a, mut b, _dirs) = two_instances(&schema, toml);
    a.start().await;
    b.start().await;
    let (status, dry) =
        a.post("/api/replays", json!({"filter": {"state": "failed"}, "dry_run": true}).to_string()).await;
    assert_eq!((status.as_u16(), &dry["count"]), (200, &json!(FAILED)), "{dry}");

    let mut lock = schema.connect().await;
    sqlx::raw_sql("BEGIN; SELECT 1 FROM replay_items FOR UPDATE").execute(&mut lock).await.unwrap();
    let body = json!({"confirm": dry["token"], "reason": "the platform resent the data"});
    let (status, job) = a.post("/api/replays", body.to_string()).await;
    assert_eq!(status.as_u16(), 202, "{job}");
    let path = format!("/api/replays/{}", job["id"]);
    eventually("A's first chunk waits for the items", Duration::from_secs(10), || async {
        let mut conn = schema.connect().await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&schema.name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if waiting > 0 { Ok(()) } else { Err("no chunk waits".to_owned()) }
    })
    .await;
    assert!(a.kill().is_none(), "A was running");
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();

    let done = eventually("B finishes the replay", Duration::from_secs(20), || async {
        let shown = b.get(&path).await;
        if shown["status"] == "finished" { Ok(shown) } else { Err(shown.to_string()) }
    })
    .await;
    assert_eq!((&done["replayed"], &done["skipped"]), (&json!(FAILED), &json!(0)), "{done}");
    let replays: Vec<(i64,)> = common::query_rows(
        &b.db,
        Some(&schema),
        "SELECT COUNT(*) FROM attempts WHERE step = 'replay' GROUP BY session_id",
    )
    .await;
    assert_eq!(replays.len(), FAILED, "every request replayed");
    assert!(replays.iter().all(|(n,)| *n == 1), "each once");
    assert!(b.log().contains("resuming a bulk replay"), "{}", b.log_tail());
    b.terminate(Duration::from_secs(20)).await;
    schema.drop_now().await;
}

/// Customs in the status of either instance is the whole system's: each instance counts its
/// own uploads' answers and publishes them with its heartbeat, and each status adds the
/// others' to its own. Both show the same answers, as many as the uploads in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_of_either_instance_counts_every_instances_uploads() {
    const CALLS: usize = 30;
    let schema = Schema::create().await;
    let cards = [start_card("card-a").await, start_card("card-b").await];
    let (customs, _certs) = start_customs(&cards).await;
    let toml = instance_toml(&cards, &customs);
    let (mut a, mut b, _dirs) = two_instances(&schema, &toml);
    a.start().await;
    b.start().await;
    for n in 0..CALLS {
        let (order_no, session_id) = (format!("O-{n}"), format!("S-{n:02}"));
        let (calls, pays) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        calls.customs_call(&order_no, &session_id).await;
        pays.platform_pays(&format!("T-{n}"), &[&order_no]).await;
    }
    let count = |sql: &'static str| {
        let schema = schema.clone();
        async move {
            let rows: Vec<(i64,)> = common::query_rows(std::path::Path::new(""), Some(&schema), sql).await;
            rows[0].0
        }
    };
    eventually("every request delivered", Duration::from_secs(60), || async {
        let delivered = count("SELECT COUNT(*) FROM requests WHERE state = 'delivered'").await;
        if delivered == CALLS as i64 { Ok(()) } else { Err(format!("{delivered} delivered")) }
    })
    .await;
    let uploads = count("SELECT COUNT(*) FROM attempts WHERE step = 'upload'").await;
    // Each has published its last answers within a heartbeat.
    let (seen_a, seen_b) =
        eventually("both statuses count every upload", Duration::from_secs(10), || async {
            let answers = |status: Value| status["customs"]["answers_last_hour"].clone();
            let (seen_a, seen_b) = (answers(a.get("/api/status").await), answers(b.get("/api/status").await));
            let total =
                |seen: &Value| seen.as_object().unwrap().values().map(|n| n.as_i64().unwrap()).sum::<i64>();
            if total(&seen_a) == uploads && seen_a == seen_b {
                Ok((seen_a, seen_b))
            } else {
                Err(format!("A {seen_a}, B {seen_b}, {uploads} uploads"))
            }
        })
        .await;
    assert_eq!(seen_a["10000"], json!(CALLS), "{seen_a} {seen_b}");
    a.terminate(Duration::from_secs(20)).await;
    b.terminate(Duration::from_secs(20)).await;
    schema.drop_now().await;
}
