//! Browser-flow attempts: one per consent link or sign-in link handed out, keyed by the nonce its
//! signed `state` carries. Consuming the nonce is a conditional write, so a `state` is accepted
//! once even when two callbacks race.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::RegistryError;
use crate::api::DefenderApi;
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

/// Which flow an attempt belongs to, and what that flow asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "flow", rename_all = "snake_case")]
pub enum AttemptFlow {
    /// An admin-consent link handed out for a customer.
    Consent {
        /// The partner's reference for the customer.
        customer_ref: String,
        /// Which consent link was handed out (`v2`, `adminconsent`, `legacy`).
        link: String,
    },
    /// A user's sign-in to the attempt's `tenant_id`, for one API.
    SignIn { api: DefenderApi },
}

/// Tells a sign-in's stored `link` from a consent link's kind.
const SIGN_IN_LINK_PREFIX: &str = "signin:";

impl AttemptFlow {
    /// The two stored columns (`customer_ref`, `link`) every release has written: a sign-in keeps
    /// its tenant in the first and `signin:<api>` in the second, so that rows written before the
    /// flows were told apart, and rows read by an older release during a deployment, still read.
    pub(crate) fn to_stored(&self, tenant_id: Option<&TenantId>) -> (String, String) {
        match self {
            AttemptFlow::Consent { customer_ref, link } => (customer_ref.clone(), link.clone()),
            AttemptFlow::SignIn { api } => (
                tenant_id.map(TenantId::to_string).unwrap_or_default(),
                format!("{SIGN_IN_LINK_PREFIX}{}", api.code()),
            ),
        }
    }

    /// The flow of the stored columns (see [`AttemptFlow::to_stored`]).
    pub(crate) fn from_stored(customer_ref: String, link: String) -> Result<AttemptFlow, String> {
        match link.strip_prefix(SIGN_IN_LINK_PREFIX) {
            Some(api) => Ok(AttemptFlow::SignIn {
                api: api
                    .parse()
                    .map_err(|_| format!("sign-in attempt for an unknown api {api:?}"))?,
            }),
            None => Ok(AttemptFlow::Consent { customer_ref, link }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentAttempt {
    pub nonce: String,
    pub flow: AttemptFlow,
    pub status: AttemptStatus,
    /// The tenant the attempt is bound to or ended in: a sign-in's from the start, a consent's
    /// once proven (or when its link was bound to one).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flow_reads_back_from_the_stored_columns() {
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let consent = AttemptFlow::Consent {
            customer_ref: "CRM-7".into(),
            link: "adminconsent".into(),
        };
        let sign_in = AttemptFlow::SignIn {
            api: DefenderApi::Mde,
        };
        for flow in [consent, sign_in] {
            let (customer_ref, link) = flow.to_stored(Some(&tenant));
            assert_eq!(AttemptFlow::from_stored(customer_ref, link).unwrap(), flow);
        }
    }

    #[test]
    fn a_sign_in_is_stored_as_earlier_releases_stored_it() {
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let stored = AttemptFlow::SignIn {
            api: DefenderApi::Graph,
        }
        .to_stored(Some(&tenant));
        assert_eq!(
            stored,
            (tenant.to_string(), "signin:graph".to_owned()),
            "tenant in customer_ref, signin:<api> in link"
        );
        assert!(
            AttemptFlow::from_stored(tenant.to_string(), "signin:sentinel".into()).is_err(),
            "an unknown api is a corrupt row"
        );
    }
}
