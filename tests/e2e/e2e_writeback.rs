//! Write-back end to end: the real `update-incident` (and `fetch-incidents` for the echo) under
//! `cargo lambda watch`, the store in DynamoDB and the bus in EventBridge (moto), the emulator
//! binary playing Entra ID and Graph.
//!
//! The cases: each operation through each entry (direct, the HTTP route, an
//! `IncidentUpdateRequested` event as EventBridge delivers it), an update then a fetch (the record
//! marked as our change), a portal edit after ours (a plain update), two concurrent tag edits
//! (both tags set), a comment whose answer is lost then retried (one comment), an idempotency-key
//! replay (one PATCH at Microsoft), a read-only tenant, a delegated analyst without the role,
//! and the audit trail of all of them (store and bus).
//! Run a subset with `E2E_CASES=tags cargo test -p defender-partner-e2e --test e2e_writeback`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_emulator::{UserTokenRequest, demo};
use defender_partner::defender::Source;
use defender_partner::store::{DynamoRegistry, TenantStatus, UpdateRecords, update_caller_scope};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::fetch::FetchAws;
use defender_partner_e2e::leaks::assert_no_leaks;
use defender_partner_e2e::{Cases, FunctionError, LambdaWatch, Stack};
use defender_partner_testkit::control::EmulatorControl;
use defender_partner_testkit::records::lines_of;
use reqwest::Method;
use serde_json::{Value, json};

const GRAPH: &str = "https://graph.microsoft.com";
const READ_WRITE: [&str; 4] = [
    "SecurityIncident.Read.All",
    "SecurityAlert.Read.All",
    "SecurityIncident.ReadWrite.All",
    "SecurityAlert.ReadWrite.All",
];
/// Contoso granted write; Fabrikam read only.
const WRITER: &str = demo::CONTOSO_TENANT_ID;
const READER: &str = demo::FABRIKAM_TENANT_ID;

struct Fixture {
    stack: Stack,
    aws: FetchAws,
    update: LambdaWatch,
    fetch: LambdaWatch,
    http: reqwest::Client,
    /// Graph incident ids of the writer tenant, handed out one per case.
    incidents: std::sync::Mutex<Vec<String>>,
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        let stack = Stack::start_on_demo_scenario().await?;
        let aws = FetchAws::create(&stack.moto).await?;
        let data: &EmulatorControl = &stack.emulator;
        data.call(
            Method::PUT,
            "data/settings",
            Some(json!({ "rate_limits": "off" })),
        )
        .await?;
        let http = reqwest::Client::new();
        let base = stack.emulator.base_url().to_owned();
        for (tenant, roles) in [(WRITER, &READ_WRITE[..]), (READER, &READ_WRITE[..2])] {
            http.put(format!("{base}/_emulator/tenants/{tenant}/grants"))
                .json(&json!({"client_id": demo::CLIENT_ID, "resource": GRAPH, "roles": roles}))
                .send()
                .await?
                .error_for_status()?;
            data.call(
                Method::PUT,
                &format!("tenants/{tenant}/data"),
                Some(json!({"incidents": 30, "mde_alerts": 0, "graph_alerts": 30, "seed": 41, "spacing_seconds": 60})),
            )
            .await?;
            stack.register(tenant, TenantStatus::Active, roles).await?;
        }
        // The analysts consented to write through our app (delegated); Ada is a Security Reader.
        http.put(format!("{base}/_emulator/tenants/{WRITER}/delegated_grants"))
            .json(&json!({"client_id": demo::CLIENT_ID, "resource": GRAPH,
                          "scopes": ["SecurityIncident.Read.All", "SecurityAlert.Read.All",
                                     "SecurityIncident.ReadWrite.All", "SecurityAlert.ReadWrite.All"]}))
            .send()
            .await?
            .error_for_status()?;
        let mut env = aws.function_env();
        env.retain(|(key, _)| key != "DP_FETCH_QUEUE_URL");
        env.push(("DP_API_BASE_GRAPH".to_owned(), base.clone()));
        env.push(("DP_SOURCES".to_owned(), "graph-incidents".to_owned()));
        // Mappings are read on every request, so that the scoping case sees its changes at once.
        env.push(("DP_CALLER_SCOPE_CACHE_SECONDS".to_owned(), "0".to_owned()));
        env.push(("DP_FETCH_LOOKBACK_HOURS".to_owned(), "48".to_owned()));
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let update = stack
            .start_function(
                "update-incident",
                "update-incident",
                &refs,
                &json!({"warm": true}),
            )
            .await?;
        let fetch = stack
            .start_function(
                "fetch-incidents",
                "fetch-incidents",
                &refs,
                &json!({"warm_up": true}),
            )
            .await?;
        let token = data
            .app_token(WRITER, GRAPH, demo::CLIENT_ID, demo::CLIENT_SECRET)
            .await?;
        stack.remember_token(&token);
        let mut incidents: Vec<String> = data
            .truth(WRITER, Source::GraphIncidents, &token)
            .await?
            .into_keys()
            .collect();
        incidents.sort();
        // The first run takes the history in, so that later runs deliver only what changed.
        fetch
            .invoke(&json!({"tenant_id": WRITER, "source": "graph-incidents"}))
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(Fixture {
            stack,
            aws,
            update,
            fetch,
            http,
            incidents: std::sync::Mutex::new(incidents),
        })
    }

    fn incident(&self) -> String {
        self.incidents
            .lock()
            .unwrap()
            .pop()
            .expect("enough incidents")
    }

    async fn alert_of(&self, incident: &str) -> String {
        let token = self
            .stack
            .emulator
            .app_token(WRITER, GRAPH, demo::CLIENT_ID, demo::CLIENT_SECRET)
            .await
            .unwrap();
        self.stack.remember_token(&token);
        let answer: Value = self
            .http
            .get(format!(
                "{}/v1.0/security/alerts_v2?$filter=incidentId eq '{incident}'",
                self.stack.emulator.base_url()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"][0]["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("incident {incident} has an alert: {answer}"))
    }

    /// The target as Microsoft holds it (no token, no fault, no counter).
    async fn truth(&self, collection: &str, id: &str) -> Value {
        self.http
            .get(format!(
                "{}/_emulator/tenants/{WRITER}/{collection}/{id}",
                self.stack.emulator.base_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn direct(&self, request: Value) -> Result<Value, FunctionError> {
        self.update.invoke(&request).await
    }

    /// Through the HTTP route (as API Gateway delivers it, IAM-signed by `caller`).
    async fn route(
        &self,
        method: &str,
        path: &str,
        body: Value,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut headers = json!({"content-type": "application/json"});
        if let Some(key) = key {
            headers["idempotency-key"] = json!(key);
        }
        let event = json!({
            "version": "2.0", "routeKey": format!("{method} {path}"), "rawPath": path,
            "rawQueryString": "", "headers": headers,
            "requestContext": {
                "accountId": "123456789012", "apiId": "e2e", "domainName": "e2e", "domainPrefix": "e2e",
                "requestId": "e2e", "routeKey": format!("{method} {path}"), "stage": "$default",
                "time": "07/Dec/2026:10:00:00 +0000", "timeEpoch": 0,
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "e2e"},
                "authorizer": {"iam": {"accessKey": "ASIA", "accountId": "123456789012", "callerId": "AROA:soar",
                    "userArn": "arn:aws:sts::123456789012:assumed-role/soar/e2e", "userId": "AROA:soar"}}
            },
            "body": body.to_string(), "isBase64Encoded": false
        });
        let response = self.update.invoke(&event).await.expect("HTTP answers");
        let status = response["statusCode"].as_u64().unwrap_or_default() as u16;
        let body = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap();
        (status, body)
    }

    /// An `IncidentUpdateRequested` event as EventBridge delivers it to the rule's target.
    async fn event(&self, id: &str, detail: Value) -> Result<Value, FunctionError> {
        self.update
            .invoke(&json!({
                "version": "0", "id": id, "detail-type": "IncidentUpdateRequested",
                "source": "partner.soar", "account": "123456789012", "time": "2026-12-07T10:00:00Z",
                "region": "us-east-1", "resources": [], "detail": detail
            }))
            .await
    }

    async fn writes(&self, counter: &str) -> u64 {
        let calls = self
            .stack
            .emulator
            .call(Method::GET, &format!("data/calls?tenant={WRITER}"), None)
            .await
            .unwrap()["calls"]
            .clone();
        calls[counter]["requests"].as_u64().unwrap_or_else(|| {
            ["ok", "throttled", "failed"]
                .iter()
                .map(|kind| calls[counter][kind].as_u64().unwrap_or(0))
                .sum()
        })
    }

    async fn fault(&self, fault: Value) {
        self.stack
            .emulator
            .call(Method::POST, "faults", Some(fault))
            .await
            .unwrap();
    }

    async fn fetch_lines(&self, id: &str) -> Vec<defender_partner::sink::SinkLine> {
        self.fetch
            .invoke(&json!({"tenant_id": WRITER, "source": "graph-incidents"}))
            .await
            .expect("the fetch runs");
        let lines = self.aws.sink_lines().await.unwrap();
        lines_of(&lines, WRITER, Source::GraphIncidents)
            .into_iter()
            .filter(|line| line.id == id)
            .cloned()
            .collect()
    }

    fn registry(&self) -> DynamoRegistry {
        DynamoRegistry::new(self.stack.dynamodb.clone(), self.stack.table.clone())
    }
}

/// The line of the newest version among `lines`. The stack's first fetch delivered every
/// incident once already, and the sink's listing order says nothing about which line is newer:
/// the record's update time does (parsed, since Graph's fractional digits vary in length).
fn newest_line(
    lines: &[defender_partner::sink::SinkLine],
) -> Option<&defender_partner::sink::SinkLine> {
    lines.iter().max_by_key(|line| {
        chrono::DateTime::parse_from_rfc3339(&line.last_update_time)
            .expect("an RFC 3339 update time")
    })
}

fn tags_of(record: &Value) -> Vec<String> {
    record["customTags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_end_to_end() {
    let started = Instant::now();
    let f = Arc::new(Fixture::start().await.expect("starting the stack"));
    eprintln!(
        "[e2e] stack ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    let fx = f.clone();
    cases
        .run("each_operation_through_each_entry", async move {
            // Direct: assign, resolve with classification and determination, tag, comment.
            let incident = fx.incident();
            let comments_before = fx.truth("incidents", &incident).await["comments"].as_array().map_or(0, Vec::len);
            let tags_before = tags_of(&fx.truth("incidents", &incident).await);
            let measured = Instant::now();
            let answer = fx
                .direct(json!({"tenant": WRITER, "incident_id": incident, "assigned_to": "soc@partner.example",
                               "status": "resolved", "classification": "truePositive",
                               "determination": "malware", "add_tags": ["mssp"], "comment": "Contained"}))
                .await
                .expect("the change applies");
            eprintln!("[measure] direct update with comment: {} ms", measured.elapsed().as_millis());
            assert_eq!(answer["applied"], json!(["assigned_to", "status", "classification", "determination", "tags", "comment"]));
            let truth = fx.truth("incidents", &incident).await;
            assert_eq!(truth["status"], "resolved");
            assert_eq!(truth["assignedTo"], "soc@partner.example");
            assert_eq!(truth["classification"], "truePositive");
            let mut expected_tags = tags_before.clone();
            expected_tags.push("mssp".to_owned());
            assert_eq!(tags_of(&truth), expected_tags, "the tags set before are kept");
            assert_eq!(truth["comments"].as_array().unwrap().len(), comments_before + 1);
            assert_eq!(answer["last_update"], truth["lastUpdateDateTime"]);
            // A cache hit on the token: the latency of a plain update.
            let measured = Instant::now();
            fx.direct(json!({"tenant": WRITER, "incident_id": incident, "assigned_to": null}))
                .await
                .expect("unassigns");
            eprintln!("[measure] direct update, token cached: {} ms", measured.elapsed().as_millis());
            assert!(fx.truth("incidents", &incident).await["assignedTo"].is_null());

            // HTTP: PATCH then a comment on the route, and the same on an alert.
            let incident = fx.incident();
            let (status, body) = fx
                .route("PATCH", &format!("/tenants/{WRITER}/incidents/{incident}"), json!({"status": "active", "remove_tags": ["x"]}), None)
                .await;
            assert_eq!(status, 200, "{body}");
            let (status, body) = fx
                .route("POST", &format!("/tenants/{WRITER}/incidents/{incident}/comments"), json!({"comment": "via HTTP"}), None)
                .await;
            assert_eq!(status, 200, "{body}");
            let comments = fx.truth("incidents", &incident).await["comments"].clone();
            assert!(comments.as_array().unwrap().iter().any(|c| c["comment"] == "via HTTP"), "{comments}");
            let alert = fx.alert_of(&incident).await;
            let (status, body) = fx
                .route("PATCH", &format!("/tenants/{WRITER}/alerts/{alert}"),
                       json!({"status": "inProgress", "custom_details": {"ticket": "INC-7"}}), None)
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(fx.truth("alerts", &alert).await["status"], "inProgress");
            let (status, body) = fx
                .route("PATCH", &format!("/tenants/{WRITER}/incidents/{incident}"), json!({"status": "inProgress"}), None)
                .await;
            assert_eq!((status, body["error"]["code"].as_str()), (400, Some("status_invalid")));

            // An event, as EventBridge delivers it, applied once even when delivered twice.
            let incident = fx.incident();
            let detail = json!({"tenant": WRITER, "incident_id": incident, "comment": "from the bus"});
            let patches = fx.writes("graph_incident_comments").await;
            let comments_before = fx.truth("incidents", &incident).await["comments"].as_array().map_or(0, Vec::len);
            fx.event("evt-1", detail.clone()).await.expect("applied");
            let again = fx.event("evt-1", detail).await.expect("replayed");
            assert_eq!(again["replayed"], true);
            assert_eq!(fx.writes("graph_incident_comments").await, patches + 1);
            assert_eq!(fx.truth("incidents", &incident).await["comments"].as_array().unwrap().len(), comments_before + 1);
            // A refusal from the bus is final: answered (and audited), not retried by Lambda.
            let refused = fx.event("evt-2", json!({"tenant": WRITER, "incident_id": incident, "classification": "maybe"})).await;
            assert_eq!(refused.expect("a verdict is not a function error")["error"]["code"], "classification_invalid");
        })
        .await;

    let fx = f.clone();
    cases
        .run(
            "our_change_comes_back_marked_and_a_portal_edit_does_not",
            async move {
                let incident = fx.incident();
                let measured = Instant::now();
                let answer = fx
                    .direct(
                        json!({"tenant": WRITER, "incident_id": incident, "status": "resolved",
                               "classification": "truePositive", "determination": "malware"}),
                    )
                    .await
                    .expect("applied");
                let lines = fx.fetch_lines(&incident).await;
                eprintln!(
                    "[measure] change request to fetched record marked as ours: {} ms",
                    measured.elapsed().as_millis()
                );
                let newest = newest_line(&lines).expect("the change is delivered");
                let origin = newest.change_origin.as_ref().expect("marked as our change");
                assert_eq!(origin.request_id, answer["request_id"].as_str().unwrap());
                assert_eq!(origin.caller, "direct-invoke");
                assert_eq!(
                    origin.fields,
                    vec!["status", "classification", "determination"]
                );

                // Ours, then an analyst in the portal: the portal's version is a plain update.
                fx.direct(json!({"tenant": WRITER, "incident_id": incident, "add_tags": ["ours"]}))
                    .await
                    .expect("applied");
                fx.http
                    .post(format!(
                        "{}/_emulator/tenants/{WRITER}/incidents/{incident}/portal-edit",
                        fx.stack.emulator.base_url()
                    ))
                    .json(&json!({"assignedTo": "portal.analyst@contoso.com"}))
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap();
                let lines = fx.fetch_lines(&incident).await;
                let newest = newest_line(&lines).expect("the portal's change is delivered");
                assert!(newest.change_origin.is_none(), "{newest:?}");
                assert_eq!(newest.change, defender_partner::sink::Change::Updated);
            },
        )
        .await;

    let fx = f.clone();
    cases
        .run("tags", async move {
            let incident = fx.incident();
            let (a, b) = tokio::join!(
                fx.direct(json!({"tenant": WRITER, "incident_id": incident, "add_tags": ["alpha"]})),
                fx.direct(json!({"tenant": WRITER, "incident_id": incident, "add_tags": ["beta"]})),
            );
            for answer in [a, b] {
                match answer {
                    Ok(_) => {}
                    // The one that waited too long for the other's hold says so; retried, it lands.
                    Err(error) if error.error_type == "update_in_progress" => {}
                    Err(error) => panic!("{error}"),
                }
            }
            let mut tags = tags_of(&fx.truth("incidents", &incident).await);
            if !(tags.contains(&"alpha".to_owned()) && tags.contains(&"beta".to_owned())) {
                fx.direct(json!({"tenant": WRITER, "incident_id": incident, "add_tags": ["alpha", "beta"]}))
                    .await
                    .unwrap();
                tags = tags_of(&fx.truth("incidents", &incident).await);
            }
            assert!(tags.contains(&"alpha".to_owned()) && tags.contains(&"beta".to_owned()), "{tags:?}");
        })
        .await;

    let fx = f.clone();
    cases
        .run("a_lost_comment_answer_leaves_one_comment", async move {
            let incident = fx.incident();
            let before = fx.writes("graph_incident_comments").await;
            let comments_before = fx.truth("incidents", &incident).await["comments"].as_array().map_or(0, Vec::len);
            fx.fault(json!({"match": "graph_comments", "after_apply": "drop", "tenant": WRITER, "count": 1})).await;
            let answer = fx
                .direct(json!({"tenant": WRITER, "incident_id": incident, "comment": "exactly once"}))
                .await
                .expect("the comment is there");
            assert_eq!(answer["comment_already_posted"], true);
            assert_eq!(fx.writes("graph_incident_comments").await, before + 1);
            let comments = fx.truth("incidents", &incident).await["comments"].clone();
            assert_eq!(comments.as_array().unwrap().len(), comments_before + 1, "{comments}");
            // A 503 before the write: retried within the invocation, one comment.
            fx.fault(json!({"match": "graph_comments", "status": 503, "tenant": WRITER, "count": 1})).await;
            fx.direct(json!({"tenant": WRITER, "incident_id": incident, "comment": "second"}))
                .await
                .expect("posted after the 503");
            assert_eq!(fx.truth("incidents", &incident).await["comments"].as_array().unwrap().len(), comments_before + 2);
        })
        .await;

    let fx = f.clone();
    cases
        .run("an_idempotency_key_replays_without_calling_microsoft", async move {
            let incident = fx.incident();
            let patches = fx.writes("graph_incident_update").await;
            let request = json!({"tenant": WRITER, "incident_id": incident, "status": "resolved",
                                 "classification": "truePositive", "determination": "phishing",
                                 "idempotency_key": "ticket-77"});
            let first = fx.direct(request.clone()).await.unwrap();
            let second = fx.direct(request.clone()).await.unwrap();
            assert_eq!(second["replayed"], true);
            assert_eq!(second["request_id"], first["request_id"]);
            let (status, third) = fx
                .route("PATCH", &format!("/tenants/{WRITER}/incidents/{incident}"),
                       json!({"status": "resolved", "classification": "truePositive", "determination": "phishing"}),
                       Some("ticket-77"))
                .await;
            assert_eq!((status, third["replayed"].clone()), (200, json!(true)));
            assert_eq!(fx.writes("graph_incident_update").await, patches + 1);
            let mut other = request;
            other["status"] = json!("active");
            let reused = fx.direct(other).await.unwrap_err();
            assert_eq!(reused.error_type, "idempotency_key_reused");
        })
        .await;

    let fx = f.clone();
    cases
        .run("refusals_are_typed", async move {
            let token = fx
                .stack
                .emulator
                .app_token(READER, GRAPH, demo::CLIENT_ID, demo::CLIENT_SECRET)
                .await
                .unwrap();
            fx.stack.remember_token(&token);
            let reader_incident = fx
                .stack
                .emulator
                .truth(READER, Source::GraphIncidents, &token)
                .await
                .unwrap()
                .into_keys()
                .next()
                .unwrap();
            let refused = fx
                .direct(
                    json!({"tenant": READER, "incident_id": reader_incident, "status": "resolved"}),
                )
                .await
                .unwrap_err();
            assert_eq!(refused.error_type, "write_permission_missing");
            assert!(
                refused.error_message.contains("dp-operator consent-link"),
                "{refused}"
            );

            // Ada is a Security Reader: Graph refuses her change, and says why.
            let user = fx
                .stack
                .emulator
                .mint_user_token(&UserTokenRequest {
                    tenant: WRITER.to_owned(),
                    client_id: demo::CLIENT_ID.to_owned(),
                    user: demo::CONTOSO_ANALYST_UPN.to_owned(),
                    audience: None,
                    scopes: vec![],
                    mfa: false,
                    expires_in_seconds: None,
                })
                .await
                .unwrap();
            fx.stack.remember_token(&user.access_token);
            let incident = fx.incident();
            let refused = fx
                .direct(
                    json!({"tenant": WRITER, "incident_id": incident, "status": "resolved",
                               "user_token": user.access_token}),
                )
                .await
                .unwrap_err();
            assert_eq!(refused.error_type, "analyst_role_missing", "{refused}");
            let missing = fx
                .direct(json!({"tenant": WRITER, "incident_id": "999999999", "status": "resolved"}))
                .await
                .unwrap_err();
            assert_eq!(missing.error_type, "target_not_found");
        })
        .await;

    let fx = f.clone();
    cases
        .run(
            "every_request_is_audited_in_the_store_and_on_the_bus",
            async move {
                let entries = fx
                    .registry()
                    .audit(
                        &TenantId::parse(WRITER).unwrap(),
                        chrono::Utc::now() - chrono::Duration::hours(1),
                    )
                    .await
                    .unwrap();
                let results: Vec<&str> =
                    entries.iter().map(|entry| entry.result.as_str()).collect();
                for expected in [
                    "applied",
                    "replayed",
                    "classification_invalid",
                    "analyst_role_missing",
                    "idempotency_key_reused",
                    "target_not_found",
                ] {
                    assert!(results.contains(&expected), "no {expected} in {results:?}");
                }
                let http = entries
                    .iter()
                    .find(|entry| entry.caller.ends_with("assumed-role/soar/e2e"))
                    .expect("the HTTP caller is named");
                assert_eq!(http.acting_as, "app");
                assert!(
                    entries
                        .iter()
                        .any(|entry| entry.caller == "events:partner.soar@123456789012")
                );
                assert!(
                    entries
                        .iter()
                        .any(|entry| entry.acting_as.starts_with("user:"))
                );
                let applied = entries
                    .iter()
                    .find(|entry| entry.result == "applied" && entry.before != entry.after)
                    .unwrap();
                assert!(applied.microsoft_request_id.is_some());
                let reader = fx
                    .registry()
                    .audit(
                        &TenantId::parse(READER).unwrap(),
                        chrono::Utc::now() - chrono::Duration::hours(1),
                    )
                    .await
                    .unwrap();
                assert!(
                    reader
                        .iter()
                        .any(|entry| entry.result == "write_permission_missing"),
                    "{reader:?}"
                );
                let events = fx.aws.take_events(0, Duration::from_secs(3)).await.unwrap();
                let updated = events
                    .iter()
                    .filter(|event| event["detail-type"] == "IncidentUpdated")
                    .count();
                assert!(
                    updated >= entries.len(),
                    "{updated} IncidentUpdated events for {} requests",
                    entries.len()
                );
            },
        )
        .await;

    // Last: once a mapping exists, unmapped callers are refused (the `mapped` default).
    let fx = f.clone();
    cases
        .run("callers_change_only_the_tenants_of_their_mapping", async move {
            let incident = fx.incident();
            let patches = fx.writes("graph_incident_update").await;
            let request = json!({"tenant": WRITER, "incident_id": incident, "status": "resolved",
                                 "classification": "truePositive", "determination": "malware",
                                 "idempotency_key": "scoped-1"});
            // No mapping yet: every caller changes every tenant.
            let first = fx.direct(request.clone()).await.expect("applied");
            assert_eq!(fx.writes("graph_incident_update").await, patches + 1);

            // The SOAR role may act for the reader tenant only; nobody maps direct invocations.
            let mapped_at = chrono::Utc::now();
            let registry = fx.registry();
            update_caller_scope(&registry, "arn:aws:iam::123456789012:role/soar", |scope| {
                scope.tenants.insert(TenantId::parse(READER).unwrap());
            })
            .await
            .unwrap();
            let (status, body) = fx
                .route("PATCH", &format!("/tenants/{WRITER}/incidents/{incident}"),
                       json!({"status": "active"}),
                       None)
                .await;
            assert_eq!((status, body["error"]["code"].as_str()), (403, Some("caller_not_allowed")), "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("role/soar"), "{body}");
            // The same key as an applied request: refused, not the first caller's answer replayed.
            let refused = fx.direct(request.clone()).await.unwrap_err();
            assert_eq!(refused.error_type, "caller_not_allowed", "{refused}");
            // An event names no verified principal: it is held to direct-invoke's mapping.
            let refused = fx
                .event("evt-scoped", json!({"tenant": WRITER, "incident_id": incident, "comment": "from the bus"}))
                .await
                .expect("a verdict is not a function error");
            assert_eq!(refused["error"]["code"], "caller_not_allowed", "{refused}");
            assert_eq!(fx.writes("graph_incident_update").await, patches + 1, "nothing reached Microsoft");
            assert_eq!(fx.truth("incidents", &incident).await["status"], "resolved");
            // A refused caller writes nothing into the tenant's trail, not even with a malformed
            // request; each refusal is logged with the caller that was refused.
            let (status, _) = fx
                .route("PATCH", &format!("/tenants/{WRITER}/incidents/{incident}"),
                       json!({"status": "maybe"}), None)
                .await;
            assert_eq!(status, 400);
            let trail = registry
                .audit(&TenantId::parse(WRITER).unwrap(), mapped_at)
                .await
                .unwrap();
            let since_mapped: Vec<&str> = trail.iter().map(|entry| entry.result.as_str()).collect();
            assert!(since_mapped.is_empty(), "{since_mapped:?}");
            let refused_lines = |logs: &str| {
                logs.lines()
                    .filter(|line| line.contains("caller refused") && line.contains(WRITER))
                    .count()
            };
            let logs = fx
                .stack
                .logs()
                .wait_since(0, Duration::from_secs(5), |logs| refused_lines(logs) >= 3)
                .await;
            assert!(refused_lines(&logs) >= 3, "the refusals are not logged");
            assert!(
                logs.lines().any(|line| line.contains("caller refused") && line.contains("role/soar")),
                "the refused role is not named"
            );

            // Mapped, direct invocations act for the writer tenant again; the key replays.
            update_caller_scope(&registry, "direct-invoke", |scope| {
                scope.tenants.insert(TenantId::parse(WRITER).unwrap());
            })
            .await
            .unwrap();
            let replayed = fx.direct(request).await.expect("replayed");
            assert_eq!((replayed["replayed"].clone(), replayed["request_id"].clone()), (json!(true), first["request_id"].clone()));
            let comment = json!({"tenant": WRITER, "incident_id": incident, "comment": "mapped"});
            fx.direct(comment).await.expect("applied for its mapped tenant");
        })
        .await;

    let logs = f.stack.logs().text();
    assert_no_leaks(&[("functions", &logs)], &f.stack.sensitive());
    cases.finish();
}
