//! `fetch-incidents` end to end: the real function under `cargo lambda watch`, its registry in
//! DynamoDB, its credential in Secrets Manager, records to S3 and announcements to EventBridge,
//! the fan-out queue in SQS (all moto), and the three Microsoft APIs from the emulator binary.
//!
//! Every assertion is about records against the API's truth (paged by the test itself): each
//! record in S3 exactly once whatever happens — a second run, a fan-out through the queue, a
//! SIGKILL mid-run, throttling, outages, tokens expiring mid-run, a withdrawn consent. No timing
//! assertions. One stack, cases in order; run a subset with
//! `E2E_CASES=kill cargo test -p defender-partner-e2e --test e2e_fetch`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_emulator::{ApiCalls, DataApiCalls, Fault, FaultMatch};
use defender_partner::defender::Source;
use defender_partner::sink::{Change, SinkLine};
use defender_partner::store::{DynamoRegistry, FLEET_RUN, RunLeases, TenantRegistry, TenantStatus};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::fetch::{FetchAws, jwt_like, kill_function, scheduled_event, sqs_event};
use defender_partner_e2e::stack::guid;
use defender_partner_e2e::{Cases, LambdaWatch, Stack};
use defender_partner_testkit::control::{TouchTarget, delay, is_for};
use defender_partner_testkit::records::{keys_once, lines_of, nothing_missing};
use defender_partner_testkit::scenario::{self, RESOURCE_GRAPH, ROLE_GRAPH, ROLE_M365D, ROLE_MDE};
use serde_json::{Value, json};

const PACKAGE: &str = "fetch-incidents";
/// The sources this deployment runs (`DP_SOURCES` below).
const SOURCES: [Source; 3] = [
    Source::M365dIncidents,
    Source::GraphIncidents,
    Source::MdeAlerts,
];
const BIN: &str = "fetch-incidents";
/// Generated records are this far apart (the newest ends about when the data is loaded).
const SPACING_SECONDS: u32 = 30;
/// M365 Defender's page size: the most one crash may repeat.
const M365D_PAGE: usize = 100;
/// A payload the function refuses: the warm-up invoke must not start a run.
fn warm_up() -> Value {
    json!({ "warm_up": true })
}

/// The customer tenants, each with a part to play.
struct Tenants {
    /// The small fleet of the first cases.
    a: String,
    b: String,
    c: String,
    /// 2,000 incidents: killed mid-run.
    kill: String,
    /// 429 storms with a short Retry-After.
    storm: String,
    /// A burst of 503.
    outage: String,
    /// A 429 with a Retry-After longer than any run waits.
    long: String,
    /// Paged slowly while tokens live two seconds.
    token: String,
    /// Consent withdrawn.
    revoked: String,
    /// Registered, messages queued, then offboarded.
    gone: String,
    /// Known to Microsoft, never registered here.
    stranger: String,
    /// Run by two instances at once.
    twin: String,
    /// Paged under 60-second tokens.
    brief: String,
    /// Consented to Graph only.
    graph_only: String,
}

impl Tenants {
    fn new() -> Tenants {
        Tenants {
            a: guid(),
            b: guid(),
            c: guid(),
            kill: guid(),
            storm: guid(),
            outage: guid(),
            long: guid(),
            token: guid(),
            revoked: guid(),
            gone: guid(),
            stranger: guid(),
            twin: guid(),
            brief: guid(),
            graph_only: guid(),
        }
    }

    /// (tenant, incidents, MDE alerts)
    fn data(&self) -> Vec<(&String, u32, u32)> {
        vec![
            (&self.a, 160, 300),
            (&self.b, 60, 30),
            (&self.c, 7, 0),
            (&self.kill, 2_000, 0),
            (&self.storm, 120, 60),
            (&self.outage, 120, 60),
            (&self.long, 100, 40),
            (&self.token, 300, 0),
            (&self.revoked, 40, 10),
            (&self.gone, 30, 10),
            (&self.stranger, 30, 10),
            (&self.twin, 300, 0),
            (&self.brief, 600, 0),
            (&self.graph_only, 40, 20),
        ]
    }
}

struct Fixture {
    stack: Stack,
    aws: FetchAws,
    /// The function as deployed: fleets below the fan-out threshold run in place.
    lambda: LambdaWatch,
    t: Tenants,
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        let t = Tenants::new();
        let stack = Stack::start_with(|client_id| {
            t.data()
                .into_iter()
                .map(|(id, _, _)| {
                    let grants = if *id == t.graph_only {
                        // Consented to Microsoft Graph only.
                        vec![scenario::grant(client_id, RESOURCE_GRAPH, &[ROLE_GRAPH])]
                    } else {
                        scenario::read_grants(client_id)
                    };
                    scenario::tenant(id, &format!("Customer {}", &id[..8]), grants)
                })
                .collect()
        })
        .await?;
        let aws = FetchAws::create(&stack.moto).await?;
        // Throttling comes from injected faults only, so that every 429 is one the test chose.
        stack.emulator.rate_limits_off().await?;
        for (index, (tenant, incidents, alerts)) in t.data().into_iter().enumerate() {
            let data = scenario::data(incidents, alerts, index as u64 + 1, SPACING_SECONDS);
            stack.emulator.set_data(tenant, &data).await?;
        }
        let lambda = start_function(&stack, &aws, &[]).await?;
        for tenant in [&t.a, &t.b, &t.c] {
            register(&stack, tenant).await?;
        }
        Ok(Fixture {
            stack,
            aws,
            lambda,
            t,
        })
    }

    /// A scheduled run on `lambda`: its JSON report.
    async fn scheduled(&self, lambda: &LambdaWatch) -> Value {
        let started = Instant::now();
        let report = lambda
            .invoke(&scheduled_event())
            .await
            .unwrap_or_else(|error| panic!("the scheduled run failed: {error}"));
        eprintln!(
            "[e2e] scheduled run: {:.1}s, {} pairs",
            started.elapsed().as_secs_f64(),
            report["pairs"]
        );
        no_time_left(&report);
        report
    }

    /// What the API holds now for a tenant's source (id → last-update time).
    async fn truth(&self, tenant: &str, source: Source) -> HashMap<String, String> {
        self.stack.truth(tenant, source).await.unwrap()
    }

    async fn lines(&self) -> Vec<SinkLine> {
        self.aws.sink_lines().await.expect("the bucket reads back")
    }

    fn registry(&self) -> DynamoRegistry {
        DynamoRegistry::new(self.stack.dynamodb.clone(), self.stack.table.clone())
    }
}

fn function_env(aws: &FetchAws, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = aws.function_env();
    env.extend(
        [
            ("DP_SOURCES", "m365d-incidents,graph-incidents,mde-alerts"),
            // The generated data reaches back 2,000 × 30 s ≈ 17 h.
            ("DP_FETCH_LOOKBACK_HOURS", "48"),
            // Several MDE pages per tenant rather than one of 10,000.
            ("DP_PAGE_SIZE_MDE_ALERTS", "200"),
            // Tokens are used until they expire, so that two-second tokens expire mid-run.
            ("DP_TOKEN_REFRESH_AHEAD_SECONDS", "0"),
            // Consents prove (and pending tenants are re-proven for) all three APIs, so the
            // recorded roles say which sources a tenant granted.
            ("DP_CONSENT_APIS", "m365d,mde,graph"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    for (key, value) in extra {
        env.retain(|(existing, _)| existing != key);
        env.push(((*key).to_owned(), (*value).to_owned()));
    }
    env
}

async fn start_function(
    stack: &Stack,
    aws: &FetchAws,
    extra: &[(&str, &str)],
) -> anyhow::Result<LambdaWatch> {
    let base = stack.emulator.base_url().to_owned();
    let mut env = function_env(aws, extra);
    for api in ["M365D", "MDE", "GRAPH"] {
        env.push((format!("DP_API_BASE_{api}"), base.clone()));
    }
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    stack.start_function(PACKAGE, BIN, &refs, &warm_up()).await
}

/// Ages a pair's lease past its expiry, as ten minutes of waiting would.
async fn expire_lease(stack: &Stack, tenant: &str, source: Source) {
    use aws_sdk_dynamodb::types::AttributeValue;
    stack
        .dynamodb
        .update_item()
        .table_name(&stack.table)
        .key("pk", AttributeValue::S(format!("TENANT#{tenant}")))
        .key(
            "sk",
            AttributeValue::S(format!("LEASE#{}", source.as_str())),
        )
        .update_expression("SET lease_until = :past")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":past", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("the lease item exists and is aged");
}

async fn offboard(f: &Fixture, tenant: &str) {
    f.registry()
        .set_status(
            &TenantId::parse(tenant).unwrap(),
            TenantStatus::Offboarded,
            Some("end-to-end test: done with this tenant".into()),
        )
        .await
        .unwrap();
}

/// Sends one work message per pair, as the fan-out (or a continuation) does.
async fn enqueue(f: &Fixture, pairs: &[(&str, Source)]) {
    for (tenant, source) in pairs {
        f.aws
            .sqs
            .send_message()
            .queue_url(&f.aws.work_queue_url)
            .message_body(json!({"tenant_id": tenant, "source": source.as_str()}).to_string())
            .send()
            .await
            .unwrap();
    }
}

/// The calls of the APIs of this deployment's sources (`SOURCES`).
fn of_sources(calls: &DataApiCalls) -> [ApiCalls; 3] {
    [
        calls.m365d_incidents,
        calls.mde_alerts,
        calls.graph_incidents,
    ]
}

/// API calls served for a tenant, every API and answer counted.
async fn api_calls(f: &Fixture, tenant: &str) -> u64 {
    let calls = f.stack.emulator.data_calls(tenant).await.unwrap();
    of_sources(&calls)
        .iter()
        .map(|api| api.ok + api.throttled + api.failed)
        .sum()
}

async fn register(stack: &Stack, tenant: &str) -> anyhow::Result<()> {
    stack
        .register(
            tenant,
            TenantStatus::Active,
            &[ROLE_M365D, ROLE_MDE, ROLE_GRAPH],
        )
        .await
}

/// Fails with the likely cause when every pair of a run stopped before its first call.
#[track_caller]
fn no_time_left(report: &Value) {
    let all = outcomes(report);
    if !all.is_empty()
        && all
            .iter()
            .all(|outcome| result(outcome) == "partial" && outcome["api_calls"] == 0)
    {
        panic!(
            "every pair ended `partial` before its first API call: the function saw no time left \
             before its deadline. `cargo lambda watch` 1.9 sends `Lambda-Runtime-Deadline-Ms: \
             600000` (a duration, not an epoch time); `defender_partner::deadline::time_left` \
             must read it as the time left. Report: {report}"
        );
    }
}

/// The outcomes of a report (scheduled run) or of a direct pair invoke (an array).
fn outcomes(report: &Value) -> Vec<Value> {
    report
        .get("outcomes")
        .unwrap_or(report)
        .as_array()
        .unwrap_or_else(|| panic!("no outcomes in {report}"))
        .clone()
}

fn outcomes_of(report: &Value, tenant: &str) -> Vec<Value> {
    outcomes(report)
        .into_iter()
        .filter(|outcome| outcome["tenant_id"] == tenant)
        .collect()
}

fn result(outcome: &Value) -> &str {
    outcome["result"].as_str().unwrap_or("?")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_incidents_end_to_end() {
    let started = Instant::now();
    let fixture = Arc::new(Fixture::start().await.expect("the stack starts"));
    eprintln!(
        "[e2e] stack started in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    // --- a scheduled run over a small fleet ---------------------------------------------------

    let f = fixture.clone();
    cases
        .run("scheduled_run_delivers_every_record_once", async move {
            let t = &f.t;
            let report = f.scheduled(&f.lambda).await;
            assert_eq!(report["tenants"], 3, "{report}");
            assert_eq!(report["pairs"], 9, "{report}");
            assert_eq!(
                report["enqueued"], 0,
                "below the fan-out threshold: {report}"
            );
            let all = outcomes(&report);
            assert_eq!(all.len(), 9, "{report}");
            for outcome in &all {
                assert_eq!(result(outcome), "complete", "{outcome}");
            }

            let lines = f.lines().await;
            keys_once(&lines);
            let mut expected = 0;
            for tenant in [&t.a, &t.b, &t.c] {
                for source in SOURCES {
                    let truth = f.truth(tenant, source).await;
                    nothing_missing(&lines, tenant, source, &truth);
                    let delivered = lines_of(&lines, tenant, source).len();
                    assert_eq!(delivered, truth.len(), "{tenant} {source}");
                    let outcome = all
                        .iter()
                        .find(|o| {
                            o["tenant_id"] == tenant.as_str() && o["source"] == source.as_str()
                        })
                        .unwrap();
                    assert_eq!(outcome["delivered"], delivered, "{outcome}");
                    expected += truth.len();
                }
            }
            assert_eq!(
                lines.len(),
                expected,
                "nothing in S3 but these tenants' records"
            );
            assert!(lines.iter().all(|line| line.change == Change::New));
            assert!(
                lines.iter().any(|line| line.redirected_to.is_some()),
                "merged incidents are delivered as such"
            );

            // One EventBridge event per record, carrying its key.
            let events = f
                .aws
                .take_events(lines.len(), Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(events.len(), lines.len(), "one event per record");
            let event_keys: HashSet<&str> = events
                .iter()
                .filter_map(|event| event["detail"]["key"].as_str())
                .collect();
            let line_keys: HashSet<&str> = lines.iter().map(|line| line.key.as_str()).collect();
            assert_eq!(event_keys, line_keys, "the events name the records stored");

            // A second run re-reads only the overlap: nothing new anywhere.
            let again = f.scheduled(&f.lambda).await;
            for outcome in outcomes(&again) {
                assert_eq!(result(&outcome), "complete", "{outcome}");
                assert_eq!(outcome["delivered"], 0, "{outcome}");
            }
            assert_eq!(f.lines().await.len(), lines.len(), "nothing new in S3");
            let more = f.aws.take_events(0, Duration::from_secs(2)).await.unwrap();
            assert!(more.is_empty(), "no new events: {} arrived", more.len());
        })
        .await;

    // --- the heartbeat the alarm reads ---------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("a_scheduled_run_writes_its_heartbeat_metric", async move {
            let mark = f.lambda.logs().mark();
            f.scheduled(&f.lambda).await;
            // The EMF line CloudWatch turns into DefenderPartner/FleetRunCompleted (template.yaml,
            // FetchHeartbeatAlarm), next to the per-source lines.
            let logs = f
                .lambda
                .logs()
                .wait_since(mark, Duration::from_secs(5), |logs| {
                    logs.contains("FleetRunCompleted")
                })
                .await;
            let heartbeat: serde_json::Value = logs
                .lines()
                .filter_map(|line| line.find('{').map(|at| &line[at..]))
                .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
                .find(|line| line.get("FleetRunCompleted").is_some())
                .unwrap_or_else(|| panic!("no heartbeat metric line in:\n{logs}"));
            let directive = &heartbeat["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], "DefenderPartner", "{heartbeat}");
            assert_eq!(directive["Dimensions"], serde_json::json!([["Function"]]));
            assert_eq!(heartbeat["Function"], "fetch-incidents");
            assert_eq!(heartbeat["FleetRunCompleted"], 1.0);
            assert!(heartbeat["_aws"]["Timestamp"].is_i64(), "{heartbeat}");
            assert!(
                logs.contains("\"RecordsDelivered\""),
                "each pair writes its per-source metrics too"
            );
        })
        .await;

    // --- one scheduled run at a time ------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run(
            "a_scheduled_run_finding_the_fleet_lease_held_is_busy",
            async move {
                // Another scheduled run (another sandbox) is walking the fleet: it holds the lease.
                let registry = f.registry();
                let now = chrono::Utc::now();
                let until = now + chrono::Duration::minutes(10);
                assert!(
                    registry
                        .take_run_lease(FLEET_RUN, "another-run", now, until)
                        .await
                        .unwrap()
                );
                let calls_before = api_calls(&f, &f.t.a).await;
                let report = f.lambda.invoke(&scheduled_event()).await.unwrap();
                assert_eq!(report["busy"], true, "{report}");
                assert_eq!(report["pairs"], 0, "{report}");
                assert_eq!(
                    api_calls(&f, &f.t.a).await,
                    calls_before,
                    "a busy run calls no API"
                );
                // That run ends: the next schedule walks the fleet.
                registry
                    .release_run_lease(FLEET_RUN, "another-run")
                    .await
                    .unwrap();
                let report = f.scheduled(&f.lambda).await;
                assert_eq!(report["busy"], false, "{report}");
                assert!(report["pairs"].as_u64().unwrap_or_default() > 0, "{report}");
            },
        )
        .await;

    // --- fan-out through SQS -------------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("fan_out_through_the_queue", async move {
            let t = &f.t;
            let pairs: HashSet<(String, String)> = [&t.a, &t.b, &t.c]
                .iter()
                .flat_map(|tenant| {
                    SOURCES
                        .iter()
                        .map(|source| ((*tenant).clone(), source.as_str().to_owned()))
                })
                .collect();
            // Changes to deliver through the queue.
            let touched = f
                .stack
                .emulator
                .touch(&t.a, 5, TouchTarget::Incidents)
                .await
                .unwrap();
            assert_eq!(touched.len(), 5);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let before = f.lines().await.len();

            // An instance that fans out any fleet.
            let fanout = start_function(&f.stack, &f.aws, &[("DP_FANOUT_THRESHOLD", "0")])
                .await
                .expect("a second watch starts");
            let report = fanout.invoke(&scheduled_event()).await.unwrap();
            assert_eq!(report["enqueued"], 9, "{report}");
            assert_eq!(outcomes(&report).len(), 0, "nothing run in place: {report}");

            let messages = f
                .aws
                .receive_work(9, Duration::from_secs(20), None)
                .await
                .unwrap();
            let bodies: HashSet<(String, String)> = messages
                .iter()
                .map(|message| {
                    let body: Value = serde_json::from_str(message.body().unwrap()).unwrap();
                    (
                        body["tenant_id"].as_str().unwrap().to_owned(),
                        body["source"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(messages.len(), 9, "one message per tenant and source");
            assert_eq!(bodies, pairs);

            let answer = fanout
                .invoke(&sqs_event(&messages, &f.aws.work_queue_arn))
                .await
                .unwrap();
            assert_eq!(answer, json!({ "batchItemFailures": [] }));
            f.aws.delete_work(&messages).await.unwrap();

            let lines = f.lines().await;
            keys_once(&lines);
            assert!(
                lines.len() > before,
                "the queued run delivered the touched incidents"
            );
            for source in SOURCES {
                nothing_missing(&lines, &t.a, source, &f.truth(&t.a, source).await);
            }
            for source in [Source::M365dIncidents, Source::GraphIncidents] {
                let updated = lines_of(&lines, &t.a, source)
                    .iter()
                    .filter(|line| line.change == Change::Updated)
                    .count();
                assert_eq!(updated, 5, "{source}: the touched incidents, as updates");
            }

            // A long throttle on one tenant and an outage on another: the throttled pair
            // continues in a new message delayed by Microsoft's wait; the failed ones go back
            // (partial batch failure); the rest are done.
            f.aws
                .take_events(0, Duration::from_millis(500))
                .await
                .unwrap();
            let report = fanout.invoke(&scheduled_event()).await.unwrap();
            assert_eq!(report["enqueued"], 9, "{report}");
            let messages = f
                .aws
                .receive_work(9, Duration::from_secs(20), None)
                .await
                .unwrap();
            assert_eq!(messages.len(), 9);
            for fault in [
                Fault::throttle(FaultMatch::Data, 600, 1).for_tenant(&t.b),
                Fault::status(FaultMatch::Data, 500, 100).for_tenant(&t.c),
            ] {
                f.stack.emulator.push_fault(&fault).await.unwrap();
            }
            let answer = fanout
                .invoke(&sqs_event(&messages, &f.aws.work_queue_arn))
                .await
                .unwrap();
            f.stack.emulator.clear_faults().await.unwrap();
            let failed: HashSet<&str> = answer["batchItemFailures"]
                .as_array()
                .unwrap_or_else(|| panic!("no batchItemFailures: {answer}"))
                .iter()
                .filter_map(|failure| failure["itemIdentifier"].as_str())
                .collect();
            let of_c: HashSet<&str> = messages
                .iter()
                .filter(|message| message.body().unwrap_or_default().contains(t.c.as_str()))
                .filter_map(|message| message.message_id())
                .collect();
            assert_eq!(
                failed, of_c,
                "exactly the failed tenant's messages: {answer}"
            );
            // The event source mapping deletes the others.
            let done: Vec<_> = messages
                .iter()
                .filter(|message| !failed.contains(message.message_id().unwrap_or_default()))
                .cloned()
                .collect();
            f.aws.delete_work(&done).await.unwrap();
            let depth = f.aws.work_queue_depth().await.unwrap();
            assert_eq!(
                depth.delayed, 1,
                "the throttled pair waits in a delayed continuation: {depth:?}"
            );
            assert_eq!(depth.visible, 0, "{depth:?}");
            assert_eq!(
                depth.in_flight, 3,
                "the failed messages return later: {depth:?}"
            );
            f.aws.purge(&f.aws.work_queue_url).await.unwrap();
            drop(fanout);
            f.aws
                .take_events(0, Duration::from_millis(500))
                .await
                .unwrap();
        })
        .await;

    // --- SIGKILL mid-run -----------------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("kill_9_mid_run_repeats_at_most_one_page", async move {
            let tenant = f.t.kill.clone();
            register(&f.stack, &tenant).await.unwrap();
            let pair = json!({ "tenant_id": tenant, "source": "m365d-incidents" });
            // 20 pages, each answered 300 ms late: the run lasts seconds.
            f.stack
                .emulator
                .push_fault(&delay(FaultMatch::Data, 300, 40).for_tenant(&tenant))
                .await
                .unwrap();
            let calls_before = f
                .stack
                .emulator
                .data_calls(&tenant)
                .await
                .unwrap()
                .m365d_incidents
                .ok;
            // An instance of its own: killed below.
            let victim = Arc::new(
                start_function(&f.stack, &f.aws, &[])
                    .await
                    .expect("a watch for the victim starts"),
            );
            let invoking = victim.clone();
            let payload = pair.clone();
            let mut running = tokio::spawn(async move { invoking.try_invoke(&payload).await });
            // Wait for a few pages served, then kill the function process.
            let waited = Instant::now();
            loop {
                let ok = f
                    .stack
                    .emulator
                    .data_calls(&tenant)
                    .await
                    .unwrap()
                    .m365d_incidents
                    .ok;
                if ok >= calls_before + 4 {
                    break;
                }
                assert!(
                    waited.elapsed() < Duration::from_secs(60),
                    "the run served no pages: {}",
                    victim.logs().tail(40)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let pid = kill_function(victim.pid(), BIN).expect("the function is killed");
            eprintln!("[e2e] killed {BIN} ({pid}) mid-run");
            // The invoke never gets an answer: cargo lambda watch (1.9) logs "command killed"
            // and starts no new instance, so later invokes of that watch hang too. A new watch
            // stands in for the new sandbox Lambda would start.
            match tokio::time::timeout(Duration::from_secs(3), &mut running).await {
                Ok(Ok(answer)) => eprintln!("[e2e] the killed invoke answered {answer:?}"),
                Ok(Err(error)) => eprintln!("[e2e] the killed invoke's task: {error}"),
                Err(_) => eprintln!("[e2e] the killed invoke got no answer within 3 s"),
            }
            running.abort();
            f.stack.emulator.clear_faults().await.unwrap();
            let cut = lines_of(&f.lines().await, &tenant, Source::M365dIncidents).len();
            assert!(
                cut > 0 && cut < 2_000,
                "the kill landed mid-run ({cut} records stored)"
            );

            // Invoked again on a new instance: the killed run still owns the pair (its lease
            // outlives its deadline), so the new run skips it without writing anything.
            let replacement = start_function(&f.stack, &f.aws, &[])
                .await
                .expect("a watch for the replacement starts");
            let answer = replacement.invoke(&pair).await.unwrap();
            assert_eq!(result(&outcomes(&answer)[0]), "busy", "{answer}");
            assert_eq!(
                lines_of(&f.lines().await, &tenant, Source::M365dIncidents).len(),
                cut,
                "a busy run writes nothing"
            );
            // Once the lease has expired (the test ages it rather than wait ten minutes), the
            // pair is free: invoked until complete.
            expire_lease(&f.stack, &tenant, Source::M365dIncidents).await;
            let mut attempts = 0;
            loop {
                attempts += 1;
                assert!(attempts <= 5, "no complete run after {attempts} invokes");
                let answer = replacement
                    .invoke(&pair)
                    .await
                    .unwrap_or_else(|error| panic!("the re-run failed: {error}"));
                no_time_left(&answer);
                let outcome = &outcomes(&answer)[0];
                eprintln!("[e2e] re-run: {outcome}");
                if result(outcome) == "complete" {
                    break;
                }
                assert_eq!(result(outcome), "partial", "{outcome}");
            }
            drop(replacement);
            drop(victim);

            let lines = f.lines().await;
            let mine = lines_of(&lines, &tenant, Source::M365dIncidents);
            let truth = f.truth(&tenant, Source::M365dIncidents).await;
            assert_eq!(truth.len(), 2_000);
            nothing_missing(&lines, &tenant, Source::M365dIncidents, &truth);
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for line in &mine {
                *counts.entry(line.key.as_str()).or_default() += 1;
            }
            let repeated: usize = counts.values().map(|count| count - 1).sum();
            eprintln!(
                "[e2e] after the kill: {} lines, {repeated} repeats",
                mine.len()
            );
            assert_eq!(counts.len(), 2_000, "every record, no other");
            assert!(
                repeated <= M365D_PAGE,
                "{repeated} repeated records: more than one page"
            );
            // Done with: later scheduled runs leave its 2,000 records alone.
            f.registry()
                .set_status(
                    &TenantId::parse(&tenant).unwrap(),
                    TenantStatus::Offboarded,
                    Some("end-to-end test: done with this tenant".into()),
                )
                .await
                .unwrap();
        })
        .await;

    // --- throttling, outages, short tokens, revoked consent ------------------------------------

    let f = fixture.clone();
    cases
        .run("faults_stay_with_their_tenant", async move {
            let t = &f.t;
            for tenant in [&t.storm, &t.outage, &t.long, &t.token, &t.revoked] {
                register(&f.stack, tenant).await.unwrap();
            }
            let active = 7; // a, b, c and these but the revoked one (kill is offboarded)
            for fault in [
                Fault::throttle(FaultMatch::Data, 1, 4).for_tenant(&t.storm),
                Fault::status(FaultMatch::Data, 503, 2).for_tenant(&t.outage),
                Fault::throttle(FaultMatch::Data, 600, 1).for_tenant(&t.long),
                // Slow paging for the short-token tenant: its pairs outlive several tokens.
                delay(FaultMatch::Data, 400, 16).for_tenant(&t.token),
            ] {
                f.stack.emulator.push_fault(&fault).await.unwrap();
            }
            f.stack.emulator.set_token_lifetime(2).await.unwrap();
            f.stack
                .emulator
                .revoke_grants(&t.revoked, &f.stack.client_id)
                .await
                .unwrap();

            let report = f.scheduled(&f.lambda).await;
            f.stack.emulator.set_token_lifetime(3600).await.unwrap();
            f.stack.emulator.clear_faults().await.unwrap();
            assert_eq!(report["tenants"], active + 1, "{report}");
            for outcome in outcomes(&report) {
                let tenant = outcome["tenant_id"].as_str().unwrap();
                if tenant == t.long || tenant == t.revoked {
                    continue;
                }
                assert_eq!(result(&outcome), "complete", "{outcome}");
            }
            // The long throttle: one pair reported with Microsoft's wait, the others done.
            let long = outcomes_of(&report, &t.long);
            let throttled: Vec<&Value> = long.iter().filter(|o| result(o) == "throttled").collect();
            assert_eq!(throttled.len(), 1, "{long:?}");
            assert_eq!(throttled[0]["retry_after_seconds"], 600, "{long:?}");
            assert!(
                long.iter()
                    .filter(|o| result(o) != "throttled")
                    .all(|o| result(o) == "complete")
            );
            // The withdrawn consent: reported, and the tenant marked revoked.
            // A pair that starts after another one marked the tenant revoked is not fetched.
            let revoked = outcomes_of(&report, &t.revoked);
            assert_eq!(revoked.len(), 3);
            for outcome in &revoked {
                assert!(
                    result(outcome) == "revoked"
                        || (result(outcome) == "dropped" && outcome["code"] == "tenant_not_active"),
                    "{outcome}"
                );
            }
            assert!(revoked.iter().any(|outcome| result(outcome) == "revoked"));
            let record = f
                .registry()
                .get(&TenantId::parse(&t.revoked).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.status, TenantStatus::Revoked);
            for tenant in [&t.storm, &t.outage, &t.long, &t.token] {
                let record = f
                    .registry()
                    .get(&TenantId::parse(tenant).unwrap())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(record.status, TenantStatus::Active, "{tenant}");
            }
            // The faults were really met.
            let storm = f.stack.emulator.data_calls(&t.storm).await.unwrap();
            let throttled_calls: u64 = of_sources(&storm).iter().map(|api| api.throttled).sum();
            assert_eq!(throttled_calls, 4, "{storm:?}");
            let outage = f.stack.emulator.data_calls(&t.outage).await.unwrap();
            let failed_calls: u64 = of_sources(&outage).iter().map(|api| api.failed).sum();
            assert_eq!(failed_calls, 2, "{outage:?}");
            let token_requests = f.stack.emulator.token_requests_for(&t.token).await.unwrap();
            assert!(
                token_requests.len() > 3,
                "two-second tokens were renewed mid-run: {} token requests",
                token_requests.len()
            );

            let lines = f.lines().await;
            keys_once(&lines);
            for tenant in [&t.storm, &t.outage, &t.token] {
                for source in SOURCES {
                    nothing_missing(&lines, tenant, source, &f.truth(tenant, source).await);
                }
            }
            assert!(
                lines
                    .iter()
                    .all(|line| line.tenant_id.as_str() != t.revoked),
                "nothing stored for the revoked tenant"
            );

            // A later run: the throttled pair completes; the revoked tenant is no longer planned.
            let later = f.scheduled(&f.lambda).await;
            assert_eq!(later["tenants"], active, "{later}");
            for outcome in outcomes(&later) {
                assert_eq!(result(&outcome), "complete", "{outcome}");
            }
            let lines = f.lines().await;
            keys_once(&lines);
            for source in SOURCES {
                nothing_missing(&lines, &t.long, source, &f.truth(&t.long, source).await);
            }
            f.aws
                .take_events(0, Duration::from_millis(500))
                .await
                .unwrap();
        })
        .await;

    // --- the registry ends ingestion: offboarded and unknown tenants ---------------------------

    let f = fixture.clone();
    cases
        .run(
            "offboarded_and_unknown_tenants_are_never_fetched",
            async move {
                let t = &f.t;
                register(&f.stack, &t.gone).await.unwrap();
                f.aws.purge(&f.aws.work_queue_url).await.unwrap();
                // Messages queued while the tenant was active (a fan-out, a throttled pair's
                // continuation), and some for a tenant never registered here.
                let mut pairs = Vec::new();
                for tenant in [&t.gone, &t.stranger] {
                    for source in SOURCES {
                        pairs.push((tenant.as_str(), source));
                    }
                }
                enqueue(&f, &pairs).await;
                offboard(&f, &t.gone).await;
                let tokens_before = f.stack.emulator.token_requests().await.unwrap().len();

                let messages = f
                    .aws
                    .receive_work(6, Duration::from_secs(20), None)
                    .await
                    .unwrap();
                assert_eq!(messages.len(), 6);
                let answer = f
                    .lambda
                    .invoke(&sqs_event(&messages, &f.aws.work_queue_arn))
                    .await
                    .unwrap();
                assert_eq!(
                    answer["batchItemFailures"].as_array().map(Vec::len),
                    Some(0),
                    "dropped, not retried nor dead-lettered: {answer}"
                );
                // The event source mapping deletes what the batch did not hand back.
                f.aws.delete_work(&messages).await.unwrap();
                let depth = f.aws.work_queue_depth().await.unwrap();
                assert_eq!(
                    (depth.visible, depth.in_flight, depth.delayed),
                    (0, 0, 0),
                    "no continuation: {depth:?}"
                );

                // Direct invokes of one pair.
                for (tenant, code) in [
                    (&t.gone, "tenant_not_active"),
                    (&t.stranger, "tenant_not_registered"),
                ] {
                    for source in SOURCES {
                        let answer = f
                            .lambda
                            .invoke(&json!({"tenant_id": tenant, "source": source.as_str()}))
                            .await
                            .unwrap();
                        let outcome = &outcomes(&answer)[0];
                        assert_eq!(result(outcome), "dropped", "{outcome}");
                        assert_eq!(outcome["code"], code, "{outcome}");
                        assert_eq!(outcome["api_calls"], 0, "{outcome}");
                    }
                }
                let both = |logs: &str| {
                    logs.contains("tenant_not_active") && logs.contains("tenant_not_registered")
                };
                let logs = f
                    .stack
                    .logs()
                    .wait_since(0, Duration::from_secs(5), both)
                    .await;
                assert!(both(&logs), "no log line of either refusal");

                // Nothing fetched: no API call, no token, no record.
                for tenant in [&t.gone, &t.stranger] {
                    assert_eq!(api_calls(&f, tenant).await, 0, "{tenant}");
                    assert!(
                        f.lines()
                            .await
                            .iter()
                            .all(|line| line.tenant_id.as_str() != tenant.as_str()),
                        "nothing stored for {tenant}"
                    );
                }
                let tokens = f.stack.emulator.token_requests().await.unwrap();
                assert!(
                    tokens[tokens_before.min(tokens.len())..]
                        .iter()
                        .all(|request| !is_for(request, &t.gone) && !is_for(request, &t.stranger)),
                    "a token was asked for a tenant that is not fetched"
                );
            },
        )
        .await;

    // --- overlapping runs of one pair ----------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("overlapping_runs_deliver_each_change_once", async move {
            let tenant = f.t.twin.clone();
            register(&f.stack, &tenant).await.unwrap();
            // A second sandbox of the same function.
            let other = start_function(&f.stack, &f.aws, &[])
                .await
                .expect("a second watch starts");
            let pair = json!({ "tenant_id": tenant, "source": "m365d-incidents" });
            let rounds = 8;
            let mut busy = 0;
            for round in 0..rounds {
                if round > 0 {
                    // New changes for both runs to see; touched records are stamped 1/300 s
                    // apart from now: let real time pass them.
                    f.stack.emulator.touch(&tenant, 60, TouchTarget::Incidents).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                // Slow pages: the two runs overlap whichever starts first.
                f.stack
                .emulator
                    .push_fault(&delay(FaultMatch::Data, 150, 8).for_tenant(&tenant))
                    .await
                    .unwrap();
                let (mine, theirs) = tokio::join!(f.lambda.invoke(&pair), other.invoke(&pair));
                f.stack.emulator.clear_faults().await.unwrap();
                let results: Vec<String> = [mine.unwrap(), theirs.unwrap()]
                    .iter()
                    .map(|answer| result(&outcomes(answer)[0]).to_owned())
                    .collect();
                eprintln!("[e2e] overlapping round {round}: {results:?}");
                busy += results.iter().filter(|r| *r == "busy").count();
                assert!(results.iter().any(|r| r == "complete"), "{results:?}");
            }
            drop(other);
            let lines = f.lines().await;
            let mine = lines_of(&lines, &tenant, Source::M365dIncidents);
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for line in &mine {
                *counts.entry(line.key.as_str()).or_default() += 1;
            }
            let twice: usize = counts.values().map(|count| count - 1).sum();
            eprintln!(
                "[e2e] [measure] overlapping runs: {rounds} rounds, {} lines, {twice} delivered twice, {busy} busy",
                mine.len()
            );
            assert_eq!(twice, 0, "records delivered twice under overlapping runs");
            assert_eq!(busy, rounds, "one run of each round skipped the pair as busy");
            nothing_missing(
                &lines,
                &tenant,
                Source::M365dIncidents,
                &f.truth(&tenant, Source::M365dIncidents).await,
            );
            offboard(&f, &tenant).await;
            f.aws.take_events(0, Duration::from_millis(500)).await.unwrap();
        })
        .await;

    // --- 60-second tokens ----------------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("sixty_second_tokens_serve_half_their_life", async move {
            let tenant = f.t.brief.clone();
            register(&f.stack, &tenant).await.unwrap();
            // The deployed default refresh-ahead (300 s), longer than the tokens live.
            let lambda = start_function(
                &f.stack,
                &f.aws,
                &[
                    ("DP_TOKEN_REFRESH_AHEAD_SECONDS", "300"),
                    ("DP_PAGE_SIZE_M365D_INCIDENTS", "25"),
                ],
            )
            .await
            .expect("a watch starts");
            f.stack.emulator.set_token_lifetime(60).await.unwrap();
            // Slow pages: the run outlives half a token's life.
            f.stack
                .emulator
                .push_fault(&delay(FaultMatch::Data, 1500, 24).for_tenant(&tenant))
                .await
                .unwrap();
            let before = f
                .stack
                .emulator
                .token_requests_for(&tenant)
                .await
                .unwrap()
                .len();
            let started = Instant::now();
            let answer = lambda
                .invoke(&json!({ "tenant_id": tenant, "source": "m365d-incidents" }))
                .await
                .unwrap();
            let elapsed = started.elapsed();
            f.stack.emulator.set_token_lifetime(3600).await.unwrap();
            f.stack.emulator.clear_faults().await.unwrap();
            drop(lambda);
            let outcome = &outcomes(&answer)[0];
            assert_eq!(result(outcome), "complete", "{outcome}");
            let requests = f
                .stack
                .emulator
                .token_requests_for(&tenant)
                .await
                .unwrap()
                .len()
                - before;
            eprintln!(
                "[e2e] [measure] 60-s tokens: {} API calls, {requests} token requests in {:.1}s",
                outcome["api_calls"],
                elapsed.as_secs_f64()
            );
            let allowed = 1 + (elapsed.as_secs() / 30) as usize;
            assert!(
                requests <= allowed,
                "{requests} token requests in {:.0}s: at most one per half lifetime ({allowed})",
                elapsed.as_secs_f64()
            );
            nothing_missing(
                &f.lines().await,
                &tenant,
                Source::M365dIncidents,
                &f.truth(&tenant, Source::M365dIncidents).await,
            );
            offboard(&f, &tenant).await;
            f.aws
                .take_events(0, Duration::from_millis(500))
                .await
                .unwrap();
        })
        .await;

    // --- a tenant that consented to Graph only -------------------------------------------------

    let f = fixture.clone();
    cases
        .run(
            "graph_only_consent_runs_graph_and_reports_the_rest",
            async move {
                let tenant = f.t.graph_only.clone();
                // Pending, as a consent callback that could not prove all three APIs leaves it.
                f.stack
                    .register(&tenant, TenantStatus::Pending, &[])
                    .await
                    .unwrap();
                let report = f.scheduled(&f.lambda).await;
                let mine = outcomes_of(&report, &tenant);
                assert_eq!(mine.len(), 1, "{report}");
                assert_eq!(mine[0]["source"], "graph-incidents");
                assert_eq!(result(&mine[0]), "complete", "{report}");
                let skipped: Vec<&Value> = report["not_planned"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|entry| entry["tenant_id"] == tenant)
                    .collect();
                assert_eq!(skipped.len(), 2, "{report}");
                assert!(skipped.iter().all(|entry| entry["code"] == "roles_missing"));
                let record = f
                    .registry()
                    .get(&TenantId::parse(&tenant).unwrap())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(record.status, TenantStatus::Active, "{record:?}");
                assert_eq!(record.roles, vec![ROLE_GRAPH]);
                let reason = record.status_reason.clone().unwrap_or_default();
                assert!(reason.starts_with("roles_missing"), "{reason}");
                assert!(reason.contains("m365d-incidents") && reason.contains("mde-alerts"));
                nothing_missing(
                    &f.lines().await,
                    &tenant,
                    Source::GraphIncidents,
                    &f.truth(&tenant, Source::GraphIncidents).await,
                );

                // The next cycle: no proof again, no failure, the status written once.
                let before = f
                    .stack
                    .emulator
                    .token_requests_for(&tenant)
                    .await
                    .unwrap()
                    .len();
                let report = f.scheduled(&f.lambda).await;
                let mine = outcomes_of(&report, &tenant);
                assert_eq!(mine.len(), 1, "{report}");
                assert_eq!(result(&mine[0]), "complete");
                let after = f.stack.emulator.token_requests_for(&tenant).await.unwrap();
                assert_eq!(
                    after.len(),
                    before,
                    "no token asked: {:?}",
                    &after[before..]
                );
                let again = f
                    .registry()
                    .get(&TenantId::parse(&tenant).unwrap())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(again.version, record.version, "the status is written once");
                // A queued pair of a source it did not grant is dropped, not failed.
                let answer = f
                    .lambda
                    .invoke(&json!({"tenant_id": tenant, "source": "mde-alerts"}))
                    .await
                    .unwrap();
                assert_eq!(result(&outcomes(&answer)[0]), "dropped", "{answer}");
                assert_eq!(outcomes(&answer)[0]["code"], "roles_missing");
                offboard(&f, &tenant).await;
                f.aws
                    .take_events(0, Duration::from_millis(500))
                    .await
                    .unwrap();
            },
        )
        .await;

    // --- last: nothing secret in any log -------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("no_secret_or_token_in_the_logs", async move {
            let logs = f.stack.logs().text();
            assert!(
                logs.contains("pair finished"),
                "the function's own logs were not captured"
            );
            assert!(
                logs.contains("DEBUG"),
                "no DEBUG line in the logs: RUST_LOG=debug did not reach the function"
            );
            let sensitive = f.stack.sensitive();
            assert!(
                sensitive.len() > 3,
                "too few sensitive values seen for this to mean anything"
            );
            for (index, value) in sensitive.iter().enumerate() {
                assert!(
                    !logs.contains(value.as_str()),
                    "sensitive value #{index} ({} chars) is in the logs",
                    value.len()
                );
            }
            assert!(
                !logs.to_ascii_lowercase().contains("bearer ey"),
                "an Authorization header reached the logs"
            );
            let jwts = jwt_like(&logs);
            if let Some(at) = jwts.first() {
                let line = logs[..*at].lines().count();
                panic!(
                    "{} JWT-shaped strings in the logs, first on line {line}",
                    jwts.len()
                );
            }
        })
        .await;

    drop(fixture);
    cases.finish();
}
