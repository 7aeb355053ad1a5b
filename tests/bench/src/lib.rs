//! What the in-process latency benchmarks share: the emulator on its demo scenario with the
//! services a function builds on it, and the table of median / p90 / max they print.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use defender_emulator::{RunningEmulator, Scenario, demo};
use defender_partner::config::Settings;
use defender_partner::runtime::Services;
use serde_json::json;

/// The demo emulator on a loopback port and a function's services against it: the demo app's
/// client secret and an embedded SQLite store in a folder of its own, removed by
/// [`DemoWorld::shutdown`].
pub struct DemoWorld {
    pub emulator: RunningEmulator,
    pub services: Services,
    folder: PathBuf,
}

impl DemoWorld {
    /// `extra` adds settings, given the world's folder (for key files and the like).
    pub async fn start(
        name: &str,
        extra: impl FnOnce(&Path) -> Vec<(&'static str, String)>,
    ) -> anyhow::Result<DemoWorld> {
        let emulator =
            defender_emulator::start(Scenario::demo(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await?;
        let folder = std::env::temp_dir().join(format!("dp-{name}-{}", uuid::Uuid::new_v4()));
        let mut variables = vec![
            ("DP_AUTHORITY_HOST", emulator.base_url().to_owned()),
            (
                "DP_CREDENTIAL_JSON",
                json!({"client_id": demo::CLIENT_ID, "client_secret": demo::CLIENT_SECRET})
                    .to_string(),
            ),
            (
                "DP_SQLITE_PATH",
                folder.join("registry.sqlite").display().to_string(),
            ),
        ];
        variables.extend(extra(&folder));
        let lookup = |name: &str| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
        };
        let services = Services::build(Settings::from_lookup(lookup)?).await?;
        Ok(DemoWorld {
            emulator,
            services,
            folder,
        })
    }

    pub async fn shutdown(self) {
        self.emulator.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.folder);
    }
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
