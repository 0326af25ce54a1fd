//! Bad input gets the OpenAI error shape: 400 for a malformed request, 404
//! with `model_not_found` for an unknown model, and no panic either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use drover_sim::{SimConfig, SimHandle};
use http::{Method, StatusCode};
use serde_json::{Value, json};

async fn raw_post(sim: &SimHandle, path: &str, body: &str) -> (StatusCode, Value) {
    let url = format!("{}{path}", sim.url());
    call(&client(), Method::POST, &url, Some(body)).await
}

fn assert_error_shape(error: &Value, kind: &str) {
    let detail = &error["error"];
    assert!(
        detail["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert_eq!(detail["type"], kind, "{error}");
    assert!(
        detail.get("param").is_some(),
        "param must be present: {error}"
    );
    assert!(
        detail.get("code").is_some(),
        "code must be present: {error}"
    );
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let sim = start(SimConfig::default()).await;
    let cases = [
        ("/v1/chat/completions", "{not json", Value::Null),
        ("/v1/chat/completions", "", Value::Null),
        ("/v1/chat/completions", "[1, 2]", Value::Null),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            json!("model"),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"","messages":[]}"#,
            json!("model"),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"sim-model"}"#,
            json!("messages"),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"sim-model","messages":[]}"#,
            json!("messages"),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"sim-model","messages":[],"stream":"yes"}"#,
            Value::Null,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"sim-model","messages":[{"content":"x"}],"max_tokens":-5}"#,
            Value::Null,
        ),
        (
            "/v1/completions",
            r#"{"model":"sim-model"}"#,
            json!("prompt"),
        ),
        (
            "/v1/completions",
            r#"{"model":"sim-model","prompt":{"x":1}}"#,
            Value::Null,
        ),
        ("/v1/embeddings", r#"{"model":"sim-model"}"#, json!("input")),
        (
            "/v1/embeddings",
            r#"{"model":"sim-model","input":[]}"#,
            json!("input"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"sim-model","input":[[1,2]]}"#,
            Value::Null,
        ),
    ];
    for (path, body, param) in cases {
        let (status, error) = raw_post(&sim, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {error}");
        assert_error_shape(&error, "invalid_request_error");
        assert_eq!(error["error"]["param"], param, "{path} {body}");
    }
    // Nothing reached a model.
    let stats = sim.stats().model("sim-model");
    assert_eq!(
        (stats.max_in_flight, stats.completed, stats.cancelled),
        (0, 0, 0)
    );
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let sim = start(SimConfig::default()).await;
    for (path, body) in [
        ("/v1/chat/completions", chat("no-such-model", "hi")),
        (
            "/v1/completions",
            json!({ "model": "no-such-model", "prompt": "hi" }),
        ),
        (
            "/v1/embeddings",
            json!({ "model": "no-such-model", "input": "hi" }),
        ),
    ] {
        let (status, error) = post(&sim, path, &body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error_shape(&error, "invalid_request_error");
        assert_eq!(error["error"]["code"], "model_not_found");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no-such-model")
        );
    }
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn unknown_endpoints_are_404() {
    let sim = start(SimConfig::default()).await;
    let (status, error) = get(&sim, "/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&error, "invalid_request_error");
    let (status, _) = get(&sim, "/v1/chat/completions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The OpenAI dialect has no LM Studio endpoints.
    let (status, _) = get(&sim, "/api/v0/models").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn invalid_requests_count_as_requests() {
    let sim = start(SimConfig::default()).await;
    raw_post(&sim, "/v1/chat/completions", "nope").await;
    post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    assert_eq!(sim.stats().requests_total, 2);
    within(sim.shutdown()).await;
}
