//! Why an update was not applied, each with a stable code. Refusals of the request itself are
//! decided before Microsoft is called.

use std::time::Duration;

use crate::callers::ScopeError;
use crate::defender::client::ApiError;
use crate::minting::MintError;
use crate::store::RegistryError;
use crate::tenant_id::TenantIdError;
use crate::{CallerError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    InvalidTenantId(#[from] TenantIdError),
    #[error("status {given:?} cannot be set on an {kind}: accepted values are {accepted}")]
    StatusInvalid {
        given: String,
        kind: &'static str,
        accepted: String,
    },
    #[error("classification {given:?} is not one of {accepted}")]
    ClassificationInvalid { given: String, accepted: String },
    #[error("determination {given:?} is not a determination Graph accepts on an {kind}")]
    DeterminationInvalid { given: String, kind: &'static str },
    /// No token, or the tenant is not active (the minting service's own refusals).
    #[error(transparent)]
    Token(#[from] MintError),
    #[error(
        "tenant {tenant} has not granted {role} to the app: write-back needs it; the customer's administrator grants it through a new consent link ({hint})"
    )]
    WritePermissionMissing {
        tenant: String,
        role: &'static str,
        hint: String,
    },
    #[error(
        "Microsoft refused the change for the signed-in analyst (HTTP 403 {code}): the analyst needs a Defender role that allows it in the customer's tenant (Security Operator, Security Administrator, or a unified RBAC role with manage rights)"
    )]
    AnalystRoleMissing { code: String },
    #[error("{kind} {id} does not exist in the tenant (HTTP 404)")]
    NotFound { kind: &'static str, id: String },
    #[error("Microsoft refused the change (HTTP {status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error(transparent)]
    Api(ApiError),
    #[error(
        "idempotency key {0:?} was used for a different request: a key names one change; use a new key for a new change"
    )]
    IdempotencyKeyReused(String),
    #[error(
        "a request with idempotency key {0:?} is still being applied; retry in a few seconds for its result"
    )]
    InProgress(String),
    #[error("another change to the same {kind}'s tags is being applied; retry in a few seconds")]
    TargetBusy { kind: &'static str },
    #[error(
        "the tags of {kind} {id} kept changing under us (a concurrent edit outside this function); nothing of ours is lost, but the tags could not be verified: read the {kind} and retry"
    )]
    TagsUnsettled { kind: &'static str, id: String },
    #[error(transparent)]
    Store(#[from] RegistryError),
    /// The caller's mapping does not include the tenant (or could not be read).
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

/// A retried request after its first attempt is still running: this long is enough for almost
/// every update to finish.
const RETRY_BUSY: Duration = Duration::from_secs(5);

impl CallerError for UpdateError {
    fn code(&self) -> ErrorCode {
        match self {
            UpdateError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            UpdateError::InvalidTenantId(_) => ErrorCode::InvalidTenantId,
            UpdateError::StatusInvalid { .. } => ErrorCode::StatusInvalid,
            UpdateError::ClassificationInvalid { .. } => ErrorCode::ClassificationInvalid,
            UpdateError::DeterminationInvalid { .. } => ErrorCode::DeterminationInvalid,
            UpdateError::Token(error) => error.code(),
            UpdateError::WritePermissionMissing { .. } => ErrorCode::WritePermissionMissing,
            UpdateError::AnalystRoleMissing { .. } => ErrorCode::AnalystRoleMissing,
            UpdateError::NotFound { .. } => ErrorCode::TargetNotFound,
            UpdateError::Refused { .. } => ErrorCode::UpdateRefused,
            UpdateError::Api(error) => error.code(),
            UpdateError::IdempotencyKeyReused(_) => ErrorCode::IdempotencyKeyReused,
            UpdateError::InProgress(_) | UpdateError::TargetBusy { .. } => {
                ErrorCode::UpdateInProgress
            }
            UpdateError::TagsUnsettled { .. } => ErrorCode::UpdateConflict,
            UpdateError::Store(error) => error.code(),
            UpdateError::Scope(error) => error.code(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            UpdateError::Token(error) => error.retry_after(),
            UpdateError::Api(error) => error.retry_after(),
            UpdateError::InProgress(_) | UpdateError::TargetBusy { .. } => Some(RETRY_BUSY),
            _ => None,
        }
    }

    fn claims_challenge(&self) -> Option<&str> {
        match self {
            UpdateError::Token(error) => error.claims_challenge(),
            _ => None,
        }
    }
}
