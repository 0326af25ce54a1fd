//! Backends come and go while the hub runs: add, drain, undrain, remove.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, chat_body, lmstudio, wait_until};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_drain_undrain_and_remove_a_backend_at_run_time() {
    let cluster = ClusterBuilder::new().start().await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "model_not_found");
    assert_eq!(cluster.client.get("/ready").await.status, 503);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = drover_sim::SimServer::start(listener, lmstudio(&["m"], 1, 400)).unwrap();
    let r = cluster
        .client
        .post(
            "/admin/backends",
            &json!({"name": "late", "kind": "lmstudio", "url": sim.url()}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let dup = cluster
        .client
        .post(
            "/admin/backends",
            &json!({"name": "late", "kind": "lmstudio", "url": sim.url()}),
        )
        .await;
    assert_eq!(dup.status, 409);
    let bad = cluster
        .client
        .post(
            "/admin/backends",
            &json!({"kind": "ollama2", "url": sim.url()}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("unknown backend kind"),
        "{}",
        bad.text()
    );

    let mut models = serde_json::Value::Null;
    for _ in 0..200 {
        models = cluster.client.get("/v1/models").await.json();
        if models["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(models["data"][0]["id"], "m");
    assert_eq!(models["data"][0]["backends"][0]["backend"], "late");
    assert_eq!(models["data"][0]["backends"][0]["state"], "loaded");
    assert_eq!(cluster.client.get("/ready").await.status, 200);

    // A request running when the drain starts finishes normally.
    let client = cluster.client.clone();
    let running = tokio::spawn(async move {
        client
            .post("/v1/chat/completions", &chat_body("m", "long"))
            .await
    });
    wait_until("it runs", || cluster.busy("late") == 1).await;
    let r = cluster
        .client
        .post("/admin/backends/late/drain", &json!({}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["draining"], true);
    assert_eq!(r.json()["in_flight"], 1);
    let refused = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "new"))
        .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "no_healthy_backend");
    assert_eq!(running.await.unwrap().status, 200);
    let r = cluster
        .client
        .post("/admin/backends/late/undrain", &json!({}))
        .await;
    assert_eq!(r.json()["draining"], false);
    assert_eq!(
        cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", "again"))
            .await
            .status,
        200
    );

    let r = cluster.client.delete("/admin/backends/late").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        cluster.client.delete("/admin/backends/late").await.status,
        404
    );
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "gone"))
        .await;
    assert_eq!(r.status, 404);
    assert!(
        cluster.client.get("/v1/models").await.json()["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    cluster.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_the_key_when_one_is_set() {
    let cluster = ClusterBuilder::new()
        .hub(|c| c.admin_key = Some("s3cret".into()))
        .start()
        .await;
    let r = cluster.client.get("/admin/backends").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "invalid_api_key");
    let r = cluster
        .client
        .call(
            http::Method::GET,
            "/admin/backends",
            &[("authorization", "Bearer s3cret")],
            Default::default(),
        )
        .await;
    assert_eq!(r.status, 200);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_server_under_another_name_is_refused_naming_it() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 0))
        .start()
        .await;
    let port = cluster.sim("studio").addr().port();
    for url in [
        cluster.sim("studio").url(),
        format!("http://localhost:{port}/v1"),
    ] {
        let r = cluster
            .client
            .post(
                "/admin/backends",
                &json!({"name": "studio-again", "url": url}),
            )
            .await;
        assert_eq!(r.status, 409, "{url}: {}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("\"studio\"") && message.contains("twice"),
            "{message}"
        );
    }
    let listed = cluster.client.get("/admin/backends").await.json();
    assert_eq!(listed["backends"].as_array().unwrap().len(), 1, "{listed}");
    cluster.shutdown().await;
}
