//! What a person's browser does on the emulator's Microsoft pages (the admin-consent page and the
//! sign-in page), for the demo, benches and tests that drive them without a real browser: open the
//! page, read what it offers, submit its form with the choices given, and see where Microsoft
//! redirects. One driver, so that a change to the pages is followed in one place.

use anyhow::Context;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use url::Url;

/// A page as the browser received it (redirects are not followed).
#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub html: String,
}

/// What submitting a form answered.
#[derive(Debug)]
pub struct Submitted {
    pub status: StatusCode,
    /// Where the answer redirects (`Location`), when it does.
    pub location: Option<String>,
    pub headers: HeaderMap,
    pub body: String,
}

impl Submitted {
    /// The `AADSTS…` code of the error page answered.
    pub fn error_code(&self) -> Option<String> {
        error_code(&self.body)
    }

    /// The redirect's `Location`; an answer that does not redirect is an error naming it.
    pub fn redirect(self) -> anyhow::Result<String> {
        self.location.with_context(|| {
            format!(
                "the form was not redirected ({}): {}",
                self.status, self.body
            )
        })
    }
}

fn browser() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

impl Page {
    /// Opens `url` (a consent or sign-in link at the emulator), whatever the status.
    pub async fn open(url: &str) -> anyhow::Result<Page> {
        let url = Url::parse(url).context("the page URL is not a URL")?;
        let response = browser()?
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("opening {url}"))?;
        Ok(Page {
            url,
            status: response.status(),
            headers: response.headers().clone(),
            html: response.text().await?,
        })
    }

    /// The form's `action`, if the page has a form.
    pub fn form_action(&self) -> Option<String> {
        form_action(&self.html)
    }

    /// The form's hidden inputs, unescaped, as a browser submits them.
    pub fn hidden_inputs(&self) -> Vec<(String, String)> {
        hidden_inputs(&self.html)
    }

    /// `(value, selected)` of every `<option>` (the tenants of the consent page, the users of the
    /// sign-in page).
    pub fn options(&self) -> Vec<(String, bool)> {
        tags(&self.html, "option")
            .into_iter()
            .filter_map(|tag| Some((attribute(tag, "value")?, tag.contains(" selected"))))
            .collect()
    }

    /// The `AADSTS…` code of an error page.
    pub fn error_code(&self) -> Option<String> {
        error_code(&self.html)
    }

    /// Submits the page's form: its hidden inputs, each replaced by a field of `fields` with its
    /// name, then the other `fields` (e.g. `("user", upn)` and `("decision", "accept")`).
    pub async fn submit(&self, fields: &[(&str, &str)]) -> anyhow::Result<Submitted> {
        let action = self
            .form_action()
            .with_context(|| format!("the page ({}) has no form: {}", self.status, self.html))?;
        let mut form: Vec<(String, String)> = self
            .hidden_inputs()
            .into_iter()
            .filter(|(name, _)| !fields.iter().any(|(field, _)| field == name))
            .collect();
        form.extend(
            fields
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        let answer = browser()?
            .post(self.url.join(&action)?)
            .form(&form)
            .send()
            .await
            .context("submitting the form")?;
        let location = answer
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(Submitted {
            status: answer.status(),
            location,
            headers: answer.headers().clone(),
            body: answer.text().await.unwrap_or_default(),
        })
    }
}

/// Opens `url` (a consent or sign-in link at the emulator), submits the page's form (its hidden
/// fields plus `fields`, e.g. `("user", upn)` and `("decision", "accept")`) and returns the
/// redirect's `Location`.
pub async fn submit_page(url: &str, fields: &[(&str, &str)]) -> anyhow::Result<String> {
    let page = Page::open(url).await?;
    if page.status != StatusCode::OK {
        anyhow::bail!(
            "the emulator's page answered {}: {}",
            page.status,
            page.html
        );
    }
    page.submit(fields).await?.redirect()
}

/// `user` signs in on the sign-in page at `url` and accepts: where Microsoft redirects.
pub async fn sign_in(url: &str, user: &str) -> anyhow::Result<String> {
    submit_page(url, &[("user", user), ("decision", "accept")])
        .await
        .with_context(|| format!("{user} signing in"))
}

/// The administrator of `tenant` takes `decision` (`accept` or `decline`) on the admin-consent
/// page at `url`: where Microsoft redirects.
pub async fn consent(url: &str, tenant: &str, decision: &str) -> anyhow::Result<String> {
    submit_page(url, &[("tenant", tenant), ("decision", decision)])
        .await
        .with_context(|| format!("the consent page, {decision} for {tenant}"))
}

/// The query string of a redirect's `Location` (what a callback receives).
pub fn query_of(location: &str) -> anyhow::Result<String> {
    Ok(Url::parse(location)?.query().unwrap_or_default().to_owned())
}

/// The `AADSTS…` code an error page shows.
pub fn error_code(html: &str) -> Option<String> {
    const MARK: &str = "<span id=\"error-code\">";
    let start = html.find(MARK)? + MARK.len();
    let end = start + html[start..].find('<')?;
    Some(html[start..end].to_owned())
}

/// The value of `name="…"` inside one tag, unescaped.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// Every `<{element} …>` tag of the page, without its closing `>`.
fn tags<'a>(html: &'a str, element: &str) -> Vec<&'a str> {
    let open = format!("<{element} ");
    html.match_indices(&open)
        .filter_map(|(start, _)| Some(&html[start..start + html[start..].find('>')?]))
        .collect()
}

fn form_action(html: &str) -> Option<String> {
    attribute(tags(html, "form").first()?, "action")
}

/// The hidden inputs of a form, unescaped, as a browser would submit them.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    tags(html, "input")
        .into_iter()
        .filter(|tag| attribute(tag, "type").as_deref() == Some("hidden"))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_form_as_a_browser_would() {
        let html = r#"<form method="post" action="/_emulator/signin/decision">
<input type="hidden" name="state" value="a&amp;b">
<input type="checkbox" name="mfa" value="true">
<input type="hidden" name="scope" value="openid profile"></form>"#;
        assert_eq!(form_action(html).unwrap(), "/_emulator/signin/decision");
        assert_eq!(
            hidden_inputs(html),
            [
                ("state".to_owned(), "a&b".to_owned()),
                ("scope".to_owned(), "openid profile".to_owned())
            ]
        );
    }

    #[test]
    fn reads_the_options_and_the_error_code() {
        let page = Page {
            url: Url::parse("http://127.0.0.1/").unwrap(),
            status: StatusCode::BAD_REQUEST,
            headers: HeaderMap::new(),
            html: r#"<select id="tenant" name="tenant">
<option value="a&amp;1" selected>A</option>
<option value="b" data-oid="x">B</option></select>
<p id="error"><span id="error-code">AADSTS50011</span>: no</p>"#
                .to_owned(),
        };
        assert_eq!(
            page.options(),
            [("a&1".to_owned(), true), ("b".to_owned(), false)]
        );
        assert_eq!(page.error_code().as_deref(), Some("AADSTS50011"));
    }
}
