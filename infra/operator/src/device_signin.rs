//! `dp-operator signin`: an operator signs in to a customer tenant as themselves through the
//! device code flow (no browser on this machine), sees who they are there and what the app may
//! do for them, and with `--call` reads one Defender API with their own rights.
//!
//! The token never leaves this process: it is neither printed nor logged.

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use defender_partner::CallerError;
use defender_partner::api::DefenderApi;
use defender_partner::defender::Source;
use defender_partner::defender::spec;
use defender_partner::entra::TokenClient;
use defender_partner::entra::device_code::{DeviceCodeClient, DeviceCodeError, DeviceSignIn};
use defender_partner::runtime::Services;
use defender_partner::tenant_id::TenantRef;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

/// What `signin` was asked.
pub struct SigninRequest {
    pub tenant: String,
    pub api: DefenderApi,
    pub call: bool,
    pub json: bool,
}

/// What `signin` reports: who signed in where, never the token.
#[derive(Serialize)]
struct SigninReport {
    tenant_id: String,
    user_oid: Option<String>,
    user: Option<String>,
    api: DefenderApi,
    scopes: Vec<String>,
    /// Scopes the partner's functions require for this API that the token lacks.
    scopes_missing: Vec<String>,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<CallOutcome>,
}

/// The outcome of the `--call` read.
#[derive(Serialize)]
struct CallOutcome {
    url: String,
    status: u16,
    /// Records on the page read (`$top=1`), when the API answered 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    /// The API's own error code, when it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    explanation: String,
}

pub async fn run(services: &Services, request: &SigninRequest) -> anyhow::Result<()> {
    let tenant = TenantRef::parse(&request.tenant)?;
    let tenant = tenant.as_path_segment();
    let credential = services.credentials.current().await?;
    let devices = DeviceCodeClient::new(TokenClient::new(
        services.http.clone(),
        services.settings.endpoints.clone(),
    ));
    let resource = services.settings.endpoints.resource(request.api);
    let scope = format!("{}/.default", resource.trim_end_matches('/'));

    let code = devices
        .start(tenant, &credential.client_id, &scope)
        .await
        .map_err(coded)?;
    // With --json, stdout carries the report alone; the instructions go to the terminal.
    let instructions = format!(
        "{}\nWaiting for the sign-in (the code expires in {} minutes)...",
        code.message,
        code.expires_in.as_secs().div_ceil(60)
    );
    if request.json {
        eprintln!("{instructions}");
    } else {
        println!("{instructions}");
    }

    let sign_in = devices
        .poll(tenant, &code, &credential)
        .await
        .map_err(coded)?;
    let scopes = sign_in.claims.scopes();
    let mut report = SigninReport {
        tenant_id: sign_in.claims.tid.clone(),
        user_oid: sign_in.claims.oid.clone(),
        user: sign_in.claims.user_name().map(str::to_owned),
        api: request.api,
        scopes_missing: services
            .settings
            .required_scopes(request.api)
            .missing(&scopes)
            .unwrap_or_default(),
        scopes,
        expires_at: sign_in.expires_at,
        call: None,
    };
    if request.call {
        report.call = Some(call_api(services, request.api, &sign_in).await?);
    }
    if request.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The error with its stable code first, as scripts read it.
fn coded(error: DeviceCodeError) -> anyhow::Error {
    anyhow!("{}: {error}", error.code())
}

/// The incidents (or alerts) list of `api`, one record, as the signed-in user.
async fn call_api(
    services: &Services,
    api: DefenderApi,
    sign_in: &DeviceSignIn,
) -> anyhow::Result<CallOutcome> {
    let source = match api {
        DefenderApi::M365d => Source::M365dIncidents,
        DefenderApi::Mde => Source::MdeAlerts,
        DefenderApi::Graph => Source::GraphIncidents,
    };
    let path = spec(source).path;
    let base = services.settings.endpoints.api_base(api).as_str();
    let url = format!("{}/{path}?$top=1", base.trim_end_matches('/'));
    let response = services
        .http
        .get(&url)
        .bearer_auth(sign_in.token.expose_secret())
        .header("Accept", "application/json")
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let what = match api {
        DefenderApi::Mde => "alerts",
        DefenderApi::M365d | DefenderApi::Graph => "incidents",
    };
    let error = body["error"]["code"].as_str().map(str::to_owned);
    let (count, explanation) = match status {
        200 => {
            let count = body["value"].as_array().map_or(0, Vec::len);
            (
                Some(count),
                format!("read {count} of the tenant's {what} as the signed-in user"),
            )
        }
        403 => (
            None,
            format!(
                "refused: a delegated call carries the signed-in user's own rights, and this user's portal role (Defender or Entra) does not allow reading {what}; the app's permission is not enough. Give the user a role such as Security Reader in the customer tenant"
            ),
        ),
        401 => (
            None,
            "refused the token: sign in again (it may have expired or been revoked)".to_owned(),
        ),
        429 => (
            None,
            "throttled: the API asks to wait before the next call".to_owned(),
        ),
        _ => (None, format!("the API answered HTTP {status}")),
    };
    Ok(CallOutcome {
        url,
        status,
        count,
        error,
        explanation,
    })
}

fn print_report(report: &SigninReport) {
    println!("Signed in.");
    println!(
        "user:    {} ({})",
        report.user.as_deref().unwrap_or("-"),
        report.user_oid.as_deref().unwrap_or("-")
    );
    println!("tenant:  {}", report.tenant_id);
    println!("api:     {}", report.api.display_name());
    println!("scopes:  {}", report.scopes.join(" "));
    if !report.scopes_missing.is_empty() {
        println!(
            "missing: {} (the functions refuse this user's tokens for this API until consented)",
            report.scopes_missing.join(", ")
        );
    }
    println!(
        "expires: {}",
        report.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(call) = &report.call {
        println!("call:    GET {} -> HTTP {}", call.url, call.status);
        match &call.error {
            Some(code) => println!("         {} ({code})", call.explanation),
            None => println!("         {}", call.explanation),
        }
    }
}
