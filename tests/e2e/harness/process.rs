//! Child processes whose output is captured and which never outlive the test.
//!
//! Each child runs in its own process group, with every line of its stdout and stderr appended
//! to a [`LogBuffer`]. Dropping a [`ChildProcess`] (also while a panic unwinds) sends SIGTERM to
//! it and its group, waits a moment for it to clean up, then SIGKILLs it and every descendant
//! seen before the stop (`cargo lambda watch` puts the function processes in groups of their
//! own). As a last resort the child gets `PR_SET_PDEATHSIG`, so it is signalled if the thread
//! that spawned it dies (spawn from the test's own thread or a runtime worker, never from a
//! `spawn_blocking` thread, which may be retired while idle).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Everything a child wrote, line by line, in arrival order (stdout and stderr interleaved).
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<String>>);

impl LogBuffer {
    pub fn new() -> LogBuffer {
        LogBuffer::default()
    }

    fn push_line(&self, line: &str) {
        let mut text = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        text.push_str(line);
        if !line.ends_with('\n') {
            text.push('\n');
        }
    }

    /// The whole capture so far.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A position to read from later with [`LogBuffer::since`].
    pub fn mark(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// What was captured after `mark`.
    pub fn since(&self, mark: usize) -> String {
        let text = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        text.get(mark..).unwrap_or_default().to_owned()
    }

    /// The capture after `mark` once `ready` holds for it, or after `within` whichever comes
    /// first: a function's lines reach the capture through a pipe, after the answer it gave, so
    /// a test that reads a line right after an invocation waits for it (bounded).
    pub async fn wait_since(
        &self,
        mark: usize,
        within: std::time::Duration,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        let until = tokio::time::Instant::now() + within;
        loop {
            let text = self.since(mark);
            if ready(&text) || tokio::time::Instant::now() >= until {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` lines, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A running child process; stopped (with its descendants) when dropped.
pub struct ChildProcess {
    name: String,
    child: Child,
    logs: LogBuffer,
    stopped: bool,
}

impl ChildProcess {
    /// Spawns `command` with stdin closed and stdout/stderr captured into a new buffer.
    pub fn spawn(name: &str, command: Command) -> Result<ChildProcess> {
        ChildProcess::spawn_into(name, command, LogBuffer::new())
    }

    /// Spawns `command`, appending its output to `logs`.
    pub fn spawn_into(name: &str, mut command: Command, logs: LogBuffer) -> Result<ChildProcess> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        if let Some(stdout) = child.stdout.take() {
            pump(stdout, logs.clone(), format!("{name}-stdout"))?;
        }
        if let Some(stderr) = child.stderr.take() {
            pump(stderr, logs.clone(), format!("{name}-stderr"))?;
        }
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            logs,
            stopped: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    /// `Some(description)` once the child has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(format!("unknown state ({error})")),
        }
    }

    /// Stops the child and everything it started; idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = self.child.id() as i32;
        let descendants = descendants_of(pid);
        if self.child.try_wait().ok().flatten().is_none() {
            signal(pid, libc::SIGTERM);
            signal(-pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.child.try_wait().ok().flatten().is_none() {
                signal(-pid, libc::SIGKILL);
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        // Whatever the child started and left behind (other process groups included).
        for descendant in &descendants {
            signal(*descendant, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && descendants.iter().any(|pid| is_alive(*pid)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for descendant in descendants {
            if is_alive(descendant) {
                signal(descendant, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Alive and not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Every live process below `root` in the parent/child tree, read from /proc.
pub fn descendants_of(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut seen = HashSet::new();
    let mut queue = vec![root];
    let mut found = Vec::new();
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(*child) {
                found.push(*child);
                queue.push(*child);
            }
        }
    }
    found
}

fn pump(stream: impl Read + Send + 'static, logs: LogBuffer, thread_name: String) -> Result<()> {
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => logs.push_line(&String::from_utf8_lossy(&line)),
                }
            }
        })
        .context("starting an output reader thread")?;
    Ok(())
}
