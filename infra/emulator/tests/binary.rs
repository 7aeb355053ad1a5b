//! The `defender-emulator` binary as end-to-end tests run it: one JSON line on stdout with the
//! URL, then serving until SIGTERM.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Guards against a hang only; nothing here measures time.
const PATIENCE: Duration = Duration::from_secs(60);

/// `token_wait`: the least a token request must wait (`--token-latency-ms`); a lower bound only.
async fn run_until_sigterm(args: &[&str], token_wait: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_defender-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("a first line");
    let ready: Value = serde_json::from_str(&line).expect("the line is JSON");
    let object = ready.as_object().unwrap();
    assert_eq!(object.len(), 1, "{line}");
    let base_url = object["listening"].as_str().unwrap();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    assert!(!base_url.ends_with('/'));

    let health: Value = reqwest::get(format!("{base_url}/_emulator/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let metadata = reqwest::get(format!(
        "{base_url}/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"
    ))
    .await
    .unwrap();
    assert_eq!(metadata.status(), 200);
    let asked = Instant::now();
    let refused = reqwest::Client::new()
        .post(format!(
            "{base_url}/contoso.onmicrosoft.com/oauth2/v2.0/token"
        ))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        asked.elapsed() >= token_wait,
        "answered after {:?}",
        asked.elapsed()
    );

    let pid = child.id().expect("still running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        lines.next_line().await.unwrap(),
        None,
        "nothing else on stdout"
    );
}

#[tokio::test]
async fn prints_its_url_and_stops_on_sigterm() {
    run_until_sigterm(&[], Duration::ZERO).await;
}

#[tokio::test]
async fn loads_a_scenario_file() {
    // Where this checkout is now (cargo sets it when it runs the test), not where the test was
    // compiled: a build cache shared between checkouts may hold a binary built elsewhere.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let scenario = format!("{crate_dir}/scenarios/demo.json");
    run_until_sigterm(
        &["--scenario", &scenario, "--listen", "127.0.0.1:0"],
        Duration::ZERO,
    )
    .await;
}

#[tokio::test]
async fn waits_the_latency_it_is_given() {
    run_until_sigterm(
        &["--api-latency-ms", "200-400", "--token-latency-ms=150"],
        Duration::from_millis(150),
    )
    .await;
}

#[tokio::test]
async fn refuses_a_missing_scenario_file() {
    let output = Command::new(env!("CARGO_BIN_EXE_defender-emulator"))
        .args(["--scenario", "/nonexistent/scenario.json"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read scenario file"));
}
