//! The card's certificate's life, end to end with the EportClient simulator: an expired
//! certificate pauses signing before anything is signed with it (the request waits, ready),
//! the status shows the days left, and the pause lifts by itself once the card connects with
//! a renewed certificate, whose signatures customs then stores.

use std::time::Duration;

use customs179_sim::eport::{self, Algo, EportSimOptions, RunningEportSim};
use customs179_sim::keys::CertValidity;
use serde_json::Value;

mod common;

use common::{Harness, free_addr};

const PIN: &str = "pin-3c0a91";
const WAIT: Duration = Duration::from_secs(30);

async fn card(addr: std::net::SocketAddr, dir: &std::path::Path, expires_in_days: i64) -> RunningEportSim {
    let mut options = EportSimOptions::new(addr, Algo::Sm2, PIN, dir);
    options.cert_validity = Some(CertValidity::ending_in_days(expires_in_days).unwrap());
    eport::start(options).await.unwrap()
}

both_stores! {
async fn an_expired_certificate_pauses_signing_until_a_renewed_card_connects() {
    let (card_dir, certs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (card_addr, customs_addr) = (free_addr(), free_addr());
    let expired = card(card_addr, card_dir.path(), -2).await;
    let expired_cert_no = expired.cert_no().to_string();
    let h = Harness::start(&format!(
        "[signer]\nurl = \"{}\"\npin = \"{PIN}\"\n[customs]\nenvironment = \"test\"\n\
         upload_url = \"http://{customs_addr}{}\"\ntimeout_ms = 1000\nretry_max_secs = 1\n",
        expired.ws_url(),
        customs179_sim::customs::UPLOAD_PATH,
    ))
    .await;
    h.customs_call("SO-1", "S-1").await;
    h.platform_pays("T-1", &["SO-1"]).await;

    let deadline = std::time::Instant::now() + WAIT;
    let paused = loop {
        let signing = h.controls().await["cards"][0]["signing"].clone();
        if signing["paused"] == true {
            break signing;
        }
        assert!(std::time::Instant::now() < deadline, "signing never paused: {signing:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = paused["reason"].as_str().unwrap();
    assert!(reason.contains("certificate expired on"), "{paused:#}");
    assert_eq!(expired.stats().sign_requests, 0, "nothing was signed with it");
    // Given back once the pause is stored.
    let detail = h.wait_until("S-1", WAIT, |d| d["claimed_until"].is_null()).await;
    assert_eq!(detail["state"], "ready", "it waits, neither signed nor failed: {detail:#}");
    // Given back for the certificate, or (claimed again meanwhile) for the pause it made.
    assert!(["certificate", "signing_paused"].contains(&detail["code"].as_str().unwrap()), "{detail:#}");
    assert!(detail["last_error"].as_str().unwrap().contains("certificate expired on"), "{detail:#}");
    let card_status = h.get("/api/status").await["cards"][0].clone();
    assert_eq!(card_status["cert_no"], expired_cert_no.as_str(), "{card_status:#}");
    assert!(card_status["days_left"].as_i64().is_some_and(|d| d < 0), "{card_status:#}");
    assert!(card_status["paused"]["reason"].as_str().unwrap().contains("expired"), "{card_status:#}");

    // The card comes back with a renewed certificate, registered with customs.
    expired.stop().await;
    let renewed = card(card_addr, card_dir.path(), 400).await;
    assert_ne!(renewed.cert_no().to_string(), expired_cert_no, "a renewal is a new certNo");
    std::fs::write(certs.path().join("card.pem"), renewed.keys().cert_pem().unwrap()).unwrap();
    let mut options =
        customs179_sim::customs::CustomsSimOptions::new(customs_addr, certs.path(), [common::EBP_CODE]);
    options.seed = Some(179);
    let customs = customs179_sim::customs::start(options).await.unwrap();

    let delivered = h.wait_for_state("S-1", "delivered", WAIT).await;
    assert_eq!(delivered["uploads"][0]["cert_no"], renewed.cert_no().as_str(), "{delivered:#}");
    assert_eq!(h.controls().await["cards"][0]["signing"]["paused"], false);
    let audit = h.get("/api/audit").await;
    let lifted: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["actor"] == "certificate check").collect();
    assert_eq!(lifted.len(), 1, "{audit:#}");
    assert_eq!(lifted[0]["action"], "resume signing on card card");
    assert!(h.get("/api/status").await["cards"][0]["days_left"].as_i64().unwrap() >= 399);
    h.stop().await;
    customs.stop().await;
    renewed.stop().await;
}
}
