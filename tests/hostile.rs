//! The public port under attack: `customs179 serve` as a real process while a hostile client
//! holds 2,000 idle connections and 200 slow bodies open (re-opening any the service closes),
//! and customs calls 50 times a second. Every call must be answered 10000 within customs' own
//! 5 s timeout, and SIGTERM must still end within the stop deadline.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

mod common;

use common::now_ms;
use common::serve::ServeProcess;

const IDLE: usize = 2_000;
const SLOW: usize = 200;
const CALLS_PER_SECOND: u64 = 50;
const CALLING_FOR: Duration = Duration::from_secs(20);
/// Below what the attacker holds, so that making room is exercised all along.
const MAX_CONNECTIONS: usize = 1_000;
const CUSTOMS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the service logs (now and then) while it makes room at its connection cap.
const CAP_REACHED: &str = "connection limit reached";

/// One hostile socket, re-opened (after a pause, as an attacker would) whenever the service
/// closes it. `slow` sends a request whose body trickles in a byte a second; otherwise it
/// connects and sends nothing.
async fn hostile(addr: String, slow: bool, mut stop: watch::Receiver<bool>) -> u64 {
    let mut closed_by_service = 0;
    while !*stop.borrow() {
        let Ok(mut socket) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if slow {
            let head = "POST /platDataOpen HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nopenReq=";
            if socket.write_all(head.as_bytes()).await.is_err() {
                continue;
            }
        }
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = stop.changed() => return closed_by_service,
                read = socket.read(&mut buf) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        closed_by_service += 1;
                        break;
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(1)), if slow => {
                    if socket.write_all(b"x").await.is_err() {
                        closed_by_service += 1;
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    closed_by_service
}

/// One customs call on a fresh connection; its answer time, or why it failed.
async fn customs_calls(client: &reqwest::Client, url: &str, session_id: &str) -> Result<Duration, String> {
    let open_req =
        serde_json::json!({"orderNo": "SO-hostile", "sessionID": session_id, "serviceTime": now_ms()})
            .to_string();
    let started = Instant::now();
    let response = client.post(url).form(&[("openReq", open_req)]).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 || answer["code"] != "10000" {
        return Err(format!("HTTP {status}: {answer}"));
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// On SQLite only (the listener is the same on either store): an attack's churn (about 50,000
// to 160,000 sockets closed by the service in 20 s) left the second of two attacks from one
// test process too weak to reach the cap under CI's load, whether the two ran at once or
// one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customs_is_answered_while_idle_sockets_and_slow_bodies_hold_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::configure(
        dir.path(),
        "[signer]\npin = \"1\"\n[customs]\nenvironment = \"test\"\n[shutdown]\ntimeout_secs = 10\n",
    );
    serve.intake_keys = format!("max_connections = {MAX_CONNECTIONS}");
    serve.start().await;
    let addr = serve.intake.trim_start_matches("http://").to_owned();
    let url = format!("{}/platDataOpen", serve.intake);

    let (stop, stopping) = watch::channel(false);
    let mut attackers = JoinSet::new();
    for n in 0..IDLE + SLOW {
        attackers.spawn(hostile(addr.clone(), n >= IDLE, stopping.clone()));
    }
    // Customs calls once the attack holds the port: the service is at its cap.
    let built_up_by = Instant::now() + Duration::from_secs(20);
    while !serve.log().contains(CAP_REACHED) {
        assert!(Instant::now() < built_up_by, "the attack never reached the cap:\n{}", serve.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A fresh connection per call, as customs' client makes, each with its 5 s timeout.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(CUSTOMS_TIMEOUT)
        .build()
        .unwrap();
    let mut calls = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(1_000 / CALLS_PER_SECOND));
    let calling_until = Instant::now() + CALLING_FOR;
    let mut n = 0;
    while Instant::now() < calling_until {
        ticker.tick().await;
        let (client, url, session_id) = (client.clone(), url.clone(), format!("S-hostile-{n}"));
        n += 1;
        calls.spawn(async move { (customs_calls(&client, &url, &session_id).await, session_id) });
    }
    let mut times = Vec::new();
    let mut failures = Vec::new();
    let mut answered = HashSet::new();
    while let Some(call) = calls.join_next().await {
        match call.unwrap() {
            (Ok(time), session_id) => {
                times.push(time);
                answered.insert(session_id);
            }
            (Err(why), session_id) => failures.push(format!("{session_id}: {why}")),
        }
    }

    // SIGTERM with the attack still on: the stop deadline holds whatever clients do.
    let stopping_at = Instant::now();
    let status = serve.terminate(Duration::from_secs(30)).await;
    let stop_took = stopping_at.elapsed();
    let _ = stop.send(true);
    let mut closed_by_service = 0;
    while let Some(closed) = attackers.join_next().await {
        closed_by_service += closed.unwrap();
    }

    times.sort();
    println!(
        "hostile clients ({IDLE} idle, {SLOW} slow bodies, cap {MAX_CONNECTIONS}): {} calls at {CALLS_PER_SECOND}/s, \
         {} answered 10000; answer time p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; hostile sockets closed by the \
         service {closed_by_service}; SIGTERM took {stop_took:?}",
        n,
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.90),
        percentile(&times, 0.99),
        times.last().unwrap(),
    );
    assert!(
        failures.is_empty(),
        "{} of {n} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(status.success(), "{status}:\n{}", serve.log());
    assert!(stop_took < Duration::from_secs(12), "the stop took {stop_took:?}");
    assert!(closed_by_service > 0, "the cap and the deadlines closed hostile sockets");
    let log = serve.log();
    let cap_lines = log.matches(CAP_REACHED).count();
    assert!((1..=4).contains(&cap_lines), "a log line now and then, not one per socket: {cap_lines}");
    let stored = serve.stored_session_ids().await;
    assert!(answered.is_subset(&stored), "every answered call is stored");
}
