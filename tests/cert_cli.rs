//! `customs179 cert`: what registration needs, read off the card through EportClient (the
//! simulator), the certificate written as .cer and .pem, and `--check` failing within 30
//! days of the certificate's end.

use std::path::Path;
use std::process::Command;

use customs179_core::CertificateInfo;
use customs179_sim::eport::{self, Algo, EportSimOptions, RunningEportSim};
use customs179_sim::keys::CertValidity;

mod common;

use common::{loopback, output_text};

async fn card(dir: &Path, expires_in_days: i64) -> RunningEportSim {
    let mut options = EportSimOptions::new(loopback(), Algo::Sm2, "pin-1", dir);
    options.cert_validity = Some(CertValidity::ending_in_days(expires_in_days).unwrap());
    eport::start(options).await.unwrap()
}

fn config(dir: &Path, card: &RunningEportSim) -> std::path::PathBuf {
    let path = dir.join("customs179.toml");
    let signer = format!(
        "[signer]\nurl = \"{}\"\npin = \"pin-1\"\n[customs]\nenvironment = \"test\"\n",
        card.ws_url()
    );
    std::fs::write(&path, common::service_toml(loopback(), loopback(), &dir.join("db.sqlite"), "", &signer))
        .unwrap();
    path
}

fn cert(config: &Path, out: &Path, check: bool) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_customs179"));
    command.arg("cert").arg("--config").arg(config).arg("--out").arg(out);
    if check {
        command.arg("--check");
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_what_registration_needs_and_writes_the_certificate() {
    let (dir, card_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sim = card(card_dir.path(), 400).await;
    let config = config(dir.path(), &sim);
    let out = dir.path().join("registration");
    let output = cert(&config, &out, true);
    let text = output_text(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let cert_no = sim.cert_no().to_string();
    assert_eq!(cert_no, cert_no.to_lowercase());
    assert!(text.contains(&format!("certNo      {cert_no}\n")), "{text}");
    assert!(text.contains("subject     CN=customs179 simulated card"), "{text}");
    assert!(text.contains("algorithm   SM2/SM3"), "{text}");
    assert!(text.contains("days left   399") || text.contains("days left   400"), "{text}");
    let der = std::fs::read(out.join(format!("{cert_no}.cer"))).unwrap();
    assert_eq!(der, sim.keys().cert_der(), "the card's certificate, DER");
    let pem = std::fs::read_to_string(out.join(format!("{cert_no}.pem"))).unwrap();
    assert_eq!(pem, sim.keys().cert_pem().unwrap(), "the same certificate, PEM");
    let read_back = CertificateInfo::from_bytes(pem.as_bytes()).unwrap();
    assert_eq!(read_back.cert_no.to_string(), cert_no);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_within_30_days_and_when_expired_and_without_a_card() {
    let (dir, card_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (days, wanted) in [(29, "expires within 30 days"), (-3, "has expired")] {
        let sim = card(card_dir.path(), days).await;
        let config = config(dir.path(), &sim);
        let output = cert(&config, dir.path(), true);
        let text = output_text(&output);
        assert_eq!(output.status.code(), Some(1), "{days}: {text}");
        assert!(text.contains(wanted), "{days}: {text}");
        // Without --check it only reports.
        assert_eq!(cert(&config, dir.path(), false).status.code(), Some(0), "{days}");
        sim.stop().await;
    }
    // No EportClient: a check that failed; a configuration that cannot be read: bad input.
    let gone = card(card_dir.path(), 100).await;
    let config = config(dir.path(), &gone);
    gone.stop().await;
    let output = cert(&config, dir.path(), false);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let missing = cert(&dir.path().join("nope.toml"), dir.path(), false);
    assert_eq!(missing.status.code(), Some(2), "{}", output_text(&missing));
}
