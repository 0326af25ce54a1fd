//! A request that arrives before a backend's first probe has answered (right
//! after a start, a restart, or `backends add`) waits for that answer rather
//! than being refused: the model may well be that backend's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{Cluster, ClusterBuilder, chat_body, lmstudio};
use serde_json::json;

/// A port that takes connections (the kernel queues them) with nothing
/// answering on it yet, added to the hub's backends as `name`.
async fn add_silent(cluster: &Cluster, name: &str) -> tokio::net::TcpListener {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let r = cluster
        .client
        .post(
            "/admin/backends",
            &json!({"name": name, "kind": "lmstudio", "url": url}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    listener
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_before_the_first_answer_waits_for_it() {
    let cluster = ClusterBuilder::new().start().await;
    // Nothing answers on its port yet: its first probe is under way.
    let listener = add_silent(&cluster, "late").await;
    let client = cluster.client.clone();
    let asked = tokio::spawn(async move {
        client
            .post("/v1/chat/completions", &chat_body("m", "hi"))
            .await
    });
    drover_tests::wait_until("the request waits", || cluster.waiting() == 1).await;
    let sim = drover_sim::SimServer::start(listener, lmstudio(&["m"], 1, 0)).unwrap();
    let r = asked.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Once every backend has answered, a model nobody has is refused at once.
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("nope", "hi"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    cluster.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_no_longer_than_the_first_probe() {
    let cluster = ClusterBuilder::new()
        .hub(|c| c.health.probe_timeout = Duration::from_millis(300))
        .start()
        .await;
    // A port that takes connections and never answers.
    let listener = add_silent(&cluster, "silent").await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    // The probe gave up: the request hears of the backend that never
    // answered, not that the model does not exist.
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("silent"), "{}", r.text());
    drop(listener);
    cluster.shutdown().await;
}
