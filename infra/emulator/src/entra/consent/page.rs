//! The HTML the admin sees: the consent page and Entra's error screen. Plain HTML, no script;
//! every echoed value is escaped.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use uuid::Uuid;

use super::grants::ResourceGrant;
use crate::entra::resources::{self, Resource};

/// The form of the consent page posts here.
pub(crate) const DECISION_PATH: &str = "/_emulator/consent/decision";

pub(crate) const BASE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                        frame-ancestors 'none'; form-action 'self'";

pub(crate) const STYLE: &str = "body{font-family:'Segoe UI',Helvetica,Arial,sans-serif;background:#f2f2f2;\
margin:0}main{max-width:440px;margin:48px auto;background:#fff;padding:44px;\
box-shadow:0 2px 6px rgba(0,0,0,.2)}h1{font-size:24px;font-weight:600}\
.brand{color:#737373;font-size:14px}.muted{color:#616161;font-size:13px}\
ul{padding-left:20px}select{width:100%;padding:6px;margin:6px 0 18px}\
button{min-width:108px;padding:6px 12px;margin-right:8px;border:1px solid #8a8886;\
background:#fff;cursor:pointer}#accept{background:#0067b8;border-color:#0067b8;color:#fff}\
code{word-break:break-all}";

/// Escapes text for HTML content and double-quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// One option of the tenant list.
pub(crate) struct TenantOption {
    pub id: String,
    pub label: String,
    pub selected: bool,
}

/// What the consent page shows.
pub(crate) struct ConsentPage<'a> {
    pub app_name: &'a str,
    pub client_id: &'a str,
    pub permissions: &'a [ResourceGrant],
    pub tenants: &'a [TenantOption],
    /// The link's parameters, posted back with the decision.
    pub hidden: &'a [(&'static str, String)],
    /// Added to `form-action`: the decision answers with a redirect there, which browsers
    /// check against the form's source list.
    pub redirect_origin: Option<String>,
}

fn resource_title(resource: &Resource) -> &'static str {
    if resource == &resources::M365_DEFENDER {
        "Microsoft Threat Protection (Microsoft 365 Defender)"
    } else if resource == &resources::DEFENDER_FOR_ENDPOINT {
        "WindowsDefenderATP (Defender for Endpoint)"
    } else if resource == &resources::GRAPH {
        "Microsoft Graph"
    } else {
        resource.name
    }
}

pub(crate) fn consent_page(page: &ConsentPage<'_>) -> Response {
    let app_name = if page.app_name.is_empty() {
        page.client_id
    } else {
        page.app_name
    };
    let mut html = String::with_capacity(4096);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<title>Permissions requested</title><style>");
    html.push_str(STYLE);
    html.push_str("</style></head><body><main>\n");
    html.push_str("<p class=\"brand\">Microsoft (emulated sign-in)</p>\n");
    html.push_str("<h1>Permissions requested</h1>\n");
    html.push_str(&format!(
        "<p><strong id=\"app-name\">{}</strong><br><span class=\"muted\">App ID: \
         <code id=\"client-id\">{}</code></span></p>\n",
        escape(app_name),
        escape(page.client_id)
    ));
    html.push_str("<p>This app would like to:</p>\n<ul id=\"permissions\">\n");
    for grant in page.permissions {
        for role in &grant.roles {
            html.push_str(&format!(
                "<li class=\"permission\" data-resource=\"{}\" data-role=\"{}\">\
                 <strong>{}</strong> on {} <span class=\"muted\">(<code>{}</code>)</span></li>\n",
                escape(&grant.named),
                escape(role),
                escape(role),
                escape(resource_title(grant.resource)),
                escape(&grant.named),
            ));
        }
    }
    html.push_str("</ul>\n");
    html.push_str(&format!(
        "<form method=\"post\" action=\"{DECISION_PATH}\">\n"
    ));
    for (name, value) in page.hidden {
        html.push_str(&format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape(value)
        ));
    }
    html.push_str(
        "<label for=\"tenant\">Signed in as an administrator of</label>\n\
         <select id=\"tenant\" name=\"tenant\">\n",
    );
    for tenant in page.tenants {
        html.push_str(&format!(
            "<option value=\"{}\"{}>{}</option>\n",
            escape(&tenant.id),
            if tenant.selected { " selected" } else { "" },
            escape(&tenant.label)
        ));
    }
    html.push_str("</select>\n");
    html.push_str(
        "<p class=\"muted\">Accepting gives this app these permissions for the whole \
         organization. The app is told your organization's tenant.</p>\n\
         <button id=\"accept\" type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>\
         <button id=\"decline\" type=\"submit\" name=\"decision\" value=\"decline\">Decline</button>\n\
         </form>\n</main></body></html>\n",
    );
    let csp = match &page.redirect_origin {
        Some(origin) => format!("{BASE_CSP} {origin}"),
        None => BASE_CSP.to_owned(),
    };
    with_headers(StatusCode::OK, html, &csp)
}

/// An error shown instead of the consent page: never a redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsentError {
    pub code: u32,
    pub message: String,
}

impl ConsentError {
    pub(crate) fn new(code: u32, message: impl Into<String>) -> ConsentError {
        ConsentError {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ConsentError {
    fn into_response(self) -> Response {
        let trace_id = Uuid::new_v4();
        let correlation_id = Uuid::new_v4();
        let timestamp = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Sign in to your account</title><style>{STYLE}</style></head><body><main>\n\
             <p class=\"brand\">Microsoft (emulated sign-in)</p>\n\
             <h1>Sorry, but we\u{2019}re having trouble signing you in.</h1>\n\
             <p id=\"error\"><span id=\"error-code\">AADSTS{}</span>: \
             <span id=\"error-message\">{}</span></p>\n\
             <p class=\"muted\">Request Id: <span id=\"trace-id\">{trace_id}</span><br>\
             Correlation Id: <span id=\"correlation-id\">{correlation_id}</span><br>\
             Timestamp: {timestamp}</p>\n</main></body></html>\n",
            self.code,
            escape(&self.message)
        );
        with_headers(StatusCode::BAD_REQUEST, html, BASE_CSP)
    }
}

pub(crate) fn with_headers(status: StatusCode, html: String, csp: &str) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    let csp = HeaderValue::from_str(csp).unwrap_or(HeaderValue::from_static(BASE_CSP));
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain-ÄÖ"), "plain-ÄÖ");
    }
}
