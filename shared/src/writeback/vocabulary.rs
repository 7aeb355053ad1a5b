//! The values Graph accepts in an incident or alert update (reference §11), each with the one
//! spelling we send and every spelling we accept from a caller or read back from Microsoft.
//!
//! Callers write them in any case and in either of Microsoft's spellings (the v1.0 metadata says
//! `compromisedAccount` and `confirmedActivity`, the docs page `compromisedUser` and
//! `confirmedUserActivity`): a caller copying from either source must not be refused.

use serde::Serialize;

/// One closed set of Graph enum values.
pub struct Vocabulary {
    /// What the field is called in our requests and errors.
    pub field: &'static str,
    /// (the spelling sent to Graph, other spellings accepted for it)
    values: &'static [(&'static str, &'static [&'static str])],
}

impl Vocabulary {
    /// The spelling to send for `given`, or `None` when `given` is not in the set.
    pub fn canonical(&self, given: &str) -> Option<&'static str> {
        let given = given.trim();
        self.values.iter().find_map(|(sent, aliases)| {
            (sent.eq_ignore_ascii_case(given)
                || aliases
                    .iter()
                    .any(|alias| alias.eq_ignore_ascii_case(given)))
            .then_some(*sent)
        })
    }

    /// The accepted values, for an error message.
    pub fn listed(&self) -> String {
        self.values
            .iter()
            .map(|(sent, _)| *sent)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An incident's status in an update. `inProgress` and `awaitingAction` appear in lists, but
/// their use in a PATCH is undocumented: we do not send them.
pub const INCIDENT_STATUS: Vocabulary = Vocabulary {
    field: "status",
    values: &[("active", &[]), ("resolved", &[]), ("redirected", &[])],
};

/// An alert's status in an update (`alerts_v2`).
pub const ALERT_STATUS: Vocabulary = Vocabulary {
    field: "status",
    values: &[("new", &[]), ("inProgress", &[]), ("resolved", &[])],
};

pub const CLASSIFICATION: Vocabulary = Vocabulary {
    field: "classification",
    values: &[
        ("unknown", &[]),
        ("falsePositive", &[]),
        ("truePositive", &[]),
        ("informationalExpectedActivity", &[]),
    ],
};

/// Determinations: the metadata spelling is what we send (the SDKs are generated from it).
pub const DETERMINATION: Vocabulary = Vocabulary {
    field: "determination",
    values: &[
        ("unknown", &[]),
        ("apt", &[]),
        ("malware", &[]),
        ("securityPersonnel", &[]),
        ("securityTesting", &[]),
        ("unwantedSoftware", &[]),
        ("other", &[]),
        ("multiStagedAttack", &[]),
        ("compromisedAccount", &["compromisedUser"]),
        ("phishing", &[]),
        ("maliciousUserActivity", &[]),
        ("notMalicious", &[]),
        ("notEnoughDataToValidate", &[]),
        ("confirmedActivity", &["confirmedUserActivity"]),
        ("lineOfBusinessApplication", &[]),
    ],
};

/// Determinations only the alert-update page lists.
pub const ALERT_ONLY_DETERMINATION: Vocabulary = Vocabulary {
    field: "determination",
    values: &[("clean", &[]), ("insufficientData", &[])],
};

/// Where an update is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Incident,
    Alert,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Incident => "incident",
            TargetKind::Alert => "alert",
        }
    }

    /// What a fetched source's records are, for recognising our own changes in them (the
    /// MDE alerts API's ids are not Graph's: none).
    pub fn of_source(source: crate::defender::Source) -> Option<TargetKind> {
        use crate::defender::Source;
        match source {
            Source::GraphIncidents | Source::M365dIncidents => Some(TargetKind::Incident),
            Source::GraphAlerts => Some(TargetKind::Alert),
            Source::MdeAlerts => None,
        }
    }

    /// The Graph collection under `/security`.
    pub fn collection(self) -> &'static str {
        match self {
            TargetKind::Incident => "incidents",
            TargetKind::Alert => "alerts_v2",
        }
    }

    pub fn status_vocabulary(self) -> &'static Vocabulary {
        match self {
            TargetKind::Incident => &INCIDENT_STATUS,
            TargetKind::Alert => &ALERT_STATUS,
        }
    }

    /// The determination spelling to send for `given` on this kind of target.
    pub fn determination(self, given: &str) -> Option<&'static str> {
        DETERMINATION.canonical(given).or(match self {
            TargetKind::Alert => ALERT_ONLY_DETERMINATION.canonical(given),
            TargetKind::Incident => None,
        })
    }

    /// The application permission a write on this kind needs.
    pub fn write_role(self) -> &'static str {
        match self {
            TargetKind::Incident => "SecurityIncident.ReadWrite.All",
            TargetKind::Alert => "SecurityAlert.ReadWrite.All",
        }
    }
}

/// Which kinds of target a tenant's granted roles let the app change: `incidents+alerts`,
/// `incidents`, `alerts` or `-` (the operator's `write` column).
pub fn writable_kinds(roles: &[String]) -> &'static str {
    let has = |kind: TargetKind| {
        roles
            .iter()
            .any(|role| role.eq_ignore_ascii_case(kind.write_role()))
    };
    match (has(TargetKind::Incident), has(TargetKind::Alert)) {
        (true, true) => "incidents+alerts",
        (true, false) => "incidents",
        (false, true) => "alerts",
        (false, false) => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_and_any_case_are_accepted_and_the_metadata_one_is_sent() {
        assert_eq!(
            DETERMINATION.canonical("compromisedUser"),
            Some("compromisedAccount")
        );
        assert_eq!(
            DETERMINATION.canonical("CompromisedAccount"),
            Some("compromisedAccount")
        );
        assert_eq!(
            DETERMINATION.canonical("confirmedUserActivity"),
            Some("confirmedActivity")
        );
        assert_eq!(
            CLASSIFICATION.canonical(" TruePositive "),
            Some("truePositive")
        );
        assert_eq!(CLASSIFICATION.canonical("maybe"), None);
    }

    #[test]
    fn undocumented_incident_statuses_are_not_sent() {
        assert_eq!(INCIDENT_STATUS.canonical("resolved"), Some("resolved"));
        assert_eq!(INCIDENT_STATUS.canonical("inProgress"), None);
        assert_eq!(INCIDENT_STATUS.canonical("awaitingAction"), None);
        assert_eq!(ALERT_STATUS.canonical("inprogress"), Some("inProgress"));
        assert_eq!(ALERT_STATUS.canonical("active"), None);
    }

    #[test]
    fn alert_only_determinations_are_refused_on_incidents() {
        assert_eq!(TargetKind::Alert.determination("clean"), Some("clean"));
        assert_eq!(TargetKind::Incident.determination("clean"), None);
        assert_eq!(
            TargetKind::Incident.determination("phishing"),
            Some("phishing")
        );
        assert!(INCIDENT_STATUS.listed().contains("redirected"));
    }

    #[test]
    fn the_write_column_names_what_the_roles_allow() {
        let roles = |list: &[&str]| list.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(writable_kinds(&roles(&["SecurityIncident.Read.All"])), "-");
        assert_eq!(
            writable_kinds(&roles(&["SecurityIncident.ReadWrite.All"])),
            "incidents"
        );
        assert_eq!(
            writable_kinds(&roles(&[
                "SecurityAlert.ReadWrite.All",
                "SecurityIncident.ReadWrite.All"
            ])),
            "incidents+alerts"
        );
    }
}
