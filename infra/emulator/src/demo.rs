//! Ids of the built-in demo scenario (`scenarios/demo.json`), so that the demo program and tests
//! need not repeat them. A unit test keeps them equal to the file.

/// The partner's multi-tenant app.
pub const CLIENT_ID: &str = "11111111-1111-4111-8111-111111111111";
/// Its client secret. Demo data: it protects nothing.
pub const CLIENT_SECRET: &str = "demo-secret-not-for-production";

/// Consented to M365 Defender (`Incident.Read.All`), Defender for Endpoint (`Alert.Read.All`)
/// and Graph (`SecurityIncident.Read.All`).
pub const CONTOSO_TENANT_ID: &str = "22222222-2222-4222-8222-222222222222";
pub const CONTOSO_DOMAIN: &str = "contoso.onmicrosoft.com";

/// Consented to M365 Defender only.
pub const FABRIKAM_TENANT_ID: &str = "33333333-3333-4333-8333-333333333333";
pub const FABRIKAM_DOMAIN: &str = "fabrikam.onmicrosoft.com";

/// Never consented: every token request gets AADSTS700016.
pub const NORTHWIND_TENANT_ID: &str = "44444444-4444-4444-8444-444444444444";
pub const NORTHWIND_DOMAIN: &str = "northwind.onmicrosoft.com";

/// Never consented either: the tenant the demo onboards through an admin consent link.
pub const WOODGROVE_TENANT_ID: &str = "55555555-5555-4555-8555-555555555555";
pub const WOODGROVE_DOMAIN: &str = "woodgrove.onmicrosoft.com";

/// Redirect URIs registered on the app for admin consent (loopback: any port matches).
pub const CONSENT_REDIRECT_URI: &str = "http://localhost/consent/callback";
pub const CONSENT_REDIRECT_URI_IP: &str = "http://127.0.0.1/consent/callback";

/// Redirect URIs registered for interactive sign-in (authorization code + PKCE).
pub const SIGNIN_REDIRECT_URI: &str = "http://localhost/signin/callback";
pub const SIGNIN_REDIRECT_URI_IP: &str = "http://127.0.0.1/signin/callback";

/// Contoso test users. The analyst reads incidents and alerts (`Security Reader`).
pub const CONTOSO_ANALYST_OID: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const CONTOSO_ANALYST_UPN: &str = "analyst@contoso.onmicrosoft.com";
/// `Security Operator`, and Conditional Access requires MFA (`mfa_required`).
pub const CONTOSO_MFA_USER_OID: &str = "aaaaaaaa-0000-4000-8000-000000000002";
pub const CONTOSO_MFA_USER_UPN: &str = "secops@contoso.onmicrosoft.com";
/// No portal role: the data APIs answer 403 to its delegated calls.
pub const CONTOSO_NO_ROLE_OID: &str = "aaaaaaaa-0000-4000-8000-000000000003";
pub const CONTOSO_NO_ROLE_UPN: &str = "helpdesk@contoso.onmicrosoft.com";
/// Fabrikam's analyst: Fabrikam has given no delegated consent (AADSTS65001 for `.default`).
/// Each demo tenant's Global Administrator (the administrator who consents in the demo and the
/// onboarding tests), `admin@{tenant domain}`.
pub const CONTOSO_ADMIN_UPN: &str = "admin@contoso.onmicrosoft.com";
pub const FABRIKAM_ADMIN_UPN: &str = "admin@fabrikam.onmicrosoft.com";
pub const NORTHWIND_ADMIN_UPN: &str = "admin@northwind.onmicrosoft.com";
pub const WOODGROVE_ADMIN_UPN: &str = "admin@woodgrove.onmicrosoft.com";
pub const WOODGROVE_ADMIN_OID: &str = "dddddddd-0000-4000-8000-0000000000ad";
/// A Woodgrove user without an administrator role.
pub const WOODGROVE_ANALYST_UPN: &str = "analyst@woodgrove.onmicrosoft.com";

pub const FABRIKAM_ANALYST_OID: &str = "bbbbbbbb-0000-4000-8000-000000000001";
pub const FABRIKAM_ANALYST_UPN: &str = "analyst@fabrikam.onmicrosoft.com";

/// The emulated AWS account (`aws.account_id` when the scenario names none).
pub const AWS_ACCOUNT_ID: &str = "123456789012";
/// The role every access key id stands for unless the scenario maps it (`aws.default_role_arn`):
/// the `sub` of the emulator's AWS JWTs and the subject of the demo app's federated credential.
pub const AWS_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/defender-partner-mint-token";
/// The audience Entra expects in a federated assertion (public cloud).
pub const FIC_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Where the emulator serves the AWS account's OIDC issuer, below its base URL.
pub const AWS_ISSUER_PATH: &str = "/aws-issuer/123456789012";
/// Stands for the emulator's base URL in a scenario's federated credential issuers, which
/// cannot know the port chosen at start (`"{emulator}/aws-issuer/123456789012"`).
pub const EMULATOR_URL_PLACEHOLDER: &str = "{emulator}";

/// The issuer URL of the emulated AWS account `account_id` on the emulator at `base_url`.
pub fn aws_issuer(base_url: &str, account_id: &str) -> String {
    format!("{}/aws-issuer/{account_id}", base_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scenario;

    #[test]
    fn constants_match_the_demo_file() {
        let demo = Scenario::demo();
        assert_eq!(demo.apps[0].client_id, CLIENT_ID);
        assert_eq!(demo.apps[0].secrets[0].value, CLIENT_SECRET);
        let fic = &demo.apps[0].federated_credentials[0];
        assert_eq!(
            fic.issuer,
            format!("{EMULATOR_URL_PLACEHOLDER}{AWS_ISSUER_PATH}")
        );
        assert_eq!(
            aws_issuer(EMULATOR_URL_PLACEHOLDER, AWS_ACCOUNT_ID),
            fic.issuer
        );
        assert_eq!(fic.subject, AWS_ROLE_ARN);
        assert_eq!(fic.audiences, [FIC_AUDIENCE]);
        assert_eq!(demo.aws.default_role_arn, AWS_ROLE_ARN);
        assert_eq!(demo.aws.account_id, AWS_ACCOUNT_ID);
        let tenants: Vec<(&str, &str)> = demo
            .tenants
            .iter()
            .map(|t| (t.id.as_str(), t.domains[0].as_str()))
            .collect();
        assert_eq!(
            tenants,
            [
                (CONTOSO_TENANT_ID, CONTOSO_DOMAIN),
                (FABRIKAM_TENANT_ID, FABRIKAM_DOMAIN),
                (NORTHWIND_TENANT_ID, NORTHWIND_DOMAIN),
                (WOODGROVE_TENANT_ID, WOODGROVE_DOMAIN)
            ]
        );
        assert_eq!(
            demo.apps[0].redirect_uris,
            [
                CONSENT_REDIRECT_URI,
                CONSENT_REDIRECT_URI_IP,
                SIGNIN_REDIRECT_URI,
                SIGNIN_REDIRECT_URI_IP
            ]
        );
        let users: Vec<(&str, &str)> = demo
            .tenants
            .iter()
            .flat_map(|t| t.users.iter())
            .map(|u| (u.oid.as_str(), u.upn.as_str()))
            .collect();
        assert_eq!(
            users,
            [
                (CONTOSO_ANALYST_OID, CONTOSO_ANALYST_UPN),
                (CONTOSO_MFA_USER_OID, CONTOSO_MFA_USER_UPN),
                (CONTOSO_NO_ROLE_OID, CONTOSO_NO_ROLE_UPN),
                ("aaaaaaaa-0000-4000-8000-0000000000ad", CONTOSO_ADMIN_UPN),
                (FABRIKAM_ANALYST_OID, FABRIKAM_ANALYST_UPN),
                ("bbbbbbbb-0000-4000-8000-0000000000ad", FABRIKAM_ADMIN_UPN),
                ("cccccccc-0000-4000-8000-0000000000ad", NORTHWIND_ADMIN_UPN),
                (WOODGROVE_ADMIN_OID, WOODGROVE_ADMIN_UPN),
                (
                    "dddddddd-0000-4000-8000-000000000001",
                    WOODGROVE_ANALYST_UPN
                )
            ]
        );
    }
}
