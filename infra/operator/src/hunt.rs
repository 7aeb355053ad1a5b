//! `dp-operator hunt …`: fleet hunting from the operator's shell. With `DP_HUNT_QUEUE_URL` the
//! hunt is queued for the deployed `hunt` function and `run` answers at once; without it the
//! tenants are queried here, and `run` waits for the end.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use defender_partner::hunting::{HuntService, Manifest};
use defender_partner::runtime::Services;
use defender_partner::store::SavedHunt;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum HuntCommand {
    /// Run a KQL query in every selected tenant (or a saved hunt with --saved).
    Run(RunArgs),
    /// A hunt's progress, per tenant.
    Status { hunt_id: String },
    /// A hunt's rows, merged over its tenants, on stdout.
    Results {
        hunt_id: String,
        #[arg(long, value_enum, default_value = "ndjson")]
        format: ResultFormat,
    },
    /// Keep a hunt by name; with --every-minutes it runs on the schedule and announces the rows
    /// no earlier run saw, per tenant (HuntDetection events).
    Save {
        name: String,
        #[command(flatten)]
        hunt: HuntArgs,
        #[arg(long)]
        every_minutes: Option<u32>,
    },
    /// The saved hunts.
    List,
    /// Forget a saved hunt.
    Delete { name: String },
}

#[derive(Args)]
pub struct HuntArgs {
    /// The KQL query (Microsoft's advanced hunting).
    #[arg(long)]
    query: Option<String>,
    /// ISO 8601: P30D (the default), start/end, P30D/end, start/P30D, or a start.
    #[arg(long)]
    timespan: Option<String>,
    /// `all` (every active tenant), tenant ids separated by commas, or a customer reference.
    #[arg(long, default_value = "all")]
    tenants: String,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    hunt: HuntArgs,
    /// A name shown in the manifest and the HuntCompleted event.
    #[arg(long)]
    name: Option<String>,
    /// Run this saved hunt instead.
    #[arg(long, conflicts_with = "query")]
    saved: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ResultFormat {
    Ndjson,
    Csv,
}

impl HuntArgs {
    fn request(&self, name: Option<&str>) -> anyhow::Result<Value> {
        let query = self
            .query
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--query is required"))?;
        let tenants = if self.tenants.contains(',') || looks_like_tenant_id(&self.tenants) {
            Value::Array(
                self.tenants
                    .split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(|id| Value::String(id.to_owned()))
                    .collect(),
            )
        } else {
            Value::String(self.tenants.clone())
        };
        let mut request = json!({"query": query, "tenants": tenants});
        if let Some(timespan) = &self.timespan {
            request["timespan"] = Value::String(timespan.clone());
        }
        if let Some(name) = name {
            request["name"] = Value::String(name.to_owned());
        }
        Ok(request)
    }
}

fn looks_like_tenant_id(text: &str) -> bool {
    defender_partner::tenant_id::TenantId::parse(text).is_ok()
}

pub async fn run(services: &Services, command: HuntCommand, json: bool) -> anyhow::Result<bool> {
    let service = HuntService::build(services, |name| std::env::var(name).ok())
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    match command {
        HuntCommand::Run(args) => {
            let submitted = match &args.saved {
                Some(saved) => service.run_saved(saved, "operator").await?,
                None => {
                    let request = args.hunt.request(args.name.as_deref())?;
                    service.submit_json(&request, "operator").await?
                }
            };
            if service.is_local() {
                eprintln!(
                    "hunt {} over {} tenant(s), queried from here…",
                    submitted.hunt_id, submitted.tenants
                );
                service.drain_local().await;
                let manifest = service.manifest(&submitted.hunt_id).await?;
                print_manifest(&manifest, json)?;
                return Ok(manifest.status == "completed");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&submitted)?);
            } else {
                println!(
                    "hunt {} queued over {} tenant(s); follow it with `dp-operator hunt status {}` (manifest: {})",
                    submitted.hunt_id, submitted.tenants, submitted.hunt_id, submitted.manifest
                );
            }
        }
        HuntCommand::Status { hunt_id } => {
            let manifest = service.manifest(&hunt_id).await?;
            print_manifest(&manifest, json)?;
        }
        HuntCommand::Results { hunt_id, format } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match format {
                ResultFormat::Ndjson => {
                    service
                        .for_each_row(&hunt_id, |line| {
                            writeln!(out, "{line}").map_err(|error| error.to_string())
                        })
                        .await?;
                }
                ResultFormat::Csv => {
                    let mut names = vec!["tenant_id".to_owned(), "customer_ref".to_owned()];
                    names.extend(
                        service
                            .columns(&hunt_id)
                            .await?
                            .into_iter()
                            .map(|column| column.name)
                            .filter(|name| name != "tenant_id" && name != "customer_ref"),
                    );
                    writeln!(out, "{}", csv_line(names.iter().map(String::as_str)))?;
                    service
                        .for_each_row(&hunt_id, |line| {
                            let row: serde_json::Map<String, Value> =
                                serde_json::from_str(line).map_err(|error| error.to_string())?;
                            let cells: Vec<String> = names
                                .iter()
                                .map(|name| match row.get(name) {
                                    None | Some(Value::Null) => String::new(),
                                    Some(Value::String(text)) => text.clone(),
                                    Some(other) => other.to_string(),
                                })
                                .collect();
                            writeln!(out, "{}", csv_line(cells.iter().map(String::as_str)))
                                .map_err(|error| error.to_string())
                        })
                        .await?;
                }
            }
            out.flush()?;
        }
        HuntCommand::Save {
            name,
            hunt,
            every_minutes,
        } => {
            let saved = service
                .save(&name, &hunt.request(None)?, every_minutes)
                .await?;
            print_saved(std::slice::from_ref(&saved), json)?;
        }
        HuntCommand::List => {
            let saved = service.saved().await?;
            print_saved(&saved, json)?;
        }
        HuntCommand::Delete { name } => {
            service.delete_saved(&name).await?;
            if !json {
                println!("saved hunt {name} deleted");
            }
        }
    }
    Ok(true)
}

/// One CSV record (RFC 4180 quoting).
fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    cells
        .map(|cell| {
            if cell.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn print_manifest(manifest: &Manifest, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(manifest)?);
        return Ok(());
    }
    println!(
        "hunt {}{}: {} ({} of {} tenants finished, {} rows)",
        manifest.hunt_id,
        manifest
            .name
            .as_deref()
            .map(|name| format!(" \"{name}\""))
            .unwrap_or_default(),
        manifest.status,
        manifest.tenants_finished,
        manifest.tenants_total,
        manifest.rows_total
    );
    if let Some(error) = &manifest.error {
        println!(
            "error {}: {error}",
            manifest.error_code.as_deref().unwrap_or("-")
        );
    }
    println!(
        "{:<36}  {:<16}  {:<14}  {:>8}  {:<9}  {:>8}  {:>8}  error",
        "tenant", "customer", "status", "rows", "truncated", "new", "seconds"
    );
    for tenant in &manifest.tenants {
        println!(
            "{:<36}  {:<16}  {:<14}  {:>8}  {:<9}  {:>8}  {:>8}  {}",
            tenant.tenant_id,
            tenant.customer_ref.as_deref().unwrap_or("-"),
            tenant.status,
            tenant.rows,
            if tenant.truncated { "yes" } else { "no" },
            tenant
                .new_rows
                .map(|count| count.to_string())
                .unwrap_or_else(|| "-".into()),
            tenant
                .duration_ms
                .map(|ms| format!("{:.1}", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            match (&tenant.error_code, &tenant.error) {
                (Some(code), Some(error)) => format!("{code}: {error}"),
                (Some(code), None) => code.clone(),
                _ => String::new(),
            }
        );
    }
    println!("results: {}", manifest.results);
    Ok(())
}

fn print_saved(saved: &[SavedHunt], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(saved)?);
        return Ok(());
    }
    if saved.is_empty() {
        println!("no saved hunts");
        return Ok(());
    }
    println!(
        "{:<24}  {:<8}  {:<20}  {:<36}  query",
        "name", "every", "last run", "last hunt"
    );
    for hunt in saved {
        println!(
            "{:<24}  {:<8}  {:<20}  {:<36}  {}",
            hunt.name,
            hunt.every_minutes
                .map(|minutes| format!("{minutes} min"))
                .unwrap_or_else(|| "-".into()),
            hunt.last_run_at
                .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            hunt.last_hunt_id.as_deref().unwrap_or("-"),
            hunt.request["query"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_only_when_needed() {
        assert_eq!(
            csv_line(["a", "b,c", "say \"hi\"", "x\ny"].into_iter()),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\""
        );
    }

    #[test]
    fn tenants_are_all_a_list_or_a_customer() {
        let args = |tenants: &str| HuntArgs {
            query: Some("EmailEvents | take 1".into()),
            timespan: Some("P7D".into()),
            tenants: tenants.into(),
        };
        assert_eq!(args("all").request(None).unwrap()["tenants"], "all");
        assert_eq!(args("contoso").request(None).unwrap()["tenants"], "contoso");
        let id = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        assert_eq!(args(id).request(None).unwrap()["tenants"], json!([id]));
        assert_eq!(
            args(&format!("{id}, {id}")).request(Some("n")).unwrap(),
            json!({"query": "EmailEvents | take 1", "tenants": [id, id], "timespan": "P7D", "name": "n"})
        );
    }
}
