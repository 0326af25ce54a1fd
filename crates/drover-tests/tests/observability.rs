//! What an operator reads stays readable: gauges read 0 rather than
//! vanishing, and every response carries a request id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, chat_body, lmstudio, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_read_zero_once_the_queue_drains() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 200))
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let client = cluster.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", &format!("{i}")))
                .await
        }));
    }
    wait_until("requests wait", || cluster.waiting() > 0).await;
    let busy = cluster.client.get("/metrics").await.text();
    assert!(busy.contains("drover_queue_depth{model=\"m\"} "), "{busy}");
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let idle = cluster.client.get("/metrics").await.text();
    for series in [
        "drover_queue_depth{model=\"m\"} 0",
        "drover_queue_depth_by_priority{priority=\"50\"} 0",
        "drover_queue_bytes 0",
    ] {
        assert!(idle.contains(series), "{series} missing:\n{idle}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_a_request_id() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/v1/models",
        "/admin/backends",
        "/nowhere",
    ] {
        let r = cluster.client.get(path).await;
        let id = r.header("x-request-id").unwrap_or_default();
        assert!(id.starts_with("req_"), "{path}: {:?}", r.headers);
    }
    cluster.shutdown().await;
}
