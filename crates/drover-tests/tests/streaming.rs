//! Streams pass through chunk by chunk: the client sees the first chunk
//! while the backend is still generating; a stream that breaks after its
//! first byte ends with an SSE error event, never a silent truncation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{ClusterBuilder, Faults, chat_body, lmstudio};
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_arrives_while_the_backend_still_generates() {
    let mut config = lmstudio(&["m"], 1, 10);
    config.tokens_per_sec = 20.0;
    config.output_tokens = 40;
    let cluster = ClusterBuilder::new().sim("studio", config).start().await;
    let mut body = chat_body("m", "stream please");
    body["stream"] = serde_json::json!(true);
    let resp = cluster.client.open("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(headers["x-drover-backend"], "studio");
    assert!(headers.contains_key("x-request-id"));
    let mut stream = resp.into_body();
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // Not buffered: the backend has not finished this request yet.
    let m = cluster.sim("studio").stats().model("m");
    assert_eq!((m.in_flight, m.completed), (1, 0), "{m:?}");
    let mut all = first.to_vec();
    while let Some(frame) = stream.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            all.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.matches("chat.completion.chunk").count() >= 40);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_ends_with_an_error_event() {
    let mut config = lmstudio(&["m"], 1, 5);
    config.output_tokens = 20;
    config.tokens_per_sec = 200.0;
    config.faults = Faults {
        close_mid_stream_rate: 1.0,
        ..Faults::NONE
    };
    let cluster = ClusterBuilder::new().sim("studio", config).start().await;
    let mut body = chat_body("m", "break me");
    body["stream"] = serde_json::json!(true);
    let r = cluster.client.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "headers were sent before the break");
    let text = r.text();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .last()
        .unwrap()
        .to_string();
    let payload: serde_json::Value =
        serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(payload["error"]["code"], "upstream_error", "{last}");
    assert!(cluster.sim("studio").stats().mid_stream_closes >= 1);
    let metrics = cluster.client.get("/metrics").await.text();
    assert!(
        metrics.contains("drover_stream_errors_total{backend=\"studio\"} 1"),
        "{metrics}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_before_its_first_byte_is_retried_on_another_backend() {
    let mut cut = lmstudio(&["m"], 1, 5);
    cut.faults = Faults {
        close_mid_stream_rate: 1.0,
        ..Faults::NONE
    };
    let cluster = ClusterBuilder::new()
        .sim("cut", cut)
        .sim("whole", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    for i in 0..6 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            cluster
                .client
                .post("/v1/chat/completions", &chat_body("m", &format!("n {i}"))),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "whole");
        assert_eq!(r.json()["object"], "chat.completion");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_request_id_is_kept_and_one_is_made_otherwise() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    let r = cluster
        .client
        .post_with(
            "/v1/chat/completions",
            &[("x-request-id", "trace-abc-123")],
            &chat_body("m", "hi"),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    let a = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    let b = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    let (a, b) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert!(a.starts_with("req_") && a != b);
    cluster.shutdown().await;
}

/// Events that reach the hub together leave it together: a zero-latency
/// stream's events, decoded one by one from a single read, go out in a few
/// writes (several events to an HTTP chunk) rather than a write each, and
/// every event arrives whole and in order.
#[tokio::test(flavor = "current_thread")]
async fn events_that_arrive_together_go_out_together() {
    let mut config = drover_tests::openai(&["m"], 4, 0);
    config.tokens_per_sec = 0.0;
    config.output_tokens = 32;
    let cluster = ClusterBuilder::new().sim("sim", config).start().await;
    let mut body = chat_body("m", "all at once");
    body["stream"] = serde_json::json!(true);
    let body = serde_json::to_vec(&body).unwrap();
    let (mut chunks, mut events) = (0, 0);
    for _ in 0..4 {
        let mut raw = drover_tests::Raw::connect(cluster.hub.addr()).await;
        raw.send(&drover_tests::post_head("/v1/chat/completions", body.len()))
            .await;
        raw.send(&body).await;
        let head = raw.read_head(Duration::from_secs(10)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let framed = raw.read_chunks(Duration::from_secs(10)).await;
        let text = String::from_utf8(framed.concat()).unwrap();
        let sent: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(sent.len(), 35, "{text}");
        assert!(sent.iter().all(|e| e.starts_with("data: ")), "{text}");
        assert_eq!(*sent.last().unwrap(), "data: [DONE]");
        chunks += framed.len();
        events += sent.len();
    }
    assert!(
        chunks * 4 <= events,
        "{events} events went out in {chunks} writes"
    );
    cluster.shutdown().await;
}
