//! What the person's browser gets back: a short, plain, accessible page that holds nothing secret
//! (no token, no code, no `state`), or the next stop of the flow; both with strict security
//! headers, never cached, never framed, and with no referrer (the callback URL carries codes that
//! must not leak to other sites). Each flow writes its own pages' words.

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use uuid::Uuid;

use crate::edge::uncached_response;

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

    pub fn render(&self) -> String {
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\"><title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}}h1{{font-size:1.5rem}}code{{background:#f2f2f2;padding:0 .25rem}}</style></head><body><main><h1>{title}</h1>{body}</main></body></html>\n",
            title = escape(self.title),
            body = self.body
        )
    }

    /// The page as an HTTP API answer, with its security headers.
    pub fn response(&self) -> ApiGatewayV2httpResponse {
        browser_response(self.status, self.render())
    }
}

/// What a callback answers: a page for the person, or the browser's next stop.
#[derive(Debug)]
pub enum CallbackAnswer {
    Page(Page),
    /// A 302 to Microsoft's sign-in.
    Redirect(String),
}

impl From<Page> for CallbackAnswer {
    fn from(page: Page) -> Self {
        CallbackAnswer::Page(page)
    }
}

impl CallbackAnswer {
    /// The page, if this answer is one (tests, the demo).
    pub fn page(&self) -> Option<&Page> {
        match self {
            CallbackAnswer::Page(page) => Some(page),
            CallbackAnswer::Redirect(_) => None,
        }
    }

    /// The answer as an HTTP API response: the page, or a 302 with no body worth reading.
    pub fn response(&self) -> ApiGatewayV2httpResponse {
        match self {
            CallbackAnswer::Page(page) => page.response(),
            CallbackAnswer::Redirect(location) => {
                let mut response = browser_response(302, String::new());
                if let Ok(value) = HeaderValue::from_str(location) {
                    response.headers.insert("location", value);
                }
                response
            }
        }
    }
}

/// How a callback was answered, for its log line.
pub trait Answered {
    fn status(&self) -> u16;
    fn outcome(&self) -> &str;
}

impl Answered for Page {
    fn status(&self) -> u16 {
        self.status
    }
    fn outcome(&self) -> &str {
        self.title
    }
}

impl Answered for CallbackAnswer {
    fn status(&self) -> u16 {
        match self {
            CallbackAnswer::Page(page) => page.status,
            CallbackAnswer::Redirect(_) => 302,
        }
    }
    fn outcome(&self) -> &str {
        match self {
            CallbackAnswer::Page(page) => page.title,
            CallbackAnswer::Redirect(_) => "on to Microsoft's sign-in",
        }
    }
}

/// Handles one of Microsoft's redirects back to `flow` (`"consent"`, `"sign-in"`): a fresh
/// support reference (quoted on error pages, found again in the log), the flow's own handling,
/// and one log line saying how the browser was answered. Never fails: every outcome is a page or
/// the next stop.
pub async fn answer_callback<A: Answered>(
    flow: &'static str,
    handle: impl AsyncFnOnce(&str) -> A,
) -> A {
    let support_ref = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let answer = handle(&support_ref).await;
    tracing::info!(support_ref = %support_ref, status = answer.status(), outcome = answer.outcome(), "{flow} callback answered");
    answer
}

fn browser_response(status: u16, html: String) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    uncached_response(status, headers, html)
}

/// HTML-escapes text for element content and quoted attributes; control characters are dropped.
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
    use aws_lambda_events::encodings::Body;

    use super::*;

    fn assert_security_headers(response: &ApiGatewayV2httpResponse) {
        for (name, value) in [
            ("x-frame-options", "DENY"),
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            ("x-content-type-options", "nosniff"),
        ] {
            assert_eq!(response.headers[name], value, "{name}");
        }
        let policy = response.headers["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }

    #[test]
    fn a_page_renders_escaped_with_its_status_and_headers() {
        let page = Page::new(
            409,
            "Used <once>",
            format!("<p>{}</p>", escape("a & \"b\"\u{7}")),
        );
        let response = page.response();
        assert_eq!(response.status_code, 409);
        assert_eq!(response.headers["content-type"], "text/html; charset=utf-8");
        assert_security_headers(&response);
        let Some(Body::Text(html)) = response.body else {
            panic!("an HTML body")
        };
        assert!(html.contains("<title>Used &lt;once&gt;</title>"), "{html}");
        assert!(html.contains("<p>a &amp; &quot;b&quot;</p>"), "{html}");
        assert!(html.contains("<meta name=\"referrer\" content=\"no-referrer\">"));
    }

    #[test]
    fn a_redirect_goes_on_with_the_same_headers_and_no_body() {
        let answer = CallbackAnswer::Redirect("https://login.example/authorize?x=1".into());
        assert!(answer.page().is_none());
        let response = answer.response();
        assert_eq!(response.status_code, 302);
        assert_eq!(
            response.headers["location"],
            "https://login.example/authorize?x=1"
        );
        assert_security_headers(&response);
        assert!(matches!(response.body, Some(Body::Text(ref text)) if text.is_empty()));
    }

    #[tokio::test]
    async fn a_callback_is_handled_with_a_fresh_support_reference() {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let page = answer_callback("test", async |support_ref| {
                seen.push(support_ref.to_owned());
                Page::new(503, "Something went wrong", escape(support_ref))
            })
            .await;
            assert_eq!(page.status, 503);
        }
        assert_eq!(seen[0].len(), 12);
        assert_ne!(seen[0], seen[1]);
    }
}
