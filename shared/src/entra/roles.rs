//! Which application roles a token must carry: an all-of list of any-of groups, written
//! `A|B,C` (A or B, and C).

use crate::api::DefenderApi;
use crate::defender::Source;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRequirement {
    all_of: Vec<Vec<String>>,
}

impl RoleRequirement {
    pub fn parse(text: &str) -> Result<RoleRequirement, String> {
        let all_of: Vec<Vec<String>> = text
            .split(',')
            .map(|group| {
                group
                    .split('|')
                    .map(|role| role.trim().to_owned())
                    .filter(|role| !role.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|group| !group.is_empty())
            .collect();
        if all_of.is_empty() {
            return Err(
                "names no role: write e.g. Incident.Read.All|Incident.ReadWrite.All".into(),
            );
        }
        Ok(RoleRequirement { all_of })
    }

    /// The least each API needs for the partner's read workflows; the read-write role satisfies
    /// it too.
    pub fn default_for(api: DefenderApi) -> RoleRequirement {
        let text = match api {
            DefenderApi::M365d => "Incident.Read.All|Incident.ReadWrite.All",
            DefenderApi::Mde => "Alert.Read.All|Alert.ReadWrite.All",
            DefenderApi::Graph => "SecurityIncident.Read.All|SecurityIncident.ReadWrite.All",
        };
        RoleRequirement::parse(text).expect("built-in requirements parse")
    }

    /// The least one source needs: its API's default, except on Graph, where incidents and
    /// `alerts_v2` need different roles (the incident roles do not open `alerts_v2`).
    pub fn default_for_source(source: Source) -> RoleRequirement {
        match source {
            Source::GraphIncidents => {
                RoleRequirement::parse("SecurityIncident.Read.All|SecurityIncident.ReadWrite.All")
                    .expect("built-in requirements parse")
            }
            Source::GraphAlerts => {
                RoleRequirement::parse("SecurityAlert.Read.All|SecurityAlert.ReadWrite.All")
                    .expect("built-in requirements parse")
            }
            Source::M365dIncidents => RoleRequirement::default_for(DefenderApi::M365d),
            Source::MdeAlerts => RoleRequirement::default_for(DefenderApi::Mde),
        }
    }

    /// What a token for `api` must carry when `sources` are configured: the roles of any one of
    /// the API's configured sources (a token good for one source is a usable token; which
    /// sources a tenant is fetched for is decided per source from its recorded roles). With none
    /// of them configured, the API's default.
    pub fn for_sources(api: DefenderApi, sources: &[Source]) -> RoleRequirement {
        let mut any_of: Vec<String> = Vec::new();
        for source in sources
            .iter()
            .filter(|source| crate::defender::spec(**source).api == api)
        {
            for group in RoleRequirement::default_for_source(*source).all_of {
                for role in group {
                    if !any_of.contains(&role) {
                        any_of.push(role);
                    }
                }
            }
        }
        if any_of.is_empty() {
            RoleRequirement::default_for(api)
        } else {
            RoleRequirement {
                all_of: vec![any_of],
            }
        }
    }

    /// The delegated permissions (`scp`) a user's token for `api` must carry for the partner's
    /// read workflows (any one of them); the read-write scope satisfies it too.
    pub fn default_scopes_for(api: DefenderApi) -> RoleRequirement {
        let text = match api {
            DefenderApi::M365d => "Incident.Read|Incident.ReadWrite|AdvancedHunting.Read",
            DefenderApi::Mde => "Alert.Read|Alert.ReadWrite",
            DefenderApi::Graph => "SecurityIncident.Read.All|SecurityIncident.ReadWrite.All",
        };
        RoleRequirement::parse(text).expect("built-in requirements parse")
    }

    /// `None` when `granted` satisfies the requirement, else the groups not satisfied, each
    /// written as its alternatives joined by `|`.
    pub fn missing(&self, granted: &[String]) -> Option<Vec<String>> {
        let missing: Vec<String> = self
            .all_of
            .iter()
            .filter(|group| !group.iter().any(|role| granted.contains(role)))
            .map(|group| group.join("|"))
            .collect();
        (!missing.is_empty()).then_some(missing)
    }
}

impl std::fmt::Display for RoleRequirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self.all_of.iter().map(|group| group.join("|")).collect();
        f.write_str(&groups.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn any_of_within_a_group_all_of_across_groups() {
        let requirement = RoleRequirement::parse(
            "Incident.Read.All|Incident.ReadWrite.All, AdvancedHunting.Read.All",
        )
        .unwrap();
        assert_eq!(
            requirement.missing(&roles(&[
                "Incident.ReadWrite.All",
                "AdvancedHunting.Read.All"
            ])),
            None
        );
        assert_eq!(
            requirement.missing(&roles(&["Incident.Read.All"])),
            Some(vec!["AdvancedHunting.Read.All".to_owned()])
        );
        assert_eq!(
            requirement.missing(&[]),
            Some(vec![
                "Incident.Read.All|Incident.ReadWrite.All".to_owned(),
                "AdvancedHunting.Read.All".to_owned()
            ])
        );
    }

    #[test]
    fn defaults_accept_read_or_read_write() {
        let mde = RoleRequirement::default_for(DefenderApi::Mde);
        assert_eq!(mde.missing(&roles(&["Alert.ReadWrite.All"])), None);
        assert!(mde.missing(&roles(&["Incident.Read.All"])).is_some());
        assert_eq!(mde.to_string(), "Alert.Read.All|Alert.ReadWrite.All");
    }

    #[test]
    fn delegated_defaults_accept_any_read_scope() {
        let m365d = RoleRequirement::default_scopes_for(DefenderApi::M365d);
        assert_eq!(m365d.missing(&roles(&["AdvancedHunting.Read"])), None);
        assert_eq!(m365d.missing(&roles(&["Incident.ReadWrite"])), None);
        assert!(m365d.missing(&roles(&["Incident.Read.All"])).is_some());
        let graph = RoleRequirement::default_scopes_for(DefenderApi::Graph);
        assert_eq!(graph.missing(&roles(&["SecurityIncident.Read.All"])), None);
        let mde = RoleRequirement::default_scopes_for(DefenderApi::Mde);
        assert!(mde.missing(&roles(&["Alert.Read.All"])).is_some());
    }

    #[test]
    fn graph_requirement_follows_the_configured_sources() {
        let both = RoleRequirement::for_sources(
            DefenderApi::Graph,
            &[Source::GraphIncidents, Source::GraphAlerts],
        );
        assert_eq!(
            both.to_string(),
            "SecurityIncident.Read.All|SecurityIncident.ReadWrite.All|SecurityAlert.Read.All|SecurityAlert.ReadWrite.All"
        );
        assert_eq!(
            both.missing(&roles(&[
                "SecurityIncident.Read.All",
                "SecurityAlert.Read.All"
            ])),
            None
        );
        assert_eq!(both.missing(&roles(&["SecurityAlert.ReadWrite.All"])), None);
        assert!(both.missing(&roles(&["Incident.Read.All"])).is_some());
        let alerts = RoleRequirement::for_sources(DefenderApi::Graph, &[Source::GraphAlerts]);
        assert_eq!(
            alerts.to_string(),
            "SecurityAlert.Read.All|SecurityAlert.ReadWrite.All"
        );
        assert!(
            alerts
                .missing(&roles(&["SecurityIncident.Read.All"]))
                .is_some()
        );
        assert_eq!(
            RoleRequirement::for_sources(DefenderApi::Graph, &[Source::M365dIncidents]),
            RoleRequirement::default_for(DefenderApi::Graph)
        );
        assert_eq!(
            RoleRequirement::for_sources(DefenderApi::M365d, &[Source::M365dIncidents]),
            RoleRequirement::default_for(DefenderApi::M365d)
        );
    }

    #[test]
    fn empty_text_is_refused() {
        assert!(RoleRequirement::parse(" | , ").is_err());
    }
}
