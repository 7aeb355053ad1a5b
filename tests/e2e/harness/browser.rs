//! A real browser: Debian's headless Chromium (`/usr/bin/chromium`), driven over W3C WebDriver
//! through `/usr/bin/chromedriver` (both installed by `scripts/browser`) with `fantoccini`.
//!
//! [`Browser::start`] starts chromedriver on a free loopback port (a [`ChildProcess`]: it and
//! the Chromium processes it starts are stopped when the [`Browser`] is dropped) and opens one
//! session with a fresh profile in a temporary directory. Chromium runs with the network
//! features that would call home turned off; it only ever loads the loopback URLs a test gives
//! it. A missing browser fails the test with a message saying to run `scripts/browser`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::process::{ChildProcess, LogBuffer};
use crate::tools::{self, TempDir};

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to answer `/status`, and Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a page may take to load, or a wait for one to last.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium command line: headless, sandbox off (tests run as root in containers), and
/// nothing that reaches the network by itself.
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    // Containers often have a small /dev/shm; Chromium then crashes tabs without this.
    "--disable-dev-shm-usage",
    "--no-default-browser-check",
];

/// Both programs, or an error saying how to install them.
pub fn require_browser() -> Result<(PathBuf, PathBuf)> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !is_executable(Path::new(path)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the browser test needs Debian's chromium and chromium-driver, and {} missing.\n\
             Install them with `scripts/browser` (apt-get, as root), or run everything with \
             `scripts/test`.",
            missing.join(" and ") + if missing.len() == 1 { " is" } else { " are" }
        );
    }
    Ok((PathBuf::from(CHROMIUM), PathBuf::from(CHROMEDRIVER)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A headless Chromium session; chromedriver and Chromium are stopped when dropped.
pub struct Browser {
    client: Option<Client>,
    driver: ChildProcess,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and opens a session with a fresh profile.
    pub async fn start() -> Result<Browser> {
        let (chromium, chromedriver) = require_browser()?;
        let profile = TempDir::new("dp-e2e-chromium")?;
        let port = tools::free_port()?;
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            // Chromium reads HOME for a few things even with --user-data-dir.
            .env("HOME", profile.path());
        let mut driver = ChildProcess::spawn_into("chromedriver", command, LogBuffer::new())?;
        let driver_url = format!("http://127.0.0.1:{port}");

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{driver_url}/status")).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == json!(true)
            {
                break;
            }
            if let Some(status) = driver.exited() {
                bail!(
                    "chromedriver exited ({status}) before it was ready; its output:\n{}",
                    driver.logs().tail(40)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "chromedriver did not answer {driver_url}/status within {START_TIMEOUT:?}; its output:\n{}",
                    driver.logs().tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let mut args: Vec<String> = CHROMIUM_FLAGS
            .iter()
            .map(|flag| (*flag).to_owned())
            .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": PAGE_TIMEOUT.as_millis() as u64, "script": 30_000, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("capabilities are an object")
        };
        let client = tokio::time::timeout(
            START_TIMEOUT,
            ClientBuilder::rustls()
                .context("building the WebDriver client")?
                .capabilities(capabilities)
                .connect(&driver_url),
        )
        .await
        .with_context(|| {
            format!(
                "Chromium did not open a WebDriver session within {START_TIMEOUT:?}; chromedriver output:\n{}",
                driver.logs().tail(40)
            )
        })?
        .with_context(|| {
            format!(
                "opening a WebDriver session with {}; chromedriver output:\n{}",
                chromium.display(),
                driver.logs().tail(40)
            )
        })?;
        eprintln!(
            "[harness] chromium session ready (chromedriver on {driver_url}) in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(Browser {
            client: Some(client),
            driver,
            _profile: profile,
        })
    }

    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until close")
    }

    /// chromedriver's output (Chromium's own goes to its profile's log, not here).
    pub fn driver_logs(&self) -> &LogBuffer {
        self.driver.logs()
    }

    /// Loads `url` (following redirects, as a person's browser does) and waits for the load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client()
            .goto(url)
            .await
            .with_context(|| format!("loading {url}"))
    }

    pub async fn current_url(&self) -> Result<url::Url> {
        self.client()
            .current_url()
            .await
            .context("reading the current URL")
    }

    /// Waits until the current URL starts with `prefix` (after a click that navigates), and
    /// returns it.
    pub async fn wait_for_url_prefix(&self, prefix: &str) -> Result<url::Url> {
        let started = Instant::now();
        loop {
            let url = self.current_url().await?;
            if url.as_str().starts_with(prefix) {
                return Ok(url);
            }
            if started.elapsed() > PAGE_TIMEOUT {
                bail!(
                    "the browser did not reach {prefix}… within {PAGE_TIMEOUT:?}; it is at {url}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching the CSS selector and returns it.
    pub async fn wait_for(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.client()
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for {css:?}"))
    }

    /// The visible text of the first element matching the CSS selector.
    pub async fn text_of(&self, css: &str) -> Result<String> {
        self.wait_for(css)
            .await?
            .text()
            .await
            .with_context(|| format!("reading the text of {css:?}"))
    }

    /// Chooses the option with `value` in the `<select>` matching the CSS selector.
    pub async fn select(&self, css: &str, value: &str) -> Result<()> {
        self.wait_for(css)
            .await?
            .select_by_value(value)
            .await
            .with_context(|| format!("selecting {value:?} in {css:?}"))
    }

    /// Clicks the element matching the CSS selector.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.wait_for(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking {css:?}"))
    }

    /// The current page's HTML as the browser holds it.
    pub async fn source(&self) -> Result<String> {
        self.client()
            .source()
            .await
            .context("reading the page source")
    }

    /// Ends the session (Chromium exits), then stops chromedriver.
    pub async fn close(mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            client
                .close()
                .await
                .context("closing the WebDriver session")?;
        }
        self.driver.stop();
        Ok(())
    }
}
