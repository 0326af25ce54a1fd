//! A model runs at most `slots` requests at once; the rest wait inside the
//! server and get their turn in arrival order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinSet;

fn spawn_quick(
    requests: &mut JoinSet<(StatusCode, Value)>,
    sim: &drover_sim::SimHandle,
    model: &str,
    content: String,
) {
    let url = format!("{}/v1/chat/completions", sim.url());
    let body = quick(model, &content).to_string();
    requests.spawn(async move { call(&client(), Method::POST, &url, Some(&body)).await });
}

#[tokio::test]
async fn a_burst_never_exceeds_the_slots() {
    let sim = start(slow_config(2)).await;
    let blockers = [
        hold_slot(&sim, "sim-model").await,
        hold_slot(&sim, "sim-model").await,
    ];
    let mut burst = JoinSet::new();
    for i in 0..4 {
        spawn_quick(&mut burst, &sim, "sim-model", format!("request {i}"));
    }
    // Six open, two running: the other four wait inside the server.
    let stats = wait_for(&sim, |s| s.model("sim-model").in_flight == 6).await;
    assert_eq!(stats.model("sim-model").active, 2);
    assert_eq!(stats.model("sim-model").completed, 0);

    drop(blockers);
    while let Some(joined) = within(burst.join_next()).await {
        assert_eq!(joined.unwrap().0, StatusCode::OK);
    }
    // A blocker's departure is noticed at its stream's next write, which
    // may come after the burst has finished: wait for both.
    let stats = wait_for(&sim, |s| {
        let m = s.model("sim-model");
        m.completed == 4 && m.in_flight == 0
    })
    .await;
    let model = stats.model("sim-model");
    assert_eq!(model.max_in_flight, 6);
    assert_eq!(model.max_active, 2);
    assert_eq!(model.cancelled, 2, "the two blockers");
    assert_eq!((model.in_flight, model.active), (0, 0));
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn waiting_requests_run_in_arrival_order() {
    let sim = start(slow_config(1)).await;
    let blocker = hold_slot(&sim, "sim-model").await;
    let mut requests = JoinSet::new();
    for i in 0..5u64 {
        let url = format!("{}/v1/chat/completions", sim.url());
        let body = quick("sim-model", "hi").to_string();
        requests.spawn(async move { (i, call(&client(), Method::POST, &url, Some(&body)).await) });
        // The next request is sent only once this one is queued, so the
        // arrival order is known. On this single-threaded runtime the
        // handler has reached the slot queue by the time the waiter runs.
        wait_for(&sim, |s| s.model("sim-model").in_flight == i + 2).await;
    }
    drop(blocker);
    // Ids are handed out as requests leave the queue, so their order is
    // the service order, whatever order the clients see the answers in.
    let mut served = Vec::new();
    while let Some(joined) = within(requests.join_next()).await {
        let (arrival, (status, answer)) = joined.unwrap();
        assert_eq!(status, StatusCode::OK);
        let id = answer["id"].as_str().unwrap();
        let number: u64 = id.trim_start_matches("chatcmpl-").parse().unwrap();
        served.push((number, arrival));
    }
    served.sort_unstable();
    let order: Vec<u64> = served.into_iter().map(|(_, arrival)| arrival).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(sim.stats().model("sim-model").max_active, 1);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn slots_are_per_model() {
    let sim = start(drover_sim::SimConfig {
        models: vec!["a".into(), "b".into()],
        ..slow_config(1)
    })
    .await;
    let blocker = hold_slot(&sim, "a").await;
    // "a" is full, yet "b" answers at once.
    let (status, _) = post(&sim, "/v1/chat/completions", &quick("b", "hi")).await;
    assert_eq!(status, StatusCode::OK);
    let stats = sim.stats();
    assert_eq!(stats.model("a").active, 1);
    assert_eq!(stats.model("b").completed, 1);
    drop(blocker);
    within(sim.shutdown()).await;
}
