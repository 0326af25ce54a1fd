//! Nothing a client sends can exhaust the hub: a header that does not fit a
//! number, a body that never comes, connections that hold on doing nothing,
//! a client that stops reading, bodies that fill the queue's memory, names
//! that would be echoed a million times.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{ClusterBuilder, Raw, chat_body, lmstudio, post_head, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_timeout_too_large_for_a_duration_is_a_400() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    for value in ["2e19", "1e308", "inf"] {
        let r = cluster
            .client
            .post_with(
                "/v1/chat/completions",
                &[("x-drover-queue-timeout", value)],
                &chat_body("m", "hi"),
            )
            .await;
        assert_eq!(r.status, 400, "{value}: {}", r.text());
        assert_eq!(r.error_code(), "invalid_queue_timeout");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_comes_is_a_408() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .hub(|c| c.limits.body_timeout = Duration::from_millis(300))
        .start()
        .await;
    let mut raw = Raw::connect(cluster.hub.addr()).await;
    raw.send(&post_head("/v1/chat/completions", 100)).await;
    let head = raw.read_head(Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_their_turn() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .hub(|c| c.limits.max_connections = Some(4))
        .start()
        .await;
    // Four connections that send half a request head and stop.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut raw = Raw::connect(cluster.hub.addr()).await;
        raw.send(b"GET /health HTTP/1.1\r\n").await;
        idle.push(raw);
    }
    let client = cluster.client.clone();
    let mut fifth = tokio::spawn(async move { client.get("/health").await });
    // The fifth is not served while the four hold every place. (A negative
    // check: it cannot pass by luck on a slow machine.)
    let early = tokio::time::timeout(Duration::from_millis(500), &mut fifth).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    drop(idle.pop());
    let r = tokio::time::timeout(Duration::from_secs(10), fifth)
        .await
        .expect("served once a place is free")
        .unwrap();
    assert_eq!(r.status, 200);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_slot() {
    let mut sim = lmstudio(&["m"], 1, 5);
    // A long answer produced as fast as it can be sent: enough to fill
    // every socket buffer between the hub and a client that reads nothing.
    sim.output_tokens = 400_000;
    let cluster = ClusterBuilder::new()
        .sim("studio", sim)
        .hub(|c| {
            c.limits.client_stall_timeout = Duration::from_millis(300);
            c.upstream.cancel_grace = Duration::from_millis(50);
        })
        .start()
        .await;
    let mut body = chat_body("m", "talk a lot");
    body["stream"] = serde_json::json!(true);
    let body = body.to_string();
    let mut raw = Raw::connect(cluster.hub.addr()).await;
    raw.send(&post_head("/v1/chat/completions", body.len()))
        .await;
    raw.send(body.as_bytes()).await;
    let head = raw.read_head(Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    wait_until("the slot is taken", || cluster.busy("studio") == 1).await;
    // The client reads nothing more but keeps the connection open.
    wait_until("the stalled answer is ended and its slot freed", || {
        cluster.busy("studio") == 0
    })
    .await;
    drop(raw);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_bodies_are_bounded_by_bytes_not_only_by_count() {
    // A server that does not say its context: bodies of any size go to it
    // (one that does would have these refused for not fitting it).
    let cluster = ClusterBuilder::new()
        .sim("studio", drover_tests::openai(&["m"], 1, 30_000))
        .hub(|c| c.queue.max_waiting_bytes = 1_000_000)
        .start()
        .await;
    let client = cluster.client.clone();
    let holder = tokio::spawn(async move {
        client
            .post("/v1/chat/completions", &chat_body("m", "hold"))
            .await
    });
    wait_until("the only slot is taken", || cluster.busy("studio") == 1).await;
    let big = chat_body("m", &"x".repeat(400_000));
    let mut waiting = Vec::new();
    for n in 1..=2 {
        let (client, big) = (cluster.client.clone(), big.clone());
        waiting.push(tokio::spawn(async move {
            client.post("/v1/chat/completions", &big).await
        }));
        wait_until("it waits", || cluster.waiting() == n).await;
    }
    // 800 KB wait; 400 KB more would pass the 1 MB budget.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        cluster.client.post("/v1/chat/completions", &big),
    )
    .await
    .expect("refused at once, not queued");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.error_code(), "queue_full");
    assert!(r.header("retry-after").is_some());
    let metrics = cluster.client.get("/metrics").await.text();
    assert!(metrics.contains("drover_queue_bytes "), "{metrics}");
    holder.abort();
    for w in waiting {
        w.abort();
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_name_is_echoed_short() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    let name = "n".repeat(1_000_000);
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body(&name, "hi"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "model_not_found");
    assert!(r.body.len() < 2_000, "{} bytes", r.body.len());
    cluster.shutdown().await;
}
