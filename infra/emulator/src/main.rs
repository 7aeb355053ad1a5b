//! `defender-emulator [--scenario PATH] [--listen 127.0.0.1:0] [--api-latency-ms 200-400]
//! [--token-latency-ms 50-150]`
//!
//! Prints one line, `{"listening":"http://127.0.0.1:PORT"}`, on stdout once it accepts
//! connections (the only stdout output: a parent process reads it to find the port); logs go to
//! stderr. Stops on SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use defender_emulator::{Latency, Scenario};

const USAGE: &str = "usage: defender-emulator [--scenario PATH] [--listen ADDR:PORT]
  --scenario PATH   scenario JSON file (default: the built-in demo scenario)
  --listen ADDR     address to listen on (default: 127.0.0.1:0, a free port)
  --api-latency-ms MIN-MAX    wait before each data API answer, uniform in the range (default: none)
  --token-latency-ms MIN-MAX  wait before each token endpoint answer (default: none)";

struct Args {
    scenario: Option<PathBuf>,
    listen: SocketAddr,
    latency: Latency,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut parsed = Args {
        scenario: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        latency: Latency::default(),
    };
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--scenario" => parsed.scenario = Some(PathBuf::from(value()?)),
            "--listen" => {
                let text = value()?;
                parsed.listen = text
                    .parse()
                    .with_context(|| format!("--listen {text:?} is not an address:port"))?;
            }
            "--api-latency-ms" => {
                parsed.latency.api = Some(value()?.parse().map_err(anyhow::Error::msg)?)
            }
            "--token-latency-ms" => {
                parsed.latency.token = Some(value()?.parse().map_err(anyhow::Error::msg)?)
            }
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("defender-emulator: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1)).map_err(|e| e.context(USAGE))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::demo(),
    };
    let emulator = defender_emulator::start(scenario, args.listen).await?;
    emulator.handle().set_latency(args.latency);
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{}",
            serde_json::json!({ "listening": emulator.base_url() })
        )?;
        stdout.flush()?;
    }
    stop_signal().await?;
    tracing::info!("stopping");
    emulator.shutdown().await;
    Ok(())
}

async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> anyhow::Result<Option<Args>> {
        parse_args(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_both_spellings() {
        let parsed = args(&["--scenario", "a.json", "--listen=127.0.0.1:8080"])
            .unwrap()
            .unwrap();
        assert_eq!(parsed.scenario, Some(PathBuf::from("a.json")));
        assert_eq!(parsed.listen.port(), 8080);
        let defaults = args(&[]).unwrap().unwrap();
        assert_eq!(defaults.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(args(&["--listen"]).is_err());
        assert!(args(&["--listen", "nowhere"]).is_err());
        assert!(args(&["--verbose"]).is_err());
        let slow = args(&["--api-latency-ms", "200-400", "--token-latency-ms=50"])
            .unwrap()
            .unwrap();
        assert_eq!(
            slow.latency.api.map(|r| (r.min_ms, r.max_ms)),
            Some((200, 400))
        );
        assert_eq!(
            slow.latency.token.map(|r| (r.min_ms, r.max_ms)),
            Some((50, 50))
        );
        assert_eq!(defaults.latency, Latency::default());
        assert!(args(&["--api-latency-ms", "400-200"]).is_err());
    }
}
