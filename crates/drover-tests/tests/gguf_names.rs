//! One model, one name: llama.cpp's server lists a model by the GGUF path
//! it was started with, its router mode by the file's stem. The hub names
//! both by the stem, so they are one model that requests fail over
//! between, and the path still works as a name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, Dialect, Faults, SimConfig, chat_body};
use serde_json::json;

fn llama(dialect: Dialect, model: &str) -> SimConfig {
    SimConfig {
        dialect,
        models: vec![model.to_string()],
        loaded: vec![model.to_string()],
        output_tokens: 4,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gguf_path_and_its_stem_are_one_model() {
    let cluster = ClusterBuilder::new()
        .sim("one", llama(Dialect::LlamaCpp, "/srv/models/tiny-a.gguf"))
        .sim("router", llama(Dialect::LlamaCppRouter, "tiny-a"))
        .start()
        .await;
    let listed = cluster.client.get("/v1/models").await.json();
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{listed}");
    assert_eq!(data[0]["id"], "tiny-a");
    assert_eq!(data[0]["backends"].as_array().unwrap().len(), 2, "{listed}");

    for name in ["tiny-a", "/srv/models/tiny-a.gguf"] {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body(name, "hi"))
            .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
    // One of them failing, the other answers for both names.
    cluster.sim("router").set_faults(Faults {
        error_rate: 1.0,
        ..Faults::NONE
    });
    for _ in 0..4 {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("tiny-a", "hi"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "one");
    }
    let r = cluster.client.get("/v1/models/tiny-a").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], json!("tiny-a"));
    cluster.shutdown().await;
}
