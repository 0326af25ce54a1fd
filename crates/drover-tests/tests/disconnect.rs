//! A client that goes away leaves the queue, and its upstream request is
//! cancelled, which frees the slot (invariant 2: nothing leaks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, chat_body, lmstudio, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_while_running_cancels_upstream_and_frees_the_slot() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 10_000))
        .start()
        .await;
    let client = cluster.client.clone();
    let running = tokio::spawn(async move {
        client
            .post("/v1/chat/completions", &chat_body("m", "long"))
            .await
    });
    let sim = cluster.sim("studio");
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sim.wait_for(|s| s.model("m").active == 1),
    )
    .await
    .unwrap();
    running.abort();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sim.wait_for(|s| s.model("m").cancelled == 1),
    )
    .await
    .expect("the backend should see the request cancelled");
    wait_until("the hub releases the slot", || cluster.busy("studio") == 0).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_while_waiting_leaves_the_queue() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 10_000))
        .start()
        .await;
    // Discovery has sent its own probes; count from here.
    let before = cluster.sim("studio").stats().requests_total;
    let c1 = cluster.client.clone();
    let holder = tokio::spawn(async move {
        c1.post("/v1/chat/completions", &chat_body("m", "holder"))
            .await
    });
    wait_until("the slot is taken", || cluster.busy("studio") == 1).await;
    let c2 = cluster.client.clone();
    let waiter = tokio::spawn(async move {
        c2.post("/v1/chat/completions", &chat_body("m", "waiter"))
            .await
    });
    wait_until("the second request waits", || cluster.waiting() == 1).await;
    waiter.abort();
    wait_until("it leaves the queue", || cluster.waiting() == 0).await;
    holder.abort();
    wait_until("the slot is free", || cluster.busy("studio") == 0).await;
    assert_eq!(
        cluster.sim("studio").stats().requests_total - before,
        1,
        "the waiter never went upstream"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_mid_stream_cancels_upstream() {
    let mut config = lmstudio(&["m"], 1, 10);
    config.tokens_per_sec = 5.0;
    config.output_tokens = 100;
    let cluster = ClusterBuilder::new().sim("studio", config).start().await;
    let mut body = chat_body("m", "stream");
    body["stream"] = serde_json::json!(true);
    let resp = cluster.client.open("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let mut body_stream = resp.into_body();
    use http_body_util::BodyExt;
    let first = body_stream.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body_stream);
    let sim = cluster.sim("studio");
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sim.wait_for(|s| s.model("m").cancelled == 1),
    )
    .await
    .expect("the backend should see the stream cancelled");
    wait_until("the hub releases the slot", || cluster.busy("studio") == 0).await;
    cluster.shutdown().await;
}
