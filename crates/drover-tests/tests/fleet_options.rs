//! What a backend's config says beyond its URL: `[[models]]` aliases (one
//! public name for ids that differ between servers), `max_concurrent` over
//! all of a backend's models, and Anthropic's `x-api-key`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_hub::ModelAlias;
use drover_tests::{Client, ClusterBuilder, chat_body, openai};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_public_name_reaches_each_server_under_its_own_id() {
    let cluster = ClusterBuilder::new()
        .sim("ollama", openai(&["qwen2.5:7b-instruct", "llama3"], 2, 0))
        .sim("lms", openai(&["qwen2.5-7b-instruct"], 2, 0))
        .hub(|c| {
            c.models = vec![ModelAlias {
                name: "qwen2.5-7b".into(),
                ids: vec!["qwen2.5:7b-instruct".into(), "qwen2.5-7b-instruct".into()],
                ..ModelAlias::default()
            }];
        })
        .start()
        .await;
    let models = cluster.client.get("/v1/models").await.json();
    let mut ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["llama3", "qwen2.5-7b"], "public names only");
    for i in 0..20 {
        // The public name, or either server's own id: all the same model.
        let model = ["qwen2.5-7b", "qwen2.5:7b-instruct", "qwen2.5-7b-instruct"][i % 3];
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body(model, &format!("q{i}")))
            .await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
    }
    // Each server saw only its own id (it answers 404 to any other).
    let ollama = cluster.sim("ollama").stats();
    let lms = cluster.sim("lms").stats();
    assert!(ollama.model("qwen2.5:7b-instruct").completed > 0);
    assert!(lms.model("qwen2.5-7b-instruct").completed > 0);
    assert_eq!(
        ollama.model("qwen2.5:7b-instruct").completed + lms.model("qwen2.5-7b-instruct").completed,
        20
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_caps_a_backend_over_all_its_models() {
    // Three models with four slots each would put twelve requests on one
    // GPU; the backend takes three.
    let cluster = ClusterBuilder::new()
        .sim_with("gpu", openai(&["a", "b", "c"], 4, 150), |b| {
            b.slots = Some(4);
            b.max_concurrent = Some(3);
        })
        .start()
        .await;
    // The server's own count, sampled while the load runs: a request over
    // the cap would run for 150 ms, dozens of samples.
    let sim = Client::new(&cluster.sim("gpu").url());
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..150 {
            let stats = sim.get("/_sim/stats").await.json();
            let now: u64 = stats["models"]
                .as_object()
                .unwrap()
                .values()
                .map(|m| m["in_flight"].as_u64().unwrap())
                .sum();
            peak = peak.max(now);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    });
    let mut calls = Vec::new();
    for i in 0..12 {
        let client = cluster.client.clone();
        let model = ["a", "b", "c"][i % 3];
        calls.push(tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body(model, &format!("{i}")))
                .await
                .status
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let peak = sampler.await.unwrap();
    assert!(
        peak <= 3,
        "{peak} requests ran at once on a backend capped at 3"
    );
    assert!(peak >= 2, "the cap still lets several run: {peak}");
    let listed = cluster.client.get("/admin/backends").await.json();
    assert_eq!(listed["backends"][0]["max_concurrent"], 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_client_key_in_x_api_key_is_a_key() {
    let cluster = ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(|c| c.admin_key = Some("admin-secret".into()))
        .start()
        .await;
    let r = cluster.client.get("/admin/backends").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = cluster
        .client
        .call(
            http::Method::GET,
            "/admin/backends",
            &[("x-api-key", "admin-secret")],
            Default::default(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cluster.shutdown().await;
}
