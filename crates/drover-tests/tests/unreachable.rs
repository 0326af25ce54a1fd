//! A backend that has never answered is shown as what it is, unreachable,
//! and a request for a model nobody answering serves says that such a
//! backend exists rather than that the model does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, chat_body, lmstudio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answered_is_unreachable_everywhere() {
    let cluster = ClusterBuilder::new()
        .sim("up", lmstudio(&["m"], 1, 5))
        .unreachable("dark")
        .start()
        .await;
    assert_eq!(cluster.breaker("dark").await, "unreachable");
    assert_eq!(cluster.breaker("up").await, "closed");

    let metrics = cluster.client.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"drover_backend_breaker_state{backend="dark",state="unreachable"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"drover_backend_breaker_state{backend="up",state="unreachable"} 0"#),
        "{metrics}"
    );

    let models = cluster.client.get("/v1/models").await.json();
    assert_eq!(models["unreachable_backends"], serde_json::json!(["dark"]));

    // A model only the dark backend might serve: not "does not exist".
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("only-dark-has-it", "hi"))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "no_healthy_backend");
    assert!(r.text().contains("dark"), "{}", r.text());

    // What the answering backend serves is served as usual.
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_answering_an_unknown_model_is_a_404() {
    let cluster = ClusterBuilder::new()
        .sim("up", lmstudio(&["m"], 1, 5))
        .start()
        .await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("nope", "hi"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "model_not_found");
    let models = cluster.client.get("/v1/models").await.json();
    assert_eq!(models["unreachable_backends"], serde_json::json!([]));
    cluster.shutdown().await;
}
