//! The embedded default: NDJSON files in a folder,
//! `{root}/incidents/tenant={id}/source={name}/date={yyyy-mm-dd}/{run}-{part:05}.ndjson`.
//!
//! Each `write` makes one new file per partition it touches. A file is written under a hidden
//! temporary name, flushed to disk, given its final name without ever replacing an existing file,
//! and its folder is flushed too, so a batch that `write` accepted survives a crash or a power
//! loss. A crash mid-write leaves at most a hidden `.….tmp` file, which readers ignore.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::lines::{group, write_lines, written_at_now};
use super::{RecordSink, RunId, SinkError, SinkRecord};

pub(crate) const EXTENSION: &str = ".ndjson";

/// How many part numbers a file tries before giving up (others are taken by the same run id).
const NAME_ATTEMPTS: usize = 64;

pub struct LocalSink {
    root: PathBuf,
    /// Makes file names unique within a run: every file this sink writes takes the next number.
    part: Arc<AtomicU64>,
}

impl LocalSink {
    pub fn new(root: impl Into<PathBuf>) -> LocalSink {
        LocalSink {
            root: root.into(),
            part: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[async_trait]
impl RecordSink for LocalSink {
    async fn write(&self, run: &RunId, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let written_at = written_at_now();
        let mut files = Vec::new();
        for (partition, records) in group(batch) {
            let mut body = Vec::new();
            write_lines(&mut body, run, &written_at, &records)
                .map_err(|error| SinkError::Unavailable(format!("encoding records: {error}")))?;
            files.push((partition, body));
        }
        let (root, run, part) = (self.root.clone(), run.clone(), self.part.clone());
        tokio::task::spawn_blocking(move || {
            for (partition, body) in files {
                let folder = root.join(partition.path());
                store(&folder, &run, &part, &body).map_err(|error| {
                    SinkError::Unavailable(format!(
                        "local sink: writing to {}: {error}",
                        folder.display()
                    ))
                })?;
            }
            Ok(())
        })
        .await
        .map_err(|error| SinkError::Unavailable(format!("local sink: writer task: {error}")))?
    }
}

/// Writes `body` as a new file in `folder`, durably.
fn store(folder: &Path, run: &RunId, part: &AtomicU64, body: &[u8]) -> io::Result<()> {
    create_folder(folder)?;
    let temporary = folder.join(format!(".{run}-{}.tmp", uuid::Uuid::new_v4().simple()));
    let outcome = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(body)?;
        file.sync_all()?;
        drop(file);
        for _ in 0..NAME_ATTEMPTS {
            let number = part.fetch_add(1, Ordering::Relaxed) + 1;
            let name = folder.join(format!("{run}-{number:05}{EXTENSION}"));
            if place(&temporary, &name)? {
                return sync_folder(folder);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{NAME_ATTEMPTS} file names of run {run} were already taken"),
        ))
    })();
    if temporary.exists() {
        // Best effort: a leftover hidden file is ignored by readers anyway.
        let _ = fs::remove_file(&temporary);
    }
    outcome
}

/// Gives `temporary` the name `name` unless a file has it already; `false` if one has.
fn place(temporary: &Path, name: &Path) -> io::Result<bool> {
    // A hard link never replaces an existing file, even when two writers race for one name.
    match fs::hard_link(temporary, name) {
        Ok(()) => {
            fs::remove_file(temporary)?;
            Ok(true)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // A file system without hard links: check, then rename (a rename replaces silently).
        Err(_) if name.exists() => Ok(false),
        Err(_) => fs::rename(temporary, name).map(|()| true),
    }
}

/// Creates `folder` and its missing parents, flushing each new entry to disk.
fn create_folder(folder: &Path) -> io::Result<()> {
    if folder.is_dir() {
        return Ok(());
    }
    if let Some(parent) = folder
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        create_folder(parent)?;
    }
    match fs::create_dir(folder) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && folder.is_dir() => {}
        Err(error) => return Err(error),
    }
    match folder
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        Some(parent) => sync_folder(parent),
        None => sync_folder(Path::new(".")),
    }
}

/// Makes a folder's entries (new names) durable.
fn sync_folder(folder: &Path) -> io::Result<()> {
    File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::test_records::{batch, fresh_tenant};

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("dp-sink-{}", uuid::Uuid::new_v4().simple()))
    }

    #[tokio::test]
    async fn temporary_files_are_not_left_behind() {
        let root = scratch();
        let sink = LocalSink::new(&root);
        sink.write(&RunId::new(), &batch(&fresh_tenant()))
            .await
            .unwrap();
        let mut names = Vec::new();
        let mut folders = vec![root.clone()];
        while let Some(folder) = folders.pop() {
            for entry in fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    names.push(path.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
        }
        assert!(!names.is_empty());
        assert!(
            names
                .iter()
                .all(|name| name.ends_with(".ndjson") && !name.starts_with('.')),
            "{names:?}"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn an_unwritable_root_is_reported() {
        let root = scratch();
        fs::create_dir_all(&root).unwrap();
        let blocker = root.join("file");
        fs::write(&blocker, b"not a folder").unwrap();
        let sink = LocalSink::new(&blocker);
        let error = sink
            .write(&RunId::new(), &batch(&fresh_tenant()))
            .await
            .unwrap_err();
        assert!(matches!(error, SinkError::Unavailable(_)), "{error}");
        assert!(error.to_string().contains("local sink"), "{error}");
        fs::remove_dir_all(root).unwrap();
    }
}
