//! `customs179 demo` as a new user runs it, shortened: 50 requests, then exit.

use std::process::Command;

#[test]
fn the_demo_delivers_every_known_order_and_fails_the_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["demo", "--requests", "50", "--rate", "10", "--exit-when-done"])
        .args(["--intake-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("demo-data"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // 50 requests, every 7th for an unknown order: 43 delivered, 7 failed for lack of data.
    assert!(stdout.contains("| known order | delivered | 43 |"), "{stdout}");
    assert!(stdout.contains("| unknown order | failed | 7 |"), "{stdout}");
    assert!(stdout.contains("every request ended as expected (50 requests)"), "{stdout}");
    for shown in ["intake (customs calls)  http://127.0.0.1:", "admin token in", "database"] {
        assert!(stdout.contains(shown), "{shown:?} missing from\n{stdout}");
    }
    let token = std::fs::read_to_string(dir.path().join("demo-data/admin-token")).unwrap();
    assert!(token.len() >= 16);
    assert!(!stdout.contains(&token) && !stderr.contains(&token), "the admin token is only in its file");
    assert!(dir.path().join("demo-data/customs179.sqlite").exists());
}
