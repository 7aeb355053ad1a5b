//! The world a function runs in, in one process: the emulator on a loopback port, the settings the
//! function reads, the services built on them, the tenants registered. The settings are named by
//! the `config` constants and filled in one place, so a new required setting is one edit here.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use defender_emulator::demo;
//! use defender_partner::config::ENV_TOKEN_DEADLINE_SECONDS;
//! use defender_partner_testkit::World;
//! use defender_partner_testkit::world::active;
//!
//! let world = World::builder()
//!     .setting(ENV_TOKEN_DEADLINE_SECONDS, "10")
//!     .tenant(active(demo::CONTOSO_TENANT_ID, "Contoso"))
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use defender_emulator::{EmulatorHandle, RunningEmulator, Scenario, demo};
use defender_partner::api::DefenderApi;
use defender_partner::config::{
    ENV_API_BASE_PREFIX, ENV_AUTHORITY_HOST, ENV_CREDENTIAL_FILE, ENV_CREDENTIAL_JSON,
    ENV_SQLITE_PATH, Settings,
};
use defender_partner::runtime::Services;
use defender_partner::sink::{ENV_SINK_DIR, SinkLine};
use defender_partner::store::{TenantRecord, TenantStatus};
use defender_partner::tenant_id::TenantId;

use crate::control::EmulatorControl;

/// The app credential an operator stores: `{"client_id", "client_secret"}`.
pub fn app_credential(client_id: &str, client_secret: &str) -> String {
    serde_json::json!({ "client_id": client_id, "client_secret": client_secret }).to_string()
}

/// An active tenant record named `name`.
pub fn active(tenant_id: &str, name: &str) -> TenantRecord {
    TenantRecord::new(
        TenantId::parse(tenant_id).expect("a tenant id"),
        name,
        TenantStatus::Active,
    )
}

/// Where the app credential goes.
enum Credential {
    /// `DP_CREDENTIAL_JSON`.
    Inline(String),
    /// A file in the world's folder, named by `DP_CREDENTIAL_FILE` (rewritten to rotate it).
    File(String),
}

/// A setting's value, some known only once the emulator listens or the folder exists.
enum SettingValue {
    Text(String),
    /// A path below the world's folder.
    InFolder(String),
}

type Adjust = Box<dyn FnOnce(&mut Settings) + Send>;

/// How a [`World`] is made; see [`World::builder`].
pub struct WorldBuilder {
    scenario: Scenario,
    credential: Credential,
    settings: Vec<(String, SettingValue)>,
    data_apis: bool,
    tenants: Vec<TenantRecord>,
    adjust: Option<Adjust>,
    emulated_aws: bool,
    environment_fallback: bool,
    kept_folder: Option<PathBuf>,
}

/// The emulator, the settings, the services and the registered tenants. The folder (registry,
/// sink, key files) is removed on drop, and the emulator stops.
pub struct World {
    pub emulator: RunningEmulator,
    pub services: Services,
    settings: SettingsMap,
    aws: Option<aws_config::SdkConfig>,
    folder: Folder,
}

/// The settings by name, and whether a name they lack is read from the environment.
struct SettingsMap {
    values: BTreeMap<String, String>,
    environment_fallback: bool,
}

impl SettingsMap {
    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned().or_else(|| {
            self.environment_fallback
                .then(|| std::env::var(name).ok())
                .flatten()
        })
    }
}

/// The world's folder, removed on drop unless it was given to keep.
struct Folder {
    path: PathBuf,
    remove: bool,
}

impl Drop for Folder {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl World {
    /// The emulator's demo scenario (`defender_emulator::demo`), the demo app's client secret.
    pub fn builder() -> WorldBuilder {
        World::on(Scenario::demo())
    }

    /// `scenario`, the client secret of its first app as the credential.
    pub fn on(scenario: Scenario) -> WorldBuilder {
        let credential = scenario
            .apps
            .first()
            .map(|app| {
                let secret = app.secrets.first().map(|secret| secret.value.as_str());
                app_credential(&app.client_id, secret.unwrap_or_default())
            })
            .unwrap_or_else(|| app_credential(demo::CLIENT_ID, demo::CLIENT_SECRET));
        WorldBuilder {
            scenario,
            credential: Credential::Inline(credential),
            settings: Vec::new(),
            data_apis: false,
            tenants: Vec::new(),
            adjust: None,
            emulated_aws: false,
            environment_fallback: false,
            kept_folder: None,
        }
    }

    /// `http://127.0.0.1:PORT`, the emulator.
    pub fn base_url(&self) -> &str {
        self.emulator.base_url()
    }

    /// The emulator's state, changed in this process.
    pub fn handle(&self) -> EmulatorHandle {
        self.emulator.handle()
    }

    /// The emulator's control API over HTTP (what a test of another process uses).
    pub fn control(&self) -> EmulatorControl {
        EmulatorControl::new(self.base_url())
    }

    /// The world's folder.
    pub fn folder(&self) -> &Path {
        &self.folder.path
    }

    /// The value of one setting, as the function reads it.
    pub fn setting(&self, name: &str) -> Option<String> {
        self.settings.get(name)
    }

    /// The settings as a lookup, what `FetchService::build` and `Settings::from_lookup` take.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + Copy + '_ {
        move |name| self.setting(name)
    }

    /// The settings as a process environment (for a binary run against this world).
    pub fn env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.settings
            .values
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Another function instance on the same settings (what a second Lambda sandbox is): its own
    /// token cache and store connection.
    pub async fn new_instance(&self) -> anyhow::Result<Services> {
        let settings = Settings::from_lookup(self.lookup())?;
        build_services(settings, self.aws.clone()).await
    }

    /// Every line the local sink (`DP_SINK_DIR`) holds.
    pub fn sink_lines(&self) -> Vec<SinkLine> {
        let mut lines = Vec::new();
        let mut folders: Vec<PathBuf> = self
            .setting(ENV_SINK_DIR)
            .into_iter()
            .map(PathBuf::from)
            .collect();
        while let Some(folder) = folders.pop() {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for path in entries.flatten().map(|entry| entry.path()) {
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|ext| ext == "ndjson") {
                    let text = std::fs::read(&path).expect("a readable sink file");
                    lines.extend(SinkLine::parse_all(&text).expect("sink lines"));
                }
            }
        }
        lines
    }

    /// Rewrites the credential file (`DP_CREDENTIAL_FILE`), as an operator rotating it does.
    pub fn write_credential_file(&self, credential: &str) {
        let path = self
            .setting(ENV_CREDENTIAL_FILE)
            .expect("a world built with WorldBuilder::credential_file");
        std::fs::write(path, credential).expect("the credential file is writable");
    }

    /// Stops the emulator, letting open connections finish, and removes the folder.
    pub async fn shutdown(self) {
        self.emulator.shutdown().await;
    }
}

impl WorldBuilder {
    /// Sets `name` (a `config` constant) to `value`; a later call for the same name wins.
    pub fn setting(mut self, name: &str, value: impl Into<String>) -> WorldBuilder {
        self.settings
            .push((name.to_owned(), SettingValue::Text(value.into())));
        self
    }

    /// Sets `name` to the path of `relative` in the world's folder (a key file, a database).
    pub fn folder_setting(mut self, name: &str, relative: &str) -> WorldBuilder {
        self.settings
            .push((name.to_owned(), SettingValue::InFolder(relative.to_owned())));
        self
    }

    /// The app credential JSON (`DP_CREDENTIAL_JSON`), instead of the scenario's first secret.
    pub fn credential_json(mut self, credential: impl Into<String>) -> WorldBuilder {
        self.credential = Credential::Inline(credential.into());
        self
    }

    /// The app credential in a file of the world's folder (`DP_CREDENTIAL_FILE`), which
    /// [`World::write_credential_file`] rewrites.
    pub fn credential_file(mut self) -> WorldBuilder {
        let credential = match self.credential {
            Credential::Inline(text) | Credential::File(text) => text,
        };
        self.credential = Credential::File(credential);
        self
    }

    /// The three data APIs (`DP_API_BASE_*`) at the emulator.
    pub fn data_apis(mut self) -> WorldBuilder {
        self.data_apis = true;
        self
    }

    /// The local sink (`DP_SINK_DIR`) in the world's folder; [`World::sink_lines`] reads it.
    pub fn local_sink(self) -> WorldBuilder {
        self.folder_setting(ENV_SINK_DIR, "sink")
    }

    /// Registers `record` before the world is handed out.
    pub fn tenant(mut self, record: TenantRecord) -> WorldBuilder {
        self.tenants.push(record);
        self
    }

    /// Registers every record of `records`.
    pub fn tenants(mut self, records: impl IntoIterator<Item = TenantRecord>) -> WorldBuilder {
        self.tenants.extend(records);
        self
    }

    /// Changes the parsed settings before the services are built (what no variable can say).
    pub fn adjust(mut self, adjust: impl FnOnce(&mut Settings) + Send + 'static) -> WorldBuilder {
        self.adjust = Some(Box::new(adjust));
        self
    }

    /// An AWS SDK configuration pointed at the emulator (its STS) with placeholder keys, as the
    /// secretless credential (`aws_federated`) needs: the emulator reads the access key id, not
    /// the signature.
    pub fn emulated_aws(mut self) -> WorldBuilder {
        self.emulated_aws = true;
        self
    }

    /// A setting the world does not set is read from this process's environment (the demo).
    pub fn environment_fallback(mut self) -> WorldBuilder {
        self.environment_fallback = true;
        self
    }

    /// The world's files go to `folder`, which is kept (the demo's `.local`).
    pub fn in_folder(mut self, folder: impl Into<PathBuf>) -> WorldBuilder {
        self.kept_folder = Some(folder.into());
        self
    }

    /// Starts the emulator, fills in the settings, builds the services and registers the tenants.
    pub async fn start(self) -> anyhow::Result<World> {
        let emulator =
            defender_emulator::start(self.scenario, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .context("starting the emulator")?;
        let folder = match self.kept_folder {
            Some(path) => Folder {
                path,
                remove: false,
            },
            None => Folder {
                path: std::env::temp_dir()
                    .join(format!("dp-world-{}", uuid::Uuid::new_v4().simple())),
                remove: true,
            },
        };
        std::fs::create_dir_all(&folder.path)
            .with_context(|| format!("creating {}", folder.path.display()))?;
        let base_url = emulator.base_url().to_owned();
        let mut values = BTreeMap::from([
            (ENV_AUTHORITY_HOST.to_owned(), base_url.clone()),
            (
                ENV_SQLITE_PATH.to_owned(),
                folder.path.join("registry.sqlite").display().to_string(),
            ),
        ]);
        match self.credential {
            Credential::Inline(credential) => {
                values.insert(ENV_CREDENTIAL_JSON.to_owned(), credential);
            }
            Credential::File(credential) => {
                let path = folder.path.join("credential.json");
                std::fs::write(&path, credential).context("writing the credential file")?;
                values.insert(ENV_CREDENTIAL_FILE.to_owned(), path.display().to_string());
            }
        }
        if self.data_apis {
            for api in DefenderApi::ALL {
                values.insert(
                    format!("{ENV_API_BASE_PREFIX}{}", api.env_suffix()),
                    base_url.clone(),
                );
            }
        }
        for (name, value) in self.settings {
            let value = match value {
                SettingValue::Text(text) => text,
                SettingValue::InFolder(relative) => {
                    folder.path.join(relative).display().to_string()
                }
            };
            values.insert(name, value);
        }
        let settings = SettingsMap {
            values,
            environment_fallback: self.environment_fallback,
        };
        let aws = match self.emulated_aws {
            true => Some(emulated_aws(&base_url).await),
            false => None,
        };
        let mut parsed = Settings::from_lookup(|name| settings.get(name))?;
        if let Some(adjust) = self.adjust {
            adjust(&mut parsed);
        }
        let services = build_services(parsed, aws.clone()).await?;
        for record in &self.tenants {
            services
                .registry
                .upsert(record)
                .await
                .with_context(|| format!("registering {}", record.tenant_id))?;
        }
        Ok(World {
            emulator,
            services,
            settings,
            aws,
            folder,
        })
    }
}

/// The services a function builds: on the emulated AWS when given, else as in Lambda.
async fn build_services(
    settings: Settings,
    aws: Option<aws_config::SdkConfig>,
) -> anyhow::Result<Services> {
    Ok(match aws {
        Some(aws) => Services::build_with_aws(settings, Some(aws)).await?,
        None => Services::build(settings).await?,
    })
}

/// The AWS configuration of a secretless run: a Lambda's AWS SDK finds STS in its region (or at
/// `AWS_ENDPOINT_URL_STS`) and signs with the role's credentials; here the SDK gets the
/// emulator's URL and placeholder keys.
async fn emulated_aws(emulator_url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(emulator_url)
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "AKIADEMOFUNCTIONROLE",
            "demo-not-a-secret",
            None,
            None,
            "defender-partner-demo",
        ))
        .load()
        .await
}
