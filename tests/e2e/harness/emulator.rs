//! The Entra ID + Defender emulator (`defender-emulator`, infra/emulator) as a child process,
//! loaded with a scenario the test writes, and a client of its control API.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use defender_emulator::demo;
pub use defender_emulator::{FederatedCredentialConfig, RequiredPermissionConfig, StsCallCounts};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::process::{ChildProcess, LogBuffer};
use crate::tools::{self, TempDir};

/// Resource (App ID URI) of each API, as the emulator and Entra know them.
pub const RESOURCE_M365D: &str = "https://api.security.microsoft.com";
pub const RESOURCE_MDE: &str = "https://api.securitycenter.microsoft.com";
pub const RESOURCE_GRAPH: &str = "https://graph.microsoft.com";

/// The application permission a consenting admin grants for each API in the tests.
pub const ROLE_M365D: &str = "Incident.Read.All";
pub const ROLE_MDE: &str = "Alert.Read.All";
pub const ROLE_GRAPH: &str = "SecurityIncident.Read.All";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The scenario file the emulator loads (`--scenario`).
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub token_lifetime_seconds: u64,
    pub apps: Vec<App>,
    pub tenants: Vec<Tenant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct App {
    pub client_id: String,
    pub display_name: String,
    pub disabled: bool,
    pub secrets: Vec<Secret>,
    /// Where admin consent may redirect (loopback URIs match any port).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    /// What an admin consent grants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_permissions: Vec<RequiredPermissionConfig>,
    /// The external issuers whose tokens the app accepts as its credential (the secretless
    /// `aws_federated` mode: the emulated AWS account's issuer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub federated_credentials: Vec<FederatedCredentialConfig>,
}

/// The federated credential that trusts the emulated AWS account's tokens for the role every
/// function runs as (`defender_emulator::demo::AWS_ROLE_ARN`), for Entra's usual audience. The
/// issuer is written with the placeholder for the emulator's URL, which the emulator resolves
/// once it knows its port.
pub fn aws_role_credential() -> FederatedCredentialConfig {
    FederatedCredentialConfig {
        issuer: format!(
            "{}{}",
            demo::EMULATOR_URL_PLACEHOLDER,
            demo::AWS_ISSUER_PATH
        ),
        subject: demo::AWS_ROLE_ARN.to_owned(),
        audiences: vec![demo::FIC_AUDIENCE.to_owned()],
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Secret {
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

/// A tenant of the scenario. Each has a Global Administrator, [`Tenant::admin_upn`], who can
/// complete an onboarding (the sign-in that proves the tenant after an admin consent).
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    pub domains: Vec<String>,
    pub grants: Vec<Grant>,
}

impl Tenant {
    /// The tenant's Global Administrator.
    pub fn admin_upn(id: &str) -> String {
        format!("admin@t{}.example", &id[..8])
    }
}

impl Serialize for Tenant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The administrator's object id: the tenant's own id with a recognisable first group.
        let admin_oid = format!("adadadad{}", &self.id[8..]);
        json!({
            "id": self.id,
            "display_name": self.display_name,
            "domains": self.domains,
            "grants": self.grants,
            "users": [{
                "oid": admin_oid,
                "upn": Tenant::admin_upn(&self.id),
                "display_name": "Tenant administrator",
                "portal_roles": ["Global Administrator"],
            }],
        })
        .serialize(serializer)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub client_id: String,
    pub resource: String,
    pub roles: Vec<String>,
}

impl Grant {
    /// The usual grants of a consented tenant: one read role on each of the three APIs.
    pub fn all_apis(client_id: &str) -> Vec<Grant> {
        [
            (RESOURCE_M365D, ROLE_M365D),
            (RESOURCE_MDE, ROLE_MDE),
            (RESOURCE_GRAPH, ROLE_GRAPH),
        ]
        .into_iter()
        .map(|(resource, role)| Grant {
            client_id: client_id.to_owned(),
            resource: resource.to_owned(),
            roles: vec![role.to_owned()],
        })
        .collect()
    }
}

/// A fault the emulator injects (`POST /_emulator/faults`).
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// `"token"` (token endpoint only) or `"any"`.
    #[serde(rename = "match")]
    pub matches: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// How many requests get the fault.
    pub count: u32,
}

impl Fault {
    /// `count` answers `429 Too Many Requests` with `Retry-After: retry_after` on the token
    /// endpoint of `tenant`.
    pub fn throttle_tokens(tenant: &str, retry_after: u64, count: u32) -> Fault {
        Fault {
            matches: "token".to_owned(),
            tenant: Some(tenant.to_owned()),
            status: 429,
            retry_after: Some(retry_after),
            count,
        }
    }
}

/// One token request the emulator saw (`GET /_emulator/requests`).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenRequest {
    /// The `{tenant}` path segment as sent.
    pub tenant: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// `"v1"` or `"v2"`.
    pub endpoint: String,
    pub status: u16,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub error_code: Option<u32>,
    #[serde(default)]
    pub injected: bool,
}

impl TokenRequest {
    /// Whether this request was for tenant `id` (by id or by one of `aliases`).
    pub fn is_for(&self, id: &str) -> bool {
        self.tenant == id || self.tenant_id.as_deref() == Some(id)
    }
}

/// A running emulator; stopped when dropped.
pub struct Emulator {
    process: ChildProcess,
    base_url: String,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Emulator {
    /// Builds `defender-emulator` if needed, writes `scenario` to a temporary file and starts
    /// the emulator on a loopback port of its choosing.
    pub async fn start(scenario: &Scenario) -> Result<Emulator> {
        let text = serde_json::to_string_pretty(scenario)?;
        // Fail here, with the emulator's own words, if the file format has drifted.
        defender_emulator::Scenario::from_json(&text)
            .context("the harness's scenario is refused by defender_emulator::Scenario")?;
        let dir = TempDir::new("dp-e2e-emulator")?;
        let path = dir.path().join("scenario.json");
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        Emulator::start_process(Some(&path), "127.0.0.1:0", dir).await
    }

    /// Starts the emulator on `listen` with the scenario file at `path` (`None`: its built-in
    /// demo scenario).
    pub async fn start_file(path: Option<&Path>, listen: &str) -> Result<Emulator> {
        Emulator::start_process(path, listen, TempDir::new("dp-e2e-emulator")?).await
    }

    async fn start_process(path: Option<&Path>, listen: &str, dir: TempDir) -> Result<Emulator> {
        let exe = tools::build_binary("defender-emulator", "defender-emulator")?;
        let mut command = Command::new(exe);
        if let Some(path) = path {
            command.arg("--scenario").arg(path);
        }
        command.args(["--listen", listen]).env("RUST_LOG", "info");
        let mut process = ChildProcess::spawn("emulator", command)?;

        let started = Instant::now();
        let base_url = loop {
            let logs = process.logs().text();
            if let Some(url) = logs.lines().find_map(listening_url) {
                break url;
            }
            if let Some(status) = process.exited() {
                bail!(
                    "defender-emulator exited ({status}) before it was listening; its output:\n{}",
                    process.logs().tail(60)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "defender-emulator printed no {{\"listening\":...}} line within {READY_TIMEOUT:?}; its output:\n{}",
                    process.logs().tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("[harness] emulator ready on {base_url}");
        Ok(Emulator {
            process,
            base_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`: what `DP_AUTHORITY_HOST` is set to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn logs(&self) -> &LogBuffer {
        self.process.logs()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
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

    pub async fn inject_fault(&self, fault: &Fault) -> Result<()> {
        self.control(
            reqwest::Method::POST,
            "faults",
            Some(serde_json::to_value(fault)?),
        )
        .await
        .map(drop)
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.control(reqwest::Method::DELETE, "faults", None)
            .await
            .map(drop)
    }

    /// Every token request seen since the start or the last [`Emulator::clear_requests`].
    pub async fn token_requests(&self) -> Result<Vec<TokenRequest>> {
        let answer = self.control(reqwest::Method::GET, "requests", None).await?;
        serde_json::from_value(answer["token_requests"].clone())
            .context("parsing GET /_emulator/requests")
    }

    /// The token requests for one tenant (by id, or as resolved from a domain).
    pub async fn token_requests_for(&self, tenant_id: &str) -> Result<Vec<TokenRequest>> {
        Ok(self
            .token_requests()
            .await?
            .into_iter()
            .filter(|request| request.is_for(tenant_id))
            .collect())
    }

    pub async fn clear_requests(&self) -> Result<()> {
        self.control(reqwest::Method::DELETE, "requests", None)
            .await
            .map(drop)
    }

    /// Replaces the client secrets of an app (what rotating in the Entra portal does).
    pub async fn set_app_secrets(&self, client_id: &str, secrets: &[Secret]) -> Result<()> {
        self.control(
            reqwest::Method::PUT,
            &format!("apps/{client_id}/secrets"),
            Some(json!({ "secrets": secrets })),
        )
        .await
        .map(drop)
    }

    /// Grants (or replaces) an app's roles on a resource in a tenant.
    pub async fn set_grant(&self, tenant: &str, grant: &Grant) -> Result<()> {
        self.control(
            reqwest::Method::PUT,
            &format!("tenants/{tenant}/grants"),
            Some(serde_json::to_value(grant)?),
        )
        .await
        .map(drop)
    }

    /// Withdraws every grant of an app in a tenant (the customer removed the app).
    pub async fn revoke_grants(&self, tenant: &str, client_id: &str) -> Result<()> {
        self.control(
            reqwest::Method::DELETE,
            &format!("tenants/{tenant}/grants/{client_id}"),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn set_token_lifetime(&self, seconds: u64) -> Result<()> {
        self.control(
            reqwest::Method::PUT,
            "settings",
            Some(json!({ "token_lifetime_seconds": seconds })),
        )
        .await
        .map(drop)
    }
}

fn listening_url(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    value["listening"].as_str().map(str::to_owned)
}

/// The delegated flows' control calls (users acting through the app).
impl Emulator {
    /// Mints a user's access token directly (by default one issued *for* the app, as a
    /// calling workflow would hold it).
    pub async fn mint_user_token(
        &self,
        request: &defender_emulator::UserTokenRequest,
    ) -> Result<defender_emulator::MintedUserToken> {
        let answer = self
            .control(
                reqwest::Method::POST,
                "delegated/tokens",
                Some(serde_json::to_value(request)?),
            )
            .await?;
        serde_json::from_value(answer).context("parsing POST /_emulator/delegated/tokens")
    }

    /// Every delegated token issued since the start or the last
    /// [`Emulator::clear_delegated_tokens`], oldest first (never the tokens themselves).
    pub async fn delegated_tokens(&self) -> Result<Vec<defender_emulator::DelegatedTokenRecord>> {
        let answer = self
            .control(reqwest::Method::GET, "delegated/log", None)
            .await?;
        serde_json::from_value(answer["delegated_tokens"].clone())
            .context("parsing GET /_emulator/delegated/log")
    }

    pub async fn clear_delegated_tokens(&self) -> Result<()> {
        self.control(reqwest::Method::DELETE, "delegated/log", None)
            .await
            .map(drop)
    }

    /// Approves or declines a pending device code, as the user would on `/devicelogin`.
    pub async fn decide_device_code(
        &self,
        user_code: &str,
        decision: &defender_emulator::DeviceDecision,
    ) -> Result<()> {
        self.control(
            reqwest::Method::POST,
            &format!("device/{user_code}"),
            Some(serde_json::to_value(decision)?),
        )
        .await
        .map(drop)
    }
}

/// The emulated AWS account (STS `GetWebIdentityToken` at the base URL, its OIDC issuer) and
/// the app's federated credentials: what the secretless `aws_federated` credential meets.
impl Emulator {
    /// The issuer URL of the emulated account's web identity tokens: the `iss` the functions'
    /// AWS tokens carry and the issuer a matching federated credential names.
    pub fn aws_issuer(&self) -> String {
        demo::aws_issuer(&self.base_url, demo::AWS_ACCOUNT_ID)
    }

    /// Replaces an app's federated identity credentials (what editing them in the Entra portal
    /// does).
    pub async fn set_federated_credentials(
        &self,
        client_id: &str,
        credentials: &[FederatedCredentialConfig],
    ) -> Result<()> {
        self.control(
            reqwest::Method::PUT,
            &format!("apps/{client_id}/federated-credentials"),
            Some(json!({ "federated_credentials": credentials })),
        )
        .await
        .map(drop)
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
        self.control(
            reqwest::Method::PUT,
            "aws/settings",
            Some(Value::Object(settings)),
        )
        .await
        .map(drop)
    }

    /// The next `count` web identity tokens live `lifetime_seconds`, whatever was asked.
    pub async fn shorten_next_sts_tokens(&self, count: u32, lifetime_seconds: i64) -> Result<()> {
        self.control(
            reqwest::Method::POST,
            "aws/short-lived-tokens",
            Some(json!({ "count": count, "lifetime_seconds": lifetime_seconds })),
        )
        .await
        .map(drop)
    }

    /// How many `GetWebIdentityToken` calls arrived (and got a token) since the start or the
    /// last [`Emulator::reset_sts_calls`].
    pub async fn sts_calls(&self) -> Result<StsCallCounts> {
        let answer = self
            .control(reqwest::Method::GET, "aws/calls", None)
            .await?;
        serde_json::from_value(answer).context("parsing GET /_emulator/aws/calls")
    }

    pub async fn reset_sts_calls(&self) -> Result<()> {
        self.control(reqwest::Method::DELETE, "aws/calls", None)
            .await
            .map(drop)
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

    /// The sign-in that follows an accepted consent: `consent_answer_location` is where the
    /// consent callback sent the browser (Microsoft's sign-in); the tenant's administrator signs
    /// in. Answers where the emulator redirects: the callback with the sign-in's code.
    pub async fn admin_sign_in(&self, sign_in_url: &str, tenant: &str) -> Result<url::Url> {
        let location = defender_emulator::browser::submit_page(
            sign_in_url,
            &[("user", &Tenant::admin_upn(tenant)), ("decision", "accept")],
        )
        .await?;
        Ok(url::Url::parse(&location)?)
    }

    /// What a customer's administrator does on the emulator's consent page at `page_url`:
    /// submits its form (hidden fields as served) for `tenant` with `decision` (`accept` or
    /// `decline`). Answers where the emulator redirects: the app's redirect URI with
    /// Microsoft's query parameters.
    pub async fn decide_consent(
        &self,
        page_url: &str,
        tenant: &str,
        decision: &str,
    ) -> Result<url::Url> {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        let page = browser
            .get(page_url)
            .send()
            .await
            .context("opening the consent page")?
            .error_for_status()
            .context("the consent page")?
            .text()
            .await?;
        let mut form = hidden_inputs(&page);
        form.push(("tenant".to_owned(), tenant.to_owned()));
        form.push(("decision".to_owned(), decision.to_owned()));
        let answer = browser
            .post(format!("{}/_emulator/consent/decision", self.base_url))
            .form(&form)
            .send()
            .await
            .context("posting the consent decision")?;
        let location = answer
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        match location {
            Some(location) => url::Url::parse(&location).context("the decision's Location"),
            None => bail!(
                "the consent decision answered {} without a redirect: {}",
                answer.status(),
                answer.text().await.unwrap_or_default()
            ),
        }
    }
}

/// The hidden inputs of an HTML form, unescaped, as a browser submits them.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| {
        let marker = format!("{name}=\"");
        let start = tag.find(&marker)? + marker.len();
        let end = tag[start..].find('"')? + start;
        Some(
            tag[start..end]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&#x27;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            if !tag.contains("type=\"hidden\"") {
                return None;
            }
            Some((attribute(tag, "name")?, attribute(tag, "value")?))
        })
        .collect()
}
