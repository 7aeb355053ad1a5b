//! What the ingestion tests assert about delivered records: each change once, nothing the API
//! holds missing.

use std::collections::{HashMap, HashSet};

use defender_partner::defender::Source;
use defender_partner::sink::SinkLine;

/// No record key was delivered twice.
#[track_caller]
pub fn keys_once(lines: &[SinkLine]) {
    let mut seen = HashSet::new();
    for line in lines {
        assert!(seen.insert(&line.key), "{} delivered twice", line.key);
    }
}

/// A tenant's lines of one source.
pub fn lines_of<'a>(lines: &'a [SinkLine], tenant: &str, source: Source) -> Vec<&'a SinkLine> {
    lines
        .iter()
        .filter(|line| line.tenant_id.as_str() == tenant && line.source == source)
        .collect()
}

/// Every (id, last-update) the API holds now (`truth`) is in the sink.
#[track_caller]
pub fn nothing_missing(
    lines: &[SinkLine],
    tenant: &str,
    source: Source,
    truth: &HashMap<String, String>,
) {
    let delivered: HashSet<(&str, &str)> = lines_of(lines, tenant, source)
        .into_iter()
        .map(|line| (line.id.as_str(), line.last_update_time.as_str()))
        .collect();
    let missing: Vec<&String> = truth
        .iter()
        .filter(|(id, time)| !delivered.contains(&(id.as_str(), time.as_str())))
        .map(|(id, _)| id)
        .collect();
    assert!(
        missing.is_empty(),
        "{tenant} {source}: {} of {} records missing, e.g. {:?}",
        missing.len(),
        truth.len(),
        &missing[..missing.len().min(5)]
    );
}
