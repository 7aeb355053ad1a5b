//! `dp-operator migration`: where each tenant stands on the way to the Graph security API before
//! Microsoft retires the Defender XDR and Defender for Endpoint APIs (2027-02-01, MC1220762).
//!
//! Per tenant: the sources the deployment runs (`DP_SOURCES`), which of them are retiring and by
//! when, whether the tenant's recorded roles grant the Graph permissions the migration needs
//! (the Graph sources configured, and the successors of the retiring ones), and the action:
//! `none`, `switch_sources` (the tenant is ready: switch `DP_SOURCES` to the Graph sources) or
//! `new_consent` (the customer's administrator must consent again; `--issue-links` creates the
//! links, bound to the tenant).

use defender_partner::api::DefenderApi;
use defender_partner::config::{RETIREMENT_DATE, sources_from_lookup};
use defender_partner::consent::{ConsentLink, ConsentService};
use defender_partner::defender::Source;
use defender_partner::runtime::Services;
use defender_partner::store::{TenantRecord, TenantStatus};
use serde::Serialize;

/// What a tenant needs before the retirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Runs on Graph only, and the tenant granted what it needs.
    None,
    /// Granted the Graph permissions: switch `DP_SOURCES` to the Graph sources.
    SwitchSources,
    /// Lacks Graph permissions: the customer's administrator must consent again.
    NewConsent,
}

impl Action {
    fn describe(self, switch_to: &str) -> String {
        match self {
            Action::None => "none".into(),
            Action::SwitchSources => {
                format!("switch DP_SOURCES (template: Sources) to {switch_to}")
            }
            Action::NewConsent => {
                "new consent link needed (dp-operator migration --issue-links)".into()
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RetiringSource {
    pub source: Source,
    pub successor: Option<Source>,
    /// The day after which Microsoft no longer answers it.
    pub retires: &'static str,
}

#[derive(Debug, Serialize)]
pub struct GraphPermission {
    /// The Graph source that needs it.
    pub source: Source,
    /// The roles, as `DP_REQUIRED_ROLES_*` writes them (`|` = or, `,` = and).
    pub roles: String,
    pub granted: bool,
}

#[derive(Debug, Serialize)]
pub struct TenantMigration {
    pub tenant_id: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<String>,
    pub status: TenantStatus,
    /// The sources the deployment runs for it.
    pub sources: Vec<Source>,
    pub retiring: Vec<RetiringSource>,
    pub graph_permissions: Vec<GraphPermission>,
    /// Every Graph permission the migration needs is granted.
    pub graph_permissions_granted: bool,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_link: Option<ConsentLink>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_link_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MigrationReport {
    pub retirement_date: &'static str,
    pub notice: &'static str,
    /// `DP_SOURCES` as the deployment runs it.
    pub sources: Vec<Source>,
    pub retiring_sources: Vec<Source>,
    /// The `DP_SOURCES` value after the switch.
    pub graph_sources: String,
    pub tenants: Vec<TenantMigration>,
    /// Tenants whose action is not `none`.
    pub needs_action: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The Graph sources that replace `sources`: Graph ones kept, retiring ones by their successor.
pub fn graph_targets(sources: &[Source]) -> Vec<Source> {
    let mut targets = Vec::new();
    for source in sources {
        let target = if source.is_retiring() {
            source.successor()
        } else {
            Some(*source)
        };
        if let Some(target) = target
            && !targets.contains(&target)
        {
            targets.push(target);
        }
    }
    targets
}

pub async fn run(services: &Services, issue_links: bool, json: bool) -> anyhow::Result<bool> {
    let sources = sources_from_lookup(|name| std::env::var(name).ok())?;
    let targets = graph_targets(&sources);
    let switch_to = targets
        .iter()
        .map(|source| source.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let settings = &services.settings;
    let mut warnings = Vec::new();
    if !settings.consent.apis.contains(&DefenderApi::Graph) {
        warnings.push(
            "DP_CONSENT_APIS does not name graph: consent links do not ask for the Graph permissions (set DP_CONSENT_APIS=graph, or use --link adminconsent)".to_owned(),
        );
    }
    let consent = if issue_links {
        Some(ConsentService::build(services).await?)
    } else {
        None
    };
    let mut tenants = Vec::new();
    for record in services.registry.list().await? {
        if record.status == TenantStatus::Offboarded {
            continue;
        }
        let mut migration = assess(&record, &sources, &targets, |source| {
            settings.source_roles(source)
        });
        if migration.action == Action::NewConsent
            && let Some(consent) = &consent
        {
            let customer = record
                .customer_ref
                .clone()
                .unwrap_or_else(|| record.tenant_id.to_string());
            match consent
                .start(&customer, None, Some(record.tenant_id.as_str()))
                .await
            {
                Ok(link) => migration.consent_link = Some(link),
                Err(error) => migration.consent_link_error = Some(error.to_string()),
            }
        }
        tenants.push(migration);
    }
    let needs_action = tenants
        .iter()
        .filter(|tenant| tenant.action != Action::None)
        .count();
    let report = MigrationReport {
        retirement_date: RETIREMENT_DATE,
        notice: "MC1220762",
        retiring_sources: sources
            .iter()
            .copied()
            .filter(|source| source.is_retiring())
            .collect(),
        sources,
        graph_sources: switch_to,
        tenants,
        needs_action,
        warnings,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    let links_failed = report
        .tenants
        .iter()
        .any(|tenant| tenant.consent_link_error.is_some());
    Ok(needs_action == 0 && !links_failed)
}

/// One tenant's standing; `roles_for` is the requirement of each Graph source.
pub fn assess(
    record: &TenantRecord,
    sources: &[Source],
    targets: &[Source],
    roles_for: impl Fn(Source) -> defender_partner::entra::roles::RoleRequirement,
) -> TenantMigration {
    let retiring: Vec<RetiringSource> = sources
        .iter()
        .filter(|source| source.is_retiring())
        .map(|source| RetiringSource {
            source: *source,
            successor: source.successor(),
            retires: RETIREMENT_DATE,
        })
        .collect();
    let graph_permissions: Vec<GraphPermission> = targets
        .iter()
        .map(|target| {
            let requirement = roles_for(*target);
            GraphPermission {
                source: *target,
                roles: requirement.to_string(),
                granted: record.status == TenantStatus::Active
                    && requirement.missing(&record.roles).is_none(),
            }
        })
        .collect();
    let granted = graph_permissions
        .iter()
        .all(|permission| permission.granted);
    let action = if !granted {
        Action::NewConsent
    } else if !retiring.is_empty() {
        Action::SwitchSources
    } else {
        Action::None
    };
    TenantMigration {
        tenant_id: record.tenant_id.to_string(),
        display_name: record.display_name.clone(),
        customer_ref: record.customer_ref.clone(),
        status: record.status,
        sources: sources.to_vec(),
        retiring,
        graph_permissions,
        graph_permissions_granted: granted,
        action,
        consent_link: None,
        consent_link_error: None,
    }
}

fn print_text(report: &MigrationReport) {
    let names = |sources: &[Source]| {
        sources
            .iter()
            .map(|source| source.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "Microsoft retires the Defender XDR API (/api/incidents) and the Defender for Endpoint API (/api/alerts) after {} ({}); only the Graph security API answers then.",
        report.retirement_date, report.notice
    );
    println!("DP_SOURCES: {}", names(&report.sources));
    if report.retiring_sources.is_empty() {
        println!("retiring:   none (the deployment runs on Graph only)");
    } else {
        println!(
            "retiring:   {} (switch to {})",
            names(&report.retiring_sources),
            report.graph_sources
        );
    }
    for warning in &report.warnings {
        println!("warning:    {warning}");
    }
    if report.tenants.is_empty() {
        println!("\nno tenants registered");
        return;
    }
    for tenant in &report.tenants {
        println!();
        println!(
            "{}  {}  {}  {}",
            tenant.tenant_id,
            tenant.display_name,
            tenant.customer_ref.as_deref().unwrap_or("-"),
            tenant.status
        );
        let sources: Vec<String> = tenant
            .sources
            .iter()
            .map(|source| match source.successor() {
                Some(successor) if source.is_retiring() => format!(
                    "{} (retiring {} -> {})",
                    source.as_str(),
                    RETIREMENT_DATE,
                    successor.as_str()
                ),
                _ => source.as_str().to_owned(),
            })
            .collect();
        println!("  sources:           {}", sources.join(", "));
        let permissions: Vec<String> = tenant
            .graph_permissions
            .iter()
            .map(|permission| {
                format!(
                    "{} {} ({})",
                    permission.roles,
                    if permission.granted {
                        "granted"
                    } else {
                        "missing"
                    },
                    permission.source.as_str()
                )
            })
            .collect();
        println!("  graph permissions: {}", permissions.join("; "));
        println!(
            "  action:            {}",
            tenant.action.describe(&report.graph_sources)
        );
        if let Some(link) = &tenant.consent_link {
            println!(
                "  consent link:      {} (for this tenant only, valid until {}, single use)",
                link.url, link.expires_at
            );
        }
        if let Some(error) = &tenant.consent_link_error {
            println!("  consent link:      not issued: {error}");
        }
    }
    println!();
    println!(
        "{} of {} tenant(s) need action before {}.",
        report.needs_action,
        report.tenants.len(),
        report.retirement_date
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_partner::entra::roles::RoleRequirement;
    use defender_partner::tenant_id::TenantId;

    fn tenant(roles: &[&str]) -> TenantRecord {
        let mut record = TenantRecord::new(
            TenantId::parse("22222222-2222-4222-8222-222222222222").unwrap(),
            "Contoso",
            TenantStatus::Active,
        );
        record.roles = roles.iter().map(|role| role.to_string()).collect();
        record
    }

    #[test]
    fn actions_follow_the_sources_and_the_granted_roles() {
        let retiring = [Source::M365dIncidents, Source::MdeAlerts];
        let targets = graph_targets(&retiring);
        assert_eq!(targets, vec![Source::GraphIncidents, Source::GraphAlerts]);
        let assess = |roles: &[&str], sources: &[Source]| {
            assess(
                &tenant(roles),
                sources,
                &graph_targets(sources),
                RoleRequirement::default_for_source,
            )
        };
        let lacking = assess(
            &["Incident.Read.All", "SecurityIncident.Read.All"],
            &retiring,
        );
        assert_eq!(lacking.action, Action::NewConsent);
        assert!(lacking.graph_permissions[0].granted);
        assert!(!lacking.graph_permissions[1].granted);
        assert_eq!(lacking.retiring.len(), 2);
        let ready = assess(
            &["SecurityIncident.ReadWrite.All", "SecurityAlert.Read.All"],
            &retiring,
        );
        assert_eq!(ready.action, Action::SwitchSources);
        let done = assess(
            &["SecurityIncident.Read.All", "SecurityAlert.Read.All"],
            &[Source::GraphIncidents, Source::GraphAlerts],
        );
        assert_eq!(done.action, Action::None);
        assert!(done.retiring.is_empty());
        let mut pending = tenant(&["SecurityIncident.Read.All"]);
        pending.status = TenantStatus::Revoked;
        let revoked = super::assess(
            &pending,
            &[Source::GraphIncidents],
            &[Source::GraphIncidents],
            RoleRequirement::default_for_source,
        );
        assert_eq!(revoked.action, Action::NewConsent);
    }
}
