//! A model runs at most `slots` requests at once; the rest wait inside the
//! server and get their turn in arrival order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use drover_sim::SimConfig;
use http::StatusCode;
use tokio::task::JoinSet;

#[tokio::test]
async fn a_burst_never_exceeds_the_slots() {
    let sim = start(SimConfig {
        slots: 2,
        // Long enough that the whole burst is in before the first finishes.
        ttft: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await;
    let url = sim.url();
    let mut burst = JoinSet::new();
    for i in 0..6 {
        let url = url.clone();
        burst.spawn(async move {
            let body = chat("sim-model", &format!("request {i}")).to_string();
            let target = format!("{url}/v1/chat/completions");
            call(&client(), http::Method::POST, &target, Some(&body)).await
        });
    }
    // All six open at once while only two run: the other four wait inside.
    let stats = wait_for(&sim, |s| s.model("sim-model").in_flight == 6).await;
    assert_eq!(stats.model("sim-model").active, 2);

    while let Some(joined) = within(burst.join_next()).await {
        let (status, _) = joined.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let stats = wait_for(&sim, |s| s.model("sim-model").completed == 6).await;
    let model = stats.model("sim-model");
    assert_eq!(model.max_in_flight, 6);
    assert_eq!(model.max_active, 2);
    assert_eq!((model.in_flight, model.active, model.cancelled), (0, 0, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn waiting_requests_run_in_arrival_order() {
    let sim = start(SimConfig {
        slots: 1,
        // Each request holds the slot this long: ample time for the rest to
        // arrive while the first still runs.
        ttft: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let (finished_tx, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let mut requests = JoinSet::new();
    for i in 0..5u64 {
        let url = sim.url();
        let finished_tx = finished_tx.clone();
        requests.spawn(async move {
            let body = chat("sim-model", &format!("request {i}")).to_string();
            let target = format!("{url}/v1/chat/completions");
            let (status, _) = call(&client(), http::Method::POST, &target, Some(&body)).await;
            assert_eq!(status, StatusCode::OK);
            finished_tx.send(i).unwrap();
        });
        // The next request is sent only once this one is inside the server,
        // so the arrival order is known. On this single-threaded runtime the
        // handler has reached the slot queue by the time the waiter runs.
        wait_for(&sim, |s| s.model("sim-model").in_flight == i + 1).await;
    }
    drop(finished_tx);
    while let Some(joined) = within(requests.join_next()).await {
        joined.unwrap();
    }
    let mut order = Vec::new();
    while let Some(i) = finished.recv().await {
        order.push(i);
    }
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(sim.stats().model("sim-model").max_active, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn slots_are_per_model() {
    let sim = start(SimConfig {
        models: vec!["a".into(), "b".into()],
        slots: 1,
        ttft: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let mut requests = JoinSet::new();
    for model in ["a", "b"] {
        let url = sim.url();
        requests.spawn(async move {
            let body = chat(model, "hi").to_string();
            let target = format!("{url}/v1/chat/completions");
            call(&client(), http::Method::POST, &target, Some(&body)).await
        });
    }
    // One slot each, so both run together.
    wait_for(&sim, |s| {
        s.model("a").active == 1 && s.model("b").active == 1
    })
    .await;
    while let Some(joined) = within(requests.join_next()).await {
        assert_eq!(joined.unwrap().0, StatusCode::OK);
    }
    sim.shutdown().await;
}
