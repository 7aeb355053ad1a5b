//! The emulator's control API (`/_emulator/...`) over HTTP, in the emulator's own types: one
//! client for an emulator in this process ([`crate::World::control`]) or in a child process (the
//! end-to-end harness). The emulator's README lists the routes.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use defender_emulator::{
    ConsentDecisionRecord, DataApiCalls, DataConfig, DataModes, DefenderSettingsPatch,
    DelegatedTokenRecord, DeviceDecision, Fault, FaultMatch, FederatedCredentialConfig,
    GrantConfig, MintedUserToken, RateLimitMode, SecretConfig, ShortLivedTokens, StsCallCounts,
    TokenRequestRecord, UserTokenRequest, demo,
};
use defender_partner::defender::Source;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::scenario::{RESOURCE_GRAPH, RESOURCE_M365D, RESOURCE_MDE};

/// A client of one emulator's control API.
#[derive(Clone)]
pub struct EmulatorControl {
    base_url: String,
    http: reqwest::Client,
}

/// What `POST /_emulator/tenants/{tenant}/touch` touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchTarget {
    Incidents,
    MdeAlerts,
    GraphAlerts,
}

/// `count` requests of what `matches` names, each answered `delay_ms` late, then served.
pub fn delay(matches: FaultMatch, delay_ms: u64, count: u32) -> Fault {
    Fault {
        status: None,
        delay_ms: Some(delay_ms),
        ..Fault::status(matches, 500, count)
    }
}

/// Whether a token request was for tenant `id` (named by its id, or resolved to it from a domain).
pub fn is_for(request: &TokenRequestRecord, id: &str) -> bool {
    request.tenant == id || request.tenant_id.as_deref() == Some(id)
}

/// The resource (token audience) of each source's API.
pub fn resource_of(source: Source) -> &'static str {
    match source {
        Source::M365dIncidents => RESOURCE_M365D,
        Source::GraphIncidents | Source::GraphAlerts => RESOURCE_GRAPH,
        Source::MdeAlerts => RESOURCE_MDE,
    }
}

impl EmulatorControl {
    /// The emulator at `base_url` (`http://127.0.0.1:PORT`).
    pub fn new(base_url: &str) -> EmulatorControl {
        EmulatorControl {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client with a timeout"),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// One control call: its JSON answer (`null` for none); a refusal is an error with the
    /// emulator's words.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/_emulator/{path}", self.base_url);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {url} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn send(&self, method: Method, path: &str, body: &impl Serialize) -> Result<()> {
        self.call(method, path, Some(serde_json::to_value(body)?))
            .await
            .map(drop)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, path, None).await.map(drop)
    }

    /// `GET path`, the field `field` of its answer (the whole answer for `None`).
    async fn read<T: DeserializeOwned>(&self, path: &str, field: Option<&str>) -> Result<T> {
        let answer = self.call(Method::GET, path, None).await?;
        let value = match field {
            Some(field) => answer[field].clone(),
            None => answer,
        };
        serde_json::from_value(value).with_context(|| format!("parsing GET /_emulator/{path}"))
    }

    // --- Entra: faults, the token log, apps, grants, settings --------------------------------

    pub async fn push_fault(&self, fault: &Fault) -> Result<()> {
        self.send(Method::POST, "faults", fault).await
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.delete("faults").await
    }

    /// Every token request seen since the start or the last [`EmulatorControl::clear_requests`].
    pub async fn token_requests(&self) -> Result<Vec<TokenRequestRecord>> {
        self.read("requests", Some("token_requests")).await
    }

    /// The token requests for one tenant (by id, or as resolved from a domain).
    pub async fn token_requests_for(&self, tenant_id: &str) -> Result<Vec<TokenRequestRecord>> {
        Ok(self
            .token_requests()
            .await?
            .into_iter()
            .filter(|request| is_for(request, tenant_id))
            .collect())
    }

    pub async fn clear_requests(&self) -> Result<()> {
        self.delete("requests").await
    }

    /// Replaces the client secrets of an app (what rotating in the Entra portal does).
    pub async fn set_app_secrets(&self, client_id: &str, secrets: &[SecretConfig]) -> Result<()> {
        self.send(
            Method::PUT,
            &format!("apps/{client_id}/secrets"),
            &json!({ "secrets": secrets }),
        )
        .await
    }

    /// Replaces an app's federated identity credentials (what editing them in the portal does).
    pub async fn set_federated_credentials(
        &self,
        client_id: &str,
        credentials: &[FederatedCredentialConfig],
    ) -> Result<()> {
        self.send(
            Method::PUT,
            &format!("apps/{client_id}/federated-credentials"),
            &json!({ "federated_credentials": credentials }),
        )
        .await
    }

    /// Grants (or replaces) an app's roles on a resource in a tenant.
    pub async fn set_grant(&self, tenant: &str, grant: &GrantConfig) -> Result<()> {
        self.send(Method::PUT, &format!("tenants/{tenant}/grants"), grant)
            .await
    }

    /// Withdraws every grant of an app in a tenant (the customer removed the app).
    pub async fn revoke_grants(&self, tenant: &str, client_id: &str) -> Result<()> {
        self.delete(&format!("tenants/{tenant}/grants/{client_id}"))
            .await
    }

    /// `PUT /_emulator/settings`: token lifetime, consent propagation, the data APIs' and the
    /// delegated flows' settings, as one JSON object.
    pub async fn settings(&self, settings: &Value) -> Result<()> {
        self.send(Method::PUT, "settings", settings).await
    }

    pub async fn set_token_lifetime(&self, seconds: u64) -> Result<()> {
        self.settings(&json!({ "token_lifetime_seconds": seconds }))
            .await
    }

    /// Every admin-consent decision taken on the consent page, oldest first.
    pub async fn consent_decisions(&self) -> Result<Vec<ConsentDecisionRecord>> {
        self.read("consent/log", Some("consent_decisions")).await
    }

    // --- The data APIs ---------------------------------------------------------------------

    /// `PUT /_emulator/data/settings` (rate limits, paging quirks, the retirement switch).
    pub async fn data_settings(&self, patch: &DefenderSettingsPatch) -> Result<()> {
        self.send(Method::PUT, "data/settings", patch).await
    }

    /// The data APIs' own rate limits off: every 429 is then one a test injected.
    pub async fn rate_limits_off(&self) -> Result<()> {
        self.data_settings(&DefenderSettingsPatch {
            rate_limits: Some(RateLimitMode::Off),
            ..Default::default()
        })
        .await
    }

    /// Replaces a tenant's generated data: its records end about now.
    pub async fn set_data(&self, tenant: &str, data: &DataConfig) -> Result<()> {
        self.send(Method::PUT, &format!("tenants/{tenant}/data"), data)
            .await
    }

    pub async fn set_data_modes(&self, tenant: &str, modes: &DataModes) -> Result<()> {
        self.send(Method::PUT, &format!("tenants/{tenant}/data/modes"), modes)
            .await
    }

    /// The data-API call counters of a tenant.
    pub async fn data_calls(&self, tenant: &str) -> Result<DataApiCalls> {
        self.read(&format!("data/calls?tenant={tenant}"), Some("calls"))
            .await
    }

    /// Touches `count` of a tenant's `target` (they get a new last-update time); returns their
    /// ids.
    pub async fn touch(
        &self,
        tenant: &str,
        count: usize,
        target: TouchTarget,
    ) -> Result<Vec<Value>> {
        let answer = self
            .call(
                Method::POST,
                &format!("tenants/{tenant}/touch"),
                Some(json!({ "count": count, "target": target })),
            )
            .await?;
        Ok(answer["touched"].as_array().cloned().unwrap_or_default())
    }

    /// A client-credentials token of the app for `tenant` and `resource`.
    pub async fn app_token(
        &self,
        tenant: &str,
        resource: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<String> {
        let answer: Value = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base_url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("scope", &format!("{resource}/.default")),
            ])
            .send()
            .await?
            .json()
            .await?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no token for {tenant}: {answer}"))
    }

    /// What the API holds now for a tenant's source, read straight from it with `token` (pages
    /// followed by their links, else by `$skip`, which Graph's incidents refuse): id →
    /// last-update time, exactly as sent.
    pub async fn truth(
        &self,
        tenant: &str,
        source: Source,
        token: &str,
    ) -> Result<HashMap<String, String>> {
        let (path, id_field, time_field, top) = match source {
            Source::M365dIncidents => ("api/incidents", "incidentId", "lastUpdateTime", 100),
            Source::GraphIncidents => ("v1.0/security/incidents", "id", "lastUpdateDateTime", 50),
            Source::MdeAlerts => ("api/alerts", "id", "lastUpdateTime", 10_000),
            Source::GraphAlerts => ("v1.0/security/alerts_v2", "id", "lastUpdateDateTime", 1000),
        };
        let mut found = HashMap::new();
        let mut next = Some(format!("{}/{path}?$top={top}", self.base_url));
        let mut skip = 0;
        while let Some(url) = next.take() {
            let response = self
                .http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("reading the truth of {tenant}: {url} answered {status}: {body}");
            }
            let page = body["value"].as_array().cloned().unwrap_or_default();
            for record in &page {
                let id = &record[id_field];
                let id = id
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| id.to_string());
                let time = record[time_field]
                    .as_str()
                    .with_context(|| format!("a record without {time_field}"))?;
                if found.insert(id.clone(), time.to_owned()).is_some() {
                    bail!("the truth of {tenant} lists {id} twice");
                }
            }
            if let Some(link) = body["@odata.nextLink"].as_str() {
                next = Some(link.to_owned());
            } else if page.len() == top && source != Source::GraphIncidents {
                skip += top;
                next = Some(format!("{}/{path}?$top={top}&$skip={skip}", self.base_url));
            }
        }
        Ok(found)
    }

    /// The alert ids of every Graph incident of a tenant's, as `$expand=alerts` gives them:
    /// incident id → alert ids.
    pub async fn graph_expanded_alert_ids(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<HashMap<String, std::collections::BTreeSet<String>>> {
        let mut found = HashMap::new();
        let first = format!(
            "{}/v1.0/security/incidents?$top=50&$expand=alerts",
            self.base_url
        );
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let response = self.http.get(&url).bearer_auth(token).send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("reading the incidents of {tenant}: {url} answered {status}: {body}");
            }
            for incident in body["value"].as_array().into_iter().flatten() {
                let id = incident["id"].as_str().context("an incident without id")?;
                let alerts = incident["alerts"]
                    .as_array()
                    .context("an incident without alerts")?
                    .iter()
                    .filter_map(|alert| alert["id"].as_str().map(str::to_owned))
                    .collect();
                if found.insert(id.to_owned(), alerts).is_some() {
                    bail!("the incidents of {tenant} list {id} twice");
                }
            }
            next = body["@odata.nextLink"].as_str().map(str::to_owned);
        }
        Ok(found)
    }

    // --- Delegated flows -------------------------------------------------------------------

    /// Mints a user's access token directly (by default one issued *for* the app, as a calling
    /// workflow would hold it).
    pub async fn mint_user_token(&self, request: &UserTokenRequest) -> Result<MintedUserToken> {
        let answer = self
            .call(
                Method::POST,
                "delegated/tokens",
                Some(serde_json::to_value(request)?),
            )
            .await?;
        serde_json::from_value(answer).context("parsing POST /_emulator/delegated/tokens")
    }

    /// Every delegated token issued since the start or the last
    /// [`EmulatorControl::clear_delegated_tokens`], oldest first (never the tokens themselves).
    pub async fn delegated_tokens(&self) -> Result<Vec<DelegatedTokenRecord>> {
        self.read("delegated/log", Some("delegated_tokens")).await
    }

    pub async fn clear_delegated_tokens(&self) -> Result<()> {
        self.delete("delegated/log").await
    }

    /// Approves or declines a pending device code, as the user would on `/devicelogin`.
    pub async fn decide_device_code(
        &self,
        user_code: &str,
        decision: &DeviceDecision,
    ) -> Result<()> {
        self.send(Method::POST, &format!("device/{user_code}"), decision)
            .await
    }

    // --- The emulated AWS account (the secretless credential) ------------------------------

    /// The issuer URL of the emulated account's web identity tokens.
    pub fn aws_issuer(&self) -> String {
        demo::aws_issuer(&self.base_url, demo::AWS_ACCOUNT_ID)
    }

    /// The account's switches: `federation_enabled` (false: STS answers
    /// `OutboundWebIdentityFederationDisabledException`), `role_denied` (true: `AccessDenied`);
    /// `None` leaves a switch as it is.
    pub async fn set_aws_switches(
        &self,
        federation_enabled: Option<bool>,
        role_denied: Option<bool>,
    ) -> Result<()> {
        let mut settings = serde_json::Map::new();
        if let Some(enabled) = federation_enabled {
            settings.insert("federation_enabled".into(), enabled.into());
        }
        if let Some(denied) = role_denied {
            settings.insert("role_denied".into(), denied.into());
        }
        self.send(Method::PUT, "aws/settings", &settings).await
    }

    /// The next web identity tokens live a shorter time, whatever was asked.
    pub async fn shorten_next_sts_tokens(&self, short: &ShortLivedTokens) -> Result<()> {
        self.send(Method::POST, "aws/short-lived-tokens", short)
            .await
    }

    /// How many `GetWebIdentityToken` calls arrived (and got a token) since the start or the
    /// last [`EmulatorControl::reset_sts_calls`].
    pub async fn sts_calls(&self) -> Result<StsCallCounts> {
        self.read("aws/calls", None).await
    }

    pub async fn reset_sts_calls(&self) -> Result<()> {
        self.delete("aws/calls").await
    }

    /// A web identity token from the emulated STS for the test itself (a raw Query request
    /// whose `Authorization` names an access key, as SigV4 does; the emulator does not check
    /// the signature). It counts as an STS call.
    pub async fn web_identity_token(&self) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/", self.base_url))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDE2ETEST/20260101/us-east-1/sts/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature=0000",
            )
            .form(&[
                ("Action", "GetWebIdentityToken"),
                ("Version", "2011-06-15"),
                ("Audience.member.1", demo::FIC_AUDIENCE),
                ("SigningAlgorithm", "RS256"),
            ])
            .send()
            .await
            .context("POST GetWebIdentityToken")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GetWebIdentityToken answered {status}: {text}");
        }
        let start = text
            .find("<WebIdentityToken>")
            .context("no <WebIdentityToken> in the STS answer")?
            + "<WebIdentityToken>".len();
        let end = text[start..]
            .find("</WebIdentityToken>")
            .context("an unterminated <WebIdentityToken>")?
            + start;
        Ok(text[start..end].to_owned())
    }
}
