//! Injected latency: the data APIs and the token endpoint wait as set (lower bounds only: a
//! loaded machine may add to any wait), the control API never does, and "0" turns it off.

mod common;
mod defender_common;

use std::time::{Duration, Instant};

use common::*;
use defender_common::*;
use defender_emulator::{Latency, LatencyRange};
use serde_json::json;

async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = call.await;
    (value, started.elapsed())
}

#[tokio::test]
async fn data_calls_and_token_requests_wait_at_least_their_minimum() {
    let emulator = start_with_data(data(3, 0)).await;
    // Through the control API, as a test of another process sets it.
    let answer = answer(
        client()
            .put(format!("{}/_emulator/settings", emulator.base_url()))
            .json(&json!({"api_latency_ms": "250-300", "token_latency_ms": "120"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 204, "{}", answer.text);
    assert_eq!(
        emulator.handle().latency(),
        Latency {
            api: Some(LatencyRange::new(250, 300).unwrap()),
            token: Some(LatencyRange::new(120, 120).unwrap()),
        }
    );

    let (token, waited) = timed(contoso_token(&emulator, GRAPH)).await;
    assert!(
        waited >= Duration::from_millis(120),
        "token after {waited:?}"
    );
    let (page, waited) = timed(api(&emulator, Some(&token), "/v1.0/security/incidents")).await;
    assert_eq!(page.status.as_u16(), 200, "{}", page.text);
    assert_eq!(values(&page).len(), 3);
    assert!(
        waited >= Duration::from_millis(250),
        "Graph page after {waited:?}"
    );

    // Only the data wait is changed; the token's stays.
    emulator.handle().set_latency(Latency {
        api: Some(LatencyRange::new(0, 0).unwrap()),
        ..emulator.handle().latency()
    });
    let (page, _) = timed(api(&emulator, Some(&token), "/v1.0/security/incidents")).await;
    assert_eq!(page.status.as_u16(), 200);
    let (_, waited) = timed(contoso_token(&emulator, GRAPH)).await;
    assert!(
        waited >= Duration::from_millis(120),
        "token after {waited:?}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_malformed_range_is_refused() {
    let emulator = start_demo().await;
    let answer = answer(
        client()
            .put(format!("{}/_emulator/settings", emulator.base_url()))
            .json(&json!({"api_latency_ms": "400-200"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 400, "{}", answer.text);
    assert_eq!(emulator.handle().latency(), Latency::default());
    emulator.shutdown().await;
}
