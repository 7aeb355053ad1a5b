//! IAM `GetOutboundWebIdentityFederationInfo`: the account's issuer URL and whether token
//! vending is on. Disabled federation answers `FeatureDisabled` (404), as IAM does.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::query::Caller;
use super::xml::{self, AwsError, IAM_NAMESPACE};
use crate::state::Shared;

pub(super) fn outbound_federation_info(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<Response, AwsError> {
    if Caller::from_headers(headers).is_none() {
        return Err(AwsError::sender(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        )
        .in_namespace(IAM_NAMESPACE));
    }
    let (enabled, account_id) = {
        let aws = shared.aws.lock();
        (aws.config.federation_enabled, aws.config.account_id.clone())
    };
    if !enabled {
        return Err(AwsError::sender(
            StatusCode::NOT_FOUND,
            "FeatureDisabled",
            "Outbound identity federation is disabled for your AWS account.",
        )
        .in_namespace(IAM_NAMESPACE));
    }
    let issuer = crate::demo::aws_issuer(&shared.base_url, &account_id);
    let result = format!(
        "    <IssuerIdentifier>{}</IssuerIdentifier>\n    <JwtVendingEnabled>true</JwtVendingEnabled>\n",
        xml::escape(&issuer)
    );
    Ok(xml::success(
        "GetOutboundWebIdentityFederationInfo",
        IAM_NAMESPACE,
        &result,
    ))
}
