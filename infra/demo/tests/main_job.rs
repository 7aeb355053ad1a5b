//! The README's first command, run as a person runs it: the demo binary in a fresh folder, no
//! AWS or Azure account. It must onboard, mint, ingest and never print a token unasked.

use std::path::PathBuf;
use std::process::{Command, Output};

fn run_demo(label: &str, args: &[&str]) -> (Output, PathBuf) {
    let dir = std::env::temp_dir().join(format!("dp-demo-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_defender-partner-demo"))
        .args(args)
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("the demo runs");
    (output, dir)
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_main_job_onboards_mints_and_ingests_on_embedded_defaults() {
    let (output, dir) = run_demo("plain", &[]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "Registered customer tenants:",
        "callback answers 200 \"Onboarding complete\"",
        "replayed answers 409",
        "5 tokens minted, 7 requests refused with a typed error.",
        "roles_missing",
        "tenant_not_active",
        "second run: 0 records delivered",
        "third run: ",
        "updates delivered",
        // Graph first: the sources, the onboarding consent, the retiring APIs marked.
        "sources            graph-incidents, graph-alerts (Microsoft Graph security API)",
        "through admin consent to Microsoft Graph:",
        "roles [SecurityAlert.Read.All, SecurityIncident.Read.All]",
        "(retiring 2027-02-01)",
        "flowing in from Microsoft Graph (graph-incidents, graph-alerts)",
        "Fabrikam   graph-alerts     not planned (roles_missing)",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("eyJ") && !stderr.contains("eyJ"),
        "a token was printed without --show-tokens"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in redirected logs"
    );
    // Every run pulls the Graph sources only, and the first delivers from both.
    let runs: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains(" complete "))
        .collect();
    assert!(!runs.is_empty(), "{stdout}");
    for line in &runs {
        assert!(
            line.contains("graph-incidents") || line.contains("graph-alerts"),
            "a retiring source ran: {line}"
        );
    }
    for source in ["graph-incidents", "graph-alerts"] {
        assert!(
            runs.iter()
                .any(|line| line.contains(&format!("Contoso    {source}"))
                    && !line.contains(" 0 new   0 updated")),
            "nothing delivered from {source}:\n{stdout}"
        );
    }
    let third = stdout.split("third run:").nth(2).unwrap_or_default();
    assert!(
        third.contains("Contoso    graph-incidents  complete                    0 new   5 updated"),
        "{stdout}"
    );
    // What it left behind: the embedded registry and the sink's NDJSON files, per Graph source.
    assert!(dir.join(".local/demo.sqlite").is_file());
    let sink = dir.join(".local/demo-sink/incidents");
    assert!(sink.is_dir(), "no sink folder at {}", sink.display());
    let contoso = sink.join("tenant=22222222-2222-4222-8222-222222222222");
    for source in ["graph-incidents", "graph-alerts"] {
        assert!(
            contoso.join(format!("source={source}")).is_dir(),
            "no {source} records under {}",
            contoso.display()
        );
    }
    assert!(!contoso.join("source=m365d-incidents").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokens_are_printed_only_when_asked() {
    let (output, dir) = run_demo("show-tokens", &["--show-tokens"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("eyJ"), "no token shown with --show-tokens");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_main_job_runs_secretless_on_one_aws_token() {
    let (output, dir) = run_demo("aws-federated", &["--credential", "aws_federated"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "app credential     aws_federated: no secret",
        "callback answers 200 \"Onboarding complete\"",
        "5 tokens minted, 7 requests refused with a typed error.",
        "signed in to Contoso: Signed in",
        "updates delivered",
        // One AWS token serves every Entra request of the run, and no secret is ever sent.
        "AWS STS GetWebIdentityToken calls: 1 (1 tokens issued)",
        "with the AWS token as client assertion, 0 with a client secret",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("eyJ") && !stderr.contains("eyJ"),
        "a token (access or AWS) was printed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_credential_is_refused_with_the_usage() {
    let (output, dir) = run_demo("bad-credential", &["--credential", "password"]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stderr.contains("unknown credential \"password\"") && stderr.contains("aws_federated"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
