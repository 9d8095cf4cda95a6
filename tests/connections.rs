//! The listeners' deadlines and cap, in-process with short settings, over raw sockets: an idle
//! connection, one slow with its headers, one slow with its body, and more connections than the
//! cap, while a customs call must still get through.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

mod common;

use common::Harness;

const SECTIONS: &str = "[signer]\npin = \"1\"\n[customs]\nenvironment = \"test\"\n";

async fn start(intake_keys: &str) -> Harness {
    Harness::start_with(intake_keys, SECTIONS).await.with_client_timeout(Duration::from_secs(5))
}

fn addr(h: &Harness) -> String {
    h.intake.trim_start_matches("http://").to_owned()
}

/// Reads until the service closes the socket; what it sent, and when it closed.
async fn until_closed(socket: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + within).into(), socket.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                return (String::from_utf8_lossy(&received).into_owned(), started.elapsed());
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {
                panic!("still open after {within:?}; received {:?}", String::from_utf8_lossy(&received))
            }
        }
    }
}

both_stores! {
async fn idle_connections_and_slow_headers_are_closed_at_their_deadlines() {
    let h = start("header_timeout_secs = 1\nidle_timeout_secs = 2").await;
    let opened = std::time::Instant::now();
    let mut idle = TcpStream::connect(addr(&h)).await.unwrap();
    let mut slow_head = TcpStream::connect(addr(&h)).await.unwrap();
    slow_head.write_all(b"POST /platDataOpen HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (sent, after) = until_closed(&mut slow_head, Duration::from_secs(5)).await;
    assert!(sent.is_empty(), "{sent}");
    assert!(after >= Duration::from_millis(800) && after < Duration::from_secs(2), "headers: {after:?}");
    until_closed(&mut idle, Duration::from_secs(5)).await;
    // Idle from its opening (the wait above took part of it).
    let idle_for = opened.elapsed();
    assert!(idle_for >= Duration::from_millis(1_800) && idle_for < Duration::from_secs(3), "idle: {idle_for:?}");
    // A kept-alive connection is idle again after its answer.
    let mut kept = TcpStream::connect(addr(&h)).await.unwrap();
    kept.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (sent, after) = until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(sent.starts_with("HTTP/1.1 404"), "{sent}");
    assert!(after >= Duration::from_millis(1_500), "idle after its answer: {after:?}");
    h.stop().await;
}
}

both_stores! {
async fn a_body_sent_too_slowly_is_refused_and_stores_nothing() {
    let h = start("body_timeout_secs = 1").await;
    let mut slow = TcpStream::connect(addr(&h)).await.unwrap();
    let open_req = r#"openReq={"orderNo":"SO-slow","sessionID":"S-slow","serviceTime":1}"#;
    let head = format!(
        "POST /platDataOpen HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n",
        open_req.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for byte in open_req.as_bytes().iter().take(20) {
        if slow.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answer, _) = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("20000"), "customs' shape: {answer}");
    assert!(h.stored_session_ids().await.is_empty());
    h.stop().await;
}
}

both_stores! {
async fn at_the_cap_the_connection_idle_longest_makes_room_for_customs() {
    let h = start("max_connections = 5").await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(addr(&h)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The five oldest were closed as the newer came.
    let mut closed = 0;
    for socket in &mut idle[..5] {
        let (sent, _) = until_closed(socket, Duration::from_secs(2)).await;
        assert!(sent.is_empty());
        closed += 1;
    }
    assert_eq!(closed, 5);
    h.customs_call("SO-cap", "S-cap").await;
    assert!(h.stored_session_ids().await.contains("S-cap"));
    h.stop().await;
}
}

both_stores! {
async fn the_stop_ends_in_time_whatever_clients_hold_open() {
    let h = start("").await;
    let mut sockets = Vec::new();
    for n in 0..20 {
        let mut socket = TcpStream::connect(addr(&h)).await.unwrap();
        if n % 2 == 0 {
            // Headers, and a body that never comes.
            socket
                .write_all(b"POST /platDataOpen HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nopenReq=")
                .await
                .unwrap();
        }
        sockets.push(socket);
    }
    h.customs_call("SO-stop", "S-stop").await;
    assert!(h.stored_session_ids().await.contains("S-stop"));
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(12), h.stop()).await.expect("the stop ends within its deadline");
    // No request was received and unanswered, so nothing held the stop.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    for mut socket in sockets {
        until_closed(&mut socket, Duration::from_secs(1)).await;
    }
}
}

both_stores! {
async fn healthz_lists_every_task_beating() {
    let h = start("").await;
    // Past the first beats of every task (the slowest beats every second).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, body) = h.get_as(None, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    let tasks: Vec<(&str, &str)> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    let names: Vec<&str> = tasks.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "admin listener",
            "alert watcher",
            "change watcher",
            "checkpoints",
            "instance",
            "intake listener",
            "intake writer",
            "preparer",
            "signer card",
            "uploader"
        ]
    );
    assert!(tasks.iter().all(|(_, state)| *state == "ok"), "{tasks:?}");
    for task in body["tasks"].as_array().unwrap() {
        assert!(task["since_last_beat_ms"].as_u64().unwrap() < 1_500, "{task}");
    }
    h.stop().await;
}
}
