//! What a test's tracing subscriber writes, kept for assertions (a secret must never reach it).

use std::sync::{Arc, Mutex};

/// A shared log buffer: the writer of a `tracing_subscriber::fmt()` subscriber
/// (`.with_writer(move || captured.clone())`), read back with [`Captured::text`].
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn every_clone_writes_to_one_buffer() {
        let captured = Captured::default();
        let mut writer = captured.clone();
        writer.write_all(b"one ").unwrap();
        captured.clone().write_all(b"two").unwrap();
        assert_eq!(captured.text(), "one two");
    }
}
