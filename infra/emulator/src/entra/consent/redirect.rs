//! Redirect URIs: the registration rules, Entra's matching and the `Location` of the answer.
//!
//! Registered URIs must be `https`, or `http` on `localhost` / `127.0.0.1` (loopback), at most
//! 256 characters, without a fragment or any of `! $ ' ( ) , ;`. A requested URI matches a
//! registered one when the two are the same text (case-sensitive); for loopback URIs the port
//! is ignored on both sides.

use anyhow::bail;
use url::Url;

const MAX_LENGTH: usize = 256;
const FORBIDDEN: &[char] = &['!', '$', '\'', '(', ')', ',', ';', '#'];
const LOOPBACK_PREFIXES: [&str; 2] = ["http://localhost", "http://127.0.0.1"];

/// Refuses a URI that Entra would not accept on an app registration.
pub(crate) fn validate_registered(uri: &str) -> anyhow::Result<()> {
    if !uri.is_ascii() {
        bail!("redirect URI {uri:?} must be ASCII (percent-encode other characters)");
    }
    if uri.len() > MAX_LENGTH {
        bail!("redirect URI {uri:?} is longer than {MAX_LENGTH} characters");
    }
    if let Some(c) = uri
        .chars()
        .find(|c| FORBIDDEN.contains(c) || c.is_whitespace())
    {
        bail!("redirect URI {uri:?} contains {c:?}, which Entra refuses");
    }
    let parsed =
        Url::parse(uri).map_err(|error| anyhow::anyhow!("redirect URI {uri:?}: {error}"))?;
    match parsed.scheme() {
        "https" if parsed.host_str().is_some() => Ok(()),
        "http" if without_loopback_port(uri).is_some() => Ok(()),
        _ => bail!(
            "redirect URI {uri:?} must be https (plain http only for http://localhost or http://127.0.0.1)"
        ),
    }
}

/// Whether `requested` names the registered URI `registered`.
pub(crate) fn matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    match (
        without_loopback_port(registered),
        without_loopback_port(requested),
    ) {
        (Some(registered), Some(requested)) => registered == requested,
        _ => false,
    }
}

/// `http://localhost[:port]/rest` → `http://localhost/rest` (same for 127.0.0.1); `None` when
/// the URI is not a loopback one.
fn without_loopback_port(uri: &str) -> Option<String> {
    LOOPBACK_PREFIXES.iter().find_map(|prefix| {
        let rest = uri.strip_prefix(prefix)?;
        let rest = match rest.strip_prefix(':') {
            Some(after) => {
                let digits = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                if digits == 0 || digits > 5 {
                    return None;
                }
                &after[digits..]
            }
            None => rest,
        };
        (rest.is_empty() || rest.starts_with(['/', '?'])).then(|| format!("{prefix}{rest}"))
    })
}

/// The redirect URI with `params` appended to its query (form-encoded, as Entra sends them),
/// keeping any query it already has.
pub(crate) fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    let query = query.finish();
    let separator = match redirect_uri.find('?') {
        None => "?",
        Some(_) if redirect_uri.ends_with(['?', '&']) => "",
        Some(_) => "&",
    };
    format!("{redirect_uri}{separator}{query}")
}

/// `scheme://host[:port]` of the URI, for the page's `form-action` source list.
pub(crate) fn origin(uri: &str) -> Option<String> {
    let parsed = Url::parse(uri).ok()?;
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        for good in [
            "https://example.com/consent/callback",
            "https://abc.execute-api.us-east-1.amazonaws.com/prod/consent/callback?x=1",
            "http://localhost/consent/callback",
            "http://localhost:3000/cb",
            "http://127.0.0.1/cb",
        ] {
            assert!(validate_registered(good).is_ok(), "{good}");
        }
        for bad in [
            "http://example.com/cb",
            "http://localhost.example.com/cb",
            "http://127.0.0.1:80@example.com/cb",
            "ftp://example.com/cb",
            "https://example.com/cb#fragment",
            "https://example.com/a(b)",
            "https://example.com/a;b",
            "https://example.com/a,b",
            "https://example.com/a'b",
            "https://example.com/a b",
            "not a url",
            "",
        ] {
            assert!(validate_registered(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(300));
        assert!(validate_registered(&long).is_err());
    }

    #[test]
    fn matching_is_exact_except_loopback_ports() {
        assert!(matches("https://a.example/cb", "https://a.example/cb"));
        assert!(!matches("https://a.example/cb", "https://a.example/CB"));
        assert!(!matches("https://a.example/cb", "https://a.example/cb/"));
        assert!(!matches(
            "https://a.example/cb",
            "https://a.example:8443/cb"
        ));
        assert!(matches("http://localhost/cb", "http://localhost:8080/cb"));
        assert!(matches("http://localhost:1/cb", "http://localhost/cb"));
        assert!(matches("http://127.0.0.1/cb", "http://127.0.0.1:3000/cb"));
        assert!(!matches("http://localhost/cb", "http://127.0.0.1/cb"));
        assert!(!matches("http://localhost/cb", "http://localhost:8080/Cb"));
        assert!(!matches("http://localhost/cb", "http://localhost:/cb"));
        assert!(!matches(
            "http://localhost/cb",
            "http://localhost.evil.example/cb"
        ));
    }

    #[test]
    fn params_are_appended_and_encoded() {
        assert_eq!(
            with_params("https://a.example/cb", &[("state", "a b&c"), ("x", "é")]),
            "https://a.example/cb?state=a+b%26c&x=%C3%A9"
        );
        assert_eq!(
            with_params("https://a.example/cb?keep=1", &[("tenant", "t")]),
            "https://a.example/cb?keep=1&tenant=t"
        );
        assert_eq!(
            with_params("https://a.example/cb?", &[("tenant", "t")]),
            "https://a.example/cb?tenant=t"
        );
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("http://localhost:3000/cb?x").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(
            origin("https://a.example/cb").as_deref(),
            Some("https://a.example")
        );
    }
}
