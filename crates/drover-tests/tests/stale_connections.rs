//! A server that closes its connection after every streamed answer while
//! advertising keep-alive (the real llama-server does) costs no request: a
//! request that meets the closed pooled connection before any answer is
//! sent again on a fresh one, and the backend is not blamed for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, Faults, chat_body, lmstudio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_closing_after_streams_fails_no_request() {
    let mut sim = lmstudio(&["m"], 2, 5);
    sim.faults = Faults {
        close_after_stream: true,
        ..Faults::NONE
    };
    let cluster = ClusterBuilder::new()
        .sim("llama", sim)
        // Only the requests' own outcomes judge the backend.
        .hub(|c| c.health.probe_interval = std::time::Duration::from_secs(3600))
        .start()
        .await;
    for i in 0..20 {
        let mut body = chat_body("m", &format!("turn {i}"));
        body["stream"] = serde_json::json!(i % 2 == 0);
        let r = cluster.client.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let stats = cluster.sim("llama").stats();
    assert!(
        stats.stale_closes >= 5,
        "the stale path was exercised: {stats:?}"
    );
    assert_eq!(cluster.breaker("llama").await, "closed");
    let metrics = cluster.client.get("/metrics").await.text();
    assert!(!metrics.contains("drover_retries_total{"), "{metrics}");
    cluster.shutdown().await;
}
