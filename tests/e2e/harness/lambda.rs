//! A Lambda function of the workspace run by `cargo lambda watch` (PyPI `cargo-lambda`), the
//! local Lambda runtime API, and invoked over its HTTP invoke endpoint.
//!
//! What `cargo lambda watch` (1.9) does, as found when this harness was written:
//! - it serves `POST /2015-03-31/functions/{binary}/invocations` on `--invoke-address` /
//!   `--invoke-port`, and starts the function (`cargo run --bin {binary}`) on the first invoke
//!   for that name, so the first invoke also waits for the build;
//! - the function inherits the watch process's environment, plus `--env-var KEY=VALUE`
//!   (a value is split on commas) and `AWS_LAMBDA_*` of its own; `AWS_REGION` is not set;
//! - a function error answers HTTP 500 with the body `{"errorType","errorMessage"}` and no
//!   `X-Amz-Function-Error` header (real Lambda answers 200 with that header); a panic is a
//!   function error too (`errorMessage` "Lambda panicked: ...");
//! - a payload that is not JSON never reaches the handler (lambda_runtime's
//!   `DeserializeError`), as real Lambda refuses it before the function;
//! - if the function exits during init, the invoke hangs (until `--timeout`, else forever) and
//!   the log says `command exited`;
//! - an unknown function name answers 404;
//! - its own log level follows `RUST_LOG`, and it logs the `--env-var` values when it spawns
//!   the function: never pass a secret that way.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::process::{ChildProcess, LogBuffer};
use crate::tools;

/// How long the first invoke may take to get an answer (the function is already built).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one invoke may take before the harness calls it hung. Only a guard: the functions
/// run under `cargo lambda watch`'s 600-s deadline, and the slowest case (e2e_fetch's
/// `faults_stay_with_their_tenant`: 24 pairs under 2-s tokens, throttles, 503s and slow pages,
/// at DEBUG level) measured 92 s on this 2-core machine, past the 90 s this guard once was.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(300);

/// A function error: what a caller of `lambda:InvokeFunction` sees when the handler fails.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage", default)]
    pub error_message: String,
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.error_message)
    }
}

impl std::error::Error for FunctionError {}

/// A running `cargo lambda watch` serving one function; stopped (function included) when
/// dropped.
pub struct LambdaWatch {
    process: ChildProcess,
    invoke_url: String,
    http: reqwest::Client,
}

impl LambdaWatch {
    /// Builds `bin` of `package`, starts `cargo lambda watch` on a free loopback port with the
    /// given function environment, and waits until the function answers a first invoke
    /// (`warm_up`, whose answer, success or function error, is discarded).
    pub async fn start(
        package: &str,
        bin: &str,
        env: &[(String, String)],
        warm_up: &Value,
    ) -> Result<LambdaWatch> {
        LambdaWatch::start_into(package, bin, env, warm_up, LogBuffer::new()).await
    }

    /// As [`LambdaWatch::start`], appending the output to `logs`.
    pub async fn start_into(
        package: &str,
        bin: &str,
        env: &[(String, String)],
        warm_up: &Value,
        logs: LogBuffer,
    ) -> Result<LambdaWatch> {
        let cargo_lambda = tools::require_tool("cargo-lambda")?;
        // Build first: a compile error shows here with cargo's own message, and the watch's
        // `cargo run` finds the binary fresh.
        tools::build_binary(package, bin)?;
        let port = tools::free_port()?;

        let command = watch_command(&cargo_lambda, port, env);
        let mut process =
            ChildProcess::spawn_into(&format!("cargo-lambda-{bin}"), command, logs.clone())?;
        wait_until_listening(&mut process, port, &logs).await?;
        let mut watch = LambdaWatch {
            process,
            invoke_url: format!("http://127.0.0.1:{port}/2015-03-31/functions/{bin}/invocations"),
            http: reqwest::Client::builder().timeout(INVOKE_TIMEOUT).build()?,
        };
        watch.wait_ready(warm_up).await?;
        Ok(watch)
    }

    async fn wait_ready(&mut self, warm_up: &Value) -> Result<()> {
        let started = Instant::now();
        let ready_http = reqwest::Client::builder().timeout(READY_TIMEOUT).build()?;
        let mark = self.logs().mark();
        // The first invoke starts the function; watch the log for a function that dies while
        // it starts (the invoke would then hang).
        let invoke = ready_http.post(&self.invoke_url).json(warm_up).send();
        tokio::pin!(invoke);
        loop {
            tokio::select! {
                answer = &mut invoke => {
                    match answer {
                        Ok(response) if response.status().is_success()
                            || response.status().as_u16() == 500 => break,
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            bail!(
                                "the first invoke of {} answered {status}: {body}\n\
                                 cargo lambda watch output:\n{}",
                                self.invoke_url,
                                self.logs().tail(80)
                            );
                        }
                        Err(error) => bail!(
                            "the first invoke of {} failed after {:.0}s: {error}\n\
                             cargo lambda watch output:\n{}",
                            self.invoke_url,
                            started.elapsed().as_secs_f64(),
                            self.logs().tail(80)
                        ),
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let fresh = self.logs().since(mark);
                    if fresh.contains("command exited") {
                        bail!(
                            "the function exited while starting; cargo lambda watch output:\n{}",
                            self.logs().tail(80)
                        );
                    }
                }
            }
        }
        eprintln!(
            "[harness] cargo lambda watch ready ({}) in {:.1}s",
            self.invoke_url,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Invokes the function (as `lambda:InvokeFunction` does) and returns its answer or its
    /// function error. Panics, with the tail of the captured output, if the invoke itself
    /// fails (no answer, or an answer that is neither).
    pub async fn invoke(&self, payload: &Value) -> Result<Value, FunctionError> {
        match self.try_invoke(payload).await {
            Ok(answer) => answer,
            Err(error) => panic!(
                "{error:#}\ncargo lambda watch output (tail):\n{}",
                self.logs().tail(60)
            ),
        }
    }

    /// As [`LambdaWatch::invoke`], with transport problems as the outer error.
    pub async fn try_invoke(&self, payload: &Value) -> Result<Result<Value, FunctionError>> {
        let response = self
            .http
            .post(&self.invoke_url)
            .json(payload)
            .send()
            .await
            .with_context(|| format!("invoking {}", self.invoke_url))?;
        let status = response.status();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response.text().await.unwrap_or_default();
        if status.is_success() && !function_error {
            return serde_json::from_str(&body)
                .map(Ok)
                .with_context(|| format!("the function answered non-JSON: {body}"));
        }
        if function_error || status.as_u16() == 500 {
            return match serde_json::from_str::<FunctionError>(&body) {
                Ok(error) => Ok(Err(error)),
                Err(_) => Err(anyhow!(
                    "invoke answered {status} with a body that is not a function error: {body}"
                )),
            };
        }
        Err(anyhow!("invoke answered {status}: {body}"))
    }

    /// Everything `cargo lambda watch` and the function wrote so far.
    pub fn logs(&self) -> &LogBuffer {
        self.process.logs()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// `cargo lambda watch` on `port` for the functions of the workspace, with `env` as the
/// functions' environment: nothing of the caller's AWS profile or endpoints leaks in, and a
/// plain `RUST_LOG` goes through `--env-var` (cargo-lambda's own log level stays `info`).
pub(crate) fn watch_command(cargo_lambda: &Path, port: u16, env: &[(String, String)]) -> Command {
    let mut command = Command::new(cargo_lambda);
    command
        .args(["lambda", "watch", "--ignore-changes", "--color", "never"])
        .args(["--invoke-address", "127.0.0.1"])
        .args(["--invoke-port", &port.to_string()])
        .current_dir(tools::workspace_root())
        .env("PATH", tools::path_with(&tools::tool_dir(cargo_lambda)))
        .env("RUST_LOG", "info")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE");
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("AWS_ENDPOINT_URL_") || key.starts_with("DP_"))
        {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        if key == "RUST_LOG" && !value.contains(',') {
            command.arg("--env-var").arg(format!("RUST_LOG={value}"));
        } else {
            command.env(key, value);
        }
    }
    command
}

/// Waits until the watch listens on `port` (it first reads the workspace metadata); fails with
/// its output if it exits first or takes longer than [`READY_TIMEOUT`].
pub(crate) async fn wait_until_listening(
    process: &mut ChildProcess,
    port: u16,
    logs: &LogBuffer,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = process.exited() {
            bail!(
                "cargo lambda watch exited ({status}) before it listened on port {port}; its output:\n{}",
                logs.tail(80)
            );
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "cargo lambda watch did not listen on port {port} within {READY_TIMEOUT:?}; its output:\n{}",
                logs.tail(80)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
