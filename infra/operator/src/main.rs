//! `dp-operator`: the partner operator's command, run locally against the embedded store or, with
//! the same variables the functions use (`DP_TABLE_NAME`, `DP_CREDENTIAL_SECRET_ID`, AWS
//! credentials), against the real table.

mod callers;
mod device_signin;
mod federation;
mod hunt;
mod migration;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use defender_partner::api::DefenderApi;
use defender_partner::consent::{ConsentService, LinkKind};
use defender_partner::runtime::Services;
use defender_partner::store::{AuditEntry, TenantRecord};
use defender_partner::telemetry::{self, LogFormat};
use defender_partner::tenant_id::TenantId;
use defender_partner::writeback::writable_kinds;

#[derive(Parser)]
#[command(
    name = "dp-operator",
    about = "Operate defender-partner: onboarding, the tenant registry, the crossing to Graph",
    after_help = "Sources and APIs: graph-incidents and graph-alerts (Microsoft Graph security API, api graph) are the default. m365d-incidents (Defender XDR /api/incidents, api m365d) and mde-alerts (Defender for Endpoint /api/alerts, api mde) are RETIRING: Microsoft stops answering them after 2027-02-01 (MC1220762). `dp-operator migration` shows what each tenant needs."
)]
struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a single-use admin-consent link for a customer.
    ConsentLink {
        /// Your reference for the customer (CRM or contract id).
        #[arg(long)]
        customer: String,
        /// v2 (default), adminconsent or legacy.
        #[arg(long)]
        link: Option<LinkKind>,
        /// The customer's tenant id, when you know it: the link then works for that tenant only.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// What to register on the Entra app for the secretless (aws_federated) credential.
    Federation(federation::FederationArgs),
    /// Crossing over to Graph before 2027-02-01: per tenant, the sources run (DP_SOURCES), the
    /// retiring ones (m365d-incidents, mde-alerts), whether the Graph permissions are granted,
    /// and the action. Exits non-zero when any tenant needs action.
    Migration {
        /// Issue a consent link, bound to the tenant, for every tenant that needs a new consent.
        #[arg(long)]
        issue_links: bool,
    },
    /// Fleet health at a glance: per tenant and source the state, last success, lag, failures,
    /// last error, throttled (429) and partial (206) answers in 24 h, retiring sources, the
    /// permissions granted against those needed, and the credential's end date. Exits 2 when
    /// something needs a person (README "Fleet status"), 0 when nothing does.
    Status(status::StatusArgs),
    /// Write-back requests for one tenant (update-incident): who asked, as whom, what changed
    /// (before → after), the result and Microsoft's request id.
    Audit {
        /// The customer tenant's id.
        #[arg(long)]
        tenant: String,
        /// From this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z); default: the last 7 days.
        #[arg(long)]
        since: Option<String>,
    },
    /// Fleet hunting: one KQL query in every customer tenant (run, status, results), and saved
    /// hunts that run on the schedule as detections over the fleet (save, list, delete).
    Hunt {
        #[command(subcommand)]
        command: hunt::HuntCommand,
    },
    /// Who may mint for and change which tenant: callers of mint-token and update-incident (IAM
    /// roles, direct-invoke) mapped to tenants and customer references.
    Callers {
        #[command(subcommand)]
        command: callers::CallersCommand,
    },
    /// The tenant registry.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Sign in to a customer tenant as yourself (device code), see your scopes there, and with
    /// --call read one Defender API with your own rights. Never prints the token.
    Signin {
        /// The customer tenant's id or verified domain.
        #[arg(long)]
        tenant: String,
        /// m365d (default; retiring 2027-02-01), mde (retiring 2027-02-01) or graph.
        #[arg(long, default_value = "m365d")]
        api: DefenderApi,
        /// Then read the API's incidents (alerts for mde), one record.
        #[arg(long)]
        call: bool,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// List every tenant with status, ownership proof and roles; tenants whose ownership is
    /// unverified wait for your decision (verify --customer, or offboard).
    List,
    /// Prove a tenant's consent now and record the result. With --customer you confirm that the
    /// tenant belongs to that customer (your decision: it records ownership `operator`).
    Verify {
        tenant: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Stop serving a tenant: no more tokens for it.
    Offboard { tenant: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_with_default(LogFormat::Text, "warn");
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        // The command ran and found something to do (`migration`: a tenant needs action;
        // `status`: something needs a person).
        Ok(false) => ExitCode::from(2),
        Err(error) => {
            eprintln!("dp-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)`: the command ran and reports that something needs the operator's action.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    // Needs no credential, registry or settings beyond its own: runs before the app is set up.
    if let Command::Federation(args) = cli.command {
        federation::run(args, cli.json).await?;
        return Ok(true);
    }
    let services = Services::from_env().await?;
    match cli.command {
        Command::Migration { issue_links } => {
            return migration::run(&services, issue_links, cli.json).await;
        }
        Command::Hunt { command } => {
            return hunt::run(&services, command, cli.json).await;
        }
        Command::Status(args) => {
            return status::run(&services, args, cli.json).await;
        }
        Command::Callers { command } => callers::run(&services, command, cli.json).await?,
        Command::ConsentLink {
            customer,
            link,
            tenant,
        } => {
            let consent = ConsentService::build(&services).await?;
            let link = consent.start(&customer, link, tenant.as_deref()).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&link)?);
            } else {
                println!(
                    "Send this link to {}'s Global Administrator (valid until {}, single use):",
                    link.customer_ref, link.expires_at
                );
                println!("{}", link.url);
            }
        }
        Command::Tenants {
            command: TenantsCommand::List,
        } => {
            let tenants = services.registry.list().await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else {
                print_tenants(&tenants);
                let undecided = tenants
                    .iter()
                    .filter(|tenant| !tenant.ownership.is_proven())
                    .count();
                if undecided > 0 {
                    println!(
                        "\n{undecided} tenant(s) with ownership `unverified` were recorded without proof that they belong to their customer: confirm with `dp-operator tenants verify <tenant> --customer <ref>` or end with `tenants offboard <tenant>`."
                    );
                }
            }
        }
        Command::Tenants {
            command: TenantsCommand::Verify { tenant, customer },
        } => {
            let consent = ConsentService::build(&services).await?;
            let record = consent
                .verify_tenant(&TenantId::parse(&tenant)?, customer.as_deref())
                .await?;
            print_one(&record, cli.json)?;
        }
        Command::Tenants {
            command: TenantsCommand::Offboard { tenant },
        } => {
            let consent = ConsentService::build(&services).await?;
            let record = consent.offboard(&TenantId::parse(&tenant)?).await?;
            print_one(&record, cli.json)?;
        }
        Command::Audit { tenant, since } => {
            let since = match since {
                Some(text) => chrono::DateTime::parse_from_rfc3339(&text)
                    .map_err(|error| anyhow::anyhow!("--since {text:?}: {error}"))?
                    .with_timezone(&chrono::Utc),
                None => chrono::Utc::now() - chrono::Duration::days(7),
            };
            let entries = services
                .updates
                .audit(&TenantId::parse(&tenant)?, since)
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print_audit(&entries);
            }
        }
        Command::Signin { tenant, api, call } => {
            let request = device_signin::SigninRequest {
                tenant,
                api,
                call,
                json: cli.json,
            };
            device_signin::run(&services, &request).await?;
        }
        Command::Federation(_) => unreachable!("handled before the services are built"),
    }
    Ok(true)
}

fn print_one(record: &TenantRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(record)?);
    } else {
        print_tenants(std::slice::from_ref(record));
        if let Some(reason) = &record.status_reason {
            println!("reason: {reason}");
        }
    }
    Ok(())
}

fn print_tenants(tenants: &[TenantRecord]) {
    if tenants.is_empty() {
        println!("no tenants registered");
        return;
    }
    println!(
        "{:<36}  {:<10}  {:<13}  {:<20}  {:<20}  {:<16}  roles",
        "tenant", "status", "ownership", "customer", "updated", "write"
    );
    for tenant in tenants {
        println!(
            "{:<36}  {:<10}  {:<13}  {:<20}  {:<20}  {:<16}  {}",
            tenant.tenant_id,
            tenant.status,
            tenant.ownership,
            tenant.customer_ref.as_deref().unwrap_or("-"),
            tenant.updated_at.format("%Y-%m-%d %H:%M:%S"),
            writable_kinds(&tenant.roles),
            tenant.roles.join(", ")
        );
    }
}

fn print_audit(entries: &[AuditEntry]) {
    if entries.is_empty() {
        println!("no write-back requests in that time");
        return;
    }
    println!(
        "{:<20}  {:<36}  {:<24}  {:<12}  {:<24}  {:<10}  change",
        "time", "request", "target", "as", "caller", "result"
    );
    for entry in entries {
        println!(
            "{:<20}  {:<36}  {:<24}  {:<12}  {:<24}  {:<10}  {} -> {}",
            entry.at.format("%Y-%m-%d %H:%M:%S"),
            entry.request_id,
            format!("{}/{}", entry.kind, entry.id),
            entry.acting_as,
            entry.caller,
            entry.result,
            entry.before,
            entry.after
        );
    }
}
