//! `dp-operator status` as an operator runs it after a fetch cycle: the real binary on the store
//! the fetch wrote, the emulator's data APIs with one tenant throttled, one revoked, one failing,
//! one answered in part (206), and a client secret that ends within 30 days.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::Operator;
use defender_emulator::{Fault, FaultMatch};
use defender_partner::config::fetch::{ENV_LOOKBACK_HOURS, ENV_SOURCES};
use defender_partner::fetch::{FetchService, PairResult};
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::world::active;
use defender_partner_testkit::{World, scenario};
use serde_json::{Value, json};
use tokio::time::Instant;

const CLIENT_ID: &str = "aaaaaaaa-1111-4111-8111-111111111111";
const SECRET: &str = "status-test-secret";
const THROTTLED: &str = "a1a1a1a1-2222-4222-8222-222222222222";
const REVOKED: &str = "b2b2b2b2-3333-4333-8333-333333333333";
const FAILING: &str = "c3c3c3c3-4444-4444-8444-444444444444";
const PARTIAL: &str = "d4d4d4d4-5555-4555-8555-555555555555";
const TENANTS: [&str; 4] = [THROTTLED, REVOKED, FAILING, PARTIAL];
const GRAPH_ROLES: [&str; 2] = ["SecurityIncident.Read.All", "SecurityAlert.Read.All"];

fn credential(days_left: i64) -> String {
    json!({
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "expires_at": (Utc::now() + chrono::Duration::days(days_left) + chrono::Duration::hours(1)).to_rfc3339(),
    })
    .to_string()
}

fn fault(tenant: &str, status: u16, retry_after: Option<u64>, count: u32) -> Fault {
    Fault {
        retry_after,
        ..Fault::status(FaultMatch::Data, status, count).for_tenant(tenant)
    }
}

impl Operator {
    /// `dp-operator status args…`: its output and exit code.
    async fn status(&self, args: &[&str]) -> (String, Option<i32>) {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        let output = self.run(&all, &[]).await;
        assert!(
            output.stderr.is_empty() || output.status.code() != Some(1),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            output.status.code(),
        )
    }

    async fn status_json(&self, args: &[&str]) -> (Value, Option<i32>) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (stdout, code) = self.status(&all).await;
        let report =
            serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"));
        (report, code)
    }
}

fn row<'a>(report: &'a Value, tenant: &str) -> &'a Value {
    let tenant = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["tenant_id"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} missing from {report}"));
    &tenant["sources"][0]
}

fn rules(report: &Value) -> Vec<(String, String)> {
    report["needs_attention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| {
            (
                finding["rule"].as_str().unwrap().to_owned(),
                finding["tenant_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_fleet_after_a_fetch_and_exits_non_zero_when_a_person_is_needed() {
    let tenants = TENANTS
        .iter()
        .enumerate()
        .map(|(index, id)| {
            let mut tenant = scenario::tenant(
                id,
                &format!("Customer {index}"),
                scenario::fetch_grants(CLIENT_ID),
            );
            tenant.data = Some(scenario::data(12, 0, index as u64 + 1, 60));
            tenant
        })
        .collect();
    let records = TENANTS
        .iter()
        .zip(["Alpha", "Bravo", "Charlie", "Delta"])
        .map(|(id, name)| {
            let mut record = active(id, name);
            record.roles = GRAPH_ROLES.iter().map(|role| role.to_string()).collect();
            record
        });
    let world = World::on(scenario::with(
        scenario::app(CLIENT_ID, "status test", &[SECRET]),
        tenants,
    ))
    .data_apis()
    .local_sink()
    .setting(ENV_SOURCES, "graph-incidents")
    .setting(ENV_LOOKBACK_HOURS, "48")
    .credential_json(credential(20))
    .credential_file()
    .tenants(records)
    .start()
    .await
    .unwrap();
    let fetch = FetchService::build(&world.services, world.lookup())
        .await
        .unwrap();
    let run = || async {
        fetch
            .scheduled(Instant::now() + Duration::from_secs(120))
            .await
            .unwrap()
            .outcomes
    };
    let first = run().await;
    assert!(
        first
            .iter()
            .all(|outcome| outcome.result == PairResult::Complete),
        "{first:?}"
    );

    // Then: Microsoft throttles Alpha for 10 minutes, Bravo's administrator withdraws the
    // consent, Charlie's API is down, Delta's answers only in part.
    let handle = world.handle();
    handle
        .push_fault(fault(THROTTLED, 429, Some(600), 1))
        .unwrap();
    handle.push_fault(fault(FAILING, 503, None, 1000)).unwrap();
    handle.push_fault(fault(PARTIAL, 206, None, 1)).unwrap();
    handle.revoke_consent(REVOKED, CLIENT_ID).unwrap();
    world
        .services
        .tokens
        .invalidate(
            &TenantId::parse(REVOKED).unwrap(),
            defender_partner::api::DefenderApi::Graph,
        )
        .await;
    let second = run().await;
    let result = |tenant: &str| {
        &second
            .iter()
            .find(|outcome| outcome.tenant_id.as_str() == tenant)
            .unwrap()
            .result
    };
    assert!(
        matches!(result(THROTTLED), PairResult::Throttled { .. }),
        "{second:?}"
    );
    assert!(
        matches!(result(REVOKED), PairResult::Revoked { .. }),
        "{second:?}"
    );
    assert!(
        matches!(result(FAILING), PairResult::Failed { .. }),
        "{second:?}"
    );
    assert!(
        matches!(result(PARTIAL), PairResult::Failed { .. }),
        "{second:?}"
    );

    let operator = Operator { world };
    let (report, code) = operator.status_json(&["--max-failures", "1"]).await;
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(report["healthy"], false);
    assert_eq!(
        rules(&report),
        vec![
            ("credential_expiring".to_owned(), String::new()),
            ("tenant_revoked".to_owned(), REVOKED.to_owned()),
            ("pair_failing".to_owned(), FAILING.to_owned()),
            ("pair_failing".to_owned(), PARTIAL.to_owned()),
        ],
        "{report:#}"
    );
    assert_eq!(report["credential"]["kind"], "client_secret");
    assert_eq!(report["credential"]["days_left"], 20);
    let throttled = row(&report, THROTTLED);
    assert_eq!(throttled["state"], "ok", "a throttle is not a failure");
    assert_eq!(throttled["throttled_24h"], 1);
    assert!(throttled["lag_seconds"].as_i64().is_some());
    let partial = row(&report, PARTIAL);
    assert_eq!(partial["partial_24h"], 1);
    assert_eq!(partial["last_error"], "partial_content");
    let failing = row(&report, FAILING);
    assert_eq!(failing["state"], "failing");
    assert_eq!(failing["consecutive_failures"], 1);
    assert_eq!(failing["last_error"], "microsoft_unavailable");
    assert!(failing["last_error_at"].is_string());
    assert!(failing.get("recent_errors").is_none(), "only with --tenant");
    assert_eq!(row(&report, REVOKED)["state"], "not_fetched");
    let revoked = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tenant| tenant["tenant_id"] == REVOKED)
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["access"]["granted"], json!(["read"]));

    // The text form: the table and what needs a person (README "Fleet status" shows it).
    let (text, code) = operator.status(&["--max-failures", "1"]).await;
    eprintln!("--- dp-operator status --max-failures 1\n{text}");
    assert_eq!(code, Some(2));
    for expected in [
        "credential: client_secret, ends ",
        "(20 days left)",
        "last success",
        "429/24h",
        "needs attention (4):",
        "  credential_expiring: the app credential ends",
        &format!("  tenant_revoked {REVOKED}: Bravo revoked"),
        &format!(
            "  pair_failing {FAILING} graph-incidents: 1 failed run(s) in a row, last microsoft_unavailable"
        ),
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    // One tenant's detail, with its recent errors.
    let (text, code) = operator
        .status(&["--tenant", FAILING, "--max-failures", "1"])
        .await;
    eprintln!("--- dp-operator status --tenant {FAILING}\n{text}");
    assert_eq!(code, Some(2));
    assert!(
        text.contains(&format!("recent errors, {FAILING} graph-incidents:")),
        "{text}"
    );
    assert!(text.contains("microsoft_unavailable"), "{text}");
    assert!(
        !text.contains(THROTTLED),
        "only the tenant asked for: {text}"
    );
    let (detail, _) = operator.status_json(&["--tenant", FAILING]).await;
    assert_eq!(detail["tenants"].as_array().unwrap().len(), 1);
    let errors = &row(&detail, FAILING)["recent_errors"];
    assert_eq!(errors[0]["code"], "microsoft_unavailable", "{detail:#}");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("503"),
        "{detail:#}"
    );

    // The secret renewed (and its end date recorded), Alpha's detail needs nobody: exit 0.
    operator.world.write_credential_file(&credential(200));
    let (detail, code) = operator.status_json(&["--tenant", THROTTLED]).await;
    assert_eq!(code, Some(0), "{detail:#}");
    assert_eq!(detail["healthy"], true);
    assert_eq!(detail["credential"]["days_left"], 200);
    // An unknown tenant is an error of the command (1), not a finding.
    let output = operator
        .run(
            &["status", "--tenant", "99999999-9999-4999-8999-999999999999"],
            &[],
        )
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not registered"));
    operator.world.shutdown().await;
}
