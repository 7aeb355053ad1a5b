//! The admin-consent links Microsoft offers, built for our app.

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::api::DefenderApi;
use crate::cloud::CloudEndpoints;
use crate::tenant_id::TenantId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// `/organizations/v2.0/adminconsent` with `scope={api}/.default` (the default).
    V2,
    /// `/common/adminconsent`: every permission the app registration lists.
    AdminConsent,
    /// `/common/oauth2/authorize?prompt=consent`, as the Defender docs show. Returns no tenant id.
    Legacy,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::V2 => "v2",
            LinkKind::AdminConsent => "adminconsent",
            LinkKind::Legacy => "legacy",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinkKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "v2" => Ok(LinkKind::V2),
            "adminconsent" | "admin-consent" | "v1" => Ok(LinkKind::AdminConsent),
            "legacy" | "authorize" => Ok(LinkKind::Legacy),
            other => Err(format!(
                "unknown consent link {other:?}: use v2, adminconsent or legacy"
            )),
        }
    }
}

/// Builds the consent URL. `apis` name the resources a v2 link asks for; `tenant`, when the
/// partner knows the customer's tenant, binds the link to it (Microsoft then shows the consent
/// for that tenant only).
pub fn consent_url(
    kind: LinkKind,
    endpoints: &CloudEndpoints,
    client_id: &str,
    redirect_uri: &Url,
    state: &str,
    apis: &[DefenderApi],
    tenant: Option<&TenantId>,
) -> Url {
    let (any_tenant, path) = match kind {
        LinkKind::V2 => ("organizations", "v2.0/adminconsent"),
        LinkKind::AdminConsent => ("common", "adminconsent"),
        LinkKind::Legacy => ("common", "oauth2/authorize"),
    };
    let tenant = tenant.map_or(any_tenant, TenantId::as_str);
    let mut url =
        Url::parse(&endpoints.authority_url(tenant, path)).expect("authority URLs are valid");
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("client_id", client_id);
        if kind == LinkKind::V2 {
            let scope: Vec<String> = apis
                .iter()
                .map(|api| {
                    format!(
                        "{}/.default",
                        endpoints.resource(*api).trim_end_matches('/')
                    )
                })
                .collect();
            query.append_pair("scope", &scope.join(" "));
        }
        if kind == LinkKind::Legacy {
            query.append_pair("response_type", "code");
            query.append_pair("prompt", "consent");
            query.append_pair("sso_reload", "true");
        }
        query.append_pair("redirect_uri", redirect_uri.as_str());
        query.append_pair("state", state);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Cloud;

    fn params(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn builds_each_link_shape() {
        let endpoints = CloudEndpoints::for_cloud(Cloud::Public);
        let redirect =
            Url::parse("https://example.execute-api.us-east-1.amazonaws.com/consent/callback")
                .unwrap();
        let v2 = consent_url(
            LinkKind::V2,
            &endpoints,
            "app",
            &redirect,
            "st",
            &[DefenderApi::M365d, DefenderApi::Graph],
            None,
        );
        assert_eq!(v2.path(), "/organizations/v2.0/adminconsent");
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let bound = consent_url(
            LinkKind::V2,
            &endpoints,
            "app",
            &redirect,
            "st",
            &[DefenderApi::Graph],
            Some(&tenant),
        );
        assert_eq!(
            bound.path(),
            "/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0/adminconsent"
        );
        assert!(
            params(&v2).contains(&(
                "scope".into(),
                "https://api.security.microsoft.com/.default https://graph.microsoft.com/.default"
                    .into()
            ))
        );
        assert!(params(&v2).contains(&("redirect_uri".into(), redirect.to_string())));
        let admin = consent_url(
            LinkKind::AdminConsent,
            &endpoints,
            "app",
            &redirect,
            "st",
            &[DefenderApi::M365d],
            None,
        );
        assert_eq!(
            admin.as_str().split('?').next().unwrap(),
            "https://login.microsoftonline.com/common/adminconsent"
        );
        assert!(!params(&admin).iter().any(|(k, _)| k == "scope"));
        let legacy = consent_url(
            LinkKind::Legacy,
            &endpoints,
            "app",
            &redirect,
            "st",
            &[],
            None,
        );
        assert_eq!(legacy.path(), "/common/oauth2/authorize");
        assert!(params(&legacy).contains(&("prompt".into(), "consent".into())));
        assert!(params(&legacy).contains(&("response_type".into(), "code".into())));
    }

    #[test]
    fn parses_kinds() {
        assert_eq!("V2".parse::<LinkKind>().unwrap(), LinkKind::V2);
        assert_eq!(
            "adminconsent".parse::<LinkKind>().unwrap(),
            LinkKind::AdminConsent
        );
        assert!("implicit".parse::<LinkKind>().is_err());
    }
}
