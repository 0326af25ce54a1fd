//! Each injected fault does what it says, is counted, and is chosen the same
//! way on every run with the same seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use drover_sim::{Faults, SimConfig, SimHandle};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

fn with_faults(faults: Faults) -> SimConfig {
    SimConfig {
        output_tokens: 8,
        faults,
        ..SimConfig::default()
    }
}

fn streamed(content: &str) -> Value {
    let mut body = chat("sim-model", content);
    body["stream"] = json!(true);
    body
}

#[tokio::test]
async fn error_fault_answers_500_in_the_openai_shape() {
    let sim = start(with_faults(Faults {
        error_rate: 1.0,
        ..Faults::NONE
    }))
    .await;
    for body in [chat("sim-model", "hi"), streamed("hi")] {
        let (status, error) = post(&sim, "/v1/chat/completions", &body).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error["error"]["type"], "server_error");
        assert!(error["error"]["message"].is_string());
    }
    let stats = sim.stats();
    assert_eq!(stats.injected_errors, 2);
    let model = stats.model("sim-model");
    assert_eq!(
        (model.completed, model.cancelled, model.max_active),
        (0, 0, 0)
    );
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn hang_fault_never_answers_until_the_client_leaves() {
    let sim = start(with_faults(Faults {
        hang_rate: 1.0,
        ..Faults::NONE
    }))
    .await;
    let url = format!("{}/v1/chat/completions", sim.url());
    let request = tokio::spawn(async move {
        let body = chat("sim-model", "hi").to_string();
        send(&client(), Method::POST, &url, Some(&body)).await
    });
    let stats = wait_for(&sim, |s| s.hangs == 1).await;
    assert_eq!(stats.model("sim-model").in_flight, 1);
    assert!(!request.is_finished());
    // A hang holds no slot: other requests are not stuck behind it.
    sim.set_faults(Faults::NONE);
    let (status, _) = post(&sim, "/v1/chat/completions", &chat("sim-model", "next")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!request.is_finished());

    request.abort();
    let stats = wait_for(&sim, |s| s.model("sim-model").in_flight == 0).await;
    assert_eq!(stats.model("sim-model").cancelled, 1);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn shutdown_cuts_off_hung_requests() {
    let sim = start(with_faults(Faults {
        hang_rate: 1.0,
        ..Faults::NONE
    }))
    .await;
    let url = format!("{}/v1/chat/completions", sim.url());
    let request = tokio::spawn(async move {
        let body = chat("sim-model", "hi").to_string();
        let request = http::Request::post(url)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        client().request(request).await
    });
    wait_for(&sim, |s| s.hangs == 1).await;
    within(sim.shutdown()).await;
    let outcome = within(request).await.unwrap();
    assert!(
        outcome.is_err(),
        "a hung request must end without an answer"
    );
}

async fn read_until_cut(sim: &SimHandle, body: &Value) -> (StatusCode, String, bool) {
    let url = format!("{}/v1/chat/completions", sim.url());
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    let status = response.status();
    let mut stream = response.into_body();
    let mut received = Vec::new();
    let cut = loop {
        match within(stream.frame()).await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    (status, String::from_utf8(received).unwrap(), cut)
}

#[tokio::test]
async fn close_mid_stream_kills_a_stream_after_its_first_chunks() {
    let sim = start(with_faults(Faults {
        close_mid_stream_rate: 1.0,
        ..Faults::NONE
    }))
    .await;
    let (status, received, cut) = read_until_cut(&sim, &streamed("hi")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cut, "the stream must end in an error, not cleanly");
    assert!(!received.contains("[DONE]"));
    assert!(!received.contains("finish_reason\":\"stop"));
    let chunks = sse_data(&received);
    // The role chunk and half of the 8 tokens got through.
    assert_eq!(chunks.len(), 5, "{received}");
    assert!(chunks[0].contains("\"role\":\"assistant\""));

    let stats = wait_for(&sim, |s| s.mid_stream_closes == 1).await;
    let model = stats.model("sim-model");
    assert_eq!((model.in_flight, model.active), (0, 0));
    assert_eq!((model.completed, model.cancelled), (0, 0));
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn close_mid_stream_kills_a_plain_answer_after_its_headers() {
    let sim = start(with_faults(Faults {
        close_mid_stream_rate: 1.0,
        ..Faults::NONE
    }))
    .await;
    let (status, received, cut) = read_until_cut(&sim, &chat("sim-model", "hi")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cut);
    assert_eq!(received, "");
    wait_for(&sim, |s| s.mid_stream_closes == 1).await;
    within(sim.shutdown()).await;
}

/// Sends `n` requests one after another and records each outcome.
async fn outcomes(sim: &SimHandle, n: usize) -> Vec<&'static str> {
    let mut seen = Vec::new();
    for i in 0..n {
        let (status, _, cut) = read_until_cut(sim, &chat("sim-model", &format!("{i}"))).await;
        seen.push(match (status, cut) {
            (StatusCode::OK, false) => "ok",
            (StatusCode::OK, true) => "cut",
            (StatusCode::INTERNAL_SERVER_ERROR, _) => "error",
            _ => "other",
        });
    }
    seen
}

#[tokio::test]
async fn faults_are_deterministic_per_seed() {
    let faults = Faults {
        error_rate: 0.3,
        close_mid_stream_rate: 0.3,
        ..Faults::NONE
    };
    let config = || SimConfig {
        seed: 11,
        ..with_faults(faults)
    };
    let a = start(config()).await;
    let b = start(config()).await;
    let first = outcomes(&a, 30).await;
    assert_eq!(first, outcomes(&b, 30).await);
    for kind in ["ok", "cut", "error"] {
        assert!(first.contains(&kind), "{first:?}");
    }
    // A reset restarts the sequence, and with it the pattern.
    a.reset_stats();
    assert_eq!(first, outcomes(&a, 30).await);
    within(a.shutdown()).await;
    within(b.shutdown()).await;
}

#[tokio::test]
async fn faults_can_change_while_running() {
    let sim = start(SimConfig::default()).await;
    let (status, _) = post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    assert_eq!(status, StatusCode::OK);
    let errors = Faults {
        error_rate: 1.0,
        ..Faults::NONE
    };
    sim.set_faults(errors);
    assert_eq!(sim.faults(), errors);
    let (status, _) = post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    sim.set_faults(Faults::NONE);
    let (status, _) = post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    assert_eq!(status, StatusCode::OK);
    within(sim.shutdown()).await;
}
