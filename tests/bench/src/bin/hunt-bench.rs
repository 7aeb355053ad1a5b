//! Fleet hunting benchmark (scripts/bench-hunt): the real `HuntService` with its local queue
//! (the fan-out simulated in this process: up to 16 tenants at once, as 16 Lambda instances
//! would), the embedded SQLite store and the results folder, against the emulator binary run as
//! a separate process (so its own memory, which renders each answer whole, is not counted).
//!
//! (a) a hunt over `--fleet-tenants` tenants (1,000) of `--fleet-rows` rows each: wall time;
//! (b) a hunt over `--big-tenants` tenants (10) answering `--big-rows` rows each (100,000, every
//!     column of DeviceProcessEvents): wall time and this process's peak RSS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use defender_partner::config::Settings;
use defender_partner::hunting::HuntService;
use defender_partner::runtime::Services;
use defender_partner::store::{TenantRecord, TenantStatus};
use defender_partner::tenant_id::TenantId;
use serde_json::json;

const CLIENT_ID: &str = "cccccccc-1111-4111-8111-111111111111";
const SECRET: &str = "hunt-bench-secret";

struct Args {
    emulator: PathBuf,
    fleet_tenants: u32,
    fleet_rows: u32,
    big_tenants: u32,
    big_rows: u32,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        emulator: PathBuf::new(),
        fleet_tenants: 1_000,
        fleet_rows: 20,
        big_tenants: 10,
        big_rows: 100_000,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || {
            given
                .next()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--emulator" => args.emulator = PathBuf::from(value()?),
            "--fleet-tenants" => args.fleet_tenants = value()?.parse()?,
            "--fleet-rows" => args.fleet_rows = value()?.parse()?,
            "--big-tenants" => args.big_tenants = value()?.parse()?,
            "--big-rows" => args.big_rows = value()?.parse()?,
            "--help" | "-h" => {
                println!(
                    "hunt-bench --emulator PATH [--fleet-tenants N] [--fleet-rows N] [--big-tenants N] [--big-rows N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other}"),
        }
    }
    if args.emulator.as_os_str().is_empty() {
        bail!("--emulator PATH (the defender-emulator binary) is required");
    }
    Ok(args)
}

fn tenant_guid(world: u32, n: u32) -> String {
    format!("{world:08x}-0000-4000-8000-{n:012x}")
}

/// The emulator binary on a loopback port with `tenants` (id, rows of DeviceProcessEvents).
struct Emulator {
    child: Child,
    base_url: String,
    _folder: TempFolder,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempFolder(PathBuf);

impl TempFolder {
    fn new(name: &str) -> Result<TempFolder> {
        let path = std::env::temp_dir().join(format!("dp-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(TempFolder(path))
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Emulator {
    fn start(binary: &Path, tenants: &[(String, u32)]) -> Result<Emulator> {
        let folder = TempFolder::new("hunt-bench-emulator")?;
        let grants = json!([{"client_id": CLIENT_ID, "resource": "https://graph.microsoft.com",
                             "roles": ["ThreatHunting.Read.All"]}]);
        let scenario_tenants: Vec<serde_json::Value> = tenants
            .iter()
            .enumerate()
            .map(|(index, (id, rows))| {
                json!({"id": id, "display_name": format!("Bench tenant {index}"), "grants": grants,
                       "data": {"incidents": 0, "mde_alerts": 0, "seed": index + 1,
                                "hunting": {"tables": {"DeviceProcessEvents": rows}, "span_days": 7}}})
            })
            .collect();
        let scenario = json!({"token_lifetime_seconds": 3600,
            "apps": [{"client_id": CLIENT_ID, "display_name": "hunt bench", "secrets": [{"value": SECRET}]}],
            "tenants": scenario_tenants});
        let path = folder.0.join("scenario.json");
        std::fs::write(&path, scenario.to_string())?;
        let mut child = Command::new(binary)
            .arg("--scenario")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the emulator's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base_url = loop {
            let line = lines
                .next()
                .context("the emulator exited before listening")??;
            if let Some(url) = serde_json::from_str::<serde_json::Value>(line.trim())
                .ok()
                .and_then(|value| value["listening"].as_str().map(str::to_owned))
            {
                break url;
            }
        };
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Ok(Emulator {
            child,
            base_url,
            _folder: folder,
        })
    }
}

/// A hunt over every tenant of a fresh world: (wall time, rows, tenants succeeded).
async fn hunt(
    emulator: &Emulator,
    tenants: &[(String, u32)],
    query: &str,
) -> Result<(Duration, u64, usize)> {
    let folder = TempFolder::new("hunt-bench")?;
    reqwest::Client::new()
        .put(format!("{}/_emulator/settings", emulator.base_url))
        .json(&json!({"rate_limits": "off"}))
        .send()
        .await?
        .error_for_status()?;
    let variables = [
        ("DP_AUTHORITY_HOST", emulator.base_url.clone()),
        ("DP_API_BASE_GRAPH", emulator.base_url.clone()),
        (
            "DP_CREDENTIAL_JSON",
            json!({"client_id": CLIENT_ID, "client_secret": SECRET}).to_string(),
        ),
        (
            "DP_SQLITE_PATH",
            folder.0.join("registry.sqlite").display().to_string(),
        ),
        (
            "DP_HUNT_DIR",
            folder.0.join("results").display().to_string(),
        ),
    ];
    let lookup = |name: &str| {
        variables
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    };
    let services = Services::build(Settings::from_lookup(lookup)?).await?;
    for (id, _) in tenants {
        let record = TenantRecord::new(TenantId::parse(id)?, id.as_str(), TenantStatus::Active);
        services.registry.upsert(&record).await?;
    }
    let service = HuntService::build(&services, lookup)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let started = Instant::now();
    let submitted = service
        .submit_json(&json!({"query": query, "tenants": "all"}), "bench")
        .await?;
    service.drain_local().await;
    let elapsed = started.elapsed();
    let manifest = service.manifest(&submitted.hunt_id).await?;
    if manifest.status != "completed" {
        bail!("the hunt ended {}: {:?}", manifest.status, manifest.error);
    }
    let succeeded = manifest
        .tenants
        .iter()
        .filter(|tenant| tenant.status == "succeeded")
        .count();
    Ok((elapsed, manifest.rows_total, succeeded))
}

fn status_kib(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    if args.fleet_tenants > 0 {
        let tenants: Vec<(String, u32)> = (0..args.fleet_tenants)
            .map(|n| (tenant_guid(1, n), args.fleet_rows))
            .collect();
        let emulator = Emulator::start(&args.emulator, &tenants)?;
        let (elapsed, rows, succeeded) = hunt(
            &emulator,
            &tenants,
            &format!("DeviceProcessEvents | take {}", args.fleet_rows),
        )
        .await?;
        println!(
            "(a) fleet: {} tenants x {} rows: {:.1} s wall, {rows} rows, {succeeded} tenants succeeded",
            args.fleet_tenants,
            args.fleet_rows,
            elapsed.as_secs_f64()
        );
    }
    if args.big_tenants > 0 {
        let tenants: Vec<(String, u32)> = (0..args.big_tenants)
            .map(|n| (tenant_guid(2, n), args.big_rows))
            .collect();
        let emulator = Emulator::start(&args.emulator, &tenants)?;
        // The start's own allocations are not the hunt's: measure from here.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = status_kib("VmRSS:");
        let (elapsed, rows, succeeded) = hunt(&emulator, &tenants, "DeviceProcessEvents").await?;
        println!(
            "(b) {} tenants x {} rows (all 17 columns): {:.1} s wall, {rows} rows, {succeeded} tenants succeeded; RSS before {}, peak {}",
            args.big_tenants,
            args.big_rows,
            elapsed.as_secs_f64(),
            mib(before),
            mib(status_kib("VmHWM:"))
        );
    }
    Ok(())
}
