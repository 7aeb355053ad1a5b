//! Consent attempts: one per consent link handed out, keyed by the nonce its signed `state`
//! carries. Consuming the nonce is a conditional write, so a `state` is accepted once even when
//! two callbacks race.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::RegistryError;
use crate::tenant_id::TenantId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    /// Link handed out, callback not seen yet.
    Issued,
    /// Callback seen; outcome being established.
    Consumed,
    /// Consent proven; the tenant is active.
    Completed,
    /// Consent given but not (yet) proven; the tenant is pending.
    Unproven,
    /// The administrator declined, or Microsoft answered an error.
    Declined,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Issued => "issued",
            AttemptStatus::Consumed => "consumed",
            AttemptStatus::Completed => "completed",
            AttemptStatus::Unproven => "unproven",
            AttemptStatus::Declined => "declined",
        }
    }
}

impl FromStr for AttemptStatus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "issued" => Ok(AttemptStatus::Issued),
            "consumed" => Ok(AttemptStatus::Consumed),
            "completed" => Ok(AttemptStatus::Completed),
            "unproven" => Ok(AttemptStatus::Unproven),
            "declined" => Ok(AttemptStatus::Declined),
            other => Err(format!("unknown consent attempt status {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentAttempt {
    pub nonce: String,
    pub customer_ref: String,
    /// Which consent link was handed out (`v2`, `adminconsent`, `legacy`).
    pub link: String,
    pub status: AttemptStatus,
    pub tenant_id: Option<TenantId>,
    /// Microsoft's error code, or why proof failed.
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
    /// After this the `state` is refused.
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a nonce could not be consumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    #[error("no consent link was issued with this state")]
    Unknown,
    #[error("this consent link was already used")]
    AlreadyUsed,
    #[error("this consent link has expired")]
    Expired,
    #[error(transparent)]
    Store(#[from] RegistryError),
}

#[async_trait]
pub trait ConsentAttempts: Send + Sync {
    /// Records a new attempt; `Conflict` if the nonce exists.
    async fn issue(&self, attempt: &ConsentAttempt) -> Result<(), RegistryError>;

    /// Marks an issued, unexpired attempt consumed and returns it. Exactly one of several
    /// concurrent callers succeeds.
    async fn consume(
        &self,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<ConsentAttempt, ConsumeError>;

    /// Records how a consumed attempt ended.
    async fn finish(
        &self,
        nonce: &str,
        status: AttemptStatus,
        tenant_id: Option<&TenantId>,
        detail: Option<&str>,
    ) -> Result<(), RegistryError>;

    async fn attempt(&self, nonce: &str) -> Result<Option<ConsentAttempt>, RegistryError>;
}

/// After a failed consume, tells why from what is stored.
pub(crate) fn classify_failed_consume(
    stored: Option<&ConsentAttempt>,
    now: DateTime<Utc>,
) -> ConsumeError {
    match stored {
        None => ConsumeError::Unknown,
        Some(attempt) if attempt.status != AttemptStatus::Issued => ConsumeError::AlreadyUsed,
        Some(attempt) if attempt.expires_at <= now => ConsumeError::Expired,
        // It was issued and valid a moment ago: another caller won the race.
        Some(_) => ConsumeError::AlreadyUsed,
    }
}
