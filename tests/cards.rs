//! Several cards through the whole service: one queue, a signer per card, each signature
//! verified against the card that made it, and one card's trouble (a wrong PIN, a card that
//! disappears, a certNo customs does not know) stopping that card only. The service runs
//! in-process with a real SQLite file; each card is its own EportClient simulator on a real
//! WebSocket and uploads go to the customs simulator.

use std::time::Duration;

use customs179_core::{SignatureVerifier, UploadBody};
use customs179_sim::customs::{self, CustomsSimOptions, RunningCustomsSim};
use customs179_sim::eport::{self, Algo, EportSimOptions, FaultsUpdate, RunningEportSim};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::{EBP_CODE, Harness, eventually, loopback};

const PIN: &str = "88888888";
const WRONG_PIN: &str = "13572468";
const WAIT: Duration = Duration::from_secs(30);

/// One simulated card and the directory its key lives in.
struct SimCard {
    name: String,
    sim: RunningEportSim,
    _dir: TempDir,
}

async fn start_card(name: &str, algo: Algo, latency_ms: u64) -> SimCard {
    let dir = tempfile::tempdir().unwrap();
    let sim = eport::start(EportSimOptions::new(loopback(), algo, PIN, dir.path())).await.unwrap();
    sim.update_faults(&FaultsUpdate { latency_ms: Some(latency_ms), ..FaultsUpdate::default() });
    SimCard { name: name.to_owned(), sim, _dir: dir }
}

/// Customs, registering the certificates of `registered` only.
async fn start_customs(registered: &[&SimCard]) -> (RunningCustomsSim, TempDir) {
    let certs = tempfile::tempdir().unwrap();
    for card in registered {
        let file = certs.path().join(format!("{}.pem", card.name));
        std::fs::write(file, card.sim.keys().cert_pem().unwrap()).unwrap();
    }
    let mut options = CustomsSimOptions::new(loopback(), certs.path(), [EBP_CODE]);
    options.seed = Some(179);
    (customs::start(options).await.unwrap(), certs)
}

/// `[[signer]]` entries for `cards`; `pins` gives a card another PIN than the right one.
fn signers_toml(cards: &[SimCard], pins: &[(&str, &str)]) -> String {
    cards
        .iter()
        .map(|card| {
            let pin = pins.iter().find(|(name, _)| *name == card.name).map_or(PIN, |(_, pin)| pin);
            format!(
                "[[signer]]\nname = \"{}\"\nurl = \"{}\"\npin = \"{pin}\"\ntimeout_ms = 2000\n\n",
                card.name,
                card.sim.ws_url()
            )
        })
        .collect()
}

async fn start_service(cards: &[SimCard], pins: &[(&str, &str)], customs: &RunningCustomsSim) -> Harness {
    Harness::start(&format!(
        "{}[customs]\nenvironment = \"test\"\nupload_url = \"{}\"\ntimeout_ms = 2000\n",
        signers_toml(cards, pins),
        customs.upload_url()
    ))
    .await
}

impl Harness {
    /// Customs asks for `n` orders and the platform pays them; their sessionIDs.
    async fn requests(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let (session_id, order_no) = (format!("S-{prefix}-{i}"), format!("O-{prefix}-{i}"));
            self.customs_call(&order_no, &session_id).await;
            self.platform_pays(&format!("T-{prefix}-{i}"), &[&order_no]).await;
            ids.push(session_id);
        }
        ids
    }

    async fn all_delivered(&self, ids: &[String]) -> Vec<Value> {
        let mut details = Vec::new();
        for id in ids {
            details.push(self.wait_for_state(id, "delivered", WAIT).await);
        }
        details
    }

    async fn card_status(&self, name: &str) -> Value {
        let status = self.get("/api/status").await;
        status["cards"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap()
    }

    async fn wait_card(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(&format!("card {name} {what}"), WAIT, || async {
            let card = self.card_status(name).await;
            if done(&card) { Ok(card) } else { Err(format!("{card:#}")) }
        })
        .await
    }
}

/// The name of the card that signed a delivered request; its upload verifies against that
/// card's certificate and carries its certNo.
fn signed_by(detail: &Value, cards: &[SimCard]) -> String {
    let upload = &detail["uploads"][0];
    let card = upload["card"].as_str().unwrap_or_else(|| panic!("no card: {detail:#}"));
    let sim = &cards.iter().find(|c| c.name == card).unwrap().sim;
    let body = UploadBody::parse(upload["upload_body"].as_str().unwrap()).unwrap();
    assert_eq!(body.cert_no, sim.cert_no().as_str(), "the upload carries the signing card's certNo");
    let verifier = SignatureVerifier::from_bytes(sim.keys().cert_der()).unwrap();
    verifier.verify(body.presign.as_str().as_bytes(), &body.sign_value).expect("verifies with its card");
    card.to_owned()
}

async fn every_card_signs(cards: Vec<SimCard>) {
    let (customs, _certs) = start_customs(&cards.iter().collect::<Vec<_>>()).await;
    let h = start_service(&cards, &[], &customs).await;
    // A card that connects after the others have emptied the queue would sign nothing: the
    // requests come once every card is ready to take them.
    for card in &cards {
        h.wait_card(&card.name, "connected", |c| c["connected"] == true && c["cert_no"].is_string()).await;
    }
    let ids = h.requests("many", cards.len() * 8).await;
    let details = h.all_delivered(&ids).await;
    let mut by_card = std::collections::BTreeMap::<String, usize>::new();
    for detail in &details {
        *by_card.entry(signed_by(detail, &cards)).or_default() += 1;
    }
    for card in &cards {
        assert!(
            by_card.get(&card.name).copied().unwrap_or(0) > 0,
            "card {} signed nothing: {by_card:?}",
            card.name
        );
        assert_eq!(card.sim.stats().wrong_pins, 0);
    }
    assert_eq!(customs.report().totals.stored, u64::try_from(ids.len()).unwrap(), "each stored once");

    let status = h.get("/api/status").await;
    let names: Vec<&str> =
        status["cards"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, cards.iter().map(|c| c.name.as_str()).collect::<Vec<_>>());
    for card in status["cards"].as_array().unwrap() {
        let sim = &cards.iter().find(|c| c.name == card["name"]).unwrap().sim;
        assert_eq!(card["cert_no"], sim.cert_no().as_str(), "{card}");
        assert_eq!(card["connected"], true, "{card}");
    }
    let (_, metrics) = h.metrics(Some(common::ADMIN_TOKEN)).await;
    for (card, n) in &by_card {
        assert!(
            metrics.contains(&format!("customs179_signatures_total{{card=\"{card}\"}} {n}\n")),
            "{metrics}"
        );
        assert!(metrics.contains(&format!("customs179_card_paused{{card=\"{card}\",stage=\"signing\"}} 0")));
    }
    h.stop().await;
}

both_stores! {
async fn two_cards_share_the_queue_and_each_signature_is_its_cards() {
    every_card_signs(vec![start_card("a", Algo::Sm2, 100).await, start_card("b", Algo::Rsa, 100).await])
        .await;
}
}

both_stores! {
async fn four_cards_share_the_queue_and_each_signature_is_its_cards() {
    let mut cards = Vec::new();
    for (name, algo) in [("a", Algo::Sm2), ("b", Algo::Sm2), ("c", Algo::Rsa), ("d", Algo::Sm2)] {
        cards.push(start_card(name, algo, 100).await);
    }
    every_card_signs(cards).await;
}
}

both_stores! {
async fn a_wrong_pin_pauses_its_card_only_and_is_never_retried() {
    let cards = vec![start_card("a", Algo::Sm2, 50).await, start_card("b", Algo::Sm2, 50).await];
    let (customs, _certs) = start_customs(&cards.iter().collect::<Vec<_>>()).await;
    let h = start_service(&cards, &[("b", WRONG_PIN)], &customs).await;
    let ids = h.requests("pin", 12).await;
    let details = h.all_delivered(&ids).await;
    assert!(details.iter().all(|d| signed_by(d, &cards) == "a"), "only card a signs");
    let b = h.wait_card("b", "paused", |c| !c["paused"].is_null()).await;
    assert!(b["paused"]["reason"].as_str().unwrap().contains("refused"), "{b}");
    assert_eq!(cards[1].sim.stats().wrong_pins, 1, "one wrong PIN, never retried");
    assert!(h.card_status("a").await["paused"].is_null());
    let controls = h.controls().await;
    assert_eq!(controls["signing"]["paused"], false, "all signing goes on: {controls}");
    assert_eq!(controls["cards"][1]["name"], "b");
    assert_eq!(controls["cards"][1]["signing"]["paused"], true, "{controls}");
    assert_eq!(controls["cards"][0]["signing"]["paused"], false, "{controls}");

    // The card's own alert, while its pause lasts.
    eventually("the alert for card b", WAIT, || async {
        let alerts = h.get("/api/alerts").await;
        let active = alerts["active"].as_array().unwrap();
        let found = active.iter().any(|a| a["kind"] == "signing_paused" && a["card"] == "b");
        if found { Ok(()) } else { Err(format!("{alerts:#}")) }
    })
    .await;

    // Still paused a while on: nothing reaches the card.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.requests("later", 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cards[1].sim.stats().sign_requests, 1);

    // An unknown card is refused; a resume of b is its own, audited.
    let (status, _) = h.post("/api/control/cards/nope/signing/resume", "{}").await;
    assert_eq!(status, 404);
    let (status, resumed) = h.post("/api/control/cards/b/signing/resume", "{}").await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["card"], "b");
    let audit = h.get("/api/audit").await;
    assert_eq!(audit["entries"][0]["action"], "resume signing on card b", "{audit}");
    h.stop().await;
}
}

both_stores! {
async fn a_card_that_disappears_leaves_its_work_to_the_others() {
    let mut cards = vec![start_card("a", Algo::Sm2, 100).await, start_card("b", Algo::Sm2, 100).await];
    let (customs, _certs) = start_customs(&cards.iter().collect::<Vec<_>>()).await;
    let h = start_service(&cards, &[], &customs).await;
    let first = h.requests("before", 8).await;
    h.all_delivered(&first).await;

    let gone = cards.remove(1);
    let gone_url = gone.sim.ws_url();
    gone.sim.stop().await;
    let after = h.requests("after", 12).await;
    let details = h.all_delivered(&after).await;
    assert!(details.iter().all(|d| d["uploads"][0]["card"] == "a"), "card a signs what is left");
    let b = h
        .wait_card("b", "unreachable", |c| c["connected"] == false && !c["unreachable_since"].is_null())
        .await;
    assert_eq!(b["url"], gone_url.as_str());
    assert!(b["paused"].is_null(), "a card that went away is not paused: it comes back by itself");
    h.stop().await;
}
}

both_stores! {
async fn a_20004_for_one_cards_certno_sends_its_requests_to_another_card() {
    // Card b is quick, so it signs its share before its first upload is refused.
    let cards = vec![start_card("a", Algo::Sm2, 300).await, start_card("b", Algo::Sm2, 20).await];
    let (customs, _certs) = start_customs(&[&cards[0]]).await;
    assert_eq!(customs.cert_nos(), [cards[0].sim.cert_no().as_str()], "customs knows card a only");
    let h = start_service(&cards, &[], &customs).await;
    let ids = h.requests("refused", 10).await;
    let details = h.all_delivered(&ids).await;
    assert!(details.iter().all(|d| signed_by(d, &cards) == "a"), "everything delivered is card a's");
    let resigned: Vec<&Value> = details
        .iter()
        .filter(|d| {
            d["attempts"].as_array().unwrap().iter().any(|a| {
                a["outcome"].as_str().unwrap_or("").starts_with("sent back to be signed by another card")
            })
        })
        .collect();
    assert!(!resigned.is_empty(), "card b signed some, and they were sent back");
    for detail in &resigned {
        let signs: Vec<&Value> =
            detail["attempts"].as_array().unwrap().iter().filter(|a| a["outcome"] == "signed").collect();
        assert_eq!(signs.len(), 2, "signed by b, then by a: {detail:#}");
        assert_eq!(detail["uploads"].as_array().unwrap().len(), 1, "the prepared text stays");
    }
    let b = h.wait_card("b", "stopped", |c| !c["uploads_stopped"].is_null()).await;
    assert!(b["uploads_stopped"]["reason"].as_str().unwrap().contains("20004"), "{b}");
    let controls = h.controls().await;
    assert_eq!(controls["uploading"]["paused"], false, "card a's uploads go on: {controls}");
    assert_eq!(controls["cards"][1]["uploading"]["paused"], true, "{controls}");
    let report = customs.report();
    let refused = report.uploads.iter().filter(|u| u.code.as_deref() == Some("20004")).count();
    assert!(refused >= 1, "customs refused card b's certNo");
    assert!(
        report
            .uploads
            .iter()
            .filter(|u| u.code.as_deref() == Some("20004"))
            .all(|u| u.cert_no.as_deref() == Some(cards[1].sim.cert_no().as_str())),
        "only card b's uploads were refused"
    );
    // Card b signs nothing more while its certNo is refused.
    let signed_by_b = cards[1].sim.stats().signatures;
    let more = h.requests("more", 4).await;
    h.all_delivered(&more).await;
    assert_eq!(cards[1].sim.stats().signatures, signed_by_b);

    // Registered now: resuming card b's uploads lets it sign again.
    let (status, _) =
        h.post("/api/control/cards/b/uploading/resume", json!({"reason": "registered"}).to_string()).await;
    assert_eq!(status, 200);
    assert!(h.card_status("b").await["uploads_stopped"].is_null());
    h.stop().await;
    customs.stop().await;
}
}
