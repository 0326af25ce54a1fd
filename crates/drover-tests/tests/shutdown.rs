//! A stream still running when the shutdown grace ends is ended with an
//! error event, like any other break, never silently truncated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{Cluster, ClusterBuilder, chat_body, lmstudio};
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_shutdown_ends_with_an_error_event() {
    let mut sim = lmstudio(&["m"], 1, 5);
    sim.tokens_per_sec = 10.0;
    sim.output_tokens = 1000;
    let cluster = ClusterBuilder::new().sim("studio", sim).start().await;
    let mut body = chat_body("m", "a long story");
    body["stream"] = serde_json::json!(true);
    let resp = cluster.client.open("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    stream.frame().await.unwrap().unwrap();

    let Cluster { hub, sims, .. } = cluster;
    let stopping = tokio::spawn(hub.shutdown(Duration::from_millis(200)));
    let mut rest = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = stream.frame().await {
            if let Ok(data) = frame.into_data() {
                rest.extend_from_slice(&data);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the stream ends");
    let text = String::from_utf8_lossy(&rest);
    let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(
        last.starts_with("data: {\"error\":") && last.contains("shutting down"),
        "the stream should end with an error event, got: ...{}",
        &text[text.len().saturating_sub(300)..]
    );
    stopping.await.unwrap();
    for sim in sims {
        sim.shutdown().await;
    }
}
