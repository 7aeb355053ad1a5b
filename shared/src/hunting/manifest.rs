//! `manifest.json`: a hunt's state for whoever polls it, rewritten as tenants finish: the hunt's
//! status, and per tenant its status, rows, whether Microsoft cut them, the error code and the
//! time it took. Built from the store, which is the truth; the manifest is its published copy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{HuntRecord, TenantHuntResult};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestTenant {
    pub tenant_id: String,
    pub customer_ref: Option<String>,
    /// `queued` until the tenant finishes, then its result's status.
    pub status: String,
    pub rows: u64,
    pub truncated: bool,
    pub parts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_rows: Option<u64>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub hunt_id: String,
    pub name: Option<String>,
    pub saved_hunt: Option<String>,
    pub query: String,
    pub timespan: Option<String>,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub tenants_total: usize,
    pub tenants_finished: usize,
    pub rows_total: u64,
    /// Where the results are (`s3://bucket/hunts/<id>/` or a folder).
    pub results: String,
    pub tenants: Vec<ManifestTenant>,
}

/// The `HuntCompleted` event's detail: the manifest without its per-tenant list (which can
/// outgrow an event), with counts per tenant status instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSummary {
    pub hunt_id: String,
    pub name: Option<String>,
    pub saved_hunt: Option<String>,
    pub status: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub tenants_total: usize,
    pub tenants_by_status: std::collections::BTreeMap<String, usize>,
    pub rows_total: u64,
    pub truncated_tenants: usize,
    pub manifest: String,
}

impl Manifest {
    pub fn build(hunt: &HuntRecord, results: &[TenantHuntResult], results_at: String) -> Manifest {
        let by_tenant: std::collections::HashMap<&str, &TenantHuntResult> = results
            .iter()
            .map(|result| (result.tenant_id.as_str(), result))
            .collect();
        let tenants: Vec<ManifestTenant> = hunt
            .targets
            .iter()
            .map(|target| match by_tenant.get(target.tenant_id.as_str()) {
                Some(result) => ManifestTenant {
                    tenant_id: result.tenant_id.to_string(),
                    customer_ref: target.customer_ref.clone(),
                    status: result.status.to_string(),
                    rows: result.rows,
                    truncated: result.truncated,
                    parts: result.parts,
                    new_rows: result.new_rows,
                    error_code: result.error_code.clone(),
                    error: result.error.clone(),
                    duration_ms: Some(result.duration_ms),
                    attempts: result.attempts,
                },
                None => ManifestTenant {
                    tenant_id: target.tenant_id.to_string(),
                    customer_ref: target.customer_ref.clone(),
                    status: "queued".into(),
                    rows: 0,
                    truncated: false,
                    parts: 0,
                    new_rows: None,
                    error_code: None,
                    error: None,
                    duration_ms: None,
                    attempts: 0,
                },
            })
            .collect();
        Manifest {
            hunt_id: hunt.id.clone(),
            name: hunt.name.clone(),
            saved_hunt: hunt.saved.clone(),
            query: hunt.query.clone(),
            timespan: hunt.timespan.clone(),
            status: hunt.status.to_string(),
            error_code: hunt.error_code.clone(),
            error: hunt.error.clone(),
            submitted_at: hunt.submitted_at,
            finished_at: hunt.finished_at,
            tenants_total: tenants.len(),
            tenants_finished: tenants
                .iter()
                .filter(|tenant| tenant.status != "queued")
                .count(),
            rows_total: tenants.iter().map(|tenant| tenant.rows).sum(),
            results: results_at,
            tenants,
        }
    }

    pub fn summary(&self) -> ManifestSummary {
        let mut by_status = std::collections::BTreeMap::new();
        for tenant in &self.tenants {
            *by_status.entry(tenant.status.clone()).or_insert(0) += 1;
        }
        ManifestSummary {
            hunt_id: self.hunt_id.clone(),
            name: self.name.clone(),
            saved_hunt: self.saved_hunt.clone(),
            status: self.status.clone(),
            error_code: self.error_code.clone(),
            error: self.error.clone(),
            tenants_total: self.tenants_total,
            tenants_by_status: by_status,
            rows_total: self.rows_total,
            truncated_tenants: self
                .tenants
                .iter()
                .filter(|tenant| tenant.truncated)
                .count(),
            manifest: format!("{}manifest.json", self.results),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::store::{HuntStatus, HuntTarget, TenantHuntStatus};
    use crate::tenant_id::TenantId;

    fn tenant(n: u8) -> TenantId {
        TenantId::parse(&format!("72f988bf-86f1-41af-91ab-2d7cd011db4{n}")).unwrap()
    }

    #[test]
    fn unfinished_tenants_are_queued_and_the_summary_counts_each_status() {
        let targets: Vec<HuntTarget> = (1..=3)
            .map(|n| HuntTarget {
                tenant_id: tenant(n),
                customer_ref: Some(format!("CRM-{n}")),
            })
            .collect();
        let hunt = HuntRecord {
            id: "2b1e4c1e-0c57-4a53-9d2e-4b3f2b0e7a11".into(),
            name: Some("xz".into()),
            query: "DeviceProcessEvents".into(),
            timespan: None,
            targets,
            submitted_at: Utc::now(),
            submitted_by: "test".into(),
            saved: None,
            status: HuntStatus::Running,
            remaining: 1,
            error_code: None,
            error: None,
            finished_at: None,
        };
        let result = |n: u8, status, rows, truncated| TenantHuntResult {
            tenant_id: tenant(n),
            customer_ref: Some(format!("CRM-{n}")),
            status,
            rows,
            truncated,
            parts: 1,
            new_rows: None,
            error_code: None,
            error: None,
            duration_ms: 5,
            attempts: 1,
            finished_at: Utc::now(),
        };
        let results = [
            result(1, TenantHuntStatus::Succeeded, 100_000, true),
            result(3, TenantHuntStatus::RolesMissing, 0, false),
        ];
        let manifest = Manifest::build(&hunt, &results, "s3://b/hunts/x/".into());
        assert_eq!(manifest.tenants_total, 3);
        assert_eq!(manifest.tenants_finished, 2);
        assert_eq!(manifest.rows_total, 100_000);
        assert_eq!(manifest.tenants[1].status, "queued");
        assert_eq!(manifest.tenants[1].customer_ref.as_deref(), Some("CRM-2"));
        let summary = manifest.summary();
        assert_eq!(summary.tenants_by_status["succeeded"], 1);
        assert_eq!(summary.tenants_by_status["queued"], 1);
        assert_eq!(summary.tenants_by_status["roles_missing"], 1);
        assert_eq!(summary.truncated_tenants, 1);
        assert_eq!(summary.manifest, "s3://b/hunts/x/manifest.json");
    }
}
