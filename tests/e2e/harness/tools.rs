//! Where things are: the workspace, its target directory, the tools from the project venv, and
//! free loopback ports. Also builds the workspace binaries the tests run.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

/// The workspace root (two levels above this crate's directory, `tests/e2e`).
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        // At run time first: cargo sets it for the test binary being run, while the compile-time
        // value belongs to whichever checkout last built this shared harness crate (clones that
        // share one target directory share the build).
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .ancestors()
            .nth(2)
            .expect("tests/e2e sits two levels below the workspace root")
            .to_path_buf()
    })
}

/// The cargo that runs these tests (cargo sets `CARGO` for test binaries), else `cargo`.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// The workspace's target directory, as cargo itself resolves it (`CARGO_TARGET_DIR`,
/// `build.target-dir` in a config file, or `<workspace>/target`).
pub fn target_dir() -> Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .context("running `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
    let dir = metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("`cargo metadata` names no target_directory"))?;
    Ok(DIR.get_or_init(|| dir).clone())
}

/// Builds one binary of the workspace (dev profile, the one `cargo test` uses) and returns its
/// path. Each binary is built at most once per test process; a build that is already fresh
/// takes a fraction of a second.
pub fn build_binary(package: &str, bin: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(bin) {
        return Ok(path.clone());
    }
    let started = Instant::now();
    let output = Command::new(cargo())
        .args(["build", "--package", package, "--bin", bin])
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("running `cargo build --package {package} --bin {bin}`"))?;
    if !output.status.success() {
        bail!(
            "`cargo build --package {package} --bin {bin}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = target_dir()?.join("debug").join(bin);
    if !path.is_file() {
        bail!(
            "`cargo build --package {package} --bin {bin}` succeeded but {} is missing",
            path.display()
        );
    }
    eprintln!(
        "[harness] built {bin} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    built.insert(bin.to_owned(), path.clone());
    Ok(path)
}

/// Finds an executable the tests need: on `PATH` first, then in the project venv
/// (`<workspace>/.venv/bin`). A missing tool is an error that says how to install it: the
/// end-to-end tests fail rather than skip.
pub fn require_tool(name: &str) -> Result<PathBuf> {
    let venv_bin = workspace_root().join(".venv").join("bin");
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in path_dirs.iter().chain(std::iter::once(&venv_bin)) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(
        "required tool `{name}` was found neither on PATH nor in {}.\n\
         The end-to-end tests need the project's Python tools (moto[server], cargo-lambda, \
         ziglang, cfn-lint, pinned in infra/local/requirements.txt). Install them with \
         `scripts/venv`, or run everything with `scripts/test`, which does both.",
        venv_bin.display()
    )
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The directory that holds `tool`, for putting in front of `PATH` of a child process (cargo
/// finds its `cargo-lambda` subcommand there).
pub fn tool_dir(tool: &Path) -> PathBuf {
    tool.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `PATH` with `dir` in front.
pub fn path_with(dir: &Path) -> OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// A loopback port that was free a moment ago (the OS picked it). Used for programs that take
/// a port number rather than reporting the one they bound.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
