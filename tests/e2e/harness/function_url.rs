//! A function of the workspace reached over HTTP through `cargo lambda watch`'s function URL
//! (`http://127.0.0.1:PORT/lambda-url/{function}/...`, turned into API Gateway HTTP API 2.0
//! events), for the functions a browser talks to.
//!
//! The port is reserved before anything starts ([`FunctionUrl::reserve`]) because the URL is
//! part of the function's own configuration (the redirect URIs it puts in its links, and the
//! ones registered on the app in the emulator).
//!
//! What `cargo lambda watch` (1.9) does with function URLs, as found when this was written:
//! `/lambda-url/{function}/{path}` invokes `{function}` with `rawPath` = `/{path}` (the prefix is
//! stripped), `rawQueryString` = the query exactly as sent, `queryStringParameters` parsed, and
//! answers with the function's `statusCode`, `headers` and body. It performs no authorization,
//! so IAM-protected routes are reachable as plain GETs here. The same watch also serves direct
//! invokes (`POST /2015-03-31/functions/{function}/invocations`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lambda;
use crate::process::{ChildProcess, LogBuffer};
use crate::tools;

/// The first request starts the function (`cargo run`), which may wait for the shared target
/// directory's lock behind other builds.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(900);

/// Where a function will answer, chosen before it starts.
#[derive(Debug, Clone)]
pub struct ReservedUrl {
    pub port: u16,
    /// `http://127.0.0.1:PORT/lambda-url/{function}`
    pub url: String,
    function: String,
}

/// A running `cargo lambda watch` serving one function over its function URL; stopped
/// (function included) when dropped.
pub struct FunctionUrl {
    _process: ChildProcess,
    reserved: ReservedUrl,
    logs: LogBuffer,
}

impl FunctionUrl {
    /// A free loopback port and the function URL of `function` on it.
    pub fn reserve(function: &str) -> Result<ReservedUrl> {
        let port = tools::free_port()?;
        Ok(ReservedUrl {
            port,
            url: format!("http://127.0.0.1:{port}/lambda-url/{function}"),
            function: function.to_owned(),
        })
    }

    /// Builds `function` of `package`, starts `cargo lambda watch` on the reserved port with
    /// the function's environment set on the watch process (which passes it on), its output
    /// appended to `logs`, and waits until `GET {url}{probe_path}` answers `probe_status`
    /// (that first request starts the function).
    pub async fn start(
        package: &str,
        reserved: ReservedUrl,
        env: &[(String, String)],
        logs: LogBuffer,
        probe_path: &str,
        probe_status: u16,
    ) -> Result<FunctionUrl> {
        let cargo_lambda = tools::require_tool("cargo-lambda")?;
        tools::build_binary(package, &reserved.function)?;
        // The function logs at debug unless told otherwise.
        let mut env = env.to_vec();
        if !env.iter().any(|(key, _)| key == "RUST_LOG") {
            env.push(("RUST_LOG".to_owned(), "debug".to_owned()));
        }
        let command = lambda::watch_command(&cargo_lambda, reserved.port, &env);
        let mut process = ChildProcess::spawn_into(
            &format!("cargo-lambda-{}", reserved.function),
            command,
            logs.clone(),
        )?;
        lambda::wait_until_listening(&mut process, reserved.port, &logs).await?;
        let function = FunctionUrl {
            _process: process,
            reserved,
            logs,
        };
        function.wait_ready(probe_path, probe_status).await?;
        Ok(function)
    }

    /// `http://127.0.0.1:PORT/lambda-url/{function}`
    pub fn url(&self) -> &str {
        &self.reserved.url
    }

    pub fn port(&self) -> u16 {
        self.reserved.port
    }

    /// The direct-invoke endpoint of the same watch (`lambda:InvokeFunction`).
    pub fn invoke_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{}/invocations",
            self.reserved.port, self.reserved.function
        )
    }

    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    /// The first request starts the function; a function that dies while starting is reported
    /// from the log (the request would hang).
    async fn wait_ready(&self, probe_path: &str, probe_status: u16) -> Result<()> {
        let started = Instant::now();
        let mark = self.logs.mark();
        let first = reqwest::Client::builder()
            .timeout(WARM_UP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?
            .get(format!("{}{probe_path}", self.reserved.url))
            .send();
        tokio::pin!(first);
        loop {
            tokio::select! {
                answer = &mut first => {
                    let response = answer.with_context(|| format!(
                        "the first request to the function URL failed; cargo lambda watch output:\n{}",
                        self.logs.tail(80)
                    ))?;
                    if response.status().as_u16() != probe_status {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        bail!(
                            "the first GET {probe_path} answered {status}, not {probe_status}: {body}\n\
                             cargo lambda watch output:\n{}",
                            self.logs.tail(80)
                        );
                    }
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if self.logs.since(mark).contains("command exited") {
                        bail!(
                            "{} exited while starting; cargo lambda watch output:\n{}",
                            self.reserved.function,
                            self.logs.tail(80)
                        );
                    }
                }
            }
        }
        eprintln!(
            "[harness] {} answers on {} ({:.1}s)",
            self.reserved.function,
            self.reserved.url,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
