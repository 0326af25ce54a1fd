//! A request is never sent twice to a server that may have run it, and
//! servers that close connections under the pool cost no request:
//! - a server that closes its connection after every streamed answer while
//!   advertising keep-alive (the real llama-server does) is never handed
//!   such a connection again, so no request meets it closed;
//! - a server that read a request whole and then dropped the connection
//!   gets no second copy: the failure is the answer (or another backend's
//!   turn), since the server may have generated it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, Faults, chat_body, lmstudio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_closing_after_streams_fails_no_request() {
    // llama.cpp's server, whose habit the fault is: the hub knows the kind
    // and reuses none of its streams' connections.
    let mut sim = lmstudio(&["m"], 2, 5);
    sim.dialect = drover_tests::Dialect::LlamaCpp;
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
    // What the hub asked at start (its probes of the agents' paths) aside.
    cluster.sim("llama").reset_stats();
    for i in 0..20 {
        let mut body = chat_body("m", &format!("turn {i}"));
        body["stream"] = serde_json::json!(i % 2 == 0);
        let r = cluster.client.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let stats = cluster.sim("llama").stats();
    assert_eq!(
        stats.stale_closes, 0,
        "a connection that carried a stream was handed out again: {stats:?}"
    );
    assert_eq!(stats.requests_total, 20);
    assert_eq!(cluster.breaker("llama").await, "closed");
    let metrics = cluster.client.get("/metrics").await.text();
    assert!(
        metrics.contains("drover_retries_total{backend=\"llama\"} 0\n"),
        "{metrics}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_read_and_dropped_is_not_sent_again() {
    let cluster = ClusterBuilder::new()
        .sim("s", lmstudio(&["m"], 1, 0))
        .hub(|c| c.health.probe_interval = std::time::Duration::from_secs(3600))
        .start()
        .await;
    let sim = cluster.sim("s");
    for stream in [false, true] {
        sim.set_faults(Faults::NONE);
        // A plain answer leaves its connection in the pool: the next
        // request goes out on it.
        let warm = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", "warm"))
            .await;
        assert_eq!(warm.status, 200, "{}", warm.text());
        sim.reset_stats();
        sim.set_faults(Faults {
            drop_after_read_rate: 1.0,
            ..Faults::NONE
        });
        let mut body = chat_body("m", "run me once");
        body["stream"] = serde_json::json!(stream);
        let r = cluster.client.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status, 502, "stream {stream}: {}", r.text());
        let stats = sim.stats();
        assert_eq!(
            (stats.requests_total, stats.dropped_after_read),
            (1, 1),
            "stream {stream}: the server got the request more than once: {stats:?}"
        );
    }
    cluster.shutdown().await;
}
