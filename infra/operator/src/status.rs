//! `dp-operator status`: the fleet's health at a glance, from the store the functions write
//! (checkpoints, the tenant registry) and the app credential. One row per tenant and source;
//! below it, what needs a person. The exit status is 2 when anything does (for a cron job or a
//! CI check), 0 when nothing does.
//!
//! [`assess`] is the whole judgement, a pure function of the records, the configuration and the
//! time; the rest reads its inputs and prints its answer.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::Args;
use defender_partner::config::{RETIREMENT_DATE, sources_from_lookup};
use defender_partner::defender::Source;
use defender_partner::entra::roles::RoleRequirement;
use defender_partner::hunting::runner::HUNTING_ROLE;
use defender_partner::runtime::Services;
use defender_partner::secrets::{
    AppCredential, CredentialEnd, CredentialError, CredentialKind, EXPIRY_WARNING_DAYS, days_left,
};
use defender_partner::store::{Checkpoint, RecentError, TenantRecord, TenantStatus};
use defender_partner::tenant_id::TenantId;
use defender_partner::writeback::TargetKind;
use serde::Serialize;

#[derive(Args)]
pub struct StatusArgs {
    /// One tenant's detail, with its recent errors.
    #[arg(long)]
    tenant: Option<String>,
    /// What the deployment uses the tenants for: read (always), write (= write-incidents and
    /// write-alerts), write-incidents, write-alerts, hunting (added when saved hunts exist).
    #[arg(long, value_delimiter = ',', default_value = "read")]
    needs: Vec<String>,
    /// A pair failing this many runs in a row needs a person.
    #[arg(long, default_value_t = 3)]
    max_failures: u32,
    /// A pair without a complete run for this long needs a person.
    #[arg(long, default_value_t = 180)]
    max_stale_minutes: i64,
    /// A tenant whose consent is still unproven (`pending`) after this long needs a person.
    #[arg(long, default_value_t = 24)]
    max_pending_hours: i64,
    /// A pair whose newest delivered update is older than this needs a person (off by default:
    /// a quiet tenant's lag grows by nature).
    #[arg(long)]
    max_lag_hours: Option<i64>,
    /// From this day on, a source on a retiring API needs a person (default: 90 days before
    /// Microsoft retires it).
    #[arg(long)]
    retiring_from: Option<NaiveDate>,
}

/// What the deployment needs the tenants to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Read,
    WriteIncidents,
    WriteAlerts,
    Hunting,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::Read,
        Capability::WriteIncidents,
        Capability::WriteAlerts,
        Capability::Hunting,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::WriteIncidents => "write-incidents",
            Capability::WriteAlerts => "write-alerts",
            Capability::Hunting => "hunting",
        }
    }

    /// `--needs` names; `write` is both write capabilities.
    fn parse_all(names: &[String]) -> anyhow::Result<Vec<Capability>> {
        let mut needs = vec![Capability::Read];
        for name in names {
            let named: &[Capability] = match name.trim() {
                "read" | "" => &[Capability::Read],
                "write" => &[Capability::WriteIncidents, Capability::WriteAlerts],
                "write-incidents" => &[Capability::WriteIncidents],
                "write-alerts" => &[Capability::WriteAlerts],
                "hunting" => &[Capability::Hunting],
                other => anyhow::bail!(
                    "--needs {other:?}: use read, write, write-incidents, write-alerts or hunting"
                ),
            };
            needs.extend_from_slice(named);
        }
        needs.sort();
        needs.dedup();
        Ok(needs)
    }

    /// Whether `roles` grant it; reading needs every configured source's roles.
    fn granted(self, roles: &[String], read: &[RoleRequirement]) -> bool {
        let role = |name: &str| roles.iter().any(|role| role.eq_ignore_ascii_case(name));
        match self {
            Capability::Read => read
                .iter()
                .all(|requirement| requirement.missing(roles).is_none()),
            Capability::WriteIncidents => role(TargetKind::Incident.write_role()),
            Capability::WriteAlerts => role(TargetKind::Alert.write_role()),
            Capability::Hunting => role(HUNTING_ROLE),
        }
    }
}

/// When something needs a person.
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    pub max_failures: u32,
    pub max_stale_minutes: i64,
    pub max_pending_hours: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lag_hours: Option<i64>,
    pub retiring_from: NaiveDate,
    pub credential_warning_days: i64,
}

impl Thresholds {
    fn from_args(args: &StatusArgs) -> Thresholds {
        Thresholds {
            max_failures: args.max_failures.max(1),
            max_stale_minutes: args.max_stale_minutes,
            max_pending_hours: args.max_pending_hours,
            max_lag_hours: args.max_lag_hours,
            retiring_from: args.retiring_from.unwrap_or_else(default_retiring_from),
            credential_warning_days: EXPIRY_WARNING_DAYS,
        }
    }
}

fn default_retiring_from() -> NaiveDate {
    NaiveDate::parse_from_str(RETIREMENT_DATE, "%Y-%m-%d").expect("the retirement date parses")
        - Duration::days(90)
}

/// The app credential as `status` sees it (never its material).
#[derive(Debug, Clone, Serialize)]
pub struct CredentialStatus {
    /// `client_secret`, `certificate`, `aws_federated`; absent when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub end: Option<CredentialEnd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CredentialStatus {
    pub fn read(credential: Result<&AppCredential, &CredentialError>) -> CredentialStatus {
        match credential {
            Ok(credential) => CredentialStatus {
                kind: Some(match credential.kind {
                    CredentialKind::ClientSecret(_) => "client_secret",
                    CredentialKind::Certificate(_) => "certificate",
                    CredentialKind::AwsFederated(_) => "aws_federated",
                }),
                end: Some(credential.end().clone()),
                days_left: None,
                error: None,
            },
            Err(error) => CredentialStatus {
                kind: None,
                end: None,
                days_left: None,
                error: Some(error.to_string()),
            },
        }
    }
}

/// How one pair stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairState {
    Ok,
    /// Failed its last run(s), fewer than `max_failures` in a row.
    Retrying,
    Failing,
    /// No complete run for longer than `max_stale_minutes`.
    Stale,
    Lagging,
    /// Configured, not run yet (a tenant added since the last schedule).
    NeverRun,
    /// Not fetched: the tenant is not active, or has not granted the source's roles.
    NotFetched,
}

impl PairState {
    fn as_str(self) -> &'static str {
        match self {
            PairState::Ok => "ok",
            PairState::Retrying => "retrying",
            PairState::Failing => "failing",
            PairState::Stale => "stale",
            PairState::Lagging => "lagging",
            PairState::NeverRun => "never_run",
            PairState::NotFetched => "not_fetched",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    pub source: Source,
    pub state: PairState,
    /// On an API Microsoft retires (`retires`).
    pub retiring: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retires: Option<&'static str>,
    /// The tenant granted this source's roles.
    pub read_granted: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub newest_delivered: Option<DateTime<Utc>>,
    /// Now − the newest update delivered.
    pub lag_seconds: Option<i64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub throttled_24h: u32,
    pub partial_24h: u32,
    /// `--tenant` only: the last failures, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_errors: Option<Vec<RecentError>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Access {
    /// `false`: the registry holds no roles for the tenant (nothing judged; `tenants verify`).
    pub roles_recorded: bool,
    pub granted: Vec<Capability>,
    /// Needed by the deployment (`--needs`) and not granted.
    pub missing: Vec<Capability>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantHealth {
    pub tenant_id: TenantId,
    pub display_name: String,
    pub customer_ref: Option<String>,
    pub status: TenantStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub roles: Vec<String>,
    pub access: Access,
    pub sources: Vec<SourceHealth>,
}

/// Why the exit status is not 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    TenantRevoked,
    TenantPending,
    PairFailing,
    PairStale,
    PairLagging,
    PermissionsMissing,
    RetiringSource,
    CredentialExpiring,
    CredentialEndUnreadable,
    CredentialUnreadable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: Rule,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub generated_at: DateTime<Utc>,
    /// Nothing needs a person (exit status 0).
    pub healthy: bool,
    pub needs_attention: Vec<Finding>,
    pub credential: CredentialStatus,
    /// `DP_SOURCES`.
    pub sources: Vec<Source>,
    pub needs: Vec<Capability>,
    pub thresholds: Thresholds,
    pub tenants: Vec<TenantHealth>,
}

/// What [`assess`] judges.
pub struct FleetInput<'a> {
    pub tenants: &'a [TenantRecord],
    pub checkpoints: &'a [Checkpoint],
    pub sources: &'a [Source],
    /// Each source's roles (`DP_REQUIRED_ROLES_*`).
    pub read_roles: &'a dyn Fn(Source) -> RoleRequirement,
    pub needs: &'a [Capability],
    pub credential: CredentialStatus,
    /// One tenant's detail (`--tenant`): only it, with its recent errors.
    pub detail_of: Option<&'a TenantId>,
}

/// The fleet's status at `now`: rows, and what needs a person.
pub fn assess(input: FleetInput<'_>, thresholds: Thresholds, now: DateTime<Utc>) -> FleetStatus {
    let mut findings = Vec::new();
    let mut credential = input.credential.clone();
    credential_findings(&mut credential, &thresholds, now, &mut findings);
    if now.date_naive() >= thresholds.retiring_from {
        for source in input.sources.iter().filter(|source| source.is_retiring()) {
            findings.push(Finding {
                rule: Rule::RetiringSource,
                tenant_id: None,
                source: Some(*source),
                detail: format!(
                    "{} is on an API Microsoft retires after {RETIREMENT_DATE}: switch DP_SOURCES to {} (dp-operator migration)",
                    source.as_str(),
                    source.successor().map_or("its Graph successor", Source::as_str)
                ),
            });
        }
    }
    let read: Vec<RoleRequirement> = input
        .sources
        .iter()
        .map(|source| (input.read_roles)(*source))
        .collect();
    // One look-up per pair: a fleet has thousands of tenants.
    let by_pair: HashMap<(&TenantId, &str), &Checkpoint> = input
        .checkpoints
        .iter()
        .map(|checkpoint| {
            (
                (&checkpoint.tenant_id, checkpoint.source.as_str()),
                checkpoint,
            )
        })
        .collect();
    let mut tenants = Vec::new();
    for record in input.tenants {
        if record.status == TenantStatus::Offboarded
            || input
                .detail_of
                .is_some_and(|wanted| *wanted != record.tenant_id)
        {
            continue;
        }
        let tenant = assess_tenant(
            &input,
            record,
            (&read, &by_pair),
            &thresholds,
            now,
            &mut findings,
        );
        tenants.push(tenant);
    }
    FleetStatus {
        generated_at: now,
        healthy: findings.is_empty(),
        needs_attention: findings,
        credential,
        sources: input.sources.to_vec(),
        needs: input.needs.to_vec(),
        thresholds,
        tenants,
    }
}

fn credential_findings(
    credential: &mut CredentialStatus,
    thresholds: &Thresholds,
    now: DateTime<Utc>,
    findings: &mut Vec<Finding>,
) {
    let finding = |rule, detail| Finding {
        rule,
        tenant_id: None,
        source: None,
        detail,
    };
    if let Some(error) = &credential.error {
        findings.push(finding(Rule::CredentialUnreadable, error.clone()));
    }
    match &credential.end {
        Some(CredentialEnd::At { at }) => {
            let left = days_left(*at, now);
            credential.days_left = Some(left);
            if left < thresholds.credential_warning_days {
                let when = if *at <= now {
                    format!("ended {}", at.format("%Y-%m-%d %H:%M UTC"))
                } else {
                    format!(
                        "ends {} ({left} days left)",
                        at.format("%Y-%m-%d %H:%M UTC")
                    )
                };
                findings.push(finding(
                    Rule::CredentialExpiring,
                    format!("the app credential {when}: add a new one to the Entra app, store it in the credential secret, then remove the old one"),
                ));
            }
        }
        Some(CredentialEnd::Unreadable { problem }) => {
            findings.push(finding(Rule::CredentialEndUnreadable, problem.clone()));
        }
        _ => {}
    }
}

/// Each configured source's read roles, and each pair's checkpoint.
type Known<'a> = (
    &'a [RoleRequirement],
    &'a HashMap<(&'a TenantId, &'a str), &'a Checkpoint>,
);

fn assess_tenant(
    input: &FleetInput<'_>,
    record: &TenantRecord,
    (read, by_pair): Known<'_>,
    thresholds: &Thresholds,
    now: DateTime<Utc>,
    findings: &mut Vec<Finding>,
) -> TenantHealth {
    let mut finding = |rule, source, detail| {
        findings.push(Finding {
            rule,
            tenant_id: Some(record.tenant_id.clone()),
            source,
            detail,
        })
    };
    let active = record.status == TenantStatus::Active;
    if record.status == TenantStatus::Revoked {
        finding(
            Rule::TenantRevoked,
            None,
            // Its reason (Entra's answer) is in the tenant's `status_reason`.
            format!(
                "{} revoked the app's access: ask its administrator to consent again (dp-operator consent-link --tenant), or offboard it",
                record.display_name
            ),
        );
    }
    if record.status == TenantStatus::Pending
        && now - record.updated_at > Duration::hours(thresholds.max_pending_hours)
    {
        // The fetch cycle proves a pending tenant's consent again on every run: one still pending
        // after a day will not be proven without its administrator.
        finding(
            Rule::TenantPending,
            None,
            format!(
                "{}'s consent has not been proven since {}: dp-operator tenants verify {} says why",
                record.display_name,
                record.updated_at.format("%Y-%m-%d %H:%M UTC"),
                record.tenant_id
            ),
        );
    }
    // A tenant with no recorded roles (registered by hand, or before roles were recorded) is
    // not judged, as the fetch does not judge it: `tenants verify` records them.
    let recorded = !record.roles.is_empty();
    let granted: Vec<Capability> = Capability::ALL
        .into_iter()
        .filter(|capability| recorded && capability.granted(&record.roles, read))
        .collect();
    let missing: Vec<Capability> = input
        .needs
        .iter()
        .copied()
        .filter(|capability| recorded && !granted.contains(capability))
        .collect();
    if active && !missing.is_empty() {
        let names: Vec<&str> = missing
            .iter()
            .map(|capability| capability.as_str())
            .collect();
        finding(
            Rule::PermissionsMissing,
            None,
            format!(
                "{} has not granted {}: its administrator must consent again (dp-operator consent-link --tenant)",
                record.display_name,
                names.join(", ")
            ),
        );
    }
    let detail = input.detail_of.is_some();
    let mut sources = Vec::new();
    for (source, requirement) in input.sources.iter().zip(read) {
        let checkpoint = by_pair.get(&(&record.tenant_id, source.as_str())).copied();
        let read_granted = !recorded || requirement.missing(&record.roles).is_none();
        let health = source_health(
            *source,
            checkpoint,
            active && read_granted,
            read_granted,
            thresholds,
            now,
            detail,
        );
        match health.state {
            PairState::Failing => finding(
                Rule::PairFailing,
                Some(*source),
                format!(
                    "{} failed run(s) in a row, last {}",
                    health.consecutive_failures,
                    health.last_error.as_deref().unwrap_or("unknown")
                ),
            ),
            PairState::Stale => finding(
                Rule::PairStale,
                Some(*source),
                match health.last_success {
                    Some(at) => {
                        format!("no complete run since {}", at.format("%Y-%m-%d %H:%M UTC"))
                    }
                    None => "no complete run yet".to_owned(),
                },
            ),
            PairState::Lagging => finding(
                Rule::PairLagging,
                Some(*source),
                format!(
                    "newest update delivered {} ago",
                    age(health.lag_seconds.unwrap_or_default())
                ),
            ),
            _ => {}
        }
        sources.push(health);
    }
    TenantHealth {
        tenant_id: record.tenant_id.clone(),
        display_name: record.display_name.clone(),
        customer_ref: record.customer_ref.clone(),
        status: record.status,
        status_reason: record.status_reason.clone(),
        roles: record.roles.clone(),
        access: Access {
            roles_recorded: recorded,
            granted,
            missing,
        },
        sources,
    }
}

fn source_health(
    source: Source,
    checkpoint: Option<&Checkpoint>,
    fetched: bool,
    read_granted: bool,
    thresholds: &Thresholds,
    now: DateTime<Utc>,
    detail: bool,
) -> SourceHealth {
    let answers = checkpoint
        .map(|checkpoint| checkpoint.answers_last_day(now))
        .unwrap_or_default();
    let lag_seconds = checkpoint
        .and_then(|checkpoint| checkpoint.newest_delivered)
        .map(|newest| (now - newest).num_seconds().max(0));
    let state = match checkpoint {
        _ if !fetched => PairState::NotFetched,
        None => PairState::NeverRun,
        Some(checkpoint) if checkpoint.consecutive_failures >= thresholds.max_failures => {
            PairState::Failing
        }
        Some(checkpoint) => {
            // A pair still on its first window (a backfill over several runs) has no complete
            // run to be late after; its failures count instead.
            if checkpoint
                .last_success
                .is_some_and(|at| now - at > Duration::minutes(thresholds.max_stale_minutes))
            {
                PairState::Stale
            } else if checkpoint.consecutive_failures > 0 {
                PairState::Retrying
            } else if thresholds
                .max_lag_hours
                .zip(lag_seconds)
                .is_some_and(|(hours, lag)| lag > hours * 3600)
            {
                PairState::Lagging
            } else {
                PairState::Ok
            }
        }
    };
    SourceHealth {
        source,
        state,
        retiring: source.is_retiring(),
        retires: source.is_retiring().then_some(RETIREMENT_DATE),
        read_granted,
        last_success: checkpoint.and_then(|checkpoint| checkpoint.last_success),
        newest_delivered: checkpoint.and_then(|checkpoint| checkpoint.newest_delivered),
        lag_seconds,
        consecutive_failures: checkpoint.map_or(0, |checkpoint| checkpoint.consecutive_failures),
        last_error: checkpoint.and_then(|checkpoint| checkpoint.last_error.clone()),
        last_error_at: checkpoint.and_then(|checkpoint| checkpoint.last_error_at),
        throttled_24h: answers.throttled,
        partial_24h: answers.partial,
        recent_errors: detail
            .then(|| checkpoint.map(|checkpoint| checkpoint.recent_errors.clone()))
            .map(Option::unwrap_or_default),
    }
}

/// `45s`, `12m`, `3h05m`, `2d04h`.
fn age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

pub async fn run(services: &Services, args: StatusArgs, json: bool) -> anyhow::Result<bool> {
    let sources = sources_from_lookup(|name| std::env::var(name).ok())?;
    let mut needs = Capability::parse_all(&args.needs)?;
    if !services.hunts.saved_hunts().await?.is_empty() && !needs.contains(&Capability::Hunting) {
        // Saved hunts run on the schedule in every tenant.
        needs.push(Capability::Hunting);
    }
    let detail_of = args.tenant.as_deref().map(TenantId::parse).transpose()?;
    let tenants = services.registry.list().await?;
    if let Some(wanted) = &detail_of
        && !tenants.iter().any(|record| record.tenant_id == *wanted)
    {
        anyhow::bail!("tenant {wanted} is not registered");
    }
    let checkpoints = services.checkpoints.checkpoints().await?;
    let credential = services.credentials.current().await;
    let settings = &services.settings;
    let status = assess(
        FleetInput {
            tenants: &tenants,
            checkpoints: &checkpoints,
            sources: &sources,
            read_roles: &|source| settings.source_roles(source),
            needs: &needs,
            credential: CredentialStatus::read(credential.as_deref()),
            detail_of: detail_of.as_ref(),
        },
        Thresholds::from_args(&args),
        Utc::now(),
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(status.healthy)
}

/// The text form: the credential, one row per tenant and source, then what needs a person.
pub fn render(status: &FleetStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let now = status.generated_at;
    let _ = writeln!(
        out,
        "credential: {}",
        describe_credential(&status.credential)
    );
    let needs: Vec<&str> = status.needs.iter().map(|need| need.as_str()).collect();
    let _ = writeln!(out, "needs:      {}", needs.join(", "));
    let _ = writeln!(out);
    if status.tenants.is_empty() {
        let _ = writeln!(out, "no tenants registered");
    } else {
        let _ = writeln!(
            out,
            "{:<36}  {:<16}  {:<10}  {:<17}  {:<11}  {:<12}  {:>7}  {:>5}  {:<34}  {:>7}  {:>7}  access",
            "tenant",
            "name",
            "status",
            "source",
            "state",
            "last success",
            "lag",
            "fails",
            "last error",
            "429/24h",
            "206/24h"
        );
        for tenant in &status.tenants {
            for row in &tenant.sources {
                let ago = |at: Option<DateTime<Utc>>| {
                    at.map_or("-".to_owned(), |at| {
                        format!("{} ago", age((now - at).num_seconds()))
                    })
                };
                let last_error = match (&row.last_error, row.last_error_at) {
                    (Some(code), at) => format!("{code} ({})", ago(at)),
                    (None, Some(at)) => format!("- (last {})", ago(Some(at))),
                    (None, None) => "-".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "{:<36}  {:<16}  {:<10}  {:<17}  {:<11}  {:<12}  {:>7}  {:>5}  {:<34}  {:>7}  {:>7}  {}",
                    tenant.tenant_id.as_str(),
                    clip(&tenant.display_name, 16),
                    tenant.status.as_str(),
                    format!(
                        "{}{}",
                        row.source.as_str(),
                        if row.retiring { "*" } else { "" }
                    ),
                    row.state.as_str(),
                    ago(row.last_success),
                    row.lag_seconds.map_or("-".to_owned(), age),
                    row.consecutive_failures,
                    clip(&last_error, 34),
                    row.throttled_24h,
                    row.partial_24h,
                    describe_access(&tenant.access)
                );
            }
        }
        if status
            .tenants
            .iter()
            .flat_map(|tenant| &tenant.sources)
            .any(|row| row.retiring)
        {
            let _ = writeln!(
                out,
                "* retiring: Microsoft stops answering this API after {RETIREMENT_DATE} (dp-operator migration)"
            );
        }
    }
    for tenant in &status.tenants {
        for row in &tenant.sources {
            let Some(errors) = row
                .recent_errors
                .as_ref()
                .filter(|errors| !errors.is_empty())
            else {
                continue;
            };
            let _ = writeln!(
                out,
                "\nrecent errors, {} {}:",
                tenant.tenant_id,
                row.source.as_str()
            );
            for error in errors {
                let _ = writeln!(
                    out,
                    "  {}  {:<24}  {}",
                    error.at.format("%Y-%m-%d %H:%M:%S"),
                    error.code,
                    printable(&error.message)
                );
            }
        }
        if status.tenants.len() == 1 {
            let _ = writeln!(
                out,
                "\nroles granted: {}",
                printable(&tenant.roles.join(", "))
            );
        }
    }
    let _ = writeln!(out);
    if status.healthy {
        let _ = writeln!(out, "nothing needs attention");
    } else {
        let _ = writeln!(out, "needs attention ({}):", status.needs_attention.len());
        for finding in &status.needs_attention {
            let subject = [
                finding
                    .tenant_id
                    .as_ref()
                    .map(|tenant| tenant.as_str().to_owned()),
                finding.source.map(|source| source.as_str().to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            let rule = serde_json::to_value(finding.rule)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default();
            if subject.is_empty() {
                let _ = writeln!(out, "  {rule}: {}", printable(&finding.detail));
            } else {
                let _ = writeln!(out, "  {rule} {subject}: {}", printable(&finding.detail));
            }
        }
    }
    out
}

fn describe_credential(credential: &CredentialStatus) -> String {
    let kind = credential.kind.unwrap_or("unreadable");
    match (&credential.end, credential.days_left, &credential.error) {
        (_, _, Some(error)) => format!("unreadable: {error}"),
        (Some(CredentialEnd::At { at }), Some(left), _) => format!(
            "{kind}, ends {} ({left} days left)",
            at.format("%Y-%m-%d %H:%M UTC")
        ),
        (Some(CredentialEnd::Never), _, _) => format!("{kind}, nothing to expire"),
        (Some(CredentialEnd::Unreadable { problem }), _, _) => {
            format!("{kind}, end date unreadable: {problem}")
        }
        _ => format!(
            "{kind}, end date unknown (add expires_at to the credential JSON to be warned {EXPIRY_WARNING_DAYS} days ahead)"
        ),
    }
}

fn describe_access(access: &Access) -> String {
    let names = |capabilities: &[Capability]| {
        capabilities
            .iter()
            .map(|capability| capability.as_str())
            .collect::<Vec<_>>()
            .join("+")
    };
    let granted = if !access.roles_recorded {
        "unrecorded".to_owned()
    } else if access.granted.is_empty() {
        "-".to_owned()
    } else {
        names(&access.granted)
    };
    if access.missing.is_empty() {
        granted
    } else {
        format!("{granted}; MISSING {}", names(&access.missing))
    }
}

/// `text` without control characters: a tenant's display name is the customer's to choose, and
/// the terminal must not take it for escape sequences.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|character| !character.is_control())
        .collect()
}

/// [`printable`] `text` in at most `width` characters.
fn clip(text: &str, width: usize) -> String {
    let text = printable(text);
    if text.chars().count() <= width {
        text
    } else {
        let mut clipped: String = text.chars().take(width - 1).collect();
        clipped.push('…');
        clipped
    }
}

#[cfg(test)]
mod tests {
    use defender_partner::store::AnswerCounts;

    use super::*;

    const GOOD: &str = "11111111-1111-4111-8111-111111111111";
    const GONE: &str = "22222222-2222-4222-8222-222222222222";
    const SHORT: &str = "33333333-3333-4333-8333-333333333333";
    const STUCK: &str = "55555555-5555-4555-8555-555555555555";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn id(text: &str) -> TenantId {
        TenantId::parse(text).unwrap()
    }

    fn tenant(tenant_id: &str, status: TenantStatus, roles: &[&str]) -> TenantRecord {
        let mut record = TenantRecord::new(id(tenant_id), format!("T-{}", &tenant_id[..4]), status);
        record.roles = roles.iter().map(|role| role.to_string()).collect();
        record
    }

    fn tenants() -> Vec<TenantRecord> {
        let read = ["SecurityIncident.Read.All", "SecurityAlert.Read.All"];
        let mut stuck = tenant(STUCK, TenantStatus::Pending, &[]);
        stuck.updated_at = now() - Duration::hours(25);
        let mut fresh = tenant(
            "66666666-6666-4666-8666-666666666666",
            TenantStatus::Pending,
            &[],
        );
        fresh.updated_at = now() - Duration::hours(23);
        vec![
            tenant(GOOD, TenantStatus::Active, &read),
            tenant(GONE, TenantStatus::Revoked, &read),
            tenant(SHORT, TenantStatus::Active, &["SecurityIncident.Read.All"]),
            tenant(
                "44444444-4444-4444-8444-444444444444",
                TenantStatus::Offboarded,
                &[],
            ),
            stuck,
            fresh,
        ]
    }

    fn healthy_checkpoint(tenant_id: &str, source: Source) -> Checkpoint {
        let mut checkpoint = Checkpoint::new(id(tenant_id), source.as_str());
        checkpoint.last_success = Some(now() - Duration::minutes(5));
        checkpoint.newest_delivered = Some(now() - Duration::hours(2));
        checkpoint
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            max_failures: 3,
            max_stale_minutes: 180,
            max_pending_hours: 24,
            max_lag_hours: None,
            retiring_from: default_retiring_from(),
            credential_warning_days: EXPIRY_WARNING_DAYS,
        }
    }

    fn credential_ending_in(days: i64) -> CredentialStatus {
        CredentialStatus {
            kind: Some("client_secret"),
            end: Some(CredentialEnd::At {
                at: now() + Duration::days(days),
            }),
            days_left: None,
            error: None,
        }
    }

    const GRAPH: [Source; 2] = [Source::GraphIncidents, Source::GraphAlerts];

    fn run(
        tenants: &[TenantRecord],
        checkpoints: &[Checkpoint],
        sources: &[Source],
        needs: &[Capability],
        credential: CredentialStatus,
        detail_of: Option<&TenantId>,
        thresholds: Thresholds,
    ) -> FleetStatus {
        assess(
            FleetInput {
                tenants,
                checkpoints,
                sources,
                read_roles: &RoleRequirement::default_for_source,
                needs,
                credential,
                detail_of,
            },
            thresholds,
            now(),
        )
    }

    fn rules(status: &FleetStatus) -> Vec<(Rule, Option<String>, Option<Source>)> {
        status
            .needs_attention
            .iter()
            .map(|finding| {
                (
                    finding.rule,
                    finding
                        .tenant_id
                        .as_ref()
                        .map(|tenant| tenant.as_str().to_owned()),
                    finding.source,
                )
            })
            .collect()
    }

    #[test]
    fn a_healthy_fleet_needs_nobody() {
        let tenants = [tenants()[0].clone()];
        let mut incidents = healthy_checkpoint(GOOD, Source::GraphIncidents);
        incidents.count_answers(
            AnswerCounts {
                throttled: 4,
                partial: 1,
            },
            now() - Duration::hours(3),
        );
        let checkpoints = [incidents, healthy_checkpoint(GOOD, Source::GraphAlerts)];
        let status = run(
            &tenants,
            &checkpoints,
            &GRAPH,
            &[Capability::Read],
            credential_ending_in(31),
            None,
            thresholds(),
        );
        assert!(status.healthy, "{:?}", status.needs_attention);
        assert_eq!(status.credential.days_left, Some(31));
        let row = &status.tenants[0].sources[0];
        assert_eq!(row.state, PairState::Ok);
        assert_eq!(row.lag_seconds, Some(7200));
        assert_eq!(
            (row.throttled_24h, row.partial_24h),
            (4, 1),
            "throttles alone are no fault"
        );
        assert_eq!(row.recent_errors, None, "only in a tenant's detail");
        assert_eq!(status.tenants[0].access.granted, vec![Capability::Read]);
        // No roles recorded: fetched, and nothing judged missing (as the fetch does).
        let unrecorded = [tenant(GOOD, TenantStatus::Active, &[])];
        let status = run(
            &unrecorded,
            &checkpoints,
            &GRAPH,
            &[Capability::Read, Capability::Hunting],
            credential_ending_in(31),
            None,
            thresholds(),
        );
        assert!(status.healthy, "{:?}", status.needs_attention);
        assert!(!status.tenants[0].access.roles_recorded);
        assert!(status.tenants[0].sources[0].read_granted);
        assert!(render(&status).contains("unrecorded"));
    }

    #[test]
    fn every_rule_that_needs_a_person() {
        let mut failing = healthy_checkpoint(GOOD, Source::GraphIncidents);
        for minute in 0..3 {
            failing.record_error(
                "microsoft_unavailable",
                "503",
                now() - Duration::minutes(minute),
            );
        }
        let mut stale = healthy_checkpoint(GOOD, Source::GraphAlerts);
        stale.last_success = Some(now() - Duration::hours(4));
        // Retrying below the threshold, and a backfill never complete: nobody needed yet.
        let mut retrying = healthy_checkpoint(SHORT, Source::GraphIncidents);
        retrying.record_error("throttled", "429", now());
        let status = run(
            &tenants(),
            &[failing, stale, retrying],
            &[
                Source::GraphIncidents,
                Source::GraphAlerts,
                Source::MdeAlerts,
            ],
            &[Capability::Read, Capability::WriteIncidents],
            credential_ending_in(29),
            None,
            thresholds(),
        );
        assert!(!status.healthy);
        assert_eq!(
            rules(&status),
            vec![
                (Rule::CredentialExpiring, None, None),
                (Rule::RetiringSource, None, Some(Source::MdeAlerts)),
                (Rule::PermissionsMissing, Some(GOOD.into()), None),
                (
                    Rule::PairFailing,
                    Some(GOOD.into()),
                    Some(Source::GraphIncidents)
                ),
                (
                    Rule::PairStale,
                    Some(GOOD.into()),
                    Some(Source::GraphAlerts)
                ),
                (Rule::TenantRevoked, Some(GONE.into()), None),
                (Rule::PermissionsMissing, Some(SHORT.into()), None),
                (Rule::TenantPending, Some(STUCK.into()), None),
            ]
        );
        assert_eq!(status.tenants.len(), 5, "offboarded tenants are left out");
        let short = &status.tenants[2];
        assert_eq!(short.sources[0].state, PairState::Retrying);
        assert_eq!(short.sources[1].state, PairState::NotFetched);
        assert!(!short.sources[1].read_granted);
        assert_eq!(
            short.access.missing,
            vec![Capability::Read, Capability::WriteIncidents]
        );
        let gone = &status.tenants[1];
        assert!(
            gone.sources
                .iter()
                .all(|row| row.state == PairState::NotFetched)
        );
        assert!(status.needs_attention[0].detail.contains("29 days left"));
        // The retiring source needs its own API's roles, which a Graph consent does not grant.
        let mde = &status.tenants[0].sources[2];
        assert!(mde.retiring && !mde.read_granted);
        assert_eq!(mde.state, PairState::NotFetched);
    }

    #[test]
    fn lag_retiring_sources_and_the_credential_follow_their_thresholds() {
        let tenants = [tenant(GOOD, TenantStatus::Active, &["Incident.Read.All"])];
        let checkpoints = [healthy_checkpoint(GOOD, Source::M365dIncidents)];
        let sources = [Source::M365dIncidents];
        let judge = |credential, thresholds| {
            rules(&run(
                &tenants,
                &checkpoints,
                &sources,
                &[Capability::Read],
                credential,
                None,
                thresholds,
            ))
        };
        let lenient = Thresholds {
            retiring_from: NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(),
            ..thresholds()
        };
        assert!(judge(credential_ending_in(30), lenient.clone()).is_empty());
        let never = CredentialStatus {
            kind: Some("aws_federated"),
            end: Some(CredentialEnd::Never),
            days_left: None,
            error: None,
        };
        assert!(judge(never, lenient.clone()).is_empty());
        assert_eq!(
            judge(
                credential_ending_in(30),
                Thresholds {
                    max_lag_hours: Some(1),
                    ..lenient.clone()
                }
            ),
            vec![(
                Rule::PairLagging,
                Some(GOOD.into()),
                Some(Source::M365dIncidents)
            )]
        );
        assert_eq!(
            judge(credential_ending_in(-2), thresholds()),
            vec![
                (Rule::CredentialExpiring, None, None),
                (Rule::RetiringSource, None, Some(Source::M365dIncidents)),
            ]
        );
        let unreadable = CredentialStatus {
            kind: Some("client_secret"),
            end: Some(CredentialEnd::Unreadable {
                problem: "bad date".into(),
            }),
            days_left: None,
            error: None,
        };
        assert_eq!(
            judge(unreadable, lenient.clone()),
            vec![(Rule::CredentialEndUnreadable, None, None)]
        );
        let missing =
            CredentialStatus::read(Err(&CredentialError::Unavailable("no such secret".into())));
        assert_eq!(
            judge(missing, lenient),
            vec![(Rule::CredentialUnreadable, None, None)]
        );
    }

    #[test]
    fn one_tenants_detail_has_its_recent_errors_and_stable_json() {
        let mut failing = healthy_checkpoint(SHORT, Source::GraphIncidents);
        failing.record_error("microsoft_unavailable", "Microsoft answered 503", now());
        let others = healthy_checkpoint(GOOD, Source::GraphIncidents);
        let wanted = id(SHORT);
        let status = run(
            &tenants(),
            &[others, failing],
            &[Source::GraphIncidents],
            &[Capability::Read],
            credential_ending_in(90),
            Some(&wanted),
            thresholds(),
        );
        assert_eq!(status.tenants.len(), 1);
        let json = serde_json::to_value(&status).unwrap();
        let row = &json["tenants"][0]["sources"][0];
        for field in [
            "source",
            "state",
            "retiring",
            "read_granted",
            "last_success",
            "newest_delivered",
            "lag_seconds",
            "consecutive_failures",
            "last_error",
            "last_error_at",
            "throttled_24h",
            "partial_24h",
        ] {
            assert!(row.get(field).is_some(), "{field} missing from {row}");
        }
        assert_eq!(row["state"], "retrying");
        assert_eq!(row["recent_errors"][0]["code"], "microsoft_unavailable");
        assert_eq!(json["healthy"], true);
        assert_eq!(json["credential"]["end"], "at");
        assert_eq!(json["credential"]["days_left"], 90);
        assert_eq!(json["tenants"][0]["access"]["granted"][0], "read");
        let text = render(&status);
        assert!(text.contains("recent errors, 33333333"), "{text}");
        assert!(text.contains("Microsoft answered 503"), "{text}");
        assert!(text.contains("nothing needs attention"), "{text}");
    }

    #[test]
    fn the_text_names_what_needs_a_person() {
        let status = run(
            &tenants(),
            &[],
            &[Source::M365dIncidents],
            &[Capability::Read],
            credential_ending_in(3),
            None,
            thresholds(),
        );
        let text = render(&status);
        for expected in [
            "credential: client_secret, ends 2026-12-10 12:00 UTC (3 days left)",
            "m365d-incidents*",
            "* retiring: Microsoft stops answering this API after 2027-02-01",
            "needs attention (6):",
            "  credential_expiring: the app credential ends 2026-12-10",
            "  tenant_revoked 22222222-2222-4222-8222-222222222222: T-2222 revoked",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn needs_are_parsed_and_ages_are_short() {
        let names = |list: &[&str]| {
            Capability::parse_all(&list.iter().map(|name| name.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            names(&["write", "hunting"]).unwrap(),
            vec![
                Capability::Read,
                Capability::WriteIncidents,
                Capability::WriteAlerts,
                Capability::Hunting
            ]
        );
        assert_eq!(names(&[]).unwrap(), vec![Capability::Read]);
        assert!(names(&["admin"]).is_err());
        assert_eq!(age(45), "45s");
        assert_eq!(age(720), "12m");
        assert_eq!(age(3 * 3600 + 300), "3h05m");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2d04h");
        assert_eq!(clip("Contoso\u{1b}[2J Ltd", 16), "Contoso[2J Ltd");
        assert_eq!(clip("A very long customer name", 8), "A very …");
    }
}
