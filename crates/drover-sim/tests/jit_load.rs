//! LM Studio loads an available but unloaded model on its first request,
//! once, taking the load time; loaded models answer at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use drover_sim::{Dialect, SimConfig};
use http::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

// Long enough that concurrent first requests all arrive during the load.
const LOAD_TIME: Duration = Duration::from_millis(800);

fn lmstudio() -> SimConfig {
    SimConfig {
        dialect: Dialect::LmStudio,
        models: vec!["warm".into(), "cold".into()],
        loaded: vec!["warm".into()],
        slots: 4,
        load_time: LOAD_TIME,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn first_request_loads_the_model_once() {
    let sim = start(lmstudio()).await;
    let (_, model) = get(&sim, "/api/v0/models/cold").await;
    assert_eq!(model["state"], "not-loaded");

    let started = Instant::now();
    let mut requests = JoinSet::new();
    for i in 0..3 {
        let url = format!("{}/v1/chat/completions", sim.url());
        requests.spawn(async move {
            let body = chat("cold", &format!("{i}")).to_string();
            call(&client(), http::Method::POST, &url, Some(&body)).await
        });
    }
    // All three wait for the same load; none holds a slot meanwhile.
    let stats = wait_for(&sim, |s| s.model("cold").in_flight == 3).await;
    assert_eq!(stats.model("cold").active, 0);
    while let Some(joined) = within(requests.join_next()).await {
        assert_eq!(joined.unwrap().0, StatusCode::OK);
    }
    assert!(started.elapsed() >= LOAD_TIME);

    let stats = sim.stats();
    assert_eq!(stats.loads, 1);
    assert!(stats.model("cold").loaded);
    let (_, model) = get(&sim, "/api/v0/models/cold").await;
    assert_eq!(model["state"], "loaded");

    // Loaded now: no further load.
    post(&sim, "/v1/chat/completions", &chat("cold", "again")).await;
    assert_eq!(sim.stats().loads, 1);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn a_loaded_model_needs_no_load() {
    let sim = start(lmstudio()).await;
    let (status, _) = post(&sim, "/v1/chat/completions", &chat("warm", "hi")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.stats().loads, 0);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn unloading_makes_the_next_request_load_again() {
    let sim = start(lmstudio()).await;
    sim.set_loaded("warm", false).unwrap();
    assert!(!sim.stats().model("warm").loaded);
    post(&sim, "/v1/chat/completions", &chat("warm", "hi")).await;
    assert_eq!(sim.stats().loads, 1);
    assert!(sim.set_loaded("nope", true).is_err());
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn load_and_unload_endpoints() {
    let sim = start(lmstudio()).await;
    let (status, loaded) = post(
        &sim,
        "/api/v1/models/load",
        &json!({ "model": "cold", "echo_load_config": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(loaded["type"], "llm");
    assert_eq!(loaded["instance_id"], "cold");
    assert_eq!(loaded["status"], "loaded");
    assert!(loaded["load_time_seconds"].as_f64().unwrap() >= LOAD_TIME.as_secs_f64());
    assert_eq!(loaded["load_config"]["parallel"], 4);
    assert_eq!(sim.stats().loads, 1);

    let (status, unloaded) = post(
        &sim,
        "/api/v1/models/unload",
        &json!({ "instance_id": "cold" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unloaded["instance_id"], "cold");
    assert!(!sim.stats().model("cold").loaded);

    let (status, _) = post(
        &sim,
        "/api/v1/models/unload",
        &json!({ "instance_id": "cold" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = post(&sim, "/api/v1/models/load", &json!({ "model": "nope" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "model_not_found");
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn openai_dialect_treats_every_model_as_loaded() {
    let sim = start(SimConfig {
        dialect: Dialect::OpenAi,
        ..lmstudio()
    })
    .await;
    assert!(sim.stats().model("cold").loaded);
    post(&sim, "/v1/chat/completions", &chat("cold", "hi")).await;
    assert_eq!(sim.stats().loads, 0);
    within(sim.shutdown()).await;
}
