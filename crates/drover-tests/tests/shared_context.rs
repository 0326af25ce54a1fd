//! A server whose slots share one context (llama.cpp's `--kv-unified`,
//! router mode's default) fails requests with `500 Context size has been
//! exceeded.` once they fill it together, though each alone fits. That is
//! overload, not a broken server: no breaker opens, every request is tried
//! again before its client sees a byte and answered, and the hub learns how
//! many the server really takes at once. A prompt larger than the whole
//! context is the client's 400, in the server's words.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{ClusterBuilder, Dialect, SimConfig, chat_body};
use serde_json::json;

fn shared_context_server() -> SimConfig {
    SimConfig {
        dialect: Dialect::LlamaCpp,
        models: vec!["tiny".into()],
        loaded: vec!["tiny".into()],
        slots: 4,
        // Each answer alone fits (its prompt and 300 tokens in 512 cells);
        // two at once do not.
        shared_context: Some(512),
        output_tokens: 300,
        tokens_per_sec: 3000.0,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_context_filling_up_is_overload_that_no_client_sees() {
    let cluster = ClusterBuilder::new()
        .sim("llama", shared_context_server())
        .hub(|c| c.health.probe_interval = Duration::from_secs(3600))
        .start()
        .await;
    let listed = cluster.client.get("/admin/backends").await.json();
    assert_eq!(listed["backends"][0]["models"][0]["slots"], 4, "{listed}");
    let mut asked = Vec::new();
    for i in 0..8 {
        let client = cluster.client.clone();
        asked.push(tokio::spawn(async move {
            let mut body = chat_body("tiny", &format!("hello there, number {i}"));
            body["max_tokens"] = json!(300);
            body["stream"] = json!(i % 2 == 0);
            client.post("/v1/chat/completions", &body).await
        }));
    }
    for (i, a) in asked.into_iter().enumerate() {
        let r = a.await.unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(
            !r.text().contains("Context size"),
            "request {i}: {}",
            r.text()
        );
    }
    let stats = cluster.sim("llama").stats();
    assert!(
        stats.context_full > 0,
        "the server never ran out of room: {stats:?}"
    );
    assert_eq!(cluster.breaker("llama").await, "closed");
    let listed = cluster.client.get("/admin/backends").await.json();
    let limit = listed["backends"][0]["models"][0]["limit"].as_u64();
    assert!(limit.is_some_and(|l| l < 4), "{listed}");
    // Now the hub counts that context in tokens: the next burst, all
    // streamed, never meets the server's error at all.
    cluster.sim("llama").reset_stats();
    let mut asked = Vec::new();
    for i in 0..8 {
        let client = cluster.client.clone();
        asked.push(tokio::spawn(async move {
            let mut body = chat_body("tiny", &format!("again, number {i}"));
            body["max_tokens"] = json!(300);
            body["stream"] = json!(true);
            client.post("/v1/chat/completions", &body).await
        }));
    }
    for a in asked {
        assert_eq!(a.await.unwrap().status, 200);
    }
    assert_eq!(cluster.sim("llama").stats().context_full, 0);

    // Too large for the whole context: the server's own words, a 400.
    let r = cluster
        .client
        .post(
            "/v1/chat/completions",
            &chat_body("tiny", &"many words ".repeat(600)),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("exceeds the available context size"),
        "{}",
        r.text()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_for_a_model_whose_backends_are_down_says_when_to_come_back() {
    let cluster = ClusterBuilder::new()
        .sim("a", drover_tests::lmstudio(&["m"], 1, 0))
        .hub(|c| {
            c.health.probe_interval = Duration::from_secs(3600);
            c.health.failure_threshold = 1;
            c.upstream.max_retries = 0;
        })
        .start()
        .await;
    cluster.sim("a").set_faults(drover_tests::Faults {
        error_rate: 1.0,
        ..drover_tests::Faults::NONE
    });
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(cluster.breaker("a").await, "open");
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "no_healthy_backend");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_no_backends_context_can_hold_is_refused_before_it_is_sent() {
    let cluster = ClusterBuilder::new()
        .sim("llama", shared_context_server())
        .start()
        .await;
    cluster.sim("llama").reset_stats();
    // 100 KB of text: thousands of tokens however they are counted, for a
    // context of 512.
    let r = cluster
        .client
        .post(
            "/v1/chat/completions",
            &chat_body("tiny", &"many words ".repeat(10_000)),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "context_length_exceeded");
    assert!(r.text().contains("512 tokens"), "{}", r.text());
    assert_eq!(cluster.sim("llama").stats().requests_total, 0);
    // The same on the Anthropic path, in its shape.
    let r = cluster
        .client
        .post(
            "/v1/messages",
            &json!({"model": "tiny", "max_tokens": 8,
                    "messages": [{"role": "user", "content": "many words ".repeat(10_000)}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    cluster.shutdown().await;
}
