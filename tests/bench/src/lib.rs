//! What the in-process benchmarks share besides the test kit's `World`: the table of
//! median / p90 / max the latency benches print, and the cost bench's parts (`cost`: the
//! template's defaults, prices and a month's bill; `metered`: the AWS calls counted and given
//! AWS's time; `fleet_cost`: one fleet's scheduled runs measured as Lambda bills them).

pub mod cost;
pub mod fleet_cost;
pub mod metered;

use std::time::Duration;

use anyhow::{Context, Result};
use defender_emulator::{DefenderSettingsPatch, RateLimitMode};
use defender_partner_testkit::world::active;
use defender_partner_testkit::{World, scenario};

/// A bench tenant: its id and generated data, records `spacing_seconds` apart, the newest about
/// at load time.
pub struct TenantData {
    pub id: String,
    pub incidents: u32,
    pub mde_alerts: u32,
    pub spacing_seconds: u32,
}

/// The world of an ingestion bench: one app (`client_id`, `secret`), `tenants` with the fetch
/// grants and their generated data, all registered active, the data APIs and the local sink,
/// `settings` set, and the emulator's own rate limits off (the client's limiter stays on).
pub async fn ingestion_world(
    (client_id, app_name, secret): (&str, &str, &str),
    tenants: &[TenantData],
    settings: &[(&str, String)],
) -> Result<World> {
    let scenario_tenants = tenants
        .iter()
        .enumerate()
        .map(|(index, data)| {
            let mut tenant = scenario::tenant(
                &data.id,
                &format!("{app_name} tenant {index}"),
                scenario::fetch_grants(client_id),
            );
            tenant.data = Some(scenario::data(
                data.incidents,
                data.mde_alerts,
                index as u64 + 1,
                data.spacing_seconds,
            ));
            tenant
        })
        .collect();
    let mut world = World::on(scenario::with(
        scenario::app(client_id, app_name, &[secret]),
        scenario_tenants,
    ))
    .data_apis()
    .local_sink()
    .tenants(tenants.iter().map(|data| active(&data.id, &data.id)));
    for (name, value) in settings {
        world = world.setting(name, value.clone());
    }
    let world = world.start().await?;
    world
        .handle()
        .patch_defender_settings(&DefenderSettingsPatch {
            rate_limits: Some(RateLimitMode::Off),
            ..Default::default()
        })
        .map_err(|error| anyhow::anyhow!("rate limits off: {error:?}"))?;
    Ok(world)
}

/// Reads the command line as `--name value` or `--name=value` options: `apply` gets each name
/// and a function that takes its value, and answers whether it knows the option. `-h` and
/// `--help` print `usage` and exit; an unknown option is an error showing `usage`.
pub fn parse_options(
    usage: &str,
    mut apply: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
) -> Result<()> {
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| iter.next())
                .with_context(|| format!("{name} needs a value"))
        };
        if name == "-h" || name == "--help" {
            print!("{usage}");
            std::process::exit(0);
        }
        if !apply(&name, &mut value)? {
            anyhow::bail!("unknown option {name}\n{usage}");
        }
    }
    Ok(())
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Prints `title`, then one line per path: median, p90 and max of its samples.
pub fn print_latencies(title: &str, rows: &mut [(&str, Vec<Duration>)]) {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(4);
    println!("{title}");
    println!(
        "{:<width$} {:>9} {:>9} {:>9}",
        "path", "median", "p90", "max"
    );
    for (name, samples) in rows.iter_mut() {
        samples.sort();
        let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
        println!(
            "{name:<width$} {:>9} {:>9} {:>9}",
            micros(at(0.5)),
            micros(at(0.9)),
            micros(samples[samples.len() - 1])
        );
    }
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

/// `release` or `debug`: what the figures were measured with.
pub fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
