//! A client that goes away before its answer is done shows up in
//! `cancelled`, wherever the request was: queued, before the first token,
//! or mid-stream. This is what the hub's tests rely on to see that a client
//! disconnect reaches the backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use drover_sim::{SimConfig, SimHandle};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn spawn_chat(sim: &SimHandle, body: serde_json::Value) -> tokio::task::JoinHandle<()> {
    let url = format!("{}/v1/chat/completions", sim.url());
    tokio::spawn(async move {
        let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
        let _ = response.into_body().collect().await;
    })
}

#[tokio::test]
async fn disconnect_before_the_first_token_is_cancelled() {
    let sim = start(SimConfig {
        ttft: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let request = spawn_chat(&sim, chat("sim-model", "hi"));
    wait_for(&sim, |s| s.model("sim-model").active == 1).await;
    // Dropping the client's request future closes its connection.
    request.abort();
    let stats = wait_for(&sim, |s| s.model("sim-model").cancelled == 1).await;
    let model = stats.model("sim-model");
    assert_eq!((model.in_flight, model.active, model.completed), (0, 0, 0));
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn disconnect_while_queued_is_cancelled_and_frees_the_queue() {
    let sim = start(slow_config(1)).await;
    let blocker = hold_slot(&sim, "sim-model").await;
    let queued = spawn_chat(&sim, quick("sim-model", "queued"));
    wait_for(&sim, |s| s.model("sim-model").in_flight == 2).await;
    queued.abort();
    let stats = wait_for(&sim, |s| s.model("sim-model").cancelled == 1).await;
    assert_eq!(stats.model("sim-model").active, 1, "the blocker still runs");

    // The abandoned place in the queue doesn't hold up the next request.
    drop(blocker);
    wait_for(&sim, |s| s.model("sim-model").active == 0).await;
    let (status, _) = post(&sim, "/v1/chat/completions", &quick("sim-model", "next")).await;
    assert_eq!(status, StatusCode::OK);
    let model = sim.stats().model("sim-model");
    assert_eq!(
        (model.cancelled, model.completed, model.max_active),
        (2, 1, 1)
    );
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn disconnect_mid_stream_is_cancelled() {
    let sim = start(SimConfig {
        output_tokens: 100,
        tokens_per_sec: 20.0,
        ..SimConfig::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", sim.url());
    let body = json!({
        "model": "sim-model",
        "messages": [{ "role": "user", "content": "hi" }],
        "stream": true,
    });
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body();
    // The role chunk and a token or two, then the client leaves.
    within(stream.frame()).await.unwrap().unwrap();
    within(stream.frame()).await.unwrap().unwrap();
    drop(stream);
    let stats = wait_for(&sim, |s| s.model("sim-model").cancelled == 1).await;
    let model = stats.model("sim-model");
    assert_eq!((model.in_flight, model.active, model.completed), (0, 0, 0));
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn a_finished_request_is_not_cancelled() {
    let sim = start(SimConfig::default()).await;
    post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    let mut body = chat("sim-model", "hi");
    body["stream"] = json!(true);
    post_stream_and_read(&sim, &body).await;
    let stats = wait_for(&sim, |s| s.model("sim-model").completed == 2).await;
    assert_eq!(stats.model("sim-model").cancelled, 0);
    within(sim.shutdown()).await;
}

async fn post_stream_and_read(sim: &SimHandle, body: &serde_json::Value) {
    let url = format!("{}/v1/chat/completions", sim.url());
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    let bytes = body_bytes(response).await;
    assert!(bytes.ends_with(b"data: [DONE]\n\n"));
}

/// A server busy writing an answer doesn't read its socket, so it learns
/// that the client left only when a write fails, at its next token. Until
/// then the abandoned request holds its slot, and a request that arrives
/// meanwhile counts in `in_flight` beside it: what lets `max_in_flight`
/// catch a proxy that hands a slot on before the server has let go of it.
#[tokio::test]
async fn a_client_gone_mid_stream_is_noticed_only_at_the_next_write() {
    let sim = start(SimConfig {
        output_tokens: 100,
        tokens_per_sec: 2.0,
        ..SimConfig::default()
    })
    .await;
    let mut socket = within(TcpStream::connect(sim.addr())).await.unwrap();
    let mut body = chat("sim-model", "leave early");
    body["stream"] = json!(true);
    let body = body.to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    within(socket.write_all(request.as_bytes())).await.unwrap();
    // The role chunk and the first token, which is due at once; the next
    // one is half a second away.
    let mut received = Vec::new();
    while received.windows(6).filter(|w| w == b"data: ").count() < 2 {
        let mut buf = [0; 4096];
        let n = within(socket.read(&mut buf)).await.unwrap();
        assert!(
            n > 0,
            "closed early: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    drop(socket);

    // By the time the simulator has read a request on another connection,
    // it would long have seen the closed socket, were it reading it.
    let url = format!("{}/v1/chat/completions", sim.url());
    let queued = tokio::spawn(async move {
        let body = quick("sim-model", "next").to_string();
        call(&client(), Method::POST, &url, Some(&body)).await
    });
    let stats = wait_for(&sim, |s| s.requests_total == 2).await;
    let model = stats.model("sim-model");
    assert_eq!(
        (model.in_flight, model.active, model.cancelled),
        (2, 1, 0),
        "the abandoned stream still holds its slot: {model:?}"
    );

    // Its next writes fail; the slot goes to the waiting request.
    let stats = wait_for(&sim, |s| s.model("sim-model").completed == 1).await;
    let model = stats.model("sim-model");
    assert_eq!(
        (
            model.in_flight,
            model.cancelled,
            model.max_in_flight,
            model.max_active
        ),
        (0, 1, 2, 1)
    );
    let (status, _) = within(queued).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    within(sim.shutdown()).await;
}
