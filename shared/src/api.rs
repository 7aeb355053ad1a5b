//! The Microsoft APIs a token can be minted for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the three APIs the partner reaches in a customer tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefenderApi {
    /// Microsoft 365 Defender (`api.security.microsoft.com`).
    M365d,
    /// Microsoft Defender for Endpoint (`api.securitycenter.microsoft.com`).
    Mde,
    /// Microsoft Graph (security API).
    Graph,
}

impl DefenderApi {
    pub const ALL: [DefenderApi; 3] = [DefenderApi::M365d, DefenderApi::Mde, DefenderApi::Graph];

    /// The stable short name used in payloads, settings and logs.
    pub fn code(self) -> &'static str {
        match self {
            DefenderApi::M365d => "m365d",
            DefenderApi::Mde => "mde",
            DefenderApi::Graph => "graph",
        }
    }

    /// Suffix of the environment variables that configure this API (`DP_API_BASE_M365D`, ...).
    pub fn env_suffix(self) -> &'static str {
        match self {
            DefenderApi::M365d => "M365D",
            DefenderApi::Mde => "MDE",
            DefenderApi::Graph => "GRAPH",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            DefenderApi::M365d => "Microsoft 365 Defender",
            DefenderApi::Mde => "Microsoft Defender for Endpoint",
            DefenderApi::Graph => "Microsoft Graph",
        }
    }
}

impl fmt::Display for DefenderApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The name given is none of the APIs (or their accepted aliases).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown API {0:?}: use one of m365d, mde, graph")]
pub struct UnknownApi(pub String);

impl FromStr for DefenderApi {
    type Err = UnknownApi;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let normalized: String = name
            .trim()
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        match normalized.as_str() {
            "m365d" | "m365defender" | "microsoft365defender" | "mtp" => Ok(DefenderApi::M365d),
            "mde" | "defenderforendpoint" | "microsoftdefenderforendpoint" | "wdatp" => {
                Ok(DefenderApi::Mde)
            }
            "graph" | "microsoftgraph" | "graphsecurity" => Ok(DefenderApi::Graph),
            _ => Err(UnknownApi(name.chars().take(64).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_and_aliases() {
        assert_eq!("m365d".parse::<DefenderApi>().unwrap(), DefenderApi::M365d);
        assert_eq!(
            "M365_Defender".parse::<DefenderApi>().unwrap(),
            DefenderApi::M365d
        );
        assert_eq!(
            "defender-for-endpoint".parse::<DefenderApi>().unwrap(),
            DefenderApi::Mde
        );
        assert_eq!(
            " Graph ".parse::<DefenderApi>().unwrap(),
            DefenderApi::Graph
        );
        for api in DefenderApi::ALL {
            assert_eq!(api.code().parse::<DefenderApi>().unwrap(), api);
        }
    }

    #[test]
    fn refuses_unknown_names_without_echoing_huge_input() {
        let err = "sentinel".parse::<DefenderApi>().unwrap_err();
        assert_eq!(err.0, "sentinel");
        let long = "x".repeat(10_000);
        assert_eq!(long.parse::<DefenderApi>().unwrap_err().0.len(), 64);
    }
}
