//! `dp-operator callers …`: who may mint for and change which tenant. A caller is an IAM role
//! (its ARN; an assumed-role session ARN names its role; a path is dropped, as session ARNs carry
//! none) or `direct-invoke`, every direct invocation of mint-token or update-incident (and every
//! event from the bus). Both functions read a change within their cache time
//! (`DP_CALLER_SCOPE_CACHE_SECONDS`, 60 s by default).

use clap::{Args, Subcommand};
use defender_partner::callers::caller_key;
use defender_partner::runtime::Services;
use defender_partner::store::{CallerScope, update_caller_scope};
use defender_partner::tenant_id::TenantId;

#[derive(Subcommand)]
pub enum CallersCommand {
    /// Let a caller mint for more tenants: --tenant (ids), --customer (every tenant whose record
    /// carries that customer reference), or --all.
    Allow {
        /// The caller: arn:aws:iam::ACCOUNT:role/NAME (or an assumed-role ARN), or direct-invoke.
        caller: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Every tenant, present and future.
        #[arg(long)]
        all: bool,
    },
    /// Take tenants back from a caller; with no --tenant, --customer or --all, everything. The
    /// caller stays mapped, to nothing left: it is refused, never back to the unmapped default.
    Revoke {
        caller: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Take back the "every tenant" grant.
        #[arg(long)]
        all: bool,
    },
    /// Every caller's mapping.
    List,
    /// One caller's mapping.
    Show { caller: String },
}

#[derive(Args)]
pub struct ScopeArgs {
    /// A customer tenant's id (repeat for more).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// A customer reference, as `consent-link --customer` recorded it (repeat for more).
    #[arg(long = "customer")]
    customers: Vec<String>,
}

impl ScopeArgs {
    fn tenant_ids(&self) -> anyhow::Result<Vec<TenantId>> {
        self.tenants
            .iter()
            .map(|tenant| Ok(TenantId::parse(tenant)?))
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.customers.is_empty()
    }
}

pub async fn run(services: &Services, command: CallersCommand, json: bool) -> anyhow::Result<()> {
    let store = services.callers.as_ref();
    let key = |caller: &str| caller_key(caller).map_err(anyhow::Error::msg);
    let scope = match command {
        CallersCommand::List => {
            let scopes = store.caller_scopes().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&scopes)?);
            } else {
                print_scopes(&scopes);
            }
            return Ok(());
        }
        CallersCommand::Show { caller } => {
            let caller = key(&caller)?;
            let scope = store.caller_lookup(&caller).await?.scope;
            if json {
                println!("{}", serde_json::to_string_pretty(&scope)?);
            } else {
                match &scope {
                    Some(scope) => print_scopes(std::slice::from_ref(scope)),
                    None => println!("{caller} has no mapping: {}", UNMAPPED),
                }
            }
            return Ok(());
        }
        CallersCommand::Allow { caller, scope, all } => {
            if scope.is_empty() && !all {
                anyhow::bail!("name what the caller may mint for: --tenant, --customer or --all");
            }
            let tenants = scope.tenant_ids()?;
            warn_unknown_customers(services, &scope.customers).await?;
            update_caller_scope(store, &key(&caller)?, |mapping| {
                mapping.all_tenants |= all;
                mapping.tenants.extend(tenants.iter().cloned());
                mapping
                    .customer_refs
                    .extend(scope.customers.iter().cloned());
            })
            .await?
        }
        CallersCommand::Revoke { caller, scope, all } => {
            let everything = scope.is_empty() && !all;
            let tenants = scope.tenant_ids()?;
            update_caller_scope(store, &key(&caller)?, |mapping| {
                if everything || all {
                    mapping.all_tenants = false;
                }
                if everything {
                    mapping.tenants.clear();
                    mapping.customer_refs.clear();
                }
                for tenant in &tenants {
                    mapping.tenants.remove(tenant);
                }
                for customer in &scope.customers {
                    mapping.customer_refs.remove(customer);
                }
            })
            .await?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&scope)?);
    } else {
        print_scopes(std::slice::from_ref(&scope));
        println!(
            "mint-token instances apply this within DP_CALLER_SCOPE_CACHE_SECONDS (60 s by default)."
        );
    }
    Ok(())
}

const UNMAPPED: &str = "with DP_CALLER_SCOPING=mapped (the default) it may mint for every tenant \
only while no caller has a mapping; with enforced, never";

/// A customer reference no tenant carries is most likely a typo: said, not refused (the
/// customer may be onboarded later).
async fn warn_unknown_customers(services: &Services, customers: &[String]) -> anyhow::Result<()> {
    if customers.is_empty() {
        return Ok(());
    }
    let tenants = services.registry.list().await?;
    for customer in customers {
        if !tenants
            .iter()
            .any(|tenant| tenant.customer_ref.as_deref() == Some(customer.as_str()))
        {
            eprintln!(
                "note: no registered tenant carries the customer reference {customer:?} (yet)"
            );
        }
    }
    Ok(())
}

fn print_scopes(scopes: &[CallerScope]) {
    if scopes.is_empty() {
        println!("no caller has a mapping: {UNMAPPED}");
        return;
    }
    println!(
        "{:<56}  {:<20}  {:<3}  {:<24}  tenants",
        "caller", "updated", "all", "customers"
    );
    for scope in scopes {
        let customers: Vec<&str> = scope.customer_refs.iter().map(String::as_str).collect();
        let tenants: Vec<String> = scope.tenants.iter().map(ToString::to_string).collect();
        let or_dash = |text: String| {
            if text.is_empty() {
                "-".to_owned()
            } else {
                text
            }
        };
        println!(
            "{:<56}  {:<20}  {:<3}  {:<24}  {}",
            scope.caller,
            scope.updated_at.format("%Y-%m-%d %H:%M:%S"),
            if scope.all_tenants { "yes" } else { "no" },
            or_dash(customers.join(", ")),
            or_dash(tenants.join(", ")),
        );
    }
}
