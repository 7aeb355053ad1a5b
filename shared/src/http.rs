//! What the Entra and Defender clients read alike from an HTTP exchange: the status, Microsoft's
//! `Retry-After`, the body, and a transport failure described without anything secret.

use std::time::Duration;

use bytes::Bytes;

pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The `Warning` header (Graph names the provider behind a 206 Partial Content there).
    pub warning: Option<String>,
    /// Graph's `request-id` for the call, to quote in a support case.
    pub request_id: Option<String>,
    pub body: Bytes,
}

/// Waits for the whole answer. A transport failure comes back described (never with a query
/// string, where a secret could sit).
pub async fn read(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Answer, String> {
    let response = sent.map_err(|error| describe_transport_error(&error))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    let warning = response
        .headers()
        .get(reqwest::header::WARNING)
        .and_then(|value| value.to_str().ok())
        .map(|text| text.chars().take(300).collect());
    let request_id = response
        .headers()
        .get("request-id")
        .and_then(|value| value.to_str().ok())
        .map(|text| text.chars().take(64).collect());
    let body = response
        .bytes()
        .await
        .map_err(|error| describe_transport_error(&error))?;
    Ok(Answer {
        status,
        retry_after,
        warning,
        request_id,
        body,
    })
}

/// `Retry-After` as seconds, integer or decimal (Graph once sent `2.128`), capped as MSAL caps it.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds.min(3600.0)))
}

/// An `@odata.nextLink`, if it points where the page came from: our bearer token goes nowhere
/// else. The error says why a link is not followed.
pub fn same_origin_link(page: &url::Url, link: &str) -> Result<url::Url, String> {
    match url::Url::parse(link) {
        Ok(next) if next.origin() == page.origin() => Ok(next),
        Ok(next) => Err(format!(
            "the API's @odata.nextLink points at another host ({}); not followed",
            next.host_str().unwrap_or("none")
        )),
        Err(_) => Err("the API's @odata.nextLink is not a URL".to_owned()),
    }
}

pub fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "response body could not be read"
    } else {
        "request failed"
    };
    match error.url() {
        Some(url) => format!("{kind} ({}{})", url.host_str().unwrap_or(""), url.path()),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_decimals_and_caps() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
