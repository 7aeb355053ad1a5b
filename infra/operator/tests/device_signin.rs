//! `dp-operator signin` as an operator runs it: the real binary polls the emulator (in this
//! process, on its demo scenario) while the test plays the user on the emulator's control route.

use std::process::Stdio;

use defender_emulator::{DeviceDecision, DeviceVerdict, Scenario, demo};
use defender_partner_testkit::World;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};

/// What the sign-in printed, and how it ended.
struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A [`World`] for `dp-operator signin` to run in.
struct Fixture {
    world: World,
}

impl Fixture {
    /// The demo scenario with a fast poll (1 s) and device codes living `lifetime` seconds.
    async fn start(lifetime: u64) -> Fixture {
        let mut scenario = Scenario::demo();
        scenario.delegated.device_code_interval_seconds = 1;
        scenario.delegated.device_code_lifetime_seconds = lifetime;
        let world = World::on(scenario).data_apis().start().await.unwrap();
        Fixture { world }
    }

    /// Runs `dp-operator signin …`; once it shows the code, `decide` plays the user (or not,
    /// with `None`).
    async fn sign_in(&self, args: &[&str], decide: Option<DeviceDecision>) -> Finished {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dp-operator"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.world.env())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("dp-operator starts");
        let json = args.contains(&"--json");
        // The instructions go to stdout, or to stderr when stdout carries JSON.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut before = String::new();
        let code = {
            let instructions: &mut (dyn AsyncBufRead + Unpin + Send) =
                if json { &mut stderr } else { &mut stdout };
            loop {
                let mut line = String::new();
                let read = instructions.read_line(&mut line).await.unwrap();
                assert!(read > 0, "dp-operator showed no code:\n{before}");
                before.push_str(&line);
                if let Some(code) = user_code(&line) {
                    break code;
                }
            }
        };
        if let Some(decision) = decide {
            self.world
                .control()
                .decide_device_code(&code, &decision)
                .await
                .unwrap();
        }
        let mut rest_out = String::new();
        let mut rest_err = String::new();
        stdout.read_to_string(&mut rest_out).await.unwrap();
        stderr.read_to_string(&mut rest_err).await.unwrap();
        let status = child.wait().await.unwrap();
        let (stdout, stderr) = if json {
            (rest_out, before + &rest_err)
        } else {
            (before + &rest_out, rest_err)
        };
        Finished {
            success: status.success(),
            stdout,
            stderr,
        }
    }

    /// Polls the emulator saw, by their `error` (`None`: answered with a token).
    fn polls(&self) -> Vec<Option<String>> {
        self.world
            .handle()
            .token_requests()
            .into_iter()
            .map(|request| request.error)
            .collect()
    }

    async fn stop(self) {
        self.world.shutdown().await;
    }
}

/// The code in Microsoft's message: "... enter the code ABCD2345 to authenticate."
fn user_code(line: &str) -> Option<String> {
    let (_, after) = line.split_once("enter the code ")?;
    after.split_whitespace().next().map(str::to_owned)
}

fn approve(user: &str) -> Option<DeviceDecision> {
    Some(DeviceDecision {
        decision: DeviceVerdict::Approve,
        user: Some(user.to_owned()),
        mfa: false,
    })
}

/// No token, device code or client secret in anything the command wrote.
#[track_caller]
fn expect_nothing_secret(finished: &Finished) {
    let all = finished.all();
    // Every JWT starts with the base64url of `{"`; the emulator's device codes with this.
    for secret in ["eyJ", "DAQABAAEAAA", demo::CLIENT_SECRET] {
        assert!(!all.contains(secret), "{secret:?} in the output:\n{all}");
    }
}

#[tokio::test]
async fn an_approved_sign_in_reports_the_user_and_reads_incidents() {
    let fixture = Fixture::start(900).await;
    let finished = fixture
        .sign_in(
            &[
                "signin",
                "--tenant",
                demo::CONTOSO_TENANT_ID,
                "--api",
                "m365d",
                "--call",
            ],
            approve(demo::CONTOSO_ANALYST_UPN),
        )
        .await;
    let out = &finished.stdout;
    assert!(finished.success, "{}", finished.all());
    assert!(out.contains("To sign in, use a web browser"), "{out}");
    assert!(out.contains(demo::CONTOSO_ANALYST_UPN), "{out}");
    assert!(out.contains(demo::CONTOSO_ANALYST_OID), "{out}");
    assert!(out.contains(demo::CONTOSO_TENANT_ID), "{out}");
    assert!(out.contains("Incident.Read"), "{out}");
    assert!(out.contains("expires: "), "{out}");
    assert!(out.contains("HTTP 200"), "{out}");
    assert!(out.contains("read 1 of the tenant's incidents"), "{out}");
    expect_nothing_secret(&finished);

    // The poller kept to the interval: Entra never had to say slow_down.
    let polls = fixture.polls();
    assert!(
        polls
            .iter()
            .all(|error| error.as_deref() != Some("slow_down")),
        "{polls:?}"
    );
    assert_eq!(polls.last(), Some(&None), "the last poll got the token");
    let issued = fixture.world.handle().delegated_tokens();
    assert!(
        issued
            .iter()
            .any(|record| record.grant == "device_code"
                && record.user_oid == demo::CONTOSO_ANALYST_OID),
        "{issued:?}"
    );
    fixture.stop().await;
}

#[tokio::test]
async fn a_user_without_a_portal_role_gets_the_403_explained() {
    let fixture = Fixture::start(900).await;
    let finished = fixture
        .sign_in(
            &[
                "--json",
                "signin",
                "--tenant",
                demo::CONTOSO_DOMAIN,
                "--call",
            ],
            approve(demo::CONTOSO_NO_ROLE_UPN),
        )
        .await;
    assert!(finished.success, "{}", finished.all());
    let report: Value = serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", finished.stdout));
    assert_eq!(report["tenant_id"], demo::CONTOSO_TENANT_ID);
    assert_eq!(report["user"], demo::CONTOSO_NO_ROLE_UPN);
    assert_eq!(report["api"], "m365d");
    assert_eq!(report["scopes_missing"], json!([]), "{report}");
    assert_eq!(report["call"]["status"], 403, "{report}");
    assert!(report["call"].get("count").is_none(), "{report}");
    assert!(
        report["call"]["explanation"]
            .as_str()
            .is_some_and(|text| text.contains("portal role")),
        "{report}"
    );
    assert!(report.get("access_token").is_none() && report.get("token").is_none());
    expect_nothing_secret(&finished);
    fixture.stop().await;
}

#[tokio::test]
async fn a_declined_sign_in_ends_with_its_code() {
    let fixture = Fixture::start(900).await;
    let finished = fixture
        .sign_in(
            &["signin", "--tenant", demo::CONTOSO_TENANT_ID],
            Some(DeviceDecision {
                decision: DeviceVerdict::Decline,
                user: None,
                mfa: false,
            }),
        )
        .await;
    assert!(!finished.success, "{}", finished.all());
    assert!(
        finished.stderr.contains("device_code_declined"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("Signed in"),
        "{}",
        finished.stdout
    );
    assert_eq!(
        fixture.polls().last(),
        Some(&Some("authorization_declined".to_owned()))
    );
    expect_nothing_secret(&finished);
    fixture.stop().await;
}

#[tokio::test]
async fn a_code_nobody_enters_expires() {
    let fixture = Fixture::start(3).await;
    let finished = fixture
        .sign_in(&["signin", "--tenant", demo::CONTOSO_TENANT_ID], None)
        .await;
    assert!(!finished.success, "{}", finished.all());
    assert!(
        finished.stderr.contains("device_code_expired"),
        "{}",
        finished.stderr
    );
    let polls = fixture.polls();
    assert!(!polls.is_empty(), "it polled while the code lived");
    assert!(
        polls
            .iter()
            .all(|error| error.as_deref() == Some("authorization_pending")),
        "{polls:?}"
    );
    expect_nothing_secret(&finished);
    fixture.stop().await;
}

#[tokio::test]
async fn a_sign_in_without_the_mfa_conditional_access_wants_is_refused() {
    let fixture = Fixture::start(900).await;
    let finished = fixture
        .sign_in(
            &["signin", "--tenant", demo::CONTOSO_TENANT_ID],
            approve(demo::CONTOSO_MFA_USER_UPN),
        )
        .await;
    assert!(!finished.success, "{}", finished.all());
    assert!(
        finished.stderr.contains("interaction_required"),
        "{}",
        finished.stderr
    );
    expect_nothing_secret(&finished);

    // The same user, having done MFA on the sign-in page, gets through.
    let finished = fixture
        .sign_in(
            &["signin", "--tenant", demo::CONTOSO_TENANT_ID],
            Some(DeviceDecision {
                decision: DeviceVerdict::Approve,
                user: Some(demo::CONTOSO_MFA_USER_UPN.to_owned()),
                mfa: true,
            }),
        )
        .await;
    assert!(finished.success, "{}", finished.all());
    assert!(
        finished.stdout.contains(demo::CONTOSO_MFA_USER_UPN),
        "{}",
        finished.stdout
    );
    expect_nothing_secret(&finished);
    fixture.stop().await;
}
