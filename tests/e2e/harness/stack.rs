//! The local world a function runs in, the end-to-end side of the test kit's `World`: moto
//! (Secrets Manager + DynamoDB, KMS) with the registry table and the app-credential secret (and,
//! when asked, the consent state key and a sign-in sealing key), and the emulator binary with
//! the partner's app and the customer tenants of a scenario. A secretless stack
//! ([`Stack::start_federated`]) has the emulator play AWS STS as well, and no secret anywhere.
//! Functions are started against it with [`Stack::start_function`] (invoked directly) or
//! [`Stack::start_function_url`] (over HTTP); every output goes to one log buffer, and every
//! token and secret the test sees is remembered so that the test can prove none reached that
//! log.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result};
use chrono::Utc;
use defender_emulator::{RequiredPermissionConfig, Scenario, SecretConfig, TenantConfig};
use defender_partner::config::{
    ENV_AUTHORITY_HOST, ENV_CREDENTIAL_SECRET_ID, ENV_SIGNIN_KMS_KEY_ID, ENV_STATE_KEY_SECRET_ID,
    ENV_TABLE_NAME,
};
use defender_partner::defender::Source;
use defender_partner::store::{DynamoRegistry, TenantRecord, TenantRegistry, TenantStatus};
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::control::resource_of;
use defender_partner_testkit::scenario::{self, RESOURCE_M365D, ROLE_M365D};
use serde_json::{Value, json};

use crate::emulator::Emulator;
use crate::function_url::{FunctionUrl, ReservedUrl};
use crate::lambda::LambdaWatch;
use crate::moto::{self, Moto};
use crate::process::LogBuffer;

/// Name of the app-credential secret in moto.
pub const SECRET_NAME: &str = "defender-partner/app-credential";
/// Name of the consent state-signing key's secret in moto.
pub const STATE_KEY_SECRET: &str = "defender-partner/consent-state-key";

/// A new random GUID, as tenants and apps have.
pub fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new random client secret, shaped like Entra's (40 characters).
pub fn new_client_secret() -> String {
    let raw = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    format!("e2e~{}", &raw[..36])
}

/// How a [`Stack`] is made ([`Stack::builder`]): the emulator's scenario, which holds the
/// partner's app, and what its functions need beyond the registry table and the credential.
pub struct StackBuilder {
    scenario: Scenario,
    client_id: String,
    /// The app's client secret; empty for a secretless app.
    secret: String,
    /// The SecretString of the credential secret.
    credential: String,
    /// The functions reach STS at the emulator (`AWS_ENDPOINT_URL_STS`).
    emulated_sts: bool,
    state_key: bool,
    kms_key: bool,
}

pub struct Stack {
    pub moto: Moto,
    pub emulator: Emulator,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    pub table: String,
    pub secret_arn: String,
    /// The partner's multi-tenant app.
    pub client_id: String,
    /// The client secret Entra (the emulator) and Secrets Manager currently agree on (empty on
    /// a secretless stack).
    current_secret: Mutex<String>,
    /// Tokens and secrets seen by the test: none may ever appear in `logs`.
    sensitive: Mutex<Vec<String>>,
    /// Output of every function started on this stack.
    logs: LogBuffer,
    /// Set on a secretless stack: where the functions' AWS SDK finds STS
    /// (`AWS_ENDPOINT_URL_STS`, the emulator).
    sts_endpoint: Option<String>,
    /// The consent state-signing key, in Secrets Manager as [`STATE_KEY_SECRET`].
    state_key: Option<String>,
    /// The KMS client and the key that seals stored sign-ins (`DP_SIGNIN_KMS_KEY_ID`).
    kms: Option<(aws_sdk_kms::Client, String)>,
}

impl Stack {
    /// A stack on `scenario`, whose app `client_id` holds `secret` (empty: a secretless app);
    /// the credential secret holds `{"client_id", "client_secret"}`.
    pub fn builder(scenario: Scenario, client_id: &str, secret: &str) -> StackBuilder {
        StackBuilder {
            scenario,
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
            credential: credential_json(client_id, secret),
            emulated_sts: false,
            state_key: false,
            kms_key: false,
        }
    }

    /// Starts moto and the emulator with a fresh app holding a fresh secret and the customer
    /// `tenants`, given the client id of the partner's app (which their grants name).
    pub async fn start_with(tenants: impl FnOnce(&str) -> Vec<TenantConfig>) -> Result<Stack> {
        let client_id = guid();
        let secret = new_client_secret();
        let mut app = scenario::app(&client_id, "Contoso SOC (e2e)", &[]);
        app.secrets.push(expiring_in_a_year(&secret));
        let scenario = scenario::with(app, tenants(&client_id));
        Stack::builder(scenario, &client_id, &secret).start().await
    }

    /// The secretless stack (`aws_federated`): the app holds no secret at all, only a federated
    /// credential trusting the emulated AWS account's tokens for the functions' role
    /// ([`scenario::aws_role_credential`]); the credential secret in Secrets Manager is
    /// `{"client_id", "credential": "aws_federated"}`; the functions reach STS at the emulator.
    /// The app may be admin-consented (to M365 Defender) through
    /// [`defender_emulator::demo::CONSENT_REDIRECT_URI`].
    pub async fn start_federated(tenants: impl FnOnce(&str) -> Vec<TenantConfig>) -> Result<Stack> {
        let client_id = guid();
        let mut app = scenario::app(&client_id, "Contoso SOC (e2e, secretless)", &[]);
        app.redirect_uris
            .push(defender_emulator::demo::CONSENT_REDIRECT_URI.to_owned());
        app.required_permissions.push(RequiredPermissionConfig {
            resource: RESOURCE_M365D.to_owned(),
            roles: vec![ROLE_M365D.to_owned()],
        });
        app.federated_credentials
            .push(scenario::aws_role_credential());
        let scenario = scenario::with(app, tenants(&client_id));
        let mut builder = Stack::builder(scenario, &client_id, "");
        builder.credential = federated_credential_json(&client_id);
        builder.emulated_sts = true;
        builder.start().await
    }

    /// Starts moto and the emulator with its built-in demo scenario (`defender_emulator::demo`:
    /// Contoso's test users, their portal roles, MFA and delegated consent), the demo app's
    /// credential in Secrets Manager.
    pub async fn start_on_demo_scenario() -> Result<Stack> {
        Stack::builder(
            Scenario::demo(),
            defender_emulator::demo::CLIENT_ID,
            defender_emulator::demo::CLIENT_SECRET,
        )
        .start()
        .await
    }

    /// The registry the functions use (the stack's table).
    pub fn registry(&self) -> DynamoRegistry {
        DynamoRegistry::new(self.dynamodb.clone(), self.table.clone())
    }

    /// The consent state-signing key ([`StackBuilder::with_state_key`]).
    pub fn state_key(&self) -> &str {
        self.state_key
            .as_deref()
            .expect("a stack built with a state key")
    }

    /// The KMS client of moto ([`StackBuilder::with_kms_key`]).
    pub fn kms(&self) -> &aws_sdk_kms::Client {
        &self.kms.as_ref().expect("a stack built with a KMS key").0
    }

    /// The environment of a function on this stack (`DP_*`, AWS pointed at moto,
    /// `RUST_LOG=debug` so that a leak in any debug log would show).
    pub fn function_env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.function_env();
        env.extend(
            [
                (ENV_AUTHORITY_HOST, self.emulator.base_url()),
                (ENV_CREDENTIAL_SECRET_ID, SECRET_NAME),
                (ENV_TABLE_NAME, self.table.as_str()),
                ("RUST_LOG", "debug"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        if let Some(sts) = &self.sts_endpoint {
            env.push(("AWS_ENDPOINT_URL_STS".to_owned(), sts.clone()));
        }
        if self.state_key.is_some() {
            env.push((
                ENV_STATE_KEY_SECRET_ID.to_owned(),
                STATE_KEY_SECRET.to_owned(),
            ));
        }
        if let Some((_, key)) = &self.kms {
            env.push((ENV_SIGNIN_KMS_KEY_ID.to_owned(), key.clone()));
        }
        env
    }

    /// Starts `cargo lambda watch` for `bin` with [`Stack::function_env`] plus `extra`
    /// (which wins), its output going to the stack's log.
    pub async fn start_function(
        &self,
        package: &str,
        bin: &str,
        extra: &[(&str, &str)],
        warm_up: &Value,
    ) -> Result<LambdaWatch> {
        let mut env = self.function_env();
        for (key, value) in extra {
            env.retain(|(existing, _)| existing != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        LambdaWatch::start_into(package, bin, &env, warm_up, self.logs.clone()).await
    }

    /// Starts `cargo lambda watch` for the function a browser reaches at `reserved` (its URL is
    /// known before the stack starts: it is a redirect URI of the app) with
    /// [`Stack::function_env`] plus `extra` (which wins), its output going to the stack's log;
    /// ready once `GET {url}{probe_path}` answers `probe_status`.
    pub async fn start_function_url(
        &self,
        package: &str,
        reserved: ReservedUrl,
        extra: &[(&str, &str)],
        probe_path: &str,
        probe_status: u16,
    ) -> Result<FunctionUrl> {
        let mut env = self.function_env();
        for (key, value) in extra {
            env.retain(|(existing, _)| existing != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        FunctionUrl::start(
            package,
            reserved,
            &env,
            self.logs.clone(),
            probe_path,
            probe_status,
        )
        .await
    }

    /// Output of every function started on this stack.
    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    /// Registers (or updates) a tenant in the registry through the shared library, as the
    /// consent flow would.
    pub async fn register(
        &self,
        tenant_id: &str,
        status: TenantStatus,
        roles: &[&str],
    ) -> Result<()> {
        let registry = self.registry();
        let mut record = TenantRecord::new(
            TenantId::parse(tenant_id).context("registering a tenant")?,
            format!("Customer {}", &tenant_id[..8]),
            status,
        );
        record.customer_ref = Some(format!("CRM-{}", &tenant_id[..4]));
        record.roles = roles.iter().map(|role| (*role).to_owned()).collect();
        if status != TenantStatus::Active {
            record.status_reason = Some(format!("set {status} by the end-to-end test"));
        }
        registry
            .upsert(&record)
            .await
            .with_context(|| format!("upserting tenant {tenant_id}"))?;
        Ok(())
    }

    /// Registers every tenant of `tenants` active, its consent having granted `roles`.
    pub async fn register_active<T: AsRef<str>>(
        &self,
        tenants: impl IntoIterator<Item = T>,
        roles: &[&str],
    ) -> Result<()> {
        for tenant in tenants {
            self.register(tenant.as_ref(), TenantStatus::Active, roles)
                .await?;
        }
        Ok(())
    }

    /// The client secret currently valid everywhere.
    pub fn current_secret(&self) -> String {
        self.current_secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A new client secret, remembered as sensitive.
    pub fn new_secret(&self) -> String {
        let secret = new_client_secret();
        self.remember_sensitive(&secret);
        secret
    }

    /// Stores `secret` as the new value of the app-credential secret (put-secret-value).
    pub async fn put_secret(&self, secret: &str) -> Result<()> {
        self.remember_sensitive(secret);
        moto::put_secret_value(
            &self.secretsmanager,
            &self.secret_arn,
            &credential_json(&self.client_id, secret),
        )
        .await
    }

    /// Records that `secret` is now the one valid everywhere.
    pub fn set_current_secret(&self, secret: &str) {
        *self
            .current_secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = secret.to_owned();
    }

    pub fn remember_sensitive(&self, value: &str) {
        if value.len() >= 8 {
            self.sensitive
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(value.to_owned());
        }
    }

    /// Remembers an access token, and its payload and signature parts on their own (a log
    /// that held either would leak the token as surely as the whole).
    pub fn remember_token(&self, token: &str) {
        self.remember_sensitive(token);
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() == 3 {
            self.remember_sensitive(parts[1]);
            self.remember_sensitive(parts[2]);
        }
    }

    /// Remembers the access token of a function's answer, if it holds one.
    pub fn remember_answer(&self, answer: &Value) {
        if let Some(token) = answer["access_token"].as_str() {
            self.remember_token(token);
        }
    }

    /// What the API holds now for a tenant's source (id → last-update time), read by the test
    /// itself with an app token of its own (remembered as sensitive).
    /// What Graph's `$expand=alerts` gives for each of a tenant's incidents (while it works):
    /// incident id → alert ids.
    pub async fn expanded_alerts(
        &self,
        tenant: &str,
    ) -> Result<HashMap<String, std::collections::BTreeSet<String>>> {
        let token = self
            .emulator
            .app_token(
                tenant,
                resource_of(Source::GraphIncidents),
                &self.client_id,
                &self.current_secret(),
            )
            .await?;
        self.remember_token(&token);
        self.emulator.graph_expanded_alert_ids(tenant, &token).await
    }

    pub async fn truth(&self, tenant: &str, source: Source) -> Result<HashMap<String, String>> {
        let token = self
            .emulator
            .app_token(
                tenant,
                resource_of(source),
                &self.client_id,
                &self.current_secret(),
            )
            .await?;
        self.remember_token(&token);
        self.emulator.truth(tenant, source, &token).await
    }

    /// Every sensitive value remembered so far.
    pub fn sensitive(&self) -> Vec<String> {
        self.sensitive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl StackBuilder {
    /// A consent state-signing key in Secrets Manager ([`STATE_KEY_SECRET`],
    /// `DP_STATE_KEY_SECRET_ID`).
    pub fn with_state_key(mut self) -> StackBuilder {
        self.state_key = true;
        self
    }

    /// A KMS key in moto sealing the stored sign-ins (`DP_SIGNIN_KMS_KEY_ID`).
    pub fn with_kms_key(mut self) -> StackBuilder {
        self.kms_key = true;
        self
    }

    /// Starts moto and the emulator, then creates the registry table and the secrets (and the
    /// KMS key).
    pub async fn start(self) -> Result<Stack> {
        // Moto first (the slower one), so that its start overlaps the emulator build.
        let moto = Moto::start().await.context("starting moto")?;
        let emulator = Emulator::start(&self.scenario)
            .await
            .context("starting the emulator")?;
        let dynamodb = moto.dynamodb().await;
        let secretsmanager = moto.secretsmanager().await;
        let table = format!("defender-partner-e2e-{}", &guid()[..8]);
        moto::create_registry_table(&dynamodb, &table).await?;
        let secret_arn =
            moto::create_secret(&secretsmanager, SECRET_NAME, &self.credential).await?;
        let mut sensitive = vec![];
        if !self.secret.is_empty() {
            sensitive.push(self.secret.clone());
        }
        let state_key = match self.state_key {
            true => {
                let key = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                moto::create_secret(&secretsmanager, STATE_KEY_SECRET, &key).await?;
                sensitive.push(key.clone());
                Some(key)
            }
            false => None,
        };
        let kms = match self.kms_key {
            true => {
                let kms = aws_sdk_kms::Client::new(&moto.sdk_config().await);
                let key = kms
                    .create_key()
                    .description("defender-partner sign-in refresh tokens (e2e)")
                    .send()
                    .await
                    .context("creating the KMS key in moto")?;
                let arn = key
                    .key_metadata()
                    .and_then(|meta| meta.arn())
                    .context("moto answered a key without an ARN")?
                    .to_owned();
                Some((kms, arn))
            }
            false => None,
        };
        let sts_endpoint = self.emulated_sts.then(|| emulator.base_url().to_owned());
        Ok(Stack {
            moto,
            emulator,
            dynamodb,
            secretsmanager,
            table,
            secret_arn,
            client_id: self.client_id,
            current_secret: Mutex::new(self.secret),
            sensitive: Mutex::new(sensitive),
            logs: LogBuffer::new(),
            sts_endpoint,
            state_key,
            kms,
        })
    }
}

/// The SecretString of the app credential, as an operator stores it.
pub use defender_partner_testkit::app_credential as credential_json;

/// A client secret Entra accepts for a year.
pub fn expiring_in_a_year(secret: &str) -> SecretConfig {
    SecretConfig {
        value: secret.to_owned(),
        expires: Some(Utc::now() + chrono::Duration::days(365)),
    }
}

/// The SecretString of a secretless app credential: the client id and nothing to keep secret.
pub fn federated_credential_json(client_id: &str) -> String {
    json!({ "client_id": client_id, "credential": "aws_federated" }).to_string()
}

impl Drop for Stack {
    /// With `E2E_LOG_DIR` set, leaves every captured output there for reading after the run
    /// (function logs, moto, emulator).
    fn drop(&mut self) {
        let Some(dir) = std::env::var_os("E2E_LOG_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let prefix = std::thread::current()
            .name()
            .unwrap_or("stack")
            .replace([':', '/'], "_");
        let _ = std::fs::create_dir_all(&dir);
        for (name, text) in [
            ("functions", self.logs.text()),
            ("moto", self.moto.logs().text()),
            ("emulator", self.emulator.logs().text()),
        ] {
            let path = dir.join(format!("{prefix}.{name}.log"));
            if let Err(error) = std::fs::write(&path, text) {
                eprintln!("[harness] could not write {}: {error}", path.display());
            }
        }
    }
}
