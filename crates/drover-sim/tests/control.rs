//! The control surface: `/_sim/stats`, `/_sim/reset`, and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use drover_sim::{SimConfig, SimServer};
use http::StatusCode;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn stats_are_served_as_json_and_reset_zeroes_them() {
    let sim = start(SimConfig::default()).await;
    post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    post(&sim, "/v1/chat/completions", &chat("sim-model", "again")).await;
    wait_for(&sim, |s| s.model("sim-model").completed == 2).await;

    let (status, stats) = get(&sim, "/_sim/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats, serde_json::to_value(sim.stats()).unwrap());
    assert_eq!(stats["requests_total"], 2);
    for field in ["injected_errors", "hangs", "mid_stream_closes", "loads"] {
        assert_eq!(stats[field], 0, "{field}");
    }
    assert_eq!(
        stats["models"]["sim-model"],
        json!({
            "loaded": true,
            "in_flight": 0,
            "max_in_flight": 1,
            "active": 0,
            "max_active": 1,
            "completed": 2,
            "cancelled": 0,
            "loads": 0,
            "unloads": 0,
        })
    );

    let (status, _) = post(&sim, "/_sim/reset", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let stats = sim.stats();
    assert_eq!(stats.requests_total, 0);
    assert_eq!(
        stats.model("sim-model"),
        drover_sim::ModelStats {
            loaded: true,
            ..Default::default()
        }
    );
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn shutdown_lets_answers_in_progress_finish() {
    let sim = start(SimConfig {
        ttft: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let addr = sim.addr();
    let url = format!("{}/v1/chat/completions", sim.url());
    let request = tokio::spawn(async move {
        let body = chat("sim-model", "hi").to_string();
        call(&client(), http::Method::POST, &url, Some(&body)).await
    });
    wait_for(&sim, |s| s.model("sim-model").active == 1).await;
    within(sim.shutdown()).await;
    let (status, answer) = within(request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["object"], "chat.completion");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bad_configurations_are_rejected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let no_slots = SimConfig {
        slots: 0,
        ..SimConfig::default()
    };
    assert!(matches!(
        SimServer::start(listener, no_slots),
        Err(drover_sim::SimError::NoSlots)
    ));
}

#[tokio::test]
async fn run_serves_until_cancelled() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: drover_sim::SimArgs,
    }
    let args = Cli::try_parse_from(["sim", "--dialect", "openai", "--listen", "127.0.0.1:0"])
        .unwrap()
        .sim;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(drover_sim::run(args, shutdown.clone()));
    shutdown.cancel();
    within(running).await.unwrap().unwrap();

    // A port that is taken is an error, not a panic.
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let args = Cli::try_parse_from(["sim", "--listen", &listen])
        .unwrap()
        .sim;
    let error = within(drover_sim::run(
        args,
        tokio_util::sync::CancellationToken::new(),
    ))
    .await
    .unwrap_err();
    assert!(error.to_string().contains(&listen), "{error:#}");
}
