//! Microsoft's own time per call, injected: the data APIs (Graph security, M365 Defender,
//! Defender for Endpoint) answer in hundreds of milliseconds and Entra's token endpoint in tens,
//! where the loopback emulator answers in one. A bench that prices Lambda time by the
//! millisecond needs that wait; tests leave it off (the default).
//!
//! Set with `--api-latency-ms 200-400` / `--token-latency-ms 50-150` on the binary,
//! `api_latency_ms` / `token_latency_ms` in `PUT /_emulator/settings`, or
//! [`crate::EmulatorHandle::set_latency`]. Each call waits a time drawn uniformly from its range
//! before it is served; faults and rate limits answer after the same wait.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::state::Shared;

/// The longest wait a range may name: far above any real answer, low enough that a typo does not
/// hang a test for hours.
const MAX_LATENCY_MS: u64 = 120_000;

/// Milliseconds, uniform between `min` and `max` inclusive; written `"200-400"` or `"300"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LatencyRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl LatencyRange {
    pub fn new(min_ms: u64, max_ms: u64) -> Result<LatencyRange, String> {
        if min_ms > max_ms {
            return Err(format!(
                "latency {min_ms}-{max_ms} ms: the minimum exceeds the maximum"
            ));
        }
        if max_ms > MAX_LATENCY_MS {
            return Err(format!("latency above {MAX_LATENCY_MS} ms"));
        }
        Ok(LatencyRange { min_ms, max_ms })
    }

    /// One draw from the range.
    pub fn sample(&self) -> Duration {
        Duration::from_millis(fastrand::u64(self.min_ms..=self.max_ms))
    }

    fn is_zero(&self) -> bool {
        self.max_ms == 0
    }
}

impl FromStr for LatencyRange {
    type Err = String;

    fn from_str(text: &str) -> Result<LatencyRange, String> {
        let number = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("latency {text:?}: expected milliseconds as N or MIN-MAX"))
        };
        match text.split_once('-') {
            Some((min, max)) => LatencyRange::new(number(min)?, number(max)?),
            None => {
                let ms = number(text)?;
                LatencyRange::new(ms, ms)
            }
        }
    }
}

impl TryFrom<String> for LatencyRange {
    type Error = String;

    fn try_from(text: String) -> Result<LatencyRange, String> {
        text.parse()
    }
}

impl From<LatencyRange> for String {
    fn from(range: LatencyRange) -> String {
        range.to_string()
    }
}

impl fmt::Display for LatencyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min_ms == self.max_ms {
            write!(f, "{}", self.min_ms)
        } else {
            write!(f, "{}-{}", self.min_ms, self.max_ms)
        }
    }
}

/// The injected waits: none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Every data API call (`/api/...`, `/v1.0/security/...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<LatencyRange>,
    /// Every token request (`POST .../oauth2/token`, `.../oauth2/v2.0/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<LatencyRange>,
}

impl Latency {
    /// The wait for a request, if any.
    fn of(&self, method: &Method, path: &str) -> Option<Duration> {
        let range = if is_data_path(path) {
            self.api
        } else if method == Method::POST && is_token_path(path) {
            self.token
        } else {
            None
        };
        range
            .filter(|range| !range.is_zero())
            .map(|range| range.sample())
    }
}

/// The data APIs, their single-record routes included.
fn is_data_path(path: &str) -> bool {
    crate::defender::api_of_path(path).is_some()
        || path.starts_with("/api/incidents/")
        || path.starts_with("/api/alerts/")
}

fn is_token_path(path: &str) -> bool {
    path.ends_with("/oauth2/v2.0/token") || path.ends_with("/oauth2/token")
}

/// Middleware in front of every route: waits before the emulated Microsoft answers (never
/// before the control API, which [`Latency::of`] does not match).
pub(crate) async fn delay(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let wait = shared.latency().of(request.method(), request.uri().path());
    if let Some(wait) = wait {
        tokio::time::sleep(wait).await;
    }
    next.run(request).await
}

impl crate::handle::EmulatorHandle {
    /// Replaces the injected waits ([`Latency::default`]: none).
    pub fn set_latency(&self, latency: Latency) {
        *self.shared.latency_mut() = latency;
    }

    pub fn latency(&self) -> Latency {
        self.shared.latency()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_both_spellings_and_refuse_nonsense() {
        assert_eq!(
            "200-400".parse::<LatencyRange>(),
            Ok(LatencyRange {
                min_ms: 200,
                max_ms: 400
            })
        );
        assert_eq!(
            " 300 ".parse::<LatencyRange>(),
            Ok(LatencyRange {
                min_ms: 300,
                max_ms: 300
            })
        );
        for bad in ["", "fast", "400-200", "-5", "1-2-3", "999999999"] {
            assert!(bad.parse::<LatencyRange>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(LatencyRange::new(5, 9).unwrap().to_string(), "5-9");
        let json: Latency = serde_json::from_str(r#"{"api": "200-400"}"#).unwrap();
        assert_eq!(json.api, Some(LatencyRange::new(200, 400).unwrap()));
        assert_eq!(json.token, None);
    }

    #[test]
    fn samples_stay_in_the_range() {
        let range = LatencyRange::new(200, 210).unwrap();
        for _ in 0..1_000 {
            let ms = range.sample().as_millis() as u64;
            assert!((200..=210).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn data_calls_and_token_requests_get_their_own_wait_and_nothing_else_waits() {
        let latency = Latency {
            api: Some(LatencyRange::new(300, 300).unwrap()),
            token: Some(LatencyRange::new(70, 70).unwrap()),
        };
        let ms = |method: Method, path: &str| latency.of(&method, path).map(|d| d.as_millis());
        assert_eq!(ms(Method::GET, "/v1.0/security/incidents"), Some(300));
        assert_eq!(ms(Method::GET, "/v1.0/security/alerts_v2"), Some(300));
        assert_eq!(ms(Method::GET, "/api/incidents"), Some(300));
        assert_eq!(ms(Method::GET, "/api/alerts"), Some(300));
        assert_eq!(ms(Method::PATCH, "/v1.0/security/incidents/7"), Some(300));
        assert_eq!(ms(Method::GET, "/api/incidents/7"), Some(300));
        assert_eq!(ms(Method::POST, "/contoso.com/oauth2/v2.0/token"), Some(70));
        assert_eq!(ms(Method::POST, "/common/oauth2/token"), Some(70));
        assert_eq!(ms(Method::GET, "/contoso.com/discovery/v2.0/keys"), None);
        assert_eq!(ms(Method::PUT, "/_emulator/settings"), None);
        assert_eq!(ms(Method::GET, "/_emulator/health"), None);
        assert_eq!(Latency::default().of(&Method::GET, "/api/incidents"), None);
    }
}
