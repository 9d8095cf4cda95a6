//! `customs179 doctor` against working and broken setups, all on loopback, on either store.

use std::path::Path;
use std::process::Output;

use customs179_sim::customs::{self as customs_sim, CustomsSimOptions};
use customs179_sim::eport::{self as eport_sim, Algo, EportSimOptions};

mod common;

use common::postgres::Schema;
use common::{closed_port, loopback, output_text, store_toml};

const PIN: &str = "88888888";

/// A configuration of `serve` in `dir`; `store` the lines of its `[store]`.
fn config(dir: &Path, intake_port: u16, signer: &str, upload_url: &str, store: &str) -> std::path::PathBuf {
    let path = dir.join("customs179.toml");
    let text = format!(
        r#"
        [intake]
        listen = "127.0.0.1:{intake_port}"
        [admin]
        listen = "127.0.0.1:{admin}"
        token = "doctor-admin-token-0123456789"
        [store]
        {store}
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
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A card with an `algo` key, customs registering it and us, and a configuration naming both
/// (with a free intake port) and the test's store: the setup in which doctor should find
/// nothing wrong.
struct Setup {
    eport: eport_sim::RunningEportSim,
    customs: customs_sim::RunningCustomsSim,
    config: std::path::PathBuf,
    schema: Option<Schema>,
}

async fn working_setup(dir: &Path, algo: Algo) -> Setup {
    let eport =
        eport_sim::start(EportSimOptions::new(loopback(), algo, PIN, dir.join("card"))).await.unwrap();
    let customs = customs_sim::start(CustomsSimOptions::new(loopback(), dir.join("card"), ["DOCTOR0001"]))
        .await
        .unwrap();
    let (store, schema) = store_toml(&dir.join("db.sqlite")).await;
    let config = config(dir, closed_port(), &eport.ws_url(), &customs.upload_url(), &store);
    Setup { eport, customs, config, schema }
}

impl Setup {
    /// The store doctor checks, opened behind its back.
    async fn store(&self, dir: &Path) -> customs179_store::Store {
        match &self.schema {
            Some(schema) => customs179_store::Store::connect(&schema.url()).await.unwrap(),
            None => customs179_store::Store::open(&dir.join("db.sqlite")).await.unwrap(),
        }
    }

    async fn done(self) {
        if let Some(schema) = &self.schema {
            schema.drop_now().await;
        }
    }
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

both_stores! {
async fn a_working_setup_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let setup = working_setup(dir.path(), Algo::Sm2).await;

    let output = doctor(&setup.config).await;
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
    let database = if setup.schema.is_some() { "[ok]   database: postgres://" } else { "db.sqlite (0 requests)" };
    assert!(out.contains(database) && out.contains("(0 requests)"), "{database:?} missing:\n{out}");
    assert!(out.contains(setup.eport.cert_no().as_str()), "{out}");
    assert!(!out.contains(PIN), "the PIN is never printed");
    assert_eq!(setup.eport.stats().signatures, 1, "one test signature");
    setup.done().await;
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_setup_lists_each_failure_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    // The intake port is taken by someone else; signer and customs are not there.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let intake_port = squatter.local_addr().unwrap().port();
    let signer = format!("ws://127.0.0.1:{}/", closed_port());
    let customs = format!("http://127.0.0.1:{}/ceb2grab/grab/realTimeDataUpload", closed_port());
    let store = format!("path = {:?}", dir.path().join("db.sqlite"));
    let config = config(dir.path(), intake_port, &signer, &customs, &store);

    let output = doctor(&config).await;
    let out = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("[ok]   configuration") && out.contains("[ok]   database"), "{out}");
    assert!(out.contains("[FAIL] signer") && out.contains("fix: start EportClient"), "{out}");
    assert!(out.contains("[FAIL] customs: cannot connect") && out.contains("fix: check DNS"), "{out}");
    assert!(out.contains(&format!("[FAIL] intake port: cannot bind 127.0.0.1:{intake_port}")), "{out}");
    assert!(out.contains("3 of 5 checks failed"), "{out}");
}

both_stores! {
async fn paused_signing_is_not_tried_and_a_bad_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let setup = working_setup(dir.path(), Algo::Rsa).await;
    let config = setup.config.clone();
    let store = setup.store(dir.path()).await;
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
    assert_eq!(setup.eport.stats().sign_requests, 0, "nothing reaches the card while paused");

    std::fs::write(&config, "[intake]\nlisten = 5\n").unwrap();
    let output = doctor(&config).await;
    let out = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("[FAIL] configuration") && out.contains("customs179 check"), "{out}");
    setup.done().await;
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgresql_fails_the_database_check_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let setup = working_setup(dir.path(), Algo::Sm2).await;
    let port = closed_port();
    let url = format!("postgres://customs:hunter2-secret@127.0.0.1:{port}/orders");
    let (signer, customs) = (setup.eport.ws_url(), setup.customs.upload_url());
    let config = config(dir.path(), closed_port(), &signer, &customs, &format!("url = {url:?}"));

    let output = doctor(&config).await;
    let out = output_text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("[FAIL] database: postgres://customs@127.0.0.1:{port}/orders")), "{out}");
    assert!(out.contains("fix: check [store] url"), "{out}");
    assert!(!out.contains("hunter2"), "the password is never printed:\n{out}");
    assert!(out.contains("[ok]   customs"), "the network checks still run:\n{out}");
    assert_eq!(setup.eport.stats().sign_requests, 0, "no test signature without a store");
}
