//! Clients can see their wait: every inference answer says how long the
//! request waited in the hub's queue (`x-drover-queue-ms`), and `GET
//! /v1/queue` says, per model, how many wait and how long a request sent
//! now should wait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{ClusterBuilder, Dialect, SimConfig, chat_body, openai, wait_until};

fn queue_ms(r: &drover_tests::Reply) -> u64 {
    r.header("x-drover-queue-ms")
        .expect("x-drover-queue-ms on every inference answer")
        .parse()
        .unwrap()
}

fn entry(queue: &serde_json::Value, model: &str) -> serde_json::Value {
    queue["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["model"] == model)
        .cloned()
        .unwrap_or_else(|| panic!("{model} in {queue}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_say_their_queue_wait_and_the_queue_is_visible() {
    let cluster = ClusterBuilder::new()
        .sim("one", openai(&["m"], 1, 400))
        .start()
        .await;
    let idle = cluster.client.get("/v1/queue").await;
    assert_eq!(idle.status, 200, "{}", idle.text());
    assert_eq!(entry(&idle.json(), "m")["expected_wait_ms"], 0);

    let first = {
        let client = cluster.client.clone();
        tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", "a"))
                .await
        })
    };
    wait_until("the first runs", || cluster.busy("one") == 1).await;
    let second = {
        let client = cluster.client.clone();
        tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", "b"))
                .await
        })
    };
    wait_until("the second waits", || cluster.waiting() == 1).await;
    let queue = cluster.client.get("/v1/queue").await.json();
    let m = entry(&queue, "m");
    assert_eq!(
        (m["waiting"].as_u64(), queue["waiting"].as_u64()),
        (Some(1), Some(1)),
        "{queue}"
    );
    assert!(m["expected_wait_ms"].as_u64().unwrap() > 0, "{queue}");
    assert!(
        m["oldest_ms"].is_u64(),
        "how long the oldest has waited: {queue}"
    );
    assert_eq!(m["loading"], false);

    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (200, 200));
    assert_eq!(queue_ms(&first), 0, "it found a free slot");
    // It waited for the first's 400 ms answer to end.
    assert!(queue_ms(&second) >= 100, "{}", queue_ms(&second));

    // Refusals say it too: they waited not at all.
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("nope", "hi"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(queue_ms(&r), 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_model_expects_a_load_and_shows_it_loading() {
    let sim = SimConfig {
        dialect: Dialect::Ollama,
        models: vec!["cold".into()],
        loaded: Vec::new(),
        load_time: Duration::from_millis(1500),
        ..SimConfig::default()
    };
    let cluster = ClusterBuilder::new().sim("o", sim).start().await;
    let before = entry(&cluster.client.get("/v1/queue").await.json(), "cold");
    // Nothing measured yet: the default expected load, 10 s.
    assert!(
        before["expected_wait_ms"].as_u64().unwrap() >= 10_000,
        "{before}"
    );
    let request = {
        let client = cluster.client.clone();
        tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("cold", "hi"))
                .await
        })
    };
    wait_until("the request waits for the load", || cluster.waiting() == 1).await;
    let during = entry(&cluster.client.get("/v1/queue").await.json(), "cold");
    assert_eq!(during["loading"], true, "{during}");
    assert_eq!(during["waiting"], 1, "{during}");
    let r = request.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        queue_ms(&r) >= 1_000,
        "it waited for the load: {}",
        queue_ms(&r)
    );
    cluster.shutdown().await;
}
