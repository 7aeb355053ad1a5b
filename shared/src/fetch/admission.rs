//! Which pairs may be fetched at all, decided from the registry: the tenant must be `active`, and
//! the source's API must be one it granted. Every entry point (schedule, queue, direct invoke)
//! goes through here, so a message queued before an offboarding, or a continuation that re-queues
//! itself, ends when the partner ends the tenant.

use crate::ErrorCode;
use crate::api::DefenderApi;
use crate::config::ProofSettings;
use crate::defender::Source;
use crate::defender::spec;
use crate::entra::roles::RoleRequirement;
use crate::store::{TenantRecord, TenantStatus};

/// Prefix of the status reason that lists the sources a tenant's consent does not cover.
pub const ROLES_MISSING_PREFIX: &str = "roles_missing: ";

/// The roles each API needs, for the APIs a consent proves (`DP_CONSENT_APIS`). The recorded
/// roles of a tenant come from that proof, so only for those APIs does an absent role mean
/// "not granted"; another API's roles were never asked for, and its sources are planned as
/// before (they fail on their own if the tenant did not grant them).
/// On Graph each source has its own roles (`SecurityIncident.*` for incidents,
/// `SecurityAlert.*` for `alerts_v2`), so a tenant that granted one of them is fetched for that
/// source and reported `roles_missing` for the other.
#[derive(Debug, Clone)]
pub struct SourceRoles {
    proven: Vec<(DefenderApi, RoleRequirement)>,
    /// Requirements of single sources, judged before their API's.
    per_source: Vec<(Source, RoleRequirement)>,
}

impl SourceRoles {
    /// The requirements of the APIs a consent proves, as proving it reads them.
    pub fn from_proof(proof: &ProofSettings) -> SourceRoles {
        let apis = &proof.apis;
        SourceRoles {
            proven: apis
                .iter()
                .map(|api| (*api, proof.access.required_roles(*api).clone()))
                .collect(),
            per_source: Source::ALL
                .into_iter()
                .filter(|source| apis.contains(&spec(*source).api))
                .map(|source| (source, proof.access.source_roles(source)))
                .collect(),
        }
    }

    /// One requirement per proven API, for every source of that API.
    pub fn new(proven: Vec<(DefenderApi, RoleRequirement)>) -> SourceRoles {
        SourceRoles {
            proven,
            per_source: Vec::new(),
        }
    }

    /// Each source's own requirement, for the sources of the proven APIs.
    pub fn per_source(sources: Vec<(Source, RoleRequirement)>) -> SourceRoles {
        let mut proven: Vec<(DefenderApi, RoleRequirement)> = Vec::new();
        for (source, requirement) in &sources {
            let api = spec(*source).api;
            if !proven.iter().any(|(known, _)| *known == api) {
                proven.push((api, requirement.clone()));
            }
        }
        SourceRoles {
            proven,
            per_source: sources,
        }
    }

    /// The role groups `granted` lacks for `source`, or `None` when it may be fetched. A tenant
    /// with no recorded roles (registered by hand, or before roles were recorded) is not judged.
    pub fn missing(&self, source: Source, granted: &[String]) -> Option<Vec<String>> {
        if granted.is_empty() {
            return None;
        }
        if let Some((_, requirement)) = self
            .per_source
            .iter()
            .find(|(candidate, _)| *candidate == source)
        {
            return requirement.missing(granted);
        }
        let api = spec(source).api;
        self.proven
            .iter()
            .find(|(proven, _)| *proven == api)
            .and_then(|(_, requirement)| requirement.missing(granted))
    }

    /// The APIs a consent proof covers, in order.
    pub fn apis(&self) -> Vec<DefenderApi> {
        self.proven.iter().map(|(api, _)| *api).collect()
    }
}

/// The configured sources a tenant's roles allow, and the others with the roles they lack.
pub fn plan_sources(
    sources: &[Source],
    roles: &SourceRoles,
    granted: &[String],
) -> (Vec<Source>, Vec<(Source, Vec<String>)>) {
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for source in sources {
        match roles.missing(*source, granted) {
            None => planned.push(*source),
            Some(missing) => skipped.push((*source, missing)),
        }
    }
    (planned, skipped)
}

/// The status reason that reports `skipped` sources (stable text, so that it is written once and
/// not on every cycle), or `None` when every source is covered.
pub fn roles_missing_reason(skipped: &[(Source, Vec<String>)]) -> Option<String> {
    if skipped.is_empty() {
        return None;
    }
    let parts: Vec<String> = skipped
        .iter()
        .map(|(source, missing)| format!("{} (needs {})", source.as_str(), missing.join(", ")))
        .collect();
    Some(format!(
        "{ROLES_MISSING_PREFIX}not fetched, the consent does not grant the roles: {}",
        parts.join("; ")
    ))
}

/// Why a pair is not fetched: a stable code and a message for the log and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// Whether `source` of the tenant whose registry entry is `record` may be fetched now.
pub fn admit(
    record: Option<&TenantRecord>,
    source: Source,
    roles: &SourceRoles,
) -> Result<(), Refusal> {
    let Some(record) = record else {
        return Err(Refusal {
            code: ErrorCode::TenantNotRegistered,
            message: "the tenant is not in the registry; nothing is fetched for it".into(),
        });
    };
    if record.status != TenantStatus::Active {
        return Err(Refusal {
            code: ErrorCode::TenantNotActive,
            message: format!(
                "the tenant is {}; only active tenants are fetched",
                record.status
            ),
        });
    }
    if let Some(missing) = roles.missing(source, &record.roles) {
        return Err(Refusal {
            code: ErrorCode::RolesMissing,
            message: format!(
                "the tenant's consent does not grant {} (needed for {})",
                missing.join(", "),
                source.as_str()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant_id::TenantId;

    fn roles() -> SourceRoles {
        SourceRoles::new(
            DefenderApi::ALL
                .into_iter()
                .map(|api| (api, RoleRequirement::default_for(api)))
                .collect(),
        )
    }

    fn granted(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    const ALL: [Source; 3] = [
        Source::M365dIncidents,
        Source::GraphIncidents,
        Source::MdeAlerts,
    ];

    #[test]
    fn graph_only_consent_plans_graph_only() {
        let (planned, skipped) = plan_sources(
            &ALL,
            &roles(),
            &granted(&["SecurityIncident.Read.All", "SecurityAlert.Read.All"]),
        );
        assert_eq!(planned, vec![Source::GraphIncidents]);
        assert_eq!(
            skipped,
            vec![
                (
                    Source::M365dIncidents,
                    vec!["Incident.Read.All|Incident.ReadWrite.All".to_owned()]
                ),
                (
                    Source::MdeAlerts,
                    vec!["Alert.Read.All|Alert.ReadWrite.All".to_owned()]
                ),
            ]
        );
        let reason = roles_missing_reason(&skipped).unwrap();
        assert!(reason.starts_with(ROLES_MISSING_PREFIX), "{reason}");
        assert!(reason.contains("m365d-incidents") && reason.contains("mde-alerts"));
        assert!(!reason.contains("graph-incidents"), "{reason}");
    }

    #[test]
    fn full_consent_and_read_write_roles_plan_everything() {
        let (planned, skipped) = plan_sources(
            &ALL,
            &roles(),
            &granted(&[
                "Incident.ReadWrite.All",
                "Alert.Read.All",
                "SecurityIncident.Read.All",
            ]),
        );
        assert_eq!(planned, ALL.to_vec());
        assert!(skipped.is_empty());
        assert_eq!(roles_missing_reason(&skipped), None);
    }

    #[test]
    fn unrecorded_roles_and_unproven_apis_are_not_judged() {
        let (planned, _) = plan_sources(&ALL, &roles(), &[]);
        assert_eq!(
            planned,
            ALL.to_vec(),
            "no roles recorded: planned as before"
        );
        // The consent proves M365 Defender only: Graph's roles were never asked for.
        let m365d_only = SourceRoles::new(vec![(
            DefenderApi::M365d,
            RoleRequirement::default_for(DefenderApi::M365d),
        )]);
        let (planned, skipped) = plan_sources(&ALL, &m365d_only, &granted(&["Incident.Read.All"]));
        assert_eq!(planned, ALL.to_vec());
        assert!(skipped.is_empty());
        let (planned, _) = plan_sources(&ALL, &m365d_only, &granted(&["Alert.Read.All"]));
        assert_eq!(planned, vec![Source::GraphIncidents, Source::MdeAlerts]);
    }

    fn graph_roles() -> SourceRoles {
        SourceRoles::per_source(
            [Source::GraphIncidents, Source::GraphAlerts]
                .into_iter()
                .map(|source| (source, RoleRequirement::default_for_source(source)))
                .collect(),
        )
    }

    #[test]
    fn a_tenant_without_the_alert_role_runs_graph_incidents_only() {
        let sources = [Source::GraphIncidents, Source::GraphAlerts];
        let (planned, skipped) = plan_sources(
            &sources,
            &graph_roles(),
            &granted(&["SecurityIncident.Read.All"]),
        );
        assert_eq!(planned, vec![Source::GraphIncidents]);
        assert_eq!(
            skipped,
            vec![(
                Source::GraphAlerts,
                vec!["SecurityAlert.Read.All|SecurityAlert.ReadWrite.All".to_owned()]
            )]
        );
        let reason = roles_missing_reason(&skipped).unwrap();
        assert!(
            reason.contains("graph-alerts (needs SecurityAlert.Read.All"),
            "{reason}"
        );
        let (planned, skipped) = plan_sources(
            &sources,
            &graph_roles(),
            &granted(&[
                "SecurityIncident.ReadWrite.All",
                "SecurityAlert.ReadWrite.All",
            ]),
        );
        assert_eq!(planned, sources.to_vec());
        assert!(skipped.is_empty());
        // The retiring sources' APIs are not proven by a Graph consent: not judged.
        let (planned, _) = plan_sources(
            &[Source::M365dIncidents, Source::GraphAlerts],
            &graph_roles(),
            &granted(&["SecurityIncident.Read.All"]),
        );
        assert_eq!(planned, vec![Source::M365dIncidents]);
        let mut record = TenantRecord::new(
            crate::tenant_id::TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            "T",
            TenantStatus::Active,
        );
        record.roles = granted(&["SecurityIncident.Read.All"]);
        assert_eq!(
            admit(Some(&record), Source::GraphAlerts, &graph_roles())
                .unwrap_err()
                .code,
            ErrorCode::RolesMissing
        );
        assert_eq!(
            admit(Some(&record), Source::GraphIncidents, &graph_roles()),
            Ok(())
        );
    }

    #[test]
    fn only_active_registered_tenants_with_the_roles_are_admitted() {
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        assert_eq!(
            admit(None, Source::M365dIncidents, &roles())
                .unwrap_err()
                .code,
            ErrorCode::TenantNotRegistered
        );
        for status in [
            TenantStatus::Offboarded,
            TenantStatus::Revoked,
            TenantStatus::Pending,
        ] {
            let record = TenantRecord::new(tenant.clone(), "T", status);
            let refusal = admit(Some(&record), Source::M365dIncidents, &roles()).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::TenantNotActive);
            assert!(refusal.message.contains(status.as_str()));
        }
        let mut record = TenantRecord::new(tenant, "T", TenantStatus::Active);
        assert_eq!(admit(Some(&record), Source::MdeAlerts, &roles()), Ok(()));
        record.roles = granted(&["SecurityIncident.Read.All"]);
        assert_eq!(
            admit(Some(&record), Source::GraphIncidents, &roles()),
            Ok(())
        );
        assert_eq!(
            admit(Some(&record), Source::MdeAlerts, &roles())
                .unwrap_err()
                .code,
            ErrorCode::RolesMissing
        );
    }
}
