//! `probe = "generate"`: a server that lists its models but cannot run them
//! (a crashed runner, GPU memory gone) leaves the rotation, with the reason
//! shown, and comes back once it generates again. Without it, such a server
//! looks healthy to a listing probe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, Faults, chat_body, lmstudio, wait_until_within};

async fn backend(cluster: &drover_tests::Cluster, name: &str) -> serde_json::Value {
    let listed = cluster.client.get("/admin/backends").await.json();
    listed["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_generate_leaves_the_rotation_and_comes_back() {
    let cluster = ClusterBuilder::new()
        .sim_with("sick", lmstudio(&["m"], 2, 0), |b| {
            b.probe = Some("generate".into())
        })
        .sim("well", lmstudio(&["m"], 2, 0))
        .start()
        .await;
    cluster.sim("sick").set_faults(Faults {
        cannot_generate: true,
        ..Faults::NONE
    });
    wait_until_within(
        "the sick backend's breaker opens",
        std::time::Duration::from_secs(10),
        || async { backend(&cluster, "sick").await["breaker"] == "open" },
    )
    .await;
    let sick = backend(&cluster, "sick").await;
    let why = sick["last_error"].as_str().unwrap();
    assert!(why.contains("cannot generate"), "{why}");
    assert_eq!(sick["probe"], "generate");
    let before = cluster.sim("sick").stats().requests_total;
    for i in 0..10 {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", &format!("{i}")))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "well");
    }
    // Only probes reached it meanwhile, none of the ten requests.
    let probes = cluster.sim("sick").stats().requests_total - before;
    assert!(probes <= 5, "{probes} requests reached the sick backend");

    cluster.sim("sick").set_faults(Faults::NONE);
    wait_until_within(
        "the recovered backend's breaker closes",
        std::time::Duration::from_secs(10),
        || async { backend(&cluster, "sick").await["breaker"] == "closed" },
    )
    .await;
    assert!(backend(&cluster, "sick").await["last_error"].is_null());
    cluster.shutdown().await;
}
