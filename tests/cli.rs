//! `customs179 presign` and `customs179 verify` run as real processes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use customs179_core::PreSign;

mod common;

use common::{stderr, stdout, url_encode};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn vector(name: &str) -> String {
    std::fs::read_to_string(data("tests/data/vectors").join(name)).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    data("crates/core/tests/data").join(name)
}

fn card_key() -> PathBuf {
    data("tests/data/vectors/sm2-card-public-key.pem")
}

/// Runs `customs179 ARGS` with `stdin` on its standard input.
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refusing its arguments may exit before it reads a byte: a broken pipe then.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().unwrap()
}

/// The payment record inside a vector's pre-sign string, as a presign input.
fn record_json(presign: &str) -> String {
    let presign = PreSign::parse(presign).unwrap();
    format!(
        r#"{{"payExchangeInfoHead":{},"payExchangeInfoLists":{}}}"#,
        presign.head_json(),
        presign.lists_json()
    )
}

#[test]
fn presign_writes_the_exact_bytes_of_vectors_a_and_c() {
    for name in ["a.presign.txt", "c.presign.txt"] {
        let expected = vector(name);
        let parsed = PreSign::parse(&expected).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record.json");
        // Pretty-printed input must not matter: only values count.
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&record_json(&expected)).unwrap(),
        )
        .unwrap();
        std::fs::write(&file, pretty).unwrap();
        let session = parsed.session_id();
        let args = ["presign", "--session-id", &session, "--service-time", parsed.service_time()];
        let from_file = run(&[&args[..], &[file.to_str().unwrap()]].concat(), "");
        assert_eq!(from_file.status.code(), Some(0), "{}", stderr(&from_file));
        assert_eq!(stdout(&from_file), expected, "{name}");
        let from_stdin = run(&[&args[..], &["-"]].concat(), &record_json(&expected));
        assert_eq!(stdout(&from_stdin), expected, "{name} via stdin");
    }
}

#[test]
fn presign_refuses_invalid_records_with_every_pointer() {
    let record = record_json(&vector("a.presign.txt"))
        .replace(r#""currency":"142""#, r#""currency":"CNY""#)
        .replace(r#""gname":"lhy-gnsku2""#, r#""gname":"""#);
    let output = run(&["presign", "--session-id", "S", "--service-time", "1"], &record);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    assert!(err.contains("/payExchangeInfoHead/currency: must be a customs currency code"), "{err}");
    assert!(err.contains("/payExchangeInfoLists/0/goodsInfo/1/gname: must not be empty"), "{err}");
}

#[test]
fn presign_refuses_bad_arguments_and_missing_files() {
    let record = record_json(&vector("a.presign.txt"));
    let output = run(&["presign", "--session-id", "S", "--service-time", "soon"], &record);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["presign", "--session-id", "S", "--service-time", "1", "/no/such/file"], "");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("cannot read /no/such/file"));
    let output = run(&["presign", "--session-id", "", "--service-time", "1"], &record);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("sessionID must not be empty"));
}

#[test]
fn verify_accepts_vector_b_as_file_stdin_and_form() {
    let key = card_key();
    let output = run(
        &[
            "verify",
            "--cert",
            key.to_str().unwrap(),
            data("tests/data/vectors/b.upload.json").to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "valid\n");
    assert!(stderr(&output).contains("certNo \"03000000000cde6f\" was not checked"));

    let output = run(&["verify", "--cert", key.to_str().unwrap(), "-"], &vector("b.upload.json"));
    assert_eq!(stdout(&output), "valid\n");

    let form: String = url_encode(&vector("b.upload.json"));
    let output = run(&["verify", "--cert", key.to_str().unwrap()], &format!("payExInfoStr={form}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "valid\n");
}

#[test]
fn verify_fails_on_one_changed_byte() {
    let key = card_key();
    let changed = vector("b.upload.json").replace("济州花梨", "济州花犁");
    let output = run(&["verify", "--cert", key.to_str().unwrap()], &changed);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    assert!(stderr(&output).contains("invalid: signature does not verify"), "{}", stderr(&output));

    // A re-serialised amount is a changed byte too: customs' 10000 would hide it.
    let reformatted = vector("b.upload.json").replace(r#""totalAmount":5.0"#, r#""totalAmount":5"#);
    let output = run(&["verify", "--cert", key.to_str().unwrap()], &reformatted);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn verify_checks_cert_no_against_a_certificate() {
    // The RSA fixture signs c's pre-sign string with a certificate whose serial is 01691f7f.
    let signature = std::fs::read_to_string(fixture("rsa-sig.b64")).unwrap();
    let c = vector("c.upload.json");
    let parsed: serde_json::Value = serde_json::from_str(&c).unwrap();
    let upload = c.replace(parsed["signValue"].as_str().unwrap(), &signature);
    for cert in ["rsa-cert.pem", "rsa-cert.der", "rsa-cert.b64"] {
        let cert = fixture(cert);
        let output = run(&["verify", "--cert", cert.to_str().unwrap()], &upload);
        assert_eq!(output.status.code(), Some(1), "{cert:?}");
        assert!(
            stderr(&output).contains("certNo \"01010000000019f1\" is not this certificate's serial 01691f7f")
        );

        let registered = upload.replace("01010000000019f1", "01691f7f");
        let output = run(&["verify", "--cert", cert.to_str().unwrap()], &registered);
        assert_eq!(output.status.code(), Some(0), "{cert:?}: {}", stderr(&output));
        assert_eq!(stdout(&output), "valid\n");
        assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    }
}

#[test]
fn verify_refuses_unreadable_input_with_exit_2() {
    let key = card_key();
    let cases: [(&[&str], &str, &str); 4] = [
        (&["verify", "--cert", "/no/such/cert"], "{}", "cannot read /no/such/cert"),
        (&["verify", "--cert", "Cargo.toml"], &vector("b.upload.json"), "not a certificate or public key"),
        (&["verify", "--cert", key.to_str().unwrap()], "hello", "neither upload JSON nor a form body"),
        (
            &["verify", "--cert", key.to_str().unwrap()],
            r#"{"sessionID":"S"}"#,
            "/payExchangeInfoHead: is required",
        ),
    ];
    for (args, input, says) in cases {
        let output = run(args, input);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains(says), "{args:?}: {}", stderr(&output));
    }
}

/// What Windows editors save: CRLF line ends, and often a byte order mark first.
fn as_saved_on_windows(text: &str) -> String {
    format!("\u{feff}{}\r\n", text.trim_end().replace("\r\n", "\n").replace('\n', "\r\n"))
}

#[test]
fn inputs_saved_on_windows_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, as_saved_on_windows(text)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let key = save("key.pem", &std::fs::read_to_string(card_key()).unwrap());
    let upload = save("b.upload.json", &vector("b.upload.json"));
    let output = run(&["verify", "--cert", &key, &upload], "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "valid\n");

    let signature = std::fs::read_to_string(fixture("rsa-sig.b64")).unwrap();
    let c = vector("c.upload.json");
    let parsed: serde_json::Value = serde_json::from_str(&c).unwrap();
    let upload =
        c.replace(parsed["signValue"].as_str().unwrap(), &signature).replace("01010000000019f1", "01691f7f");
    let upload = save("c.upload.json", &upload);
    for cert in ["rsa-cert.pem", "rsa-cert.b64"] {
        let cert = save(cert, &std::fs::read_to_string(fixture(cert)).unwrap());
        let output = run(&["verify", "--cert", &cert, &upload], "");
        assert_eq!(output.status.code(), Some(0), "{cert}: {}", stderr(&output));
    }

    let expected = vector("a.presign.txt");
    let parsed = PreSign::parse(&expected).unwrap();
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&record_json(&expected)).unwrap(),
    )
    .unwrap();
    let record = save("record.json", &pretty);
    let session = parsed.session_id();
    let output =
        run(&["presign", "--session-id", &session, "--service-time", parsed.service_time(), &record], "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), expected);
}

#[test]
fn serve_logs_to_daily_files_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let sections = format!(
        "[signer]\npin = \"88888888\"\n[customs]\nenvironment = \"test\"\n[log]\ndir = {:?}\nmax_files = 3\n",
        logs.to_str().unwrap()
    );
    let db = dir.path().join("customs179.sqlite");
    let config = dir.path().join("customs179.toml");
    std::fs::write(
        &config,
        common::service_toml(common::free_addr(), common::free_addr(), &db, "", &sections),
    )
    .unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_customs179"));
    command.args(["serve", "--config"]).arg(&config).stdout(Stdio::null());
    command.stderr(std::fs::File::create(&stderr_path).unwrap());
    for name in common::developer_overrides() {
        command.env_remove(name);
    }
    let mut serve = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (name, text) = loop {
        let files: Vec<_> = std::fs::read_dir(&logs).into_iter().flatten().flatten().collect();
        if let [file] = &files[..]
            && let Ok(text) = std::fs::read_to_string(file.path())
            && text.contains("customs179 started")
        {
            break (file.file_name().into_string().unwrap(), text);
        }
        assert!(serve.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&stderr_path).unwrap());
        assert!(std::time::Instant::now() < deadline, "no log file says it started: {files:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    serve.kill().unwrap();
    serve.wait().unwrap();
    // customs179.YYYY-MM-DD.log, without colours, and nothing on stderr.
    let day = name.strip_prefix("customs179.").and_then(|n| n.strip_suffix(".log")).unwrap_or_default();
    assert!(day.len() == 10 && day.bytes().all(|b| b.is_ascii_digit() || b == b'-'), "{name}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert_eq!(std::fs::read_to_string(&stderr_path).unwrap(), "");
}

#[cfg(not(windows))]
#[test]
fn the_windows_service_is_refused_elsewhere_with_exit_2() {
    let output = run(&["service", "install", "--config", "customs179.toml"], "");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("on Linux run customs179 serve under systemd"), "{}", stderr(&output));
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["presign", "--help"], &["verify", "--help"], &["service", "--help"]] {
        let output = run(args, "");
        assert_eq!(output.status.code(), Some(0));
        assert!(stdout(&output).contains("Usage: customs179"));
    }
}
