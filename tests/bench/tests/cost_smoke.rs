//! The cost bench's measurement, small and without latency: both paths complete every pair,
//! bill each invocation, and count the AWS calls a run makes. (The bench itself is run by hand:
//! `scripts/bench-cost`.)

use std::sync::Arc;

use defender_emulator::Latency;
use defender_partner_bench::cost::TemplateDefaults;
use defender_partner_bench::fleet_cost::{CostBench, FleetPath, measure};
use defender_partner_bench::metered::{AwsLatency, Billing};

fn bench(path: FleetPath) -> CostBench {
    let template = TemplateDefaults::read(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"))
            .unwrap(),
    )
    .unwrap();
    CostBench {
        tenants: 5,
        path,
        template: TemplateDefaults {
            // Five tenants fan out only below the default threshold.
            fanout_threshold: 0,
            ..template
        },
        latency: Latency::default(),
        aws: AwsLatency::default(),
        concurrency: None,
        // Every tenant changes: every pair delivers.
        changes: vec![1],
        cold: true,
        seed: 1,
        log_size: Arc::new(|| 0),
    }
}

#[tokio::test]
async fn both_paths_are_measured_and_counted() {
    for path in [FleetPath::InInvocation, FleetPath::FanOut] {
        let bench = bench(path);
        let pairs = 5 * bench.template.sources.len();
        let runs = measure(&bench).await.unwrap();
        let kinds: Vec<_> = runs.iter().map(|run| run.kind).collect();
        assert_eq!(kinds, ["cold", "warm"], "{path:?}");
        let (cold, warm) = (&runs[0], &runs[1]);
        for run in &runs {
            assert_eq!(run.pairs, pairs, "{path:?}");
            assert_eq!(run.changed_incidents, 5);
            assert!(run.delivered >= 5, "{path:?}: {run:?}");
            assert!(run.api_calls >= pairs, "{path:?}: {run:?}");
            let usage = run.usage();
            // Per pair at least: the tenant read, the lease taken and released.
            assert!(usage.dynamodb_reads >= pairs as f64, "{path:?}: {run:?}");
            assert!(
                usage.dynamodb_writes >= 2.0 * pairs as f64,
                "{path:?}: {run:?}"
            );
            assert!(
                usage.s3_puts >= 1.0 && usage.events >= 5.0,
                "{path:?}: {run:?}"
            );
            assert!(usage.billed_ms >= 1.0);
        }
        assert!(
            cold.token_requests >= 5,
            "{path:?}: every tenant's token fetched"
        );
        assert_eq!(warm.token_requests, 0, "{path:?}: the tokens are cached");
        match path {
            FleetPath::InInvocation => {
                assert_eq!(warm.invocations.len(), 1);
                assert_eq!(warm.usage().sqs_requests, 0.0);
            }
            FleetPath::FanOut => {
                let batches = pairs.div_ceil(bench.template.batch_size);
                assert_eq!(warm.invocations.len(), 1 + batches);
                let sent = warm.aws[&(Billing::SqsRequest, "SQS SendMessageBatch")];
                assert_eq!(sent.items as usize, pairs);
            }
        }
    }
}
