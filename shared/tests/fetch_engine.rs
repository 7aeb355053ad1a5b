//! The ingestion engine against the emulator's data APIs in one process: real HTTP, real
//! tokens, the embedded registry and the local sink. Every assertion is about records: each
//! change delivered once, nothing missing, whatever happens while paging.

use std::collections::HashMap;
use std::time::Duration;

use defender_emulator::{DefenderSettingsPatch, EmulatorHandle, Fault, FaultMatch};
use defender_partner::config::fetch::{
    ENV_DEADLINE_MARGIN_SECONDS, ENV_LOOKBACK_HOURS, ENV_PAGE_SIZE_PREFIX, ENV_SOURCES,
};
use defender_partner::defender::Source;
use defender_partner::fetch::{FetchService, PairResult, PairTask};
use defender_partner::sink::{Change, SinkLine};
use defender_partner::store::TenantStatus;
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::control::{delay, resource_of};
use defender_partner_testkit::records::{keys_once, nothing_missing};
use defender_partner_testkit::world::active;
use defender_partner_testkit::{World, scenario};
use serde_json::json;
use tokio::time::Instant;

const CLIENT_ID: &str = "aaaaaaaa-1111-4111-8111-111111111111";
const SECRET: &str = "engine-test-secret";
const ALPHA: &str = "a1a1a1a1-2222-4222-8222-222222222222";
const BRAVO: &str = "b2b2b2b2-3333-4333-8333-333333333333";
const CHARLIE: &str = "c3c3c3c3-4444-4444-8444-444444444444";

/// The fetch service of a function on a [`World`] of three tenants with data.
struct Fixture {
    world: World,
    handle: EmulatorHandle,
    service: FetchService,
}

impl Fixture {
    async fn start(sizes: [(u32, u32); 3], extra: &[(&str, &str)]) -> Fixture {
        let tenants = [ALPHA, BRAVO, CHARLIE]
            .iter()
            .zip(sizes)
            .enumerate()
            .map(|(index, (id, (incidents, alerts)))| {
                let mut tenant = scenario::tenant(
                    id,
                    &format!("Tenant {index}"),
                    scenario::fetch_grants(CLIENT_ID),
                );
                tenant.data = Some(scenario::data(incidents, alerts, index as u64 + 1, 37));
                tenant
            })
            .collect();
        let mut world = World::on(scenario::with(
            scenario::app(CLIENT_ID, "engine test", &[SECRET]),
            tenants,
        ))
        .data_apis()
        .local_sink()
        .setting(
            ENV_SOURCES,
            "m365d-incidents,graph-incidents,mde-alerts,graph-alerts",
        )
        .setting(&format!("{ENV_PAGE_SIZE_PREFIX}MDE_ALERTS"), "200")
        .setting(ENV_LOOKBACK_HOURS, "720")
        .setting(ENV_DEADLINE_MARGIN_SECONDS, "2")
        .tenants([ALPHA, BRAVO, CHARLIE].map(|tenant| active(tenant, tenant)));
        for (name, value) in extra {
            world = world.setting(name, *value);
        }
        let world = world.start().await.unwrap();
        let service = FetchService::build(&world.services, world.lookup())
            .await
            .unwrap();
        Fixture {
            handle: world.handle(),
            service,
            world,
        }
    }

    /// Another function instance on the same registry file, sink and APIs (what a second
    /// Lambda sandbox is): its own token cache and store connection.
    async fn second_instance(&self) -> FetchService {
        let services = self.world.new_instance().await.unwrap();
        FetchService::build(&services, self.world.lookup())
            .await
            .unwrap()
    }

    async fn run(&self) -> Vec<defender_partner::fetch::PairOutcome> {
        self.service
            .scheduled(Instant::now() + Duration::from_secs(120))
            .await
            .unwrap()
            .outcomes
    }

    fn lines(&self) -> Vec<SinkLine> {
        self.world.sink_lines()
    }

    /// What the API holds now for a tenant's source: id → last-update, read straight from it.
    async fn truth(&self, tenant: &str, source: Source) -> HashMap<String, String> {
        let control = self.world.control();
        let token = control
            .app_token(tenant, resource_of(source), CLIENT_ID, SECRET)
            .await
            .unwrap();
        control.truth(tenant, source, &token).await.unwrap()
    }

    async fn stop(self) {
        self.world.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_three_sources_each_change_once() {
    let fixture = Fixture::start([(230, 450), (7, 3), (0, 0)], &[]).await;
    let outcomes = fixture.run().await;
    assert_eq!(outcomes.len(), 12);
    for outcome in &outcomes {
        assert_eq!(outcome.result, PairResult::Complete, "{outcome:?}");
    }
    let lines = fixture.lines();
    keys_once(&lines);
    for tenant in [ALPHA, BRAVO, CHARLIE] {
        for source in Source::ALL {
            let truth = fixture.truth(tenant, source).await;
            nothing_missing(&lines, tenant, source, &truth);
            let count = lines
                .iter()
                .filter(|l| l.tenant_id.as_str() == tenant && l.source == source)
                .count();
            assert_eq!(count, truth.len(), "{tenant} {}", source.as_str());
        }
    }
    assert!(lines.iter().all(|line| line.change == Change::New));
    // Merged incidents are delivered as such.
    assert!(lines.iter().any(|line| line.redirected_to.is_some()));

    // A second run re-reads only the overlap and delivers nothing again.
    let again = fixture.run().await;
    assert!(
        again
            .iter()
            .all(|outcome| outcome.delivered == 0 && outcome.result == PairResult::Complete)
    );
    assert_eq!(fixture.lines().len(), lines.len());

    // Changes are delivered once, as updates.
    fixture.handle.touch_incidents(ALPHA, 12).unwrap();
    // The emulator stamps touched records a few milliseconds ahead; let real time pass them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = fixture.run().await;
    let m365d = third
        .iter()
        .find(|o| o.tenant_id.as_str() == ALPHA && o.source == Source::M365dIncidents)
        .unwrap();
    assert_eq!(m365d.updated, 12, "{m365d:?}");
    assert_eq!(m365d.new, 0);
    let lines = fixture.lines();
    keys_once(&lines);
    nothing_missing(
        &lines,
        ALPHA,
        Source::M365dIncidents,
        &fixture.truth(ALPHA, Source::M365dIncidents).await,
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.change == Change::Updated && l.source == Source::M365dIncidents)
            .count(),
        12
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changing_while_paging_are_not_missed() {
    let fixture = Fixture::start(
        [(600, 0), (0, 0), (0, 0)],
        &[("DP_SOURCES", "m365d-incidents,graph-incidents")],
    )
    .await;
    fixture
        .handle
        .set_data_modes(
            ALPHA,
            serde_json::from_value(json!({"touch_while_paging": {"every_pages": 1, "count": 3}}))
                .unwrap(),
        )
        .unwrap();
    for _ in 0..4 {
        let outcomes = fixture.run().await;
        assert!(
            outcomes
                .iter()
                .all(|outcome| outcome.result == PairResult::Complete),
            "{outcomes:?}"
        );
    }
    fixture
        .handle
        .set_data_modes(ALPHA, Default::default())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = fixture.run().await;
    assert!(
        last.iter().any(|outcome| outcome.updated > 0),
        "the changes made while paging arrive"
    );
    let lines = fixture.lines();
    keys_once(&lines);
    for source in [Source::M365dIncidents, Source::GraphIncidents] {
        nothing_missing(&lines, ALPHA, source, &fixture.truth(ALPHA, source).await);
    }
    fixture.stop().await;
}

fn data_fault(status: u16, retry_after: Option<u64>, count: u32) -> Fault {
    Fault {
        retry_after,
        ..Fault::status(FaultMatch::Data, status, count).for_tenant(ALPHA)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_outages_and_revocation_stay_with_their_tenant() {
    let fixture = Fixture::start(
        [(150, 0), (150, 0), (150, 0)],
        &[("DP_SOURCES", "m365d-incidents")],
    )
    .await;
    // A long throttle on Alpha: reported with Microsoft's wait; the others complete.
    fixture
        .handle
        .push_fault(data_fault(429, Some(600), 1))
        .unwrap();
    let outcomes = fixture.run().await;
    let alpha = outcomes
        .iter()
        .find(|o| o.tenant_id.as_str() == ALPHA)
        .unwrap();
    assert_eq!(
        alpha.result,
        PairResult::Throttled {
            retry_after_seconds: 600
        }
    );
    assert!(
        outcomes
            .iter()
            .filter(|o| o.tenant_id.as_str() != ALPHA)
            .all(|o| o.result == PairResult::Complete)
    );
    // A short throttle and a burst of 5xx inside a run: waited out and retried.
    fixture
        .handle
        .push_fault(data_fault(429, Some(1), 1))
        .unwrap();
    fixture.handle.push_fault(data_fault(503, None, 2)).unwrap();
    let outcomes = fixture.run().await;
    assert!(
        outcomes.iter().all(|o| o.result == PairResult::Complete),
        "{outcomes:?}"
    );
    let lines = fixture.lines();
    keys_once(&lines);
    nothing_missing(
        &lines,
        ALPHA,
        Source::M365dIncidents,
        &fixture.truth(ALPHA, Source::M365dIncidents).await,
    );
    // Persistent failure: reported, recorded on the checkpoint, the others unaffected.
    fixture
        .handle
        .push_fault(data_fault(500, None, 1000))
        .unwrap();
    let outcomes = fixture.run().await;
    let alpha = outcomes
        .iter()
        .find(|o| o.tenant_id.as_str() == ALPHA)
        .unwrap();
    assert!(
        matches!(alpha.result, PairResult::Failed { .. }),
        "{alpha:?}"
    );
    let checkpoint = fixture
        .world
        .services
        .checkpoints
        .checkpoint(&TenantId::parse(ALPHA).unwrap(), "m365d-incidents")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.consecutive_failures, 1);
    assert_eq!(
        checkpoint.last_error.as_deref(),
        Some("microsoft_unavailable")
    );
    fixture.handle.clear_faults();
    // Consent withdrawn: the tenant is marked revoked; the others go on.
    fixture.handle.revoke_consent(BRAVO, CLIENT_ID).unwrap();
    fixture
        .world
        .services
        .tokens
        .invalidate(
            &TenantId::parse(BRAVO).unwrap(),
            defender_partner::api::DefenderApi::M365d,
        )
        .await;
    let outcomes = fixture.run().await;
    let bravo = outcomes
        .iter()
        .find(|o| o.tenant_id.as_str() == BRAVO)
        .unwrap();
    assert!(
        matches!(bravo.result, PairResult::Revoked { .. }),
        "{bravo:?}"
    );
    let record = fixture
        .world
        .services
        .registry
        .get(&TenantId::parse(BRAVO).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TenantStatus::Revoked);
    assert!(
        outcomes
            .iter()
            .filter(|o| o.tenant_id.as_str() != BRAVO)
            .all(|o| o.result == PairResult::Complete)
    );
    // Revoked tenants are no longer planned.
    assert_eq!(fixture.run().await.len(), 2);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_by_its_deadline_resumes_and_tokens_expiring_mid_run_refresh() {
    let fixture = Fixture::start(
        [(900, 0), (0, 0), (0, 0)],
        &[
            ("DP_SOURCES", "graph-incidents"),
            ("DP_TOKEN_REFRESH_AHEAD_SECONDS", "0"),
        ],
    )
    .await;
    // Tokens live two seconds: paging 18 pages outlives several.
    fixture.handle.set_token_lifetime(2).unwrap();
    let task = PairTask {
        tenant_id: TenantId::parse(ALPHA).unwrap(),
        source: Source::GraphIncidents,
    };
    let mut partial_runs = 0;
    loop {
        // Each run gets only a moment past the margin.
        let outcome = fixture
            .service
            .pairs(
                vec![task.clone()],
                Instant::now() + Duration::from_millis(2150),
            )
            .await
            .remove(0);
        match outcome.result {
            PairResult::Partial => partial_runs += 1,
            PairResult::Complete => break,
            other => panic!("{other:?}"),
        }
        assert!(partial_runs < 200, "no progress");
    }
    assert!(partial_runs >= 1, "the deadline cut at least one run");
    let lines = fixture.lines();
    keys_once(&lines);
    nothing_missing(
        &lines,
        ALPHA,
        Source::GraphIncidents,
        &fixture.truth(ALPHA, Source::GraphIncidents).await,
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_alerts_fall_back_when_expansion_fails() {
    let fixture = Fixture::start(
        [(40, 0), (0, 0), (0, 0)],
        &[
            ("DP_SOURCES", "graph-incidents"),
            ("DP_GRAPH_EXPAND_ALERTS", "true"),
        ],
    )
    .await;
    fixture
        .handle
        .set_data_modes(
            ALPHA,
            serde_json::from_value(json!({"expand_alerts_fails_above": 10})).unwrap(),
        )
        .unwrap();
    let outcomes = fixture.run().await;
    assert!(
        outcomes.iter().all(|o| o.result == PairResult::Complete),
        "{outcomes:?}"
    );
    let lines = fixture.lines();
    let alpha: Vec<&SinkLine> = lines
        .iter()
        .filter(|l| l.tenant_id.as_str() == ALPHA)
        .collect();
    assert_eq!(alpha.len(), 40);
    for line in alpha {
        let record: serde_json::Value = serde_json::from_str(line.record.get()).unwrap();
        assert!(
            record["alerts"].is_array(),
            "alerts attached to {}",
            line.id
        );
    }
    fixture.stop().await;
}

/// Issue 18 item 5: after `$expand=alerts` fails, a 2,000-incident tenant's alerts are read by
/// time in pages, not per incident, and every incident gets exactly the alerts Graph lists for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_fallback_reads_pages_not_incidents() {
    alerts_fallback_on_2000_incidents(&[], json!({})).await;
}

/// The same where `alerts_v2` leaves out its links and pages are small: full pages are split by
/// time, never taken as the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_fallback_splits_full_pages_without_links() {
    alerts_fallback_on_2000_incidents(
        &[("DP_PAGE_SIZE_GRAPH_ALERTS", "100")],
        json!({"omit_alerts_v2_next_link": true}),
    )
    .await;
}

async fn alerts_fallback_on_2000_incidents(env: &[(&str, &str)], modes: serde_json::Value) {
    const INCIDENTS: usize = 2_000;
    let mut settings = vec![
        ("DP_SOURCES", "graph-incidents"),
        ("DP_GRAPH_EXPAND_ALERTS", "true"),
    ];
    settings.extend_from_slice(env);
    let fixture = Fixture::start([(INCIDENTS as u32, 0), (0, 0), (0, 0)], &settings).await;
    let control = fixture.world.control();
    control.rate_limits_off().await.unwrap();
    let mut failing = modes.clone();
    failing["expand_alerts_fails_above"] = json!(10);
    fixture
        .handle
        .set_data_modes(ALPHA, serde_json::from_value(failing).unwrap())
        .unwrap();
    let outcomes = fixture.run().await;
    assert!(
        outcomes.iter().all(|o| o.result == PairResult::Complete),
        "{outcomes:?}"
    );
    let calls = control.data_calls(ALPHA).await.unwrap();
    let token = control
        .app_token(
            ALPHA,
            resource_of(Source::GraphIncidents),
            CLIENT_ID,
            SECRET,
        )
        .await
        .unwrap();
    // The truth: what the expansion gives once it works again.
    fixture
        .handle
        .set_data_modes(ALPHA, serde_json::from_value(modes).unwrap())
        .unwrap();
    let truth = control
        .graph_expanded_alert_ids(ALPHA, &token)
        .await
        .unwrap();
    assert_eq!(truth.len(), INCIDENTS);
    let lines = fixture.lines();
    assert_eq!(lines.len(), INCIDENTS);
    let mut attached = 0;
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line.record.get()).unwrap();
        let alerts: std::collections::BTreeSet<String> = record["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("no alerts array on {}", line.id))
            .iter()
            .map(|alert| alert["id"].as_str().unwrap().to_owned())
            .collect();
        attached += alerts.len();
        assert_eq!(
            alerts, truth[&line.id],
            "the alerts of incident {}",
            line.id
        );
    }
    let alert_calls = calls.graph_alerts.requests;
    let incident_calls = calls.graph_incidents.requests;
    println!(
        "{INCIDENTS} incidents, {attached} alerts attached: {incident_calls} incident calls, {alert_calls} alerts_v2 calls"
    );
    assert!(attached >= INCIDENTS, "the scenario gives incidents alerts");
    assert!(
        alert_calls * 10 < INCIDENTS as u64,
        "alerts read in pages, not per incident: {alert_calls} calls"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_id_does_not_mark_the_fleet_revoked() {
    // Every tenant answers AADSTS700016 to an app it does not know, exactly as when its consent
    // was withdrawn.
    let wrong =
        json!({"client_id": "dddddddd-1111-4111-8111-111111111111", "client_secret": SECRET})
            .to_string();
    let fixture = Fixture::start(
        [(5, 0), (5, 0), (5, 0)],
        &[
            ("DP_SOURCES", "m365d-incidents"),
            ("DP_CREDENTIAL_JSON", wrong.as_str()),
        ],
    )
    .await;
    let outcomes = fixture.run().await;
    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        let PairResult::Failed { code, message } = &outcome.result else {
            panic!("{outcome:?}");
        };
        assert_eq!(*code, defender_partner::ErrorCode::NotConsented);
        assert!(message.contains("client_id"), "{message}");
    }
    for tenant in [ALPHA, BRAVO, CHARLIE] {
        let record = fixture
            .world
            .services
            .registry
            .get(&TenantId::parse(tenant).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, TenantStatus::Active, "{tenant}");
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_page_with_a_next_link_does_not_end_the_window() {
    let fixture = Fixture::start(
        [(230, 0), (0, 0), (0, 0)],
        &[("DP_SOURCES", "graph-incidents")],
    )
    .await;
    // Graph answers 7 records where 50 were asked, and links the rest.
    fixture
        .handle
        .patch_defender_settings(&DefenderSettingsPatch {
            graph_page_cut: Some(7),
            ..Default::default()
        })
        .unwrap();
    let outcomes = fixture.run().await;
    let alpha = outcomes
        .iter()
        .find(|o| o.tenant_id.as_str() == ALPHA)
        .unwrap();
    assert_eq!(alpha.result, PairResult::Complete, "{alpha:?}");
    assert!(alpha.pages >= 230 / 7, "{alpha:?}");
    let lines = fixture.lines();
    keys_once(&lines);
    // The truth is read whole, without the cut.
    fixture
        .handle
        .patch_defender_settings(&DefenderSettingsPatch {
            graph_page_cut: Some(0),
            ..Default::default()
        })
        .unwrap();
    let truth = fixture.truth(ALPHA, Source::GraphIncidents).await;
    assert_eq!(truth.len(), 230);
    nothing_missing(&lines, ALPHA, Source::GraphIncidents, &truth);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_leaves_pending_tenants_for_the_next_cycle() {
    let fixture = Fixture::start(
        [(5, 0), (5, 0), (0, 0)],
        &[("DP_SOURCES", "m365d-incidents")],
    )
    .await;
    let alpha = TenantId::parse(ALPHA).unwrap();
    fixture
        .world
        .services
        .registry
        .set_status(&alpha, TenantStatus::Pending, None)
        .await
        .unwrap();
    fixture.handle.clear_token_requests();
    // 30 s left: less than the minute kept for active tenants.
    let report = fixture
        .service
        .scheduled(Instant::now() + Duration::from_secs(30))
        .await
        .unwrap();
    let record = fixture
        .world
        .services
        .registry
        .get(&alpha)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TenantStatus::Pending, "not proven this run");
    assert!(
        fixture
            .handle
            .token_requests()
            .iter()
            .all(|request| request.tenant != ALPHA),
        "no proof was attempted for the pending tenant"
    );
    // The active tenants still ran.
    assert!(
        report
            .outcomes
            .iter()
            .any(|o| o.tenant_id.as_str() == BRAVO && o.result == PairResult::Complete),
        "{:?}",
        report.outcomes
    );
    // With time enough, the next cycle proves it.
    fixture.run().await;
    let record = fixture
        .world
        .services
        .registry
        .get(&alpha)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TenantStatus::Active);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_tenant_is_reverified_by_the_fetch_cycle() {
    // The retiring source, proven through its own API (the default consent proves Graph).
    let fixture = Fixture::start(
        [(5, 0), (0, 0), (0, 0)],
        &[
            ("DP_SOURCES", "m365d-incidents"),
            ("DP_CONSENT_APIS", "m365d"),
        ],
    )
    .await;
    let alpha = TenantId::parse(ALPHA).unwrap();
    fixture
        .world
        .services
        .registry
        .set_status(
            &alpha,
            TenantStatus::Pending,
            Some("not_consented: propagating".into()),
        )
        .await
        .unwrap();
    let outcomes = fixture.run().await;
    let record = fixture
        .world
        .services
        .registry
        .get(&alpha)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.status,
        TenantStatus::Active,
        "{:?}",
        record.status_reason
    );
    assert_eq!(record.roles, vec!["Incident.Read.All"]);
    let mine = outcomes
        .iter()
        .find(|outcome| outcome.tenant_id == alpha)
        .expect("fetched in the same run");
    assert_eq!(mine.new, 5);
    // A pending tenant whose consent is really missing stays pending, and is not fetched.
    let bravo = TenantId::parse(BRAVO).unwrap();
    fixture.handle.revoke_consent(BRAVO, CLIENT_ID).unwrap();
    fixture
        .world
        .services
        .registry
        .set_status(&bravo, TenantStatus::Pending, None)
        .await
        .unwrap();
    let outcomes = fixture.run().await;
    assert!(outcomes.iter().all(|outcome| outcome.tenant_id != bravo));
    let record = fixture
        .world
        .services
        .registry
        .get(&bravo)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TenantStatus::Pending);
    assert!(record.status_reason.unwrap().starts_with("not_consented"));
    // A pending claim whose ownership nobody proved (an older release's callback) is never
    // activated by the cycle, though Entra would give its token: that is the operator's call.
    let mut claim = fixture
        .world
        .services
        .registry
        .get(&alpha)
        .await
        .unwrap()
        .unwrap();
    claim.status = TenantStatus::Pending;
    claim.ownership = defender_partner::store::Ownership::Unverified;
    fixture
        .world
        .services
        .registry
        .replace(&claim)
        .await
        .unwrap();
    let outcomes = fixture.run().await;
    assert!(outcomes.iter().all(|outcome| outcome.tenant_id != alpha));
    let record = fixture
        .world
        .services
        .registry
        .get(&alpha)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, TenantStatus::Pending);
    assert_eq!(
        record.ownership,
        defender_partner::store::Ownership::Unverified
    );
    fixture.stop().await;
}

/// Two instances run the same pair at the same moment, many times: one owns the pair (a lease
/// in the store), the other skips it as `busy` without reading or writing, so no record goes
/// out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_of_one_pair_deliver_each_change_once() {
    let fixture = Fixture::start(
        [(150, 0), (0, 0), (0, 0)],
        &[
            ("DP_SOURCES", "m365d-incidents"),
            ("DP_PAGE_SIZE_M365D_INCIDENTS", "50"),
        ],
    )
    .await;
    let other = fixture.second_instance().await;
    let task = PairTask {
        tenant_id: TenantId::parse(ALPHA).unwrap(),
        source: Source::M365dIncidents,
    };
    let rounds = 6;
    let mut busy = 0;
    for round in 0..rounds {
        if round > 0 {
            // 60 touched records are stamped 1/300 s apart from now: let real time pass them.
            fixture.handle.touch_incidents(ALPHA, 60).unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        // Slow pages, so that the two runs overlap whatever the scheduling.
        fixture
            .handle
            .push_fault(delay(FaultMatch::Data, 150, 8).for_tenant(ALPHA))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mine, theirs) = tokio::join!(
            fixture.service.pairs(vec![task.clone()], deadline),
            other.pairs(vec![task.clone()], deadline),
        );
        fixture.handle.clear_faults();
        let results: Vec<&PairResult> = mine.iter().chain(&theirs).map(|o| &o.result).collect();
        busy += results.iter().filter(|r| ***r == PairResult::Busy).count();
        eprintln!("round {round}: {results:?}");
    }
    let lines = fixture.lines();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in &lines {
        *counts.entry(line.key.as_str()).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|count| count - 1).sum();
    eprintln!(
        "[measure] overlapping runs: {rounds} rounds, {} lines, {duplicates} delivered twice, {busy} busy",
        lines.len()
    );
    assert_eq!(duplicates, 0, "records delivered twice");
    assert_eq!(busy, rounds, "one run of each round skips the pair as busy");
    nothing_missing(
        &lines,
        ALPHA,
        Source::M365dIncidents,
        &fixture.truth(ALPHA, Source::M365dIncidents).await,
    );
    fixture.stop().await;
}

/// Tokens that live 60 s (less than the 300 s refresh-ahead setting) are reused for half their
/// life instead of being fetched again before every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_reused_for_half_their_life() {
    let fixture = Fixture::start(
        [(600, 0), (0, 0), (0, 0)],
        &[
            ("DP_SOURCES", "m365d-incidents"),
            ("DP_PAGE_SIZE_M365D_INCIDENTS", "25"),
        ],
    )
    .await;
    fixture.handle.set_token_lifetime(60).unwrap();
    fixture.handle.clear_token_requests();
    let started = Instant::now();
    let outcomes = fixture.run().await;
    let elapsed = started.elapsed();
    let alpha = outcomes
        .iter()
        .find(|o| o.tenant_id.as_str() == ALPHA)
        .unwrap();
    assert_eq!(alpha.result, PairResult::Complete, "{alpha:?}");
    let requests = fixture
        .handle
        .token_requests()
        .iter()
        .filter(|request| request.tenant == ALPHA)
        .count();
    eprintln!(
        "[measure] 60-s tokens: {} API calls, {requests} token requests in {:.1}s",
        alpha.api_calls,
        elapsed.as_secs_f64()
    );
    // One per half lifetime (30 s) at most, and the first.
    let allowed = 1 + (elapsed.as_secs() / 30) as usize;
    assert!(
        requests <= allowed,
        "{requests} token requests for {} API calls in {:.1}s (at most {allowed})",
        alpha.api_calls,
        elapsed.as_secs_f64()
    );
    fixture.stop().await;
}

/// Two scheduled runs started together (an overlapping schedule, an operator's invoke during a
/// run): the one that takes the fleet's run lease walks every tenant, the other does nothing and
/// says `busy`; once the walker is done, the next run walks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduled_runs_started_together_one_walks_one_is_busy() {
    let fixture = Fixture::start(
        [(40, 0), (3, 0), (0, 0)],
        &[("DP_SOURCES", "m365d-incidents")],
    )
    .await;
    let other = fixture.second_instance().await;
    // Slow pages, so that the walker still holds the lease when the other run asks for it.
    fixture
        .handle
        .push_fault(delay(FaultMatch::Data, 150, 6))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mine, theirs) = tokio::join!(
        fixture.service.scheduled(deadline),
        other.scheduled(deadline)
    );
    fixture.handle.clear_faults();
    let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
    let (walker, idle) = match (mine.busy, theirs.busy) {
        (false, true) => (mine, theirs),
        (true, false) => (theirs, mine),
        other => panic!("exactly one run must walk, one be busy: {other:?}"),
    };
    assert_eq!(walker.tenants, 3);
    assert_eq!(walker.outcomes.len(), 3);
    assert!(
        walker
            .outcomes
            .iter()
            .all(|outcome| outcome.result == PairResult::Complete),
        "{:?}",
        walker.outcomes
    );
    assert_eq!(
        (idle.tenants, idle.pairs, idle.outcomes.len()),
        (0, 0, 0),
        "the busy run walks nothing"
    );
    keys_once(&fixture.lines());
    let next = other.scheduled(deadline).await.unwrap();
    assert!(!next.busy, "the walker released the lease");
    fixture.stop().await;
}
