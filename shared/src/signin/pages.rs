//! What a user sees after signing in: who, which tenant, what was granted — never a token, a
//! code or the `state`.

use crate::redirect::{Page, escape};
use crate::tenant_id::TenantId;

/// What the granted permissions lack for the API the sign-in was for: its name and the missing
/// permission groups (alternatives joined by `|`).
pub struct MissingScopes<'a> {
    pub api_name: &'a str,
    pub missing: Vec<String>,
}

pub fn signed_in(
    tenant: &TenantId,
    user_name: Option<&str>,
    scopes: &[String],
    kept: bool,
    lacking: Option<MissingScopes<'_>>,
) -> Page {
    let who = user_name.map_or_else(
        || "you".to_owned(),
        |name| format!("<strong>{}</strong>", escape(name)),
    );
    let granted = if scopes.is_empty() {
        "<p>No delegated permissions were reported.</p>".to_owned()
    } else {
        let items: String = scopes
            .iter()
            .map(|scope| format!("<li>{}</li>", escape(scope)))
            .collect();
        format!("<p>Permissions granted:</p><ul id=\"scopes\">{items}</ul>")
    };
    let kept = if kept {
        "<p>Your security partner's automation may now act as you, with your own rights, until you sign out everywhere, your password changes, or an administrator revokes the sign-in.</p>"
    } else {
        "<p>Nothing was kept: your security partner's automation cannot act as you without a new sign-in.</p>"
    };
    let lacking = lacking.map_or_else(String::new, |lacking| {
        format!(
            "<p id=\"scopes-missing\">These permissions are not enough for {}: it also needs {}. Ask your administrator to grant them, then sign in again; until then your security partner's automation cannot read it as you.</p>",
            escape(lacking.api_name),
            escape(&lacking.missing.join(" and "))
        )
    });
    Page::new(
        200,
        "Signed in",
        format!(
            "<p id=\"who\">Signed in as {who} to tenant <strong id=\"tenant\">{}</strong>.</p>{granted}{lacking}{kept}<p>You can close this window.</p>",
            escape(tenant.as_str())
        ),
    )
}

pub fn refused(error: &str, description: Option<&str>) -> Page {
    let detail = description
        .map(|text| format!("<p>Microsoft said: {}</p>", escape(text)))
        .unwrap_or_default();
    Page::new(
        200,
        "Sign-in was not completed",
        format!(
            "<p>The sign-in ended without granting access (<code>{}</code>). Nothing was kept.</p>{detail}<p>To try again, start a new sign-in.</p>",
            escape(error)
        ),
    )
}

pub fn wrong_tenant(asked: &TenantId) -> Page {
    Page::new(
        403,
        "Signed in to another tenant",
        format!(
            "<p>This sign-in was for tenant <strong>{}</strong>, but Microsoft signed you in to another one. Nothing was kept.</p><p>Start a new sign-in and choose an account of that tenant.</p>",
            escape(asked.as_str())
        ),
    )
}

pub fn needs_more(what: &str) -> Page {
    Page::new(
        403,
        "Sign-in needs one more step",
        format!(
            "<p>{}</p><p>Nothing was kept. Start a new sign-in once this is done.</p>",
            escape(what)
        ),
    )
}

pub fn expired() -> Page {
    Page::new(
        410,
        "This sign-in link has expired",
        "<p>Sign-in links are valid for a few minutes. Nothing was kept.</p><p>Start a new sign-in.</p>".into(),
    )
}

pub fn replayed() -> Page {
    Page::new(
        409,
        "This sign-in link was already used",
        "<p>Each sign-in link works once. Nothing more was kept.</p><p>Start a new sign-in if you need one.</p>".into(),
    )
}

pub fn invalid() -> Page {
    Page::new(
        400,
        "This sign-in link is not valid",
        "<p>This sign-in was not started by your security partner's service, or it was changed. Nothing was kept.</p>".into(),
    )
}

pub fn error(support_ref: &str) -> Page {
    Page::new(
        503,
        "Something went wrong",
        format!(
            "<p>Your sign-in could not be completed because of a problem on our side. Nothing was kept. Please try again in a few minutes, or contact your security partner with support reference <code>{}</code>.</p>",
            escape(support_ref)
        ),
    )
}
