//! The local world a function runs in: moto (Secrets Manager + DynamoDB) with the registry
//! table and the app-credential secret, and the emulator with the partner's app and the
//! customer tenants of a scenario. A secretless stack ([`Stack::start_federated`]) has the
//! emulator play AWS STS as well, and no secret anywhere. Functions are started against it with
//! [`Stack::start_function`]; every output goes to one log buffer, and every token and secret
//! the test sees is remembered so that the test can prove none reached that log.

use std::sync::Mutex;

use anyhow::{Context, Result};
use chrono::Utc;
use defender_partner::tenant_id::TenantId;
use defender_partner::tenants::{DynamoRegistry, TenantRecord, TenantRegistry, TenantStatus};
use serde_json::{Value, json};

use crate::emulator::{
    App, Emulator, RESOURCE_M365D, ROLE_M365D, RequiredPermissionConfig, Scenario, Secret, Tenant,
    aws_role_credential,
};
use crate::lambda::LambdaWatch;
use crate::moto::{self, Moto};
use crate::process::LogBuffer;

/// Name of the app-credential secret in moto.
pub const SECRET_NAME: &str = "defender-partner/app-credential";

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

/// What the stack is made of.
pub struct StackSpec {
    pub token_lifetime_seconds: u64,
    pub tenants: Vec<Tenant>,
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
}

impl Stack {
    /// Starts moto and the emulator; `spec` gets the client id of the partner's app (which
    /// the scenario's grants name).
    pub async fn start_with(spec: impl FnOnce(&str) -> StackSpec) -> Result<Stack> {
        let client_id = guid();
        let spec = spec(&client_id);
        let secret = new_client_secret();
        let scenario = Scenario {
            token_lifetime_seconds: spec.token_lifetime_seconds,
            apps: vec![App {
                client_id: client_id.clone(),
                display_name: "Contoso SOC (e2e)".to_owned(),
                disabled: false,
                secrets: vec![Secret {
                    value: secret.clone(),
                    expires: Some(Utc::now() + chrono::Duration::days(365)),
                }],
                redirect_uris: vec![],
                required_permissions: vec![],
                federated_credentials: vec![],
            }],
            tenants: spec.tenants,
        };
        // Start both, moto first (the slower one) so its start overlaps the emulator build.
        let moto = Moto::start().await.context("starting moto")?;
        let emulator = Emulator::start(&scenario)
            .await
            .context("starting the emulator")?;
        Stack::assemble(moto, emulator, client_id, secret).await
    }

    /// The secretless stack (`aws_federated`): the app holds no secret at all, only a federated
    /// credential trusting the emulated AWS account's tokens for the functions' role
    /// ([`aws_role_credential`]); the credential secret in Secrets Manager is
    /// `{"client_id", "credential": "aws_federated"}`; the functions reach STS at the emulator.
    /// The app may be admin-consented (to M365 Defender) through
    /// [`defender_emulator::demo::CONSENT_REDIRECT_URI`].
    pub async fn start_federated(spec: impl FnOnce(&str) -> StackSpec) -> Result<Stack> {
        let client_id = guid();
        let spec = spec(&client_id);
        let scenario = Scenario {
            token_lifetime_seconds: spec.token_lifetime_seconds,
            apps: vec![App {
                client_id: client_id.clone(),
                display_name: "Contoso SOC (e2e, secretless)".to_owned(),
                disabled: false,
                secrets: vec![],
                redirect_uris: vec![defender_emulator::demo::CONSENT_REDIRECT_URI.to_owned()],
                required_permissions: vec![RequiredPermissionConfig {
                    resource: RESOURCE_M365D.to_owned(),
                    roles: vec![ROLE_M365D.to_owned()],
                }],
                federated_credentials: vec![aws_role_credential()],
            }],
            tenants: spec.tenants,
        };
        let moto = Moto::start().await.context("starting moto")?;
        let emulator = Emulator::start(&scenario)
            .await
            .context("starting the emulator")?;
        let mut stack = Stack::assemble_with(
            moto,
            emulator,
            client_id.clone(),
            String::new(),
            &federated_credential_json(&client_id),
        )
        .await?;
        stack.sts_endpoint = Some(stack.emulator.base_url().to_owned());
        Ok(stack)
    }

    /// Starts moto and the emulator with its built-in demo scenario (`defender_emulator::demo`:
    /// Contoso's test users, their portal roles, MFA and delegated consent), the demo app's
    /// credential in Secrets Manager.
    pub async fn start_on_demo_scenario() -> Result<Stack> {
        let moto = Moto::start().await.context("starting moto")?;
        let emulator = Emulator::start_file(None, "127.0.0.1:0")
            .await
            .context("starting the emulator on its demo scenario")?;
        Stack::assemble(
            moto,
            emulator,
            defender_emulator::demo::CLIENT_ID.to_owned(),
            defender_emulator::demo::CLIENT_SECRET.to_owned(),
        )
        .await
    }

    /// The registry table and the credential secret in moto, around a started emulator whose
    /// app is `client_id` with `secret`.
    async fn assemble(
        moto: Moto,
        emulator: Emulator,
        client_id: String,
        secret: String,
    ) -> Result<Stack> {
        let credential = credential_json(&client_id, &secret);
        Stack::assemble_with(moto, emulator, client_id, secret, &credential).await
    }

    /// As [`Stack::assemble`], the credential secret holding `credential` (an empty `secret`:
    /// the app has none).
    async fn assemble_with(
        moto: Moto,
        emulator: Emulator,
        client_id: String,
        secret: String,
        credential: &str,
    ) -> Result<Stack> {
        let dynamodb = moto.dynamodb().await;
        let secretsmanager = moto.secretsmanager().await;

        let table = format!("defender-partner-e2e-{}", &guid()[..8]);
        moto::create_registry_table(&dynamodb, &table).await?;
        let secret_arn = moto::create_secret(&secretsmanager, SECRET_NAME, credential).await?;
        let sensitive = if secret.is_empty() {
            vec![]
        } else {
            vec![secret.clone()]
        };

        Ok(Stack {
            moto,
            emulator,
            dynamodb,
            secretsmanager,
            table,
            secret_arn,
            client_id,
            current_secret: Mutex::new(secret),
            sensitive: Mutex::new(sensitive),
            logs: LogBuffer::new(),
            sts_endpoint: None,
        })
    }

    /// The environment of a function on this stack (`DP_*`, AWS pointed at moto,
    /// `RUST_LOG=debug` so that a leak in any debug log would show).
    pub fn function_env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.function_env();
        env.extend(
            [
                ("DP_AUTHORITY_HOST", self.emulator.base_url()),
                ("DP_CREDENTIAL_SECRET_ID", SECRET_NAME),
                ("DP_TABLE_NAME", self.table.as_str()),
                ("RUST_LOG", "debug"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        if let Some(sts) = &self.sts_endpoint {
            env.push(("AWS_ENDPOINT_URL_STS".to_owned(), sts.clone()));
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
        let registry = DynamoRegistry::new(self.dynamodb.clone(), self.table.clone());
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

    /// Every sensitive value remembered so far.
    pub fn sensitive(&self) -> Vec<String> {
        self.sensitive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The SecretString of the app credential, as an operator stores it.
pub fn credential_json(client_id: &str, client_secret: &str) -> String {
    json!({ "client_id": client_id, "client_secret": client_secret }).to_string()
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
