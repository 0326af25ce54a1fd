//! The operator's model actions over the management API: load and unload
//! through the backends' adapters, under the model's public name, with a
//! clear refusal where a server cannot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_hub::ModelAlias;
use drover_tests::{ClusterBuilder, Dialect, SimConfig, openai};
use serde_json::json;

fn cold(dialect: Dialect, models: &[&str]) -> SimConfig {
    SimConfig {
        dialect,
        models: models.iter().map(|m| m.to_string()).collect(),
        loaded: Vec::new(),
        load_time: std::time::Duration::from_millis(40),
        ..SimConfig::default()
    }
}

async fn loaded_on(cluster: &drover_tests::Cluster, backend: &str, model: &str) -> bool {
    let list = cluster.client.get("/admin/backends").await.json();
    list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == backend)
        .flat_map(|b| b["models"].as_array().unwrap().clone())
        .any(|m| m["id"] == model && m["loaded"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_unload_through_the_adapters_under_the_public_name() {
    let cluster = ClusterBuilder::new()
        .sim("studio", cold(Dialect::LmStudio, &["qwen-7b"]))
        .sim("ollama", cold(Dialect::Ollama, &["qwen2.5:7b"]))
        .sim("plain", openai(&["other"], 1, 0))
        .hub(|c| {
            c.models = vec![ModelAlias {
                name: "qwen".into(),
                ids: vec!["qwen-7b".into(), "qwen2.5:7b".into()],
                ..ModelAlias::default()
            }]
        })
        .start()
        .await;
    let c = &cluster.client;
    let r = c
        .post("/admin/models/qwen/load", &json!({"backend": "ollama"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let done = r.json();
    assert_eq!(done["backends"], json!(["ollama"]));
    assert!(done["seconds"].as_f64().unwrap() >= 0.03, "{done}");
    // Ollama was asked for its own id, and the hub sees the change at once.
    assert!(cluster.sim("ollama").stats().model("qwen2.5:7b").loaded);
    assert!(loaded_on(&cluster, "ollama", "qwen").await);
    // Without a backend: loaded somewhere is loaded; nothing to do.
    let r = c.post("/admin/models/qwen/load", &json!({})).await;
    assert_eq!(r.json()["already"], true, "{}", r.text());
    assert_eq!(r.json()["backends"], json!(["ollama"]), "{}", r.text());
    // Named, a second copy.
    let r = c
        .post("/admin/models/qwen/load", &json!({"backend": "studio"}))
        .await;
    assert_eq!(r.json()["backends"], json!(["studio"]), "{}", r.text());
    assert_eq!(r.json()["already"], false, "{}", r.text());

    let r = c.post("/admin/models/qwen/unload", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut from: Vec<String> = r.json()["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    from.sort();
    assert_eq!(from, ["ollama", "studio"]);
    assert!(!loaded_on(&cluster, "studio", "qwen").await);
    assert!(!cluster.sim("studio").stats().model("qwen-7b").loaded);

    // A generic server serves what it lists: loaded, and it cannot unload
    // (it says so); an unknown model is a 404.
    let r = c.post("/admin/models/other/load", &json!({})).await;
    assert_eq!(r.json()["already"], true, "{}", r.text());
    let r = c.post("/admin/models/other/unload", &json!({})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("plain (openai)"), "{}", r.text());
    let r = c.post("/admin/models/nope/load", &json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = c
        .post("/admin/models/qwen/load", &json!({"backend": "plain"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_may_travel_in_the_body_whatever_its_segments() {
    let cluster = ClusterBuilder::new()
        .sim("hostile", openai(&["../models/l1"], 1, 0))
        .sim("plain", openai(&["l1"], 1, 0))
        .start()
        .await;
    let c = &cluster.client;
    let r = c
        .post("/admin/models/pin", &json!({"model": "../models/l1"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "../models/l1");
    let list = c.get("/admin/backends").await.json();
    let pinned: Vec<(String, bool)> = list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["models"].as_array().unwrap().clone())
        .map(|m| (m["id"].as_str().unwrap().to_string(), m["pinned"] == true))
        .collect();
    assert!(
        pinned.contains(&("../models/l1".into(), true)),
        "{pinned:?}"
    );
    assert!(pinned.contains(&("l1".into(), false)), "{pinned:?}");
    // The model named once: in the path or in the body.
    let r = c.post("/admin/models/pin", &json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "missing_model");
    let r = c
        .post("/admin/models/l1/pin", &json!({"model": "../models/l1"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c
        .post("/admin/models/l1/pin", &json!({"model": "l1"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.post("/admin/models/jump", &json!({"model": "l1"})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    cluster.shutdown().await;
}
