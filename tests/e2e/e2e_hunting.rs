//! Fleet hunting end to end: the real `hunt` function under `cargo lambda watch`, its hunts in
//! DynamoDB, results in S3 and its fan-out on SQS (moto), `HuntCompleted` and detections on the
//! bus, and the emulator's `runHuntingQuery` playing Microsoft. The test is the SQS poller:
//! it receives the hunt queue's messages and invokes the function with them, as Lambda's event
//! source mapping does.
//!
//! The cases: a hunt over 6 tenants (one spent its CPU quota and completes after the requeue,
//! one lacks `ThreatHunting.Read.All`, one answers more rows than the cap; every other tenant's
//! rows equal the emulator's truth); a syntax error fails the hunt after one tenant; a saved
//! hunt on the schedule, run twice, announces only the new rows the second time.
//! Run a subset with `E2E_CASES=syntax cargo test -p defender-partner-e2e --test e2e_hunting`.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use defender_partner::store::{
    DynamoRegistry, HuntRecords, SavedHunt, TenantStatus, update_caller_scope,
};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::fetch::{FetchAws, scheduled_event, sqs_event};
use defender_partner_e2e::moto::{Moto, create_registry_table};
use defender_partner_e2e::stack::guid;
use defender_partner_e2e::{Cases, LambdaWatch, Stack};
use defender_partner_testkit::control::EmulatorControl;
use defender_partner_testkit::scenario::{self, RESOURCE_GRAPH, ROLE_GRAPH};
use reqwest::Method;
use serde_json::{Map, Value, json};

const PACKAGE: &str = "hunt";
const BIN: &str = "hunt";
const ROLE_HUNTING: &str = "ThreatHunting.Read.All";
/// The emulator's row cap, and ours (`DP_HUNT_ROW_CAP`): small, so the case stays quick.
const CAP: u64 = 300;
const QUERY: &str = "DeviceProcessEvents | project Timestamp, DeviceName, FileName, ReportId";
/// The tables end here; "now" of the emulator is frozen an hour later, so answers and truth
/// agree to the row.
const END: &str = "2026-12-01T00:00:00Z";
const CLOCK: &str = "2026-12-01T01:00:00Z";
/// 168 rows over 7 days: one an hour.
const ROWS: u64 = 168;

struct Tenants {
    /// Its CPU quota is spent before the hunt.
    throttled: String,
    /// Has not granted `ThreatHunting.Read.All`.
    no_permission: String,
    /// More rows than the cap.
    big: String,
    plain: [String; 3],
}

impl Tenants {
    fn all(&self) -> Vec<&String> {
        let mut all = vec![&self.throttled, &self.no_permission, &self.big];
        all.extend(self.plain.iter());
        all
    }
}

struct Fixture {
    stack: Stack,
    aws: FetchAws,
    t: Tenants,
    lambda: LambdaWatch,
    store: DynamoRegistry,
}

fn hunting_tables(rows: u64, span_days: u64, end: &str) -> Value {
    json!({"rows_per_table": rows, "span_days": span_days, "end": end})
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        let t = Tenants {
            throttled: guid(),
            no_permission: guid(),
            big: guid(),
            plain: [guid(), guid(), guid()],
        };
        let no_permission = t.no_permission.clone();
        let ids: Vec<String> = t.all().into_iter().cloned().collect();
        let stack = Stack::start_with(|client_id| {
            ids.iter()
                .map(|id| {
                    let mut roles = vec![ROLE_GRAPH];
                    if *id != no_permission {
                        roles.push(ROLE_HUNTING);
                    }
                    scenario::tenant(
                        id,
                        &format!("Customer {}", &id[..8]),
                        vec![scenario::grant(client_id, RESOURCE_GRAPH, &roles)],
                    )
                })
                .collect()
        })
        .await?;
        let aws = FetchAws::create(&stack.moto).await?;
        let data: &EmulatorControl = &stack.emulator;
        data.settings(&json!({
            "rate_limits": "off",
            "hunting_clock": CLOCK,
            "hunting_max_rows": CAP,
            "hunting_cpu_quota": 1,
            "hunting_cpu_cycle_seconds": 12,
        }))
        .await?;
        for tenant in t.all() {
            let tables = if *tenant == t.big {
                json!({"rows_per_table": ROWS, "tables": {"DeviceProcessEvents": 1_000},
                       "span_days": 7, "end": END})
            } else {
                hunting_tables(ROWS, 7, END)
            };
            put_hunting(stack.emulator.base_url(), tenant, tables).await?;
            stack
                .register(tenant, TenantStatus::Active, &[ROLE_GRAPH, ROLE_HUNTING])
                .await?;
        }
        let base = stack.emulator.base_url().to_owned();
        let row_cap = CAP.to_string();
        let mut env = aws.function_env();
        env.retain(|(key, _)| key != "DP_FETCH_QUEUE_URL");
        env.extend(
            [
                ("DP_HUNT_QUEUE_URL", aws.work_queue_url.as_str()),
                ("DP_API_BASE_GRAPH", base.as_str()),
                ("DP_HUNT_ROW_CAP", row_cap.as_str()),
                // Mappings are read on every request, so that the scoping case sees its changes.
                ("DP_CALLER_SCOPE_CACHE_SECONDS", "0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let lambda = stack
            .start_function(PACKAGE, BIN, &refs, &json!({ "hunt_id": "warm-up" }))
            .await?;
        let store = DynamoRegistry::new(stack.dynamodb.clone(), stack.table.clone());
        Ok(Fixture {
            stack,
            aws,
            t,
            lambda,
            store,
        })
    }

    /// A Graph token of the app for `tenant`, straight from the emulator.
    async fn token(&self, tenant: &str) -> String {
        let token = self
            .stack
            .emulator
            .app_token(
                tenant,
                RESOURCE_GRAPH,
                &self.stack.client_id,
                &self.stack.current_secret(),
            )
            .await
            .expect("a token");
        self.stack.remember_token(&token);
        token
    }

    /// Spends `tenant`'s CPU quota of this cycle with one query of our own.
    async fn spend_quota(&self, tenant: &str) {
        let token = self.token(tenant).await;
        let answer = reqwest::Client::new()
            .post(format!(
                "{}/v1.0/security/runHuntingQuery",
                self.stack.emulator.base_url()
            ))
            .bearer_auth(token)
            .json(&json!({"Query": "DeviceProcessEvents | take 1"}))
            .send()
            .await
            .expect("the emulator answers");
        assert_eq!(answer.status(), 200, "the quota's one query");
    }

    /// What `runHuntingQuery` must answer for `tenant`: its rows and whether they were cut.
    async fn truth(&self, tenant: &str, query: &str) -> (Vec<Map<String, Value>>, bool) {
        let answer: Value = reqwest::Client::new()
            .post(format!(
                "{}/_emulator/tenants/{tenant}/hunting/truth",
                self.stack.emulator.base_url()
            ))
            .json(&json!({ "Query": query }))
            .send()
            .await
            .expect("truth")
            .json()
            .await
            .expect("truth is JSON");
        let rows = answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|row| row.as_object().cloned().expect("a row object"))
            .collect();
        (rows, answer["truncated"].as_bool().unwrap_or(false))
    }

    /// `POST /hunts` with `body` (or `GET /hunts/{id}` when `body` is a hunt id), as API Gateway
    /// delivers it, signed by a session of `role`: the HTTP status and the answer.
    async fn http(&self, role: &str, body: &Value) -> (u64, Value) {
        let mut event = defender_partner_e2e::events::load("hunt-http.json").unwrap();
        event["requestContext"]["authorizer"]["iam"]["userArn"] =
            json!(format!("arn:aws:sts::123456789012:assumed-role/{role}/e2e"));
        match body.as_str() {
            Some(id) => {
                let path = format!("/hunts/{id}");
                event["rawPath"] = json!(path);
                event["routeKey"] = json!("GET /hunts/{id}");
                event["requestContext"]["http"]["method"] = json!("GET");
                event["requestContext"]["http"]["path"] = json!(path);
                event["body"] = Value::Null;
            }
            None => event["body"] = json!(body.to_string()),
        }
        let answer = self.invoke(&event).await;
        let status = answer["statusCode"].as_u64().unwrap_or_default();
        let body = serde_json::from_str(answer["body"].as_str().unwrap_or("null")).unwrap();
        (status, body)
    }

    /// Invokes the function with `body`.
    async fn invoke(&self, body: &Value) -> Value {
        self.lambda
            .invoke(body)
            .await
            .unwrap_or_else(|error| panic!("the invocation failed: {error}"))
    }

    /// Plays Lambda's SQS event source mapping until the queue is empty and nothing is
    /// delayed, or `patience` passes.
    async fn drain_queue(&self, patience: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let messages = self
                .aws
                .receive_work(10, Duration::from_secs(1), Some(300))
                .await?;
            if messages.is_empty() {
                let depth = self.aws.work_queue_depth().await?;
                if depth.visible == 0 && depth.in_flight == 0 && depth.delayed == 0 {
                    return Ok(());
                }
            } else {
                let answer = self
                    .invoke(&sqs_event(&messages, &self.aws.work_queue_arn))
                    .await;
                let failed: HashSet<String> = answer["batchItemFailures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|failure| failure["itemIdentifier"].as_str().map(str::to_owned))
                    .collect();
                let done: Vec<_> = messages
                    .into_iter()
                    .filter(|message| !failed.contains(message.message_id().unwrap_or_default()))
                    .collect();
                self.aws.delete_work(&done).await?;
            }
            if started.elapsed() > patience {
                bail!("the hunt queue did not drain within {patience:?}");
            }
        }
    }

    async fn object(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let object = self
            .aws
            .s3
            .get_object()
            .bucket(&self.aws.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("GetObject {key}"))?;
        Ok(object.body.collect().await?.into_bytes().to_vec())
    }

    async fn manifest(&self, hunt_id: &str) -> Value {
        let body = self
            .object(&format!("hunts/{hunt_id}/manifest.json"))
            .await
            .expect("the manifest exists");
        serde_json::from_slice(&body).expect("the manifest is JSON")
    }

    /// Every row written for `tenant`, part after part.
    async fn rows(&self, hunt_id: &str, tenant: &Value) -> Vec<Map<String, Value>> {
        let id = tenant["tenant_id"].as_str().unwrap();
        let mut rows = Vec::new();
        for part in 1..=tenant["parts"].as_u64().unwrap() {
            let body = self
                .object(&format!(
                    "hunts/{hunt_id}/tenant={id}/part-{part}.ndjson.gz"
                ))
                .await
                .expect("a part");
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .expect("gzip");
            for line in text.lines().filter(|line| !line.is_empty()) {
                rows.push(serde_json::from_str(line).expect("NDJSON"));
            }
        }
        rows
    }

    /// The hunting calls the emulator served, over every tenant.
    async fn hunting_calls(&self) -> u64 {
        let mut total = 0;
        for tenant in self.t.all() {
            let calls = self
                .stack
                .emulator
                .call(Method::GET, &format!("data/calls?tenant={tenant}"), None)
                .await
                .unwrap()["calls"]
                .clone();
            total += calls["graph_hunting"]["requests"].as_u64().unwrap_or(0);
        }
        total
    }
}

async fn put_hunting(base_url: &str, tenant: &str, tables: Value) -> anyhow::Result<()> {
    let answer = reqwest::Client::new()
        .put(format!("{base_url}/_emulator/tenants/{tenant}/hunting"))
        .json(&tables)
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!(
            "PUT hunting for {tenant}: {} {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

fn tenant_entry<'a>(manifest: &'a Value, tenant: &str) -> &'a Value {
    manifest["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["tenant_id"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} is in the manifest: {manifest:#}"))
}

/// A written row without what we add: as Microsoft answered it.
fn as_answered(mut row: Map<String, Value>, tenant: &str) -> Map<String, Value> {
    assert_eq!(row.remove("tenant_id").unwrap(), tenant);
    assert!(row.remove("customer_ref").unwrap().is_string());
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_hunt_records_pass_the_conformance_suite() {
    let moto = Moto::start().await.expect("moto_server (run scripts/venv)");
    let client = moto.dynamodb().await;
    create_registry_table(&client, "registry")
        .await
        .expect("table");
    let store = DynamoRegistry::new(client, "registry");
    defender_partner_testkit::conformance::hunts::run(&store).await;
    // Not `concurrent_finishers_one_sees_zero` here: moto's TransactWriteItems backs the whole
    // table up and, when a transaction is cancelled, restores that copy, erasing what concurrent
    // requests wrote meanwhile (moto/dynamodb/models/__init__.py, `original_table_state`), so a
    // race of finishers is moto's, not DynamoDB's (whose transactions are serializable). The race
    // is checked on the SQLite store; a repeated message is checked here, one after the other.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunting_end_to_end() {
    let started = Instant::now();
    let f = Arc::new(Fixture::start().await.expect("starting the stack"));
    eprintln!(
        "[e2e] stack ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    // --- one hunt over six tenants --------------------------------------------------------
    let fx = f.clone();
    cases
        .run("a_fleet_hunt_over_six_tenants", async move {
            fx.spend_quota(&fx.t.throttled).await;
            let submitted = fx
                .invoke(&json!({"query": QUERY, "tenants": "all", "name": "six tenants"}))
                .await;
            let hunt_id = submitted["hunt_id"].as_str().expect("a hunt id").to_owned();
            assert_eq!(submitted["status"], "running");
            assert_eq!(submitted["tenants"], 6);
            let running = fx.manifest(&hunt_id).await;
            assert_eq!(
                running["status"], "running",
                "the manifest is there at once"
            );

            fx.drain_queue(Duration::from_secs(180)).await.unwrap();
            let manifest = fx.manifest(&hunt_id).await;
            assert_eq!(manifest["status"], "completed", "{manifest:#}");
            assert_eq!(manifest["tenants_finished"], 6);

            let throttled = tenant_entry(&manifest, &fx.t.throttled);
            assert_eq!(throttled["status"], "succeeded", "{throttled}");
            assert!(
                throttled["attempts"].as_u64().unwrap() >= 2,
                "requeued after the CPU cycle: {throttled}"
            );
            let denied = tenant_entry(&manifest, &fx.t.no_permission);
            assert_eq!(denied["status"], "roles_missing");
            assert_eq!(denied["error_code"], "roles_missing");
            assert!(
                denied["error"].as_str().unwrap().contains("consent-link"),
                "{denied}"
            );
            let big = tenant_entry(&manifest, &fx.t.big);
            assert_eq!(big["status"], "succeeded");
            assert_eq!(big["truncated"], true);
            assert_eq!(big["rows"], CAP);
            let (_, cut) = fx.truth(&fx.t.big, QUERY).await;
            assert!(cut, "the emulator cut it too");

            for tenant in fx.t.plain.iter().chain([&fx.t.throttled, &fx.t.big]) {
                let entry = tenant_entry(&manifest, tenant);
                let rows: Vec<Map<String, Value>> = fx
                    .rows(&hunt_id, entry)
                    .await
                    .into_iter()
                    .map(|row| as_answered(row, tenant))
                    .collect();
                let (truth, _) = fx.truth(tenant, QUERY).await;
                assert_eq!(rows.len() as u64, entry["rows"].as_u64().unwrap());
                assert_eq!(rows, truth, "{tenant}'s rows are the emulator's truth");
                let schema: Value = serde_json::from_slice(
                    &fx.object(&format!("hunts/{hunt_id}/tenant={tenant}/schema.json"))
                        .await
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(schema.as_array().unwrap().len(), 4, "{schema}");
            }
            let events = fx
                .aws
                .take_events(1, Duration::from_secs(10))
                .await
                .unwrap();
            let completed: Vec<&Value> = events
                .iter()
                .filter(|event| event["detail-type"] == "HuntCompleted")
                .collect();
            assert_eq!(completed.len(), 1, "{events:?}");
            assert_eq!(completed[0]["detail"]["hunt_id"], hunt_id.as_str());
            assert_eq!(completed[0]["detail"]["tenants_by_status"]["succeeded"], 5);
            assert_eq!(
                completed[0]["detail"]["tenants_by_status"]["roles_missing"],
                1
            );
        })
        .await;
    // Later cases run no quota.
    f.stack
        .emulator
        .settings(&json!({"hunting_cpu_quota": 0}))
        .await
        .unwrap();

    // --- a syntax error fails fast ---------------------------------------------------------
    let fx = f.clone();
    cases
        .run("a_syntax_error_fails_the_hunt_after_one_tenant", async move {
            let before = fx.hunting_calls().await;
            let submitted = fx
                .invoke(&json!({"query": "DeviceProcessEvents | wher FileName == 'x'", "tenants": "all"}))
                .await;
            let hunt_id = submitted["hunt_id"].as_str().unwrap().to_owned();
            fx.drain_queue(Duration::from_secs(60)).await.unwrap();
            let manifest = fx.manifest(&hunt_id).await;
            assert_eq!(manifest["status"], "failed", "{manifest:#}");
            assert_eq!(manifest["error_code"], "hunt_query_invalid");
            assert!(
                manifest["error"].as_str().unwrap().contains("Syntax error"),
                "Microsoft's message is passed on: {manifest:#}"
            );
            assert_eq!(
                fx.hunting_calls().await - before,
                1,
                "one tenant was asked, the others were not"
            );
        })
        .await;

    // --- a saved hunt on the schedule announces only new rows ------------------------------
    let fx = f.clone();
    cases
        .run("a_scheduled_hunt_announces_only_new_rows", async move {
            let tenant = fx.t.plain[0].clone();
            let name = format!("detector-{}", &guid()[..8]);
            fx.store
                .save_hunt(&SavedHunt {
                    name: name.clone(),
                    request: json!({"query": QUERY, "tenants": [tenant]}),
                    every_minutes: Some(1),
                    last_run_at: None,
                    last_hunt_id: None,
                    created_at: chrono::Utc::now(),
                })
                .await
                .unwrap();
            let _ = fx.aws.take_events(0, Duration::from_millis(200)).await;

            let detections = |events: &[Value]| -> Vec<Value> {
                events
                    .iter()
                    .filter(|event| {
                        event["detail-type"] == "HuntDetection"
                            && event["detail"]["saved_hunt"] == name.as_str()
                    })
                    .map(|event| event["detail"]["row"].clone())
                    .collect()
            };
            let run = || async {
                let answer = fx.invoke(&scheduled_event()).await;
                let started = answer["started"].as_array().unwrap().clone();
                assert_eq!(started.len(), 1, "{answer}");
                fx.drain_queue(Duration::from_secs(60)).await.unwrap();
                started[0]["hunt_id"].as_str().unwrap().to_owned()
            };

            let (first_truth, _) = fx.truth(&tenant, QUERY).await;
            let first = run().await;
            let events = fx
                .aws
                .take_events(first_truth.len() + 1, Duration::from_secs(10))
                .await
                .unwrap();
            let announced = detections(&events);
            assert_eq!(
                announced.len(),
                first_truth.len(),
                "every row is new at first"
            );

            // A day later: the span grows by a day at the same one-row-an-hour pace, so the
            // old rows stay as they were and 24 are new.
            put_hunting(
                fx.stack.emulator.base_url(),
                &tenant,
                hunting_tables(ROWS + 24, 8, "2026-12-02T00:00:00Z"),
            )
            .await
            .unwrap();
            fx.stack
                .emulator
                .settings(&json!({"hunting_clock": "2026-12-02T01:00:00Z"}))
                .await
                .unwrap();
            let (second_truth, _) = fx.truth(&tenant, QUERY).await;
            let old: HashSet<String> = first_truth
                .iter()
                .map(|row| Value::Object(row.clone()).to_string())
                .collect();
            let expected_new: Vec<Map<String, Value>> = second_truth
                .iter()
                .filter(|row| !old.contains(&Value::Object((*row).clone()).to_string()))
                .cloned()
                .collect();
            assert_eq!(expected_new.len(), 24, "the emulator kept the old rows");

            let second = run().await;
            assert_ne!(first, second);
            let events = fx
                .aws
                .take_events(expected_new.len() + 1, Duration::from_secs(10))
                .await
                .unwrap();
            let announced: Vec<Map<String, Value>> = detections(&events)
                .into_iter()
                .map(|row| as_answered(row.as_object().cloned().unwrap(), &tenant))
                .collect();
            assert_eq!(announced, expected_new, "only the new rows, in order");
            let manifest = fx.manifest(&second).await;
            let entry = tenant_entry(&manifest, &tenant);
            assert_eq!(entry["rows"], ROWS + 24);
            assert_eq!(entry["new_rows"], 24);
            fx.stack
                .emulator
                .settings(&json!({"hunting_clock": CLOCK}))
                .await
                .unwrap();
        })
        .await;

    // --- last (a mapping, once made, holds every later caller to one) ---------------------
    let fx = f.clone();
    cases
        .run("callers_hunt_only_across_their_mapping", async move {
            let [inside, by_customer, outside] = fx.t.plain.clone();
            // Before any mapping every caller hunts everywhere: a hunt over all six tenants.
            let (status, fleet) = fx
                .http("hunters", &json!({"query": QUERY, "tenants": "all"}))
                .await;
            assert_eq!(
                (status, fleet["tenants"].clone()),
                (202, json!(6)),
                "{fleet}"
            );
            let fleet = fleet["hunt_id"].as_str().unwrap().to_owned();
            fx.drain_queue(Duration::from_secs(90)).await.unwrap();

            // The hunters' role: one tenant by id, another by its customer reference (the stack
            // registers `CRM-` and the id's first 4 characters).
            let customer = |tenant: &str| format!("CRM-{}", &tenant[..4]);
            update_caller_scope(
                &fx.store,
                "arn:aws:iam::123456789012:role/hunters",
                |scope| {
                    scope.tenants.insert(TenantId::parse(&inside).unwrap());
                    scope.customer_refs.insert(customer(&by_customer));
                },
            )
            .await
            .unwrap();

            // "all" is all it may reach: narrowed to its two tenants.
            let (status, mine) = fx
                .http("hunters", &json!({"query": QUERY, "tenants": "all"}))
                .await;
            assert_eq!((status, mine["tenants"].clone()), (202, json!(2)), "{mine}");
            let mine = mine["hunt_id"].as_str().unwrap().to_owned();
            fx.drain_queue(Duration::from_secs(90)).await.unwrap();
            let (status, manifest) = fx.http("hunters", &json!(mine)).await;
            assert_eq!(status, 200, "{manifest}");
            let hunted: HashSet<&str> = manifest["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|tenant| tenant["tenant_id"].as_str().unwrap())
                .collect();
            assert_eq!(
                hunted,
                HashSet::from([inside.as_str(), by_customer.as_str()])
            );
            assert_eq!(manifest["status"], "completed", "{manifest}");

            // Naming a tenant outside it, registered or not, or its customer, is refused alike;
            // so is reading a hunt that spans tenants outside it.
            let calls = fx.hunting_calls().await;
            for tenants in [
                json!([outside]),
                json!([inside, guid()]),
                json!({"customer": customer(&outside)}),
            ] {
                let (status, body) = fx
                    .http("hunters", &json!({"query": QUERY, "tenants": tenants}))
                    .await;
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (403, Some("caller_not_allowed")),
                    "{tenants}: {body}"
                );
            }
            let (status, body) = fx.http("hunters", &json!(fleet)).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("caller_not_allowed")),
                "{body}"
            );
            let (status, body) = fx.http("strangers", &json!(mine)).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("caller_not_allowed")),
                "{body}"
            );

            // Direct invocations are direct-invoke, unmapped: refused too, whatever they ask.
            for request in [
                json!({"query": QUERY, "tenants": [inside]}),
                json!({"hunt_id": mine}),
            ] {
                let error = fx.lambda.invoke(&request).await.unwrap_err();
                assert_eq!(error.error_type, "caller_not_allowed", "{request}: {error}");
            }
            // Mapped to one tenant, it still may not run a saved hunt that spans two.
            update_caller_scope(&fx.store, "direct-invoke", |scope| {
                scope.tenants.insert(TenantId::parse(&inside).unwrap());
            })
            .await
            .unwrap();
            let name = format!("pair-{}", &guid()[..8]);
            fx.store
                .save_hunt(&SavedHunt {
                    name: name.clone(),
                    request: json!({"query": QUERY, "tenants": [inside, outside]}),
                    every_minutes: None,
                    last_run_at: None,
                    last_hunt_id: None,
                    created_at: chrono::Utc::now(),
                })
                .await
                .unwrap();
            let error = fx.lambda.invoke(&json!({"saved": name})).await.unwrap_err();
            assert_eq!(error.error_type, "caller_not_allowed", "{error}");
            let saved = fx.store.saved_hunt(&name).await.unwrap().unwrap();
            assert_eq!(
                saved.last_run_at, None,
                "a refused run does not move its schedule"
            );
            assert_eq!(
                fx.hunting_calls().await,
                calls,
                "no refused request reached Microsoft"
            );
            let queued = fx
                .aws
                .receive_work(10, Duration::from_millis(300), None)
                .await
                .unwrap();
            assert!(queued.is_empty(), "a refused request queued a tenant");
        })
        .await;

    // Nothing secret reached a log.
    let logs = f.stack.logs().text();
    defender_partner_e2e::leaks::assert_no_leaks(&[("hunt", &logs)], &f.stack.sensitive());
    cases.finish();
}
