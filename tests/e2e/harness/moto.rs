//! Local AWS: `moto_server` (PyPI `moto[server]`) on a loopback port, and SDK clients pointed
//! at it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

use crate::process::{ChildProcess, LogBuffer};
use crate::tools;

/// The region and the dummy credentials every local AWS call uses.
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";

/// How long `moto_server` may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `moto_server`; stopped when dropped.
pub struct Moto {
    process: ChildProcess,
    endpoint: String,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    pub async fn start() -> Result<Moto> {
        Moto::start_on(None).await
    }

    /// Starts `moto_server` on `port` (`None`: a free one).
    pub async fn start_on(port: Option<u16>) -> Result<Moto> {
        let exe = tools::require_tool("moto_server")?;
        let port = match port {
            Some(port) => port,
            None => tools::free_port()?,
        };
        let mut command = Command::new(&exe);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1");
        let mut process = ChildProcess::spawn("moto", command)?;
        let endpoint = format!("http://127.0.0.1:{port}");

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{endpoint}/moto-api/")).send().await
                && response.status().is_success()
            {
                break;
            }
            if let Some(status) = process.exited() {
                bail!(
                    "moto_server exited ({status}) before it answered on {endpoint}; its output:\n{}",
                    process.logs().tail(60)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "moto_server did not answer on {endpoint} within {READY_TIMEOUT:?}; its output:\n{}",
                    process.logs().tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "[harness] moto_server ready on {endpoint} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(Moto { process, endpoint })
    }

    /// `http://127.0.0.1:PORT`: what `AWS_ENDPOINT_URL` is set to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn logs(&self) -> &LogBuffer {
        self.process.logs()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SDK configuration for clients that talk to this moto.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                None,
                None,
                "defender-partner-e2e",
            ))
            .load()
            .await
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config().await)
    }

    pub async fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    /// The environment a function needs to reach this moto (and nothing real).
    pub fn function_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// Creates the registry table the way `template.yaml` declares it: `pk`/`sk` strings, the sparse
/// `by-kind` index (`kind` → `pk`), TTL on `expires_at`.
pub async fn create_registry_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("kind")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(defender_partner::store::KIND_INDEX)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("kind")
                        .key_type(KeyType::Hash)
                        .build()?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("pk")
                        .key_type(KeyType::Range)
                        .build()?,
                )
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("creating DynamoDB table {name}"))?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("enabling TTL on {name}"))?;
    Ok(())
}

/// Creates the secret holding the app credential; returns its ARN.
pub async fn create_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    secret_string: &str,
) -> Result<String> {
    let created = client
        .create_secret()
        .name(name)
        .description("defender-partner app credential (end-to-end test)")
        .secret_string(secret_string)
        .send()
        .await
        .with_context(|| format!("creating secret {name}"))?;
    created
        .arn()
        .map(str::to_owned)
        .context("create_secret returned no ARN")
}

/// Stores a new value of the secret (a rotation), as `aws secretsmanager put-secret-value` does.
pub async fn put_secret_value(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    secret_string: &str,
) -> Result<()> {
    client
        .put_secret_value()
        .secret_id(secret_id)
        .secret_string(secret_string)
        .send()
        .await
        .with_context(|| format!("putting a new value of secret {secret_id}"))?;
    Ok(())
}
