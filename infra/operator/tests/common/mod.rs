//! `dp-operator` as an operator runs it: the real binary, with the settings of a [`World`] (the
//! emulator on its demo scenario, the embedded store) and nothing else from this environment.

#![allow(dead_code)]

use std::process::Output;

use defender_emulator::demo;
use defender_partner::config::{
    ENV_CONSENT_PROOF_SECONDS, ENV_CONSENT_REDIRECT_URI, ENV_STATE_KEY_FILE,
};
use defender_partner_testkit::World;
use serde_json::Value;

pub struct Operator {
    pub world: World,
}

impl Operator {
    /// The demo scenario; consent links to the demo's redirect URI, proven at once or never.
    pub async fn on_demo() -> Operator {
        let world = World::builder()
            .folder_setting(ENV_STATE_KEY_FILE, "state-key")
            .setting(ENV_CONSENT_REDIRECT_URI, demo::CONSENT_REDIRECT_URI)
            .setting(ENV_CONSENT_PROOF_SECONDS, "0")
            .start()
            .await
            .unwrap();
        Operator { world }
    }

    /// Runs `dp-operator args` with the world's settings plus `env`.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dp-operator"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.world.env())
            .envs(env.iter().copied())
            .output()
            .await
            .expect("dp-operator runs")
    }

    /// Runs `dp-operator args`, which must succeed: its JSON output.
    pub async fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args, &[]).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?}: {error}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Runs `dp-operator args`, which must fail saying `expected`.
    pub async fn fails(&self, args: &[&str], expected: &str) {
        let output = self.run(args, &[]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
