//! The Microsoft APIs a token can be asked for.
//!
//! A resource is named by any of its URIs (public cloud, US government hosts, old aliases) or by
//! its first-party app id; all of them are the same service principal, so a grant given under
//! one name applies to tokens asked under another.

/// One first-party API.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// Short stable name used in logs.
    pub name: &'static str,
    /// The first-party application id of the API's service principal.
    pub app_id: &'static str,
    /// Every URI that names it; the first is the canonical one.
    pub uris: &'static [&'static str],
}

/// Microsoft 365 Defender ("Microsoft Threat Protection").
pub const M365_DEFENDER: Resource = Resource {
    name: "m365-defender",
    app_id: "8ee8fdad-f234-4243-8f3b-15c294843740",
    uris: &[
        "https://api.security.microsoft.com",
        "https://api-gcc.security.microsoft.us",
        "https://api-gov.security.microsoft.us",
    ],
};

/// Defender for Endpoint ("WindowsDefenderATP").
pub const DEFENDER_FOR_ENDPOINT: Resource = Resource {
    name: "defender-for-endpoint",
    app_id: "fc780465-2017-40d4-a0c5-307022471b92",
    uris: &[
        "https://api.securitycenter.microsoft.com",
        "https://securitycenter.onmicrosoft.com/windowsatpservice",
        "https://api-gcc.securitycenter.microsoft.us",
        "https://api-gov.securitycenter.microsoft.us",
    ],
};

/// Microsoft Graph.
pub const GRAPH: Resource = Resource {
    name: "graph",
    app_id: "00000003-0000-0000-c000-000000000000",
    uris: &[
        "https://graph.microsoft.com",
        "https://graph.microsoft.us",
        "https://dod-graph.microsoft.us",
    ],
};

/// All resources the emulator can mint tokens for.
pub const ALL: [&Resource; 3] = [&M365_DEFENDER, &DEFENDER_FOR_ENDPOINT, &GRAPH];

/// Finds the resource named by `identifier` (a URI, case and trailing slash ignored, or an app id).
pub fn find(identifier: &str) -> Option<&'static Resource> {
    let wanted = identifier.trim().trim_end_matches('/');
    ALL.into_iter().find(|resource| {
        resource.app_id.eq_ignore_ascii_case(wanted)
            || resource
                .uris
                .iter()
                .any(|uri| uri.eq_ignore_ascii_case(wanted))
    })
}

/// The canonical URIs, for error messages.
pub fn known_uris() -> Vec<&'static str> {
    ALL.iter().map(|resource| resource.uris[0]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_finds_its_resource() {
        assert_eq!(
            find("https://api.security.microsoft.com"),
            Some(&M365_DEFENDER)
        );
        assert_eq!(
            find("HTTPS://API.SECURITY.MICROSOFT.COM/"),
            Some(&M365_DEFENDER)
        );
        assert_eq!(
            find("https://api-gov.security.microsoft.us"),
            Some(&M365_DEFENDER)
        );
        assert_eq!(
            find("https://securitycenter.onmicrosoft.com/windowsatpservice"),
            Some(&DEFENDER_FOR_ENDPOINT)
        );
        assert_eq!(find("00000003-0000-0000-c000-000000000000"), Some(&GRAPH));
        assert_eq!(find("https://dod-graph.microsoft.us"), Some(&GRAPH));
    }

    #[test]
    fn the_sample_typo_is_unknown() {
        assert_eq!(find("https://api.security.microsoft.com.default"), None);
        assert_eq!(find("https://management.azure.com"), None);
    }
}
