//! `customs179 check` runs as a real process against configuration files.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{developer_overrides, stderr, stdout};

const ADMIN_TOKEN: &str = "ADMINSECRET-0123456789";
const PIN: &str = "PINSECRET-8888";
const PAYMENTS_TOKEN: &str = "PAYSECRET-0123456789";

/// Runs `customs179 check --config FILE` with `vars` and no other `CUSTOMS179_*` variable.
fn check(config: &Path, vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_customs179"));
    command.args(["check", "--config"]).arg(config);
    for name in developer_overrides() {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied()).output().unwrap()
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("customs179.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn valid() -> String {
    format!(
        "[admin]\ntoken = \"{ADMIN_TOKEN}\"\n[enterprise]\nebp_code = \"1234567890\"\n\
         [signer]\npin = \"{PIN}\"\n[customs]\nenvironment = \"production\"\n\
         [payments]\ntoken = \"{PAYMENTS_TOKEN}\"\n"
    )
}

fn assert_no_secret(output: &Output) {
    let all = format!("{}{}", stdout(output), stderr(output));
    for secret in [ADMIN_TOKEN, PIN, PAYMENTS_TOKEN, "short-token"] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
}

#[test]
fn a_valid_config_is_ok_with_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, &valid());
    let output = check(&path, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.starts_with(&format!("config OK: {}\n", path.display())), "{out}");
    assert!(out.contains("production environment (https://customs.chinaport.gov.cn/"), "{out}");
    assert!(out.contains("tokens: admin (operator)"), "{out}");
    assert_no_secret(&output);
}

#[test]
fn the_example_config_is_ok() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/customs179.example.toml");
    let output = check(&example, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn a_broken_config_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid()
        .replace(ADMIN_TOKEN, "short-token")
        .replace("\"production\"", "\"prod\"")
        .replace("[signer]\n", "[signer]\nurl = \"http://127.0.0.1:61232/\"\n")
        + "[intake]\nmax_body_bytes = 0\nallow_from = [\"10.0.0.0/33\"]\ncolour = \"red\"\n";
    let path = write(&dir, &text);
    let output = check(&path, &[("CUSTOMS179_LOG_FORMAT", "yaml"), ("CUSTOMS179_LOG_COLOUR", "1")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    assert!(err.starts_with(&format!("invalid configuration {}:\n", path.display())), "{err}");
    for problem in [
        "admin.token: must be at least 16 characters",
        "customs.environment: must be \"test\" or \"production\", got \"prod\"",
        "signer.url: must be a ws:// or wss:// URL",
        "intake.max_body_bytes: must be a positive integer, got 0",
        "intake.allow_from: must be an IP address or a CIDR network",
        "intake.colour: unknown key",
        "log.format: must be \"text\" or \"json\", got \"yaml\" (from CUSTOMS179_LOG_FORMAT)",
        "CUSTOMS179_LOG_COLOUR: unknown environment variable",
    ] {
        assert!(err.contains(problem), "{problem} not in:\n{err}");
    }
    assert_eq!(err.lines().count(), 9, "{err}");
    assert_no_secret(&output);
}

#[test]
fn an_environment_override_fixes_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, &valid().replace(&format!("pin = \"{PIN}\"\n"), "url = \"ws://nope\"\n"));
    let output = check(&path, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("signer.pin: missing"), "{}", stderr(&output));

    let output =
        check(&path, &[("CUSTOMS179_SIGNER_PIN", PIN), ("CUSTOMS179_SIGNER_URL", "ws://10.0.0.5:61232/")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("signers: card at ws://10.0.0.5:61232/, pin: set"),
        "{}",
        stdout(&output)
    );
    assert_no_secret(&output);
}

#[test]
fn signer_entries_are_several_cards() {
    let dir = tempfile::tempdir().unwrap();
    let entries = format!(
        "[[signer]]\nname = \"card-a\"\nurl = \"ws://10.0.0.5:61232/\"\npin = \"{PIN}\"\n\
         [[signer]]\nname = \"card-b\"\nurl = \"ws://10.0.0.6:61232/\"\npin = \"{PIN}\"\ntimeout_ms = 15000\n"
    );
    let path = write(&dir, &(valid().replace(&format!("[signer]\npin = \"{PIN}\"\n"), "") + &entries));
    let output = check(&path, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(
            "signers: card-a at ws://10.0.0.5:61232/, pin: set, timeout 10000 ms; \
             card-b at ws://10.0.0.6:61232/, pin: set, timeout 15000 ms\n"
        ),
        "{}",
        stdout(&output)
    );
    assert_no_secret(&output);

    let output = check(&path, &[("CUSTOMS179_SIGNER_PIN", PIN)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("CUSTOMS179_SIGNER_PIN: applies to a single [signer] table"),
        "{}",
        stderr(&output)
    );
    assert_no_secret(&output);
}

#[test]
fn missing_and_unparsable_files_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = check(&dir.path().join("none.toml"), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("cannot read "), "{}", stderr(&output));

    let path = write(&dir, &format!("[admin]\ntoken = \"{ADMIN_TOKEN}\n"));
    let output = check(&path, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid TOML at line 2"), "{}", stderr(&output));
    assert_no_secret(&output);
}

#[cfg(unix)]
#[test]
fn a_non_utf8_variable_value_is_a_problem() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, &valid());
    let output = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["check", "--config"])
        .arg(&path)
        .env("CUSTOMS179_LOG_LEVEL", std::ffi::OsStr::from_bytes(b"info\xff"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("CUSTOMS179_LOG_LEVEL: the value is not UTF-8"), "{}", stderr(&output));
}
