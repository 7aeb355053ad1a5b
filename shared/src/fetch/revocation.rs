//! The revocation policy: when a pair's failure marks its tenant `revoked`. Only Entra saying the
//! app is gone from the tenant means that (a 403 from the API can be a product not enabled, and
//! missing roles a tenant that consented to some APIs only: those fail the pair, not the tenant),
//! and only when another tenant still accepts the app, since a wrong `client_id` in the app
//! credential draws the same answer from every tenant.

use super::outcome::{Failure, PairResult};
use crate::CallerError;
use crate::ErrorCode;
use crate::defender::{ApiError, DefenderClient, Source, spec};
use crate::store::{TenantRegistry, TenantStatus};
use crate::tenant_id::TenantId;

/// Enough witnesses to outvote one or two tenants that also withdrew.
const WITNESSES: usize = 3;

/// What `failure` makes of the pair: `Revoked` (the tenant is then marked so in the registry) or
/// `Failed`.
pub(super) async fn judge(
    registry: &dyn TenantRegistry,
    client: &DefenderClient,
    tenant: &TenantId,
    source: Source,
    failure: &Failure,
) -> PairResult {
    let (code, message) = failure.describe();
    let consent_gone = consent_gone(failure);
    let others_accept =
        consent_gone && others_still_accept_the_app(registry, client, tenant, source).await;
    let result = verdict(code, message, consent_gone, others_accept);
    if let PairResult::Revoked { message } = &result {
        tracing::warn!(tenant = %tenant, code = %code, metric = "TenantRevoked", "consent gone; marking the tenant revoked");
        if let Err(error) = registry
            .set_status(
                tenant,
                TenantStatus::Revoked,
                Some(format!("{code}: {message}")),
            )
            .await
        {
            tracing::error!(tenant = %tenant, error = %error, "could not mark the tenant revoked");
        }
    }
    result
}

/// Whether Entra said the app is gone from the tenant.
fn consent_gone(failure: &Failure) -> bool {
    matches!(failure, Failure::Api(ApiError::Token(error)) if error.code() == ErrorCode::NotConsented)
}

/// The pair's result once the second opinion is in.
fn verdict(
    code: ErrorCode,
    message: String,
    consent_gone: bool,
    others_accept: bool,
) -> PairResult {
    match (consent_gone, others_accept) {
        (true, true) => PairResult::Revoked { message },
        (true, false) => PairResult::Failed {
            code,
            message: format!(
                "{message} Other tenants refuse the app too, so the tenant is not marked revoked: \
                 check the client_id in the app credential."
            ),
        },
        (false, _) => PairResult::Failed { code, message },
    }
}

/// Entra's "app not found in this tenant" (AADSTS700016) also comes back from every tenant when
/// the credential names the wrong `client_id`, and one such run must not mark the whole fleet
/// revoked. A second opinion tells the two apart: if another active tenant still accepts the
/// app, this tenant withdrew its consent. With no other tenant to ask, Entra's word stands; with
/// no clear answer (throttled, unavailable), nothing is marked this run.
async fn others_still_accept_the_app(
    registry: &dyn TenantRegistry,
    client: &DefenderClient,
    tenant: &TenantId,
    source: Source,
) -> bool {
    let api = spec(source).api;
    let others: Vec<TenantId> = match registry.list().await {
        Ok(records) => records
            .into_iter()
            .filter(|record| record.status == TenantStatus::Active && record.tenant_id != *tenant)
            .map(|record| record.tenant_id)
            .take(WITNESSES)
            .collect(),
        Err(error) => {
            tracing::warn!(tenant = %tenant, error = %error, "registry unreadable; revocation not recorded this run");
            return false;
        }
    };
    if others.is_empty() {
        return true;
    }
    for other in &others {
        match client.app_accepted_by(other, api).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(tenant = %tenant, witness = %other, error = %error, "no second opinion on the revocation this run");
            }
        }
    }
    tracing::error!(tenant = %tenant, witnesses = others.len(), "other tenants refuse the app too: the credential's client_id is likely wrong");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::AppTokenError;
    use crate::entra::errors::{EntraError, Trace};
    use crate::store::RegistryError;

    fn entra(error: EntraError) -> Failure {
        Failure::Api(ApiError::Token(AppTokenError::Entra(error)))
    }

    fn trace() -> Trace {
        Trace {
            status: 400,
            codes: vec![700016],
            trace_id: None,
            correlation_id: None,
        }
    }

    #[test]
    fn only_entra_saying_the_app_is_gone_means_consent_is_gone() {
        let gone = entra(EntraError::NotConsented {
            tenant: "contoso".into(),
            trace: trace(),
        });
        assert!(consent_gone(&gone));
        for kept in [
            entra(EntraError::ServiceNotEnabled {
                tenant: "contoso".into(),
                trace: trace(),
            }),
            Failure::Api(ApiError::Forbidden("Forbidden".into())),
            Failure::Api(ApiError::Unauthorized),
            Failure::Store(RegistryError::NotFound("contoso".into())),
            Failure::Other(ErrorCode::Internal, "sink".into()),
        ] {
            assert!(!consent_gone(&kept), "{kept:?}");
        }
    }

    #[test]
    fn consent_gone_revokes_only_with_a_second_opinion() {
        let code = ErrorCode::NotConsented;
        assert_eq!(
            verdict(code, "gone.".into(), true, true),
            PairResult::Revoked {
                message: "gone.".into()
            }
        );
        let PairResult::Failed {
            code: kept,
            message,
        } = verdict(code, "gone.".into(), true, false)
        else {
            panic!("marked revoked without a second opinion");
        };
        assert_eq!(kept, code);
        assert!(
            message.starts_with("gone. Other tenants refuse the app too"),
            "{message}"
        );
        assert!(message.contains("client_id"), "{message}");
        assert_eq!(
            verdict(ErrorCode::Throttled, "slow".into(), false, true),
            PairResult::Failed {
                code: ErrorCode::Throttled,
                message: "slow".into()
            }
        );
    }
}
