//! Graph-first end to end (MC1220762: the Defender XDR and Defender for Endpoint APIs retire on
//! 2027-02-01): the real `fetch-incidents` under `cargo lambda watch`, its registry in DynamoDB,
//! records to S3 (moto), and the emulator binary playing Microsoft.
//!
//! The cases: a deployment running the retiring sources switches to the Graph ones between two
//! runs (every latest version arrives, no incident is `new` twice, no history is fetched again,
//! a Graph alert names the MDE alert it continues); a 206 Partial Content mid-window (delivered,
//! never taken as complete; the next run completes it and nothing is lost or repeated);
//! `alerts_v2` without `@odata.nextLink` over 10,000 alerts (all arrive, API calls counted); and
//! Microsoft's retirement switch (the legacy pairs report `api_retired`, the Graph pairs complete).
//! Run a subset with `E2E_CASES=partial cargo test -p defender-partner-e2e --test e2e_graph_first`.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use defender_emulator::{
    ApiCalls, DataApiCalls, DataConfig, DataModes, DefenderSettingsPatch, Fault, FaultMatch,
    Retirement,
};
use defender_partner::defender::Source;
use defender_partner::sink::{Change, SinkLine};
use defender_partner::store::TenantStatus;
use defender_partner_e2e::fetch::{FetchAws, scheduled_event};
use defender_partner_e2e::stack::guid;
use defender_partner_e2e::{Cases, LambdaWatch, Stack};
use defender_partner_testkit::control::TouchTarget;
use defender_partner_testkit::records::{keys_once, lines_of, nothing_missing};
use defender_partner_testkit::scenario::{
    self, ROLE_GRAPH, ROLE_GRAPH_ALERTS, ROLE_M365D, ROLE_MDE,
};
use serde_json::{Value, json};

const PACKAGE: &str = "fetch-incidents";
const BIN: &str = "fetch-incidents";
const RETIRING: &str = "m365d-incidents,mde-alerts";
const GRAPH: &str = "graph-incidents,graph-alerts";
const ALL_ROLES: &[&str] = &[ROLE_M365D, ROLE_MDE, ROLE_GRAPH, ROLE_GRAPH_ALERTS];

struct Tenants {
    /// Runs on the retiring sources, then crosses over.
    migrate: String,
    /// Its Graph incidents answer 206 once.
    partial: String,
    /// 10,000 Graph alerts, listed without `@odata.nextLink`.
    bulk: String,
    /// Fetched after Microsoft switched the legacy routes off.
    retired: String,
    /// 2,000 incidents whose `$expand=alerts` fails.
    expand: String,
}

impl Tenants {
    /// (tenant, data)
    fn data(&self) -> Vec<(&String, DataConfig)> {
        vec![
            (&self.migrate, scenario::data(5_000, 120, 21, 20)),
            (&self.partial, scenario::data(180, 0, 22, 60)),
            (
                &self.bulk,
                DataConfig {
                    graph_alerts: 10_000,
                    omit_alerts_v2_next_link: true,
                    ..scenario::data(40, 0, 23, 5)
                },
            ),
            (&self.retired, scenario::data(60, 30, 24, 60)),
            (
                &self.expand,
                DataConfig {
                    expand_alerts_fails_above: Some(10),
                    ..scenario::data(2_000, 0, 25, 60)
                },
            ),
        ]
    }
}

struct Fixture {
    stack: Stack,
    aws: FetchAws,
    t: Tenants,
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        let t = Tenants {
            migrate: guid(),
            partial: guid(),
            bulk: guid(),
            retired: guid(),
            expand: guid(),
        };
        let stack = Stack::start_with(|client_id| {
            t.data()
                .into_iter()
                .map(|(id, _)| {
                    scenario::tenant(
                        id,
                        &format!("Customer {}", &id[..8]),
                        scenario::fetch_grants(client_id),
                    )
                })
                .collect()
        })
        .await?;
        let aws = FetchAws::create(&stack.moto).await?;
        // Throttling comes from injected faults only.
        stack.emulator.rate_limits_off().await?;
        for (tenant, config) in t.data() {
            stack.emulator.set_data(tenant, &config).await?;
            // The fallback's tenant joins in its own case, so that the other cases' scheduled
            // runs (without the expansion) do not deliver its incidents first.
            if *tenant != t.expand {
                stack
                    .register(tenant, TenantStatus::Active, ALL_ROLES)
                    .await?;
            }
        }
        Ok(Fixture { stack, aws, t })
    }

    /// The function as deployed with `DP_SOURCES=sources`.
    async fn function(&self, sources: &str) -> LambdaWatch {
        self.function_with(sources, &[]).await
    }

    async fn function_with(&self, sources: &str, extra: &[(&str, &str)]) -> LambdaWatch {
        let base = self.stack.emulator.base_url().to_owned();
        let mut env = self.aws.function_env();
        // Records go to S3 only: EventBridge is e2e_fetch's subject, and its per-record events
        // would only slow the 10,000-alert case.
        env.retain(|(key, _)| key != "DP_EVENT_BUS");
        env.extend(
            [
                ("DP_SOURCES", sources),
                ("DP_FETCH_LOOKBACK_HOURS", "48"),
                ("DP_CONSENT_APIS", "m365d,mde,graph"),
                ("DP_PAGE_SIZE_MDE_ALERTS", "200"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        for api in ["M365D", "MDE", "GRAPH"] {
            env.push((format!("DP_API_BASE_{api}"), base.clone()));
        }
        for (key, value) in extra {
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.stack
            .start_function(PACKAGE, BIN, &refs, &json!({ "warm_up": true }))
            .await
            .expect("fetch-incidents starts")
    }

    /// One pair, invoked directly: its outcome.
    async fn pair(&self, lambda: &LambdaWatch, tenant: &str, source: Source) -> Value {
        let answer = lambda
            .invoke(&json!({"tenant_id": tenant, "source": source.as_str()}))
            .await
            .unwrap_or_else(|error| panic!("the pair run failed: {error}"));
        answer
            .as_array()
            .and_then(|outcomes| outcomes.first())
            .cloned()
            .unwrap_or(answer)
    }

    /// Runs the pair until a run completes it (a run may stop at its deadline): the outcomes.
    async fn pair_to_end(&self, lambda: &LambdaWatch, tenant: &str, source: Source) -> Vec<Value> {
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            let outcome = self.pair(lambda, tenant, source).await;
            let done = outcome["result"] == "complete";
            outcomes.push(outcome);
            if done {
                return outcomes;
            }
        }
        panic!("{tenant} {source} never completed: {outcomes:?}");
    }

    async fn truth(&self, tenant: &str, source: Source) -> HashMap<String, String> {
        self.stack.truth(tenant, source).await.unwrap()
    }

    async fn lines(&self) -> Vec<SinkLine> {
        self.aws.sink_lines().await.expect("the bucket reads back")
    }

    /// Requests the emulator served for one of a tenant's APIs (`api` picks it).
    async fn calls(&self, tenant: &str, api: fn(&DataApiCalls) -> ApiCalls) -> u64 {
        let calls = api(&self.stack.emulator.data_calls(tenant).await.unwrap());
        calls.ok + calls.throttled + calls.failed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_first_end_to_end() {
    let started = Instant::now();
    let f = std::sync::Arc::new(Fixture::start().await.expect("starting the stack"));
    let retiring = std::sync::Arc::new(f.function(RETIRING).await);
    let graph = std::sync::Arc::new(f.function(GRAPH).await);
    eprintln!(
        "[e2e] stack ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    // --- a deployment crosses over from the retiring sources to Graph ------------------------
    let (fx, old, new) = (f.clone(), retiring.clone(), graph.clone());
    cases
        .run("crossing_over_loses_and_repeats_nothing", async move {
            let tenant = fx.t.migrate.clone();
            for source in [Source::M365dIncidents, Source::MdeAlerts] {
                fx.pair_to_end(&old, &tenant, source).await;
            }
            // Changes while the deployment still runs the retiring sources…
            fx.stack.emulator.touch(&tenant, 6, TouchTarget::Incidents).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            for source in [Source::M365dIncidents, Source::MdeAlerts] {
                fx.pair_to_end(&old, &tenant, source).await;
            }
            let before = fx.lines().await;
            let m365d: HashSet<String> = lines_of(&before, &tenant, Source::M365dIncidents)
                .iter()
                .map(|line| line.id.clone())
                .collect();
            let mde: HashSet<String> = lines_of(&before, &tenant, Source::MdeAlerts)
                .iter()
                .map(|line| line.id.clone())
                .collect();
            assert_eq!(m365d.len(), 5_000, "the history came in on the retiring source");

            // …then the configuration switches to Graph, and incidents and endpoint alerts
            // change again.
            let touched = fx.stack.emulator.touch(&tenant, 5, TouchTarget::Incidents).await.unwrap();
            fx.stack.emulator.touch(&tenant, 4, TouchTarget::MdeAlerts).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let calls_before = fx.calls(&tenant, |calls| calls.graph_incidents).await;
            let alert_calls_before = fx.calls(&tenant, |calls| calls.graph_alerts).await;
            for source in [Source::GraphIncidents, Source::GraphAlerts] {
                fx.pair_to_end(&new, &tenant, source).await;
            }
            let incident_calls = fx.calls(&tenant, |calls| calls.graph_incidents).await - calls_before;
            let alert_calls = fx.calls(&tenant, |calls| calls.graph_alerts).await - alert_calls_before;
            eprintln!(
                "[measure] crossing over, tenant with 5,000 incidents and 120 alerts: graph-incidents {incident_calls} calls, graph-alerts {alert_calls} calls"
            );
            let after = fx.lines().await;
            keys_once(&after);
            let graph_lines = lines_of(&after, &tenant, Source::GraphIncidents);
            // No incident the retiring source delivered is `new` again.
            for line in &graph_lines {
                assert!(
                    !(m365d.contains(&line.id) && line.change == Change::New),
                    "{} delivered as new again after the crossing",
                    line.id
                );
            }
            // Every latest version arrives: the truth of the incidents changed since.
            let truth = fx.truth(&tenant, Source::GraphIncidents).await;
            for record in &touched {
                // The emulator answers the touched ids (M365 Defender's are numbers).
                let id = record
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| record.to_string());
                let latest = truth
                    .get(&id)
                    .unwrap_or_else(|| panic!("touched incident {id} is listed by Graph"));
                assert!(
                    graph_lines
                        .iter()
                        .any(|line| line.id == id && &line.last_update_time == latest),
                    "the latest version of {id} ({latest}) arrived through Graph"
                );
            }
            // The history is not fetched again: one window, not 5,000 incidents' 100 pages.
            assert!(
                graph_lines.len() < 60,
                "{} Graph incident lines: the history was fetched again",
                graph_lines.len()
            );
            assert!(incident_calls <= 6, "{incident_calls} calls for one window");
            // A Graph alert from Defender for Endpoint names the MDE alert it continues.
            let alert_lines = lines_of(&after, &tenant, Source::GraphAlerts);
            assert!(!alert_lines.is_empty(), "the touched incidents' alerts arrive");
            for line in &alert_lines {
                if let Some(continues) = &line.continues {
                    assert_eq!(continues.source, Source::MdeAlerts);
                    assert!(mde.contains(&continues.id), "{continues:?} was delivered");
                }
            }
            assert!(
                alert_lines.iter().any(|line| line.continues.is_some()),
                "at least one Graph alert continues an MDE alert"
            );
        })
        .await;

    // --- 206 Partial Content mid-window --------------------------------------------------------
    let (fx, new) = (f.clone(), graph.clone());
    cases
        .run("partial_content_is_never_taken_as_complete", async move {
            let tenant = fx.t.partial.clone();
            fx.stack
                .emulator
                .push_fault(
                    &Fault::partial(
                        FaultMatch::GraphIncidents,
                        "Microsoft/MicrosoftDefenderForIdentity/503/1200",
                        1,
                    )
                    .for_tenant(&tenant),
                )
                .await
                .unwrap();
            let first = fx.pair(&new, &tenant, Source::GraphIncidents).await;
            assert_eq!(first["result"], "failed", "{first}");
            assert_eq!(first["code"], "partial_content", "{first}");
            assert!(
                first["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("MicrosoftDefenderForIdentity")),
                "the provider is named: {first}"
            );
            fx.pair_to_end(&new, &tenant, Source::GraphIncidents).await;
            let lines = fx.lines().await;
            keys_once(&lines);
            let truth = fx.truth(&tenant, Source::GraphIncidents).await;
            nothing_missing(&lines, &tenant, Source::GraphIncidents, &truth);
            assert_eq!(
                lines_of(&lines, &tenant, Source::GraphIncidents).len(),
                truth.len(),
                "nothing delivered twice"
            );
        })
        .await;

    // --- alerts_v2 without @odata.nextLink, 10,000 alerts -------------------------------------
    let fx = f.clone();
    cases
        .run("alerts_without_next_link_all_arrive", async move {
            let tenant = fx.t.bulk.clone();
            // `cargo lambda watch` gives every invocation 600 s: a margin of 570 s ends each run
            // after about half a minute (and its last page), within the harness's wait for an
            // answer, and the next run resumes where it stopped.
            let new = fx
                .function_with(GRAPH, &[("DP_DEADLINE_MARGIN_SECONDS", "570")])
                .await;
            let before = fx.calls(&tenant, |calls| calls.graph_alerts).await;
            let started = Instant::now();
            let runs = fx.pair_to_end(&new, &tenant, Source::GraphAlerts).await;
            let wall = started.elapsed();
            let calls = fx.calls(&tenant, |calls| calls.graph_alerts).await - before;
            let lines = fx.lines().await;
            let delivered = lines_of(&lines, &tenant, Source::GraphAlerts).len();
            eprintln!(
                "[measure] graph-alerts without nextLink: {delivered} alerts in {} run(s), {calls} API calls ({:.1} per 1,000 alerts), {:.1}s",
                runs.len(),
                calls as f64 * 1000.0 / delivered.max(1) as f64,
                wall.as_secs_f64()
            );
            keys_once(&lines);
            // Read by the test with the links switched back on.
            fx.stack
                .emulator
                .set_data_modes(
                    &tenant,
                    &DataModes {
                        omit_alerts_v2_next_link: false,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let truth = fx.truth(&tenant, Source::GraphAlerts).await;
            assert!(truth.len() >= 10_000, "{} alerts listed", truth.len());
            nothing_missing(&lines, &tenant, Source::GraphAlerts, &truth);
            assert_eq!(delivered, truth.len());
        })
        .await;

    // --- Microsoft switches the legacy routes off ----------------------------------------------
    let (fx, old) = (f.clone(), retiring.clone());
    cases
        .run("retired_routes_report_api_retired", async move {
            let tenant = fx.t.retired.clone();
            fx.stack
                .emulator
                .data_settings(&DefenderSettingsPatch {
                    retirement: Some(Retirement::Gone),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mixed = fx
                .function("m365d-incidents,mde-alerts,graph-incidents,graph-alerts")
                .await;
            let report = mixed
                .invoke(&scheduled_event())
                .await
                .expect("a scheduled run");
            let outcomes: Vec<&Value> = report["outcomes"]
                .as_array()
                .expect("outcomes")
                .iter()
                .filter(|outcome| outcome["tenant_id"] == tenant.as_str())
                .collect();
            for outcome in &outcomes {
                let source = outcome["source"].as_str().unwrap_or("");
                if source.starts_with("graph") {
                    assert_eq!(outcome["result"], "complete", "{outcome}");
                } else {
                    assert_eq!(outcome["result"], "failed", "{outcome}");
                    assert_eq!(outcome["code"], "api_retired", "{outcome}");
                }
            }
            assert_eq!(outcomes.len(), 4, "{report}");
            // The retiring deployment's own pair: reported, not a loop of retries.
            let again = fx.pair(&old, &tenant, Source::M365dIncidents).await;
            assert_eq!(again["code"], "api_retired", "{again}");
            fx.stack
                .emulator
                .data_settings(&DefenderSettingsPatch {
                    retirement: Some(Retirement::Off),
                    ..Default::default()
                })
                .await
                .unwrap();
        })
        .await;

    // --- `$expand=alerts` fails: the alerts are read in pages, not per incident ---------------
    let fx = f.clone();
    cases
        .run("the_alerts_fallback_reads_pages_not_incidents", async move {
            let tenant = fx.t.expand.clone();
            fx.stack
                .register(&tenant, TenantStatus::Active, ALL_ROLES)
                .await
                .unwrap();
            let expanding = fx
                .function_with("graph-incidents", &[("DP_GRAPH_EXPAND_ALERTS", "true")])
                .await;
            fx.pair_to_end(&expanding, &tenant, Source::GraphIncidents).await;
            let incident_calls = fx.calls(&tenant, |calls| calls.graph_incidents).await;
            let alert_calls = fx.calls(&tenant, |calls| calls.graph_alerts).await;
            eprintln!(
                "[measure] $expand=alerts failing, tenant with 2,000 incidents: graph-incidents {incident_calls} calls, alerts_v2 {alert_calls} calls"
            );
            fx.stack
                .emulator
                .set_data_modes(&tenant, &Default::default())
                .await
                .unwrap();
            let truth = fx.stack.expanded_alerts(&tenant).await.unwrap();
            let lines = fx.lines().await;
            let delivered = lines_of(&lines, &tenant, Source::GraphIncidents);
            assert_eq!(delivered.len(), 2_000);
            for line in &delivered {
                let record: Value = serde_json::from_str(line.record.get()).unwrap();
                let alerts: std::collections::BTreeSet<String> = record["alerts"]
                    .as_array()
                    .unwrap_or_else(|| panic!("incident {} without alerts", line.id))
                    .iter()
                    .filter_map(|alert| alert["id"].as_str().map(str::to_owned))
                    .collect();
                assert_eq!(alerts, truth[&line.id], "the alerts of incident {}", line.id);
            }
            assert!(alert_calls < 200, "pages, not incidents: {alert_calls} alerts_v2 calls");
        })
        .await;

    cases.finish();
    eprintln!(
        "[e2e] graph-first cases done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
