//! Admin consent: the three consent links, the consent page, the decision and its redirect, the
//! grants it records, validation errors, propagation delay and the decision log.

mod common;

use std::time::Duration;

use common::*;
use defender_emulator::browser::{self, Page, Submitted};
use defender_emulator::demo::{
    CONSENT_REDIRECT_URI, WOODGROVE_DOMAIN, WOODGROVE_TENANT_ID as WOODGROVE,
};
use defender_emulator::{
    AppConfig, ConsentDecision, ConsentKind, RequiredPermissionConfig, RunningEmulator, Scenario,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, X_FRAME_OPTIONS};
use serde_json::{Value, json};
use url::Url;

/// A loopback callback with a port: the registered one has none, and the port is ignored.
const CALLBACK: &str = "http://localhost:8123/consent/callback";
const STATE: &str = "st-4f1c9a";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `{base}/{path}?{params}` with the parameters properly encoded.
fn link(emulator: &RunningEmulator, path: &str, params: &[(&str, &str)]) -> String {
    let mut url = Url::parse(&format!("{}{path}", emulator.base_url())).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

fn v2_link(emulator: &RunningEmulator, tenant: &str, scope: &str, state: &str) -> String {
    link(
        emulator,
        &format!("/{tenant}/v2.0/adminconsent"),
        &[
            ("client_id", CLIENT_ID),
            ("scope", scope),
            ("redirect_uri", CALLBACK),
            ("state", state),
        ],
    )
}

fn admin_consent_link(emulator: &RunningEmulator, tenant: &str) -> String {
    link(
        emulator,
        &format!("/{tenant}/adminconsent"),
        &[
            ("client_id", CLIENT_ID),
            ("state", STATE),
            ("redirect_uri", CALLBACK),
        ],
    )
}

fn legacy_link(emulator: &RunningEmulator, prompt: &str) -> String {
    link(
        emulator,
        "/common/oauth2/authorize",
        &[
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("state", STATE),
            ("prompt", prompt),
            ("sso_reload", "true"),
        ],
    )
}

async fn open(url: &str) -> Page {
    Page::open(url).await.expect("the page opens")
}

fn error_code(html: &str) -> String {
    browser::error_code(html).expect("an error page")
}

/// Submits the page's form as a browser would, with the chosen tenant and button.
async fn decide(page: &Page, tenant: &str, decision: &str) -> Submitted {
    page.submit(&[("tenant", tenant), ("decision", decision)])
        .await
        .expect("decision")
}

/// The redirect target without its query, and the query's parameters in order.
fn location(response: &Submitted) -> (String, Vec<(String, String)>) {
    assert_eq!(response.status, StatusCode::FOUND);
    let location = response.location.as_deref().expect("a Location");
    let url = Url::parse(location).unwrap();
    let params = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let base = location.split('?').next().unwrap().to_owned();
    (base, params)
}

fn names(params: &[(String, String)]) -> Vec<&str> {
    params.iter().map(|(name, _)| name.as_str()).collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {params:?}"))
}

fn claims(answer: &Answer) -> Value {
    use base64::Engine;
    let token = answer.body["access_token"].as_str().expect("a token");
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The `roles` of a v2 token for the tenant (`None`: no `roles` claim), or the AADSTS code of
/// the refusal.
async fn roles(
    emulator: &RunningEmulator,
    tenant: &str,
    resource: &str,
) -> Result<Option<Value>, u64> {
    let answer = token_v2(emulator, tenant, resource).await;
    if answer.status != StatusCode::OK {
        return Err(answer.body["error_codes"][0].as_u64().unwrap());
    }
    Ok(claims(&answer).get("roles").cloned())
}

#[tokio::test]
async fn v2_link_shows_the_page_and_accepting_grants_the_scoped_roles() {
    let emulator = start_demo().await;
    assert_eq!(roles(&emulator, WOODGROVE, M365D).await, Err(700016));

    let scope = format!("{M365D}/.default {MDE}/.default");
    let page = open(&v2_link(&emulator, "organizations", &scope, STATE)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "frame-ancestors 'none'",
        "form-action 'self' http://localhost:8123",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(page.headers[X_FRAME_OPTIONS], "DENY");
    assert!(!page.html.contains("<script"));
    for element in [
        "<form method=\"post\" action=\"/_emulator/consent/decision\">",
        "<select id=\"tenant\" name=\"tenant\">",
        "<button id=\"accept\" type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>",
        "<button id=\"decline\" type=\"submit\" name=\"decision\" value=\"decline\">Decline</button>",
        "Partner SOC connector (demo)",
        "data-role=\"Incident.Read.All\"",
        "data-role=\"Alert.Read.All\"",
    ] {
        assert!(
            page.html.contains(element),
            "{element} missing:\n{}",
            page.html
        );
    }
    // Graph was not in the scope.
    assert!(!page.html.contains("SecurityIncident.Read.All"));
    // organizations: the admin may be signed in to any tenant of the scenario.
    let options = page.options();
    assert_eq!(options.len(), 4);
    assert!(options.iter().any(|(id, _)| id == WOODGROVE));

    let response = decide(&page, WOODGROVE, "accept").await;
    let (base, params) = location(&response);
    assert_eq!(base, CALLBACK);
    assert_eq!(
        names(&params),
        ["tenant", "scope", "state", "admin_consent"]
    );
    assert_eq!(param(&params, "tenant"), WOODGROVE);
    assert_eq!(param(&params, "scope"), scope);
    assert_eq!(param(&params, "state"), STATE);
    assert_eq!(param(&params, "admin_consent"), "True");

    assert_eq!(
        roles(&emulator, WOODGROVE, M365D).await,
        Ok(Some(json!(["Incident.Read.All"])))
    );
    assert_eq!(
        roles(&emulator, WOODGROVE_DOMAIN, MDE).await,
        Ok(Some(json!(["Alert.Read.All"])))
    );
    // Consented now, but nothing granted on Graph: a token without roles.
    assert_eq!(roles(&emulator, WOODGROVE, GRAPH).await, Ok(None));

    let decisions = emulator.handle().consent_decisions();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].tenant, WOODGROVE);
    assert_eq!(decisions[0].client_id, CLIENT_ID);
    assert_eq!(decisions[0].kind, ConsentKind::V2);
    assert_eq!(decisions[0].decision, ConsentDecision::Accept);
    emulator.shutdown().await;
}

#[tokio::test]
async fn admin_consent_link_grants_every_required_permission() {
    let emulator = start_demo().await;
    let page = open(&admin_consent_link(&emulator, "common")).await;
    assert_eq!(page.status, StatusCode::OK);
    for role in [
        "Incident.Read.All",
        "Alert.Read.All",
        "SecurityIncident.Read.All",
    ] {
        assert!(page.html.contains(role), "{role}");
    }
    let response = decide(&page, WOODGROVE, "accept").await;
    let (base, params) = location(&response);
    assert_eq!(base, CALLBACK);
    assert_eq!(names(&params), ["tenant", "state", "admin_consent"]);
    assert_eq!(param(&params, "tenant"), WOODGROVE);
    assert_eq!(param(&params, "state"), STATE);
    assert_eq!(param(&params, "admin_consent"), "True");
    for (resource, role) in [
        (M365D, "Incident.Read.All"),
        (MDE, "Alert.Read.All"),
        (GRAPH, "SecurityIncident.Read.All"),
    ] {
        assert_eq!(
            roles(&emulator, WOODGROVE, resource).await,
            Ok(Some(json!([role])))
        );
    }
    assert_eq!(
        emulator.handle().consent_decisions()[0].kind,
        ConsentKind::AdminConsent
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_link_naming_a_tenant_fixes_the_tenant() {
    let emulator = start_demo().await;
    let page = open(&admin_consent_link(&emulator, WOODGROVE_DOMAIN)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.options(), [(WOODGROVE.to_owned(), true)]);

    // An admin of another tenant cannot consent through it.
    let response = decide(&page, NORTHWIND, "accept").await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.location.is_none());
    assert_eq!(error_code(&response.body), "AADSTS50020");
    assert_eq!(roles(&emulator, NORTHWIND, M365D).await, Err(700016));

    let response = decide(&page, WOODGROVE, "accept").await;
    let (_, params) = location(&response);
    assert_eq!(param(&params, "tenant"), WOODGROVE);

    // Same with a v2 link naming the tenant by GUID.
    let page = open(&v2_link(
        &emulator,
        NORTHWIND,
        &format!("{GRAPH}/.default"),
        STATE,
    ))
    .await;
    assert_eq!(page.options(), [(NORTHWIND.to_owned(), true)]);
    emulator.shutdown().await;
}

#[tokio::test]
async fn legacy_link_answers_a_code_and_no_tenant() {
    let emulator = start_demo().await;
    for prompt in ["consent", "admin_consent"] {
        let page = open(&legacy_link(&emulator, prompt)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        let response = decide(&page, WOODGROVE, "accept").await;
        let (base, params) = location(&response);
        assert_eq!(base, CALLBACK);
        assert_eq!(
            names(&params),
            ["code", "session_state", "state", "admin_consent"]
        );
        assert!(!param(&params, "code").is_empty());
        assert!(uuid::Uuid::parse_str(param(&params, "session_state")).is_ok());
        assert_eq!(param(&params, "state"), STATE);
        assert_eq!(param(&params, "admin_consent"), "True");
    }
    assert_eq!(
        roles(&emulator, WOODGROVE, GRAPH).await,
        Ok(Some(json!(["SecurityIncident.Read.All"])))
    );
    let decisions = emulator.handle().consent_decisions();
    assert_eq!(decisions.len(), 2);
    assert!(decisions.iter().all(|d| d.kind == ConsentKind::Legacy));
    emulator.shutdown().await;
}

#[tokio::test]
async fn declining_redirects_with_each_links_error_shape() {
    let emulator = start_demo().await;

    let page = open(&v2_link(
        &emulator,
        "organizations",
        &format!("{M365D}/.default"),
        STATE,
    ))
    .await;
    let (base, params) = location(&decide(&page, WOODGROVE, "decline").await);
    assert_eq!(base, CALLBACK);
    assert_eq!(param(&params, "error"), "access_denied");
    assert_eq!(param(&params, "error_subcode"), "cancel");
    assert!(
        param(&params, "error_description")
            .starts_with("AADSTS65004: User declined to consent to access the app.")
    );
    assert_eq!(param(&params, "state"), STATE);
    // As Entra does: admin_consent=True on a refusal too.
    assert_eq!(param(&params, "admin_consent"), "True");
    assert!(!names(&params).contains(&"tenant"));

    let page = open(&admin_consent_link(&emulator, "common")).await;
    let (_, params) = location(&decide(&page, WOODGROVE, "decline").await);
    assert_eq!(names(&params), ["error", "error_description", "state"]);
    assert_eq!(param(&params, "error"), "permission_denied");
    assert_eq!(param(&params, "state"), STATE);

    let page = open(&legacy_link(&emulator, "consent")).await;
    let (_, params) = location(&decide(&page, WOODGROVE, "decline").await);
    assert_eq!(param(&params, "error"), "access_denied");
    assert!(param(&params, "error_description").starts_with("AADSTS65004:"));
    assert_eq!(param(&params, "state"), STATE);
    for absent in ["code", "tenant", "admin_consent"] {
        assert!(!names(&params).contains(&absent), "{absent}");
    }

    assert_eq!(roles(&emulator, WOODGROVE, M365D).await, Err(700016));
    let decisions = emulator.handle().consent_decisions();
    assert_eq!(decisions.len(), 3);
    assert!(
        decisions
            .iter()
            .all(|d| d.decision == ConsentDecision::Decline)
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn invalid_links_get_an_error_page_never_a_redirect() {
    let emulator = start_demo().await;
    let scope = format!("{M365D}/.default");
    let v2 = |tenant: &str, params: &[(&str, &str)]| {
        link(&emulator, &format!("/{tenant}/v2.0/adminconsent"), params)
    };
    let cases: Vec<(String, &str)> = vec![
        (
            v2(
                "organizations",
                &[
                    ("client_id", "99999999-9999-4999-8999-999999999999"),
                    ("scope", &scope),
                    ("redirect_uri", CALLBACK),
                ],
            ),
            "AADSTS700016",
        ),
        (
            v2(
                "organizations",
                &[
                    ("client_id", CLIENT_ID),
                    ("scope", &scope),
                    ("redirect_uri", "https://evil.example/consent/callback"),
                ],
            ),
            "AADSTS50011",
        ),
        (
            v2(
                "organizations",
                &[("client_id", CLIENT_ID), ("scope", &scope)],
            ),
            "AADSTS900144",
        ),
        (
            v2(
                "organizations",
                &[
                    ("client_id", CLIENT_ID),
                    ("scope", &scope),
                    ("redirect_uri", ""),
                ],
            ),
            "AADSTS900144",
        ),
        (
            v2(
                "organizations",
                &[
                    ("client_id", ""),
                    ("scope", &scope),
                    ("redirect_uri", CALLBACK),
                ],
            ),
            "AADSTS900144",
        ),
        (
            v2(
                "organizations",
                &[("client_id", CLIENT_ID), ("redirect_uri", CALLBACK)],
            ),
            "AADSTS900144",
        ),
        (
            v2(
                "common",
                &[
                    ("client_id", CLIENT_ID),
                    ("scope", &scope),
                    ("redirect_uri", CALLBACK),
                ],
            ),
            "AADSTS90130",
        ),
        (
            v2(
                "organizations",
                &[
                    ("client_id", CLIENT_ID),
                    ("scope", "https://api.security.microsoft.com.default"),
                    ("redirect_uri", CALLBACK),
                ],
            ),
            "AADSTS70011",
        ),
        (
            v2(
                "unknown.example",
                &[
                    ("client_id", CLIENT_ID),
                    ("scope", &scope),
                    ("redirect_uri", CALLBACK),
                ],
            ),
            "AADSTS90002",
        ),
        (
            link(
                &emulator,
                "/common/oauth2/authorize",
                &[
                    ("client_id", CLIENT_ID),
                    ("response_type", "code"),
                    ("redirect_uri", CALLBACK),
                ],
            ),
            "AADSTS90023",
        ),
    ];
    for (url, expected) in cases {
        let page = open(&url).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{url}");
        assert!(page.headers.get(LOCATION).is_none(), "{url}");
        assert!(
            page.headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(page.headers[X_FRAME_OPTIONS], "DENY");
        assert_eq!(error_code(&page.html), expected, "{url}");
    }

    // A hand-made decision cannot do what the link could not.
    let page = open(&admin_consent_link(&emulator, "common")).await;
    let response = page
        .submit(&[
            ("redirect_uri", "https://evil.example/consent/callback"),
            ("tenant", WOODGROVE),
            ("decision", "accept"),
        ])
        .await
        .expect("decision");
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.location.is_none());
    assert_eq!(error_code(&response.body), "AADSTS50011");
    assert_eq!(roles(&emulator, WOODGROVE, M365D).await, Err(700016));
    assert!(emulator.handle().consent_decisions().is_empty());
    emulator.shutdown().await;
}

#[tokio::test]
async fn echoed_values_are_escaped_and_state_comes_back_intact() {
    let emulator = start_demo().await;
    let state = "\"><script>alert('x')</script>&amp;";
    let page = open(&v2_link(
        &emulator,
        "organizations",
        &format!("{M365D}/.default"),
        state,
    ))
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.html.contains("<script"), "{}", page.html);
    assert!(page.html.contains("&lt;script&gt;"));
    assert!(page.html.contains("&amp;amp;"));

    let (_, params) = location(&decide(&page, WOODGROVE, "accept").await);
    assert_eq!(param(&params, "state"), state);

    // Error pages escape what they echo too.
    let page = open(&link(
        &emulator,
        "/organizations/v2.0/adminconsent",
        &[
            ("client_id", CLIENT_ID),
            ("scope", &format!("{M365D}/.default")),
            ("redirect_uri", "https://a.example/<script>"),
        ],
    ))
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(!page.html.contains("<script"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn grants_wait_for_the_propagation_delay() {
    let emulator = start_demo().await;
    // A delay no test outlives: the token endpoint must still answer as before the consent.
    let settings = no_redirects()
        .put(format!("{}/_emulator/settings", emulator.base_url()))
        .json(&json!({ "consent_propagation_ms": 86_400_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), StatusCode::NO_CONTENT);

    let page = open(&admin_consent_link(&emulator, "common")).await;
    location(&decide(&page, WOODGROVE, "accept").await);
    let page = open(&admin_consent_link(&emulator, "common")).await;
    location(&decide(&page, FABRIKAM, "accept").await);

    assert_eq!(roles(&emulator, WOODGROVE, M365D).await, Err(700016));
    // Fabrikam keeps its old grants meanwhile: M365 Defender only.
    assert_eq!(roles(&emulator, FABRIKAM, MDE).await, Ok(None));
    assert_eq!(
        roles(&emulator, FABRIKAM, M365D).await,
        Ok(Some(json!(["Incident.Read.All"])))
    );

    // Shortening the delay releases the pending grants.
    emulator.handle().set_consent_propagation(0).unwrap();
    let mut granted = Err(0);
    for _ in 0..100 {
        granted = roles(&emulator, WOODGROVE, M365D).await;
        if granted.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(granted, Ok(Some(json!(["Incident.Read.All"]))));
    let mut fabrikam = Ok(None);
    for _ in 0..100 {
        fabrikam = roles(&emulator, FABRIKAM, MDE).await;
        if fabrikam != Ok(None) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fabrikam, Ok(Some(json!(["Alert.Read.All"]))));
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_short_delay_passes_by_itself() {
    let emulator = start_demo().await;
    emulator.handle().set_consent_propagation(200).unwrap();
    let page = open(&admin_consent_link(&emulator, "common")).await;
    location(&decide(&page, WOODGROVE, "accept").await);
    let mut granted = Err(0);
    for _ in 0..200 {
        granted = roles(&emulator, WOODGROVE, MDE).await;
        if granted.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(granted, Ok(Some(json!(["Alert.Read.All"]))));
    assert!(
        emulator
            .handle()
            .set_consent_propagation(86_400_001)
            .is_err()
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn re_consent_merges_with_existing_grants() {
    let emulator = start_demo().await;
    emulator
        .handle()
        .set_grant(
            CONTOSO,
            &defender_emulator::GrantConfig {
                client_id: CLIENT_ID.to_owned(),
                resource: M365D.to_owned(),
                roles: vec!["Incident.ReadWrite.All".to_owned()],
            },
        )
        .unwrap();
    for _ in 0..2 {
        let page = open(&admin_consent_link(&emulator, CONTOSO)).await;
        location(&decide(&page, CONTOSO, "accept").await);
    }
    assert_eq!(
        roles(&emulator, CONTOSO, M365D).await,
        Ok(Some(json!(["Incident.ReadWrite.All", "Incident.Read.All"])))
    );
    assert_eq!(
        roles(&emulator, CONTOSO, GRAPH).await,
        Ok(Some(json!(["SecurityIncident.Read.All"])))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn redirect_uris_match_case_sensitively_with_loopback_ports_ignored() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    let partner = "a1a1a1a1-0000-4000-8000-000000000001";
    handle
        .add_app(&AppConfig {
            client_id: partner.to_owned(),
            display_name: "Partner <b>\"quoted\"</b>".to_owned(),
            disabled: false,
            secrets: vec![],
            certificates: vec![],
            redirect_uris: vec!["https://partner.example/Consent/Callback?src=emulator".to_owned()],
            required_permissions: vec![RequiredPermissionConfig {
                resource: "https://api.security.microsoft.com/".to_owned(),
                roles: vec!["Incident.Read.All".to_owned()],
            }],
            allow_public_client_flows: false,
            federated_credentials: vec![],
        })
        .unwrap();
    let adminconsent = |client_id: &str, redirect_uri: &str| {
        link(
            &emulator,
            "/organizations/adminconsent",
            &[("client_id", client_id), ("redirect_uri", redirect_uri)],
        )
    };
    let cases = [
        (CLIENT_ID, "http://localhost/consent/callback", true),
        (CLIENT_ID, "http://localhost:9999/consent/callback", true),
        (CLIENT_ID, "http://127.0.0.1:3000/consent/callback", true),
        (CLIENT_ID, CONSENT_REDIRECT_URI, true),
        (CLIENT_ID, "http://localhost:9999/Consent/callback", false),
        (CLIENT_ID, "http://localhost:9999/consent/callback/", false),
        (CLIENT_ID, "https://localhost/consent/callback", false),
        (
            CLIENT_ID,
            "http://localhost.evil.example/consent/callback",
            false,
        ),
        (
            partner,
            "https://partner.example/Consent/Callback?src=emulator",
            true,
        ),
        (
            partner,
            "https://partner.example/consent/callback?src=emulator",
            false,
        ),
        (partner, "https://partner.example/Consent/Callback", false),
        (
            partner,
            "https://partner.example:8443/Consent/Callback?src=emulator",
            false,
        ),
    ];
    for (client_id, redirect_uri, accepted) in cases {
        let page = open(&adminconsent(client_id, redirect_uri)).await;
        if accepted {
            assert_eq!(page.status, StatusCode::OK, "{redirect_uri}");
        } else {
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{redirect_uri}");
            assert_eq!(error_code(&page.html), "AADSTS50011", "{redirect_uri}");
        }
    }

    // The registered query is kept; no state was sent, so none comes back.
    let page = open(&adminconsent(
        partner,
        "https://partner.example/Consent/Callback?src=emulator",
    ))
    .await;
    assert!(
        page.html
            .contains("Partner &lt;b&gt;&quot;quoted&quot;&lt;/b&gt;")
    );
    let response = decide(&page, WOODGROVE, "accept").await;
    let (base, params) = location(&response);
    assert_eq!(base, "https://partner.example/Consent/Callback");
    assert_eq!(names(&params), ["src", "tenant", "admin_consent"]);
    assert_eq!(param(&params, "src"), "emulator");
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_decision_log_is_served_and_cleared() {
    let emulator = start_demo().await;
    let page = open(&admin_consent_link(&emulator, "common")).await;
    location(&decide(&page, WOODGROVE, "decline").await);

    let log_url = format!("{}/_emulator/consent/log", emulator.base_url());
    let log = get(&log_url).await;
    assert_eq!(log.status, StatusCode::OK);
    let entries = log.body["consent_decisions"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["tenant"], WOODGROVE);
    assert_eq!(entries[0]["client_id"], CLIENT_ID);
    assert_eq!(entries[0]["kind"], "adminconsent");
    assert_eq!(entries[0]["decision"], "decline");
    assert!(entries[0]["at"].as_str().unwrap().ends_with('Z'));

    let cleared = client().delete(&log_url).send().await.unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    assert!(emulator.handle().consent_decisions().is_empty());

    let too_long = client()
        .put(format!("{}/_emulator/settings", emulator.base_url()))
        .json(&json!({ "consent_propagation_ms": 86_400_001u64 }))
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    emulator.shutdown().await;
}

#[test]
fn scenarios_without_consent_fields_still_load_and_bad_ones_are_refused() {
    let old = Scenario::from_json(
        r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111","secrets":[{"value":"s"}]}]}"#,
    )
    .unwrap();
    assert!(old.apps[0].redirect_uris.is_empty());
    assert!(old.apps[0].required_permissions.is_empty());
    assert_eq!(old.consent_propagation_ms, 0);

    let cases = [
        (
            r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111",
                "redirect_uris":["http://partner.example/cb"]}]}"#,
            "must be https",
        ),
        (
            r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111",
                "redirect_uris":["https://partner.example/cb#x"]}]}"#,
            "'#'",
        ),
        (
            r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111",
                "required_permissions":[{"resource":"https://example.com","roles":["X"]}]}]}"#,
            "not a resource",
        ),
        (r#"{"consent_propagation_ms":86400001}"#, "at most"),
    ];
    for (text, expected) in cases {
        let error = format!("{:#}", Scenario::from_json(text).unwrap_err());
        assert!(error.contains(expected), "{text}: {error}");
    }
}
