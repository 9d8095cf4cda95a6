//! The customs simulator through real sockets: uploads signed by software cards, posted
//! form-encoded with reqwest as the service posts them; and customs' first call against a
//! small platform endpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing;
use customs179_core::{PaymentRecord, PreSign, RecordRules, form_field};
use customs179_sim::customs::{
    self as sim, CallError, CallOptions, CustomsFaults, CustomsFaultsUpdate, CustomsSimError,
    CustomsSimOptions, FaultKind, Report, RunningCustomsSim,
};
use customs179_sim::keys::{Algo, CardKeys};
use serde_json::{Value, json};
use tempfile::TempDir;

/// One module, so `cargo test -p customs179-sim customs` selects every test of this file.
mod customs {
    use super::*;

    const EBP_CODE: &str = "4404840022";
    const WAIT: Duration = Duration::from_secs(10);

    fn any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// The valid complete record of the tests' data (non-ASCII text included), for our ebpCode.
    fn record() -> PaymentRecord {
        let text = include_str!("../../../tests/data/complete-record.json");
        let mut record = PaymentRecord::parse(text, RecordRules::COMPLETE).expect("a valid record");
        record.head.ebp_code = Some(EBP_CODE.to_owned());
        record
    }

    fn now_ms() -> u64 {
        u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
    }

    fn new_session_id() -> String {
        uuid::Uuid::new_v4().to_string().to_uppercase()
    }

    /// The upload body of `record` for `session_id`, signed by `keys` over its pre-sign string.
    fn upload_body(keys: &CardKeys, record: &PaymentRecord, session_id: &str) -> String {
        let presign = PreSign::build(record, session_id, now_ms()).expect("a pre-sign string");
        let sign_value = keys.sign(presign.as_bytes()).expect("signs");
        presign.upload_body(keys.cert_no().as_str(), &sign_value).into_string()
    }

    /// A certificate directory holding the certificates of `cards`.
    fn certs_dir(cards: &[&CardKeys]) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (i, keys) in cards.iter().enumerate() {
            std::fs::write(dir.path().join(format!("card-{i}.pem")), keys.cert_pem().unwrap()).unwrap();
        }
        dir
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A new connection per request: a connection closed by a fault is never reused.
        reqwest::Client::builder().no_proxy().timeout(WAIT).pool_max_idle_per_host(0).build().unwrap()
    }

    async fn start(dir: &Path, strict: bool, faults: CustomsFaults) -> RunningCustomsSim {
        let mut options = CustomsSimOptions::new(any_port(), dir, [EBP_CODE]);
        options.strict = strict;
        options.faults = faults;
        options.seed = Some(7);
        sim::start(options).await.expect("the simulator starts")
    }

    /// Posts an upload as the service does and returns the HTTP status and the body.
    async fn post(client: &reqwest::Client, url: &str, body: &str) -> Result<(u16, String), reqwest::Error> {
        let response = client.post(url).form(&[("payExInfoStr", body)]).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// Posts an upload that must be answered HTTP 200 with JSON; returns code and message.
    async fn answered(client: &reqwest::Client, sim: &RunningCustomsSim, body: &str) -> (String, String) {
        let (status, text) = post(client, &sim.upload_url(), body).await.expect("an answer");
        assert_eq!(status, 200, "{text}");
        let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
        assert_eq!(answer["total"], 0, "{answer}");
        assert!(answer["serviceTime"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{answer}");
        (
            answer["code"].as_str().expect("a string code").to_owned(),
            answer["message"].as_str().unwrap().to_owned(),
        )
    }

    fn last(report: &Report) -> &sim::ReceivedUpload {
        report.uploads.last().expect("an upload in the report")
    }

    #[tokio::test]
    async fn a_good_upload_is_stored_and_its_session_id_again_gets_20006() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        let http = client();
        let session_id = new_session_id();
        let body = upload_body(&keys, &record(), &session_id);

        assert_eq!(answered(&http, &sim, &body).await, ("10000".to_owned(), "上传成功".to_owned()));
        let report = sim.report();
        let upload = last(&report);
        assert_eq!(upload.session_id.as_deref(), Some(session_id.as_str()));
        assert_eq!(upload.guid.as_deref(), Some("9D55BA71-22DE-41F4-8B50-C36C83B3B530"));
        assert_eq!(upload.cert_no.as_deref(), Some(keys.cert_no().as_str()));
        assert_eq!(upload.ebp_code.as_deref(), Some(EBP_CODE));
        assert_eq!((upload.http_status, upload.code.as_deref()), (Some(200), Some("10000")));
        assert!(upload.violations.is_empty(), "{:?}", upload.violations);
        assert!(upload.stored);
        assert_eq!(upload.fault, None);

        // A new signature (and guid) for the same sessionID changes nothing: the key is sessionID.
        let mut again = record();
        again.head.guid = Some(customs179_core::Guid::from_random_bytes([9; 16]));
        let (code, message) = answered(&http, &sim, &upload_body(&keys, &again, &session_id)).await;
        assert_eq!(code, "20006");
        assert!(message.contains("违反唯一约束条件"), "{message}");

        let report = sim.report();
        assert!(!last(&report).stored);
        assert_eq!(report.totals.received, 2);
        assert_eq!(report.totals.stored, 1);
        assert_eq!(report.totals.by_code.get("10000"), Some(&1));
        assert_eq!(report.totals.by_code.get("20006"), Some(&1));
        assert_eq!(report.totals.with_violations, 0);
        assert_eq!(report.cert_nos, [keys.cert_no().to_string()]);
        assert_eq!(report.ebp_codes, [EBP_CODE]);
        assert_eq!(report.seed, 7);

        // GET /report is the same data.
        let over_http: Report = http
            .get(format!("{}/report", sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .expect("GET /report is a report");
        assert_eq!(over_http, report);
        sim.stop().await;
    }

    #[tokio::test]
    async fn the_body_is_read_as_utf8_whatever_charset_is_declared() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let sim = start(dir.path(), true, CustomsFaults::default()).await;
        let body = upload_body(&keys, &record(), &new_session_id());
        let form = format!("payExInfoStr={}", percent_encode(&body));
        let response = client()
            .post(sim.upload_url())
            .header("Content-Type", "application/x-www-form-urlencoded; charset=ISO-8859-1")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "10000", "{answer}");
        assert!(last(&sim.report()).violations.is_empty());
    }

    /// Percent-encodes every byte outside the unreserved set, as Java's URLEncoder roughly does.
    fn percent_encode(text: &str) -> String {
        let mut out = String::new();
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.*".contains(&byte) {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }

    #[tokio::test]
    async fn an_unknown_cert_no_or_an_unregistered_ebp_code_gets_20004() {
        let registered = CardKeys::generate(Algo::Sm2).unwrap();
        let stranger = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&registered]);
        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        let http = client();

        let (code, message) =
            answered(&http, &sim, &upload_body(&stranger, &record(), &new_session_id())).await;
        assert_eq!((code.as_str(), message.as_str()), ("20004", "企业实时数据获取验签证书未在服务系统注册"));
        let report = sim.report();
        assert!(!last(&report).stored);
        assert!(last(&report).violations.iter().any(|v| v.contains("is not registered")), "{report:?}");

        let mut other_platform = record();
        other_platform.head.ebp_code = Some("9999999999".into());
        let (code, _) =
            answered(&http, &sim, &upload_body(&registered, &other_platform, &new_session_id())).await;
        assert_eq!(code, "20004");
        let report = sim.report();
        assert!(last(&report).violations.iter().any(|v| v.contains("ebpCode \"9999999999\"")), "{report:?}");
        assert_eq!(report.totals.stored, 0);

        // The certNo is compared as text, as customs registers it: lower case.
        let session_id = new_session_id();
        let presign = PreSign::build(&record(), &session_id, now_ms()).unwrap();
        let sign_value = registered.sign(presign.as_bytes()).unwrap();
        let upper = presign.upload_body(&registered.cert_no().as_str().to_uppercase(), &sign_value);
        if registered.cert_no().as_str() != registered.cert_no().as_str().to_uppercase() {
            assert_eq!(answered(&http, &sim, upper.as_str()).await.0, "20004");
        }
    }

    #[tokio::test]
    async fn a_bad_signature_is_stored_like_customs_does_but_reported() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        let session_id = new_session_id();
        let presign = PreSign::build(&record(), &session_id, now_ms()).unwrap();
        let wrong = keys.sign(b"some other text").unwrap();
        let body = presign.upload_body(keys.cert_no().as_str(), &wrong);

        assert_eq!(answered(&client(), &sim, body.as_str()).await.0, "10000");
        let report = sim.report();
        let upload = last(&report);
        assert!(upload.stored);
        assert_eq!(upload.violations.len(), 1, "{:?}", upload.violations);
        assert!(upload.violations[0].starts_with("signature does not verify"), "{:?}", upload.violations);
        assert_eq!(report.totals.with_violations, 1);
    }

    #[tokio::test]
    async fn strict_refuses_a_violation_with_20000_and_stores_nothing() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let sim = start(dir.path(), true, CustomsFaults::default()).await;
        let http = client();
        let session_id = new_session_id();
        let presign = PreSign::build(&record(), &session_id, now_ms()).unwrap();
        let wrong = keys.sign(b"some other text").unwrap();

        let (code, message) =
            answered(&http, &sim, presign.upload_body(keys.cert_no().as_str(), &wrong).as_str()).await;
        assert_eq!(code, "20000");
        assert!(message.starts_with("上传失败"), "{message}");
        assert!(message.contains("signature does not verify"), "{message}");
        assert!(!last(&sim.report()).stored);

        // Nothing was stored, so a correct upload of the same sessionID goes through.
        let right = keys.sign(presign.as_bytes()).unwrap();
        let (code, _) =
            answered(&http, &sim, presign.upload_body(keys.cert_no().as_str(), &right).as_str()).await;
        assert_eq!(code, "10000");
        let report = sim.report();
        assert!(last(&report).stored && last(&report).violations.is_empty(), "{report:?}");
    }

    #[tokio::test]
    async fn field_rule_violations_are_recorded_with_their_pointer() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        let mut broken = record();
        broken.head.currency = "RMB".into();
        broken.lists[0].recp_name = String::new();

        assert_eq!(
            answered(&client(), &sim, &upload_body(&keys, &broken, &new_session_id())).await.0,
            "10000"
        );
        let report = sim.report();
        let violations = &last(&report).violations;
        assert!(
            violations.iter().any(|v| v.starts_with("/payExchangeInfoHead/currency: ")),
            "{violations:?}"
        );
        assert!(
            violations.iter().any(|v| v.starts_with("/payExchangeInfoLists/0/recpName")),
            "{violations:?}"
        );
        assert!(!violations.iter().any(|v| v.contains("signature")), "the signature holds: {violations:?}");
    }

    #[tokio::test]
    async fn malformed_bodies_get_20000() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        let http = client();
        let good = upload_body(&keys, &record(), "S-MALFORMED");
        let value: Value = serde_json::from_str(&good).unwrap();
        let mut no_sign_value = value.clone();
        no_sign_value.as_object_mut().unwrap().remove("signValue");
        let mut empty_session = value.clone();
        empty_session["sessionID"] = json!("");

        let forms = [
            String::new(),
            "openReq=x".to_owned(),
            "payExInfoStr=%FF".to_owned(),
            "payExInfoStr=a&payExInfoStr=b".to_owned(),
            "payExInfoStr=nonsense".to_owned(),
            format!("payExInfoStr={}", percent_encode("[1,2]")),
            format!("payExInfoStr={}", percent_encode(&no_sign_value.to_string())),
            format!("payExInfoStr={}", percent_encode(&empty_session.to_string())),
        ];
        for form in &forms {
            let response = http.post(sim.upload_url()).body(form.clone()).send().await.unwrap();
            assert_eq!(response.status(), 200, "{form}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["code"], "20000", "{form}: {answer}");
            assert!(answer["message"].as_str().unwrap().starts_with("上传失败"), "{answer}");
            let report = sim.report();
            let upload = last(&report);
            assert!(!upload.stored && !upload.violations.is_empty(), "{form}: {upload:?}");
        }
        let report = sim.report();
        assert_eq!(report.totals.received, forms.len() as u64);
        assert_eq!(report.totals.stored, 0);
        // What could be read of a broken upload is kept.
        assert_eq!(report.uploads[6].session_id.as_deref(), Some("S-MALFORMED"));
        assert!(report.uploads[6].violations.iter().any(|v| v.contains("/signValue")), "{report:?}");

        // GET on the upload path is not an upload.
        let response = http.get(sim.upload_url()).send().await.unwrap();
        assert_eq!(response.status(), 405);
        assert_eq!(sim.report().totals.received, forms.len() as u64);
    }

    #[tokio::test]
    async fn deterministic_faults_before_storing_store_nothing() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let faults = CustomsFaults { next_http_5xx: 1, next_20000: 1, ..CustomsFaults::default() };
        let sim = start(dir.path(), false, faults).await;
        let http = client();
        let body = upload_body(&keys, &record(), &new_session_id());

        let (status, text) = post(&http, &sim.upload_url(), &body).await.unwrap();
        assert_eq!(status, 503);
        assert!(serde_json::from_str::<Value>(&text).is_err(), "a gateway page, not customs' JSON: {text}");
        assert_eq!(answered(&http, &sim, &body).await, ("20000".to_owned(), "上传失败".to_owned()));
        assert_eq!(answered(&http, &sim, &body).await.0, "10000", "neither fault stored the upload");

        let report = sim.report();
        let faults: Vec<_> = report.uploads.iter().map(|u| (u.fault, u.http_status, u.stored)).collect();
        assert_eq!(
            faults,
            [
                (Some(FaultKind::Http5xx), Some(503), false),
                (Some(FaultKind::Code20000), Some(200), false),
                (None, Some(200), true)
            ]
        );
        assert_eq!(report.totals.http_5xx, 1);
        assert_eq!(sim.faults(), CustomsFaults::default(), "the counts are used up");
    }

    #[tokio::test]
    async fn a_timeout_keeps_the_client_waiting_then_closes_without_storing() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let faults = CustomsFaults { next_timeout: 1, timeout_ms: 300, ..CustomsFaults::default() };
        let sim = start(dir.path(), false, faults).await;
        let body = upload_body(&keys, &record(), &new_session_id());

        let began = Instant::now();
        let quick =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).pool_max_idle_per_host(0);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let outcome = post(&quick.build().unwrap(), &sim.upload_url(), &body).await;
        assert!(outcome.is_err(), "no answer: {outcome:?}");
        assert!(began.elapsed() >= Duration::from_millis(300), "{:?}", began.elapsed());
        let report = sim.report();
        let upload = last(&report);
        assert_eq!(
            (upload.fault, upload.http_status, upload.stored),
            (Some(FaultKind::TimeoutBeforeStore), None, false)
        );
        assert_eq!(report.totals.unanswered, 1);

        // A client that gives up first sees a timeout.
        sim.update_faults(&CustomsFaultsUpdate {
            next_timeout: Some(1),
            timeout_ms: Some(5_000),
            ..Default::default()
        })
        .unwrap();
        let impatient =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(200)).build().unwrap();
        let error = post(&impatient, &sim.upload_url(), &body).await.expect_err("a timeout");
        assert!(error.is_timeout(), "{error}");

        assert_eq!(
            answered(&client(), &sim, &body).await.0,
            "10000",
            "the timed-out uploads were not stored"
        );
        // Stopping does not wait for a timeout in progress.
        sim.update_faults(&CustomsFaultsUpdate {
            next_timeout: Some(1),
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .unwrap();
        let url = sim.upload_url();
        let pending = tokio::spawn(async move { post(&client(), &url, "payExInfoStr=x").await });
        while sim.report().totals.received < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopping = Instant::now();
        sim.stop().await;
        assert!(stopping.elapsed() < Duration::from_secs(5), "{:?}", stopping.elapsed());
        assert!(pending.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_lost_answer_was_stored_so_the_retry_gets_20006() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        let http = client();
        // Set at runtime over the control route, as an operator would.
        let faults: CustomsFaults = http
            .post(format!("{}/faults", sim.base_url()))
            .json(&json!({"next_lost": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(faults.next_lost, 1);

        let body = upload_body(&keys, &record(), &new_session_id());
        let began = Instant::now();
        let outcome = post(&http, &sim.upload_url(), &body).await;
        assert!(outcome.is_err(), "the answer is lost: {outcome:?}");
        assert!(began.elapsed() < Duration::from_secs(5), "closed at once");
        let report = sim.report();
        let upload = last(&report);
        assert_eq!(
            (upload.fault, upload.http_status, upload.stored),
            (Some(FaultKind::LostAfterStore), None, true)
        );

        assert_eq!(answered(&http, &sim, &body).await.0, "20006");
        assert_eq!(sim.report().totals.stored, 1);
    }

    #[tokio::test]
    async fn faults_over_http_refuse_typos_and_bad_shares() {
        let dir = tempfile::tempdir().unwrap();
        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        let http = client();
        let url = format!("{}/faults", sim.base_url());

        for bad in [json!({"http5xx": 1}), json!({"http_5xx": 1.5}), json!({"code_20000": -1})] {
            let response = http.post(&url).json(&bad).send().await.unwrap();
            assert_eq!(response.status(), 422, "{bad}");
        }
        let response =
            http.post(&url).json(&json!({"http_5xx": 0.25, "next_20000": 2})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let faults: CustomsFaults = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(faults, CustomsFaults { http_5xx: 0.25, next_20000: 2, ..CustomsFaults::default() });
        assert_eq!(sim.faults(), faults);
        assert!(
            sim.update_faults(&CustomsFaultsUpdate { lost_after_store: Some(2.0), ..Default::default() })
                .is_err()
        );
    }

    #[tokio::test]
    async fn shares_from_one_seed_give_the_same_run() {
        let keys = CardKeys::generate(Algo::Sm2).unwrap();
        let dir = certs_dir(&[&keys]);
        let http = client();
        let faults = CustomsFaults { http_5xx: 0.3, code_20000: 0.3, ..CustomsFaults::default() };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let sim = start(dir.path(), false, faults.clone()).await;
            let mut statuses = Vec::new();
            for i in 0..20 {
                let body = upload_body(&keys, &record(), &format!("S-SEED-{i}"));
                let (status, text) = post(&http, &sim.upload_url(), &body).await.unwrap();
                statuses.push(format!(
                    "{status} {}",
                    serde_json::from_str::<Value>(&text).map_or(Value::Null, |v| v["code"].clone())
                ));
            }
            runs.push(statuses);
            sim.stop().await;
        }
        assert_eq!(runs[0], runs[1]);
        for kind in ["503 null", "200 \"20000\"", "200 \"10000\""] {
            assert!(
                runs[0].iter().any(|s| s == kind),
                "with shares of 0.3, 0.3 and 0.4, 20 uploads meet {kind}: {:?}",
                runs[0]
            );
        }
    }

    #[tokio::test]
    async fn rsa_certificates_are_registered_too() {
        let sm2 = CardKeys::generate(Algo::Sm2).unwrap();
        let rsa = CardKeys::generate(Algo::Rsa).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sm2.pem"), sm2.cert_pem().unwrap()).unwrap();
        // DER as well as PEM.
        std::fs::write(dir.path().join("rsa.cer"), rsa.cert_der()).unwrap();
        let sim = start(dir.path(), true, CustomsFaults::default()).await;
        let mut registered = vec![sm2.cert_no().to_string(), rsa.cert_no().to_string()];
        registered.sort();
        assert_eq!(sim.cert_nos(), registered);

        let http = client();
        assert_eq!(answered(&http, &sim, &upload_body(&rsa, &record(), &new_session_id())).await.0, "10000");
        assert_eq!(answered(&http, &sim, &upload_body(&sm2, &record(), &new_session_id())).await.0, "10000");
        assert_eq!(sim.report().totals.with_violations, 0);
    }

    #[tokio::test]
    async fn other_files_in_the_certificate_directory_are_skipped_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        // The eport simulator's state: a private key next to its certificate.
        let keys = CardKeys::load_or_create(dir.path(), Algo::Sm2, None).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "registered 2024-05-01").unwrap();
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        std::fs::create_dir(dir.path().join("old")).unwrap();
        std::fs::write(dir.path().join("old").join("ignored.pem"), "x").unwrap();

        let sim = start(dir.path(), false, CustomsFaults::default()).await;
        assert_eq!(sim.cert_nos(), [keys.cert_no().to_string()]);
        let mut skipped: Vec<_> = sim
            .skipped_files()
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        skipped.sort();
        assert_eq!(skipped, ["empty.pem", "notes.txt", "sign-key.pem"]);
        let key = sim.skipped_files().iter().find(|f| f.path.ends_with("sign-key.pem")).unwrap();
        assert!(key.reason.contains("PRIVATE KEY"), "{}", key.reason);

        assert_eq!(
            answered(&client(), &sim, &upload_body(&keys, &record(), &new_session_id())).await.0,
            "10000"
        );
    }

    #[tokio::test]
    async fn start_refuses_a_missing_directory_and_bad_shares() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CustomsSimOptions::new(any_port(), dir.path().join("missing"), [EBP_CODE]);
        assert!(matches!(sim::start(missing).await, Err(CustomsSimError::CertsDir { .. })));
        let mut bad = CustomsSimOptions::new(any_port(), dir.path(), [EBP_CODE]);
        bad.faults.timeout_before_store = f64::NAN;
        assert!(matches!(sim::start(bad).await, Err(CustomsSimError::Faults(_))));
    }

    /// What a platform endpoint saw of customs' calls.
    #[derive(Default)]
    struct Seen {
        user_agents: Vec<String>,
        content_types: Vec<String>,
        open_reqs: Vec<Value>,
    }

    /// A platform endpoint answering `answer` to every call.
    async fn platform(answer: &'static str) -> (String, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        let app = Router::new().route(
            "/customs/open",
            routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                async move {
                    let header = |name: &str| {
                        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
                    };
                    let open_req =
                        form_field(&body, "openReq").ok().and_then(|t| serde_json::from_str(&t).ok());
                    let mut seen = record.lock().unwrap();
                    seen.user_agents.push(header("user-agent"));
                    seen.content_types.push(header("content-type"));
                    seen.open_reqs.push(open_req.unwrap_or(Value::Null));
                    ([("content-type", "application/json;charset=utf-8")], answer)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/customs/open"), seen)
    }

    #[tokio::test]
    async fn the_call_posts_open_req_like_customs_and_checks_the_answer() {
        let (url, seen) = platform(r#"{"code":"10000","message":"","serviceTime":1}"#).await;
        let mut options = CallOptions::new(&url, "SO-1");
        options.count = 3;
        options.rate = 50.0;
        let mut progress = 0;
        let summary = sim::call_with(options, |_| progress += 1).await.unwrap();
        assert!(summary.all_ok(), "{summary:?}");
        assert_eq!((summary.passed(), progress), (3, 3));
        assert_eq!(summary.results.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 2, 3]);

        let seen = seen.lock().unwrap();
        assert!(
            seen.user_agents.iter().all(|ua| ua == "Apache-HttpClient/4.5.3 (Java/1.8.0_60)"),
            "{:?}",
            seen.user_agents
        );
        assert!(
            seen.content_types.iter().all(|ct| ct == "application/x-www-form-urlencoded"),
            "{:?}",
            seen.content_types
        );
        assert_eq!(seen.open_reqs.len(), 3);
        for open_req in &seen.open_reqs {
            assert_eq!(open_req["orderNo"], "SO-1");
            let session_id = open_req["sessionID"].as_str().unwrap();
            assert_eq!(session_id.len(), 36);
            assert_eq!(session_id, session_id.to_uppercase());
            assert!(open_req["serviceTime"].as_u64().is_some(), "a number: {open_req}");
        }
        let mut session_ids: Vec<_> = summary.results.iter().map(|r| r.session_id.clone()).collect();
        session_ids.sort();
        session_ids.dedup();
        assert_eq!(session_ids.len(), 3, "a new sessionID per call");
    }

    #[tokio::test]
    async fn the_call_fails_on_other_answers_and_stops_when_unreachable() {
        for (answer, says) in [
            (r#"{"code":"20000","message":"bad"}"#, "code 20000"),
            (r#"{"code":10000}"#, "the number 10000"),
            ("<html>blocked</html>", "not JSON"),
        ] {
            let (url, _) = platform(answer).await;
            let summary = sim::call(CallOptions::new(&url, "SO-1")).await.unwrap();
            assert!(!summary.all_ok());
            let failure = summary.results[0].failure.as_deref().unwrap();
            assert!(failure.contains(says), "{failure}");
        }

        let closed = std::net::TcpListener::bind(any_port()).unwrap().local_addr().unwrap();
        let error = sim::call(CallOptions::new(format!("http://{closed}/"), "SO-1")).await.unwrap_err();
        assert!(matches!(error, CallError::Unreachable { .. }), "{error}");
        for options in [
            CallOptions::new("ftp://example.com/", "SO-1"),
            CallOptions::new("not a url", "SO-1"),
            CallOptions::new("http://127.0.0.1/", ""),
            CallOptions { rate: 0.0, ..CallOptions::new("http://127.0.0.1/", "SO-1") },
            CallOptions { count: 0, ..CallOptions::new("http://127.0.0.1/", "SO-1") },
        ] {
            assert!(sim::call(options).await.is_err());
        }
    }
}
