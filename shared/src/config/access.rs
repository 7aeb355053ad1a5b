//! What a token must carry to be used: the application roles per API (`DP_REQUIRED_ROLES_*`) and
//! the delegated scopes of a user's token (`DP_REQUIRED_SCOPES_*`).

use super::env::{ConfigError, Env};
use crate::api::DefenderApi;
use crate::defender::Source;
use crate::entra::roles::RoleRequirement;

/// Application roles a token must carry, per API (`DP_REQUIRED_ROLES_GRAPH`, ...).
pub const ENV_REQUIRED_ROLES_PREFIX: &str = "DP_REQUIRED_ROLES_";
/// Delegated scopes (`scp`) a user's token must carry, per API (`DP_REQUIRED_SCOPES_M365D`, ...).
pub const ENV_REQUIRED_SCOPES_PREFIX: &str = "DP_REQUIRED_SCOPES_";

/// The roles and scopes each API's tokens must carry, in [`DefenderApi::ALL`] order.
#[derive(Debug, Clone)]
pub struct RequiredAccess {
    roles: [RoleRequirement; 3],
    /// Whether each API's requirement was set (`DP_REQUIRED_ROLES_*`) rather than derived.
    roles_explicit: [bool; 3],
    scopes: [RoleRequirement; 3],
}

impl RequiredAccess {
    /// The roles a token for `api` must carry.
    pub fn required_roles(&self, api: DefenderApi) -> &RoleRequirement {
        &self.roles[index(api)]
    }

    /// The roles a tenant must have granted for `source` to be fetched: the source's own roles,
    /// unless `DP_REQUIRED_ROLES_*` sets its API's requirement, which then applies to every
    /// source of that API.
    pub fn source_roles(&self, source: Source) -> RoleRequirement {
        let index = index(crate::defender::spec(source).api);
        if self.roles_explicit[index] {
            self.roles[index].clone()
        } else {
            RoleRequirement::default_for_source(source)
        }
    }

    /// The delegated scopes a user's (on-behalf-of) token for `api` must carry.
    pub fn required_scopes(&self, api: DefenderApi) -> &RoleRequirement {
        &self.scopes[index(api)]
    }
}

fn index(api: DefenderApi) -> usize {
    DefenderApi::ALL
        .iter()
        .position(|candidate| *candidate == api)
        .expect("every API is listed")
}

/// Unset, an API's roles follow `sources` (Graph: the roles of incidents or of alerts_v2); an
/// explicit setting wins.
pub(super) fn read(env: &Env, sources: &[Source]) -> Result<RequiredAccess, ConfigError> {
    let roles_explicit = DefenderApi::ALL
        .map(|api| env.is_set(&format!("{ENV_REQUIRED_ROLES_PREFIX}{}", api.env_suffix())));
    let roles = DefenderApi::ALL.map(|api| {
        requirement(env, ENV_REQUIRED_ROLES_PREFIX, api, || {
            RoleRequirement::for_sources(api, sources)
        })
    });
    let scopes = DefenderApi::ALL.map(|api| {
        requirement(env, ENV_REQUIRED_SCOPES_PREFIX, api, || {
            RoleRequirement::default_scopes_for(api)
        })
    });
    let [m365d, mde, graph] = roles;
    let [scopes_m365d, scopes_mde, scopes_graph] = scopes;
    Ok(RequiredAccess {
        roles: [m365d?, mde?, graph?],
        roles_explicit,
        scopes: [scopes_m365d?, scopes_mde?, scopes_graph?],
    })
}

fn requirement(
    env: &Env,
    prefix: &str,
    api: DefenderApi,
    default: impl FnOnce() -> RoleRequirement,
) -> Result<RoleRequirement, ConfigError> {
    let variable = format!("{prefix}{}", api.env_suffix());
    match env.get(&variable) {
        Some(text) => {
            RoleRequirement::parse(&text).map_err(|problem| ConfigError::new(variable, problem))
        }
        None => Ok(default()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    fn access(pairs: &[(&str, &str)]) -> Result<RequiredAccess, ConfigError> {
        with(pairs, |env| read(&env, &[Source::GraphIncidents]))
    }

    #[test]
    fn required_scopes_default_and_override() {
        let defaults = access(&[]).unwrap();
        assert_eq!(
            defaults.required_scopes(DefenderApi::Mde).to_string(),
            "Alert.Read|Alert.ReadWrite"
        );
        let overridden = access(&[("DP_REQUIRED_SCOPES_M365D", "Incident.ReadWrite")]).unwrap();
        assert!(
            overridden
                .required_scopes(DefenderApi::M365d)
                .missing(&["Incident.Read".to_owned()])
                .is_some()
        );
        let error = access(&[("DP_REQUIRED_SCOPES_GRAPH", " | ")]).unwrap_err();
        assert_eq!(error.variable, "DP_REQUIRED_SCOPES_GRAPH");
    }

    #[test]
    fn an_explicit_requirement_applies_to_every_source_of_its_api() {
        let derived = access(&[]).unwrap();
        assert_eq!(
            derived.source_roles(Source::GraphAlerts).to_string(),
            "SecurityAlert.Read.All|SecurityAlert.ReadWrite.All"
        );
        let explicit = access(&[("DP_REQUIRED_ROLES_GRAPH", "SecurityAlert.Read.All")]).unwrap();
        assert_eq!(
            explicit.source_roles(Source::GraphIncidents).to_string(),
            "SecurityAlert.Read.All"
        );
        let error = access(&[("DP_REQUIRED_ROLES_MDE", " , ")]).unwrap_err();
        assert_eq!(error.variable, "DP_REQUIRED_ROLES_MDE");
    }
}
