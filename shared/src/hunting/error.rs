//! Why a hunt was refused or could not go on, each with a stable code. A tenant's own trouble
//! (no permission, throttling, a timeout) is not an error of the hunt: it is that tenant's
//! result in the manifest.

use crate::callers::ScopeError;
use crate::store::RegistryError;
use crate::tenant_id::TenantIdError;
use crate::{CallerError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HuntError {
    #[error("invalid hunt: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    InvalidTenantId(#[from] TenantIdError),
    #[error(
        "timespan {given:?} is not one Microsoft accepts: {why} (ISO 8601: P30D, start/end, P30D/end, start/P30D, or a start)"
    )]
    TimespanInvalid { given: String, why: String },
    #[error("no active tenant matches the selection {0}: nothing to hunt in")]
    NoTenants(String),
    #[error("no hunt {0}")]
    NotFound(String),
    #[error("no saved hunt {0:?}")]
    SavedNotFound(String),
    #[error("Microsoft refused the query (HTTP 400 {code}): {message}")]
    QueryInvalid { code: String, message: String },
    #[error("the hunt's results could not be written or read: {0}")]
    Output(String),
    #[error("the hunt's tenants could not be queued: {0}")]
    Queue(String),
    #[error(transparent)]
    Store(#[from] RegistryError),
    /// The caller's mapping does not reach the tenants asked for (or could not be read).
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

impl CallerError for HuntError {
    fn code(&self) -> ErrorCode {
        match self {
            HuntError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            HuntError::InvalidTenantId(_) => ErrorCode::InvalidTenantId,
            HuntError::TimespanInvalid { .. } => ErrorCode::TimespanInvalid,
            HuntError::NoTenants(_) => ErrorCode::HuntNoTenants,
            HuntError::NotFound(_) | HuntError::SavedNotFound(_) => ErrorCode::HuntNotFound,
            HuntError::QueryInvalid { .. } => ErrorCode::HuntQueryInvalid,
            HuntError::Output(_) => ErrorCode::HuntResultsUnavailable,
            HuntError::Queue(_) => ErrorCode::HuntQueueUnavailable,
            HuntError::Store(error) => error.code(),
            HuntError::Scope(error) => error.code(),
        }
    }
}
