//! `customs179 sim eport` as a real process: it listens, signs over WebSocket with a card kept
//! in its state directory, and stops cleanly on a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use customs179_core::SignatureVerifier;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{Sim, free_addr};

const PIN: &str = "11223344";
const IN_DATA: &str = r#""sessionID":"S-cli"||"payExchangeInfoHead":{"note":"命令行"}||"serviceTime":"1""#;

fn spawn(addr: SocketAddr, state_dir: &Path) -> Sim {
    let child = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["sim", "eport", "--listen", &addr.to_string(), "--algo", "sm2", "--pin", PIN, "--state-dir"])
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Sim(child)
}

async fn next_text<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn sim_eport_signs_over_websocket_and_stops_on_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut sim = spawn(addr, dir.path());
    sim.wait_until_listening(addr).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    let greeting = next_text(&mut ws).await;
    assert_eq!(greeting["_method"], "open");

    let request =
        json!({"_method":"cus-sec_SpcSignDataAsPEM","_id":1,"args":{"inData":IN_DATA,"passwd":PIN}});
    ws.send(Message::text(request.to_string())).await.unwrap();
    let reply = next_text(&mut ws).await;
    assert_eq!(reply["_id"], 1);
    assert_eq!(reply["_args"]["Result"], true, "{reply}");
    let signature = reply["_args"]["Data"][0].as_str().unwrap();
    let cert_no = reply["_args"]["Data"][1].as_str().unwrap().to_owned();
    assert_eq!(signature.len(), 88);

    let cert = std::fs::read(dir.path().join("sign-cert.pem")).unwrap();
    let verifier = SignatureVerifier::from_bytes(&cert).unwrap();
    assert_eq!(verifier.cert_no().map(|c| c.as_str()), Some(cert_no.as_str()));
    verifier.verify(IN_DATA.as_bytes(), signature).unwrap();

    #[cfg(unix)]
    {
        let (status, stderr) = sim.stop_with("INT").await;
        assert!(status.success(), "{status}");
        assert!(stderr.contains(&format!("ws://{addr}/")), "{stderr}");
        assert!(stderr.contains(&cert_no), "the certNo is logged: {stderr}");
    }
}

#[test]
fn sim_eport_refuses_a_half_made_state_dir_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sign-key.pem"), "not a key").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["sim", "eport", "--listen", "127.0.0.1:0", "--pin", PIN, "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sign-cert.pem"), "{stderr}");
}

/// `--cert-expires-in-days`: an expired certificate, then a renewed one for the same key.
#[tokio::test]
async fn sim_eport_gives_its_card_the_certificate_life_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
            .unwrap();
    let mut cert_nos = Vec::new();
    for days in ["-3", "365"] {
        let addr = free_addr();
        let mut sim = Sim(Command::new(env!("CARGO_BIN_EXE_customs179"))
            .args([
                "sim",
                "eport",
                "--listen",
                &addr.to_string(),
                "--pin",
                PIN,
                "--cert-expires-in-days",
                days,
            ])
            .arg("--state-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap());
        sim.wait_until_listening(addr).await;
        let pem = std::fs::read(dir.path().join("sign-cert.pem")).unwrap();
        let cert = customs179_core::CertificateInfo::from_bytes(&pem).unwrap();
        let expected = now + days.parse::<i64>().unwrap() * 86_400;
        assert!((cert.not_after - expected).abs() < 120, "{days}: notAfter {} vs {expected}", cert.not_after);
        assert!(cert.not_before < cert.not_after);
        cert_nos.push(cert.cert_no.to_string());
    }
    assert_ne!(cert_nos[0], cert_nos[1], "a renewal is a new certificate: {cert_nos:?}");
}
