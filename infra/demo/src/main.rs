//! The main job on embedded defaults: no AWS or Azure account. Starts the Entra emulator on a
//! loopback port, registers sample customer tenants in the embedded SQLite registry, mints a
//! token for each API through the same service `mint-token` runs, and prints what happened.
//! Tokens are shown only with `--show-tokens`.
//!
//! Graph first: the ingestion runs on the Graph security API (`graph-incidents`, `graph-alerts`),
//! the only one Microsoft answers after 2027-02-01 (MC1220762), and the onboarding consent asks
//! for Graph. The retiring APIs (M365 Defender, Defender for Endpoint) are still shown, marked.
//!
//! `--credential aws_federated` runs it all with the secretless credential: the app's credential
//! is `{"client_id", "credential": "aws_federated"}`, every Entra token request sends an AWS web
//! identity token (from the emulator's STS, as a Lambda gets one from AWS STS) as the client
//! assertion, and the demo ends with how many STS calls that took.

use anyhow::Context;
use defender_emulator::{browser, demo};
use defender_partner::CallerError;
use defender_partner::api::DefenderApi;
use defender_partner::config::fetch::{
    DEFAULT_SOURCES, ENV_QUEUE_URL, ENV_SOURCES, RETIREMENT_DATE,
};
use defender_partner::config::{
    ENV_CONSENT_APIS, ENV_CONSENT_REDIRECT_URI, ENV_CREDENTIAL_FILE, ENV_CREDENTIAL_SECRET_ID,
    ENV_REQUIRED_ROLES_PREFIX, ENV_SIGNIN_KMS_KEY_ID, ENV_SIGNIN_REDIRECT_URI, ENV_SQLITE_PATH,
    ENV_STATE_KEY_FILE, ENV_TABLE_NAME,
};
use defender_partner::consent::{CallbackAnswer, ConsentService};
use defender_partner::fetch::{FetchService, PairResult};
use defender_partner::minting::{MintRequest, TokenService};
use defender_partner::runtime::Services;
use defender_partner::secrets::AWS_FEDERATED;
use defender_partner::signin::{SignInService, StoredSignIns};
use defender_partner::sink::{ENV_EVENT_BUS, ENV_SINK_BUCKET, ENV_SINK_DIR};
use defender_partner::store::{TenantRecord, TenantStatus};
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::{World, app_credential};
use secrecy::ExposeSecret;

/// Where the demo keeps its files; kept after the run.
const DEMO_FOLDER: &str = ".local";
const DEMO_REGISTRY: &str = ".local/demo.sqlite";
const DEMO_SINK: &str = ".local/demo-sink";
const DEMO_STATE_KEY: &str = ".local/demo-state-key";
/// Registered on the demo app in the emulator's scenario (loopback: any port).
const DEMO_REDIRECT_URI: &str = "http://127.0.0.1/consent/callback";
const DEMO_SIGNIN_REDIRECT_URI: &str = "http://127.0.0.1/signin/callback";

struct SampleTenant {
    id: &'static str,
    name: &'static str,
    status: TenantStatus,
    note: &'static str,
    /// The roles its consent granted, as a consent proof records them.
    roles: &'static [&'static str],
}

impl SampleTenant {
    /// The registry record of a tenant its consent proved (or that is still onboarding).
    fn record(&self) -> TenantRecord {
        let mut record = TenantRecord::new(
            TenantId::parse(self.id).expect("the sample ids are GUIDs"),
            self.name,
            self.status,
        );
        record.customer_ref = Some(format!("DEMO-{}", self.name.to_uppercase()));
        record.roles = self.roles.iter().map(|role| role.to_string()).collect();
        record
    }
}

const SAMPLE_TENANTS: [SampleTenant; 4] = [
    SampleTenant {
        id: demo::CONTOSO_TENANT_ID,
        name: "Contoso",
        status: TenantStatus::Active,
        note: "consented to Graph (incidents and alerts) and the two retiring APIs",
        roles: &[
            "SecurityIncident.Read.All",
            "SecurityAlert.Read.All",
            "Incident.Read.All",
            "Alert.Read.All",
        ],
    },
    SampleTenant {
        id: demo::FABRIKAM_TENANT_ID,
        name: "Fabrikam",
        status: TenantStatus::Active,
        note: "consented to Microsoft 365 Defender only (retiring): needs a Graph consent",
        roles: &["Incident.Read.All"],
    },
    SampleTenant {
        id: demo::NORTHWIND_TENANT_ID,
        name: "Northwind",
        status: TenantStatus::Pending,
        note: "onboarding not finished",
        roles: &[],
    },
    SampleTenant {
        id: demo::WOODGROVE_TENANT_ID,
        name: "Woodgrove",
        status: TenantStatus::Pending,
        note: "onboarded below through admin consent to Graph",
        roles: &[],
    },
];

const USAGE: &str =
    "usage: defender-partner-demo [--show-tokens] [--credential client_secret|aws_federated]";

/// How the demo app proves itself to Entra ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DemoCredential {
    /// The demo app's client secret (the default).
    ClientSecret,
    /// No secret: an AWS web identity token from the emulator's STS as client assertion.
    AwsFederated,
}

struct Options {
    show_tokens: bool,
    credential: DemoCredential,
}

/// `None` when the usage was asked for.
fn options(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        show_tokens: false,
        credential: DemoCredential::ClientSecret,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let credential = match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--show-tokens" => {
                options.show_tokens = true;
                continue;
            }
            "--credential" => args.next().unwrap_or_default(),
            other => match other.strip_prefix("--credential=") {
                Some(kind) => kind.to_owned(),
                None => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
            },
        };
        options.credential = match credential.as_str() {
            "client_secret" => DemoCredential::ClientSecret,
            AWS_FEDERATED => DemoCredential::AwsFederated,
            other => anyhow::bail!(
                "unknown credential {other:?}: use client_secret or {AWS_FEDERATED}\n{USAGE}"
            ),
        };
    }
    Ok(Some(options))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(Options {
        show_tokens,
        credential,
    }) = options(std::env::args().skip(1))?
    else {
        println!("{USAGE}");
        return Ok(());
    };
    defender_partner::telemetry::init_with_default(
        defender_partner::telemetry::LogFormat::Text,
        "warn",
    );

    let registry_path = std::env::var(ENV_SQLITE_PATH).unwrap_or_else(|_| DEMO_REGISTRY.to_owned());
    // The emulator generates its data anew each start: so does the demo's embedded store.
    for stale in [
        registry_path.clone(),
        format!("{registry_path}-wal"),
        format!("{registry_path}-shm"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let _ = std::fs::remove_dir_all(DEMO_SINK);
    let world = World::on(graph_first_scenario()).in_folder(DEMO_FOLDER);
    let world = match credential {
        DemoCredential::ClientSecret => {
            world.credential_json(app_credential(demo::CLIENT_ID, demo::CLIENT_SECRET))
        }
        DemoCredential::AwsFederated => world
            .credential_json(
                serde_json::json!({"client_id": demo::CLIENT_ID, "credential": AWS_FEDERATED})
                    .to_string(),
            )
            // The SDK finds STS at the emulator, as a Lambda's finds AWS STS in its region.
            .emulated_aws(),
    };
    // The demo's own settings win over the environment, so a shell configured for AWS still runs
    // the embedded defaults; everything else (cloud, deadlines, roles) is read as usual.
    let world = world
        .environment_fallback()
        .data_apis()
        .setting(ENV_SQLITE_PATH, registry_path.clone())
        .setting(ENV_SINK_DIR, DEMO_SINK)
        .setting(ENV_CONSENT_REDIRECT_URI, DEMO_REDIRECT_URI)
        .setting(ENV_SIGNIN_REDIRECT_URI, DEMO_SIGNIN_REDIRECT_URI)
        .setting(ENV_SIGNIN_KMS_KEY_ID, "")
        .setting(ENV_STATE_KEY_FILE, DEMO_STATE_KEY)
        .setting(ENV_CREDENTIAL_SECRET_ID, "")
        .setting(ENV_CREDENTIAL_FILE, "")
        .setting(ENV_TABLE_NAME, "")
        .setting(ENV_SINK_BUCKET, "")
        .setting(ENV_EVENT_BUS, "")
        .setting(ENV_QUEUE_URL, "")
        // Graph first: the sources and the consent every deployment now starts with.
        .setting(ENV_SOURCES, graph_sources())
        .setting(ENV_CONSENT_APIS, "graph")
        .setting(
            &format!(
                "{ENV_REQUIRED_ROLES_PREFIX}{}",
                DefenderApi::Graph.env_suffix()
            ),
            "",
        )
        .tenants(
            SAMPLE_TENANTS
                .iter()
                .filter(|sample| sample.name != "Woodgrove")
                .map(SampleTenant::record),
        )
        .start()
        .await
        .context("starting the emulator and the services")?;
    let (emulator, services) = (&world.emulator, &world.services);

    println!("defender-partner demo");
    println!("  Entra ID emulator  {}", emulator.base_url());
    if credential == DemoCredential::AwsFederated {
        println!(
            "  app credential     {AWS_FEDERATED}: no secret; AWS STS (emulated) at {}, issuer {}",
            emulator.base_url(),
            emulator.handle().aws_issuer()
        );
    }
    println!("  tenant registry    {registry_path} (SQLite)");
    println!(
        "  sources            {} (Microsoft Graph security API); retiring after {RETIREMENT_DATE}: m365d-incidents, mde-alerts",
        graph_sources().replace(',', ", ")
    );
    println!();
    println!("Registered customer tenants:");
    for sample in SAMPLE_TENANTS
        .iter()
        .filter(|sample| sample.name != "Woodgrove")
    {
        println!(
            "  {}  {:<10} {:<8} {}",
            sample.id, sample.name, sample.status, sample.note
        );
    }
    println!();
    onboard_woodgrove(services).await?;
    println!();
    println!("Tokens minted:");
    let service = TokenService::new(services);
    let mut minted = 0;
    let mut refused = 0;
    for sample in &SAMPLE_TENANTS {
        // Graph first; the retiring APIs still answer until the retirement date.
        for api in [DefenderApi::Graph, DefenderApi::M365d, DefenderApi::Mde] {
            let retiring = if api == DefenderApi::Graph {
                String::new()
            } else {
                format!(" (retiring {RETIREMENT_DATE})")
            };
            let request = MintRequest {
                tenant: Some(sample.id.to_owned()),
                api: Some(api.code().to_owned()),
                endpoint_version: None,
                user_token: None,
                user_oid: None,
            };
            match service.mint(&request).await {
                Ok(token) => {
                    minted += 1;
                    println!(
                        "  {:<10} {:<6} ok       roles [{}], expires {} (in {} s){retiring}",
                        sample.name,
                        api.code(),
                        token.roles.join(", "),
                        token.expires_on.format("%H:%M:%S UTC"),
                        token.expires_in
                    );
                    if show_tokens {
                        println!("      {}", token.access_token.expose_secret());
                    }
                }
                Err(error) => {
                    refused += 1;
                    println!(
                        "  {:<10} {:<6} refused  {}: {}{retiring}",
                        sample.name,
                        api.code(),
                        error.code(),
                        error
                    );
                }
            }
        }
    }
    println!();
    println!("{minted} tokens minted, {refused} requests refused with a typed error.");
    println!();
    act_as_signed_in_analyst(services).await?;
    println!();
    ingest(services, emulator, world.lookup()).await?;
    if credential == DemoCredential::AwsFederated {
        println!();
        print_federation_summary(emulator);
    }
    world.shutdown().await;
    Ok(())
}

/// `DP_SOURCES` of the demo: the Graph sources, the default of every deployment.
fn graph_sources() -> String {
    DEFAULT_SOURCES
        .iter()
        .map(|source| source.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The emulator's demo scenario as a Graph-first partner has it: the app registration lists
/// `SecurityAlert.Read.All` on Graph beside `SecurityIncident.Read.All` (so an admin consent to
/// Graph grants both), and Contoso granted it too.
fn graph_first_scenario() -> defender_emulator::Scenario {
    const GRAPH: &str = "https://graph.microsoft.com";
    const ALERT_ROLE: &str = "SecurityAlert.Read.All";
    let mut scenario = defender_emulator::Scenario::demo();
    for app in scenario
        .apps
        .iter_mut()
        .filter(|app| app.client_id == demo::CLIENT_ID)
    {
        for permission in app
            .required_permissions
            .iter_mut()
            .filter(|permission| permission.resource == GRAPH)
        {
            if !permission.roles.iter().any(|role| role == ALERT_ROLE) {
                permission.roles.push(ALERT_ROLE.to_owned());
            }
        }
    }
    for tenant in scenario
        .tenants
        .iter_mut()
        .filter(|tenant| tenant.id == demo::CONTOSO_TENANT_ID)
    {
        for grant in tenant
            .grants
            .iter_mut()
            .filter(|grant| grant.client_id == demo::CLIENT_ID && grant.resource == GRAPH)
        {
            if !grant.roles.iter().any(|role| role == ALERT_ROLE) {
                grant.roles.push(ALERT_ROLE.to_owned());
            }
        }
    }
    scenario
}

/// What the secretless run cost at AWS: STS calls against the Entra token requests they served.
fn print_federation_summary(emulator: &defender_emulator::RunningEmulator) {
    let handle = emulator.handle();
    let sts = handle.sts_calls();
    let requests = handle.token_requests();
    let with_assertion = requests
        .iter()
        .filter(|request| request.credential == Some(defender_emulator::CredentialKind::Assertion))
        .count();
    let with_secret = requests
        .iter()
        .filter(|request| request.credential == Some(defender_emulator::CredentialKind::Secret))
        .count();
    println!("Secretless credential ({AWS_FEDERATED}):");
    println!(
        "  AWS STS GetWebIdentityToken calls: {} ({} tokens issued)",
        sts.get_web_identity_token, sts.tokens_issued
    );
    println!(
        "  Entra token requests: {with_assertion} with the AWS token as client assertion, {with_secret} with a client secret"
    );
}

/// Delegated access: Contoso's analyst signs in once (authorization code + PKCE through the
/// emulated sign-in page), the refresh token is kept sealed, and `mint-token` mints a token that
/// acts as the analyst, used for one Defender call under the analyst's own rights.
async fn act_as_signed_in_analyst(services: &Services) -> anyhow::Result<()> {
    println!("Acting as a signed-in analyst (delegated access):");
    let signin = SignInService::build(services).await?;
    let link = signin
        .start(demo::CONTOSO_TENANT_ID, Some("m365d"), None)
        .await?;
    let location = browser::sign_in(&link.url, demo::CONTOSO_ANALYST_UPN).await?;
    let result = signin.callback(&browser::query_of(&location)?).await;
    println!(
        "  1. {} signed in to Contoso: {} (HTTP {}; the refresh token is kept sealed)",
        demo::CONTOSO_ANALYST_UPN,
        result.title,
        result.status
    );
    let service =
        TokenService::new(services).with_stored_sign_ins(StoredSignIns::build(services).await?);
    let token = service
        .mint(&MintRequest {
            tenant: Some(demo::CONTOSO_TENANT_ID.to_owned()),
            api: Some("m365d".to_owned()),
            endpoint_version: None,
            user_token: None,
            user_oid: Some(demo::CONTOSO_ANALYST_OID.to_owned()),
        })
        .await?;
    println!(
        "  2. mint-token for user_oid {}: acts as {}, scopes [{}], expires in {} s",
        demo::CONTOSO_ANALYST_OID,
        token.user_upn.as_deref().unwrap_or("?"),
        token.scopes.join(", "),
        token.expires_in
    );
    let incidents = services
        .http
        .get(
            services
                .settings
                .endpoints
                .api_base(DefenderApi::M365d)
                .join("api/incidents?$top=5")?,
        )
        .bearer_auth(token.access_token.expose_secret())
        .send()
        .await?;
    let status = incidents.status();
    let count = incidents
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|body| body["value"].as_array().map(Vec::len))
        .unwrap_or(0);
    println!(
        "  3. GET /api/incidents as the analyst: HTTP {}, {count} incidents (the analyst's own rights apply)",
        status.as_u16()
    );
    Ok(())
}

/// A customer onboards: the partner creates a consent link, the customer's administrator accepts
/// on Microsoft's (emulated) consent page, Microsoft redirects to our callback, which sends the
/// administrator through a sign-in that proves their tenant (the ID token's `tid`), then proves
/// the consent and records the tenant. A browser does the clicking in the end-to-end test; here
/// the forms are submitted as a browser would.
async fn onboard_woodgrove(services: &Services) -> anyhow::Result<()> {
    println!(
        "Onboarding a new customer (Woodgrove) through admin consent to {}:",
        services
            .settings
            .consent
            .apis
            .iter()
            .map(|api| match api {
                DefenderApi::Graph => "Microsoft Graph".to_owned(),
                other => format!("{} (retiring {RETIREMENT_DATE})", other.code()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let consent = ConsentService::build(services).await?;
    let link = consent.start("DEMO-WOODGROVE", None, None).await?;
    println!(
        "  1. consent link for the administrator (single use, until {}):",
        link.expires_at.format("%H:%M UTC")
    );
    println!("     {}", shorten(&link.url, 110));
    let location = browser::consent(&link.url, demo::WOODGROVE_TENANT_ID, "accept").await?;
    println!(
        "  2. the administrator accepts; Microsoft redirects to {}",
        location.split('?').next().unwrap_or_default()
    );
    let CallbackAnswer::Redirect(sign_in) = consent.callback(&browser::query_of(&location)?).await
    else {
        anyhow::bail!("the callback did not continue to the administrator's sign-in");
    };
    println!(
        "  3. the callback sends the administrator to sign in: {}",
        shorten(&sign_in, 90)
    );
    let location = browser::sign_in(&sign_in, demo::WOODGROVE_ADMIN_UPN).await?;
    let query = browser::query_of(&location)?;
    let first = consent.callback(&query).await;
    let page = first.page().context("the callback answered no page")?;
    println!(
        "  4. {} signs in; the ID token proves tenant {}: callback answers {} \"{}\"",
        demo::WOODGROVE_ADMIN_UPN,
        demo::WOODGROVE_TENANT_ID,
        page.status,
        page.title
    );
    let record = services
        .registry
        .get(&TenantId::parse(demo::WOODGROVE_TENANT_ID)?)
        .await?
        .context("the tenant was not recorded")?;
    println!(
        "     registry: {} {} ownership {} roles [{}]",
        record.tenant_id,
        record.status,
        record.ownership,
        record.roles.join(", ")
    );
    let replay = consent.callback(&query).await;
    let replay = replay.page().context("the replay answered no page")?;
    println!(
        "  5. the same callback replayed answers {} \"{}\"",
        replay.status, replay.title
    );
    Ok(())
}

fn shorten(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        text.to_owned()
    } else {
        format!("{}…", &text[..limit])
    }
}

/// Incidents flow in: a scheduled run over every active tenant and source into the embedded
/// sink, a second run that finds nothing new, then changes made in the tenant and a run that
/// delivers exactly those.
async fn ingest(
    services: &Services,
    emulator: &defender_emulator::RunningEmulator,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let fetch = FetchService::build(services, lookup).await?;
    println!(
        "Incidents and alerts flowing in from Microsoft Graph ({}) into the embedded sink ({DEMO_SINK}):",
        graph_sources().replace(',', ", ")
    );
    let deadline = || tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    let report = fetch.scheduled(deadline()).await?;
    print_outcomes("first run", &report.outcomes);
    for skipped in &report.not_planned {
        println!(
            "    {:<10} {:<16} not planned ({}): the consent does not grant its Graph roles; a new consent link is needed (dp-operator migration --issue-links)",
            tenant_name(skipped.tenant_id.as_str()),
            skipped.source.as_str(),
            skipped.code
        );
    }
    let again = fetch.scheduled(deadline()).await?;
    let repeats: usize = again.outcomes.iter().map(|outcome| outcome.delivered).sum();
    println!("  second run: {repeats} records delivered (nothing changed, nothing repeated)");
    emulator
        .handle()
        .touch_incidents(demo::CONTOSO_TENANT_ID, 5)?;
    // The emulator stamps changes a moment ahead of the clock.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let third = fetch.scheduled(deadline()).await?;
    let updated: usize = third.outcomes.iter().map(|outcome| outcome.updated).sum();
    println!(
        "  5 Contoso incidents change; third run: {updated} updates delivered (the Graph incidents and their alerts_v2 alerts)"
    );
    print_outcomes("third run", &third.outcomes);
    let files = count_files(std::path::Path::new(DEMO_SINK));
    println!(
        "  {files} NDJSON files under {DEMO_SINK}/incidents/tenant=<id>/source=<name>/date=<day>/"
    );
    Ok(())
}

fn print_outcomes(title: &str, outcomes: &[defender_partner::fetch::PairOutcome]) {
    println!("  {title}:");
    for outcome in outcomes {
        let name = tenant_name(outcome.tenant_id.as_str());
        let result = match &outcome.result {
            PairResult::Failed { code, .. } => format!("failed ({code})"),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|value| value["result"].as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        println!(
            "    {name:<10} {:<16} {result:<24} {:>4} new {:>3} updated, {} pages",
            outcome.source.as_str(),
            outcome.new,
            outcome.updated,
            outcome.pages
        );
    }
}

fn tenant_name(id: &str) -> &'static str {
    SAMPLE_TENANTS
        .iter()
        .find(|sample| sample.id == id)
        .map_or("?", |sample| sample.name)
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() { count_files(&path) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}
