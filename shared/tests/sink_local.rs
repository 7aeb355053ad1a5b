//! The local folder sink passes the conformance suite every file sink passes (S3's run is in
//! `sink_moto.rs`).

use std::sync::Arc;

use defender_partner::sink::{LocalSink, RecordSink};
use defender_partner_testkit::conformance::sink::{self as conformance, LocalFiles};

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dp-sink-{}", uuid::Uuid::new_v4().simple()))
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let root = scratch();
    let sink = LocalSink::new(root.join("nested/sink"));
    conformance::run(&sink, &LocalFiles::new(sink.root())).await;
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_with_one_run_id_never_overwrite() {
    let root = scratch();
    // Two sinks (two processes) sharing one folder and one run id: their part counters
    // collide, the names must not.
    let sinks = [
        Arc::new(LocalSink::new(&root)),
        Arc::new(LocalSink::new(&root)),
    ];
    conformance::concurrent_writers_never_overwrite(
        sinks.map(|sink| sink as Arc<dyn RecordSink>),
        &LocalFiles::new(&root),
    )
    .await;
    std::fs::remove_dir_all(root).unwrap();
}
