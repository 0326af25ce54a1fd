//! The forwarding service driven without an HTTP request, as the durable
//! job runner will drive it: a request built from body bytes, the API and
//! its sender; the answer's body collected; and the request counted by the
//! same observer as one that came over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use drover_hub::forward::{
    Api, ErrorFormat, ForwardError, ForwardRequest, Forwarded, Forwarder, Sender,
};
use drover_tests::{ClusterBuilder, chat_body, openai};
use http_body_util::BodyExt;

/// A chat request for `model`, as a job runner would build it.
async fn chat(forwarder: &Forwarder, model: &str) -> ForwardRequest {
    let body = Bytes::from(serde_json::to_vec(&chat_body(model, "hello")).unwrap());
    forwarder
        .prepare(
            body,
            Api::OpenAi,
            ErrorFormat::OpenAi,
            "/v1/chat/completions".into(),
            Sender::default(),
        )
        .await
        .unwrap()
}

async fn overview_requests(cluster: &drover_tests::Cluster) -> u64 {
    let overview = cluster.client.get("/admin/overview").await.json();
    overview["traffic"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_forwarded_without_http_is_answered_and_counted_like_any() {
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 2, 0))
        .start()
        .await;
    let forwarder = cluster.hub.forwarder();
    let request = chat(&forwarder, "m").await;
    assert_eq!(request.model, "m");
    let Forwarded { result, .. } = forwarder.forward(request).await;
    let answer = result.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-drover-backend"], "sim");
    let bytes = answer.body.collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        json["choices"][0]["message"]["content"].is_string(),
        "{json}"
    );

    // A model nobody serves: the domain's error, no HTTP status in sight.
    let request = chat(&forwarder, "nope").await;
    let Forwarded { result, .. } = forwarder.forward(request).await;
    assert!(
        matches!(result, Err(ForwardError::ModelNotFound { .. })),
        "{:?}",
        result.err()
    );

    // Counted once each, in the metrics and in the dashboard's traffic.
    let metrics = cluster.client.get("/metrics").await.text();
    for series in [
        "drover_requests_total{model=\"m\",backend=\"sim\",status=\"200\"} 1",
        "drover_requests_total{model=\"\",backend=\"none\",status=\"404\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert_eq!(overview_requests(&cluster).await, 2);
    cluster.shutdown().await;
}
