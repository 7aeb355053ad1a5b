//! STS `GetWebIdentityToken`: a JWT that proves the calling role's identity to an outside
//! service (here, Entra ID through a federated identity credential).
//!
//! Checks run in this order: authentication, parameters, the role's permission, the account's
//! federation switch, the caller's session length. The token is never logged.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::query::{Caller, QueryRequest};
use super::xml::{self, AwsError, Fault, STS_NAMESPACE};
use crate::state::Shared;

const DEFAULT_DURATION_SECONDS: i64 = 300;
const MIN_DURATION_SECONDS: i64 = 60;
const MAX_DURATION_SECONDS: i64 = 3600;
const MAX_AUDIENCES: usize = 10;
const MAX_AUDIENCE_LENGTH: usize = 1000;
const MAX_TAGS: usize = 50;
/// Beyond this many bytes of claims, STS answers `JWTPayloadSizeExceededException`.
const MAX_PAYLOAD_BYTES: usize = 4096;
/// The namespace of AWS's own claims in the JWT.
const AWS_CLAIMS_NAMESPACE: &str = "https://sts.amazonaws.com/";

/// The `SigningAlgorithm` values STS offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigningAlgorithm {
    Rs256,
    Es384,
}

/// What a valid request asks for.
struct TokenRequest {
    algorithm: SigningAlgorithm,
    audiences: Vec<String>,
    duration_seconds: i64,
    tags: Vec<(String, String)>,
}

pub(super) fn serve(
    shared: &Shared,
    headers: &HeaderMap,
    request: &QueryRequest,
) -> Result<Response, AwsError> {
    let injected = {
        let mut aws = shared.aws.lock();
        aws.calls.get_web_identity_token += 1;
        aws.take_failure()
    };
    let result = match injected {
        Some(failure) => Err(injected_error(&failure)),
        None => issue(shared, headers, request),
    };
    match &result {
        Ok(_) => tracing::info!("sts GetWebIdentityToken issued a token"),
        Err(error) => tracing::info!(
            code = %error.code,
            status = error.status.as_u16(),
            "sts GetWebIdentityToken refused"
        ),
    }
    result
}

fn issue(
    shared: &Shared,
    headers: &HeaderMap,
    request: &QueryRequest,
) -> Result<Response, AwsError> {
    let caller = Caller::from_headers(headers).ok_or_else(|| {
        AwsError::sender(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        )
    })?;
    let wanted = parse(request)?;
    let now = Utc::now();
    let (role_arn, account_id, lifetime) = {
        let mut aws = shared.aws.lock();
        let role_arn = aws.role_of(&caller.access_key_id).to_owned();
        if aws.role_denied {
            return Err(AwsError::sender(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "User: {role_arn} is not authorized to perform: sts:GetWebIdentityToken \
                     because no identity-based policy allows the sts:GetWebIdentityToken action"
                ),
            ));
        }
        if !aws.config.federation_enabled {
            return Err(AwsError::sender(
                StatusCode::FORBIDDEN,
                "OutboundWebIdentityFederationDisabledException",
                "The outbound web identity federation feature is not enabled for this account. \
                 To use this feature, you must first enable it through the AWS Management Console or API.",
            ));
        }
        if let Some(remaining) = aws.session_remaining_seconds
            && u64::try_from(wanted.duration_seconds).unwrap_or(u64::MAX) > remaining
        {
            return Err(AwsError::sender(
                StatusCode::FORBIDDEN,
                "SessionDurationEscalationException",
                format!(
                    "The requested DurationSeconds ({}) would extend the token beyond the \
                     expiration of the current session ({remaining} seconds from now).",
                    wanted.duration_seconds
                ),
            ));
        }
        let lifetime = aws.take_short_lifetime().unwrap_or(wanted.duration_seconds);
        (role_arn, aws.config.account_id.clone(), lifetime)
    };
    let issuer = crate::demo::aws_issuer(&shared.base_url, &account_id);
    let claims = claims(
        &issuer,
        &role_arn,
        &account_id,
        &caller.region,
        &wanted,
        now,
        lifetime,
    );
    if serde_json::to_vec(&claims).map_or(0, |bytes| bytes.len()) > MAX_PAYLOAD_BYTES {
        return Err(AwsError::sender(
            StatusCode::BAD_REQUEST,
            "JWTPayloadSizeExceededException",
            "The requested token payload size exceeds the maximum allowed size. Reduce the \
             number of request tags included in the GetWebIdentityToken API call.",
        ));
    }
    let signed = match wanted.algorithm {
        SigningAlgorithm::Rs256 => shared.aws.rsa_key.sign(&claims),
        SigningAlgorithm::Es384 => shared.aws.ec_key.sign(&claims),
    };
    let token = signed.map_err(|error| {
        tracing::error!(%error, "cannot sign a web identity token");
        AwsError {
            fault: Fault::Receiver,
            ..AwsError::sender(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "The request processing has failed because of an unknown error.",
            )
        }
    })?;
    shared.aws.lock().calls.tokens_issued += 1;
    let expiration = now + chrono::Duration::seconds(lifetime);
    let result = format!(
        "    <WebIdentityToken>{}</WebIdentityToken>\n    <Expiration>{}</Expiration>\n",
        xml::escape(&token),
        expiration.format("%Y-%m-%dT%H:%M:%SZ")
    );
    Ok(xml::success("GetWebIdentityToken", STS_NAMESPACE, &result))
}

fn injected_error(failure: &super::StsFailure) -> AwsError {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let fault = if status.is_server_error() {
        Fault::Receiver
    } else {
        Fault::Sender
    };
    AwsError {
        fault,
        ..AwsError::sender(
            status,
            failure.code.clone(),
            "Injected by the emulator's control API.",
        )
    }
}

fn validation_error(message: String) -> AwsError {
    AwsError::sender(
        StatusCode::BAD_REQUEST,
        "ValidationError",
        format!("1 validation error detected: {message}"),
    )
}

fn parse(request: &QueryRequest) -> Result<TokenRequest, AwsError> {
    let audiences = request.list("Audience");
    if audiences.is_empty() {
        return Err(validation_error(
            "Value null at 'audience' failed to satisfy constraint: Member must not be null"
                .to_owned(),
        ));
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(validation_error(format!(
            "Value at 'audience' failed to satisfy constraint: Member must have length less \
             than or equal to {MAX_AUDIENCES}"
        )));
    }
    if audiences
        .iter()
        .any(|audience| audience.is_empty() || audience.chars().count() > MAX_AUDIENCE_LENGTH)
    {
        return Err(validation_error(format!(
            "Value at 'audience.member' failed to satisfy constraint: Member must have length \
             between 1 and {MAX_AUDIENCE_LENGTH}"
        )));
    }
    let algorithm = match request.get("SigningAlgorithm") {
        None => {
            return Err(validation_error(
                "Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null"
                    .to_owned(),
            ));
        }
        Some("RS256") => SigningAlgorithm::Rs256,
        Some("ES384") => SigningAlgorithm::Es384,
        Some(other) => {
            return Err(validation_error(format!(
                "Value '{}' at 'signingAlgorithm' failed to satisfy constraint: Member must \
                 satisfy enum value set: [RS256, ES384]",
                crate::entra::errors::clip(other)
            )));
        }
    };
    let duration_seconds = match request.get("DurationSeconds") {
        None => DEFAULT_DURATION_SECONDS,
        Some(text) => text.parse::<i64>().map_err(|_| {
            validation_error(format!(
                "Value '{}' at 'durationSeconds' failed to satisfy constraint: Member must be a number",
                crate::entra::errors::clip(text)
            ))
        })?,
    };
    if duration_seconds < MIN_DURATION_SECONDS {
        return Err(validation_error(format!(
            "Value '{duration_seconds}' at 'durationSeconds' failed to satisfy constraint: \
             Member must have value greater than or equal to {MIN_DURATION_SECONDS}"
        )));
    }
    if duration_seconds > MAX_DURATION_SECONDS {
        return Err(validation_error(format!(
            "Value '{duration_seconds}' at 'durationSeconds' failed to satisfy constraint: \
             Member must have value less than or equal to {MAX_DURATION_SECONDS}"
        )));
    }
    let tags = request.key_values("Tags");
    if tags.len() > MAX_TAGS {
        return Err(validation_error(format!(
            "Value at 'tags' failed to satisfy constraint: Member must have length less than \
             or equal to {MAX_TAGS}"
        )));
    }
    Ok(TokenRequest {
        algorithm,
        audiences,
        duration_seconds,
        tags,
    })
}

fn claims(
    issuer: &str,
    role_arn: &str,
    account_id: &str,
    region: &str,
    wanted: &TokenRequest,
    now: DateTime<Utc>,
    lifetime_seconds: i64,
) -> Value {
    let audience = match wanted.audiences.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let mut aws_claims = json!({
        "aws_account": account_id,
        "source_region": region,
        "principal_id": role_arn,
    });
    if !wanted.tags.is_empty() {
        let tags: Map<String, Value> = wanted
            .tags
            .iter()
            .map(|(key, value)| (key.clone(), json!(value)))
            .collect();
        aws_claims["request_tags"] = Value::Object(tags);
    }
    let iat = now.timestamp();
    json!({
        "iss": issuer,
        "sub": role_arn,
        "aud": audience,
        "iat": iat,
        "exp": iat + lifetime_seconds,
        "jti": Uuid::new_v4().to_string(),
        AWS_CLAIMS_NAMESPACE: aws_claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> Result<TokenRequest, AwsError> {
        parse(&QueryRequest::parse(body.as_bytes()))
    }

    #[test]
    fn defaults_and_limits_of_parameters() {
        let ok = parsed("Audience.member.1=a&SigningAlgorithm=RS256").unwrap();
        assert_eq!(ok.duration_seconds, 300);
        assert_eq!(ok.audiences, ["a"]);
        let code = |body: &str| parsed(body).err().map(|error| error.code.into_owned());
        assert_eq!(
            code("SigningAlgorithm=RS256"),
            Some("ValidationError".to_owned())
        );
        assert_eq!(
            code("Audience.member.1=a"),
            Some("ValidationError".to_owned())
        );
        assert_eq!(
            code("Audience.member.1=a&SigningAlgorithm=HS256"),
            Some("ValidationError".to_owned())
        );
        assert_eq!(code("Audience.member.1=a&SigningAlgorithm=ES384"), None);
        for duration in ["59", "3601", "x", "-1"] {
            assert_eq!(
                code(&format!(
                    "Audience.member.1=a&SigningAlgorithm=RS256&DurationSeconds={duration}"
                )),
                Some("ValidationError".to_owned()),
                "{duration}"
            );
        }
        for duration in ["60", "3600"] {
            assert_eq!(
                code(&format!(
                    "Audience.member.1=a&SigningAlgorithm=RS256&DurationSeconds={duration}"
                )),
                None
            );
        }
        let eleven: String = (1..=11)
            .map(|i| format!("Audience.member.{i}=a{i}&"))
            .collect();
        assert_eq!(
            code(&format!("{eleven}SigningAlgorithm=RS256")),
            Some("ValidationError".to_owned())
        );
        assert_eq!(
            code("Audience.member.1=&SigningAlgorithm=RS256"),
            Some("ValidationError".to_owned())
        );
    }

    #[test]
    fn one_audience_is_a_string_several_a_list() {
        let now = Utc::now();
        let mut wanted = parsed(
            "Audience.member.1=a&SigningAlgorithm=RS256&Tags.member.1.Key=k&Tags.member.1.Value=v",
        )
        .unwrap();
        let one = claims(
            "https://i",
            "arn:r",
            "123456789012",
            "us-east-1",
            &wanted,
            now,
            300,
        );
        assert_eq!(one["aud"], "a");
        assert_eq!(one["exp"].as_i64(), Some(now.timestamp() + 300));
        assert_eq!(one[AWS_CLAIMS_NAMESPACE]["request_tags"]["k"], "v");
        assert_eq!(one[AWS_CLAIMS_NAMESPACE]["aws_account"], "123456789012");
        wanted.audiences.push("b".to_owned());
        let two = claims(
            "https://i",
            "arn:r",
            "123456789012",
            "us-east-1",
            &wanted,
            now,
            300,
        );
        assert_eq!(two["aud"], json!(["a", "b"]));
    }
}
