//! A client key's limits hold against clients and servers that try to slip
//! past them: a client that starts streams and drops them at once, streams
//! that report no usage or end early, and a server that reports an absurd
//! number of tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use drover_tests::{Cluster, ClusterBuilder, Faults, SimConfig, chat_body, openai};
use http::Method;
use http_body_util::BodyExt;
use serde_json::json;

async fn hub_with_keys(name: &str, sim: SimConfig, grace: Duration) -> (Cluster, PathBuf) {
    let dir = std::env::temp_dir().join(format!("drover-key-limits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kept = dir.clone();
    let cluster = ClusterBuilder::new()
        .sim_with_slots("s", sim, 8)
        .hub(move |c| {
            c.data_dir = Some(kept);
            c.upstream.cancel_grace = grace;
        })
        .start()
        .await;
    (cluster, dir)
}

async fn key(cluster: &Cluster, name: &str, limits: serde_json::Value) -> String {
    let r = cluster
        .client
        .post("/admin/keys", &json!({"name": name, "limits": limits}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    format!("Bearer {}", r.json()["key"].as_str().unwrap())
}

fn streamed(model: &str) -> Bytes {
    let mut body = chat_body(model, "hi");
    body["stream"] = json!(true);
    Bytes::from(body.to_string())
}

async fn open_stream(cluster: &Cluster, auth: &str) -> http::Response<hyper::body::Incoming> {
    cluster
        .client
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", auth)],
            streamed("m"),
        )
        .await
}

/// A metric's value as the hub's `/metrics` shows it, if the line is there.
async fn metric(cluster: &Cluster, line_start: &str) -> Option<f64> {
    let text = cluster.client.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_and_dropping_streams_does_not_escape_a_keys_concurrency() {
    // The server notices a client gone only at its next token, a quarter
    // of a second later; the hub keeps an abandoned slot for two seconds.
    let mut sim = openai(&["m"], 8, 0);
    sim.tokens_per_sec = 4.0;
    sim.output_tokens = 40;
    let (cluster, dir) = hub_with_keys("start-abort", sim, Duration::from_secs(2)).await;
    let auth = key(&cluster, "two", json!({"max_concurrent": 2})).await;
    let mut refused = 0;
    for _ in 0..8 {
        let resp = open_stream(&cluster, &auth).await;
        if resp.status() == 429 {
            refused += 1;
            continue;
        }
        assert_eq!(resp.status(), 200);
        // The first chunk is in: the server is generating. Then the client
        // goes away.
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
    }
    let m = cluster.sim("s").stats().model("m");
    assert!(
        m.max_in_flight <= 2,
        "a key limited to 2 had {} generations at once",
        m.max_in_flight
    );
    assert!(
        refused >= 6,
        "only {refused} of 8 refused (max in flight {})",
        m.max_in_flight
    );
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_usage_is_charged_its_chunks() {
    // OpenAI's streams carry no usage unless the client asks for it.
    let mut sim = openai(&["m"], 2, 0);
    sim.output_tokens = 50;
    let (cluster, dir) = hub_with_keys("no-usage", sim, Duration::from_millis(500)).await;
    let auth = key(&cluster, "small", json!({"tokens_per_minute": 40})).await;
    let first = open_stream(&cluster, &auth).await;
    assert_eq!(first.status(), 200);
    let text = first.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&text).contains("\"usage\""));
    let second = open_stream(&cluster, &auth).await;
    assert_eq!(
        second.status(),
        429,
        "50 tokens streamed were charged nothing"
    );
    assert_eq!(
        metric(
            &cluster,
            r#"drover_key_completion_tokens_total{key="small"}"#
        )
        .await,
        Some(50.0)
    );
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_early_is_charged_what_was_sent() {
    let mut sim = openai(&["m"], 2, 0);
    sim.output_tokens = 500;
    sim.tokens_per_sec = 100.0;
    let (cluster, dir) = hub_with_keys("dropped", sim, Duration::from_millis(500)).await;
    let auth = key(&cluster, "leaver", json!({"tokens_per_minute": 100_000})).await;
    let resp = open_stream(&cluster, &auth).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = 0;
    while seen < 6 {
        let frame = body.frame().await.unwrap().unwrap();
        if frame
            .data_ref()
            .is_some_and(|d| String::from_utf8_lossy(d).contains("\"content\":\""))
        {
            seen += 1;
        }
    }
    drop(body);
    drover_tests::wait_until_within(
        "the dropped stream is charged",
        Duration::from_secs(10),
        || {
            let cluster = &cluster;
            async move {
                metric(
                    cluster,
                    r#"drover_key_completion_tokens_total{key="leaver"}"#,
                )
                .await
                .is_some_and(|t| (5.0..500.0).contains(&t))
            }
        },
    )
    .await;
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reporting_absurd_usage_cannot_break_the_limiter() {
    let mut sim = openai(&["m"], 2, 0);
    sim.faults = Faults {
        reported_output_tokens: Some(u64::MAX),
        ..Faults::NONE
    };
    let (cluster, dir) = hub_with_keys("absurd", sim, Duration::from_millis(500)).await;
    let auth = key(&cluster, "victim", json!({"tokens_per_minute": 300})).await;
    let body = chat_body("m", "hi");
    let headers = [("authorization", auth.as_str())];
    let ask = || {
        cluster
            .client
            .post_with("/v1/chat/completions", &headers, &body)
    };
    let first = ask().await;
    assert_eq!(first.status, 200, "{}", first.text());
    for _ in 0..3 {
        let r = ask().await;
        assert_eq!(r.status, 429, "{}", r.text());
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3660).contains(&retry), "Retry-After {retry}");
    }
    // The counters took the clamped count, not a wrapped one.
    let tokens = metric(
        &cluster,
        r#"drover_key_completion_tokens_total{key="victim"}"#,
    )
    .await
    .unwrap();
    assert!(tokens > 0.0 && tokens <= f64::from(1u32 << 24), "{tokens}");
    let overview = cluster.client.get("/admin/overview").await.json();
    assert_eq!(overview["keys"][0]["completion_tokens"], json!(1u64 << 24));
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
