//! A burst never puts more requests on a (backend, model) than its slots;
//! slots are learned where the server reports them (LM Studio's
//! `loaded_instances[].config.parallel`) and default to one elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, chat_body, lmstudio, openai};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_respects_every_backends_slots() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 3, 20))
        .sim("generic", openai(&["m"], 4, 20))
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let client = cluster.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(
                    "/v1/chat/completions",
                    &chat_body("m", &format!("burst {i}")),
                )
                .await
        }));
    }
    let mut served = std::collections::HashMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        *served.entry(r.backend().to_string()).or_insert(0) += 1;
    }
    let studio = cluster.sim("studio").stats().model("m");
    let generic = cluster.sim("generic").stats().model("m");
    // The LM Studio server reports 3 parallel slots and the hub uses them all.
    assert_eq!(studio.max_in_flight, 3, "{studio:?}");
    // The generic server reports nothing: one slot, although it could take 4.
    assert_eq!(generic.max_in_flight, 1, "{generic:?}");
    assert_eq!(studio.completed + generic.completed, 60);
    assert_eq!(served.values().sum::<i32>(), 60);
    assert!(served["studio"] > served["generic"], "{served:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_sets_slots_where_the_server_does_not_say() {
    let cluster = ClusterBuilder::new()
        .sim_with_slots("gpu", openai(&["m"], 8, 20), 2)
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = cluster.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", &format!("c {i}")))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(cluster.sim("gpu").stats().model("m").max_in_flight, 2);
    cluster.shutdown().await;
}
