//! Who is calling `mint-token`, as a key the operator can map.
//!
//! Through the HTTP API with `AWS_IAM` authorization, API Gateway puts the signer's principal in
//! `requestContext.authorizer.iam.userArn`. A role's sessions sign as
//! `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`; the caller is the role,
//! `arn:aws:iam::ACCOUNT:role/ROLE`. That session ARN carries no IAM path, so a role is matched
//! by account and name alone (unique per account whatever the path), and an operator's
//! `role/PATH/ROLE` is stored without its path. IAM names are unique regardless of case, so keys
//! are lower case.
//!
//! A direct invocation (`lambda:InvokeFunction`) carries no caller identity at all (the Lambda
//! context has none for IAM callers), and nothing in a payload is believed: it is the caller
//! [`DIRECT_INVOKE`], with a mapping of its own.

use std::fmt;

/// The caller key of every direct invocation.
pub const DIRECT_INVOKE: &str = "direct-invoke";

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An IAM principal authenticated by API Gateway, normalised ([`principal_key`]).
    Iam(String),
    /// Invoked directly: no identity to go by.
    DirectInvoke,
    /// An HTTP request without an IAM identity (a route deployed without `AWS_IAM`): never
    /// mappable, so treated as every unmapped caller is (refused once any mapping exists, or
    /// always with `enforced`).
    Anonymous,
    /// The function itself (update-incident minting for its own write-back): never scoped.
    Internal,
}

impl Caller {
    /// The caller of an HTTP API request, from its IAM authorizer's `userArn`.
    pub fn from_user_arn(user_arn: Option<&str>) -> Caller {
        match user_arn.map(str::trim).filter(|arn| !arn.is_empty()) {
            Some(arn) => Caller::Iam(principal_key(arn).unwrap_or_else(|_| arn.to_lowercase())),
            None => Caller::Anonymous,
        }
    }

    /// The key its mapping is stored under.
    pub fn key(&self) -> &str {
        match self {
            Caller::Iam(key) => key,
            Caller::DirectInvoke => DIRECT_INVOKE,
            Caller::Anonymous => "anonymous",
            Caller::Internal => "internal",
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Whether the caller an HTTP-shaped event names may be believed: with `qualifier` (the alias API
/// Gateway invokes) configured, only when the function was invoked through that alias
/// (`invoked_arn` = `arn:…:function:NAME:QUALIFIER`); anyone else who sends such an event invoked
/// the function directly.
pub fn http_identity_trusted(qualifier: Option<&str>, invoked_arn: &str) -> bool {
    match qualifier {
        None => true,
        Some(qualifier) => {
            let parts: Vec<&str> = invoked_arn.split(':').collect();
            parts.len() == 8 && parts[5] == "function" && parts[7] == qualifier
        }
    }
}

/// [`http_identity_trusted`] for an event that is HTTP-shaped, logged when its caller is not
/// believed: whoever sent it invoked the function directly, and is `direct-invoke`.
pub fn http_event_trusted(qualifier: Option<&str>, invoked_arn: &str) -> bool {
    let trusted = http_identity_trusted(qualifier, invoked_arn);
    if !trusted {
        tracing::warn!(
            invoked = %invoked_arn,
            "an HTTP-shaped event invoked outside the API's alias: its caller is direct-invoke"
        );
    }
    trusted
}

/// An operator's name for a caller: `direct-invoke`, or an IAM principal ARN (a role's, with or
/// without path, or an assumed-role session's, which names its role), as its stored key.
pub fn caller_key(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case(DIRECT_INVOKE) {
        return Ok(DIRECT_INVOKE.to_owned());
    }
    principal_key(text)
}

/// The normalised, lower-case key of an IAM principal ARN: an assumed-role session becomes its
/// role, a role or user loses its path; the account root and federated users stay as they are.
pub fn principal_key(arn: &str) -> Result<String, String> {
    let invalid = || {
        format!(
            "{arn:?} is not an IAM principal ARN (arn:aws:iam::ACCOUNT:role/NAME or \
             arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION) nor {DIRECT_INVOKE}"
        )
    };
    let parts: Vec<&str> = arn.trim().splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(invalid());
    };
    let account_ok = account.len() == 12 && account.bytes().all(|byte| byte.is_ascii_digit());
    if prefix != "arn" || partition.is_empty() || !region.is_empty() || !account_ok {
        return Err(invalid());
    }
    let (kind, path) = resource.split_once('/').unwrap_or((resource, ""));
    let segments: Vec<&str> = path.split('/').collect();
    let name_ok = |name: &&str| !name.is_empty() && name.bytes().all(is_iam_name_byte);
    let normalised = match (service, kind) {
        ("sts", "assumed-role") if segments.len() == 2 && segments.iter().all(name_ok) => {
            format!("{partition}:iam::{account}:role/{}", segments[0])
        }
        ("iam", "role" | "user") if segments.last().is_some_and(name_ok) => {
            format!(
                "{partition}:iam::{account}:{kind}/{}",
                segments[segments.len() - 1]
            )
        }
        ("iam", "root") if path.is_empty() => format!("{partition}:iam::{account}:root"),
        ("sts", "federated-user") if segments.len() == 1 && segments.iter().all(name_ok) => {
            format!("{partition}:sts::{account}:federated-user/{path}")
        }
        _ => return Err(invalid()),
    };
    Ok(format!("arn:{normalised}").to_lowercase())
}

/// Characters of IAM names and role session names.
fn is_iam_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"+=,.@_-".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_role_and_a_role_loses_its_path_and_case() {
        let role = "arn:aws:iam::123456789012:role/soc-workflow";
        for arn in [
            "arn:aws:sts::123456789012:assumed-role/soc-workflow/soc-workflow",
            "arn:aws:sts::123456789012:assumed-role/SOC-Workflow/i-0abc@example.com",
            "arn:aws:iam::123456789012:role/soc-workflow",
            "arn:aws:iam::123456789012:role/service-role/teams/SOC-workflow",
            " arn:aws:iam::123456789012:role/soc-workflow ",
        ] {
            assert_eq!(principal_key(arn).unwrap(), role, "{arn}");
        }
        assert_eq!(
            principal_key("arn:aws-us-gov:sts::123456789012:assumed-role/soc/s").unwrap(),
            "arn:aws-us-gov:iam::123456789012:role/soc"
        );
        assert_eq!(
            principal_key("arn:aws:iam::123456789012:user/ops/Alice").unwrap(),
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_eq!(
            principal_key("arn:aws:iam::123456789012:root").unwrap(),
            "arn:aws:iam::123456789012:root"
        );
    }

    #[test]
    fn other_accounts_and_shapes_stay_apart_or_are_refused() {
        assert_ne!(
            principal_key("arn:aws:iam::123456789012:role/soc").unwrap(),
            principal_key("arn:aws:iam::210987654321:role/soc").unwrap()
        );
        for bad in [
            "soc-workflow",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::12345:role/soc",
            "arn:aws:iam:us-east-1:123456789012:role/soc",
            "arn:aws:sts::123456789012:assumed-role/soc",
            "arn:aws:sts::123456789012:assumed-role/soc/s/extra",
            "arn:aws:iam::123456789012:role/so*c",
            "arn:aws:iam::123456789012:group/admins",
            "arn:aws:lambda:us-east-1:123456789012:function:mint-token",
            "*",
        ] {
            assert!(principal_key(bad).is_err(), "{bad}");
        }
        assert_eq!(caller_key(" Direct-Invoke ").unwrap(), DIRECT_INVOKE);
        assert!(caller_key("anonymous").is_err(), "never mappable");
        assert!(caller_key("internal").is_err(), "never mappable");
    }

    #[test]
    fn an_http_identity_is_believed_only_through_the_api_alias_when_one_is_set() {
        let function = "arn:aws:lambda:us-east-1:123456789012:function:mint-token";
        assert!(http_identity_trusted(None, function));
        assert!(http_identity_trusted(
            Some("api"),
            &format!("{function}:api")
        ));
        for invoked in [
            function.to_owned(),
            format!("{function}:$LATEST"),
            format!("{function}:7"),
            format!("{function}:apis"),
        ] {
            assert!(!http_identity_trusted(Some("api"), &invoked), "{invoked}");
        }
    }

    #[test]
    fn an_http_caller_is_its_principal_or_anonymous() {
        assert_eq!(
            Caller::from_user_arn(Some(
                "arn:aws:sts::123456789012:assumed-role/soc-workflow/soc-workflow"
            )),
            Caller::Iam("arn:aws:iam::123456789012:role/soc-workflow".into())
        );
        assert_eq!(Caller::from_user_arn(None), Caller::Anonymous);
        assert_eq!(Caller::from_user_arn(Some(" ")), Caller::Anonymous);
        // An unexpected shape is kept (lower case): it matches no mapping the operator can make.
        assert_eq!(
            Caller::from_user_arn(Some("arn:aws:iam::123456789012:group/X")).key(),
            "arn:aws:iam::123456789012:group/x"
        );
        assert_eq!(Caller::DirectInvoke.key(), DIRECT_INVOKE);
    }
}
