//! `customs179 doctor` against working and broken setups, all on loopback.

use std::path::Path;
use std::process::Output;

use customs179_sim::customs::{self as customs_sim, CustomsSimOptions};
use customs179_sim::eport::{self as eport_sim, Algo, EportSimOptions};

mod common;

use common::{closed_port, loopback, output_text};

const PIN: &str = "88888888";

fn config(dir: &Path, intake_port: u16, signer: &str, upload_url: &str) -> std::path::PathBuf {
    let path = dir.join("customs179.toml");
    let text = format!(
        r#"
        [intake]
        listen = "127.0.0.1:{intake_port}"
        [admin]
        listen = "127.0.0.1:{admin}"
        token = "doctor-admin-token-0123456789"
        [store]
        path = "{db}"
        [enterprise]
        ebp_code = "DOCTOR0001"
        [signer]
        url = "{signer}"
        pin = "{PIN}"
        timeout_ms = 2000
        [customs]
        environment = "test"
        upload_url = "{upload_url}"
        timeout_ms = 2000
        "#,
        admin = closed_port(),
        db = dir.join("db.sqlite").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A card with an `algo` key, customs registering it and us, and a configuration naming both
/// (with a free intake port): the setup in which doctor should find nothing wrong.
async fn working_setup(
    dir: &Path,
    algo: Algo,
) -> (eport_sim::RunningEportSim, customs_sim::RunningCustomsSim, std::path::PathBuf) {
    let eport =
        eport_sim::start(EportSimOptions::new(loopback(), algo, PIN, dir.join("card"))).await.unwrap();
    let customs = customs_sim::start(CustomsSimOptions::new(loopback(), dir.join("card"), ["DOCTOR0001"]))
        .await
        .unwrap();
    let config = config(dir, closed_port(), &eport.ws_url(), &customs.upload_url());
    (eport, customs, config)
}

async fn doctor(config: &Path) -> Output {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_customs179"))
            .args(["doctor", "--config"])
            .arg(config)
            .env_remove("CUSTOMS179_SIGNER_PIN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_setup_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let (eport, _customs, config) = working_setup(dir.path(), Algo::Sm2).await;

    let output = doctor(&config).await;
    let out = output_text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    for line in [
        "[ok]   configuration",
        "[ok]   database",
        "[ok]   signer",
        "[ok]   certificate: valid for 36",
        "[ok]   test signature: signed and verified with certNo",
        "[ok]   customs",
        "[ok]   intake port",
        "all 7 checks passed",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    assert!(out.contains(eport.cert_no().as_str()), "{out}");
    assert!(!out.contains(PIN), "the PIN is never printed");
    assert_eq!(eport.stats().signatures, 1, "one test signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_setup_lists_each_failure_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    // The intake port is taken by someone else; signer and customs are not there.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let intake_port = squatter.local_addr().unwrap().port();
    let signer = format!("ws://127.0.0.1:{}/", closed_port());
    let customs = format!("http://127.0.0.1:{}/ceb2grab/grab/realTimeDataUpload", closed_port());
    let config = config(dir.path(), intake_port, &signer, &customs);

    let output = doctor(&config).await;
    let out = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("[ok]   configuration") && out.contains("[ok]   database"), "{out}");
    assert!(out.contains("[FAIL] signer") && out.contains("fix: start EportClient"), "{out}");
    assert!(out.contains("[FAIL] customs: cannot connect") && out.contains("fix: check DNS"), "{out}");
    assert!(out.contains(&format!("[FAIL] intake port: cannot bind 127.0.0.1:{intake_port}")), "{out}");
    assert!(out.contains("3 of 5 checks failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_signing_is_not_tried_and_a_bad_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (eport, _customs, config) = working_setup(dir.path(), Algo::Rsa).await;
    let store = customs179_store::Store::open(&dir.path().join("db.sqlite")).await.unwrap();
    store.pause(customs179_store::Stage::Signing, "the card refused: test", 1).await.unwrap();
    store.close().await;

    let output = doctor(&config).await;
    let out = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("[ok]   signer"), "{out}");
    assert!(
        out.contains("[FAIL] test signature: skipped: signing is paused: the card refused: test"),
        "{out}"
    );
    assert_eq!(eport.stats().sign_requests, 0, "nothing reaches the card while paused");

    std::fs::write(&config, "[intake]\nlisten = 5\n").unwrap();
    let output = doctor(&config).await;
    let out = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("[FAIL] configuration") && out.contains("customs179 check"), "{out}");
}
