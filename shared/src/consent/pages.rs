//! The pages a customer's administrator sees during onboarding: short, plain, and free of
//! anything secret (no token, no code, no `state`).

use crate::redirect::{Page, escape};
use crate::tenant_id::TenantId;

pub fn success(tenant: &TenantId, customer_ref: &str, roles: &[String]) -> Page {
    let granted = if roles.is_empty() {
        "<p>No application permissions were reported.</p>".to_owned()
    } else {
        let items: String = roles
            .iter()
            .map(|role| format!("<li>{}</li>", escape(role)))
            .collect();
        format!("<p>Permissions granted:</p><ul>{items}</ul>")
    };
    Page::new(
        200,
        "Onboarding complete",
        format!(
            "<p>Your tenant <strong>{}</strong> is connected (reference {}). Your security partner can now read the data you granted.</p>{granted}<p>You can close this window.</p>",
            escape(tenant.as_str()),
            escape(customer_ref)
        ),
    )
}

pub fn pending(tenant: &TenantId, support_ref: &str) -> Page {
    Page::new(
        202,
        "Consent received, not yet confirmed",
        format!(
            "<p>Microsoft reported your consent for tenant <strong>{}</strong>, but it could not be confirmed yet: changes can take a few minutes to take effect.</p><p>Nothing more is needed from you now. Your security partner will confirm it automatically; if it is not confirmed within an hour, please contact them and quote support reference <code>{}</code>.</p>",
            escape(tenant.as_str()),
            escape(support_ref)
        ),
    )
}

pub fn declined(error: &str, description: Option<&str>) -> Page {
    let detail = description
        .map(|text| format!("<p>Microsoft said: {}</p>", escape(text)))
        .unwrap_or_default();
    Page::new(
        200,
        "Consent was not given",
        format!(
            "<p>The permissions were not granted (<code>{}</code>), so your tenant is not connected.</p>{detail}<p>If this was a mistake, ask your security partner for a new link.</p>",
            escape(error)
        ),
    )
}

/// The administrator's sign-in proved the tenant, but Microsoft did not confirm the app's
/// permissions before the function had to answer: the fetch cycle finishes it.
pub fn almost_done(tenant: &TenantId, support_ref: &str) -> Page {
    Page::new(
        202,
        "Almost done",
        format!(
            "<p>You signed in as an administrator of tenant <strong>{}</strong> and your consent was received. Microsoft has not confirmed the permissions yet; your security partner will finish the onboarding automatically within the next minutes.</p><p>Nothing more is needed from you. If the connection is not confirmed within an hour, contact your security partner and quote support reference <code>{}</code>.</p>",
            escape(tenant.as_str()),
            escape(support_ref)
        ),
    )
}

/// The link was bound to one tenant, or the administrator signed in to another one than
/// Microsoft's redirect named.
pub fn wrong_tenant(support_ref: &str) -> Page {
    Page::new(
        403,
        "This link is for another organisation",
        format!(
            "<p>This onboarding link was issued for a different Microsoft Entra tenant than the one you consented for or signed in to. Nothing was recorded.</p><p>Sign in with an administrator account of the organisation the link was issued for, or ask your security partner for a new link (support reference <code>{}</code>).</p>",
            escape(support_ref)
        ),
    )
}

/// The person who signed in holds no role able to grant admin consent.
pub fn not_an_administrator() -> Page {
    Page::new(
        403,
        "An administrator must complete this step",
        "<p>The account you signed in with does not hold an administrator role that can grant consent for your organisation (Global, Privileged Role, Cloud Application or Application Administrator). Nothing was recorded.</p><p>Please ask such an administrator to open the link your security partner sent.</p>".into(),
    )
}

/// The administrator's sign-in after the consent did not complete or did not prove who
/// they are.
pub fn sign_in_not_completed(reason: &str, support_ref: &str) -> Page {
    Page::new(
        400,
        "Sign-in was not completed",
        format!(
            "<p>To finish onboarding, the administrator who consented signs in once so that your security partner knows which organisation consented ({}). Nothing was recorded.</p><p>Open the link your security partner sent again, or contact them with support reference <code>{}</code>.</p>",
            escape(reason),
            escape(support_ref)
        ),
    )
}

pub fn registered_elsewhere(support_ref: &str) -> Page {
    Page::new(
        409,
        "This tenant is already connected",
        format!(
            "<p>This tenant is already connected to your security partner under another reference, so this link cannot change it. Nothing was recorded.</p><p>Please contact your security partner and quote support reference <code>{}</code>.</p>",
            escape(support_ref)
        ),
    )
}

pub fn invalid() -> Page {
    Page::new(
        400,
        "This link is not valid",
        "<p>This onboarding link was not issued by your security partner, or it was changed. Nothing was recorded.</p><p>Please ask your security partner for a new link.</p>".into(),
    )
}

pub fn expired() -> Page {
    Page::new(
        410,
        "This link has expired",
        "<p>Onboarding links are valid for a limited time. Nothing was recorded.</p><p>Please ask your security partner for a new link.</p>".into(),
    )
}

pub fn replayed() -> Page {
    Page::new(
        409,
        "This link was already used",
        "<p>Each onboarding link works once, and this one has been used. If your onboarding did not finish, ask your security partner for a new link.</p>".into(),
    )
}

pub fn error(support_ref: &str) -> Page {
    Page::new(
        503,
        "Something went wrong",
        format!(
            "<p>Your consent could not be recorded because of a problem on our side. Please try again in a few minutes, or contact your security partner with support reference <code>{}</code>.</p>",
            escape(support_ref)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_it_echoes() {
        let page = declined("x", Some("<img src=x onerror=alert(1)>"));
        let html = page.render();
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        let page = sign_in_not_completed("\"><script>", "r");
        assert!(!page.render().contains("<script>"));
    }

    #[test]
    fn statuses_are_as_documented() {
        assert_eq!(invalid().status, 400);
        assert_eq!(expired().status, 410);
        assert_eq!(replayed().status, 409);
        assert_eq!(registered_elsewhere("r").status, 409);
        assert_eq!(error("r").status, 503);
        assert_eq!(wrong_tenant("r").status, 403);
        assert_eq!(not_an_administrator().status, 403);
        assert_eq!(sign_in_not_completed("x", "r").status, 400);
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        assert_eq!(success(&tenant, "c", &[]).status, 200);
        assert!(
            success(&tenant, "c", &["Incident.Read.All".into()])
                .render()
                .contains("<li>Incident.Read.All</li>")
        );
    }
}
