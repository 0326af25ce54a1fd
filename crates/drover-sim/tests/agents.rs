//! The coding agents' paths: the Responses API (stored responses that only
//! this server can continue) and Anthropic's Messages API, plain and
//! streamed, where the dialect serves them, and the `cannot_generate`
//! fault in each path's error shape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use drover_sim::{Dialect, Faults, SimConfig};
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn lmstudio() -> SimConfig {
    SimConfig {
        dialect: Dialect::LmStudio,
        loaded: vec!["sim-model".into()],
        output_tokens: 5,
        ..SimConfig::default()
    }
}

/// `(event, data)` pairs of a typed SSE stream.
fn typed_events(body: &str) -> Vec<(String, Value)> {
    assert!(body.ends_with("\n\n"), "unterminated: {body:?}");
    body.trim_end()
        .split("\n\n")
        .map(|event| {
            let (kind, data) = event.split_once('\n').unwrap();
            let kind = kind.strip_prefix("event: ").unwrap().to_string();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (kind, data)
        })
        .collect()
}

async fn stream(sim: &drover_sim::SimHandle, path: &str, body: &Value) -> String {
    let url = format!("{}{path}", sim.url());
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    assert_eq!(response.status(), StatusCode::OK);
    String::from_utf8(body_bytes(response).await.to_vec()).unwrap()
}

#[tokio::test]
async fn responses_plain_and_streamed_and_only_this_server_continues_them() {
    let sim = start(lmstudio()).await;
    let (status, r) = post(
        &sim,
        "/v1/responses",
        &json!({"model": "sim-model", "input": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    let id = r["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"));
    assert_eq!(r["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(r["usage"]["output_tokens"], 5);

    let body =
        json!({"model": "sim-model", "input": "more", "previous_response_id": id, "stream": true});
    let events = typed_events(&stream(&sim, "/v1/responses", &body).await);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds[0], "response.created");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "response.output_text.delta")
            .count(),
        5
    );
    assert_eq!(*kinds.last().unwrap(), "response.completed");
    for (i, (kind, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], kind.as_str());
        assert_eq!(data["sequence_number"], i as u64, "{kind}");
    }
    let done = &events.last().unwrap().1["response"];
    let text = done["output"][0]["content"][0]["text"].as_str().unwrap();
    let deltas: String = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, deltas);
    assert_eq!(sim.stats().continuations, 1);

    let (status, err) = post(
        &sim,
        "/v1/responses",
        &json!({"model": "sim-model", "input": "x", "previous_response_id": "resp_elsewhere"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "previous_response_not_found");
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn messages_plain_streamed_and_counted_with_anthropic_errors() {
    let sim = start(lmstudio()).await;
    let body = json!({"model": "sim-model", "max_tokens": 3, "system": "be brief",
                      "messages": [{"role": "user", "content": "hi"}]});
    let (status, m) = post(&sim, "/v1/messages", &body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0]["type"], "text");
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["usage"]["output_tokens"], 3);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = typed_events(&stream(&sim, "/v1/messages", &streamed).await);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &kinds[..3],
        ["message_start", "content_block_start", "ping"]
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "content_block_delta")
            .count(),
        3
    );
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );

    let (status, n) = post(&sim, "/v1/messages/count_tokens", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(n["input_tokens"].as_u64().unwrap() > 0);

    let (status, err) = post(
        &sim,
        "/v1/messages",
        &json!({"model": "nope", "max_tokens": 1, "messages": []}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "not_found_error");
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn a_generic_server_does_not_serve_the_agents_paths() {
    let sim = start(SimConfig::default()).await;
    for path in ["/v1/responses", "/v1/messages", "/v1/messages/count_tokens"] {
        let (status, _) = post(&sim, path, &json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn a_server_that_cannot_generate_still_lists_its_models() {
    let sim = start(lmstudio()).await;
    sim.set_faults(Faults {
        cannot_generate: true,
        ..Faults::NONE
    });
    let (status, list) = get(&sim, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], "sim-model");
    let (status, err) = post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err["error"]["type"], "server_error");
    let (status, err) = post(
        &sim,
        "/v1/messages",
        &json!({"model": "sim-model", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err["error"]["type"], "api_error");
    assert_eq!(sim.stats().injected_errors, 2);
    sim.set_faults(Faults::NONE);
    let (status, _) = post(&sim, "/v1/chat/completions", &chat("sim-model", "hi")).await;
    assert_eq!(status, StatusCode::OK);
    within(sim.shutdown()).await;
}
