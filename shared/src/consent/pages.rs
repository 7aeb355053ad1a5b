//! The pages a customer's administrator sees after consenting: short, plain, accessible, and
//! free of anything secret (no token, no code, no `state`).

use crate::tenant_id::TenantId;

/// A page and its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub title: &'static str,
    /// Paragraphs and lists, already escaped.
    body: String,
}

impl Page {
    /// A page of `body`, which must already be escaped (see [`escape`]).
    pub fn new(status: u16, title: &'static str, body: String) -> Page {
        Page {
            status,
            title,
            body,
        }
    }

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
        Page {
            status: 200,
            title: "Onboarding complete",
            body: format!(
                "<p>Your tenant <strong>{}</strong> is connected (reference {}). Your security partner can now read the data you granted.</p>{granted}<p>You can close this window.</p>",
                escape(tenant.as_str()),
                escape(customer_ref)
            ),
        }
    }

    pub fn pending(tenant: &TenantId, support_ref: &str) -> Page {
        Page {
            status: 202,
            title: "Consent received, not yet confirmed",
            body: format!(
                "<p>Microsoft reported your consent for tenant <strong>{}</strong>, but it could not be confirmed yet: changes can take a few minutes to take effect.</p><p>Nothing more is needed from you now. Your security partner will confirm it automatically; if it is not confirmed within an hour, please contact them and quote support reference <code>{}</code>.</p>",
                escape(tenant.as_str()),
                escape(support_ref)
            ),
        }
    }

    pub fn declined(error: &str, description: Option<&str>) -> Page {
        let detail = description
            .map(|text| format!("<p>Microsoft said: {}</p>", escape(text)))
            .unwrap_or_default();
        Page {
            status: 200,
            title: "Consent was not given",
            body: format!(
                "<p>The permissions were not granted (<code>{}</code>), so your tenant is not connected.</p>{detail}<p>If this was a mistake, ask your security partner for a new link.</p>",
                escape(error)
            ),
        }
    }

    /// The administrator's sign-in proved the tenant, but Microsoft did not confirm the app's
    /// permissions before the function had to answer: the fetch cycle finishes it.
    pub fn almost_done(tenant: &TenantId, support_ref: &str) -> Page {
        Page {
            status: 202,
            title: "Almost done",
            body: format!(
                "<p>You signed in as an administrator of tenant <strong>{}</strong> and your consent was received. Microsoft has not confirmed the permissions yet; your security partner will finish the onboarding automatically within the next minutes.</p><p>Nothing more is needed from you. If the connection is not confirmed within an hour, contact your security partner and quote support reference <code>{}</code>.</p>",
                escape(tenant.as_str()),
                escape(support_ref)
            ),
        }
    }

    /// The link was bound to one tenant, or the administrator signed in to another one than
    /// Microsoft's redirect named.
    pub fn wrong_tenant(support_ref: &str) -> Page {
        Page {
            status: 403,
            title: "This link is for another organisation",
            body: format!(
                "<p>This onboarding link was issued for a different Microsoft Entra tenant than the one you consented for or signed in to. Nothing was recorded.</p><p>Sign in with an administrator account of the organisation the link was issued for, or ask your security partner for a new link (support reference <code>{}</code>).</p>",
                escape(support_ref)
            ),
        }
    }

    /// The person who signed in holds no role able to grant admin consent.
    pub fn not_an_administrator() -> Page {
        Page {
            status: 403,
            title: "An administrator must complete this step",
            body: "<p>The account you signed in with does not hold an administrator role that can grant consent for your organisation (Global, Privileged Role, Cloud Application or Application Administrator). Nothing was recorded.</p><p>Please ask such an administrator to open the link your security partner sent.</p>".into(),
        }
    }

    /// The administrator's sign-in after the consent did not complete or did not prove who
    /// they are.
    pub fn sign_in_not_completed(reason: &str, support_ref: &str) -> Page {
        Page {
            status: 400,
            title: "Sign-in was not completed",
            body: format!(
                "<p>To finish onboarding, the administrator who consented signs in once so that your security partner knows which organisation consented ({}). Nothing was recorded.</p><p>Open the link your security partner sent again, or contact them with support reference <code>{}</code>.</p>",
                escape(reason),
                escape(support_ref)
            ),
        }
    }

    pub fn registered_elsewhere(support_ref: &str) -> Page {
        Page {
            status: 409,
            title: "This tenant is already connected",
            body: format!(
                "<p>This tenant is already connected to your security partner under another reference, so this link cannot change it. Nothing was recorded.</p><p>Please contact your security partner and quote support reference <code>{}</code>.</p>",
                escape(support_ref)
            ),
        }
    }

    pub fn invalid() -> Page {
        Page {
            status: 400,
            title: "This link is not valid",
            body: "<p>This onboarding link was not issued by your security partner, or it was changed. Nothing was recorded.</p><p>Please ask your security partner for a new link.</p>".into(),
        }
    }

    pub fn expired() -> Page {
        Page {
            status: 410,
            title: "This link has expired",
            body: "<p>Onboarding links are valid for a limited time. Nothing was recorded.</p><p>Please ask your security partner for a new link.</p>".into(),
        }
    }

    pub fn replayed() -> Page {
        Page {
            status: 409,
            title: "This link was already used",
            body: "<p>Each onboarding link works once, and this one has been used. If your onboarding did not finish, ask your security partner for a new link.</p>".into(),
        }
    }

    pub fn error(support_ref: &str) -> Page {
        Page {
            status: 503,
            title: "Something went wrong",
            body: format!(
                "<p>Your consent could not be recorded because of a problem on our side. Please try again in a few minutes, or contact your security partner with support reference <code>{}</code>.</p>",
                escape(support_ref)
            ),
        }
    }

    pub fn render(&self) -> String {
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\"><title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}}h1{{font-size:1.5rem}}code{{background:#f2f2f2;padding:0 .25rem}}</style></head><body><main><h1>{title}</h1>{body}</main></body></html>\n",
            title = escape(self.title),
            body = self.body
        )
    }
}

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_it_echoes() {
        let page = Page::declined("x", Some("<img src=x onerror=alert(1)>"));
        let html = page.render();
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        let page = Page::sign_in_not_completed("\"><script>", "r");
        assert!(!page.render().contains("<script>"));
    }

    #[test]
    fn statuses_are_as_documented() {
        assert_eq!(Page::invalid().status, 400);
        assert_eq!(Page::expired().status, 410);
        assert_eq!(Page::replayed().status, 409);
        assert_eq!(Page::registered_elsewhere("r").status, 409);
        assert_eq!(Page::error("r").status, 503);
        assert_eq!(Page::wrong_tenant("r").status, 403);
        assert_eq!(Page::not_an_administrator().status, 403);
        assert_eq!(Page::sign_in_not_completed("x", "r").status, 400);
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        assert_eq!(Page::success(&tenant, "c", &[]).status, 200);
        assert!(
            Page::success(&tenant, "c", &["Incident.Read.All".into()])
                .render()
                .contains("<li>Incident.Read.All</li>")
        );
    }
}
