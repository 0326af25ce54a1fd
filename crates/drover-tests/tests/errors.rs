//! Bad input gets a clear error in the OpenAI shape with the status a client
//! expects; nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use drover_tests::{ClusterBuilder, lmstudio};
use http::Method;

/// Method, path, headers, body; the status and error code expected.
type Case<'a> = (
    Method,
    &'a str,
    Vec<(&'a str, &'a str)>,
    String,
    u16,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_shaped_errors() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5))
        .hub(|c| c.limits.max_body_bytes = 4096)
        .start()
        .await;
    let big = format!(r#"{{"model":"m","prompt":"{}"}}"#, "x".repeat(5000));
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/chat/completions",
            vec![],
            "{not json".into(),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![],
            "[1,2]".into(),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![],
            "".into(),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![],
            r#"{"messages":[]}"#.into(),
            400,
            "missing_required_parameter",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![],
            r#"{"model":"  "}"#.into(),
            400,
            "missing_required_parameter",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![],
            r#"{"model":42}"#.into(),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![],
            r#"{"model":"nope","messages":[]}"#.into(),
            404,
            "model_not_found",
        ),
        (
            Method::POST,
            "/v1/completions",
            vec![],
            big,
            413,
            "request_too_large",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![("x-drover-priority", "high")],
            r#"{"model":"m"}"#.into(),
            400,
            "invalid_priority",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![("x-drover-priority", "101")],
            r#"{"model":"m"}"#.into(),
            400,
            "invalid_priority",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![("x-drover-queue-timeout", "-1")],
            r#"{"model":"m"}"#.into(),
            400,
            "invalid_queue_timeout",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            vec![("x-drover-queue-timeout", "NaN")],
            r#"{"model":"m"}"#.into(),
            400,
            "invalid_queue_timeout",
        ),
        (
            Method::GET,
            "/v1/nothing-here",
            vec![],
            "".into(),
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/chat/completions",
            vec![],
            "".into(),
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/models/nope",
            vec![],
            "".into(),
            404,
            "model_not_found",
        ),
        (
            Method::POST,
            "/admin/backends",
            vec![],
            "{}".into(),
            400,
            "invalid_backend",
        ),
        (
            Method::POST,
            "/admin/backends",
            vec![],
            r#"{"kind":"openai","url":"ftp://x"}"#.into(),
            400,
            "invalid_backend",
        ),
        (
            Method::DELETE,
            "/admin/backends/ghost",
            vec![],
            "".into(),
            404,
            "not_found",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = cluster
            .client
            .call(method.clone(), path, &headers, Bytes::from(body.clone()))
            .await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "{method} {path} {body:.60}: {}",
            r.text()
        );
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(
            r.error_code(),
            code,
            "{method} {path} {body:.60}: {}",
            r.text()
        );
    }
    // The hub is still fine.
    let ok = cluster
        .client
        .post(
            "/v1/chat/completions",
            &drover_tests::chat_body("m", "still here"),
        )
        .await;
    assert_eq!(ok.status, 200);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_answered_with_the_closest_the_fleet_has() {
    let cluster = ClusterBuilder::new()
        .sim(
            "studio",
            lmstudio(&["qwen2.5-7b-instruct", "llama-3.2-3b-instruct"], 1, 0),
        )
        .start()
        .await;
    for (path, asked, want) in [
        (
            "/v1/chat/completions",
            "qwen2.5-7b",
            "did you mean 'qwen2.5-7b-instruct'?",
        ),
        (
            "/v1/chat/completions",
            "Llama-3.2-3B-Instruct",
            "did you mean 'llama-3.2-3b-instruct'?",
        ),
    ] {
        let r = cluster
            .client
            .post(path, &drover_tests::chat_body(asked, "hi"))
            .await;
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(r.error_code(), "model_not_found");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.ends_with(want), "{message}");
    }
    let r = cluster.client.get("/v1/models/qwen2.5-7b").await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("did you mean 'qwen2.5-7b-instruct'?"),
        "{}",
        r.text()
    );
    let r = cluster
        .client
        .post(
            "/v1/chat/completions",
            &drover_tests::chat_body("gpt-4o", "hi"),
        )
        .await;
    assert!(!r.text().contains("did you mean"), "{}", r.text());
    cluster.shutdown().await;
}
