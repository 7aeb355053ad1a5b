//! A registered customer tenant.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tenant_id::TenantId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Known, consent not (yet) proven.
    Pending,
    /// Consent proven: tokens may be minted.
    Active,
    /// The customer withdrew consent (or Entra says the app is gone from the tenant).
    Revoked,
    /// The partner ended the relationship.
    Offboarded,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Pending => "pending",
            TenantStatus::Active => "active",
            TenantStatus::Revoked => "revoked",
            TenantStatus::Offboarded => "offboarded",
        }
    }
}

impl FromStr for TenantStatus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pending" => Ok(TenantStatus::Pending),
            "active" => Ok(TenantStatus::Active),
            "revoked" => Ok(TenantStatus::Revoked),
            "offboarded" => Ok(TenantStatus::Offboarded),
            other => Err(format!("unknown tenant status {other:?}")),
        }
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the partner knows that the tenant belongs to the customer it is recorded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    /// Not proven: recorded by an onboarding path that no longer counts as proof (a callback
    /// before administrators signed in, which trusted the redirect's `tenant`). Never activated
    /// by the fetch cycle; an operator decides (`dp-operator tenants verify --customer …`
    /// or `tenants offboard`), and a proven administrator's consent replaces it.
    #[default]
    Unverified,
    /// An administrator of the tenant signed in (a verified ID token) through this customer's
    /// consent link.
    AdminSignIn,
    /// The partner's operator recorded or confirmed it.
    Operator,
}

impl Ownership {
    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::Unverified => "unverified",
            Ownership::AdminSignIn => "admin_sign_in",
            Ownership::Operator => "operator",
        }
    }

    /// A stored value; an absent one (older records) is `Unverified`.
    pub fn from_stored(text: Option<&str>) -> Result<Ownership, String> {
        match text {
            None | Some("unverified") => Ok(Ownership::Unverified),
            Some("admin_sign_in") => Ok(Ownership::AdminSignIn),
            Some("operator") => Ok(Ownership::Operator),
            Some(other) => Err(format!("unknown ownership {other:?}")),
        }
    }

    pub fn is_proven(self) -> bool {
        self != Ownership::Unverified
    }
}

impl std::fmt::Display for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub tenant_id: TenantId,
    pub display_name: String,
    /// The partner's own reference for the customer (contract or CRM id).
    pub customer_ref: Option<String>,
    pub status: TenantStatus,
    /// Application roles the tenant granted, as last proven from a token.
    pub roles: Vec<String>,
    /// Why the status is what it is (e.g. the error of a failed consent proof).
    pub status_reason: Option<String>,
    /// How the tenant's link to `customer_ref` was proven.
    #[serde(default)]
    pub ownership: Ownership,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency counter, maintained by the registry.
    pub version: u64,
}

impl TenantRecord {
    /// A new record, stamped now, registered by the partner itself (`Ownership::Operator`).
    pub fn new(tenant_id: TenantId, display_name: impl Into<String>, status: TenantStatus) -> Self {
        let now = stored_now();
        TenantRecord {
            tenant_id,
            display_name: display_name.into(),
            customer_ref: None,
            status,
            roles: Vec::new(),
            status_reason: None,
            ownership: Ownership::Operator,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }
}

/// Now, at the precision the stores keep, so a record compares equal to its stored copy.
pub fn stored_now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Timestamps are stored as RFC 3339 text with fixed precision, so both stores sort and
/// compare them alike.
pub(crate) fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("bad timestamp {text:?}: {error}"))
}
