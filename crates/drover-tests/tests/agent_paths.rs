//! The coding agents' paths, `/v1/responses` and `/v1/messages`, at the
//! hub's edge: only backends that serve a path take its requests, and
//! errors on `/v1/messages` come in Anthropic's shape with the statuses an
//! Anthropic client expects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, openai};
use serde_json::json;

fn anthropic_body(model: &str) -> serde_json::Value {
    json!({
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    })
}

fn assert_anthropic_error(r: &drover_tests::Reply, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().len() > 10,
        "{body}"
    );
    assert!(body.get("code").is_none(), "not the OpenAI shape: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_errors_are_in_anthropics_shape() {
    let cluster = ClusterBuilder::new()
        .sim("plain", openai(&["m"], 1, 0))
        .start()
        .await;
    let c = &cluster.client;
    // An unknown model.
    let r = c.post("/v1/messages", &anthropic_body("nope")).await;
    assert_anthropic_error(&r, 404, "not_found_error");
    // No model at all; a body that is not JSON.
    let r = c.post("/v1/messages", &json!({"max_tokens": 1})).await;
    assert_anthropic_error(&r, 400, "invalid_request_error");
    let r = c
        .call(
            http::Method::POST,
            "/v1/messages/count_tokens",
            &[("content-type", "application/json")],
            bytes::Bytes::from_static(b"{not json"),
        )
        .await;
    assert_anthropic_error(&r, 400, "invalid_request_error");
    // The model exists, but its only backend does not serve the path.
    let r = c.post("/v1/messages", &anthropic_body("m")).await;
    assert_anthropic_error(&r, 404, "not_found_error");
    assert!(r.text().contains("/v1/messages"), "{}", r.text());
    assert!(
        r.text().contains("plain"),
        "names the backend: {}",
        r.text()
    );
    // The same on the Responses path is in OpenAI's shape.
    let r = c
        .post("/v1/responses", &json!({"model": "m", "input": "hi"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.error_code(), "api_not_served");
    assert_eq!(cluster.sim("plain").stats().requests_total, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_backends_that_serve_a_path_take_its_requests() {
    // Config says which backend serves /v1/messages (the generic simulator
    // cannot tell); requests for it go there and nowhere else.
    let cluster = ClusterBuilder::new()
        .sim("chat-only", openai(&["m"], 4, 0))
        .sim_with("agents", openai(&["m"], 4, 0), |b| b.messages = Some(true))
        .start()
        .await;
    for _ in 0..6 {
        let r = cluster
            .client
            .post("/v1/messages", &anthropic_body("m"))
            .await;
        // The generic simulator has no such path: what matters is where
        // the request went, and that the backend's answer came back as is.
        assert_eq!(r.backend(), "agents", "{}", r.text());
    }
    assert_eq!(cluster.sim("chat-only").stats().requests_total, 0);
    let listed = cluster.client.get("/admin/backends").await.json();
    let agents = listed["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "agents")
        .unwrap()
        .clone();
    assert_eq!(agents["apis"], json!(["messages"]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_ends_with_the_paths_own_error_event() {
    let mut sim = drover_tests::lmstudio(&["m"], 2, 0);
    sim.output_tokens = 8;
    sim.faults.close_mid_stream_rate = 1.0;
    let cluster = ClusterBuilder::new()
        .sim("breaks", sim)
        .hub(|c| c.health.failure_threshold = 1000)
        .start()
        .await;
    let mut messages = anthropic_body("m");
    messages["stream"] = json!(true);
    let text = cluster.client.post("/v1/messages", &messages).await.text();
    assert!(text.contains("event: message_start"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{text}");
    let data: serde_json::Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");

    let responses = json!({"model": "m", "input": "hi", "stream": true});
    let text = cluster
        .client
        .post("/v1/responses", &responses)
        .await
        .text();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{text}");
    let data: serde_json::Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(data["type"], "error");
    assert!(
        data["message"].as_str().unwrap().contains("broke"),
        "{data}"
    );
    cluster.shutdown().await;
}

/// llama-server leaves `message_start` out of some Messages streams, which
/// breaks Anthropic's clients: through the hub every stream opens with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_stream_without_message_start_gets_one() {
    let sim = drover_tests::SimConfig {
        dialect: drover_tests::Dialect::LlamaCpp,
        models: vec!["tiny".into()],
        loaded: vec!["tiny".into()],
        faults: drover_tests::Faults {
            messages_without_start: true,
            ..drover_tests::Faults::NONE
        },
        ..drover_tests::SimConfig::default()
    };
    let cluster = drover_tests::ClusterBuilder::new()
        .sim("llama", sim)
        .start()
        .await;
    let body = serde_json::json!({"model": "tiny", "max_tokens": 8, "stream": true,
                                  "messages": [{"role": "user", "content": "hi"}]});
    let direct = drover_tests::Client::new(&cluster.sim("llama").url())
        .post("/v1/messages", &body)
        .await
        .text();
    assert!(direct.starts_with("event: content_block_start"), "{direct}");
    let r = cluster.client.post("/v1/messages", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert_eq!(text.matches("event: message_start").count(), 1, "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    cluster.shutdown().await;
}
