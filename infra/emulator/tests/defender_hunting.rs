//! Graph advanced hunting (reference §12): `POST /v1.0/security/runHuntingQuery` over the
//! generated tables, the KQL subset (each operator, each refusal), `Timespan`, permissions, the
//! limits (calls per minute, CPU quota, timeout, row cap), faults, and the truth a test compares
//! answers with.

mod common;
mod defender_common;

use std::time::{Duration, Instant};

use common::*;
use defender_common::*;
use defender_emulator::{
    DataConfig, DefenderSettingsPatch, Fault, FaultMatch, HuntingConfig, RunningEmulator, Scenario,
    UserTokenRequest,
};
use serde_json::{Value, json};

/// The end of every tenant's rows and the hunting clock: answers do not depend on the time the
/// test runs.
const END: &str = "2026-01-08T00:00:00Z";

fn hunting(rows: u32) -> HuntingConfig {
    HuntingConfig {
        rows_per_table: rows,
        end: Some(END.parse().unwrap()),
        ..HuntingConfig::default()
    }
}

fn hunting_scenario(rows: u32) -> Scenario {
    let mut scenario = scenario(DataConfig {
        hunting: Some(hunting(rows)),
        ..data(5, 5)
    });
    for tenant in &mut scenario.tenants[..2] {
        for grant in &mut tenant.grants {
            if grant.resource == GRAPH {
                grant.roles.push("ThreatHunting.Read.All".to_owned());
            }
        }
    }
    // Fabrikam's app has no Graph grant in the demo: give it one, with the hunting role.
    scenario.tenants[1]
        .grants
        .push(defender_emulator::GrantConfig {
            client_id: CLIENT_ID.to_owned(),
            resource: GRAPH.to_owned(),
            roles: vec!["ThreatHunting.Read.All".to_owned()],
        });
    scenario.tenants[1].data = Some(DataConfig {
        hunting: Some(hunting(rows)),
        ..DataConfig::default()
    });
    scenario
}

async fn start_hunting(rows: u32) -> RunningEmulator {
    let emulator = start_with(hunting_scenario(rows)).await;
    emulator
        .handle()
        .patch_defender_settings(&DefenderSettingsPatch {
            hunting_clock: Some(Some(END.parse().unwrap())),
            ..DefenderSettingsPatch::default()
        })
        .unwrap();
    emulator
}

async fn run_query(emulator: &RunningEmulator, token: &str, body: Value) -> Answer {
    answer(
        client()
            .post(format!(
                "{}/v1.0/security/runHuntingQuery",
                emulator.base_url()
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request"),
    )
    .await
}

async fn hunt(emulator: &RunningEmulator, token: &str, query: &str) -> Answer {
    run_query(emulator, token, json!({ "Query": query })).await
}

fn results(answer: &Answer) -> &Vec<Value> {
    answer.body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {}", answer.text))
}

fn message(answer: &Answer) -> &str {
    answer.body["error"]["message"].as_str().unwrap_or_default()
}

/// Runs the query and checks the answer is exactly the truth; returns the answer.
async fn agrees(
    emulator: &RunningEmulator,
    token: &str,
    query: &str,
    timespan: Option<&str>,
) -> Answer {
    let mut body = json!({ "Query": query });
    if let Some(timespan) = timespan {
        body["Timespan"] = json!(timespan);
    }
    let answer = run_query(emulator, token, body).await;
    assert_eq!(answer.status, 200, "{query}: {}", answer.text);
    let truth = emulator
        .handle()
        .hunting_truth(CONTOSO, query, timespan)
        .unwrap();
    assert_eq!(answer.body["schema"], json!(truth.schema), "{query}");
    assert_eq!(answer.body["results"], json!(truth.results), "{query}");
    answer
}

#[tokio::test]
async fn answers_have_graphs_shape_and_match_the_truth() {
    let emulator = start_hunting(300).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let answer = agrees(
        &emulator,
        &token,
        "DeviceProcessEvents | where InitiatingProcessFileName =~ \"powershell.exe\" | project Timestamp, FileName, InitiatingProcessFileName | take 2",
        None,
    )
    .await;
    assert_eq!(
        answer.body["schema"],
        json!([
            {"name": "Timestamp", "type": "DateTime"},
            {"name": "FileName", "type": "String"},
            {"name": "InitiatingProcessFileName", "type": "String"},
        ])
    );
    let rows = results(&answer);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["InitiatingProcessFileName"], "powershell.exe");
    let timestamp = rows[0]["Timestamp"].as_str().unwrap();
    assert_eq!(
        timestamp.len(),
        "2026-01-01T00:00:00.0000000Z".len(),
        "{timestamp}"
    );
    assert!(
        answer.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#microsoft.graph.security.huntingQueryResults")
    );
    assert!(answer.headers.contains_key("request-id"));

    // Every table, with all its columns.
    for (table, columns) in [
        ("DeviceProcessEvents", 17),
        ("DeviceNetworkEvents", 13),
        ("EmailEvents", 14),
        ("IdentityLogonEvents", 14),
    ] {
        let answer = agrees(&emulator, &token, table, None).await;
        assert_eq!(answer.body["schema"].as_array().unwrap().len(), columns);
        assert_eq!(results(&answer).len(), 300, "{table}");
        assert_eq!(answer.body["schema"][0]["name"], "Timestamp");
        for row in results(&answer) {
            assert_eq!(row.as_object().unwrap().len(), columns);
        }
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn every_operator_of_the_subset() {
    let emulator = start_hunting(400).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let count = async |query: &str| -> i64 {
        let answer = agrees(&emulator, &token, &format!("{query} | count"), None).await;
        assert_eq!(
            answer.body["schema"],
            json!([{"name": "Count", "type": "Int64"}])
        );
        results(&answer)[0]["Count"].as_i64().unwrap()
    };
    let all = count("DeviceProcessEvents").await;
    assert_eq!(all, 400);
    let exact = count("DeviceProcessEvents | where FileName == \"powershell.exe\"").await;
    assert!(exact > 0 && exact < all);
    assert_eq!(
        count("DeviceProcessEvents | where FileName == \"POWERSHELL.EXE\"").await,
        0
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName =~ \"POWERSHELL.EXE\"").await,
        exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName != \"powershell.exe\"").await,
        all - exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName !~ \"PowerShell.exe\"").await,
        all - exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName has \"PowerShell\"").await,
        exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName !has \"powershell\"").await,
        all - exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName contains \"SHELL\"").await,
        exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName !contains \"shell\"").await,
        all - exact
    );
    // `has` matches whole terms only.
    assert_eq!(
        count("DeviceProcessEvents | where FileName has \"shell\"").await,
        0
    );
    let recent = count("DeviceProcessEvents | where Timestamp > ago(1d)").await;
    assert!(recent > 30 && recent < 90, "{recent}");
    assert_eq!(
        count("DeviceProcessEvents | where Timestamp < ago(1d)").await
            + count("DeviceProcessEvents | where Timestamp >= ago(1d)").await,
        all
    );
    assert_eq!(
        count("DeviceProcessEvents | where Timestamp > datetime(2026-01-07T00:00:00Z)").await,
        recent
    );
    assert_eq!(
        count("DeviceProcessEvents | where Timestamp <= now()").await,
        all
    );
    assert_eq!(
        count("DeviceNetworkEvents | where RemotePort == 443 and ActionType == 'ConnectionSuccess'")
            .await,
        count("DeviceNetworkEvents | where RemotePort == 443 | where ActionType == 'ConnectionSuccess'")
            .await
    );
    assert_eq!(
        count("EmailEvents | where ThreatTypes == 'Phish' or ThreatTypes == 'Malware'").await
            + count("EmailEvents | where ThreatTypes == ''").await,
        400
    );

    // project, take and limit.
    let projected = agrees(
        &emulator,
        &token,
        "IdentityLogonEvents | where ActionType == 'LogonFailed' | project AccountUpn, FailureReason | limit 7",
        None,
    )
    .await;
    assert_eq!(results(&projected).len(), 7);
    for row in results(&projected) {
        assert_eq!(row.as_object().unwrap().len(), 2);
        assert_ne!(row["FailureReason"], "");
    }
    let taken = agrees(&emulator, &token, "EmailEvents | take 3", None).await;
    assert_eq!(results(&taken).len(), 3);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_timespan_narrows_the_rows() {
    let emulator = start_hunting(700).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let count = async |timespan: Option<&str>| -> usize {
        results(
            &agrees(
                &emulator,
                &token,
                "EmailEvents | project Timestamp",
                timespan,
            )
            .await,
        )
        .len()
    };
    // Rows span the 7 days before END; the default window is 30 days.
    assert_eq!(count(None).await, 700);
    assert_eq!(count(Some("P90D")).await, 700);
    let day = count(Some("P1D")).await;
    assert!((90..=110).contains(&day), "{day}");
    assert_eq!(count(Some("PT24H")).await, day);
    assert_eq!(count(Some("2026-01-07T00:00:00Z")).await, day);
    assert_eq!(
        count(Some("2026-01-07T00:00:00Z/2026-01-08T00:00:00Z")).await,
        day
    );
    assert_eq!(count(Some("P1D/2026-01-08T00:00:00Z")).await, day);
    assert_eq!(count(Some("2026-01-07T00:00:00Z/P1D")).await, day);
    assert_eq!(count(Some("P2D/2026-01-01T00:00:00Z")).await, 0);
    for timespan in [
        "P1Y",
        "yesterday",
        "2026-01-08T00:00:00Z/2026-01-01T00:00:00Z",
    ] {
        let refused = run_query(
            &emulator,
            &token,
            json!({"Query": "EmailEvents", "Timespan": timespan}),
        )
        .await;
        assert_graph_error(&refused, 400, "BadRequest");
        assert!(message(&refused).contains("Timespan"), "{}", refused.text);
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn invalid_and_unsupported_kql_is_a_400() {
    let emulator = start_hunting(10).await;
    let token = contoso_token(&emulator, GRAPH).await;
    for (query, needle) in [
        (
            "DeviceProcessEvents | where",
            "Query could not be parsed at '<end of query>' on line [1,28]",
        ),
        (
            "DeviceProcessEvents | wher FileName == 'x'",
            "could not be parsed at 'wher'",
        ),
        (
            "DeviceProcessEvents | where FileName = 'x'",
            "could not be parsed at '='",
        ),
        (
            "DeviceProcessEvents | take many",
            "could not be parsed at 'many'",
        ),
        (
            "DeviceProcessEvents | summarize count() by DeviceName",
            "The emulator does not support the KQL operator 'summarize'",
        ),
        (
            "DeviceProcessEvents | extend Day = bin(Timestamp, 1d)",
            "does not support the KQL operator 'extend'",
        ),
        (
            "DeviceProcessEvents | order by Timestamp desc",
            "does not support the KQL operator 'order'",
        ),
        (
            "DeviceProcessEvents | where FileName in ('a', 'b')",
            "does not support the KQL operator 'in'",
        ),
        (
            "DeviceProcessEvents | where tolower(FileName) == 'a'",
            "does not support the KQL function 'tolower()'",
        ),
        ("let x = 1; DeviceProcessEvents", "let statements"),
        (
            "DeviceFileEvents | take 1",
            "does not generate the table 'DeviceFileEvents'",
        ),
        (
            "NoSuchTable",
            "Failed to resolve table or column expression named 'NoSuchTable'",
        ),
        (
            "EmailEvents | where Sender == 'x'",
            "'where' operator: Failed to resolve scalar expression named 'Sender'",
        ),
        (
            "EmailEvents | project Subject, Nope",
            "'project' operator: Failed to resolve scalar expression named 'Nope'",
        ),
        (
            "EmailEvents | where Timestamp > 'yesterday'",
            "Cannot compare values of types datetime and string",
        ),
    ] {
        let refused = hunt(&emulator, &token, query).await;
        assert_graph_error(&refused, 400, "BadRequest");
        assert!(
            message(&refused).contains(needle),
            "{query}: {}",
            refused.text
        );
        // The truth refuses the same way.
        let truth = emulator.handle().hunting_truth(CONTOSO, query, None);
        assert!(
            truth.unwrap_err().to_string().contains(needle),
            "truth of {query}"
        );
    }
    for body in [
        json!({}),
        json!({"Query": ""}),
        json!({"Query": "EmailEvents", "Top": 1}),
        json!({"Query": 3}),
    ] {
        let refused = run_query(&emulator, &token, body.clone()).await;
        assert_graph_error(&refused, 400, "BadRequest");
    }
    // Graph's examples spell the parameters `Query`/`Timespan`; `query` works too.
    let lower = run_query(&emulator, &token, json!({"query": "EmailEvents | take 1"})).await;
    assert_eq!(lower.status, 200, "{}", lower.text);
    emulator.shutdown().await;
}

#[tokio::test]
async fn hunting_needs_threat_hunting_read_all() {
    // The demo app has no ThreatHunting role in Contoso.
    let emulator = start_with_data(DataConfig {
        hunting: Some(hunting(10)),
        ..data(1, 1)
    })
    .await;
    let token = contoso_token(&emulator, GRAPH).await;
    let refused = hunt(&emulator, &token, "EmailEvents").await;
    assert_graph_error(&refused, 403, "Forbidden");
    assert!(
        message(&refused).contains("ThreatHunting.Read.All"),
        "{}",
        refused.text
    );
    let none = hunt(&emulator, "not-a-token", "EmailEvents").await;
    assert_graph_error(&none, 401, "InvalidAuthenticationToken");

    // Delegated: the scope and a portal role that reads.
    let user_token = |user: &str, scopes: &[&str]| {
        emulator
            .handle()
            .mint_user_token(&UserTokenRequest {
                tenant: CONTOSO.to_owned(),
                client_id: CLIENT_ID.to_owned(),
                user: user.to_owned(),
                audience: Some(GRAPH.to_owned()),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                mfa: false,
                expires_in_seconds: None,
            })
            .unwrap()
            .access_token
    };
    let reader = user_token(
        "analyst@contoso.onmicrosoft.com",
        &["ThreatHunting.Read.All"],
    );
    assert_eq!(hunt(&emulator, &reader, "EmailEvents").await.status, 200);
    let no_scope = user_token(
        "analyst@contoso.onmicrosoft.com",
        &["SecurityIncident.Read.All"],
    );
    assert_graph_error(
        &hunt(&emulator, &no_scope, "EmailEvents").await,
        403,
        "Forbidden",
    );
    let no_role = user_token(
        "helpdesk@contoso.onmicrosoft.com",
        &["ThreatHunting.Read.All"],
    );
    assert_graph_error(
        &hunt(&emulator, &no_role, "EmailEvents").await,
        403,
        "Forbidden",
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn each_tenant_has_its_own_deterministic_rows() {
    let emulator = start_hunting(50).await;
    let contoso = contoso_token(&emulator, GRAPH).await;
    let fabrikam = access_token(&emulator, FABRIKAM, GRAPH).await;
    let query = "IdentityLogonEvents | project AccountUpn, DeviceName";
    let first = hunt(&emulator, &contoso, query).await;
    let again = hunt(&emulator, &contoso, query).await;
    assert_eq!(first.body["results"], again.body["results"]);
    let other = hunt(&emulator, &fabrikam, query).await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert_ne!(first.body["results"], other.body["results"]);
    assert!(
        results(&other)[0]["AccountUpn"]
            .as_str()
            .unwrap()
            .ends_with("@fabrikam.onmicrosoft.com")
    );
    let truth = emulator
        .handle()
        .hunting_truth("fabrikam.onmicrosoft.com", query, None)
        .unwrap();
    assert_eq!(other.body["results"], json!(truth.results));
    // A tenant without hunting tables answers empty results.
    emulator
        .handle()
        .set_tenant_data(FABRIKAM, DataConfig::default())
        .unwrap();
    let empty = hunt(&emulator, &fabrikam, "EmailEvents").await;
    assert_eq!(empty.status, 200);
    assert!(results(&empty).is_empty());
    emulator.shutdown().await;
}

#[tokio::test]
async fn results_are_cut_at_the_row_limit() {
    let emulator = start_hunting(10).await;
    let handle = emulator.handle();
    // One tenant holding more than 100,000 matching rows, generated as they are read.
    handle
        .set_hunting(
            CONTOSO,
            HuntingConfig {
                tables: [("DeviceNetworkEvents".to_owned(), 100_250)].into(),
                ..hunting(10)
            },
        )
        .unwrap();
    let token = contoso_token(&emulator, GRAPH).await;
    let cut = hunt(&emulator, &token, "DeviceNetworkEvents | project ReportId").await;
    assert_eq!(cut.status, 200);
    let rows = results(&cut);
    assert_eq!(rows.len(), 100_000, "Microsoft's limit");
    assert_eq!(rows[99_999]["ReportId"], 200_000 + 99_999);
    // count is one row: not cut.
    let count = hunt(&emulator, &token, "DeviceNetworkEvents | count").await;
    assert_eq!(results(&count)[0]["Count"], 100_250);

    // A smaller limit for quicker tests; the truth says what was cut.
    handle
        .patch_defender_settings(&DefenderSettingsPatch {
            hunting_max_rows: Some(25),
            ..DefenderSettingsPatch::default()
        })
        .unwrap();
    let answer = agrees(&emulator, &token, "EmailEvents | project Subject", None).await;
    assert_eq!(results(&answer).len(), 10);
    let truth = handle
        .hunting_truth(CONTOSO, "DeviceNetworkEvents | project ReportId", None)
        .unwrap();
    assert!(truth.truncated);
    assert_eq!(truth.results.len(), 25);
    assert_eq!(truth.matching_rows, 100_250);
    let answer = agrees(
        &emulator,
        &token,
        "DeviceNetworkEvents | project ReportId",
        None,
    )
    .await;
    assert_eq!(results(&answer).len(), 25);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_old_schema_spelling_is_a_mode() {
    let emulator = start_hunting(5).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let put = client()
        .put(format!("{}/_emulator/settings", emulator.base_url()))
        .body(r#"{"hunting_legacy_schema": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let answer = hunt(&emulator, &token, "EmailEvents | project Subject").await;
    assert_eq!(
        answer.body["schema"],
        json!([{"Name": "Subject", "Type": "String"}])
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn calls_per_minute_are_limited_per_tenant() {
    let emulator = start_hunting(5).await;
    let handle = emulator.handle();
    handle
        .patch_defender_settings(&DefenderSettingsPatch {
            hunting_calls_per_minute: Some(3),
            ..DefenderSettingsPatch::default()
        })
        .unwrap();
    let token = contoso_token(&emulator, GRAPH).await;
    for _ in 0..3 {
        assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);
    }
    // Refused queries count too.
    let throttled = hunt(&emulator, &token, "EmailEvents | summarize").await;
    assert_graph_error(&throttled, 429, "TooManyRequests");
    assert!(message(&throttled).contains("3 advanced hunting calls per minute"));
    let wait: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another tenant has its own count.
    let fabrikam = access_token(&emulator, FABRIKAM, GRAPH).await;
    assert_eq!(hunt(&emulator, &fabrikam, "EmailEvents").await.status, 200);
    // The rate-limit reset (and rate_limits off) lift it.
    let reset = client()
        .delete(format!(
            "{}/_emulator/data/rate-limits",
            emulator.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_cpu_quota_blocks_queries_until_the_cycle_ends() {
    let emulator = start_hunting(5).await;
    let base = emulator.base_url().to_owned();
    let put = client()
        .put(format!("{base}/_emulator/settings"))
        .body(r#"{"hunting_cpu_quota": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let token = contoso_token(&emulator, GRAPH).await;
    // A query that does not parse uses no CPU.
    assert_eq!(hunt(&emulator, &token, "EmailEvents |").await.status, 400);
    for _ in 0..2 {
        assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);
    }
    let spent = hunt(&emulator, &token, "EmailEvents").await;
    assert_graph_error(&spent, 429, "TooManyRequests");
    assert!(
        message(&spent).starts_with("CPU quota exceeded: You have exceeded processing resources allocated to this tenant. You can run queries again in 00:1"),
        "{}",
        spent.text
    );
    let wait: u64 = spent.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((800..=900).contains(&wait), "{wait}");
    let state = get(&format!("{base}/_emulator/tenants/contoso.com/hunting")).await;
    assert_eq!(state.body["cpu_cycle"]["queries"], 2);
    assert_eq!(state.body["hunting"]["rows_per_table"], 5);

    // A control call starts a new cycle.
    let reset = client()
        .delete(format!("{base}/_emulator/data/hunting-quota"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);

    // So does the end of the cycle.
    emulator
        .handle()
        .patch_defender_settings(&DefenderSettingsPatch {
            hunting_cpu_cycle_seconds: Some(1),
            ..DefenderSettingsPatch::default()
        })
        .unwrap();
    emulator.handle().reset_hunting_quota();
    for _ in 0..2 {
        assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);
    }
    assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_query_past_the_time_limit_times_out() {
    let emulator = start_hunting(5).await;
    let handle = emulator.handle();
    handle
        .patch_defender_settings(&DefenderSettingsPatch {
            hunting_timeout_ms: Some(300),
            ..DefenderSettingsPatch::default()
        })
        .unwrap();
    handle
        .set_hunting(
            CONTOSO,
            HuntingConfig {
                query_ms: 5_000,
                ..hunting(5)
            },
        )
        .unwrap();
    let token = contoso_token(&emulator, GRAPH).await;
    let started = Instant::now();
    let timed_out = hunt(&emulator, &token, "EmailEvents").await;
    let elapsed = started.elapsed();
    assert_graph_error(&timed_out, 504, "UnknownError");
    assert_eq!(message(&timed_out), "");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(4_000), "{elapsed:?}");
    // A query within the limit waits its time, then answers.
    handle
        .set_hunting(
            CONTOSO,
            HuntingConfig {
                query_ms: 100,
                ..hunting(5)
            },
        )
        .unwrap();
    let started = Instant::now();
    assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(100));
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_and_counters_cover_the_route() {
    let emulator = start_hunting(5).await;
    let handle = emulator.handle();
    let token = contoso_token(&emulator, GRAPH).await;
    handle
        .push_fault(Fault::throttle(FaultMatch::GraphHunting, 30, 1).for_tenant("contoso.com"))
        .unwrap();
    handle
        .push_fault(Fault::status(FaultMatch::GraphHunting, 503, 1))
        .unwrap();
    let throttled = hunt(&emulator, &token, "EmailEvents").await;
    assert_graph_error(&throttled, 429, "TooManyRequests");
    assert_eq!(throttled.headers["retry-after"], "30");
    let unavailable = hunt(&emulator, &token, "EmailEvents").await;
    assert_graph_error(&unavailable, 503, "ServiceUnavailable");
    assert_eq!(hunt(&emulator, &token, "EmailEvents").await.status, 200);
    // The incident list is not a hunting route.
    handle
        .push_fault(Fault::status(FaultMatch::GraphHunting, 500, 1))
        .unwrap();
    assert_eq!(
        api(&emulator, Some(&token), "/v1.0/security/incidents")
            .await
            .status,
        200
    );
    handle.clear_faults();
    let calls = handle.data_api_calls(CONTOSO).graph_hunting;
    assert_eq!(
        (calls.requests, calls.ok, calls.throttled, calls.failed),
        (3, 1, 1, 1)
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_control_api_sets_tables_and_tells_the_truth() {
    let emulator = start_hunting(5).await;
    let base = emulator.base_url().to_owned();
    let put = client()
        .put(format!("{base}/_emulator/tenants/contoso.com/hunting"))
        .body(r#"{"rows_per_table": 20, "tables": {"EmailEvents": 40}, "span_days": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let state = get(&format!("{base}/_emulator/tenants/contoso.com/hunting")).await;
    assert_eq!(state.body["hunting"]["tables"]["EmailEvents"], 40);
    assert!(
        state.body["hunting"]["end"].is_string(),
        "end resolved: {}",
        state.text
    );
    // The clock is END; the new span ends now, after it: use a window that holds everything.
    let truth = client()
        .post(format!("{base}/_emulator/tenants/contoso.com/hunting/truth"))
        .body(r#"{"Query": "EmailEvents | count", "Timespan": "2020-01-01T00:00:00Z/2100-01-01T00:00:00Z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(truth.status(), 200);
    let truth: Value = truth.json().await.unwrap();
    assert_eq!(truth["results"][0]["Count"], 40);
    assert_eq!(truth["truncated"], false);
    assert_eq!(truth["matching_rows"], 1);
    let refused = client()
        .post(format!(
            "{base}/_emulator/tenants/contoso.com/hunting/truth"
        ))
        .body(r#"{"Query": "EmailEvents | summarize"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    for body in [
        r#"{"tables": {"DeviceFileEvents": 3}}"#,
        r#"{"span_days": 0}"#,
        r#"{"rows_per_table": 10000001}"#,
        r#"{"rows": 3}"#,
    ] {
        let refused = client()
            .put(format!("{base}/_emulator/tenants/contoso.com/hunting"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body}");
    }
    let missing = client()
        .put(format!("{base}/_emulator/tenants/nowhere.example/hunting"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    emulator.shutdown().await;
}
