//! `dp-operator federation`: what to register on the Entra app so that it accepts the functions'
//! AWS tokens (the secretless credential): the issuer, one subject per function role, the
//! audience, and the body of `az ad app federated-credential create` for each.
//!
//! The issuer is read from a token STS issues to whoever runs this command (its `iss` is the
//! account's issuer URL, the same for every role of the account), unless `--issuer` or
//! `DP_FEDERATION_ISSUER` gives it: no IAM SDK is needed. Subjects are the functions' role ARNs
//! (`--role-arn`, from the stack outputs); without one, the token's own subject is shown, which
//! is the identity running the command, not necessarily a function's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use defender_partner::config::{ENV_CLIENT_ID, ENV_FEDERATION_AUDIENCE};
use defender_partner::entra::federated::{
    DEFAULT_AUDIENCE, FederatedIdentity, MIN_DURATION_SECONDS, StsWebIdentitySource,
    WebIdentityTokenRequest, WebIdentityTokenSource,
};
use secrecy::ExposeSecret;
use serde::Serialize;

pub const ENV_FEDERATION_ISSUER: &str = "DP_FEDERATION_ISSUER";
/// Entra ID's limit on a federated credential's name.
const MAX_NAME_LENGTH: usize = 120;

#[derive(clap::Args)]
pub struct FederationArgs {
    /// The account's issuer URL (else DP_FEDERATION_ISSUER, else read from an STS token).
    #[arg(long)]
    issuer: Option<String>,
    /// A function's role ARN (repeat for each; the stack's *RoleArn outputs).
    #[arg(long = "role-arn")]
    role_arns: Vec<String>,
    /// The token audience (else DP_FEDERATION_AUDIENCE, else api://AzureADTokenExchange).
    #[arg(long)]
    audience: Option<String>,
    /// The app registration's client id, for the printed command (else DP_CLIENT_ID).
    #[arg(long)]
    app_id: Option<String>,
    /// Prefix of each federated credential's name.
    #[arg(long, default_value = "defender-partner")]
    name: String,
}

/// What to register: one FIC per subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FederationPlan {
    pub app_id: Option<String>,
    pub issuer: String,
    pub audience: String,
    pub subjects: Vec<String>,
    /// The subject is the identity running this command, not a function role given with
    /// `--role-arn`.
    pub subject_is_caller: bool,
    pub credentials: Vec<FicBody>,
}

/// The `--parameters` body of `az ad app federated-credential create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FicBody {
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub description: String,
    pub audiences: Vec<String>,
}

impl FederationPlan {
    pub fn new(
        app_id: Option<String>,
        issuer: String,
        audience: String,
        subjects: Vec<String>,
        subject_is_caller: bool,
        name_prefix: &str,
    ) -> FederationPlan {
        let credentials = subjects
            .iter()
            .map(|subject| FicBody {
                name: fic_name(name_prefix, subject),
                issuer: issuer.clone(),
                subject: subject.clone(),
                description: format!(
                    "defender-partner: AWS role {subject} (secretless credential)"
                ),
                audiences: vec![audience.clone()],
            })
            .collect();
        FederationPlan {
            app_id,
            issuer,
            audience,
            subjects,
            subject_is_caller,
            credentials,
        }
    }

    /// The plain values, then per subject the JSON body and the command that registers it.
    pub fn to_text(&self) -> String {
        let app = self.app_id.as_deref().unwrap_or("<app-id>");
        let mut text = format!(
            "Register on the Entra app {app} one federated identity credential per function role:\n\n  issuer:    {}\n  audience:  {}\n",
            self.issuer, self.audience
        );
        for subject in &self.subjects {
            text.push_str(&format!("  subject:   {subject}\n"));
        }
        if self.subject_is_caller {
            text.push_str(
                "\nNote: the subject above is the identity running dp-operator. Pass --role-arn with each\nfunction's role ARN (the stack outputs MintTokenRoleArn, ConsentSigninRoleArn,\nFetchIncidentsRoleArn) to get the subjects Entra ID will see.\n",
            );
        }
        text.push_str(
            "\nSubjects are compared case-sensitively; at most 20 federated credentials per app.\n",
        );
        for body in &self.credentials {
            let json = serde_json::to_string_pretty(body).expect("plain strings serialize");
            text.push_str(&format!(
                "\n# {}\ncat > {}.json <<'JSON'\n{json}\nJSON\naz ad app federated-credential create --id {app} --parameters {}.json\n",
                body.subject, body.name, body.name
            ));
        }
        text
    }
}

/// `{prefix}-{role name}`, in the characters a FIC name allows, within its length.
fn fic_name(prefix: &str, subject: &str) -> String {
    let role = subject.rsplit(['/', ':']).next().unwrap_or(subject);
    let name: String = format!("{prefix}-{role}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.chars().take(MAX_NAME_LENGTH).collect()
}

fn setting(flag: Option<String>, variable: &str) -> Option<String> {
    flag.or_else(|| std::env::var(variable).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// Reads what is not given from one STS token (`iss`, `sub`), unverified.
async fn caller_identity(
    source: &dyn WebIdentityTokenSource,
    audience: &str,
) -> anyhow::Result<FederatedIdentity> {
    let token = source
        .web_identity_token(&WebIdentityTokenRequest {
            audience: audience.to_owned(),
            duration: Duration::from_secs(MIN_DURATION_SECONDS),
        })
        .await
        .context("could not get a token from STS to read the issuer (or pass --issuer)")?;
    FederatedIdentity::from_jwt(token.jwt.expose_secret())
        .context("the STS token's payload could not be read")
}

pub async fn plan(
    args: FederationArgs,
    source: Arc<dyn WebIdentityTokenSource>,
) -> anyhow::Result<FederationPlan> {
    let audience = setting(args.audience, ENV_FEDERATION_AUDIENCE)
        .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
    let issuer = setting(args.issuer, ENV_FEDERATION_ISSUER);
    let role_arns: Vec<String> = args
        .role_arns
        .into_iter()
        .map(|arn| arn.trim().to_owned())
        .filter(|arn| !arn.is_empty())
        .collect();
    let (issuer, subjects, subject_is_caller) = match (issuer, role_arns.is_empty()) {
        (Some(issuer), false) => (issuer, role_arns, false),
        (issuer, _) => {
            let identity = caller_identity(source.as_ref(), &audience).await?;
            let issuer = issuer.unwrap_or(identity.iss);
            if role_arns.is_empty() {
                (issuer, vec![identity.sub], true)
            } else {
                (issuer, role_arns, false)
            }
        }
    };
    Ok(FederationPlan::new(
        setting(args.app_id, ENV_CLIENT_ID),
        issuer,
        audience,
        subjects,
        subject_is_caller,
        &args.name,
    ))
}

pub async fn run(args: FederationArgs, json: bool) -> anyhow::Result<()> {
    let source = Arc::new(StsWebIdentitySource::from_env_when_needed());
    let plan = plan(args, source).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.to_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use defender_partner::entra::federated::{FederationError, WebIdentityToken};
    use secrecy::SecretString;

    use super::*;

    const ISSUER: &str = "https://0f1e2d3c.tokens.sts.global.api.aws";
    const MINT: &str = "arn:aws:iam::123456789012:role/dp-MintTokenFunctionRole-ABC";
    const FETCH: &str = "arn:aws:iam::123456789012:role/dp-FetchIncidentsFunctionRole-DEF";

    struct FakeSts(AtomicUsize);

    #[async_trait]
    impl WebIdentityTokenSource for FakeSts {
        async fn web_identity_token(
            &self,
            request: &WebIdentityTokenRequest,
        ) -> Result<WebIdentityToken, FederationError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            assert_eq!(request.duration, Duration::from_secs(60));
            let payload = serde_json::json!({"iss": ISSUER, "sub": "arn:aws:iam::123456789012:role/Operator", "aud": request.audience});
            Ok(WebIdentityToken {
                jwt: SecretString::from(format!(
                    "e30.{}.secret-signature",
                    URL_SAFE_NO_PAD.encode(payload.to_string())
                )),
                expires_at: chrono::Utc::now() + chrono::Duration::seconds(60),
            })
        }
    }

    fn args(issuer: Option<&str>, roles: &[&str]) -> FederationArgs {
        FederationArgs {
            issuer: issuer.map(str::to_owned),
            role_arns: roles.iter().map(|role| role.to_string()).collect(),
            audience: Some(DEFAULT_AUDIENCE.into()),
            app_id: Some("11111111-1111-4111-8111-111111111111".into()),
            name: "defender-partner".into(),
        }
    }

    #[test]
    fn the_body_has_the_fields_az_expects() {
        let plan = FederationPlan::new(
            Some("app".into()),
            ISSUER.into(),
            DEFAULT_AUDIENCE.into(),
            vec![MINT.into()],
            false,
            "defender-partner",
        );
        let body = serde_json::to_value(&plan.credentials[0]).unwrap();
        assert_eq!(
            body["name"],
            "defender-partner-dp-MintTokenFunctionRole-ABC"
        );
        assert_eq!(body["issuer"], ISSUER);
        assert_eq!(body["subject"], MINT);
        assert_eq!(body["audiences"], serde_json::json!([DEFAULT_AUDIENCE]));
        assert!(body["description"].as_str().unwrap().contains(MINT));
        let text = plan.to_text();
        assert!(text.contains("az ad app federated-credential create --id app --parameters defender-partner-dp-MintTokenFunctionRole-ABC.json"), "{text}");
        assert!(text.contains(&format!("issuer:    {ISSUER}")));
        assert!(!text.contains("Note:"));
    }

    #[test]
    fn names_are_within_entra_limits() {
        let long = format!("arn:aws:iam::1:role/{}", "x".repeat(200));
        let name = fic_name("defender partner", &long);
        assert!(name.len() <= MAX_NAME_LENGTH);
        assert!(name.starts_with("defender-partner-x"));
    }

    #[tokio::test]
    async fn given_issuer_and_roles_no_sts_call_is_made() {
        let sts = Arc::new(FakeSts(AtomicUsize::new(0)));
        let plan = plan(args(Some(ISSUER), &[MINT, FETCH]), sts.clone())
            .await
            .unwrap();
        assert_eq!(sts.0.load(Ordering::SeqCst), 0);
        assert_eq!(plan.subjects, vec![MINT, FETCH]);
        assert_eq!(plan.credentials.len(), 2);
    }

    #[tokio::test]
    async fn the_issuer_and_subject_are_read_from_one_sts_token() {
        let sts = Arc::new(FakeSts(AtomicUsize::new(0)));
        let from_token = plan(args(None, &[]), sts.clone()).await.unwrap();
        assert_eq!(sts.0.load(Ordering::SeqCst), 1);
        assert_eq!(from_token.issuer, ISSUER);
        assert_eq!(
            from_token.subjects,
            vec!["arn:aws:iam::123456789012:role/Operator"]
        );
        assert!(from_token.subject_is_caller);
        let text = from_token.to_text();
        assert!(text.contains("--role-arn"), "{text}");
        assert!(!text.contains("secret-signature"), "the JWT leaked: {text}");
        // Roles given, issuer read from the token.
        let with_roles = plan(args(None, &[MINT]), sts).await.unwrap();
        assert_eq!(with_roles.issuer, ISSUER);
        assert_eq!(with_roles.subjects, vec![MINT]);
        assert!(!with_roles.subject_is_caller);
    }
}
