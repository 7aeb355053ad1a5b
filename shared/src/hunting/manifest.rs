//! `manifest.json`: a hunt's state for whoever polls it, rewritten as tenants finish: the hunt's
//! status, and per tenant its status, rows, whether Microsoft cut them, the error code and the
//! time it took. Built from the store, which is the truth; the manifest is its published copy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tenants::{HuntRecord, TenantHuntResult};

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
        let tenants: Vec<ManifestTenant> = hunt
            .targets
            .iter()
            .map(|target| {
                match results
                    .iter()
                    .find(|result| result.tenant_id == target.tenant_id)
                {
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
                }
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
