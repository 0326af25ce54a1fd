//! A refusing simulator really stops listening (connects fail with
//! ECONNREFUSED, pooled connections close), and comes back on the same port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use drover_sim::SimConfig;
use http::{Method, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;

#[tokio::test]
async fn refused_connections_then_resumed_on_the_same_port() {
    let sim = start(SimConfig::default()).await;
    let pooled = client();
    let url = format!("{}/v1/chat/completions", sim.url());
    let body = chat("sim-model", "hi").to_string();
    let (status, _) = call(&pooled, Method::POST, &url, Some(&body)).await;
    assert_eq!(status, StatusCode::OK);

    within(sim.refuse_connections(true)).await.unwrap();
    let error = TcpStream::connect(sim.addr()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    // The pooled connection is closed too, so the client can't get through.
    let request = http::Request::post(&url)
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    assert!(within(pooled.request(request)).await.is_err());

    within(sim.refuse_connections(false)).await.unwrap();
    let (status, _) = call(&pooled, Method::POST, &url, Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn answers_in_progress_finish_when_refusing() {
    let sim = start(SimConfig {
        ttft: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", sim.url());
    let request = tokio::spawn(async move {
        let body = chat("sim-model", "hi").to_string();
        call(&client(), Method::POST, &url, Some(&body)).await
    });
    wait_for(&sim, |s| s.model("sim-model").active == 1).await;
    within(sim.refuse_connections(true)).await.unwrap();
    let (status, answer) = within(request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["object"], "chat.completion");
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn refusing_twice_and_resuming_twice_are_harmless() {
    let sim = start(SimConfig::default()).await;
    within(sim.refuse_connections(true)).await.unwrap();
    within(sim.refuse_connections(true)).await.unwrap();
    within(sim.refuse_connections(false)).await.unwrap();
    within(sim.refuse_connections(false)).await.unwrap();
    let (status, _) = get(&sim, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    within(sim.shutdown()).await;
}
