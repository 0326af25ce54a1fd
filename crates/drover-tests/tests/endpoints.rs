//! The rest of the surface: completions, embeddings, the model listing,
//! health, readiness and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, chat_body, lmstudio};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_embeddings_models_and_ops_endpoints() {
    let mut left = lmstudio(&["chat", "embed-small"], 1, 5);
    left.models.push("cold".into());
    let cluster = ClusterBuilder::new()
        .sim("left", left)
        .sim("right", lmstudio(&["chat"], 1, 5))
        .start()
        .await;
    let r = cluster
        .client
        .post(
            "/v1/completions",
            &json!({"model": "chat", "prompt": "Once upon a time", "max_tokens": 5}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "text_completion");
    let r = cluster
        .client
        .post(
            "/v1/embeddings",
            &json!({"model": "embed-small", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.backend(), "left");

    let models = cluster.client.get("/v1/models").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "cold", "embed-small"]);
    let chat = &models["data"][0];
    assert_eq!(chat["object"], "model");
    assert_eq!(chat["backends"].as_array().unwrap().len(), 2, "{chat}");
    assert_eq!(models["data"][1]["backends"][0]["state"], "available");
    let one = cluster.client.get("/v1/models/embed-small").await;
    assert_eq!(one.json()["id"], "embed-small");

    // A model that is listed but loaded nowhere still gets served: LM
    // Studio loads it on demand.
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("cold", "wake up"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    assert_eq!(cluster.client.get("/health").await.json()["status"], "ok");
    assert_eq!(cluster.client.get("/ready").await.json()["status"], "ready");
    let metrics = cluster.client.get("/metrics").await;
    let text = metrics.text();
    for family in [
        "drover_requests_total{",
        "drover_time_to_first_byte_seconds_bucket{",
        "drover_request_duration_seconds_bucket{",
        "drover_queue_wait_seconds_bucket{",
        "drover_slots_busy{backend=\"left\",model=\"chat\"}",
        "drover_slots_total{backend=\"right\",model=\"chat\"} 1",
        "drover_backend_breaker_state{backend=\"left\",state=\"closed\"} 1",
        "# TYPE drover_queue_depth gauge",
        "# TYPE drover_retries counter",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(family), "missing {family}\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
    assert!(
        text.contains("drover_requests_total{model=\"chat\",backend=\"left\",status=\"200\"}")
            || text
                .contains("drover_requests_total{model=\"chat\",backend=\"right\",status=\"200\"}")
    );
    cluster.shutdown().await;
}
