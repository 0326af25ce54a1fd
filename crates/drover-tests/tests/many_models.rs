//! A backend that lists far more models than any server holds (100,000,
//! under the discovery cap's bytes) cannot make the hub's work grow with
//! them: it takes at most `limits.max_models_per_backend` of them (loaded
//! ones first: the prober's unit test) and says how many it dropped. (What
//! each listing and probe costs is measured by bench/many-models.sh.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, SimConfig, chat_body, openai};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_listing_100000_models_is_capped_and_says_so() {
    let models: Vec<String> = (0..100_000).map(|i| format!("m{i:06}")).collect();
    let names: Vec<&str> = models.iter().map(String::as_str).collect();
    let sim: SimConfig = openai(&names, 1, 0);
    let cluster = ClusterBuilder::new()
        .sim("hoarder", sim)
        .hub(|c| c.limits.max_models_per_backend = 1000)
        .start()
        .await;
    let listed = cluster.client.get("/admin/backends").await.json();
    let b = &listed["backends"][0];
    assert_eq!(b["models"].as_array().unwrap().len(), 1000, "{}", b["name"]);
    assert_eq!(b["dropped_models"], 99_000);
    let served = cluster.client.get("/v1/models").await.json();
    assert_eq!(served["data"].as_array().unwrap().len(), 1000);
    for (model, status) in [("m000000", 200), ("m000999", 200), ("m050000", 404)] {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body(model, "hi"))
            .await;
        assert_eq!(r.status, status, "{model}: {}", r.text());
    }
    assert_eq!(cluster.client.get("/admin/overview").await.status, 200);
    assert_eq!(cluster.client.get("/v1/queue").await.status, 200);
    cluster.shutdown().await;
}
