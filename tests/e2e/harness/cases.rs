//! Named cases run one after the other against one started stack.
//!
//! Starting moto, the emulator and `cargo lambda watch` takes seconds, so one `#[tokio::test]`
//! starts them once and runs many cases. Each case runs as its own task: a failing assertion
//! fails that case only, the others still run, and the test fails at the end naming every
//! failed case. `E2E_CASES=name,other` (substrings) runs only the matching cases.

use std::future::Future;
use std::time::Instant;

/// The outcome of the cases run so far.
pub struct Cases {
    filter: Option<Vec<String>>,
    passed: Vec<String>,
    failed: Vec<(String, String)>,
    skipped: usize,
}

impl Default for Cases {
    fn default() -> Self {
        Cases::from_env()
    }
}

impl Cases {
    /// Reads the `E2E_CASES` filter.
    pub fn from_env() -> Cases {
        let filter = std::env::var("E2E_CASES").ok().and_then(|text| {
            let names: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
            (!names.is_empty()).then_some(names)
        });
        Cases {
            filter,
            passed: Vec::new(),
            failed: Vec::new(),
            skipped: 0,
        }
    }

    fn selected(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|names| names.iter().any(|wanted| name.contains(wanted.as_str())))
    }

    /// Runs one case to completion; a panic inside it is recorded, not propagated.
    pub async fn run<F>(&mut self, name: &str, case: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if !self.selected(name) {
            self.skipped += 1;
            return;
        }
        eprintln!("--- case {name}");
        let started = Instant::now();
        let outcome = tokio::spawn(case).await;
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                eprintln!("--- case {name}: ok ({seconds:.1}s)");
                self.passed.push(name.to_owned());
            }
            Err(error) => {
                let message = if error.is_panic() {
                    let payload = error.into_panic();
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "panicked".to_owned())
                } else {
                    error.to_string()
                };
                eprintln!("--- case {name}: FAILED ({seconds:.1}s)");
                self.failed.push((name.to_owned(), message));
            }
        }
    }

    /// Prints the summary and panics if any case failed.
    pub fn finish(self) {
        eprintln!(
            "=== cases: {} passed, {} failed, {} filtered out",
            self.passed.len(),
            self.failed.len(),
            self.skipped
        );
        if !self.failed.is_empty() {
            let report: Vec<String> = self
                .failed
                .iter()
                .map(|(name, message)| format!("  {name}: {message}"))
                .collect();
            panic!(
                "{} of {} cases failed:\n{}",
                self.failed.len(),
                self.failed.len() + self.passed.len(),
                report.join("\n")
            );
        }
        assert!(
            !self.passed.is_empty(),
            "no case ran (E2E_CASES={:?} matched none)",
            self.filter
        );
    }
}
