//! What a person's browser does on the emulator's Microsoft pages (the admin-consent page and the
//! sign-in page), for the demo, benches and tests that drive them without a real browser: open the
//! page, submit its form with the choices given, and return where Microsoft redirects. One driver,
//! so that a change to the pages is followed in one place.

use anyhow::Context;

/// Opens `url` (a consent or sign-in link at the emulator), submits the page's form (its hidden
/// fields plus `fields`, e.g. `("user", upn)` and `("decision", "accept")`) and returns the
/// redirect's `Location`.
pub async fn submit_page(url: &str, fields: &[(&str, &str)]) -> anyhow::Result<String> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page_url = url::Url::parse(url).context("the page URL is not a URL")?;
    let page = browser
        .get(url)
        .send()
        .await?
        .error_for_status()
        .context("the emulator's page answered an error")?
        .text()
        .await?;
    let action = form_action(&page).context("the page has no form")?;
    let mut form = hidden_inputs(&page);
    form.extend(
        fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    let answer = browser
        .post(page_url.join(&action)?)
        .form(&form)
        .send()
        .await?;
    answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .with_context(|| format!("the form was not redirected ({})", answer.status()))
}

/// The query string of a redirect's `Location` (what a callback receives).
pub fn query_of(location: &str) -> anyhow::Result<String> {
    Ok(url::Url::parse(location)?
        .query()
        .unwrap_or_default()
        .to_owned())
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn form_action(html: &str) -> Option<String> {
    let rest = &html[html.find("<form")?..];
    attribute(&rest[..rest.find('>')?], "action")
}

/// The hidden inputs of a form, unescaped, as a browser would submit them.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            tag.contains("type=\"hidden\"")
                .then(|| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
                .flatten()
        })
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
}
