//! National clouds: where to sign in and where each API lives.

use std::str::FromStr;

use serde::Serialize;
use url::Url;

use crate::api::DefenderApi;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    Public,
    Gcc,
    GccHigh,
    Dod,
}

impl FromStr for Cloud {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "public" | "global" | "commercial" => Ok(Cloud::Public),
            "gcc" => Ok(Cloud::Gcc),
            "gcc-high" | "gcchigh" => Ok(Cloud::GccHigh),
            "dod" => Ok(Cloud::Dod),
            other => Err(format!(
                "unknown cloud {other:?}: use public, gcc, gcc-high or dod"
            )),
        }
    }
}

impl Cloud {
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public | Cloud::Gcc => "https://login.microsoftonline.com",
            Cloud::GccHigh | Cloud::Dod => "https://login.microsoftonline.us",
        }
    }

    /// The API's base URL, which is also the resource (token audience) it accepts.
    pub fn api_base(self, api: DefenderApi) -> &'static str {
        match (self, api) {
            (Cloud::Public, DefenderApi::M365d) => "https://api.security.microsoft.com",
            (Cloud::Gcc, DefenderApi::M365d) => "https://api-gcc.security.microsoft.us",
            (Cloud::GccHigh | Cloud::Dod, DefenderApi::M365d) => {
                "https://api-gov.security.microsoft.us"
            }
            (Cloud::Public, DefenderApi::Mde) => "https://api.securitycenter.microsoft.com",
            (Cloud::Gcc, DefenderApi::Mde) => "https://api-gcc.securitycenter.microsoft.us",
            (Cloud::GccHigh | Cloud::Dod, DefenderApi::Mde) => {
                "https://api-gov.securitycenter.microsoft.us"
            }
            (Cloud::Public | Cloud::Gcc, DefenderApi::Graph) => "https://graph.microsoft.com",
            (Cloud::GccHigh, DefenderApi::Graph) => "https://graph.microsoft.us",
            (Cloud::Dod, DefenderApi::Graph) => "https://dod-graph.microsoft.us",
        }
    }
}

/// The endpoints in force: a cloud's defaults with any overrides applied. The resource (token
/// audience) stays the cloud's even when an API base is overridden, because a regional host or a
/// local emulator still expects tokens for the API's resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    pub cloud: Cloud,
    pub authority: Url,
    api_bases: [Url; 3],
    resources: [String; 3],
}

impl CloudEndpoints {
    pub fn for_cloud(cloud: Cloud) -> CloudEndpoints {
        let parse = |text: &str| Url::parse(text).expect("built-in cloud URLs are valid");
        CloudEndpoints {
            cloud,
            authority: parse(cloud.authority_host()),
            api_bases: DefenderApi::ALL.map(|api| parse(cloud.api_base(api))),
            resources: DefenderApi::ALL.map(|api| cloud.api_base(api).to_owned()),
        }
    }

    pub fn with_authority(mut self, authority: Url) -> Self {
        self.authority = authority;
        self
    }

    pub fn with_api_base(mut self, api: DefenderApi, base: Url) -> Self {
        self.api_bases[index(api)] = base;
        self
    }

    pub fn api_base(&self, api: DefenderApi) -> &Url {
        &self.api_bases[index(api)]
    }

    /// The resource identifier a token for `api` is requested for.
    pub fn resource(&self, api: DefenderApi) -> &str {
        &self.resources[index(api)]
    }

    /// `{authority}/{tenant}/{path}` without doubling slashes, whatever the override looks like.
    pub fn authority_url(&self, tenant_segment: &str, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.authority.as_str().trim_end_matches('/'),
            tenant_segment,
            path.trim_start_matches('/')
        )
    }
}

fn index(api: DefenderApi) -> usize {
    match api {
        DefenderApi::M365d => 0,
        DefenderApi::Mde => 1,
        DefenderApi::Graph => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn government_clouds_sign_in_at_the_us_authority() {
        assert_eq!(
            Cloud::Gcc.authority_host(),
            "https://login.microsoftonline.com"
        );
        assert_eq!(
            Cloud::GccHigh.authority_host(),
            "https://login.microsoftonline.us"
        );
        assert_eq!(
            Cloud::Dod.api_base(DefenderApi::Graph),
            "https://dod-graph.microsoft.us"
        );
        assert_eq!(
            Cloud::GccHigh.api_base(DefenderApi::Mde),
            "https://api-gov.securitycenter.microsoft.us"
        );
    }

    #[test]
    fn parses_cloud_names() {
        assert_eq!("GCC_High".parse::<Cloud>().unwrap(), Cloud::GccHigh);
        assert_eq!("public".parse::<Cloud>().unwrap(), Cloud::Public);
        assert!("azure-china".parse::<Cloud>().is_err());
    }

    #[test]
    fn overrides_keep_the_resource() {
        let endpoints = CloudEndpoints::for_cloud(Cloud::Public)
            .with_authority(Url::parse("http://127.0.0.1:9000/").unwrap())
            .with_api_base(
                DefenderApi::M365d,
                Url::parse("http://127.0.0.1:9000/m365d").unwrap(),
            );
        assert_eq!(
            endpoints.authority_url("contoso.com", "/oauth2/v2.0/token"),
            "http://127.0.0.1:9000/contoso.com/oauth2/v2.0/token"
        );
        assert_eq!(
            endpoints.resource(DefenderApi::M365d),
            "https://api.security.microsoft.com"
        );
        assert_eq!(
            endpoints.api_base(DefenderApi::M365d).as_str(),
            "http://127.0.0.1:9000/m365d"
        );
    }
}
