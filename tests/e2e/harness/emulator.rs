//! The Entra ID + Defender emulator (`defender-emulator`, infra/emulator) as a child process,
//! loaded with a scenario the test writes (in the emulator's own types), and its control API
//! ([`EmulatorControl`], the test kit's client).

use std::ops::Deref;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use defender_emulator::Scenario;
use defender_partner_testkit::EmulatorControl;
use serde_json::Value;

use crate::process::{ChildProcess, LogBuffer};
use crate::tools::{self, TempDir};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running emulator; stopped when dropped. Its control API is [`EmulatorControl`]'s, to which
/// it dereferences.
pub struct Emulator {
    process: ChildProcess,
    control: EmulatorControl,
    _dir: TempDir,
}

impl Deref for Emulator {
    type Target = EmulatorControl;

    fn deref(&self) -> &EmulatorControl {
        &self.control
    }
}

impl Emulator {
    /// Builds `defender-emulator` if needed, writes `scenario` to a temporary file and starts
    /// the emulator on a loopback port of its choosing.
    pub async fn start(scenario: &Scenario) -> Result<Emulator> {
        let text = serde_json::to_string_pretty(scenario)?;
        // Fail here, with the emulator's own words, if the scenario is inconsistent.
        scenario.validate().context("the test's scenario")?;
        let dir = TempDir::new("dp-e2e-emulator")?;
        let path = dir.path().join("scenario.json");
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        Emulator::start_process(Some(&path), "127.0.0.1:0", dir).await
    }

    /// Starts the emulator on `listen` with the scenario file at `path` (`None`: its built-in
    /// demo scenario).
    pub async fn start_file(path: Option<&Path>, listen: &str) -> Result<Emulator> {
        Emulator::start_process(path, listen, TempDir::new("dp-e2e-emulator")?).await
    }

    async fn start_process(path: Option<&Path>, listen: &str, dir: TempDir) -> Result<Emulator> {
        let exe = tools::build_binary("defender-emulator", "defender-emulator")?;
        let mut command = Command::new(exe);
        if let Some(path) = path {
            command.arg("--scenario").arg(path);
        }
        command.args(["--listen", listen]).env("RUST_LOG", "info");
        let mut process = ChildProcess::spawn("emulator", command)?;

        let started = Instant::now();
        let base_url = loop {
            let logs = process.logs().text();
            if let Some(url) = logs.lines().find_map(listening_url) {
                break url;
            }
            if let Some(status) = process.exited() {
                bail!(
                    "defender-emulator exited ({status}) before it was listening; its output:\n{}",
                    process.logs().tail(60)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "defender-emulator printed no {{\"listening\":...}} line within {READY_TIMEOUT:?}; its output:\n{}",
                    process.logs().tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("[harness] emulator ready on {base_url}");
        Ok(Emulator {
            process,
            control: EmulatorControl::new(&base_url),
            _dir: dir,
        })
    }

    pub fn logs(&self) -> &LogBuffer {
        self.process.logs()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

fn listening_url(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    value["listening"].as_str().map(str::to_owned)
}
