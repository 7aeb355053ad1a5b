//! Which Microsoft cloud, and the endpoint overrides a deployment may set (a regional host, a
//! local emulator).

use super::env::{ConfigError, Env};
use crate::api::DefenderApi;
use crate::cloud::{Cloud, CloudEndpoints};

pub const ENV_CLOUD: &str = "DP_CLOUD";
pub const ENV_AUTHORITY_HOST: &str = "DP_AUTHORITY_HOST";
/// One variable per API: `DP_API_BASE_M365D`, `DP_API_BASE_MDE`, `DP_API_BASE_GRAPH`.
pub const ENV_API_BASE_PREFIX: &str = "DP_API_BASE_";

/// The cloud's endpoints with the overrides applied.
pub(super) fn endpoints(env: &Env) -> Result<CloudEndpoints, ConfigError> {
    let cloud: Cloud = env.parse_or(ENV_CLOUD, Cloud::Public)?;
    let mut endpoints = CloudEndpoints::for_cloud(cloud);
    if let Some(authority) = env.url(ENV_AUTHORITY_HOST)? {
        endpoints = endpoints.with_authority(authority);
    }
    for api in DefenderApi::ALL {
        let variable = format!("{ENV_API_BASE_PREFIX}{}", api.env_suffix());
        if let Some(base) = env.url(&variable)? {
            endpoints = endpoints.with_api_base(api, base);
        }
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn the_clouds_defaults_with_overrides() {
        let chosen = with(
            &[
                (ENV_CLOUD, "gcc-high"),
                (ENV_AUTHORITY_HOST, "http://127.0.0.1:8080"),
                ("DP_API_BASE_GRAPH", "http://localhost:9999/graph"),
            ],
            |env| endpoints(&env),
        )
        .unwrap();
        assert_eq!(chosen.cloud, Cloud::GccHigh);
        assert_eq!(chosen.authority.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            chosen.api_base(DefenderApi::Graph).as_str(),
            "http://localhost:9999/graph"
        );
        assert_eq!(
            chosen.resource(DefenderApi::Graph),
            "https://graph.microsoft.us"
        );
        let defaults = with(&[], |env| endpoints(&env)).unwrap();
        assert_eq!(defaults.cloud, Cloud::Public);
    }
}
