//! `infra/local/stack`: the local AWS + Entra world for running a function by hand.
//!
//! Starts moto (Secrets Manager, DynamoDB) and the emulator with its demo scenario, creates the
//! registry table and the app-credential secret (the demo app's credential), registers the
//! demo tenants through the shared library, writes `.local/mint-token.env` for
//! `cargo lambda watch --env-file`, and runs until Ctrl-C, when everything stops.
//!
//! Usage: local-stack [--moto-port N] [--emulator-port N]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use defender_emulator::demo;
use defender_partner::store::{DynamoRegistry, TenantRecord, TenantRegistry, TenantStatus};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::stack::{SECRET_NAME, credential_json};
use defender_partner_e2e::{Emulator, Moto, moto, tools};
use defender_partner_testkit::scenario::{ROLE_GRAPH, ROLE_M365D, ROLE_MDE};

const TABLE: &str = "defender-partner-local";

#[tokio::main]
async fn main() -> Result<()> {
    let mut moto_port = None;
    let mut emulator_port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> Result<u16> {
            args.next()
                .with_context(|| format!("{arg} needs a port number"))?
                .parse()
                .with_context(|| format!("{arg} needs a port number"))
        };
        match arg.as_str() {
            "--moto-port" => moto_port = Some(value()?),
            "--emulator-port" => emulator_port = value()?,
            "-h" | "--help" => {
                println!("usage: local-stack [--moto-port N] [--emulator-port N]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }

    let moto = Moto::start_on(moto_port).await?;
    let emulator = Emulator::start_file(None, &format!("127.0.0.1:{emulator_port}")).await?;

    let dynamodb = moto.dynamodb().await;
    moto::create_registry_table(&dynamodb, TABLE).await?;
    let secrets = moto.secretsmanager().await;
    moto::create_secret(
        &secrets,
        SECRET_NAME,
        &credential_json(demo::CLIENT_ID, demo::CLIENT_SECRET),
    )
    .await?;

    let registry = DynamoRegistry::new(dynamodb, TABLE);
    for (id, name, status, roles) in [
        (
            demo::CONTOSO_TENANT_ID,
            "Contoso",
            TenantStatus::Active,
            vec![ROLE_M365D, ROLE_MDE, ROLE_GRAPH],
        ),
        (
            demo::FABRIKAM_TENANT_ID,
            "Fabrikam",
            TenantStatus::Active,
            vec![ROLE_M365D],
        ),
        (
            demo::NORTHWIND_TENANT_ID,
            "Northwind",
            TenantStatus::Pending,
            vec![],
        ),
    ] {
        let mut record = TenantRecord::new(TenantId::parse(id)?, name, status);
        record.roles = roles.into_iter().map(str::to_owned).collect();
        registry.upsert(&record).await?;
    }

    let mut env: Vec<(String, String)> = moto.function_env();
    env.extend(
        [
            ("DP_AUTHORITY_HOST", emulator.base_url()),
            ("DP_CREDENTIAL_SECRET_ID", SECRET_NAME),
            ("DP_TABLE_NAME", TABLE),
            ("RUST_LOG", "info"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let env_dir = tools::workspace_root().join(".local");
    std::fs::create_dir_all(&env_dir)?;
    let env_file = env_dir.join("mint-token.env");
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, text)?;

    println!(
        "\nlocal stack ready (Ctrl-C stops it):\n  \
         moto      {}  table {TABLE}, secret {SECRET_NAME}\n  \
         emulator  {}  demo scenario: Contoso (active), Fabrikam (active, M365 Defender only), Northwind (pending)\n  \
         env file  {}\n\n\
         in another terminal, from the repository root:\n  \
         export PATH=\"$PWD/.venv/bin:$PATH\"\n  \
         cargo lambda watch --env-file .local/mint-token.env\n  \
         cargo lambda invoke mint-token --data-file infra/events/mint-token-direct.json\n",
        moto.endpoint(),
        emulator.base_url(),
        env_file.display()
    );

    tokio::signal::ctrl_c().await?;
    println!("stopping");
    drop(emulator);
    drop(moto);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
